//! Health checks for load balancers and the container `HEALTHCHECK`; no
//! authentication.
//!
//! - `GET /health`: always 200 while the node serves; `status` is `ok`, or
//!   `degraded` when Redis is configured but unreachable (the node then
//!   serves its own clients only).
//! - `GET /api/health/redis`: the bus alone; 503 while Redis is down.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::AppState;

/// Status, version, uptime, open connections and the Redis link.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.node.metrics;
    let (status, redis) = match &state.bus {
        None => ("ok", "disabled"),
        Some(bus) if bus.is_up() => ("ok", "up"),
        Some(_) => ("degraded", "down"),
    };
    HttpResponse::Ok().json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": &*state.node.id,
        "uptime_secs": metrics.uptime().as_secs(),
        "connections": metrics.sockets.load(Ordering::Relaxed),
        "redis": redis,
    }))
}

/// `up` (200), `down` (503, with the error that took it down) or
/// `disabled` (200: no Redis configured, nothing is wrong).
pub async fn redis(state: web::Data<AppState>) -> HttpResponse {
    match redis_status(&state) {
        (false, body) => HttpResponse::ServiceUnavailable().json(body),
        (true, body) => HttpResponse::Ok().json(body),
    }
}

/// The Redis link as `GET /api/health/redis` shows it, and whether it is
/// healthy (up, or not configured).
pub fn redis_status(state: &AppState) -> (bool, Value) {
    let Some(bus) = &state.bus else {
        return (true, json!({ "status": "disabled", "node_id": &*state.node.id }));
    };
    let (since, error) = match bus.last_change() {
        Some((at, error)) => (Value::from(humantime::format_rfc3339_millis(at).to_string()), error),
        None => (Value::Null, None),
    };
    let body = json!({
        "status": if bus.is_up() { "up" } else { "down" },
        "node_id": &*state.node.id,
        "since": since,
        "error": if bus.is_up() { None } else { error },
        "connects": bus.connects.load(Ordering::Relaxed),
    });
    (bus.is_up(), body)
}
