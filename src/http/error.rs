//! The REST API's error: every failure answers
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status, and
//! bad input is a 4xx, never a 500.

use std::fmt;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use nova_actors::catalog::{Refusal, Violation};
use serde::Serialize;
use utoipa::ToSchema;

/// A REST error with its status and a stable, machine-readable code.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For `invalid_event`: each field and the rule it broke.
    fields: Option<Vec<Violation>>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), fields: None }
    }

    /// 400 with a code naming what was wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no or wrong admin token.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send 'Authorization: Bearer <admin token>'")
    }

    /// The same error with its message prefixed by where it happened.
    pub fn within(self, place: &str) -> ApiError {
        ApiError { message: format!("{place}: {}", self.message), ..self }
    }

    /// 400 for an event the catalog refuses: `invalid_event` with the
    /// fields at fault, `forbidden_event` for a type backends may not send,
    /// `unknown_event` for a type outside it in strict mode.
    pub fn refused_event(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid { ref violations, .. } => ApiError {
                fields: Some(violations.clone()),
                ..ApiError::bad_request("invalid_event", refusal.to_string())
            },
            Refusal::NotFrom { .. } => ApiError::bad_request("forbidden_event", refusal.to_string()),
            Refusal::Unknown(_) => ApiError::bad_request("unknown_event", refusal.to_string()),
        }
    }

    /// 503: the registry has more queued than it takes; retry shortly.
    pub fn overloaded() -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many events queued: retry shortly")
    }

    /// 503: the node's actors did not answer.
    pub fn unavailable(what: impl fmt::Display) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("registry unavailable: {what}"))
    }
}

/// The body of every REST error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    #[schema(inline = false)]
    pub error: ErrorDetail<'a>,
}

/// What went wrong: a stable code for programs, a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Machine-readable, stable: `unauthorized`, `invalid_channel`,
    /// `invalid_event`, `overloaded`…
    #[schema(example = "invalid_channel")]
    pub code: &'a str,
    /// For people; may change between versions.
    pub message: &'a str,
    /// For `invalid_event`: each field of `data` and the rule it broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<&'a [Violation]>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        res.json(ErrorBody {
            error: ErrorDetail { code: self.code, message: &self.message, fields: self.fields.as_deref() },
        })
    }
}

/// Turns actix's JSON body errors into ours.
pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body of {length} bytes is over the limit of {limit}"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body is over the limit of {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as 'Content-Type: application/json'",
        ),
        JsonPayloadError::Deserialize(e) => ApiError::bad_request("invalid_json", e.to_string()),
        other => ApiError::bad_request("invalid_json", other.to_string()),
    };
    api.into()
}

/// Turns the errors of a raw body (`web::Bytes`, which has no error
/// handler of its own to configure) into ours: take the body as
/// `Result<web::Bytes, actix_web::Error>` and map the error with this.
pub fn body_error(err: actix_web::Error) -> ApiError {
    match err.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is over the limit")
        }
        _ => ApiError::bad_request("invalid_body", err.to_string()),
    }
}

/// Turns path-parameter errors into ours.
pub fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path", err.to_string()).into()
}

/// Turns query-string errors into ours.
pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}

/// 404 for every unknown path.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {}", req.path())).error_response()
}

/// 405 for a known path with the wrong method, with the `Allow` header
/// RFC 9110 asks for: the methods the OpenAPI document gives the path
/// (which lists every route, see `openapi.rs`).
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let message = format!("{} is not allowed on {}", req.method(), req.path());
    let mut response = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).error_response();
    if let Some(allow) = req.match_pattern().and_then(|pattern| super::openapi::allowed_methods(&pattern)) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}
