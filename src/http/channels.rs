//! The channels of this node, for operators: `GET /api/channels` (each with
//! its number of members here) and `GET /api/channels/{channel}` (its
//! members here, who is present on any node, statuses, position).
//!
//! A channel exists on a node while a connection of that node is subscribed
//! to it (the registry starts its actor on the first subscriber), so both
//! answers are this node's view; presence is the cluster's, as the channel
//! actor keeps it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::names::{channel_key, parse_channel};
use nova_actors::registry::{DescribeChannel, ListChannels};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::publish::{tenant, TenantQuery};
use super::{Admin, AppState};

/// `?limit=` of `GET /api/channels`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Channels listed at most (default 100; above 10000 counts as 10000).
    #[serde(default, deserialize_with = "super::history::saturating")]
    limit: Option<u64>,
}

/// `GET /api/channels`: the channels with subscribers on this node, by
/// name then tenant, each with its `members` here.
#[utoipa::path(
    get,
    path = "/api/channels",
    tag = "channels",
    operation_id = "list_channels",
    params(ListQuery),
    responses(
        (status = 200, description = "This node's channels, by name then tenant, with their members here", body = nova_actors::registry::ChannelList),
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
    let limit = super::connections::listing_limit(query.limit);
    let list = state.node.registry.send(ListChannels { limit }).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /api/channels/{channel}[?tenant=]`: the channel's members on this
/// node, who is present, and on `team:` channels their statuses; 404
/// `channel_not_found` when no connection of this node is subscribed.
#[utoipa::path(
    get,
    path = "/api/channels/{channel}",
    tag = "channels",
    operation_id = "show_channel",
    params(
        ("channel" = String, Path, description = "The channel, `namespace:id`",
            pattern = r"^(conversation|team|document|agent|system):[A-Za-z0-9_.@-]{1,128}$"),
        TenantQuery,
    ),
    responses(
        (status = 200, description = "Its members on this node, who is present on any node, statuses on `team:` channels, the position with history", body = nova_actors::registry::ChannelDetails),
        (status = 400, description = "`invalid_channel` or `invalid_tenant`", body = crate::http::error::ErrorBody),
        (status = 404, description = "`channel_not_found`: no connection of this node is subscribed to it", body = crate::http::error::ErrorBody),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn show(
    _: Admin,
    state: web::Data<AppState>,
    channel: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_channel(&channel).map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    let tenant = tenant(None, &query)?;
    let key = channel_key(tenant.as_deref(), &name);
    let details = state.node.registry.send(DescribeChannel { key }).await.map_err(ApiError::unavailable)?;
    let details = details.ok_or_else(|| {
        let message = format!("no connection of this node is subscribed to '{name}'");
        ApiError::new(StatusCode::NOT_FOUND, "channel_not_found", message)
    })?;
    Ok(HttpResponse::Ok().json(details))
}
