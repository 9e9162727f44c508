//! Assembles a node: the registry on its own thread, the HTTP workers with
//! their sessions, and the drain that ends it all.
//!
//! [`build`] takes an already-bound listener, so tests bind `127.0.0.1:0` and
//! run the real server in-process. It must be called inside an actix
//! `System`; the returned [`Running`] does nothing until it is awaited.

use std::any::Any;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_cors::Cors;
use actix_web::dev::{Extensions, ServerHandle};
use actix_web::http::header;
use actix_web::{web, App, HttpServer};
use nova_actors::auth::Authenticator;
use nova_actors::codes::Close;
use nova_actors::metrics::Metrics;
use nova_actors::node::Node;
use nova_actors::registry::{CloseAll, Registry};

use crate::config::Config;
use crate::http::{self, ws::ConnSocket, AppState};

/// A built server, ready to run.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    server: actix_web::dev::Server,
    control: Control,
    hub: Arbiter,
}

/// A handle to stop a running server, from any thread.
#[derive(Clone)]
pub struct Control {
    handle: ServerHandle,
    registry: Addr<Registry>,
    drain_timeout: Duration,
}

impl Control {
    /// Graceful shutdown: stop accepting, tell every client to reconnect
    /// elsewhere (close 1012), then give connections up to the drain timeout
    /// to close before the workers stop.
    pub async fn shutdown(&self) {
        log::info!("shutting down: draining connections for up to {:?}", self.drain_timeout);
        self.handle.pause().await;
        match self.registry.send(CloseAll { close: Close::ServiceRestart }).await {
            Ok(n) => log::info!("asked {n} connections to reconnect elsewhere"),
            Err(e) => log::warn!("registry unavailable during shutdown: {e}"),
        }
        self.handle.stop(true).await;
    }

    /// Immediate stop, for tests. The command is sent when this is called;
    /// the returned future only waits for the stop to complete.
    pub fn stop_now(&self) -> impl std::future::Future<Output = ()> {
        self.handle.stop(false)
    }

    /// The registry, for tests that inspect it.
    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }
}

impl Running {
    /// A handle to stop the server.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Serves until stopped.
    pub async fn run(self) -> io::Result<()> {
        let result = self.server.await;
        self.hub.stop();
        result
    }
}

/// Records each accepted connection's socket so its session can shut a
/// stalled client down (see `nova_actors::link`).
fn record_socket(conn: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ConnSocket(tcp.as_raw_fd()));
    }
}

/// Builds the node on `listener` with `config`.
pub fn build(listener: TcpListener, config: Config) -> io::Result<Running> {
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let node_id: Arc<str> = Arc::from(config.node_id.as_str());

    // The registry and the channel actors it starts share one thread of
    // their own, apart from the HTTP workers' event loops.
    let hub = Arbiter::new();
    let registry = {
        let (node_id, metrics, limits) = (node_id.clone(), metrics.clone(), config.limits.clone());
        Registry::start_in_arbiter(&hub.handle(), move |_| {
            Registry::new(node_id, limits.max_channels_per_connection, limits.slow_consumer_grace, metrics)
        })
    };
    let auth = Authenticator::new(
        config.jwt_secret.as_deref().map(str::as_bytes),
        config.api_keys.clone(),
        config.development_key,
    );
    let node = Arc::new(Node::new(node_id, registry.clone(), auth, config.limits.clone(), metrics));
    let state =
        web::Data::new(AppState { node, admin_token: config.admin_token.clone(), origins: config.origins.clone() });

    let mut server = HttpServer::new(move || {
        let origins = state.origins.clone();
        let cors = Cors::default()
            .allowed_origin_fn(move |origin, _| origins.allows(origin))
            .allowed_methods(["GET", "POST", "PUT", "DELETE"])
            .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .block_on_origin_mismatch(false)
            .max_age(3600);
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(http::MAX_BODY_BYTES).error_handler(http::error::json_error))
            .app_data(web::PathConfig::default().error_handler(http::error::path_error))
            .app_data(web::QueryConfig::default().error_handler(http::error::query_error))
            .wrap(cors)
            .configure(http::routes)
            .default_service(web::to(http::error::not_found))
    })
    .on_connect(record_socket)
    .disable_signals()
    .shutdown_timeout(config.drain_timeout.as_secs().max(1));
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    let server = server.listen(listener)?.run();
    let control = Control { handle: server.handle(), registry, drain_timeout: config.drain_timeout };
    Ok(Running { addr, server, control, hub })
}
