//! The roles across nodes, through Redis and the bus actor.
//!
//! Events go to the other nodes through the outbox. An event of a channel
//! with history is numbered in Redis (`cluster/history.rs`: one script
//! appends it, gives it its offset and publishes it), and reaches this
//! node's subscribers too only as Redis hands it back, so every node
//! delivers the same offsets in the same order. Interest and presence go to
//! the bus, which owns the Redis connections (`cluster/bus.rs`); history is
//! read on the bus's connection.
//!
//! The same script keeps the channel's streaming answers beside its
//! events, so a channel that starts on any node (its first local
//! subscriber) loads its position and its answers as of that position
//! together, and snapshots them as the memory broker's channels do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::watch;

use crate::broker::answers::{Answers, Assembly};
use crate::broker::{
    not_kept, Answer, Broker, ChannelState, Counted, HistoryConfig, HistoryError, LiveNode, Page, Position,
    PresenceStore, Retention,
};
use crate::cluster::bus::{
    Bus, Claim, Interest, LoadPresence, LoadStatuses, PresenceChange, Retire, StoreStatus, Subscribed, REDIS_TIMEOUT,
};
use crate::cluster::history::{self, StoredAnswer};
use crate::cluster::outbox::{Conn, Outbox};
use crate::cluster::wire::Wire;
use crate::cluster::{Keys, Topic};
use crate::protocol::Frame;

/// The broker of a node that is one of several.
pub struct RedisBroker {
    bus: Addr<Bus>,
    outbox: Outbox,
    config: HistoryConfig,
    conn: watch::Receiver<Conn>,
    keys: Arc<Keys>,
    wire: Arc<Wire>,
}

impl RedisBroker {
    /// The broker on `bus` (not started yet: its connection, names and
    /// format are taken from it) and its `outbox`.
    pub fn new(bus: &Bus, addr: Addr<Bus>, outbox: Outbox, config: HistoryConfig) -> RedisBroker {
        RedisBroker { conn: bus.connection(), keys: bus.keys(), wire: bus.wire(), bus: addr, outbox, config }
    }

    fn unavailable(e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Unavailable(e.to_string())
    }
}

impl Broker for RedisBroker {
    fn publish(&self, channel: &Arc<str>, frame: Frame) -> Option<(Frame, Option<Position>)> {
        match self.config.retention(channel) {
            Some(retention) => {
                // Lost when the outbox is full: the channel's next event
                // starts a new epoch (outbox.rs), so clients learn of it.
                self.outbox.history_event(channel, &frame, retention);
                None
            }
            None => {
                self.outbox.event(&Topic::Channel(Arc::clone(channel)), &frame);
                Some((frame, None))
            }
        }
    }

    fn forward(&self, topic: &Topic, frame: &Frame) -> bool {
        self.outbox.event(topic, frame);
        true
    }

    fn interest(&self, topic: Topic, on: bool) {
        self.bus.do_send(Interest { topic, on });
    }

    fn retention(&self, key: &str) -> Option<Retention> {
        self.config.retention(key)
    }

    fn state_now(&self, _: &Arc<str>) -> Option<ChannelState> {
        None
    }

    fn load_state(&self, channel: &Arc<str>) -> Answer<Result<ChannelState, HistoryError>> {
        let Some(retention) = self.config.retention(channel) else { return not_kept(channel) };
        let (bus, mut conn, keys, channel) =
            (self.bus.clone(), self.conn.clone(), Arc::clone(&self.keys), Arc::clone(channel));
        Box::pin(async move {
            // A node that has just started may not be connected yet: worth
            // a short wait, or its first subscribers get no position.
            let _ = tokio::time::timeout(REDIS_TIMEOUT, conn.wait_for(Option::is_some)).await;
            // The node's subscription first: every event after the position
            // read then reaches it.
            bus.send(Subscribed).await.map_err(RedisBroker::unavailable)?;
            let Some((_, mut conn)) = conn.borrow().clone() else {
                return Err(RedisBroker::unavailable(history::HistoryError::Down));
            };
            // The position and the answers as of it, read in one step.
            let opened =
                history::open(&mut conn, &keys, &channel, retention).await.map_err(RedisBroker::unavailable)?;
            let position = Position { offset: opened.top, epoch: Arc::from(opened.epoch) };
            Ok(ChannelState { position, answers: answers_of(opened.answers, Instant::now()) })
        })
    }

    fn history(
        &self,
        channel: &Arc<str>,
        since: u64,
        until: Option<u64>,
        limit: usize,
    ) -> Answer<Result<Page, HistoryError>> {
        let Some(retention) = self.config.retention(channel) else { return not_kept(channel) };
        let (conn, keys, wire, channel) =
            (self.conn.clone(), Arc::clone(&self.keys), Arc::clone(&self.wire), Arc::clone(channel));
        Box::pin(async move {
            let Some((_, mut conn)) = conn.borrow().clone() else {
                return Err(RedisBroker::unavailable(history::HistoryError::Down));
            };
            let range = history::range(&mut conn, &keys, &wire, &channel, since, until, limit)
                .await
                .map_err(RedisBroker::unavailable)?;
            let complete = range.complete_after(since);
            let epoch = match range.epoch {
                Some(epoch) => epoch,
                // Never published (or its meta expired): give it its epoch.
                None => {
                    history::open(&mut conn, &keys, &channel, retention).await.map_err(RedisBroker::unavailable)?.epoch
                }
            };
            let position = Position { offset: range.top, epoch: Arc::from(epoch) };
            Ok(Page { position, events: range.events, complete })
        })
    }

    fn claim(&self, key: String, ttl: Duration) -> Answer<bool> {
        let claim = self.bus.send(Claim { key, ttl });
        Box::pin(async move { claim.await.unwrap_or(true) })
    }

    fn nodes(&self) -> Answer<Option<Vec<LiveNode>>> {
        let (conn, key) = (self.conn.clone(), self.keys.nodes());
        Box::pin(async move {
            let (_, mut conn) = conn.borrow().clone()?;
            // Scores are expiry times on Redis's clock, so it is read
            // from Redis too, in the same round trip.
            let mut read = redis::pipe();
            read.cmd("TIME").cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES");
            let answer = tokio::time::timeout(REDIS_TIMEOUT, read.query_async(&mut conn)).await;
            let ((secs, micros), nodes): ((u64, u64), Vec<(String, f64)>) = match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    log::warn!("redis: reading the nodes failed: {e}");
                    return None;
                }
                Err(_) => return None,
            };
            let now_ms = (secs * 1000 + micros / 1000) as f64;
            let live = nodes
                .into_iter()
                .filter(|(_, expires)| *expires >= now_ms)
                .map(|(id, expires)| LiveNode { id, expires_in: Duration::from_millis((expires - now_ms) as u64) })
                .collect();
            Some(live)
        })
    }
}

/// A channel's answers as Redis keeps them (`cluster/history.rs`), as the
/// channel actor keeps them: an answer's end, measured on Redis's clock,
/// becomes an instant on this node's, so it is forgotten `KEEP_ENDED`
/// after the end wherever it is read.
fn answers_of(stored: Vec<StoredAnswer>, now: Instant) -> Answers {
    let assemblies = stored.into_iter().map(|a| {
        // An end too far back for this node's clock: as if now, kept a
        // little longer rather than lost.
        let ended = a.ended_ago.map(|ago| now.checked_sub(ago).unwrap_or(now));
        let assembly = Assembly::stored(a.text, a.first, a.last, a.is_final, ended, a.too_long);
        (Arc::from(a.stream_id), assembly)
    });
    Answers::from_assemblies(assemblies)
}

/// Presence counted in Redis across nodes (`cluster/presence.rs`).
pub struct RedisPresence {
    bus: Addr<Bus>,
}

impl RedisPresence {
    /// Presence kept by `bus`.
    pub fn new(bus: Addr<Bus>) -> RedisPresence {
        RedisPresence { bus }
    }
}

impl PresenceStore for RedisPresence {
    fn change(&self, channel: &Arc<str>, user: &Arc<str>, joined: bool) -> Counted {
        self.bus.do_send(PresenceChange { channel: Arc::clone(channel), user: Arc::clone(user), joined });
        Counted::Later
    }

    fn load(&self, channel: &Arc<str>) -> Answer<Option<Vec<String>>> {
        let load = self.bus.send(LoadPresence { channel: Arc::clone(channel) });
        Box::pin(async move { load.await.ok().flatten() })
    }

    fn store_status(&self, channel: &Arc<str>, user: &Arc<str>, json: String) {
        self.bus.do_send(StoreStatus { channel: Arc::clone(channel), user: Arc::clone(user), json });
    }

    fn load_statuses(&self, channel: &Arc<str>) -> Answer<Option<Vec<(String, String)>>> {
        let load = self.bus.send(LoadStatuses { channel: Arc::clone(channel) });
        Box::pin(async move { load.await.ok().flatten() })
    }

    fn retire(&self) -> Answer<()> {
        let retire = self.bus.send(Retire);
        Box::pin(async move {
            let _ = retire.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::answers::Piece;
    use crate::broker::answers::KEEP_ENDED;

    fn stored(
        id: &str,
        text: &str,
        (first, last): (u64, u64),
        ended_ago: Option<Duration>,
        too_long: bool,
    ) -> StoredAnswer {
        StoredAnswer {
            stream_id: id.to_owned(),
            text: text.to_owned(),
            first,
            last,
            is_final: ended_ago.is_some(),
            ended_ago,
            too_long,
        }
    }

    #[test]
    fn answers_from_redis_continue_as_the_channels_own() {
        let now = Instant::now();
        let answers = answers_of(
            vec![
                stored("a", "Hi", (2, 5), None, false),
                stored("b", "", (3, 4), Some(Duration::from_secs(10)), true),
                stored("c", "done", (4, 6), Some(KEEP_ENDED - Duration::from_secs(1)), false),
            ],
            now,
        );
        let list = answers.snapshottable();
        let got: Vec<_> =
            list.iter().map(|(id, a)| (id.as_ref(), a.text.as_str(), a.first, a.last, a.is_final)).collect();
        assert_eq!(got, [("a", "Hi", 2, 5, false), ("c", "done", 4, 6, true)], "b is too long to snapshot");
        // Their ends are instants here: c's comes a second later.
        let mut later = answers.clone();
        later.expire(now + Duration::from_secs(1));
        assert_eq!(later.iter().count(), 2);
        assert!(later.snapshottable().iter().all(|(id, _)| id.as_ref() == "a"));
        // Later tokens go on from where Redis was.
        let mut next = answers;
        let token = |id: &str, chunk: &str| Piece::Token { stream_id: id.into(), chunk: chunk.into(), is_final: false };
        next.apply(&token("a", "!"), 7, now);
        next.apply(&token("b", "x"), 8, now);
        next.apply(&token("c", "late"), 9, now);
        let got: Vec<_> = next.snapshottable().iter().map(|(id, a)| (id.to_string(), a.text.clone(), a.last)).collect();
        assert_eq!(got, [("a".to_owned(), "Hi!".to_owned(), 7), ("c".to_owned(), "done".to_owned(), 6)]);
    }
}
