//! Health checks for load balancers and the container `HEALTHCHECK`; no
//! authentication.
//!
//! - `GET /health`: always 200 while the node serves; `status` is `ok`, or
//!   `degraded` when Redis is configured but unreachable (the node then
//!   serves its own clients only).
//! - `GET /api/health/redis`: the bus alone; 503 while Redis is down.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct NodeHealth<'a> {
    /// `ok`, or `degraded` while Redis is configured but unreachable.
    #[schema(pattern = "^(ok|degraded)$")]
    pub status: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// This node's id.
    pub node_id: &'a str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Open WebSocket connections.
    pub connections: u64,
    /// The Redis link: `up`, `down`, or `disabled` (none configured).
    #[schema(pattern = "^(up|down|disabled)$")]
    pub redis: &'static str,
}

/// The Redis link, as `GET /api/health/redis` and
/// `GET /api/metrics/redis-health` show it. Without Redis, only `status`
/// (`disabled`) and `node_id`.
#[derive(Serialize, ToSchema)]
pub struct RedisHealth<'a> {
    /// `up`, `down`, or `disabled` (no Redis configured).
    #[schema(pattern = "^(up|down|disabled)$")]
    pub status: &'static str,
    /// This node's id.
    pub node_id: &'a str,
    /// When the link last went up or down, RFC 3339; `null` before either.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Option<String>>,
    /// Why it is down; `null` while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Option<String>>,
    /// Connections made to Redis since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connects: Option<u64>,
}

/// Status, version, uptime, open connections and the Redis link.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The node serves", body = NodeHealth)),
    security(()),
)]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.node.metrics;
    let (status, redis) = match &state.bus {
        None => ("ok", "disabled"),
        Some(bus) if bus.is_up() => ("ok", "up"),
        Some(_) => ("degraded", "down"),
    };
    HttpResponse::Ok().json(NodeHealth {
        status,
        version: env!("CARGO_PKG_VERSION"),
        node_id: &state.node.id,
        uptime_secs: metrics.uptime().as_secs(),
        connections: metrics.sockets.load(Ordering::Relaxed),
        redis,
    })
}

/// `up` (200), `down` (503, with the error that took it down) or
/// `disabled` (200: no Redis configured, nothing is wrong).
#[utoipa::path(
    get,
    path = "/api/health/redis",
    tag = "health",
    operation_id = "redis_health_check",
    responses(
        (status = 200, description = "Redis is up, or not configured", body = RedisHealth),
        (status = 503, description = "Redis is configured and down", body = RedisHealth),
    ),
    security(()),
)]
pub async fn redis(state: web::Data<AppState>) -> HttpResponse {
    match redis_status(&state) {
        (false, body) => HttpResponse::ServiceUnavailable().json(body),
        (true, body) => HttpResponse::Ok().json(body),
    }
}

/// The Redis link as `GET /api/health/redis` shows it, and whether it is
/// healthy (up, or not configured).
pub fn redis_status(state: &AppState) -> (bool, RedisHealth<'_>) {
    let node_id = &*state.node.id;
    let Some(bus) = &state.bus else {
        return (true, RedisHealth { status: "disabled", node_id, since: None, error: None, connects: None });
    };
    let up = bus.is_up();
    let (since, error) = match bus.last_change() {
        Some((at, error)) => (Some(humantime::format_rfc3339_millis(at).to_string()), error),
        None => (None, None),
    };
    let body = RedisHealth {
        status: if up { "up" } else { "down" },
        node_id,
        since: Some(since),
        error: Some(if up { None } else { error }),
        connects: Some(bus.connects.load(Ordering::Relaxed)),
    };
    (up, body)
}
