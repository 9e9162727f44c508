//! `GET /ws` and `GET /ws/{client_id}` through actix-web.
//!
//! New connections that open with a WebSocket upgrade never get here: the
//! transport (`transport.rs`) serves them directly. This route answers the
//! rest: upgrades that are refused (with the JSON error saying why), plain
//! GETs, and upgrades that arrive on a kept-alive HTTP connection (some HTTP
//! clients reuse pooled connections), which it serves with the same frame
//! limits (16 KiB before `connection.init`), frame-aligned input and the
//! connection's hang-up. One difference: actix-web's dispatcher reads ahead
//! of the session on this path (up to about 160 KiB when the session is
//! behind), where the transport reads one frame at a time.

use std::sync::Arc;
use std::time::Instant;

use actix_http::ws::Codec;
use actix_web::http::{header, StatusCode, Version};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::WebsocketContext;
use bytes::Bytes;
use nova_actors::session::Session;

use super::error::ApiError;
use super::AppState;
use crate::admission::ConnClock;
use crate::peer::forwarded_for;
use crate::transport::{valid_client_id, valid_websocket_key, ConnHangup, FrameAligned, FrameLimits};

/// `GET /ws`.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "websocket",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol of docs/protocol.md"),
        (status = 400, description = "Not a valid WebSocket upgrade", body = crate::http::error::ErrorBody),
        (status = 403, description = "The `Origin` is not allowed", body = crate::http::error::ErrorBody),
    ),
    security(()),
)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    start(&req, body, &state, None)
}

/// `GET /ws/{client_id}`.
#[utoipa::path(
    get,
    path = "/ws/{client_id}",
    tag = "websocket",
    params(("client_id" = String, Path, description = "The client's own id for this connection: 1–64 of `A–Z a–z 0–9 _ . -`")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol of docs/protocol.md"),
        (status = 400, description = "A bad client id, or not a valid WebSocket upgrade", body = crate::http::error::ErrorBody),
        (status = 403, description = "The `Origin` is not allowed", body = crate::http::error::ErrorBody),
    ),
    security(()),
)]
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
        let host = req.headers().get(header::HOST).map(|h| h.as_bytes());
        if !state.origins.allows_for(origin, host) {
            let shown = origin.to_str().unwrap_or("(not text)");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin '{shown}' is not allowed"),
            ));
        }
    }
    // RFC 6455 §4.2.1: HTTP/1.1 or later, and a key of 16 base64 bytes.
    if req.version() < Version::HTTP_11 {
        return Err(ApiError::bad_request("websocket_required", "a WebSocket upgrade needs HTTP/1.1"));
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY);
    if key.is_some() && !key.is_some_and(|k| valid_websocket_key(k.as_bytes())) {
        return Err(ApiError::bad_request(
            "websocket_required",
            "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455)",
        ));
    }
    let mut response = actix_web_actors::ws::handshake(req)
        .map_err(|e| ApiError::bad_request("websocket_required", format!("a WebSocket upgrade is required: {e}")))?;
    if let Some(clock) = req.conn_data::<ConnClock>() {
        // The session's auth timeout and heartbeat govern from here.
        clock.0.upgraded();
    }
    let hangup = req.conn_data::<ConnHangup>().map_or_else(Arc::default, |h| h.0.clone());
    let limits = &state.node.limits;
    let peer = req.peer_addr().map(|p| {
        let forwarded = forwarded_for(req.headers().get_all("x-forwarded-for").map(|v| v.as_bytes()));
        state.proxies.client_ip(p.ip(), forwarded.as_deref())
    });
    let deadline = Instant::now() + limits.auth_timeout;
    let session = Session::new(state.node.clone(), client_id, Some(hangup.clone()), deadline, peer);
    let frame_limits = FrameLimits::of(limits);
    let input = FrameAligned::new(body, Bytes::new(), frame_limits, hangup);
    let output = WebsocketContext::with_codec(session, input, Codec::new().max_size(limits.max_frame_bytes));
    Ok(response.streaming(output))
}
