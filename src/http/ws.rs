//! `GET /ws` and `GET /ws/{client_id}` through actix-web.
//!
//! New connections that open with a WebSocket upgrade never get here: the
//! transport (`transport.rs`) serves them directly. This route answers the
//! rest: upgrades that are refused (with the JSON error saying why), plain
//! GETs, and upgrades that arrive on a kept-alive HTTP connection, which it
//! serves through actix-web-actors. Those sessions cannot be hung up if they
//! stop reading; their memory is still bounded by the outbound budget.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::WsResponseBuilder;
use nova_actors::session::Session;

use super::error::ApiError;
use super::AppState;
use crate::transport::valid_client_id;

/// `GET /ws`.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    start(&req, body, &state, None)
}

/// `GET /ws/{client_id}`.
pub async fn connect_as(
    req: HttpRequest,
    client_id: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client_id = client_id.into_inner();
    if !valid_client_id(&client_id) {
        return Err(ApiError::bad_request("invalid_client_id", "client id must be 1 to 64 letters, digits or _ . -"));
    }
    start(&req, body, &state, Some(client_id.into()))
}

fn start(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    client_id: Option<Arc<str>>,
) -> Result<HttpResponse, ApiError> {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !state.origins.allows(origin) {
            let shown = origin.to_str().unwrap_or("(not text)");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin '{shown}' is not allowed"),
            ));
        }
    }
    let refused = |e: &dyn std::fmt::Display| {
        ApiError::bad_request("websocket_required", format!("a WebSocket upgrade is required: {e}"))
    };
    actix_web_actors::ws::handshake(req).map_err(|e| refused(&e))?;
    let session = Session::new(state.node.clone(), client_id, None);
    WsResponseBuilder::new(session, req, body)
        .frame_size(state.node.limits.max_frame_bytes)
        .start()
        .map_err(|e| refused(&e))
}
