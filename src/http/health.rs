//! `GET /health`: liveness for load balancers and the container
//! `HEALTHCHECK`; no authentication.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// Status, version, uptime and open connections.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.node.metrics;
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": &*state.node.id,
        "uptime_secs": metrics.uptime().as_secs(),
        "connections": metrics.sockets.load(Ordering::Relaxed),
    }))
}
