//! `GET /api/channels/{channel}/history`: a channel's kept events, for
//! backends that rebuild state or check what clients could recover.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::broker::HistoryError;
use nova_actors::names::{channel_key, parse_channel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::publish::{tenant, TenantQuery};
use super::{Admin, AppState};

/// Events one page holds at most, and by default.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// The query of a history read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Events after this offset (default 0: from the oldest kept).
    #[serde(default, deserialize_with = "saturating")]
    since: Option<u64>,
    /// Events at most, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The tenant whose channel it is; absent: the default one.
    #[param(value_type = Option<super::publish::Tenant>)]
    tenant: Option<String>,
}

/// An offset or a count in a query: any non-negative integer, one past
/// `u64` read as `u64::MAX` (an offset past any, a count above the cap)
/// rather than refused for a size nobody can reach.
pub fn saturating<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else { return Ok(None) };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(format!("'{}' is not a non-negative integer", text.escape_default())));
    }
    // Only digits: the parse fails on overflow alone.
    Ok(Some(text.parse().unwrap_or(u64::MAX)))
}

/// A page of a channel's history. Written with its events spliced in as
/// the bytes subscribers got (`events` is serialized empty, then filled).
#[derive(Serialize, ToSchema)]
pub struct HistoryPage<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The channel's offset now: its newest event's.
    pub offset: u64,
    /// The channel's epoch: when it changes, offsets start over.
    pub epoch: &'a str,
    /// Whether the events start right after `since` (`false`: older ones
    /// are gone).
    pub complete: bool,
    /// The events, oldest first, each exactly as subscribers got it.
    #[schema(value_type = Vec<Object>)]
    pub events: [Value; 0],
}

/// `GET /api/channels/{channel}/history?since=&limit=`: up to `limit`
/// events after offset `since`, oldest first, each exactly as subscribers
/// got it, with the channel's position (`offset`, `epoch`) and whether the
/// events start right after `since` (`complete`; `false` when older ones
/// are gone). 404 `history_not_kept` for a namespace without history, 503
/// when the store does not answer.
#[utoipa::path(
    get,
    path = "/api/channels/{channel}/history",
    tag = "history",
    params(
        ("channel" = String, Path, description = "The channel, `namespace:id`",
            pattern = r"^(conversation|team|document|agent|system):[A-Za-z0-9_.@-]{1,128}$"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "Up to `limit` events after `since`, oldest first", body = HistoryPage),
        (status = 400, description = "A bad channel, `since`, `limit` or tenant", body = crate::http::error::ErrorBody),
        (status = 404, description = "`history_not_kept`: the channel's namespace keeps no history (see `--history`)", body = crate::http::error::ErrorBody),
        (status = 503, description = "The history store did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn history(
    _: Admin,
    state: web::Data<AppState>,
    channel: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_channel(&channel).map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    let HistoryQuery { since, limit, tenant: named } = query.into_inner();
    let tenant = tenant(named, &TenantQuery::default())?;
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request("invalid_limit", format!("'limit' must be 1 to {MAX_PAGE}")));
    }
    let key = channel_key(tenant.as_deref(), &name);
    let page = match state.broker.history(&key, since.unwrap_or(0), None, limit).await {
        Ok(page) => page,
        Err(e @ HistoryError::NotKept(_)) => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "history_not_kept", format!("{e}: see --history")))
        }
        Err(e) => return Err(ApiError::unavailable(e)),
    };
    // The events are written as subscribers got them, not parsed again.
    let events: usize = page.events.iter().map(|(_, f)| f.len() + 1).sum();
    let mut body = String::with_capacity(events + 256);
    let head = HistoryPage {
        channel: &name,
        offset: page.position.offset,
        epoch: &page.position.epoch,
        complete: page.complete,
        events: [],
    };
    let head = serde_json::to_string(&head).map_err(ApiError::unavailable)?;
    // `…,"events":[]}`: the events go between the brackets.
    body.push_str(head.strip_suffix("]}").unwrap_or(&head));
    for (i, (_, frame)) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(frame.text());
    }
    body.push_str("]}");
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}
