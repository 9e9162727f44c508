//! A map whose entries expire a fixed time after they were put in, bounded
//! in size: the memory half of the gateway's idempotency (request → the id
//! its receipt gave) and of the tool calls it routes responses for
//! (call → agent). Redis holds the same with a TTL when there is one.
//!
//! Every entry lives equally long, so the oldest expires first and a queue
//! in insertion order finds the expired ones without a scan: pruning costs
//! what it removes. Past the bound the oldest entry goes early; the bound
//! is far above what the rate limits let users send in a window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Entries expiring `ttl` after insertion, at most `max` of them.
pub struct Window<V> {
    /// Value, when it was put in, and its number in `order`.
    entries: HashMap<String, (V, Instant, u64)>,
    order: VecDeque<(Instant, u64, String)>,
    next: u64,
    ttl: Duration,
    max: usize,
}

impl<V> Window<V> {
    /// An empty window.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Window { entries: HashMap::new(), order: VecDeque::new(), next: 0, ttl, max: max.max(1) }
    }

    /// The value under `key`, unless it expired.
    pub fn get(&self, key: &str) -> Option<&V> {
        let now = Instant::now();
        self.entries.get(key).filter(|(_, at, _)| now.duration_since(*at) < self.ttl).map(|(v, _, _)| v)
    }

    /// Puts `value` under `key` (replacing what was there) and prunes.
    pub fn insert(&mut self, key: String, value: V) {
        let now = Instant::now();
        self.prune(now);
        while self.entries.len() >= self.max {
            match self.order.pop_front() {
                Some((_, n, old)) => self.remove_if(&old, n),
                None => break,
            }
        }
        self.next += 1;
        self.order.push_back((now, self.next, key.clone()));
        self.entries.insert(key, (value, now, self.next));
    }

    /// Removes and returns the value under `key`, unless it expired.
    pub fn take(&mut self, key: &str) -> Option<V> {
        let now = Instant::now();
        let (value, at, _) = self.entries.remove(key)?;
        (now.duration_since(at) < self.ttl).then_some(value)
    }

    /// Drops what has expired.
    pub fn prune(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            if let Some((_, n, key)) = self.order.pop_front() {
                self.remove_if(&key, n);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes `key` if it is still the entry numbered `n` (a key put in
    /// again later has a newer queue entry of its own).
    fn remove_if(&mut self, key: &str, n: u64) {
        if self.entries.get(key).is_some_and(|(_, _, put)| *put == n) {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut w = Window::new(Duration::from_millis(30), 10);
        w.insert("a".into(), 1);
        assert_eq!(w.get("a"), Some(&1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(w.get("a"), None, "expired, even before a prune");
        w.insert("b".into(), 2);
        assert_eq!(w.len(), 1, "the insert pruned 'a'");
    }

    #[test]
    fn the_oldest_goes_past_the_bound() {
        let mut w = Window::new(Duration::from_secs(60), 2);
        w.insert("a".into(), 1);
        w.insert("b".into(), 2);
        w.insert("c".into(), 3);
        assert_eq!((w.get("a"), w.get("b"), w.get("c")), (None, Some(&2), Some(&3)));
        assert_eq!(w.take("b"), Some(3 - 1));
        assert_eq!(w.take("b"), None);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_key_put_in_again_outlives_its_first_queue_entry() {
        let mut w = Window::new(Duration::from_millis(60), 10);
        w.insert("a".into(), 1);
        std::thread::sleep(Duration::from_millis(40));
        w.insert("a".into(), 2);
        std::thread::sleep(Duration::from_millis(40));
        w.insert("b".into(), 3);
        assert_eq!(w.get("a"), Some(&2), "the first queue entry expired, the second has not");
        let mut w = Window::new(Duration::from_secs(60), 2);
        for (k, v) in [("a", 1), ("a", 2), ("b", 3), ("c", 4)] {
            w.insert(k.into(), v);
        }
        assert_eq!((w.get("a"), w.get("b"), w.get("c")), (None, Some(&3), Some(&4)));
    }
}
