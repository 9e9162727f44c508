//! What every session on this node shares: the node's id, the registry's
//! address, the authenticator, the limits (with the state of the per-user
//! ones) and the metrics. One `Arc<Node>` per session instead of a copy of
//! each keeps an idle connection small.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use crate::auth::Authenticator;
use crate::gateway::{Gateway, GatewayStats};
use crate::link::ConnId;
use crate::metrics::Metrics;
use crate::quota::{QuotaConfig, Quotas};
use crate::registry::Registry;
use crate::throttle::AuthThrottle;

/// Per-connection limits, and the per-user ones, all configurable.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How often the server pings; two missed intervals drop the connection.
    pub heartbeat_interval: Duration,
    /// How long a new connection has to send `connection.init`.
    pub auth_timeout: Duration,
    /// Largest client frame (or reassembled fragmented message), bytes.
    pub max_frame_bytes: usize,
    /// Largest frame before `connection.init` is accepted: enough for a
    /// large JWT, small enough that unauthenticated sockets cost little.
    pub max_init_frame_bytes: usize,
    /// Authenticated connections this node holds at most; one more is
    /// closed with 1013 (try again later).
    pub max_clients: usize,
    /// Failed authentications from one address within 10 s before it is
    /// refused for a minute; 0 turns it off (see `throttle.rs`).
    pub auth_failure_limit: u32,
    /// Bytes the server queues for one client before dropping it as a slow
    /// consumer (close 4008).
    pub max_outbound_bytes: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Sustained client frames per second.
    pub messages_per_second: u32,
    /// Client frames allowed in a burst above the sustained rate.
    pub message_burst: u32,
    /// Time a slow consumer's session gets to close itself before its socket
    /// is shut down.
    pub slow_consumer_grace: Duration,
    /// Rate limits per user, over all of a user's connections on this node:
    /// one over all its requests, one per request type (`quota.rs`).
    pub quotas: QuotaConfig,
    /// How long before a JWT's `exp` its connection gets
    /// `connection.expiring`, so the client can refresh in time; zero: no
    /// warning.
    pub expiry_warning: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            heartbeat_interval: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            max_frame_bytes: 1024 * 1024,
            max_init_frame_bytes: 16 * 1024,
            max_clients: 100_000,
            auth_failure_limit: 20,
            max_outbound_bytes: 2 * 1024 * 1024,
            max_channels_per_connection: 100,
            messages_per_second: 50,
            message_burst: 100,
            slow_consumer_grace: Duration::from_secs(5),
            quotas: QuotaConfig::default(),
            expiry_warning: Duration::from_secs(60),
        }
    }
}

/// This server node as its sessions see it.
pub struct Node {
    /// The node's id, the prefix of its connection ids.
    pub id: Arc<str>,
    /// Routes subscriptions and events.
    pub registry: Addr<Registry>,
    /// Takes requests for agents.
    pub gateway: Addr<Gateway>,
    /// What sessions read of the gateway's state (whether agents take chat
    /// messages), and its counters.
    pub gateway_stats: Arc<GatewayStats>,
    /// Verifies `connection.init`.
    pub auth: Authenticator,
    /// Per-connection limits.
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Failed authentications per address.
    pub auth_throttle: AuthThrottle,
    /// The per-user limits and the state of the users that used them lately.
    pub quotas: Quotas,
    next_conn: AtomicU64,
}

impl Node {
    /// A node with the given parts.
    pub fn new(
        id: Arc<str>,
        registry: Addr<Registry>,
        gateway: (Addr<Gateway>, Arc<GatewayStats>),
        auth: Authenticator,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let auth_throttle = AuthThrottle::new(limits.auth_failure_limit);
        let quotas = Quotas::new(&limits.quotas, metrics.clone());
        let (gateway, gateway_stats) = gateway;
        Node {
            id,
            registry,
            gateway,
            gateway_stats,
            auth,
            limits,
            metrics,
            auth_throttle,
            quotas,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A number for a new connection, unique on this node.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// The id a client sees for a connection: node id and number, unique across
/// nodes.
pub fn connection_id(node: &str, conn: ConnId) -> String {
    format!("{node}-{conn}")
}
