//! `GET /api/channels/{channel}/history`: a channel's kept events, for
//! backends that rebuild state or check what clients could recover.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::broker::HistoryError;
use nova_actors::names::{channel_key, parse_channel};
use serde::Deserialize;

use super::error::ApiError;
use super::publish::{tenant, TenantQuery};
use super::{Admin, AppState};

/// Events one page holds at most, and by default.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// The query of a history read.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Events after this offset (default 0: from the oldest kept).
    since: Option<u64>,
    /// Events at most, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// The tenant whose channel it is; absent: the default one.
    tenant: Option<String>,
}

/// `GET /api/channels/{channel}/history?since=&limit=`: up to `limit`
/// events after offset `since`, oldest first, each exactly as subscribers
/// got it, with the channel's position (`offset`, `epoch`) and whether the
/// events start right after `since` (`complete`; `false` when older ones
/// are gone). 404 `history_not_kept` for a namespace without history, 503
/// when the store does not answer.
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
    let head = serde_json::json!({
        "channel": &*name,
        "offset": page.position.offset,
        "epoch": &*page.position.epoch,
        "complete": page.complete,
    })
    .to_string();
    body.push_str(head.strip_suffix('}').unwrap_or(&head));
    body.push_str(",\"events\":[");
    for (i, (_, frame)) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(frame.text());
    }
    body.push_str("]}");
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}
