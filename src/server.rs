//! Assembles a node: the registry on its own thread, worker threads whose
//! connections meet the WebSocket transport first and actix-web second, and
//! the drain that ends it all.
//!
//! [`build`] takes an already-bound listener ([`bind`] makes one with a
//! deep accept backlog), so tests bind `127.0.0.1:0` and run the real server
//! in-process. It must be called inside an actix `System`; the returned
//! [`Running`] does nothing until it is awaited.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::channel;
use actix::{Actor, Addr, Arbiter, Context};
use actix_cors::Cors;
use actix_http::HttpService;
use actix_server::ServerHandle;
use actix_service::{fn_factory, fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::http::header;
use actix_web::{web, App};
use nova_actors::auth::Authenticator;
use nova_actors::broker::memory::{MemoryBroker, MemoryPresence};
use nova_actors::broker::redis::{RedisBroker, RedisPresence};
use nova_actors::broker::{Broker, PresenceStore};
use nova_actors::cluster::bus::{Bus, BusConfig};
use nova_actors::cluster::seal::ClusterKey;
use nova_actors::cluster::BusStatus;
use nova_actors::codes::Close;
use nova_actors::gateway::{Gateway, GatewayStats};
use nova_actors::metrics::Metrics;
use nova_actors::node::Node;
use nova_actors::quota::PRUNE_EVERY;
use nova_actors::registry::{CloseAll, Registry};
use nova_actors::settings::health::HealthMonitor;
use nova_actors::settings::store::Store;
use nova_actors::settings::watcher::ConfigWatcher;
use nova_actors::settings::SettingsState;
use nova_actors::throttle::AuthThrottle;
use tokio::sync::Notify;

use crate::admission::{track_requests, ConnClock, Pending};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::transport::{self, ConnHangup, Replay, Transport};

/// Pending connections the kernel queues before accepting (the std default
/// of 128 drops bursts of reconnecting clients).
const ACCEPT_BACKLOG: i32 = 4096;

/// Descriptors kept free of connections: for settings files, Redis, health
/// checks and accepting at all. Without them, a full table of connections
/// makes every `accept` fail with "too many open files".
const FD_RESERVE: u64 = 256;

/// Connections per worker beyond both budgets: ones closing (a close frame
/// being written, a lingering read) still hold their descriptors.
const CLOSING_SLACK: usize = 64;

/// How long start-up waits for the config watcher to watch and load the
/// settings files before serving anyway (with a warning).
const WATCHER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a listening socket with a deep accept backlog.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    let addr: SocketAddr =
        addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bind address '{addr}': {e}")))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// A built server, ready to run.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    server: actix_server::Server,
    control: Control,
    hubs: Vec<Arbiter>,
}

/// A handle to stop a running server, from any thread.
#[derive(Clone)]
pub struct Control {
    handle: ServerHandle,
    registry: Addr<Registry>,
    presence: Arc<dyn PresenceStore>,
    drain_timeout: Duration,
    /// Tells kept-alive HTTP connections to close on shutdown.
    http_shutdown: Arc<Notify>,
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
        self.http_shutdown.notify_waiters();
        // Other nodes announce this node's users as gone now rather than
        // when its heartbeat expires.
        self.presence.retire().await;
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
        for hub in self.hubs {
            hub.stop();
        }
        result
    }
}

/// The node's broker and presence store, chosen once here.
type Roles = (Arc<dyn Broker>, Arc<dyn PresenceStore>);

/// Builds the node on `listener` with `config`.
pub fn build(listener: TcpListener, mut config: Config) -> io::Result<Running> {
    let addr = listener.local_addr()?;
    // Compiled here, once, rather than by the first frame on a worker.
    nova_actors::catalog::init();
    // The OpenAPI document too, so no request pays for it.
    http::openapi::init();
    let metrics = Arc::new(Metrics::default());
    let node_id: Arc<str> = Arc::from(config.node_id.as_str());

    // The registry and the channel actors run on hub threads of their own,
    // apart from the workers' event loops: one hub per worker, channels
    // spread over them by name.
    let workers = config.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    fit_fd_limit(&mut config, workers);
    let mut hubs: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();

    // The bus and the registry each need the other's address, so both
    // mailboxes are made before either actor.
    let (bus_tx, bus_rx) = channel::channel::<Bus>(16);
    let bus_addr = Addr::new(bus_tx);
    let (registry_tx, registry_rx) = channel::channel::<Registry>(16);
    let registry = Addr::new(registry_tx);
    let history = config.history.clone();
    let (bus, roles, bus_status): (Option<Bus>, _, _) = match &config.redis {
        None => {
            let roles: Roles = (Arc::new(MemoryBroker::new(history)), Arc::new(MemoryPresence));
            (None, roles, None)
        }
        Some(redis) => {
            let status = Arc::new(BusStatus::default());
            let bus_config = BusConfig {
                url: redis.url.clone(),
                prefix: redis.prefix.clone(),
                presence_ttl: redis.presence_ttl,
                max_frame_bytes: config.limits.max_frame_bytes,
                strict_events: config.strict_events,
                key: ClusterKey::new(redis.cluster_secret.as_bytes())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            };
            let (bus, outbox) = Bus::new(
                bus_config,
                node_id.clone(),
                (registry.clone().recipient(), registry.clone().recipient()),
                status.clone(),
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("redis: {e}")))?;
            let roles: Roles = (
                Arc::new(RedisBroker::new(&bus, bus_addr.clone(), outbox, history)),
                Arc::new(RedisPresence::new(bus_addr.clone())),
            );
            (Some(bus), roles, Some(status))
        }
    };
    let (broker, presence) = (Arc::clone(&roles.0), Arc::clone(&roles.1));
    {
        let (node_id, metrics, limits) = (node_id.clone(), metrics.clone(), config.limits.clone());
        let handles: Vec<_> = hubs.iter().map(Arbiter::handle).collect();
        let registry = Registry::new(
            node_id,
            limits.max_channels_per_connection,
            limits.slow_consumer_grace,
            metrics,
            handles,
            roles.clone(),
        );
        hubs[0].spawn_fn(move || {
            Context::with_receiver(registry_rx).run(registry);
        });
    }
    // The gateway writes records on the bus's connection.
    let redis_conn = bus.as_ref().map(Bus::connection);
    if let Some(bus) = bus {
        // Redis work on a thread of its own: a slow Redis never holds up
        // the registry or a channel.
        let thread = Arbiter::new();
        thread.spawn_fn(move || {
            Context::with_receiver(bus_rx).run(bus);
        });
        hubs.push(thread);
    }

    // The agent gateway on a thread of its own: webhook deliveries and
    // Redis writes never hold up the hubs or the settings thread.
    let gateway_stats = Arc::new(GatewayStats::default());
    let gateway = {
        let gateway_config = config.gateway.clone();
        let (registry, stats) = (registry.clone(), gateway_stats.clone());
        let thread = Arbiter::new();
        let gateway = Gateway::start_in_arbiter(&thread.handle(), move |_| {
            Gateway::new(gateway_config, registry, stats, redis_conn)
        });
        hubs.push(thread);
        gateway
    };

    // Live settings: the watcher and the health monitor share a thread;
    // neither is on a path that serves clients.
    let settings = Arc::new(SettingsState::default());
    let s = &config.settings;
    let store = Arc::new(Store::new(&s.config_dir, &s.prompts_dir, s.backups));
    let settings_thread = {
        let thread = Arbiter::new();
        let (registry, state, store) = (registry.clone(), settings.clone(), store.clone());
        let (interval, timeout, window) = (s.health_interval, s.health_timeout, s.debounce);
        let broker = Arc::clone(&broker);
        let gateway = gateway.clone().recipient();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        thread.spawn_fn(move || {
            let health = HealthMonitor::new(registry.clone(), state.clone(), interval, timeout).start();
            ConfigWatcher::new(store, state, registry, health, gateway, broker, window).on_ready(ready_tx).start();
        });
        let handle = thread.handle();
        hubs.push(thread);
        // Serve only once the files are watched and loaded: a client that
        // connects, or an edit made, right after start-up is then neither
        // answered from an empty config nor missed.
        if ready_rx.recv_timeout(WATCHER_START_TIMEOUT).is_err() {
            log::warn!("the config watcher did not start in time; settings changes may be missed until it does");
        }
        handle
    };
    let auth = Authenticator::new(
        config.jwt.as_ref(),
        config.api_keys.clone(),
        config.development_key,
        Some(&config.admin_token),
    );
    let gateway = (gateway, gateway_stats.clone());
    let node = Arc::new(Node::new(node_id, registry.clone(), gateway, auth, config.limits.clone(), metrics));
    // A pass over the per-user limits visits every user active lately: on
    // the settings thread, off the workers and the hubs that serve clients.
    let quotas = node.clone();
    settings_thread.spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            let kept = quotas.quotas.prune();
            log::trace!("rate limits: {kept} entries of users active lately kept");
        }
    });
    let state = web::Data::new(AppState {
        node: node.clone(),
        admin_token: config.admin_token.clone(),
        origins: config.origins.clone(),
        proxies: config.trusted_proxies.clone(),
        admin_throttle: AuthThrottle::new(config.limits.auth_failure_limit),
        bus: bus_status,
        settings,
        store,
        restart: http::admin::Restart::new(&config),
        strict_events: config.strict_events,
        gateway: gateway_stats,
        broker,
        metrics_token: config.metrics_token.clone(),
    });
    let transport = Arc::new(Transport {
        node: node.clone(),
        origins: config.origins.clone(),
        proxies: config.trusted_proxies.clone(),
        http_timeout: config.http_timeout,
    });
    let pending_per_worker = config.max_pending_connections.div_ceil(workers);
    // Both budgets, plus a little room for connections that are closing.
    let per_worker = (config.limits.max_clients + config.max_pending_connections).div_ceil(workers) + CLOSING_SLACK;
    let http_shutdown = Arc::new(Notify::new());

    let builder = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .backlog(ACCEPT_BACKLOG as u32)
        .disable_signals()
        .shutdown_timeout(config.drain_timeout.as_secs().max(1));
    let http_shutdown_signal = http_shutdown.clone();
    let http_timeout = config.http_timeout;
    let server = builder
        .listen("nova-realtime", listener, move || {
            // Runs once per worker: its actix-web application, and the
            // transport in front of it.
            let app = app(state.clone()).into_factory().map_err(|e| e.error_response());
            let signal = http_shutdown_signal.clone();
            let http = HttpService::build()
                // The transport's clock (admission.rs) bounds every request;
                // actix-web's own timers agree with it.
                .client_request_timeout(http_timeout)
                .keep_alive(http_timeout)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                // A WebSocket upgraded through actix-web finds its
                // connection's hang-up here.
                .on_connect_ext(|io: &Replay, data| {
                    data.insert(ConnHangup(io.hangup().clone()));
                    data.insert(ConnClock(io.clock().clone()));
                })
                .finish(map_config(app, |_| AppConfig::default()));
            let transport = transport.clone();
            let metrics = node.metrics.clone();
            fn_factory(move || {
                let http = http.new_service(());
                let transport = transport.clone();
                // Made on the worker's own thread: the budget is per worker.
                let pending = Pending::new(pending_per_worker, metrics.clone());
                async move {
                    let http = Rc::new(http.await?);
                    Ok::<_, ()>(fn_service(move |io: actix_web::rt::net::TcpStream| {
                        let (http, transport, pending) = (http.clone(), transport.clone(), pending.clone());
                        async move { transport::serve(io, transport, &*http, &pending).await }
                    }))
                }
            })
        })?
        .run();
    let control =
        Control { handle: server.handle(), registry, presence, drain_timeout: config.drain_timeout, http_shutdown };
    Ok(Running { addr, server, control, hubs })
}

/// Lowers the connection budgets to what the open-file limit allows, less
/// [`FD_RESERVE`]: past it, `accept` fails for everyone, so the budgets must
/// run out first (and shed, or answer 1013) while the server still works.
fn fit_fd_limit(config: &mut Config, workers: usize) {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else { return };
    // The accept cap is the budgets plus each worker's slack (and rounding).
    let slack = ((CLOSING_SLACK + 1) * workers) as u64;
    let usable = soft.saturating_sub(FD_RESERVE + slack).max(2) as usize;
    let (clients, pending) = (config.limits.max_clients, config.max_pending_connections);
    if clients + pending <= usable {
        return;
    }
    // Pending connections are short-lived (a request, a handshake): an
    // eighth of what is left is plenty.
    let pending = pending.min(usable / 8).max(1);
    let clients = clients.min(usable - pending).max(1);
    log::info!(
        "the open-file limit is {soft}: at most {clients} clients and {pending} other connections \
         (configured {} and {}); raise the limit (ulimit -n) for more",
        config.limits.max_clients,
        config.max_pending_connections
    );
    config.limits.max_clients = clients;
    config.max_pending_connections = pending;
}

/// The actix-web application: the REST API and the WebSocket fallback.
fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let origins = state.origins.clone();
    let cors = Cors::default()
        .allowed_origin_fn(move |origin, _| origins.allows(origin))
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, crate::logging::REQUEST_ID])
        .expose_headers([crate::logging::REQUEST_ID])
        .block_on_origin_mismatch(false)
        .max_age(3600);
    App::new()
        .app_data(state)
        .app_data(web::JsonConfig::default().limit(http::MAX_BODY_BYTES).error_handler(http::error::json_error))
        .app_data(web::PathConfig::default().error_handler(http::error::path_error))
        .app_data(web::QueryConfig::default().error_handler(http::error::query_error))
        .wrap(cors)
        .wrap(actix_web::middleware::from_fn(track_requests))
        .wrap(actix_web::middleware::from_fn(crate::logging::request_id))
        .configure(http::routes)
        .default_service(web::to(http::error::not_found))
}
