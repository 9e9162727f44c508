//! The actors of nova-realtime and the wire protocol they speak.
//!
//! # Layout
//!
//! - [`session`]: the session actor, one per WebSocket. Parses, validates and
//!   authenticates client frames, heartbeats, limits, and writes what it is
//!   pushed.
//! - [`channel`]: the channel actor, one per channel with subscribers.
//!   Members, presence, fan-out.
//! - [`registry`]: the registry actor, one per node. Channel name → channel
//!   actor, connections by id and by user; routes published events.
//! - [`broker`]: the seam between one node and many: the broker (where
//!   events go beyond this node, offsets, history) and the presence store,
//!   each in memory and in Redis.
//! - [`cluster`]: several nodes as one through Redis: the bus actor (the
//!   Redis subscriber), the outbox, the payload format, cross-node presence.
//! - [`settings`]: live settings: the config watcher and health monitor
//!   actors, the MCP server list, the system prompt, safe writes and backups.
//! - [`link`]: what channels and the registry hold for a session: its mailbox
//!   and its outbound budget.
//! - [`protocol`]: the wire envelope, request validation and the one encoder.
//! - [`codes`]: the table of error and close codes.
//! - [`names`]: channel names and access patterns.
//! - [`auth`]: JWT and API-key authentication.
//! - [`throttle`]: failed authentications per source address.
//! - [`quota`]: rate limits per user and per request type, over all of a
//!   user's connections on the node.
//! - [`node`]: what every session shares: limits, authenticator, registry.
//! - [`metrics`]: counters and the latency histogram.
//!
//! An event is encoded once into a [`protocol::Frame`] by whoever publishes
//! it; the registry routes it to its channel actor, which hands the same
//! bytes to every member's session. Nothing here knows about HTTP routes: the
//! server crate upgrades a request and starts a [`session::Session`].

#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod catalog;
pub mod channel;
pub mod cluster;
pub mod codes;
pub mod gateway;
pub mod link;
pub mod metrics;
pub mod names;
pub mod node;
pub mod protocol;
pub mod quota;
pub mod registry;
pub mod session;
pub mod settings;
pub mod throttle;

/// Keeps the `k` smallest of `items` by `key`, sorted: O(n + k log k), so
/// an operator's listing of a node with many channels, connections or
/// present users does not sort them all on the actor that owns them.
pub fn keep_smallest<T, K: Ord>(items: &mut Vec<T>, k: usize, mut key: impl FnMut(&T) -> K) {
    if k == 0 {
        items.clear();
        return;
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, |a, b| key(a).cmp(&key(b)));
        items.truncate(k);
    }
    items.sort_unstable_by_key(key);
}

#[cfg(test)]
mod keep_smallest_tests {
    #[test]
    fn keeps_the_k_smallest_in_order() {
        let mut v: Vec<u32> = (0..100).rev().collect();
        super::keep_smallest(&mut v, 5, |x| *x);
        assert_eq!(v, [0, 1, 2, 3, 4]);
        let mut v = vec![3, 1, 2];
        super::keep_smallest(&mut v, 10, |x| *x);
        assert_eq!(v, [1, 2, 3]);
        super::keep_smallest(&mut v, 0, |x| *x);
        assert!(v.is_empty());
    }
}
