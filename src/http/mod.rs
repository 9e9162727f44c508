//! The HTTP surface: the WebSocket endpoint and the REST API, grouped by
//! resource.
//!
//! - [`ws`]: `GET /ws`, `GET /ws/{client_id}` when the transport left them to
//!   actix-web: refusals, and upgrades on kept-alive connections.
//! - [`publish`]: `POST /api/publish`, `/api/publish/batch`,
//!   `/api/users/{user_id}/send`, `/api/connections/{connection_id}/send`.
//! - [`connections`]: `GET /ws/connections`, `GET /ws/metrics`,
//!   `POST /ws/broadcast`, `POST /ws/ping`, `GET /api/metrics/*`,
//!   `DELETE /api/connections/{connection_id}`.
//! - [`health`]: `GET /health`, `GET /api/health/redis`.
//! - [`channels`]: `GET /api/channels`, `GET /api/channels/{channel}`.
//! - [`history`]: `GET /api/channels/{channel}/history`.
//! - [`nodes`]: `GET /api/nodes`.
//! - [`prometheus`]: `GET /metrics`.
//! - [`settings`]: `GET /api/mcp`, `PUT /api/mcp/{name}/toggle`,
//!   `GET /api/agents`, `PUT /api/agents/{name}/toggle`,
//!   `POST /api/config/validate`, `GET /api/config/backups`,
//!   `POST /api/config/restore/{backup_id}`, `GET|PUT /api/prompt`.
//! - [`admin`]: `POST /api/admin/restart/{service}` (development only).
//! - [`assets`]: `GET /client/nova-realtime.js` and `.d.ts`, the JavaScript
//!   client (no authentication).
//! - [`openapi`]: `GET /openapi.json`, `GET /docs`, `GET /docs/{asset}`: the
//!   OpenAPI document of all of the above, and its page.
//! - [`dashboard`]: `GET /dashboard` and its files (no authentication: the
//!   page holds no data; its calls carry the admin token).
//!
//! Everything but the health checks, the WebSocket endpoint, the client
//! module, the dashboard's files and the API's documentation takes the admin
//! bearer token ([`Admin`]); every error is JSON ([`error`]). Every route
//! registered here is described in the OpenAPI document: see
//! [`openapi::ApiDoc`] for how a new one joins it.

pub mod admin;
pub mod assets;
pub mod channels;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod history;
pub mod nodes;
pub mod openapi;
pub mod prometheus;
pub mod publish;
pub mod settings;
pub mod ws;

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use nova_actors::auth::constant_time_eq;
use nova_actors::cluster::BusStatus;
use nova_actors::node::Node;
use nova_actors::settings::store::Store;
use nova_actors::settings::SettingsState;

use crate::origins::Origins;
use crate::peer::{forwarded_for, TrustedProxies};
use error::ApiError;
use nova_actors::throttle::AuthThrottle;

/// Largest REST request body. Single events are further held to the frame
/// limit once encoded.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What every handler shares.
pub struct AppState {
    /// The node: registry, limits, metrics.
    pub node: Arc<Node>,
    /// The admin bearer token.
    pub admin_token: String,
    /// Allowed browser origins.
    pub origins: Origins,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub proxies: TrustedProxies,
    /// Wrong admin tokens per address.
    pub admin_throttle: AuthThrottle,
    /// The Redis bus's state; `None` for a node on its own.
    pub bus: Option<Arc<BusStatus>>,
    /// The live settings, as the config watcher and health monitor keep them.
    pub settings: Arc<SettingsState>,
    /// The settings files.
    pub store: Arc<Store>,
    /// The restart endpoint's configuration.
    pub restart: admin::Restart,
    /// Refuse published events whose type is not in the catalog.
    pub strict_events: bool,
    /// The agent gateway's counters (its address is the node's).
    pub gateway: Arc<nova_actors::gateway::GatewayStats>,
    /// The node's broker, for history reads.
    pub broker: Arc<dyn nova_actors::broker::Broker>,
    /// A token that reads `GET /metrics` only.
    pub metrics_token: Option<String>,
}

/// Proof that a request carried the admin bearer token; take it as a
/// handler argument to require it.
///
/// Wrong tokens count against their address like failed WebSocket
/// authentications (`throttle.rs`, a table of its own, so a guesser on one
/// side does not lock the other out): past the limit, every admin request from
/// that address is answered 429 for a minute, whatever token it carries. A
/// request with no token at all is not a guess and does not count.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::unauthorized()));
        };
        let throttle = &state.admin_throttle;
        let peer = req.peer_addr().map(|p| {
            let forwarded = forwarded_for(req.headers().get_all("x-forwarded-for").map(|v| v.as_bytes()));
            state.proxies.client_ip(p.ip(), forwarded.as_deref())
        });
        if let Some(Err(left)) = peer.map(|p| throttle.check(p)) {
            state.node.metrics.auth_throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let message =
                format!("too many wrong tokens from this address: refused for another {} s", left.as_secs().max(1));
            return ready(Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_failures", message)));
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        ready(match presented {
            Some(token) if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) => Ok(Admin),
            Some(_) => {
                if let Some(peer) = peer {
                    throttle.failed(peer);
                }
                Err(ApiError::unauthorized())
            }
            None => Err(ApiError::unauthorized()),
        })
    }
}

/// A resource whose wrong methods get a JSON 405.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(error::method_not_allowed))
}

/// Registers every route. Admin routes under `/ws/` come before
/// `/ws/{client_id}`, so those names cannot be client ids.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health").route(web::get().to(health::health)))
        .service(resource("/api/health/redis").route(web::get().to(health::redis)))
        .service(resource("/ws/connections").route(web::get().to(connections::list)))
        .service(resource("/ws/metrics").route(web::get().to(connections::metrics)))
        .service(resource("/metrics").route(web::get().to(prometheus::metrics)))
        .service(resource("/api/nodes").route(web::get().to(nodes::list)))
        .service(
            resource("/api/metrics/websocket-connections").route(web::get().to(connections::websocket_connections)),
        )
        .service(resource("/api/metrics/event-throughput").route(web::get().to(connections::event_throughput)))
        .service(resource("/api/metrics/redis-health").route(web::get().to(connections::redis_health)))
        .service(resource("/ws/broadcast").route(web::post().to(connections::broadcast)))
        .service(resource("/ws/ping").route(web::post().to(connections::ping)))
        .service(resource("/ws").route(web::get().to(ws::connect)))
        .service(resource("/ws/{client_id}").route(web::get().to(ws::connect_as)))
        .service(resource("/api/publish").route(web::post().to(publish::publish)))
        .service(resource("/api/publish/batch").route(web::post().to(publish::publish_batch)))
        .service(resource("/api/channels").route(web::get().to(channels::list)))
        .service(resource("/api/channels/{channel}").route(web::get().to(channels::show)))
        .service(resource("/api/channels/{channel}/history").route(web::get().to(history::history)))
        .service(resource("/api/users/{user_id}/send").route(web::post().to(publish::send_to_user)))
        .service(resource("/api/connections/{connection_id}/send").route(web::post().to(publish::send_to_connection)))
        .service(resource("/api/connections/{connection_id}").route(web::delete().to(connections::disconnect)))
        .service(resource("/api/mcp").route(web::get().to(settings::list_mcp)))
        .service(resource("/api/mcp/{name}/toggle").route(web::put().to(settings::toggle_mcp)))
        .service(resource("/api/agents").route(web::get().to(settings::list_agents)))
        .service(resource("/api/agents/{name}/toggle").route(web::put().to(settings::toggle_agent)))
        .service(
            resource("/api/config/validate")
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .route(web::post().to(settings::validate)),
        )
        .service(resource("/api/config/backups").route(web::get().to(settings::backups)))
        .service(resource("/api/config/restore/{backup_id}").route(web::post().to(settings::restore)))
        .service(
            resource("/api/prompt")
                .route(web::get().to(settings::get_prompt))
                .route(web::put().to(settings::put_prompt)),
        )
        .service(resource("/api/admin/restart/{service}").route(web::post().to(admin::restart)))
        .service(resource("/client/nova-realtime.js").route(web::get().to(assets::client_js)))
        .service(resource("/client/nova-realtime.d.ts").route(web::get().to(assets::client_dts)))
        .service(resource("/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(resource("/docs").route(web::get().to(openapi::docs)))
        .service(resource("/docs/{asset}").route(web::get().to(openapi::docs_asset)))
        .service(resource("/dashboard").route(web::get().to(dashboard::index)))
        .service(resource("/dashboard/{file}").route(web::get().to(dashboard::file)));
}
