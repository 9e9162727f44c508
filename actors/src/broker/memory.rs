//! The roles on one node: history in this process, no one else to tell.
//!
//! Each channel with history is a [`Stream`]: its epoch, its last offset
//! and a ring of its latest events, the frames exactly as subscribers got
//! them (offset included), shared, not copied. Appending is O(1) per event,
//! whatever the number of subscribers. Streams live in shards behind short
//! locks: the registry appends, channel actors and the history API read.
//!
//! Memory is bounded twice: per channel by its [`Retention`] (events and
//! time), and over all channels by [`HistoryConfig::memory_cap`]. Past the
//! cap whole channels go, least recently published first; the next event
//! starts a new epoch there, so a client holding an old position learns it
//! cannot recover rather than getting a gap. A restart starts every channel
//! in a new epoch for the same reason.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::answers::{self, Answers};
use crate::broker::{
    new_epoch, not_kept, Answer, Broker, ChannelState, Counted, HistoryConfig, HistoryError, Page, Position,
    PresenceStore, Retention,
};
use crate::cluster::Topic;
use crate::protocol::Frame;

/// Shards of the stream map: enough that the registry appending and a few
/// recoveries reading rarely wait for each other.
const SHARDS: usize = 16;

/// What a stream costs besides its events, counted against the cap so a
/// crowd of idle channels cannot grow without bound either.
const STREAM_OVERHEAD: usize = 160;

/// What an event kept costs besides its text (its slot, the shared
/// buffer's header, the allocator's rounding), counted against the cap:
/// measured with `nova-bench history-memory`, an event of 266 bytes took
/// about 507 bytes of RSS.
const EVENT_OVERHEAD: usize = 240;

/// How long a stream with no events left (all expired) keeps its epoch
/// and offset: a client that saw its last event may still recover (nothing
/// missed) within it.
pub const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often [`Broker::tick`] sweeps every stream for expired events.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One channel's history.
#[derive(Debug)]
struct Stream {
    epoch: Arc<str>,
    top: u64,
    events: VecDeque<(u64, Frame, Instant)>,
    bytes: usize,
    touched: Instant,
    /// Answers streaming in the channel (`answers.rs`).
    answers: Answers,
}

impl Stream {
    fn new(now: Instant) -> Stream {
        Stream { epoch: new_epoch(), top: 0, events: VecDeque::new(), bytes: 0, touched: now, answers: Answers::new() }
    }

    fn position(&self) -> Position {
        Position { offset: self.top, epoch: Arc::clone(&self.epoch) }
    }

    fn state(&mut self, now: Instant) -> ChannelState {
        self.answers.expire(now);
        ChannelState { position: self.position(), answers: self.answers.clone() }
    }

    /// Drops what `retention` no longer keeps; returns the bytes freed.
    fn trim(&mut self, retention: Retention, now: Instant) -> usize {
        let mut freed = 0;
        while let Some((_, frame, at)) = self.events.front() {
            if self.events.len() <= retention.size && now.duration_since(*at) < retention.ttl {
                break;
            }
            freed += frame.len() + EVENT_OVERHEAD;
            self.events.pop_front();
        }
        self.bytes -= freed;
        freed
    }
}

/// Streams by channel key, behind one lock.
type Shard = Mutex<HashMap<Arc<str>, Stream>>;

/// History kept in this process.
pub struct MemoryBroker {
    config: HistoryConfig,
    shards: Box<[Shard]>,
    /// Bytes of events and streams kept over all shards.
    bytes: AtomicUsize,
    last_sweep: Mutex<Instant>,
}

impl MemoryBroker {
    /// A broker keeping what `config` says.
    pub fn new(config: HistoryConfig) -> MemoryBroker {
        MemoryBroker {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            bytes: AtomicUsize::new(0),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Bytes of history kept now (events and their streams).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, HashMap<Arc<str>, Stream>> {
        let mut hash = DefaultHasher::new();
        channel.hash(&mut hash);
        let shard = &self.shards[hash.finish() as usize % SHARDS];
        // A panic elsewhere while holding the lock leaves consistent data:
        // every change under it is a push or a pop.
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The channel's stream, made (in a new epoch) on first use.
    fn with_stream<T>(&self, channel: &Arc<str>, f: impl FnOnce(&mut Stream) -> T) -> T {
        let mut shard = self.shard(channel);
        let stream = shard.entry(Arc::clone(channel)).or_insert_with(|| {
            self.bytes.fetch_add(STREAM_OVERHEAD + channel.len(), Ordering::Relaxed);
            Stream::new(Instant::now())
        });
        f(stream)
    }

    /// Drops whole channels, least recently published first, until the
    /// kept bytes are 90 % of the cap: one sort per eviction round, not
    /// per event.
    fn evict(&self) {
        let target = self.config.memory_cap / 10 * 9;
        let mut ages: Vec<(Instant, Arc<str>)> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            ages.extend(shard.iter().map(|(name, s)| (s.touched, Arc::clone(name))));
        }
        ages.sort_unstable_by_key(|(touched, _)| *touched);
        let mut evicted = 0usize;
        for (_, name) in ages {
            if self.bytes() <= target {
                break;
            }
            if let Some(stream) = self.shard(&name).remove(&name) {
                self.bytes.fetch_sub(stream.bytes + STREAM_OVERHEAD + name.len(), Ordering::Relaxed);
                evicted += 1;
            }
        }
        log::warn!(
            "history: over its memory cap ({} bytes): dropped the history of {evicted} channels (their epochs change)",
            self.config.memory_cap
        );
    }

    /// Expires events past their time and forgets streams idle past
    /// [`META_TTL`] with nothing left.
    fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut freed = 0;
            shard.retain(|name, stream| {
                if let Some(retention) = self.config.retention(name) {
                    freed += stream.trim(retention, now);
                }
                let keep = !stream.events.is_empty() || now.duration_since(stream.touched) < META_TTL;
                if !keep {
                    freed += STREAM_OVERHEAD + name.len();
                }
                keep
            });
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, channel: &Arc<str>, frame: Frame) -> Option<(Frame, Option<Position>)> {
        let Some(retention) = self.config.retention(channel) else { return Some((frame, None)) };
        let now = Instant::now();
        let (stamped, position, added, freed) = self.with_stream(channel, |stream| {
            stream.top += 1;
            stream.touched = now;
            let stamped = frame.with_offset(stream.top);
            if let Some(piece) = answers::piece(frame.text()) {
                stream.answers.apply(&piece, stream.top, now);
            }
            stream.bytes += stamped.len() + EVENT_OVERHEAD;
            stream.events.push_back((stream.top, stamped.clone(), now));
            let freed = stream.trim(retention, now);
            (stamped.clone(), stream.position(), stamped.len() + EVENT_OVERHEAD, freed)
        });
        let kept = self.bytes.fetch_add(added, Ordering::Relaxed) + added;
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        if kept.saturating_sub(freed) > self.config.memory_cap {
            self.evict();
        }
        Some((stamped, Some(position)))
    }

    fn forward(&self, _: &Topic, _: &Frame) -> bool {
        false
    }

    fn interest(&self, _: Topic, _: bool) {}

    fn retention(&self, key: &str) -> Option<Retention> {
        self.config.retention(key)
    }

    fn state_now(&self, channel: &Arc<str>) -> Option<ChannelState> {
        self.config.retention(channel)?;
        Some(self.with_stream(channel, |stream| stream.state(Instant::now())))
    }

    fn load_state(&self, channel: &Arc<str>) -> Answer<Result<ChannelState, HistoryError>> {
        match self.state_now(channel) {
            Some(state) => Box::pin(std::future::ready(Ok(state))),
            None => not_kept(channel),
        }
    }

    fn history(
        &self,
        channel: &Arc<str>,
        since: u64,
        until: Option<u64>,
        limit: usize,
    ) -> Answer<Result<Page, HistoryError>> {
        let Some(retention) = self.config.retention(channel) else { return not_kept(channel) };
        let now = Instant::now();
        let (page, freed) = self.with_stream(channel, |stream| {
            let freed = stream.trim(retention, now);
            let until = until.unwrap_or(stream.top);
            let first_kept = stream.events.front().map_or(stream.top + 1, |(offset, _, _)| *offset);
            let events = stream
                .events
                .iter()
                .skip_while(|(offset, _, _)| *offset <= since)
                .take_while(|(offset, _, _)| *offset <= until)
                .take(limit)
                .map(|(offset, frame, _)| (*offset, frame.clone()))
                .collect();
            let complete = since >= stream.top || first_kept <= since + 1;
            (Page { position: stream.position(), events, complete }, freed)
        });
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn claim(&self, _: String, _: Duration) -> Answer<bool> {
        Box::pin(std::future::ready(true))
    }

    fn tick(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if now.duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.sweep(now);
    }
}

/// Presence on one node: the channel's own members are everyone, so every
/// first join and last leave is news at once.
pub struct MemoryPresence;

impl PresenceStore for MemoryPresence {
    fn change(&self, _: &Arc<str>, _: &Arc<str>, _: bool) -> Counted {
        Counted::Now
    }

    fn load(&self, _: &Arc<str>) -> Answer<Option<Vec<String>>> {
        Box::pin(std::future::ready(Some(Vec::new())))
    }

    fn store_status(&self, _: &Arc<str>, _: &Arc<str>, _: String) {}

    fn load_statuses(&self, _: &Arc<str>) -> Answer<Option<Vec<(String, String)>>> {
        Box::pin(std::future::ready(Some(Vec::new())))
    }

    fn retire(&self) -> Answer<()> {
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol;

    fn broker(spec: &str, cap: usize) -> MemoryBroker {
        let namespaces = HistoryConfig::parse_namespaces(spec).unwrap();
        MemoryBroker::new(HistoryConfig { namespaces, memory_cap: cap })
    }

    fn event(n: u32) -> Frame {
        protocol::encode("assistant.token", Some("conversation:c1"), &serde_json::json!({ "n": n }), None)
    }

    fn read(b: &MemoryBroker, channel: &Arc<str>, since: u64) -> Page {
        let mut page = b.history(channel, since, None, 1000);
        crate::broker::ready_now(&mut page).expect("memory history is ready at once").unwrap()
    }

    #[test]
    fn offsets_count_per_channel_and_are_in_the_frame() {
        let b = broker("conversation=10/1h", usize::MAX);
        let (c1, c2): (Arc<str>, Arc<str>) = ("conversation:c1".into(), "conversation:c2".into());
        let start = b.state_now(&c1).unwrap().position;
        assert_eq!(start.offset, 0);
        for n in 1..=3 {
            let (frame, position) = b.publish(&c1, event(n)).unwrap();
            let position = position.unwrap();
            assert_eq!(position, Position { offset: n as u64, epoch: start.epoch.clone() });
            let v: serde_json::Value = serde_json::from_str(frame.text()).unwrap();
            assert_eq!(v["offset"], n);
            assert_eq!(v["data"]["n"], n);
        }
        assert_eq!(b.publish(&c2, event(9)).unwrap().1.unwrap().offset, 1);
        let page = read(&b, &c1, 1);
        assert_eq!(page.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![2, 3]);
        assert!(page.complete);
    }

    #[test]
    fn channels_without_history_get_no_offset() {
        let b = broker("conversation=10/1h", usize::MAX);
        let system: Arc<str> = "system:settings".into();
        let (frame, position) = b.publish(&system, event(1)).unwrap();
        assert!(position.is_none());
        assert!(!frame.text().contains("offset"));
        assert!(b.state_now(&system).is_none());
    }

    #[test]
    fn trimmed_history_is_incomplete_for_old_positions() {
        let b = broker("conversation=3/1h", usize::MAX);
        let c: Arc<str> = "conversation:c1".into();
        for n in 1..=5 {
            b.publish(&c, event(n));
        }
        let page = read(&b, &c, 1);
        assert!(!page.complete, "events 2 was trimmed");
        assert_eq!(page.events.len(), 3);
        assert!(read(&b, &c, 2).complete);
        assert!(read(&b, &c, 5).complete);
    }

    #[test]
    fn expired_events_go_but_the_position_stays() {
        let b = broker("conversation=10/1ms", usize::MAX);
        let c: Arc<str> = "conversation:c1".into();
        let epoch = b.publish(&c, event(1)).unwrap().1.unwrap().epoch;
        std::thread::sleep(Duration::from_millis(5));
        let page = read(&b, &c, 0);
        assert!(page.events.is_empty());
        assert!(!page.complete);
        assert_eq!(page.position, Position { offset: 1, epoch });
    }

    #[test]
    fn the_cap_evicts_the_oldest_channel_and_its_epoch() {
        let size = event(1).len() + 16;
        let b = broker("conversation=100/1h", 4 * (size + STREAM_OVERHEAD + 20));
        let (old, new): (Arc<str>, Arc<str>) = ("conversation:old".into(), "conversation:new".into());
        let old_epoch = b.publish(&old, event(1)).unwrap().1.unwrap().epoch;
        for n in 0..8 {
            b.publish(&new, event(n));
        }
        assert!(b.bytes() <= 4 * (size + STREAM_OVERHEAD + 20));
        let now = b.state_now(&old).unwrap().position;
        assert_ne!(now.epoch, old_epoch, "evicted: a new epoch");
        assert_eq!(now.offset, 0);
    }

    #[test]
    fn the_state_holds_the_answers_streaming() {
        let b = broker("conversation=10/1h", usize::MAX);
        let c: Arc<str> = "conversation:c1".into();
        b.publish(&c, event(1));
        for chunk in ["Hel", "lo"] {
            let data = serde_json::json!({"stream_id": "s1", "chunk": chunk});
            b.publish(&c, protocol::encode("assistant.token", Some("conversation:c1"), &data, None));
        }
        let state = b.state_now(&c).unwrap();
        let answers = state.answers.snapshottable();
        assert_eq!(answers.len(), 1);
        assert_eq!((answers[0].1.text.as_str(), answers[0].1.first, answers[0].1.last), ("Hello", 2, 3));
    }

    #[test]
    fn the_sweep_frees_expired_events() {
        let b = broker("conversation=10/1ms", usize::MAX);
        let c: Arc<str> = "conversation:c1".into();
        b.publish(&c, event(1));
        let before = b.bytes();
        std::thread::sleep(Duration::from_millis(5));
        b.sweep(Instant::now());
        assert!(b.bytes() < before);
        assert_eq!(b.state_now(&c).unwrap().position.offset, 1);
    }
}
