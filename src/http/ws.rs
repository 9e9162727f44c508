//! `GET /ws` and `GET /ws/{client_id}`: check the browser origin, upgrade
//! the connection and start its session actor.

use std::os::fd::RawFd;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::WsResponseBuilder;
use nova_actors::session::Session;

use super::error::ApiError;
use super::AppState;

/// Client ids from the path: short and plain, they show up in listings.
const MAX_CLIENT_ID_LEN: usize = 64;

/// The connection's socket descriptor, recorded when it is accepted (see
/// `server.rs`); a session needs it to shut down a client that stops reading.
#[derive(Clone, Copy, Debug)]
pub struct ConnSocket(pub RawFd);

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
    let plain = client_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN || !plain {
        return Err(ApiError::bad_request("invalid_client_id", "client id must be 1 to 64 letters, digits or _ . -"));
    }
    start(&req, body, &state, Some(client_id.into()))
}

fn start(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    client_id: Option<std::sync::Arc<str>>,
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
    let socket = req.conn_data::<ConnSocket>().map(|s| s.0);
    let session = Session::new(state.node.clone(), client_id, socket);
    WsResponseBuilder::new(session, req, body)
        .frame_size(state.node.limits.max_frame_bytes)
        .start()
        .map_err(|e| ApiError::bad_request("websocket_required", format!("a WebSocket upgrade is required: {e}")))
}
