//! Publishing from backend services: `POST /api/publish`,
//! `POST /api/publish/batch`, `POST /api/users/{user_id}/send` and
//! `POST /api/connections/{connection_id}/send`.
//!
//! Each event is validated, encoded once here on the HTTP worker, and handed
//! to the registry as finished bytes; the answer is 202 with the event id,
//! the same id every recipient sees.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::auth::check_user_id;
use nova_actors::catalog;
use nova_actors::names::{channel_key, check_tenant, parse_channel, parse_connection_id};
use nova_actors::protocol::{self, Frame};
use nova_actors::registry::{self, SentTo};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::{Admin, AppState};

/// Events in one batch at most.
pub const MAX_BATCH: usize = 1000;

/// `POST /api/publish`: one event for a channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The channel, `namespace:id`.
    #[schema(pattern = r"^(conversation|team|document|agent|system):[A-Za-z0-9_.@-]{1,128}$")]
    channel: String,
    /// The event type: one of the catalog's (docs/protocol.md), or any
    /// other unless `NOVA_STRICT_EVENTS` is on.
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    kind: String,
    /// The payload, a JSON object (absent or `null`: `{}`), checked
    /// against the catalog's schema of the type.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// The tenant whose subscribers get it; absent: the default tenant.
    #[serde(default)]
    #[schema(value_type = Option<Tenant>)]
    tenant: Option<String>,
}

/// `POST /api/publish/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 events, all published or none.
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<PublishRequest>,
}

/// An event type a backend may publish, as the document describes it:
/// one of the catalog's types that backends send (its `data` must then
/// match the catalog's schema), or any other type outside the catalog
/// (1–64 characters of `A–Z a–z 0–9 _ . -`, not `error`, `connection.*` or
/// `channel.*`), unless `NOVA_STRICT_EVENTS` is on. Made from the catalog,
/// so the two cannot disagree.
pub struct EventType;

impl utoipa::PartialSchema for EventType {
    fn schema() -> RefOr<Schema> {
        let backend: Vec<&str> = catalog::events()
            .filter(|e| e.sent_by(catalog::Sender::Backend) && protocol::check_publish_type(e.name).is_ok())
            .map(|e| e.name)
            .collect();
        let all: Vec<String> = catalog::events().map(|e| e.name.replace('.', "\\.")).collect();
        let other = format!(r"^(?!({})$)(?!error$|connection\.|channel\.)[A-Za-z0-9_.-]{{1,64}}$", all.join("|"));
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(backend))
                    .description(Some("A type of the event catalog (docs/protocol.md): `data` must match its schema")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(other))
                    .description(Some("Any type outside the catalog, unless NOVA_STRICT_EVENTS is on")),
            )
            .description(Some("The event type"))
            .into()
    }
}

impl ToSchema for EventType {}

/// A tenant id: 1–64 characters of `A–Z a–z 0–9 _ . -`.
#[derive(ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
pub struct Tenant(pub String);

/// The answer to a publish or a direct send: the event's id, the one every
/// recipient sees.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// The event id.
    pub id: String,
}

/// The answer to a batch: the events' ids, in the order sent.
#[derive(Serialize, ToSchema)]
pub struct BatchAccepted {
    /// The event ids.
    pub ids: Vec<String>,
}

/// The answer to a send to one connection.
#[derive(Serialize, ToSchema)]
pub struct ConnectionSent<'a> {
    /// The event id.
    pub id: String,
    /// The node that holds the connection.
    pub node: &'a str,
    /// Whether it went to another node through Redis (fire and forget).
    pub forwarded: bool,
}

/// `POST /api/users/{user_id}/send`, also the body of `POST /ws/broadcast`
/// and `POST /api/connections/{connection_id}/send`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectRequest {
    /// The event type.
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    pub kind: String,
    /// The payload, a JSON object (absent or `null`: `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// Optional: lets the client file the event under a channel.
    #[serde(default)]
    #[schema(pattern = r"^(conversation|team|document|agent|system):[A-Za-z0-9_.@-]{1,128}$")]
    pub channel: Option<String>,
    /// The tenant whose connections get it (also `?tenant=`); absent: the
    /// default tenant (for one connection: whichever it is in).
    #[serde(default)]
    #[schema(value_type = Option<Tenant>)]
    pub tenant: Option<String>,
}

/// `?tenant=` on the publishing endpoints: the tenant, for callers that
/// prefer it in the URL.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant (as `tenant` in the body; both must then agree).
    #[serde(default)]
    #[param(value_type = Option<Tenant>)]
    tenant: Option<String>,
}

/// The tenant a call names, in its body or its query (absent: the default
/// tenant, `None`). Both naming different tenants is refused rather than
/// guessed.
pub fn tenant(body: Option<String>, query: &TenantQuery) -> Result<Option<Arc<str>>, ApiError> {
    let tenant = match (body, query.tenant.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request("invalid_tenant", "the body and the query name different tenants"));
        }
        (Some(t), _) => t,
        (None, Some(t)) => t.to_owned(),
        (None, None) => return Ok(None),
    };
    check_tenant(&tenant).map_err(|why| ApiError::bad_request("invalid_tenant", format!("tenant {why}")))?;
    Ok(Some(Arc::from(tenant)))
}

/// An event checked and encoded, ready for the registry.
pub struct Encoded {
    /// The event id.
    pub id: String,
    /// The channel, when the event has one.
    pub channel: Option<Arc<str>>,
    /// The wire bytes.
    pub frame: Frame,
}

/// Validates and encodes one event. `channel` is required for channel
/// publishes and optional for direct sends.
pub fn encode_event(
    state: &AppState,
    channel: Option<&str>,
    kind: &str,
    data: Option<Value>,
) -> Result<Encoded, ApiError> {
    let channel =
        channel.map(parse_channel).transpose().map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    protocol::check_publish_type(kind).map_err(|e| ApiError::bad_request("invalid_type", e))?;
    let data = match data {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(data @ Value::Object(_)) => data,
        Some(_) => return Err(ApiError::bad_request("invalid_data", "'data' must be a JSON object")),
    };
    let id = protocol::new_id();
    let frame = protocol::encode_with_id(&id, kind, channel.as_deref(), &data, None);
    // Checked on the encoded event, the one shape every publisher's event
    // has (Redis payloads and client frames are checked the same way).
    if protocol::data_too_deep(frame.text().as_bytes()) {
        let message = format!("'data' nests deeper than {} levels", protocol::MAX_DATA_DEPTH);
        return Err(ApiError::bad_request("invalid_data", message));
    }
    // Once per event, before any recipient sees it.
    catalog::check_published(kind, &data, state.strict_events).map_err(ApiError::refused_event)?;
    let limit = state.node.limits.max_frame_bytes;
    if frame.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!("the encoded event is {} bytes, over the frame limit of {limit}", frame.len()),
        ));
    }
    if kind == protocol::kind::TOOL_CALL_START {
        // The agent named in the call gets the user's `tool.call.response`.
        let field = |name| data.get(name).and_then(Value::as_str);
        if let (Some(call_id), Some(agent)) = (field("call_id"), field("agent")) {
            let (call_id, agent) = (call_id.to_owned(), agent.to_owned());
            state.node.gateway.do_send(nova_actors::gateway::RememberCall { call_id, agent });
        }
    }
    Ok(Encoded { id, channel, frame })
}

/// Hands events to the registry, or answers 503 when it has more queued
/// than it can take: publishers back off instead of the server buffering
/// without bound.
fn publish_to_registry(state: &AppState, events: Vec<registry::Publish>) -> Result<(), ApiError> {
    let count = events.len() as u64;
    state.node.registry.try_send(registry::PublishMany { events }).map_err(|_| ApiError::overloaded())?;
    state.node.metrics.published.fetch_add(count, Ordering::Relaxed);
    Ok(())
}

/// `POST /api/publish`: one event to every subscriber of a channel.
#[utoipa::path(
    post,
    path = "/api/publish",
    tag = "publish",
    params(TenantQuery),
    request_body = PublishRequest,
    responses(
        (status = 202, description = "Queued for the channel's subscribers", body = Accepted),
        (status = 400, description = "Bad JSON, channel, type, tenant or data (`invalid_event` lists the fields)", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body, or the encoded event, is too large", body = crate::http::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::http::error::ErrorBody),
        (status = 503, description = "Too many events queued: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn publish(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<TenantQuery>,
    body: web::Json<PublishRequest>,
) -> Result<HttpResponse, ApiError> {
    let PublishRequest { channel, kind, data, tenant: named } = body.into_inner();
    let tenant = tenant(named, &query)?;
    let event = encode_event(&state, Some(&channel), &kind, data)?;
    if let Some(channel) = event.channel {
        let channel = channel_key(tenant.as_deref(), &channel);
        publish_to_registry(&state, vec![registry::Publish { channel, frame: event.frame }])?;
    }
    Ok(HttpResponse::Accepted().json(Accepted { id: event.id }))
}

/// `POST /api/publish/batch`: several events; all are checked before any is
/// published, so a bad one publishes nothing.
#[utoipa::path(
    post,
    path = "/api/publish/batch",
    tag = "publish",
    params(TenantQuery),
    request_body = BatchRequest,
    responses(
        (status = 202, description = "All queued", body = BatchAccepted),
        (status = 400, description = "A bad event (the message names it, `events[i]`): none was published", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body, or an encoded event, is too large", body = crate::http::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::http::error::ErrorBody),
        (status = 503, description = "Too many events queued: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn publish_batch(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<TenantQuery>,
    body: web::Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let events = body.into_inner().events;
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::bad_request("invalid_batch", format!("'events' must hold 1 to {MAX_BATCH} events")));
    }
    let mut encoded = Vec::with_capacity(events.len());
    for (i, PublishRequest { channel, kind, data, tenant: named }) in events.into_iter().enumerate() {
        let within = |e: ApiError| e.within(&format!("events[{i}]"));
        let tenant = tenant(named, &query).map_err(within)?;
        let event = encode_event(&state, Some(&channel), &kind, data).map_err(within)?;
        encoded.push((tenant, event));
    }
    let ids: Vec<String> = encoded.iter().map(|(_, e)| e.id.clone()).collect();
    let events = encoded
        .into_iter()
        .filter_map(|(tenant, e)| {
            e.channel
                .map(|channel| registry::Publish { channel: channel_key(tenant.as_deref(), &channel), frame: e.frame })
        })
        .collect();
    publish_to_registry(&state, events)?;
    Ok(HttpResponse::Accepted().json(BatchAccepted { ids }))
}

/// `POST /api/users/{user_id}/send`: one event to every connection of a user.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/send",
    tag = "publish",
    params(
        ("user_id" = String, Path, description = "The user (a JWT's `sub`): 1–128 characters, no control or bidirectional control characters",
            pattern = "^[^\\x00-\\x1F\\x7F-\\x9F\\u061C\\u200E\\u200F\\u202A-\\u202E\\u2066-\\u2069]{1,128}$"),
        TenantQuery,
    ),
    request_body = DirectRequest,
    responses(
        (status = 202, description = "Queued for the user's connections on every node", body = Accepted),
        (status = 400, description = "Bad JSON, user id, type, channel, tenant or data", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body, or the encoded event, is too large", body = crate::http::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::http::error::ErrorBody),
        (status = 503, description = "Too many events queued: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn send_to_user(
    _: Admin,
    state: web::Data<AppState>,
    user_id: web::Path<String>,
    query: web::Query<TenantQuery>,
    body: web::Json<DirectRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id.into_inner();
    check_user_id(&user).map_err(|why| ApiError::bad_request("invalid_user_id", format!("user id {why}")))?;
    let DirectRequest { kind, data, channel, tenant: named } = body.into_inner();
    let tenant = tenant(named, &query)?;
    let event = encode_event(&state, channel.as_deref(), &kind, data)?;
    state
        .node
        .registry
        .try_send(registry::SendToUser { user, tenant, frame: event.frame })
        .map_err(|_| ApiError::overloaded())?;
    state.node.metrics.published.fetch_add(1, Ordering::Relaxed);
    Ok(HttpResponse::Accepted().json(Accepted { id: event.id }))
}

/// `POST /api/connections/{connection_id}/send`: one event to one
/// connection, on whichever node holds it. The id is the one
/// `connection.ack` reports; its node part says where the connection is.
/// This node's own: 202 once queued for it, 404 when it has no such
/// connection (or not in the tenant named). Another node's: published for
/// that node through Redis, fire and forget (202, `"forwarded": true`),
/// as a user's direct messages are; without Redis, 404.
#[utoipa::path(
    post,
    path = "/api/connections/{connection_id}/send",
    tag = "publish",
    params(
        ("connection_id" = String, Path, description = "The id `connection.ack` reported: `{node}-{number}`",
            pattern = r"^[A-Za-z0-9-]{1,32}-[1-9][0-9]{0,18}$"),
        TenantQuery,
    ),
    request_body = DirectRequest,
    responses(
        (status = 202, description = "Queued for the connection, or forwarded to its node", body = ConnectionSent),
        (status = 400, description = "Bad JSON, connection id, type, channel, tenant or data", body = crate::http::error::ErrorBody),
        (status = 404, description = "No such connection here (or not in the tenant named), and no Redis to reach its node", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body, or the encoded event, is too large", body = crate::http::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::http::error::ErrorBody),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn send_to_connection(
    _: Admin,
    state: web::Data<AppState>,
    connection_id: web::Path<String>,
    query: web::Query<TenantQuery>,
    body: web::Json<DirectRequest>,
) -> Result<HttpResponse, ApiError> {
    let connection_id = connection_id.into_inner();
    let (node, conn) = parse_connection_id(&connection_id)
        .map_err(|why| ApiError::bad_request("invalid_connection_id", why.to_string()))?;
    let DirectRequest { kind, data, channel, tenant: named } = body.into_inner();
    let tenant = tenant(named, &query)?;
    let event = encode_event(&state, channel.as_deref(), &kind, data)?;
    let send = registry::SendToConnection { node: Arc::from(node), conn, tenant, frame: event.frame };
    let forwarded = match state.node.registry.send(send).await.map_err(ApiError::unavailable)? {
        SentTo::Local => false,
        SentTo::Forwarded => true,
        SentTo::NotFound => {
            let message = if node == &*state.node.id {
                format!("no connection '{connection_id}' on this node")
            } else {
                format!("no connection '{connection_id}' here, and this node has no Redis to reach node '{node}'")
            };
            return Err(ApiError::new(StatusCode::NOT_FOUND, "connection_not_found", message));
        }
    };
    state.node.metrics.published.fetch_add(1, Ordering::Relaxed);
    Ok(HttpResponse::Accepted().json(ConnectionSent { id: event.id, node, forwarded }))
}
