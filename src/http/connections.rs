//! The connection admin endpoints: `GET /ws/connections`, `GET /ws/metrics`,
//! `POST /ws/broadcast`, `POST /ws/ping`, `DELETE /api/connections/{id}`
//! and seed 002's metrics views.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::codes::Close;
use nova_actors::metrics::MetricsSnapshot;
use nova_actors::names::parse_connection_id;
use nova_actors::protocol::{self, kind};
use nova_actors::registry::{Audience, Broadcast, CloseConnection, GetStats, ListConnections};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::publish::{encode_event, tenant, DirectRequest, TenantQuery};
use super::{Admin, AppState};

/// Entries an operator's listing (connections, channels) gives by
/// default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// A listing's `?limit=`: the default when absent, at most [`MAX_LIMIT`]
/// (a larger one, even past `usize`, counts as the most).
pub(super) fn listing_limit(asked: Option<u64>) -> usize {
    asked.map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(MAX_LIMIT)).min(MAX_LIMIT)
}

/// `?limit=&user_id=&order=` of `GET /ws/connections`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Connections listed at most (default 100; above 10000 counts as
    /// 10000).
    #[serde(default, deserialize_with = "super::history::saturating")]
    limit: Option<u64>,
    /// Only this user's connections (in any tenant).
    #[serde(default)]
    user_id: Option<String>,
    /// `oldest` first (the default) or `newest` first.
    #[serde(default)]
    #[param(inline)]
    order: Option<Order>,
}

/// Which connections `GET /ws/connections` lists first.
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The oldest (the default).
    Oldest,
    /// The newest: the dashboard's "newest connections" asks for a few.
    Newest,
}

/// The answer to `DELETE /api/connections/{connection_id}`.
#[derive(Serialize, ToSchema)]
pub struct Disconnected {
    /// The connection.
    pub connection_id: String,
    /// Its user.
    pub user_id: String,
    /// The code it is closed with: 4011.
    pub close_code: u16,
}

/// `GET /ws/metrics`: the node's counters, the registry's counts, the
/// agent gateway's and, with Redis, the bus's.
#[derive(Serialize, ToSchema)]
pub struct WsMetrics<'a> {
    /// The node's counters and latency.
    #[serde(flatten)]
    pub node: MetricsSnapshot,
    /// Authenticated connections in the registry.
    pub connections: usize,
    /// Distinct users connected.
    pub users: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Requests refused by a per-type limit, by event type.
    pub event_rate_limited_by_type: BTreeMap<&'a str, u64>,
    /// Users the rate limiter tracks.
    pub rate_limit_entries: usize,
    /// The agent gateway's counters.
    pub gateway: GatewayCounters,
    /// The Redis bus's counters; absent for a node without Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCounters>,
}

/// The agent gateway's counters since start.
#[derive(Serialize, ToSchema)]
pub struct GatewayCounters {
    /// Client requests accepted for agents.
    pub accepted: u64,
    /// Requests seen before (same id), answered without a second record.
    pub repeats: u64,
    /// Requests refused for agents (4007).
    pub refused: u64,
    /// Webhook deliveries that succeeded.
    pub delivered: u64,
    /// Webhook attempts that failed and will be retried.
    pub failed_attempts: u64,
    /// Records webhook agents refused.
    pub rejected: u64,
    /// Records dropped.
    pub dropped: u64,
}

/// The Redis bus's state and counters since start.
#[derive(Serialize, ToSchema)]
pub struct RedisCounters {
    /// `up` or `down`.
    #[schema(pattern = "^(up|down)$")]
    pub status: &'static str,
    /// Events waiting to be written to Redis.
    pub queued: u64,
    /// Events written to Redis.
    pub published: u64,
    /// Events from other nodes delivered here.
    pub received: u64,
    /// Events not written to Redis.
    pub dropped: u64,
    /// Messages from Redis that were not valid.
    pub malformed: u64,
    /// Messages from Redis whose seal did not verify.
    pub unsealed: u64,
    /// Connections made to Redis.
    pub connects: u64,
    /// Events of channels with history that never reached Redis.
    pub history_lost: u64,
    /// New epochs started after such losses.
    pub epochs_bumped: u64,
}

/// The answer to a broadcast or a ping.
#[derive(Serialize, ToSchema)]
pub struct Broadcasted {
    /// The event id.
    pub id: String,
    /// Connections it was queued for.
    pub connections: usize,
}

/// `GET /api/metrics/websocket-connections`.
#[derive(Serialize, ToSchema)]
pub struct WebsocketConnections {
    /// Authenticated connections.
    pub connections: usize,
    /// Distinct users connected.
    pub users: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Open WebSocket connections, authenticated or not.
    pub sockets: u64,
}

/// `GET /api/metrics/event-throughput`.
#[derive(Serialize, ToSchema)]
pub struct EventThroughput {
    /// Events published on this node over the window.
    pub events_per_minute: u64,
    /// The window, seconds (under 60 in the node's first minute).
    pub window_secs: u64,
    /// Client frames received per second over the last second.
    pub messages_in_per_sec: f64,
    /// Frames written per second over the last second.
    pub messages_out_per_sec: f64,
}

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// `GET /ws/connections[?user_id=][&order=newest]`: this node's
/// authenticated connections (one user's, with `user_id`), oldest first
/// unless `order=newest`.
#[utoipa::path(
    get,
    path = "/ws/connections",
    tag = "connections",
    operation_id = "list_connections",
    params(ListQuery),
    responses(
        (status = 200, description = "This node's connections (one user's with `user_id`), oldest first unless `order=newest`", body = nova_actors::registry::ConnectionList),
        (status = 400, description = "A bad `limit`, or an unknown query parameter", body = crate::http::error::ErrorBody),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery { limit, user_id, order } = query.into_inner();
    let limit = listing_limit(limit);
    let list = ListConnections { limit, user: user_id, newest_first: order == Some(Order::Newest) };
    let list = state.node.registry.send(list).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(list))
}

/// `DELETE /api/connections/{connection_id}`: closes one connection of this
/// node with 4011 ("disconnected by an administrator", announced by
/// `connection.error` with `reconnect: false`). Another node's connection
/// is not reached from here (404 naming that node): the listing it came
/// from, `GET /ws/connections`, is per node too.
#[utoipa::path(
    delete,
    path = "/api/connections/{connection_id}",
    tag = "connections",
    operation_id = "disconnect_connection",
    params(
        ("connection_id" = String, Path, description = "The id `connection.ack` gave: `{node}-{number}`",
            pattern = r"^[A-Za-z0-9-]{1,32}-[1-9][0-9]{0,18}$"),
    ),
    responses(
        (status = 202, description = "The connection is told why (`connection.error` 4011, `reconnect: false`) and closed with 4011", body = Disconnected),
        (status = 400, description = "`invalid_connection_id`: not `{node}-{number}`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`connection_not_found`: no such connection on this node, or another node's (the message names it: ask that node)", body = crate::http::error::ErrorBody),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
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
    let answer = Disconnected { connection_id, user_id: user.to_string(), close_code: close.code() };
    Ok(HttpResponse::Accepted().json(answer))
}

/// `GET /ws/metrics`: registry counts plus the node's counters and latency.
#[utoipa::path(
    get,
    path = "/ws/metrics",
    tag = "metrics",
    operation_id = "ws_metrics",
    responses(
        (status = 200, description = "The node's counters", body = WsMetrics),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn metrics(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.node.registry.send(GetStats).await.map_err(ApiError::unavailable)?;
    let quotas = &state.node.quotas;
    let gateway = &state.gateway;
    let redis = state.bus.as_ref().map(|bus| RedisCounters {
        status: if bus.is_up() { "up" } else { "down" },
        queued: count(&bus.queued),
        published: count(&bus.published),
        received: count(&bus.received),
        dropped: count(&bus.dropped),
        malformed: count(&bus.malformed),
        unsealed: count(&bus.unsealed),
        connects: count(&bus.connects),
        history_lost: count(&bus.history_lost),
        epochs_bumped: count(&bus.epochs_bumped),
    });
    let by_type = quotas.refused_by_type();
    Ok(HttpResponse::Ok().json(WsMetrics {
        node: state.node.metrics.snapshot(),
        connections: stats.connections,
        users: stats.users,
        channels: stats.channels,
        event_rate_limited_by_type: by_type,
        rate_limit_entries: quotas.tracked(),
        gateway: GatewayCounters {
            accepted: count(&gateway.accepted),
            repeats: count(&gateway.repeats),
            refused: count(&gateway.refused),
            delivered: count(&gateway.delivered),
            failed_attempts: count(&gateway.failed_attempts),
            rejected: count(&gateway.rejected),
            dropped: count(&gateway.dropped),
        },
        redis,
    }))
}

/// `POST /ws/broadcast` `{"type", "data"}`: one event to every authenticated
/// connection, subscribed or not.
#[utoipa::path(
    post,
    path = "/ws/broadcast",
    tag = "publish",
    params(TenantQuery),
    request_body = DirectRequest,
    responses(
        (status = 202, description = "Queued for every authenticated connection of the tenant on this node", body = Broadcasted),
        (status = 400, description = "Bad JSON, type, channel, tenant or data", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body, or the encoded event, is too large", body = crate::http::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::http::error::ErrorBody),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn broadcast(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<TenantQuery>,
    body: web::Json<DirectRequest>,
) -> Result<HttpResponse, ApiError> {
    let DirectRequest { kind, data, channel, tenant: named } = body.into_inner();
    let audience = Audience::Tenant(tenant(named, &query)?);
    let event = encode_event(&state, channel.as_deref(), &kind, data)?;
    state.node.metrics.published.fetch_add(1, Ordering::Relaxed);
    let connections =
        state.node.registry.send(Broadcast { frame: event.frame, audience }).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Accepted().json(Broadcasted { id: event.id, connections }))
}

/// `POST /ws/ping`: a server `connection.heartbeat` to every authenticated
/// connection, to check clients respond.
#[utoipa::path(
    post,
    path = "/ws/ping",
    tag = "connections",
    responses(
        (status = 202, description = "A heartbeat queued for every authenticated connection on this node", body = Broadcasted),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn ping(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let id = protocol::new_id();
    let frame = protocol::encode_with_id(&id, kind::HEARTBEAT, None, &json!({}), None);
    let connections = state
        .node
        .registry
        .send(Broadcast { frame, audience: Audience::Everyone })
        .await
        .map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Accepted().json(Broadcasted { id, connections }))
}

/// `GET /api/metrics/websocket-connections` (seed 002): the node's
/// connections now.
#[utoipa::path(
    get,
    path = "/api/metrics/websocket-connections",
    tag = "metrics",
    responses(
        (status = 200, description = "The node's connections now", body = WebsocketConnections),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn websocket_connections(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.node.registry.send(GetStats).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(WebsocketConnections {
        connections: stats.connections,
        users: stats.users,
        channels: stats.channels,
        sockets: count(&state.node.metrics.sockets),
    }))
}

/// `GET /api/metrics/event-throughput` (seed 002): events published on
/// this node over the last minute, and frames in and out per second.
#[utoipa::path(
    get,
    path = "/api/metrics/event-throughput",
    tag = "metrics",
    responses(
        (status = 200, description = "Events over the last minute, frames per second", body = EventThroughput),
    ),
    security(("admin_token" = [])),
)]
pub async fn event_throughput(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.node.metrics;
    let minute = metrics.last_minute();
    let now = metrics.snapshot();
    HttpResponse::Ok().json(EventThroughput {
        events_per_minute: minute.published,
        window_secs: minute.window_secs,
        messages_in_per_sec: now.messages_in_per_sec,
        messages_out_per_sec: now.messages_out_per_sec,
    })
}

/// `GET /api/metrics/redis-health` (seed 002): `GET /api/health/redis`'s
/// body, answered 200 whatever the state (a metric, not a probe).
#[utoipa::path(
    get,
    path = "/api/metrics/redis-health",
    tag = "metrics",
    responses(
        (status = 200, description = "The Redis link, whatever its state", body = super::health::RedisHealth),
    ),
    security(("admin_token" = [])),
)]
pub async fn redis_health(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(super::health::redis_status(&state).1)
}
