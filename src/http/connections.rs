//! The connection admin endpoints: `GET /ws/connections`, `GET /ws/metrics`,
//! `POST /ws/broadcast`, `POST /ws/ping`, `DELETE /api/connections/{id}`
//! and seed 002's metrics views.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::codes::Close;
use nova_actors::names::parse_connection_id;
use nova_actors::protocol::{self, kind};
use nova_actors::registry::{Audience, Broadcast, CloseConnection, GetStats, ListConnections};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::publish::{encode_event, tenant, DirectRequest, TenantQuery};
use super::{Admin, AppState};

/// Connections listed by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// `?limit=&user_id=&order=` of `GET /ws/connections`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    user_id: Option<String>,
    order: Option<Order>,
}

/// Which connections come first.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The oldest (the default).
    Oldest,
    /// The newest: the dashboard's "newest connections" asks for a few.
    Newest,
}

/// `GET /ws/connections[?user_id=][&order=newest]`: this node's
/// authenticated connections (one user's, with `user_id`), oldest first
/// unless `order=newest`.
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery { limit, user_id, order } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let list = ListConnections { limit, user: user_id, newest_first: order == Some(Order::Newest) };
    let list = state.node.registry.send(list).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(list))
}

/// `DELETE /api/connections/{connection_id}`: closes one connection of this
/// node with 4011 ("disconnected by an administrator", announced by
/// `connection.error` with `reconnect: false`). Another node's connection
/// is not reached from here (404 naming that node): the listing it came
/// from, `GET /ws/connections`, is per node too.
pub async fn disconnect(
    _: Admin,
    state: web::Data<AppState>,
    connection_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let connection_id = connection_id.into_inner();
    let (node, conn) = parse_connection_id(&connection_id)
        .map_err(|why| ApiError::bad_request("invalid_connection_id", why.to_string()))?;
    let not_found = |message: String| ApiError::new(StatusCode::NOT_FOUND, "connection_not_found", message);
    if node != &*state.node.id {
        return Err(not_found(format!(
            "connection '{connection_id}' is on node '{node}', not this one ('{}'): send the request to that node",
            state.node.id
        )));
    }
    let close = Close::Disconnected;
    let closed = state.node.registry.send(CloseConnection { conn, close }).await.map_err(ApiError::unavailable)?;
    let user = closed.ok_or_else(|| not_found(format!("no connection '{connection_id}' on this node")))?;
    Ok(HttpResponse::Accepted().json(json!({
        "connection_id": connection_id,
        "user_id": &*user,
        "close_code": close.code(),
    })))
}

/// `GET /ws/metrics`: registry counts plus the node's counters and latency.
pub async fn metrics(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.node.registry.send(GetStats).await.map_err(ApiError::unavailable)?;
    let mut body = serde_json::to_value(state.node.metrics.snapshot()).map_err(ApiError::unavailable)?;
    if let Some(map) = body.as_object_mut() {
        map.insert("connections".into(), stats.connections.into());
        map.insert("users".into(), stats.users.into());
        map.insert("channels".into(), stats.channels.into());
        let quotas = &state.node.quotas;
        map.insert("event_rate_limited_by_type".into(), json!(quotas.refused_by_type()));
        map.insert("rate_limit_entries".into(), quotas.tracked().into());
        let gateway = &state.gateway;
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        map.insert(
            "gateway".into(),
            json!({
                "accepted": count(&gateway.accepted),
                "repeats": count(&gateway.repeats),
                "refused": count(&gateway.refused),
                "delivered": count(&gateway.delivered),
                "failed_attempts": count(&gateway.failed_attempts),
                "rejected": count(&gateway.rejected),
                "dropped": count(&gateway.dropped),
            }),
        );
        if let Some(bus) = &state.bus {
            let redis = json!({
                "status": if bus.is_up() { "up" } else { "down" },
                "queued": count(&bus.queued),
                "published": count(&bus.published),
                "received": count(&bus.received),
                "dropped": count(&bus.dropped),
                "malformed": count(&bus.malformed),
                "unsealed": count(&bus.unsealed),
                "connects": count(&bus.connects),
                "history_lost": count(&bus.history_lost),
                "epochs_bumped": count(&bus.epochs_bumped),
            });
            map.insert("redis".into(), redis);
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /ws/broadcast` `{"type", "data"}`: one event to every authenticated
/// connection, subscribed or not.
pub async fn broadcast(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<TenantQuery>,
    body: web::Json<DirectRequest>,
) -> Result<HttpResponse, ApiError> {
    let DirectRequest { kind, data, channel, tenant: named } = body.into_inner();
    let audience = Audience::Tenant(tenant(named, &query)?);
    let event = encode_event(&state, channel.as_deref(), &kind, data)?;
    state.node.metrics.published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let connections =
        state.node.registry.send(Broadcast { frame: event.frame, audience }).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Accepted().json(json!({ "id": event.id, "connections": connections })))
}

/// `POST /ws/ping`: a server `connection.heartbeat` to every authenticated
/// connection, to check clients respond.
pub async fn ping(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let id = protocol::new_id();
    let frame = protocol::encode_with_id(&id, kind::HEARTBEAT, None, &json!({}), None);
    let connections = state
        .node
        .registry
        .send(Broadcast { frame, audience: Audience::Everyone })
        .await
        .map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Accepted().json(json!({ "id": id, "connections": connections })))
}

/// `GET /api/metrics/websocket-connections` (seed 002): the node's
/// connections now.
pub async fn websocket_connections(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.node.registry.send(GetStats).await.map_err(ApiError::unavailable)?;
    let sockets = state.node.metrics.sockets.load(std::sync::atomic::Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(json!({
        "connections": stats.connections,
        "users": stats.users,
        "channels": stats.channels,
        "sockets": sockets,
    })))
}

/// `GET /api/metrics/event-throughput` (seed 002): events published on
/// this node over the last minute, and frames in and out per second.
pub async fn event_throughput(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.node.metrics;
    let minute = metrics.last_minute();
    let now = metrics.snapshot();
    HttpResponse::Ok().json(json!({
        "events_per_minute": minute.published,
        "window_secs": minute.window_secs,
        "messages_in_per_sec": now.messages_in_per_sec,
        "messages_out_per_sec": now.messages_out_per_sec,
    }))
}

/// `GET /api/metrics/redis-health` (seed 002): `GET /api/health/redis`'s
/// body, answered 200 whatever the state (a metric, not a probe).
pub async fn redis_health(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(super::health::redis_status(&state).1)
}
