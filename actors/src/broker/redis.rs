//! The roles across nodes, through Redis and the bus actor.
//!
//! Events go to the other nodes through the outbox; interest and presence
//! go to the bus, which owns the Redis connections (`cluster/bus.rs`).

use std::sync::Arc;

use actix::Addr;

use crate::broker::{
    Answer, Broker, ChannelState, Counted, HistoryConfig, HistoryError, Page, Position, PresenceStore, Retention,
};
use crate::cluster::bus::{Bus, Claim, Interest, LoadPresence, LoadStatuses, PresenceChange, Retire, StoreStatus};
use crate::cluster::outbox::Outbox;
use crate::cluster::Topic;
use crate::protocol::Frame;

/// The broker of a node that is one of several.
pub struct RedisBroker {
    bus: Addr<Bus>,
    outbox: Outbox,
    config: HistoryConfig,
}

impl RedisBroker {
    /// The broker on `bus` and its `outbox`.
    pub fn new(bus: Addr<Bus>, outbox: Outbox, config: HistoryConfig) -> RedisBroker {
        RedisBroker { bus, outbox, config }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, channel: &Arc<str>, frame: Frame) -> Option<(Frame, Option<Position>)> {
        self.outbox.event(&Topic::Channel(Arc::clone(channel)), &frame);
        Some((frame, None))
    }

    fn forward(&self, topic: &Topic, frame: &Frame) -> bool {
        self.outbox.event(topic, frame);
        true
    }

    fn interest(&self, topic: Topic, on: bool) {
        self.bus.do_send(Interest { topic, on });
    }

    fn retention(&self, _key: &str) -> Option<Retention> {
        None
    }

    fn state_now(&self, _: &Arc<str>) -> Option<ChannelState> {
        None
    }

    fn load_state(&self, channel: &Arc<str>) -> Answer<Result<ChannelState, HistoryError>> {
        let channel = channel.to_string();
        Box::pin(async move { Err(HistoryError::NotKept(channel)) })
    }

    fn history(&self, channel: &Arc<str>, _: u64, _: Option<u64>, _: usize) -> Answer<Result<Page, HistoryError>> {
        let _ = &self.config;
        let channel = channel.to_string();
        Box::pin(async move { Err(HistoryError::NotKept(channel)) })
    }

    fn claim(&self, key: String, ttl: std::time::Duration) -> Answer<bool> {
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
