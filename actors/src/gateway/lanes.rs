//! A webhook agent's queue: one lane per channel, so records of a channel
//! are delivered in order while a failing record holds back only the later
//! records of its own channel.
//!
//! Each lane has at most one record in flight: its oldest. The queue is
//! bounded over all lanes; [`Lanes::push`] refuses past the bound, which the
//! gateway answers with 4007 instead of a receipt. This file holds the state
//! only; the gateway does the HTTP and the timers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

/// One record waiting for its agent.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The record's id (`X-Nova-Event-Id`).
    pub id: Arc<str>,
    /// The record's JSON, shared by every attempt.
    pub body: Bytes,
    /// Failed attempts so far.
    pub failures: u32,
}

#[derive(Default)]
struct Lane {
    items: VecDeque<Queued>,
    /// Its oldest record is being posted or waits for its retry.
    busy: bool,
}

/// The lanes of one agent.
pub struct Lanes {
    lanes: HashMap<Arc<str>, Lane>,
    queued: usize,
    capacity: usize,
}

impl Lanes {
    /// Empty, holding at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Lanes { lanes: HashMap::new(), queued: 0, capacity: capacity.max(1) }
    }

    /// Records queued (in flight included).
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether one more record fits.
    pub fn has_room(&self) -> bool {
        self.queued < self.capacity
    }

    /// A new bound; records already queued stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Queues a record at the end of its channel's lane; `false` (and
    /// nothing queued) when the queue is full.
    pub fn push(&mut self, channel: Arc<str>, item: Queued) -> bool {
        if !self.has_room() {
            return false;
        }
        self.lanes.entry(channel).or_default().items.push_back(item);
        self.queued += 1;
        true
    }

    /// Queues a record whatever the bound: for one accepted while there
    /// was room, whose write elsewhere (a stream) finished after the queue
    /// filled.
    pub fn force_push(&mut self, channel: Arc<str>, item: Queued) {
        self.lanes.entry(channel).or_default().items.push_back(item);
        self.queued += 1;
    }

    /// The oldest record of every lane that has none in flight, marked in
    /// flight.
    pub fn take_ready(&mut self) -> Vec<(Arc<str>, Queued)> {
        let mut ready = Vec::new();
        for (channel, lane) in &mut self.lanes {
            if lane.busy {
                continue;
            }
            if let Some(front) = lane.items.front() {
                lane.busy = true;
                ready.push((Arc::clone(channel), front.clone()));
            }
        }
        ready
    }

    /// The lane's record in flight was delivered: the next one may go.
    pub fn delivered(&mut self, channel: &str) {
        if let Some(lane) = self.lanes.get_mut(channel) {
            if lane.items.pop_front().is_some() {
                self.queued -= 1;
            }
            lane.busy = false;
            if lane.items.is_empty() {
                self.lanes.remove(channel);
            }
        }
    }

    /// The lane's record in flight failed; returns its failures so far. It
    /// stays in flight (holding the lane) until [`Lanes::retry`].
    pub fn failed(&mut self, channel: &str) -> u32 {
        match self.lanes.get_mut(channel).and_then(|lane| lane.items.front_mut()) {
            Some(front) => {
                front.failures += 1;
                front.failures
            }
            None => 0,
        }
    }

    /// The lane's retry is due: its oldest record may go again.
    pub fn retry(&mut self, channel: &str) {
        if let Some(lane) = self.lanes.get_mut(channel) {
            lane.busy = false;
        }
    }

    /// Empties the queue (the agent was removed); returns how many records
    /// were dropped.
    pub fn clear(&mut self) -> usize {
        self.lanes.clear();
        std::mem::take(&mut self.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Queued {
        Queued { id: Arc::from(id), body: Bytes::from(id.to_owned()), failures: 0 }
    }

    fn ids(ready: &[(Arc<str>, Queued)]) -> Vec<String> {
        let mut ids: Vec<String> = ready.iter().map(|(_, q)| q.id.to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_lane_sends_one_record_at_a_time_in_order() {
        let mut lanes = Lanes::new(10);
        for id in ["a1", "a2", "a3"] {
            assert!(lanes.push(Arc::from("a"), item(id)));
        }
        assert_eq!(ids(&lanes.take_ready()), ["a1"]);
        assert!(lanes.take_ready().is_empty(), "a1 is in flight");
        lanes.delivered("a");
        assert_eq!(ids(&lanes.take_ready()), ["a2"]);
        lanes.delivered("a");
        assert_eq!(ids(&lanes.take_ready()), ["a3"]);
        lanes.delivered("a");
        assert!(lanes.is_empty());
    }

    #[test]
    fn a_failing_record_holds_back_its_own_channel_only() {
        let mut lanes = Lanes::new(10);
        lanes.push(Arc::from("a"), item("a1"));
        lanes.push(Arc::from("a"), item("a2"));
        lanes.push(Arc::from("b"), item("b1"));
        assert_eq!(ids(&lanes.take_ready()), ["a1", "b1"]);
        assert_eq!(lanes.failed("a"), 1);
        lanes.delivered("b");
        lanes.push(Arc::from("b"), item("b2"));
        assert_eq!(ids(&lanes.take_ready()), ["b2"], "a waits for its retry");
        lanes.retry("a");
        assert_eq!(ids(&lanes.take_ready()), ["a1"], "the same record again");
        assert_eq!(lanes.failed("a"), 2);
        lanes.retry("a");
        let again = lanes.take_ready();
        assert_eq!(again[0].1.failures, 2);
        lanes.delivered("a");
        assert_eq!(ids(&lanes.take_ready()), ["a2"]);
    }

    #[test]
    fn the_queue_is_bounded_over_all_lanes() {
        let mut lanes = Lanes::new(2);
        assert!(lanes.push(Arc::from("a"), item("a1")));
        assert!(lanes.push(Arc::from("b"), item("b1")));
        assert!(!lanes.push(Arc::from("c"), item("c1")));
        assert_eq!(lanes.len(), 2);
        lanes.take_ready();
        lanes.delivered("a");
        assert!(lanes.push(Arc::from("c"), item("c1")));
        assert_eq!(lanes.clear(), 2);
        assert!(lanes.is_empty());
    }
}
