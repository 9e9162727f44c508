//! A webhook agent's queue: one lane per channel, so records of a channel
//! are delivered in order while a failing record holds back only the later
//! records of its own channel.
//!
//! Each lane has at most one record out: its oldest, in flight or waiting
//! for its retry. Every record has a number, and the outcome of an attempt
//! or a retry timer names the record it is about: one that no longer
//! matches the lane (the agent was removed and added again, the queue
//! cleared) changes nothing, so a stale answer can never pop or resend
//! another record.
//!
//! The queue is bounded over all lanes, in records and in bytes;
//! [`Lanes::has_room`] says whether one more fits, which the gateway checks
//! before it accepts a request (answering 4007 otherwise). This file holds
//! the state only; the gateway does the HTTP and the timers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

/// Bytes of records one webhook agent's queue holds at most, whatever its
/// record bound: a queue of a thousand megabyte records is a gigabyte.
pub const MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// One record waiting for its agent.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The gateway's number for it, unique on the node.
    pub seq: u64,
    /// The record's id (`X-Nova-Event-Id`).
    pub id: Arc<str>,
    /// The record's JSON, shared by every attempt.
    pub body: Bytes,
    /// Failed attempts so far.
    pub failures: u32,
}

/// What a lane's oldest record is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// Nothing: the oldest record may go.
    Idle,
    /// Record `seq` is being posted.
    InFlight(u64),
    /// Record `seq` failed and waits for its retry.
    Waiting(u64),
}

struct Lane {
    items: VecDeque<Queued>,
    out: Out,
}

/// The lanes of one agent.
pub struct Lanes {
    lanes: HashMap<Arc<str>, Lane>,
    queued: usize,
    bytes: usize,
    capacity: usize,
}

impl Lanes {
    /// Empty, holding at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Lanes { lanes: HashMap::new(), queued: 0, bytes: 0, capacity: capacity.max(1) }
    }

    /// Records queued (the ones out included).
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether a record of `bytes` fits beside `reserved` records (of
    /// `reserved_bytes`) accepted but not queued yet.
    pub fn has_room(&self, reserved: usize, reserved_bytes: usize, bytes: usize) -> bool {
        self.queued + reserved < self.capacity && self.bytes + reserved_bytes + bytes <= MAX_QUEUE_BYTES
    }

    /// A new bound; records already queued stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Queues a record at the end of its channel's lane. The caller checked
    /// [`Lanes::has_room`] when it accepted the record.
    pub fn push(&mut self, lane: Arc<str>, item: Queued) {
        self.bytes += item.body.len();
        self.queued += 1;
        self.lanes.entry(lane).or_insert_with(|| Lane { items: VecDeque::new(), out: Out::Idle }).items.push_back(item);
    }

    /// The oldest record of every lane that has none out, now in flight.
    pub fn take_ready(&mut self) -> Vec<(Arc<str>, Queued)> {
        let mut ready = Vec::new();
        for (name, lane) in &mut self.lanes {
            if lane.out != Out::Idle {
                continue;
            }
            if let Some(front) = lane.items.front() {
                lane.out = Out::InFlight(front.seq);
                ready.push((Arc::clone(name), front.clone()));
            }
        }
        ready
    }

    /// Record `seq` of the lane was delivered: the next one may go. Returns
    /// whether it was the lane's record in flight (a stale answer is not).
    pub fn delivered(&mut self, lane: &str, seq: u64) -> bool {
        let Some(l) = self.lanes.get_mut(lane).filter(|l| l.out == Out::InFlight(seq)) else { return false };
        if let Some(item) = l.items.pop_front() {
            self.queued -= 1;
            self.bytes -= item.body.len();
        }
        l.out = Out::Idle;
        if l.items.is_empty() {
            self.lanes.remove(lane);
        }
        true
    }

    /// Record `seq` of the lane failed; returns its failures so far (`None`
    /// for a stale answer). It stays out, holding the lane, until
    /// [`Lanes::retry`].
    pub fn failed(&mut self, lane: &str, seq: u64) -> Option<u32> {
        let l = self.lanes.get_mut(lane).filter(|l| l.out == Out::InFlight(seq))?;
        l.out = Out::Waiting(seq);
        let front = l.items.front_mut()?;
        front.failures += 1;
        Some(front.failures)
    }

    /// Record `seq`'s retry is due: it may go again. A stale timer does
    /// nothing.
    pub fn retry(&mut self, lane: &str, seq: u64) {
        if let Some(l) = self.lanes.get_mut(lane).filter(|l| l.out == Out::Waiting(seq)) {
            l.out = Out::Idle;
        }
    }

    /// Record `seq` of the lane was refused for good by its agent: it is
    /// dropped and the next one may go.
    pub fn rejected(&mut self, lane: &str, seq: u64) -> bool {
        self.delivered(lane, seq)
    }

    /// Empties the queue (the agent was removed); returns how many records
    /// were dropped.
    pub fn clear(&mut self) -> usize {
        self.lanes.clear();
        self.bytes = 0;
        std::mem::take(&mut self.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> Queued {
        Queued { seq, id: Arc::from(seq.to_string()), body: Bytes::from(vec![b'x'; 10]), failures: 0 }
    }

    fn seqs(ready: &[(Arc<str>, Queued)]) -> Vec<u64> {
        let mut seqs: Vec<u64> = ready.iter().map(|(_, q)| q.seq).collect();
        seqs.sort_unstable();
        seqs
    }

    #[test]
    fn a_lane_sends_one_record_at_a_time_in_order() {
        let mut lanes = Lanes::new(10);
        for seq in 1..=3 {
            lanes.push(Arc::from("a"), item(seq));
        }
        assert_eq!(seqs(&lanes.take_ready()), [1]);
        assert!(lanes.take_ready().is_empty(), "1 is in flight");
        assert!(lanes.delivered("a", 1));
        assert_eq!(seqs(&lanes.take_ready()), [2]);
        assert!(lanes.delivered("a", 2));
        assert_eq!(seqs(&lanes.take_ready()), [3]);
        assert!(lanes.delivered("a", 3));
        assert!(lanes.is_empty());
    }

    #[test]
    fn a_failing_record_holds_back_its_own_channel_only() {
        let mut lanes = Lanes::new(10);
        lanes.push(Arc::from("a"), item(1));
        lanes.push(Arc::from("a"), item(2));
        lanes.push(Arc::from("b"), item(3));
        assert_eq!(seqs(&lanes.take_ready()), [1, 3]);
        assert_eq!(lanes.failed("a", 1), Some(1));
        assert!(lanes.delivered("b", 3));
        lanes.push(Arc::from("b"), item(4));
        assert_eq!(seqs(&lanes.take_ready()), [4], "a waits for its retry");
        lanes.retry("a", 1);
        let again = lanes.take_ready();
        assert_eq!(seqs(&again), [1], "the same record again");
        assert_eq!(again[0].1.failures, 1);
        assert_eq!(lanes.failed("a", 1), Some(2));
        lanes.retry("a", 1);
        lanes.take_ready();
        assert!(lanes.delivered("a", 1));
        assert_eq!(seqs(&lanes.take_ready()), [2]);
    }

    #[test]
    fn stale_answers_and_timers_change_nothing() {
        let mut lanes = Lanes::new(10);
        lanes.push(Arc::from("a"), item(1));
        lanes.take_ready();
        assert_eq!(lanes.clear(), 1, "the agent was removed with 1 in flight");
        lanes.push(Arc::from("a"), item(2));
        lanes.push(Arc::from("a"), item(3));
        assert!(!lanes.delivered("a", 1), "the old answer does not pop 2");
        assert_eq!(lanes.failed("a", 1), None);
        assert_eq!(seqs(&lanes.take_ready()), [2]);
        lanes.retry("a", 1);
        assert!(lanes.take_ready().is_empty(), "a stale timer does not resend while 2 is in flight");
        assert_eq!(lanes.failed("a", 2), Some(1));
        lanes.retry("a", 9);
        assert!(lanes.take_ready().is_empty(), "nor does a timer of another record");
        assert_eq!(lanes.len(), 2);
    }

    #[test]
    fn the_queue_is_bounded_in_records_and_bytes() {
        let mut lanes = Lanes::new(2);
        assert!(lanes.has_room(0, 0, 10));
        lanes.push(Arc::from("a"), item(1));
        assert!(!lanes.has_room(1, 10, 10), "one queued and one reserved fill it");
        lanes.push(Arc::from("b"), item(2));
        assert!(!lanes.has_room(0, 0, 10));
        lanes.take_ready();
        assert!(lanes.delivered("a", 1));
        assert!(lanes.has_room(0, 0, 10));
        assert!(!lanes.has_room(0, 0, MAX_QUEUE_BYTES), "too many bytes");
        assert_eq!(lanes.clear(), 1);
        assert!(lanes.is_empty());
    }
}
