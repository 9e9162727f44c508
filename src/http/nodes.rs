//! `GET /api/nodes`: the nodes of the cluster, as their heartbeats in Redis
//! show them, for the dashboard's overview. A node on its own lists itself.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Admin, AppState};

/// The answer of `GET /api/nodes`.
#[derive(Serialize, ToSchema)]
pub struct Nodes {
    /// The node that answered.
    pub node_id: String,
    /// Its link to Redis: `up`, `down`, or `disabled` (a node on its own).
    #[schema(pattern = "^(up|down|disabled)$")]
    pub redis: &'static str,
    /// The nodes whose heartbeat is alive (with Redis up), this one always
    /// among them.
    pub nodes: Vec<NodeEntry>,
}

/// One node of [`Nodes`].
#[derive(Serialize, ToSchema)]
pub struct NodeEntry {
    /// Its id.
    pub node_id: String,
    /// Whether it is the node that answered.
    #[serde(rename = "self")]
    pub this: bool,
    /// How long until its heartbeat lapses; `null` when Redis did not say
    /// (a node on its own, or Redis down).
    pub expires_in_ms: Option<u64>,
}

/// `GET /api/nodes`: with Redis up, every node whose heartbeat is alive
/// (this one always listed); otherwise this node alone, and `redis` says
/// why (`disabled` or `down`).
#[utoipa::path(
    get,
    path = "/api/nodes",
    tag = "metrics",
    operation_id = "list_nodes",
    responses((status = 200, description = "The cluster's live nodes, or this node alone", body = Nodes)),
    security(("admin_token" = [])),
)]
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
    let mut nodes: Vec<NodeEntry> = live
        .unwrap_or_default()
        .into_iter()
        .map(|node| NodeEntry {
            this: node.id == this,
            expires_in_ms: Some(node.expires_in.as_millis() as u64),
            node_id: node.id,
        })
        .collect();
    if !nodes.iter().any(|n| n.this) {
        // Not in Redis's list (Redis down, or its heartbeat not written
        // yet): this node serves all the same.
        nodes.insert(0, NodeEntry { node_id: this.to_owned(), this: true, expires_in_ms: None });
    }
    HttpResponse::Ok().json(Nodes { node_id: this.to_owned(), redis, nodes })
}
