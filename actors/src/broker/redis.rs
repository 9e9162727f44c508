//! The roles across nodes, through Redis and the bus actor.
//!
//! Events go to the other nodes through the outbox. An event of a channel
//! with history is numbered in Redis (`cluster/history.rs`: one script
//! appends it, gives it its offset and publishes it), and reaches this
//! node's subscribers too only as Redis hands it back, so every node
//! delivers the same offsets in the same order. Interest and presence go to
//! the bus, which owns the Redis connections (`cluster/bus.rs`); history is
//! read on the bus's connection.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::watch;

use crate::broker::{
    Answer, Broker, ChannelState, Counted, HistoryConfig, HistoryError, Page, Position, PresenceStore, Retention,
};
use crate::cluster::bus::{
    Bus, Claim, Interest, LoadPresence, LoadStatuses, PresenceChange, Retire, StoreStatus, Subscribed,
};
use crate::cluster::history;
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
        let Some(retention) = self.config.retention(channel) else {
            let channel = channel.to_string();
            return Box::pin(async move { Err(HistoryError::NotKept(channel)) });
        };
        let subscribed = self.bus.send(Subscribed);
        let (conn, keys, channel) = (self.conn.clone(), Arc::clone(&self.keys), Arc::clone(channel));
        Box::pin(async move {
            // The node's subscription first: every event after the position
            // read then reaches it.
            subscribed.await.map_err(RedisBroker::unavailable)?;
            let Some((_, mut conn)) = conn.borrow().clone() else {
                return Err(RedisBroker::unavailable(history::HistoryError::Down));
            };
            let (offset, epoch) =
                history::open(&mut conn, &keys, &channel, retention).await.map_err(RedisBroker::unavailable)?;
            let position = Position { offset, epoch: Arc::from(epoch) };
            Ok(ChannelState { position, answers: Default::default() })
        })
    }

    fn history(
        &self,
        channel: &Arc<str>,
        since: u64,
        until: Option<u64>,
        limit: usize,
    ) -> Answer<Result<Page, HistoryError>> {
        let Some(retention) = self.config.retention(channel) else {
            let channel = channel.to_string();
            return Box::pin(async move { Err(HistoryError::NotKept(channel)) });
        };
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
                None => history::open(&mut conn, &keys, &channel, retention).await.map_err(RedisBroker::unavailable)?.1,
            };
            let position = Position { offset: range.top, epoch: Arc::from(epoch) };
            Ok(Page { position, events: range.events, complete })
        })
    }

    fn claim(&self, key: String, ttl: Duration) -> Answer<bool> {
        let claim = self.bus.send(Claim { key, ttl });
        Box::pin(async move { claim.await.unwrap_or(true) })
    }
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
