//! The seam between one node and many: the two roles the registry and the
//! channels talk to, each with a memory implementation (one node, the
//! embedded default) and a Redis one, chosen once at start.
//!
//! - [`Broker`]: where a channel's events go besides this node's
//!   subscribers, what the node listens to, and each channel's history:
//!   offsets, epochs and the events kept for recovery.
//! - [`PresenceStore`]: who is present in a channel beyond this node, and
//!   the statuses set on team channels.
//!
//! [`memory`] keeps history in this process and has no one else to tell;
//! [`redis`] assigns offsets in Redis (one script per publish, so every
//! node agrees) and hands events to the other nodes through the bus. The
//! registry and the channel actors hold an `Arc<dyn Broker>` and an
//! `Arc<dyn PresenceStore>` and never ask which one they have.

pub mod answers;
pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Topic;
use crate::names;
use crate::protocol::Frame;

/// A future a role answers with, run by whoever asked.
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A place in a channel's stream of events: the offset of the last event,
/// in the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The last event's offset; 0 before the first.
    pub offset: u64,
    /// Changes whenever the channel's history can no longer be trusted
    /// (restart, eviction, lost events), so an old offset is not mistaken
    /// for a place in the new stream.
    pub epoch: Arc<str>,
}

/// What a channel actor starts from: the channel's position and the
/// answers streaming in it, as of the same moment.
#[derive(Debug, Clone)]
pub struct ChannelState {
    /// The last event's offset and its epoch.
    pub position: Position,
    /// Answers not finished (or just finished) at that offset.
    pub answers: answers::Answers,
}

/// How much of a channel's events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events kept at most.
    pub size: usize,
    /// How long an event is kept.
    pub ttl: Duration,
}

/// History settings: what each namespace keeps, and the memory broker's
/// ceiling over all channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Per namespace (`conversation`, `agent`, …); a namespace not named
    /// keeps nothing.
    pub namespaces: BTreeMap<String, Retention>,
    /// Bytes of events the memory broker keeps over all channels; past it
    /// whole channels go, least recently published first.
    pub memory_cap: usize,
}

/// The default retention of chat channels: enough for a conversation's
/// last answers while a page reloads or a laptop wakes up.
pub const CHAT_RETENTION: Retention = Retention { size: 300, ttl: Duration::from_secs(600) };

/// The memory broker's default ceiling.
pub const DEFAULT_MEMORY_CAP: usize = 256 * 1024 * 1024;

impl Default for HistoryConfig {
    fn default() -> Self {
        let namespaces = ["conversation", "agent"].into_iter().map(|ns| (ns.to_owned(), CHAT_RETENTION)).collect();
        HistoryConfig { namespaces, memory_cap: DEFAULT_MEMORY_CAP }
    }
}

impl HistoryConfig {
    /// What channel `key` (tenant-scoped or not) keeps; `None`: no
    /// history, no offsets.
    pub fn retention(&self, key: &str) -> Option<Retention> {
        let visible = names::visible(key);
        let ns = visible.split_once(':').map_or(visible, |(ns, _)| ns);
        self.namespaces.get(ns).copied().filter(|r| r.size > 0 && !r.ttl.is_zero())
    }

    /// Parses `ns=size/ttl,…` (`conversation=300/10m,agent=300/10m`;
    /// `ns=0` or `ns=off` keeps nothing): the setting's one syntax.
    pub fn parse_namespaces(spec: &str) -> Result<BTreeMap<String, Retention>, String> {
        let mut out = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ns, value) = item.split_once('=').ok_or_else(|| format!("'{item}': expected ns=size/ttl"))?;
            if !names::NAMESPACES.contains(&ns) {
                return Err(format!("'{ns}' is not a namespace ({})", names::NAMESPACES.join(", ")));
            }
            let retention = if value == "0" || value == "off" {
                Retention { size: 0, ttl: Duration::ZERO }
            } else {
                let (size, ttl) =
                    value.split_once('/').ok_or_else(|| format!("'{item}': expected ns=size/ttl, e.g. 300/10m"))?;
                let size: usize = size.parse().map_err(|_| format!("'{item}': size must be a number"))?;
                let ttl = humantime::parse_duration(ttl).map_err(|e| format!("'{item}': ttl: {e}"))?;
                if size > MAX_HISTORY_SIZE {
                    return Err(format!("'{item}': at most {MAX_HISTORY_SIZE} events per channel"));
                }
                Retention { size, ttl }
            };
            out.insert(ns.to_owned(), retention);
        }
        Ok(out)
    }
}

/// Events a channel keeps at most, whatever the setting: a recovery reads
/// them in one go.
pub const MAX_HISTORY_SIZE: usize = 10_000;

/// Events kept after an offset, as a broker read them.
#[derive(Debug, Clone)]
pub struct Page {
    /// The channel's position now.
    pub position: Position,
    /// The events after the offset asked for, oldest first, each with its
    /// offset and its frame (the offset is in its text).
    pub events: Vec<(u64, Frame)>,
    /// Whether nothing between the offset asked for and the first event
    /// returned is missing (it was kept, or there was nothing).
    pub complete: bool,
}

impl Page {
    /// Its events, when they are exactly the `count` that came after
    /// offset `after` in `epoch`: none missing, none more, none of another
    /// numbering.
    pub fn exactly(self, after: u64, count: usize, epoch: &str) -> Option<Vec<(u64, Frame)>> {
        let whole = self.complete
            && *self.position.epoch == *epoch
            && self.events.len() == count
            && self.events.first().is_none_or(|(offset, _)| *offset == after + 1);
        whole.then_some(self.events)
    }
}

/// The answer when it is there at once (the memory roles answer so, and
/// then nothing waits), else `None`, the future left to be run.
pub fn ready_now<T>(answer: &mut Answer<T>) -> Option<T> {
    let waker = futures_util::task::noop_waker();
    match answer.as_mut().poll(&mut std::task::Context::from_waker(&waker)) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

/// Why a history read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// The channel's namespace keeps no history.
    #[error("channel '{0}' keeps no history")]
    NotKept(String),
    /// The store did not answer (Redis down or slow).
    #[error("history is unavailable: {0}")]
    Unavailable(String),
}

/// Where a channel's events go beyond this node, and its history.
pub trait Broker: Send + Sync + 'static {
    /// Takes an event of `channel` (its key). Returns what this node's
    /// subscribers get now: the frame (with its offset when the channel
    /// keeps history) and its position, or `None` when the event comes
    /// back through the bus with an offset every node agrees on.
    fn publish(&self, channel: &Arc<str>, frame: Frame) -> Option<(Frame, Option<Position>)>;

    /// Sends an event for users, one connection or everyone to the other
    /// nodes; returns whether there are any to send to.
    fn forward(&self, topic: &Topic, frame: &Frame) -> bool;

    /// The node needs `topic` now (`on`), or no longer.
    fn interest(&self, topic: Topic, on: bool);

    /// What channel `key` keeps; `None`: no history, no offsets.
    fn retention(&self, key: &str) -> Option<Retention>;

    /// The channel's state when this node decides offsets itself (so it
    /// is exact at the moment of asking); `None` when it must be loaded.
    fn state_now(&self, channel: &Arc<str>) -> Option<ChannelState>;

    /// The channel's state, loaded once the node's subscription to it is
    /// in place (so no event falls between the two).
    fn load_state(&self, channel: &Arc<str>) -> Answer<Result<ChannelState, HistoryError>>;

    /// Up to `limit` events after `since`, no later than `until`.
    fn history(
        &self,
        channel: &Arc<str>,
        since: u64,
        until: Option<u64>,
        limit: usize,
    ) -> Answer<Result<Page, HistoryError>>;

    /// Whether this node is the one to announce something every node
    /// observes (a settings file changed on a shared volume): the first to
    /// claim `key` gets `true`, the others `false` for `ttl`. On its own, or
    /// when Redis does not answer, a node announces: a duplicate is better
    /// than a lost event.
    fn claim(&self, key: String, ttl: Duration) -> Answer<bool>;

    /// The nodes whose heartbeat is alive, each with how long until it
    /// expires; `None` when there is no cluster to ask (a node on its
    /// own) or Redis does not answer.
    fn nodes(&self) -> Answer<Option<Vec<LiveNode>>> {
        Box::pin(std::future::ready(None))
    }

    /// Periodic upkeep (expiry); called about once a second.
    fn tick(&self) {}
}

/// A node of the cluster, as its heartbeat in Redis shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    /// Its id (`--node-id`).
    pub id: String,
    /// How long until its heartbeat expires (it renews it every third of
    /// the presence TTL).
    pub expires_in: Duration,
}

/// What a presence store made of a user's first local join or last leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// It is a change for everyone, decided now: announce it.
    Now,
    /// The store counts it across nodes and reports what is news later.
    Later,
}

/// Who is present in a channel beyond this node.
pub trait PresenceStore: Send + Sync + 'static {
    /// A user's first connection joined `channel` on this node, or the
    /// last left.
    fn change(&self, channel: &Arc<str>, user: &Arc<str>, joined: bool) -> Counted;

    /// Users present on other nodes too; `None` when unknown (Redis down).
    fn load(&self, channel: &Arc<str>) -> Answer<Option<Vec<String>>>;

    /// Keeps a status set on a team channel for nodes that open it later.
    fn store_status(&self, channel: &Arc<str>, user: &Arc<str>, json: String);

    /// Statuses kept for a team channel (user → `{"status","text"?}`).
    fn load_statuses(&self, channel: &Arc<str>) -> Answer<Option<Vec<(String, String)>>>;

    /// The node is stopping: its users leave every channel now, for the
    /// other nodes, rather than when its heartbeat expires.
    fn retire(&self) -> Answer<()>;
}

/// The answer of a history read or state load for a channel whose
/// namespace keeps no history.
pub fn not_kept<T: Send + 'static>(channel: &str) -> Answer<Result<T, HistoryError>> {
    Box::pin(std::future::ready(Err(HistoryError::NotKept(channel.to_owned()))))
}

/// A random epoch: 16 characters of `[0-9a-f]`, so a channel's new epoch
/// is never one a client saw before.
pub fn new_epoch() -> Arc<str> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(&id[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_parse_and_channels_find_theirs() {
        let namespaces = HistoryConfig::parse_namespaces("conversation=5/1s, agent=off,team=10/2m").unwrap();
        let config = HistoryConfig { namespaces, memory_cap: 1 };
        assert_eq!(config.retention("conversation:c1"), Some(Retention { size: 5, ttl: Duration::from_secs(1) }));
        assert_eq!(config.retention("acme/team:t1"), Some(Retention { size: 10, ttl: Duration::from_secs(120) }));
        assert_eq!(config.retention("agent:a"), None);
        assert_eq!(config.retention("system:settings"), None);
        for bad in ["nope=1/1s", "conversation", "conversation=x/1s", "conversation=1/zz", "conversation=20000/1s"] {
            assert!(HistoryConfig::parse_namespaces(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_keeps_chat_and_agents_but_not_system() {
        let config = HistoryConfig::default();
        assert_eq!(config.retention("conversation:c1"), Some(CHAT_RETENTION));
        assert_eq!(config.retention("agent:writer"), Some(CHAT_RETENTION));
        assert_eq!(config.retention("system:settings"), None);
        assert_eq!(config.retention("team:t1"), None);
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 16);
    }
}
