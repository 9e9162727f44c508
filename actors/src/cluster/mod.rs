//! Scaling out through Redis: several nodes behind a load balancer act as
//! one server.
//!
//! - [`bus`]: the bus actor, one per node. It owns the Redis pub/sub
//!   connection, subscribes to the Redis channels this node has local
//!   interest in, hands events from other nodes to the registry, and keeps
//!   this node's presence and liveness in Redis. Its state lives in the
//!   three files below, plain structs the actor drives, so the rules can be
//!   tested without Redis.
//! - [`retry`]: the connection to Redis as a state machine: connection
//!   numbers, attempts, backoff, one warning per outage.
//! - [`interest`]: the Redis channels this node needs against those it is
//!   subscribed to, sent as one net change per burst.
//! - [`membership`]: who is present on this node, and the presence changes
//!   Redis has not counted yet.
//! - [`outbox`]: the bounded queue every published event takes to Redis,
//!   and the task that writes it; publishing never waits for Redis.
//! - [`wire`]: the payload format on the Redis channels, the one external
//!   publishers use too, and the checks every payload from Redis passes.
//! - [`seal`]: the HMAC that tells the nodes' own messages from anything
//!   else published to Redis.
//! - [`presence`]: the Lua scripts that keep cross-node presence counts
//!   atomic.
//! - [`history`]: a channel's recent events in Redis, numbered by offsets
//!   Redis assigns in the same step as it publishes them.
//!
//! Without a Redis URL none of this runs and the node is on its own.
//! docs/scaling.md describes the design, the keys and the failure behaviour.

pub mod bus;
pub mod history;
pub mod interest;
pub mod membership;
pub mod outbox;
pub mod presence;
pub mod retry;
pub mod seal;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// The names of every Redis key and channel a deployment uses, all under
/// one prefix so several deployments can share a Redis.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (`nova:` by default).
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_owned() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Pub/sub channel of a server channel: `{prefix}ch:{channel}`.
    pub fn channel(&self, channel: &str) -> String {
        format!("{}ch:{channel}", self.prefix)
    }

    /// Pub/sub channel of a user's direct messages: `{prefix}user:{user}`.
    pub fn user(&self, user: &str) -> String {
        format!("{}user:{user}", self.prefix)
    }

    /// Pub/sub channel of broadcasts to every connection: `{prefix}broadcast`.
    pub fn broadcast(&self) -> String {
        format!("{}broadcast", self.prefix)
    }

    /// Hash of a channel's users across nodes: `{prefix}presence:{channel}`.
    pub fn presence(&self, channel: &str) -> String {
        format!("{}presence:{channel}", self.prefix)
    }

    /// Hash of the statuses set on a team channel: `{prefix}status:{channel}`
    /// (user → `{"status","text"?}`); a user's entry goes with their
    /// presence.
    pub fn status(&self, channel: &str) -> String {
        format!("{}status:{channel}", self.prefix)
    }

    /// Set of the presence a node has counted: `{prefix}node:{id}:presence`.
    pub fn node_presence(&self, node: &str) -> String {
        format!("{}node:{node}:presence", self.prefix)
    }

    /// The pattern of every connection's channel on node `node`
    /// (`{prefix}conn:{node}:*`, the prefix's glob characters escaped): the
    /// node's one `PSUBSCRIBE` for messages to single connections.
    pub fn connections(&self, node: &str) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + node.len() + 8);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("conn:");
        pattern.push_str(node);
        pattern.push_str(":*");
        pattern
    }

    /// Stream of a channel's recent events, its ids `<offset>-1`:
    /// `{prefix}history:{<channel>}`. The braces are literal, a Redis
    /// Cluster hash tag, so the history and [`Keys::meta`] of a channel
    /// are in one slot and one script may touch both (a channel key holds
    /// no brace; a prefix with one makes its own tag, every key in one
    /// slot).
    pub fn history(&self, channel: &str) -> String {
        format!("{}history:{{{channel}}}", self.prefix)
    }

    /// Hash of a channel's position, `top` (its last offset) and `epoch`:
    /// `{prefix}meta:{<channel>}`, in the slot of [`Keys::history`].
    pub fn meta(&self, channel: &str) -> String {
        format!("{}meta:{{{channel}}}", self.prefix)
    }

    /// Sorted set of live nodes, scored by when their heartbeat expires
    /// (milliseconds, Redis clock): `{prefix}nodes`.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

/// What a Redis pub/sub channel name stands for on this server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A server channel.
    Channel(std::sync::Arc<str>),
    /// A user's connections.
    User(std::sync::Arc<str>),
    /// A user's connections in a tenant other than the default one.
    TenantUser {
        /// The tenant.
        tenant: std::sync::Arc<str>,
        /// The user.
        user: std::sync::Arc<str>,
    },
    /// Every connection of the default tenant (`None`) or of a tenant.
    Broadcast(Option<std::sync::Arc<str>>),
    /// One connection (`POST /api/connections/{connection_id}/send`).
    Connection {
        /// The node that holds it.
        node: std::sync::Arc<str>,
        /// Its number on that node.
        conn: crate::link::ConnId,
        /// The tenant it must be in; `None`: whichever it is in.
        tenant: Option<std::sync::Arc<str>>,
    },
}

impl Topic {
    /// The topic of `user`'s connections in `tenant`.
    pub fn user(tenant: Option<&str>, user: &str) -> Topic {
        match tenant {
            None => Topic::User(user.into()),
            Some(tenant) => Topic::TenantUser { tenant: tenant.into(), user: user.into() },
        }
    }

    /// Its Redis channel name: a tenant's users and broadcasts have their
    /// own (`{prefix}tuser:{tenant}/{user}`, `{prefix}broadcast:{tenant}`;
    /// a tenant id holds no `/` or `:`). A connection's is
    /// `{prefix}conn:{node}:{conn}`, `…/{tenant}` when the sender named
    /// its tenant: under the one pattern its node listens to
    /// ([`Keys::connections`]), so a connection costs no subscription.
    pub fn key(&self, keys: &Keys) -> String {
        match self {
            Topic::Channel(c) => keys.channel(c),
            Topic::User(u) => keys.user(u),
            Topic::TenantUser { tenant, user } => format!("{}tuser:{tenant}/{user}", keys.prefix()),
            Topic::Broadcast(None) => keys.broadcast(),
            Topic::Broadcast(Some(tenant)) => format!("{}:{tenant}", keys.broadcast()),
            Topic::Connection { node, conn, tenant: None } => format!("{}conn:{node}:{conn}", keys.prefix()),
            Topic::Connection { node, conn, tenant: Some(tenant) } => {
                format!("{}conn:{node}:{conn}/{tenant}", keys.prefix())
            }
        }
    }

    /// The topic of a Redis channel name, `None` for names that are not
    /// ours.
    pub fn parse(keys: &Keys, name: &str) -> Option<Topic> {
        let rest = name.strip_prefix(keys.prefix())?;
        use crate::names::check_tenant;
        if let Some(channel) = rest.strip_prefix("ch:") {
            crate::names::parse_key(channel).ok().map(Topic::Channel)
        } else if let Some(user) = rest.strip_prefix("user:") {
            crate::auth::check_user_id(user).ok().map(|_| Topic::User(user.into()))
        } else if let Some(scoped) = rest.strip_prefix("tuser:") {
            let (tenant, user) = scoped.split_once('/')?;
            check_tenant(tenant).ok()?;
            crate::auth::check_user_id(user).ok()?;
            Some(Topic::TenantUser { tenant: tenant.into(), user: user.into() })
        } else if rest == "broadcast" {
            Some(Topic::Broadcast(None))
        } else if let Some(tenant) = rest.strip_prefix("broadcast:") {
            check_tenant(tenant).ok().map(|_| Topic::Broadcast(Some(tenant.into())))
        } else if let Some(addressed) = rest.strip_prefix("conn:") {
            let (node, rest) = addressed.split_once(':')?;
            crate::names::check_node_id(node).ok()?;
            let (number, tenant) = match rest.split_once('/') {
                Some((number, tenant)) => (number, Some(tenant)),
                None => (rest, None),
            };
            let conn = crate::names::parse_conn_number(number)?;
            if let Some(tenant) = tenant {
                check_tenant(tenant).ok()?;
            }
            Some(Topic::Connection { node: node.into(), conn, tenant: tenant.map(Into::into) })
        } else {
            None
        }
    }
}

/// The bus's state as health checks and metrics see it, shared with the
/// HTTP handlers.
#[derive(Debug, Default)]
pub struct BusStatus {
    up: AtomicBool,
    /// Events put in the outbox for Redis.
    pub queued: AtomicU64,
    /// Events written to Redis.
    pub published: AtomicU64,
    /// Events from Redis delivered here: other nodes' and external
    /// publishers', and this node's own events of channels with history,
    /// which its subscribers get only back from Redis, numbered.
    pub received: AtomicU64,
    /// Plain events (not of channels with history) not written to Redis:
    /// Redis down, the outbox full, or the write failed. Local subscribers
    /// got them all the same.
    pub dropped: AtomicU64,
    /// Payloads on our Redis channels that were not valid events.
    pub malformed: AtomicU64,
    /// Payloads in the nodes' format without a valid seal: forged, or
    /// from a node with another cluster secret.
    pub unsealed: AtomicU64,
    /// Connections made to Redis (the first and every reconnect).
    pub connects: AtomicU64,
    /// Events of channels with history that never got an offset (the
    /// outbox full) or may not have (a write failed or went unanswered).
    /// Unlike [`BusStatus::dropped`] these reach no subscriber, not even
    /// local ones, whose copy is Redis's echo.
    pub history_lost: AtomicU64,
    /// Epochs started because events of their channel were lost: each
    /// tells the channel's clients that its history has a hole.
    pub epochs_bumped: AtomicU64,
    changed: Mutex<Option<(SystemTime, Option<String>)>>,
}

impl BusStatus {
    /// Whether the node is connected to Redis now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records a connection or a loss; returns whether it was a change.
    pub fn set(&self, up: bool, error: Option<String>) -> bool {
        let changed = self.up.swap(up, Ordering::AcqRel) != up;
        if let Ok(mut last) = self.changed.lock() {
            if changed || last.is_none() {
                *last = Some((SystemTime::now(), error));
            }
        }
        changed
    }

    /// When the state last changed, and the error that took it down.
    pub fn last_change(&self) -> Option<(SystemTime, Option<String>)> {
        self.changed.lock().ok().and_then(|l| l.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_their_keys() {
        let keys = Keys::new("nova:");
        for topic in [
            Topic::Channel("team:t1".into()),
            Topic::Channel("acme/team:t1".into()),
            Topic::User("alice@example".into()),
            Topic::user(Some("acme"), "al/ice"),
            Topic::Broadcast(None),
            Topic::Broadcast(Some("acme".into())),
            Topic::Connection { node: "node-a".into(), conn: 7, tenant: None },
            Topic::Connection { node: "a-b-".into(), conn: u64::MAX, tenant: Some("acme".into()) },
        ] {
            assert_eq!(Topic::parse(&keys, &topic.key(&keys)), Some(topic));
        }
    }

    #[test]
    fn names_outside_the_prefix_or_grammar_are_not_topics() {
        let keys = Keys::new("nova:");
        assert_eq!(Topic::parse(&keys, "other:ch:team:t1"), None);
        assert_eq!(Topic::parse(&keys, "nova:ch:nope:t1"), None);
        assert_eq!(Topic::parse(&keys, "nova:ch:team:../x"), None);
        assert_eq!(Topic::parse(&keys, "nova:nodes"), None);
        for bad in ["conn:node-a:0", "conn:node-a:07", "conn:node-a:x", "conn:node-a", "conn:no*de:1", "conn:n:1/a b"] {
            assert_eq!(Topic::parse(&keys, &format!("nova:{bad}")), None, "{bad}");
        }
    }

    #[test]
    fn a_channels_history_and_meta_share_its_hash_tag() {
        let keys = Keys::new("nova:");
        assert_eq!(keys.history("conversation:c1"), "nova:history:{conversation:c1}");
        assert_eq!(keys.meta("conversation:c1"), "nova:meta:{conversation:c1}");
        assert_eq!(keys.history("acme/team:t1"), "nova:history:{acme/team:t1}");
        assert_eq!(keys.meta("acme/team:t1"), "nova:meta:{acme/team:t1}");
        assert_eq!(Keys::new("").meta("team:t1"), "meta:{team:t1}");
    }

    #[test]
    fn the_connections_pattern_escapes_the_prefix() {
        assert_eq!(Keys::new("nova:").connections("node-a"), "nova:conn:node-a:*");
        assert_eq!(Keys::new("a*b?[c]\\:").connections("n"), "a\\*b\\?\\[c\\]\\\\:conn:n:*");
    }
}
