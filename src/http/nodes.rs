//! `GET /api/nodes`: the nodes of the cluster, as their heartbeats in Redis
//! show them, for the dashboard's overview. A node on its own lists itself.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::{Admin, AppState};

/// `GET /api/nodes`: `{"node_id", "redis", "nodes": [{"node_id", "self",
/// "expires_in_ms"}]}`. With Redis up, every node whose heartbeat is alive
/// (this one always listed); otherwise this node alone, and `redis` says
/// why (`disabled` or `down`).
pub async fn list(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    let this = &*state.node.id;
    let redis = match &state.bus {
        None => "disabled",
        Some(bus) if bus.is_up() => "up",
        Some(_) => "down",
    };
    let live = match state.bus {
        Some(_) => state.broker.nodes().await,
        None => None,
    };
    let mut nodes: Vec<Value> = live
        .unwrap_or_default()
        .into_iter()
        .map(|node| {
            let expires_in_ms = node.expires_in.as_millis() as u64;
            json!({ "node_id": node.id, "self": node.id == this, "expires_in_ms": expires_in_ms })
        })
        .collect();
    if !nodes.iter().any(|n| n["self"] == true) {
        // Not in Redis's list (Redis down, or its heartbeat not written
        // yet): this node serves all the same.
        nodes.insert(0, json!({ "node_id": this, "self": true, "expires_in_ms": null }));
    }
    HttpResponse::Ok().json(json!({ "node_id": this, "redis": redis, "nodes": nodes }))
}
