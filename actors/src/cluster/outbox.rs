//! The way out to Redis: a bounded queue that every published event takes,
//! and the task that writes it.
//!
//! Whoever publishes (the registry, the bus for presence) puts the payload
//! in the queue without waiting; the writer takes everything queued, up to
//! [`MAX_PIPELINE`] events, and sends it as one pipeline, so under load one
//! round trip carries many events, in the order they were queued.
//!
//! Most events are plain `PUBLISH`es, and publishing never blocks: with
//! Redis down such an event is not queued at all, and with the queue full
//! (Redis slow) it is dropped from the bus and counted. Local subscribers
//! get every such event either way; docs/scaling.md says what other nodes
//! miss.
//!
//! Events of channels with history ([`Outbox::history_event`]) are numbered
//! by a script (`history.rs`) in the same pipeline (which keeps the
//! channel's streaming answers too, in the same step), and reach every
//! subscriber, this node's too, only through Redis. So they are not dropped
//! while Redis is down: they wait in the queue and are written, in order,
//! when a connection returns. One that cannot wait (the queue is full) or
//! whose write failed or went unanswered is lost, and its channel gets a
//! new epoch before its next event is written, so clients learn that its
//! history has a hole. An unanswered write is not sent again: it may have
//! been written, and a duplicate would take a second offset.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Recipient;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::{mpsc, watch};

use crate::broker::answers;
use crate::cluster::history::{self, Retention};
use crate::cluster::wire::{PresenceNote, Wire};
use crate::cluster::{BusStatus, Keys, Topic};
use crate::protocol::Frame;

/// Events waiting for Redis at most.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

/// Events in one pipeline at most.
pub const MAX_PIPELINE: usize = 512;

/// How long one pipeline may take before it is given up (and its events
/// counted as dropped, or lost for history events): a Redis that stops
/// answering costs the queue this long, never a publisher.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection the writer publishes on, numbered by the bus (its
/// epoch) so a failure can be pinned on the right one.
pub type Conn = Option<(u64, MultiplexedConnection)>;

/// A pipeline failed in a way that means its connection is gone; the bus
/// reconnects.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct WriteFailed {
    /// The connection's number.
    pub epoch: u64,
    /// What Redis said.
    pub error: String,
}

/// One event for the other nodes, as the publisher handed it over: the
/// Redis channel name and the payload are made by the writer, on the bus's
/// thread, not by the registry, which every event on the node goes through.
struct Outgoing {
    topic: Topic,
    frame: Frame,
    presence: Option<PresenceNote>,
    /// Set on events of channels with history.
    history: Option<Numbered>,
}

/// What an event of a channel with history carries besides its frame.
struct Numbered {
    channel: Arc<str>,
    retention: Retention,
    /// Its place among this node's history events, in the order they were
    /// handed over: a loss numbered below it came before it.
    seq: u64,
    /// Sent once already, and answered `NOSCRIPT`.
    retried: bool,
}

/// The losses of each channel not yet told by a new epoch, as the numbers
/// of the first and the last lost event. A third loss between two others
/// is forgotten: its channel's new epoch may then come one event late.
#[derive(Default)]
struct Losses(HashMap<Arc<str>, Lost>);

#[derive(Clone, Copy)]
struct Lost {
    first: u64,
    last: u64,
}

impl Losses {
    fn mark(&mut self, channel: &Arc<str>, seq: u64) {
        self.0
            .entry(Arc::clone(channel))
            .and_modify(|lost| {
                lost.first = lost.first.min(seq);
                lost.last = lost.last.max(seq);
            })
            .or_insert(Lost { first: seq, last: seq });
    }

    fn absorb(&mut self, other: Losses) {
        for (channel, lost) in other.0 {
            self.mark(&channel, lost.first);
            self.mark(&channel, lost.last);
        }
    }

    /// Whether event `seq` of `channel` must come after a new epoch: a loss
    /// of the channel came before it. It then counts as told.
    fn due(&mut self, channel: &str, seq: u64) -> bool {
        let Some(lost) = self.0.get_mut(channel) else { return false };
        if seq <= lost.first {
            return false;
        }
        if seq > lost.last {
            self.0.remove(channel);
        } else {
            lost.first = lost.last;
        }
        true
    }
}

/// The publishing end, cheap to clone and safe to use from any thread.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    status: Arc<BusStatus>,
    /// History events that did not fit in the queue, for the writer.
    overflow: Arc<Mutex<Losses>>,
    /// The last number given to a history event.
    numbered: Arc<AtomicU64>,
}

impl Outbox {
    /// An outbox and the writer to run beside it. The writer publishes on
    /// whatever connection `conn` holds; while it holds none, plain events
    /// are dropped and history events wait.
    pub fn new(
        keys: Arc<Keys>,
        wire: Arc<Wire>,
        status: Arc<BusStatus>,
        conn: watch::Receiver<Conn>,
    ) -> (Outbox, Writer) {
        Outbox::with_capacity(keys, wire, status, conn, QUEUE_CAPACITY)
    }

    fn with_capacity(
        keys: Arc<Keys>,
        wire: Arc<Wire>,
        status: Arc<BusStatus>,
        conn: watch::Receiver<Conn>,
        capacity: usize,
    ) -> (Outbox, Writer) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflow = Arc::new(Mutex::new(Losses::default()));
        let writer = Writer {
            rx,
            conn,
            keys,
            wire,
            status: Arc::clone(&status),
            failed: None,
            overflow: Arc::clone(&overflow),
            losses: Losses::default(),
            pending: VecDeque::new(),
            loaded_on: None,
            last_complaint: None,
        };
        (Outbox { tx, status, overflow, numbered: Arc::new(AtomicU64::new(0)) }, writer)
    }

    /// Forwards an event of a channel, user or broadcast to the other nodes.
    pub fn event(&self, topic: &Topic, frame: &Frame) {
        self.send(topic, frame, None);
    }

    /// Forwards a presence change of `channel` to the other nodes.
    pub fn presence(&self, channel: &Arc<str>, frame: &Frame, note: &PresenceNote) {
        self.send(&Topic::Channel(Arc::clone(channel)), frame, Some(note.clone()));
    }

    /// Numbers, keeps and publishes an event of `channel`, whose namespace
    /// keeps `retention` of history. Every subscriber, this node's too, gets
    /// it from Redis with its offset; it waits in the queue while Redis is
    /// down. Returns `false` when the queue is full: the event is lost (no
    /// subscriber gets it from Redis) and the channel's next event starts a
    /// new epoch.
    pub fn history_event(&self, channel: &Arc<str>, frame: &Frame, retention: Retention) -> bool {
        let seq = self.numbered.fetch_add(1, Ordering::Relaxed) + 1;
        let numbered = Numbered { channel: Arc::clone(channel), retention, seq, retried: false };
        let outgoing = Outgoing {
            topic: Topic::Channel(Arc::clone(channel)),
            frame: frame.clone(),
            presence: None,
            history: Some(numbered),
        };
        if self.tx.try_send(outgoing).is_ok() {
            self.status.queued.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if let Ok(mut overflow) = self.overflow.lock() {
            overflow.mark(channel, seq);
        }
        let lost = self.status.history_lost.fetch_add(1, Ordering::Relaxed);
        if lost.is_power_of_two() || lost == 0 {
            log::warn!(
                "redis: outbox full ({QUEUE_CAPACITY} events), losing events of channels with history ({} so far)",
                lost + 1
            );
        }
        false
    }

    fn send(&self, topic: &Topic, frame: &Frame, presence: Option<PresenceNote>) {
        if !self.status.is_up() {
            self.status.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A frame clone shares its bytes.
        let outgoing = Outgoing { topic: topic.clone(), frame: frame.clone(), presence, history: None };
        if self.tx.try_send(outgoing).is_ok() {
            self.status.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            let dropped = self.status.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() {
                log::warn!(
                    "redis: outbox full ({QUEUE_CAPACITY} events), dropping events for other nodes ({} so far)",
                    dropped + 1
                );
            }
        }
    }
}

/// What each command of a pipeline was, to read its answer.
#[derive(Clone, Copy)]
enum Step {
    /// `SCRIPT LOAD` of a history script.
    Load,
    /// A plain `PUBLISH` of the batch's event.
    Publish(usize),
    /// The new epoch before the batch's history event.
    Bump(usize),
    /// The history script for the batch's event.
    History(usize),
}

/// Writes what the outbox queues; run it with [`Writer::run`] on the bus's
/// thread.
pub struct Writer {
    rx: mpsc::Receiver<Outgoing>,
    conn: watch::Receiver<Conn>,
    keys: Arc<Keys>,
    wire: Arc<Wire>,
    status: Arc<BusStatus>,
    failed: Option<Recipient<WriteFailed>>,
    overflow: Arc<Mutex<Losses>>,
    /// Losses not yet told by a new epoch: the writer's own, and the
    /// overflow's once taken over.
    losses: Losses,
    /// Events taken from the queue and not yet written: history events
    /// waiting for a connection, or to be sent again after `NOSCRIPT`.
    pending: VecDeque<Outgoing>,
    /// The connection the history scripts were loaded on: a new one (Redis
    /// may have restarted, which forgets scripts) loads them in its first
    /// pipeline, ahead of the calls.
    loaded_on: Option<u64>,
    last_complaint: Option<Instant>,
}

impl Writer {
    /// Where to report a connection that failed under a write.
    pub fn report_to(&mut self, failed: Recipient<WriteFailed>) {
        self.failed = Some(failed);
    }

    /// Writes until every [`Outbox`] is gone (or, with history events
    /// waiting for Redis, until the bus is). While a history event waits
    /// for a connection so does the queue behind it: plain events queued
    /// before the outage are written late rather than dropped.
    pub async fn run(mut self) {
        let mut incoming = Vec::with_capacity(MAX_PIPELINE);
        loop {
            if self.pending.is_empty() {
                if self.rx.recv_many(&mut incoming, MAX_PIPELINE).await == 0 {
                    return;
                }
                self.pending.extend(incoming.drain(..));
            } else {
                while self.pending.len() < MAX_PIPELINE {
                    let Ok(out) = self.rx.try_recv() else { break };
                    self.pending.push_back(out);
                }
            }
            let conn = self.conn.borrow_and_update().clone();
            if let Some((epoch, conn)) = conn {
                self.write(epoch, conn).await;
                continue;
            }
            let before = self.pending.len();
            self.pending.retain(|out| out.history.is_some());
            self.status.dropped.fetch_add((before - self.pending.len()) as u64, Ordering::Relaxed);
            // History events wait for a connection (the queue behind them
            // fills, and past its capacity they are lost).
            if !self.pending.is_empty() && self.conn.changed().await.is_err() {
                return;
            }
        }
    }

    /// Writes what is pending as one pipeline.
    async fn write(&mut self, epoch: u64, mut conn: MultiplexedConnection) {
        let batch: Vec<Outgoing> = self.pending.drain(..).collect();
        if let Ok(mut overflow) = self.overflow.lock() {
            self.losses.absorb(std::mem::take(&mut *overflow));
        }
        let mut pipe = redis::pipe();
        // Each command's answer on its own: one refusal fails one event.
        pipe.ignore_errors();
        let mut steps = Vec::with_capacity(batch.len() + 2);
        if self.loaded_on != Some(epoch) {
            pipe.cmd("SCRIPT").arg("LOAD").arg(history::PUBLISH);
            pipe.cmd("SCRIPT").arg("LOAD").arg(history::BUMP);
            steps.extend([Step::Load, Step::Load]);
        }
        for (i, out) in batch.iter().enumerate() {
            // Sealed here, once per event, whatever the number of nodes
            // and subscribers that receive it.
            let name = out.topic.key(&self.keys);
            match &out.history {
                None => {
                    let payload = match &out.presence {
                        None => self.wire.event(&name, &out.frame),
                        Some(note) => self.wire.presence(&name, &out.frame, note),
                    };
                    pipe.cmd("PUBLISH").arg(name).arg(payload);
                    steps.push(Step::Publish(i));
                }
                Some(numbered) => {
                    if self.losses.due(&numbered.channel, numbered.seq) {
                        history::bump_cmd(&mut pipe, &self.keys, &numbered.channel, &history::new_epoch());
                        steps.push(Step::Bump(i));
                    }
                    let payload = self.wire.event(&name, &out.frame);
                    let candidate = history::new_epoch();
                    // Found here, once per event: the script keeps the
                    // channel's answers in the step that numbers it.
                    let piece = answers::piece(out.frame.text());
                    history::publish_cmd(
                        &mut pipe,
                        &self.keys,
                        &numbered.channel,
                        &name,
                        &payload,
                        numbered.retention,
                        &candidate,
                        piece.as_ref(),
                    );
                    steps.push(Step::History(i));
                }
            }
        }
        let outcome = tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<Vec<Value>>(&mut conn)).await;
        let error = match outcome {
            Ok(Ok(values)) if values.len() == steps.len() => return self.settle(epoch, batch, &steps, values),
            Ok(Ok(values)) => format!("{} answers to {} commands", values.len(), steps.len()),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    if let Some(failed) = &self.failed {
                        failed.do_send(WriteFailed { epoch, error: e.to_string() });
                    }
                }
                e.to_string()
            }
            Err(_) => format!("no answer in {WRITE_TIMEOUT:?}"),
        };
        // Failed or unanswered as a whole: perhaps written, so not sent
        // again; channels with history get a new epoch.
        self.loaded_on = None;
        let count = batch.len();
        for out in &batch {
            self.lose(out);
        }
        self.complain(format_args!("publishing {count} events failed: {error}"));
    }

    /// Reads the answers of a pipeline Redis answered.
    fn settle(&mut self, epoch: u64, batch: Vec<Outgoing>, steps: &[Step], values: Vec<Value>) {
        let mut loaded = true;
        let mut noscript = Vec::new();
        // The last history event of each channel Redis wrote: an event
        // answered NOSCRIPT before it cannot be sent again in its place.
        let mut written: HashMap<Arc<str>, usize> = HashMap::new();
        let (mut failures, mut first_error) = (0usize, None);
        for (step, value) in steps.iter().zip(values) {
            let Value::ServerError(error) = value else {
                match *step {
                    Step::Load => {}
                    Step::Publish(_) => {
                        self.status.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Step::Bump(_) => {
                        self.status.epochs_bumped.fetch_add(1, Ordering::Relaxed);
                    }
                    Step::History(i) => {
                        self.status.published.fetch_add(1, Ordering::Relaxed);
                        if let Some(numbered) = &batch[i].history {
                            written.insert(Arc::clone(&numbered.channel), i);
                        }
                    }
                }
                continue;
            };
            let noscript_error = error.code() == "NOSCRIPT";
            loaded &= !noscript_error;
            first_error.get_or_insert_with(|| error.to_string());
            match *step {
                Step::Load => loaded = false,
                Step::History(i) if noscript_error => noscript.push(i),
                Step::Publish(i) | Step::History(i) => {
                    failures += 1;
                    self.lose(&batch[i]);
                }
                // The loss stays to be told, before this event (sent again
                // after NOSCRIPT) or the next.
                Step::Bump(i) => {
                    if let Some(numbered) = &batch[i].history {
                        self.losses.mark(&numbered.channel, numbered.seq.saturating_sub(1));
                    }
                }
            }
        }
        self.loaded_on = loaded.then_some(epoch);
        let count = batch.len();
        let mut batch: Vec<Option<Outgoing>> = batch.into_iter().map(Some).collect();
        let mut again = Vec::with_capacity(noscript.len());
        for i in noscript {
            let Some(out) = batch[i].take() else { continue };
            // Once only, and not after a later event of its channel that
            // Redis wrote: its offset would come after that one's.
            let sendable = out
                .history
                .as_ref()
                .is_some_and(|n| !n.retried && written.get(&n.channel).is_none_or(|&last| last < i));
            if sendable {
                again.push(out);
            } else {
                failures += 1;
                self.lose(&out);
            }
        }
        // Sent again first, in their order, with the scripts loaded.
        for mut out in again.into_iter().rev() {
            if let Some(numbered) = &mut out.history {
                numbered.retried = true;
            }
            self.pending.push_front(out);
        }
        if let Some(error) = first_error {
            self.complain(format_args!("{failures} of {count} events not published: {error}"));
        }
    }

    /// Counts an event that did not reach Redis, or may not have: a plain
    /// one as dropped, a history one as lost, its channel to get a new
    /// epoch.
    fn lose(&mut self, out: &Outgoing) {
        match &out.history {
            None => {
                self.status.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(numbered) => {
                self.status.history_lost.fetch_add(1, Ordering::Relaxed);
                self.losses.mark(&numbered.channel, numbered.seq);
            }
        }
    }

    /// Logs a failure, at most every ten seconds.
    fn complain(&mut self, what: std::fmt::Arguments<'_>) {
        if self.last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.last_complaint = Some(Instant::now());
            log::warn!("redis: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::history::test_redis::RedisServer;
    use crate::cluster::seal::ClusterKey;
    use crate::cluster::wire::Decoded;
    use futures_util::StreamExt;
    use serde_json::Value as Json;

    const CH: &str = "conversation:c1";
    const KEEP: Retention = Retention { size: 100, ttl: Duration::from_secs(60) };

    fn frame(n: u64) -> Frame {
        crate::protocol::encode("task_updated", Some(CH), &serde_json::json!({ "n": n }), None)
    }

    fn wire(node: &str) -> Arc<Wire> {
        Arc::new(Wire::new(node, ClusterKey::new(b"test-secret").unwrap(), 1 << 20))
    }

    /// An outbox and its writer on a Redis of their own, and a subscriber
    /// to what they publish.
    struct Bench {
        redis: RedisServer,
        keys: Arc<Keys>,
        status: Arc<BusStatus>,
        conn: watch::Sender<Conn>,
        outbox: Outbox,
        writer: Option<Writer>,
        messages: redis::aio::PubSubStream,
    }

    impl Bench {
        async fn new(capacity: usize) -> Bench {
            let redis = RedisServer::start();
            let keys = Arc::new(Keys::new("nova:"));
            let status = Arc::new(BusStatus::default());
            let (conn, rx) = watch::channel(None);
            let (outbox, writer) =
                Outbox::with_capacity(Arc::clone(&keys), wire("node-a"), Arc::clone(&status), rx, capacity);
            let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
            pubsub.subscribe(keys.channel(CH)).await.unwrap();
            pubsub.subscribe(keys.user("u")).await.unwrap();
            Bench { redis, keys, status, conn, outbox, writer: Some(writer), messages: pubsub.into_on_message() }
        }

        fn start(&mut self) {
            actix::spawn(self.writer.take().unwrap().run());
        }

        /// What the bus does on connecting.
        async fn connect(&self, epoch: u64) {
            let conn = self.redis.connection().await;
            self.conn.send_replace(Some((epoch, conn)));
            self.status.set(true, None);
        }

        /// What the bus does on losing Redis.
        fn disconnect(&self) {
            self.conn.send_replace(None);
            self.status.set(false, None);
        }

        fn history(&self, n: u64) -> bool {
            self.outbox.history_event(&CH.into(), &frame(n), KEEP)
        }

        /// The next message published, as another node reads it: the
        /// event's `n`, and its offset and epoch if numbered.
        async fn next(&mut self) -> (u64, Option<(u64, String)>) {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.messages.next()).await.unwrap().unwrap();
            let name = msg.get_channel_name();
            let topic = Topic::parse(&self.keys, name).unwrap();
            let Ok(Decoded::Event(inbound)) = wire("node-b").decode(&topic, name, msg.get_payload_bytes()) else {
                panic!("refused {:?}", String::from_utf8_lossy(msg.get_payload_bytes()));
            };
            let v: Json = serde_json::from_str(inbound.frame.text()).unwrap();
            assert_eq!(v["offset"].as_u64(), inbound.position.as_ref().map(|p| p.0));
            (v["data"]["n"].as_u64().unwrap(), inbound.position.map(|(o, e)| (o, e.to_string())))
        }

        fn count(&self, counter: &AtomicU64) -> u64 {
            counter.load(Ordering::Relaxed)
        }
    }

    /// Waits for what only a counter shows (the writer giving up).
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix::test]
    async fn history_events_wait_for_redis_and_are_written_in_order() {
        let mut b = Bench::new(QUEUE_CAPACITY).await;
        b.start();
        let user = Topic::User("u".into());
        // Down: a plain event is dropped, history events wait.
        b.outbox.event(&user, &frame(100));
        for n in 1..=3 {
            assert!(b.history(n));
        }
        b.connect(1).await;
        b.outbox.event(&user, &frame(101));
        let (_, first) = b.next().await;
        let (_, epoch) = first.clone().unwrap();
        assert_eq!(first, Some((1, epoch.clone())));
        for n in 2..=3 {
            assert_eq!(b.next().await, (n, Some((n, epoch.clone()))));
        }
        assert_eq!(b.next().await, (101, None));
        // Down again, then a new connection: the scripts are loaded on it.
        b.disconnect();
        for n in 4..=5 {
            assert!(b.history(n));
        }
        b.connect(2).await;
        for n in 4..=5 {
            assert_eq!(b.next().await, (n, Some((n, epoch.clone()))));
        }
        until("the writer to count its writes", || b.count(&b.status.published) == 6).await;
        assert_eq!(b.count(&b.status.dropped), 1);
        assert_eq!((b.count(&b.status.history_lost), b.count(&b.status.epochs_bumped)), (0, 0));
    }

    #[actix::test]
    async fn lost_scripts_are_loaded_again_and_their_events_sent_in_order() {
        let mut b = Bench::new(QUEUE_CAPACITY).await;
        b.start();
        b.connect(1).await;
        assert!(b.history(1));
        let (_, Some((1, epoch))) = b.next().await else { panic!("not numbered") };
        let mut admin = b.redis.client().get_connection().unwrap();
        redis::cmd("SCRIPT").arg("FLUSH").query::<()>(&mut admin).unwrap();
        for n in 2..=4 {
            assert!(b.history(n));
        }
        for n in 2..=4 {
            assert_eq!(b.next().await, (n, Some((n, epoch.clone()))));
        }
        until("the writer to count its writes", || b.count(&b.status.published) == 4).await;
        assert_eq!((b.count(&b.status.history_lost), b.count(&b.status.epochs_bumped)), (0, 0));
        let errors: String = redis::cmd("INFO").arg("errorstats").query(&mut admin).unwrap();
        assert!(errors.contains("errorstat_NOSCRIPT"), "the scripts were not lost: {errors}");
    }

    #[actix::test]
    async fn an_overflowing_queue_starts_a_new_epoch() {
        let mut b = Bench::new(4).await;
        b.connect(1).await;
        // The writer not running yet: the fifth does not fit.
        for n in 1..=4 {
            assert!(b.history(n));
        }
        assert!(!b.history(5));
        assert_eq!(b.count(&b.status.history_lost), 1);
        b.start();
        let (_, Some((1, old))) = b.next().await else { panic!("not numbered") };
        for n in 2..=4 {
            assert_eq!(b.next().await, (n, Some((n, old.clone()))));
        }
        // The channel's next event comes with a new epoch; the offsets go on.
        assert!(b.history(6));
        let (n, Some((offset, epoch))) = b.next().await else { panic!("not numbered") };
        assert_eq!((n, offset), (6, 5));
        assert_ne!(epoch, old);
        assert!(b.history(7));
        assert_eq!(b.next().await, (7, Some((6, epoch.clone()))));
        until("the writer to count the new epoch", || b.count(&b.status.epochs_bumped) == 1).await;
        // The events of the old epoch are gone from the history.
        let mut conn = b.redis.connection().await;
        let range = history::range(&mut conn, &b.keys, &wire("node-b"), CH, 0, None, 10).await.unwrap();
        assert_eq!(range.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [5, 6]);
        assert_eq!((range.epoch, range.first_kept), (Some(epoch), Some(5)));
    }

    #[actix::test]
    async fn a_failed_write_starts_a_new_epoch() {
        let mut b = Bench::new(QUEUE_CAPACITY).await;
        b.start();
        b.connect(1).await;
        assert!(b.history(1));
        let (_, Some((1, old))) = b.next().await else { panic!("not numbered") };
        // Out of memory, Redis refuses the script (and writes nothing), not
        // a plain PUBLISH, which shows the writer is past it.
        let mut admin = b.redis.client().get_connection().unwrap();
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query::<()>(&mut admin).unwrap();
        assert!(b.history(2));
        b.outbox.event(&Topic::Channel(CH.into()), &frame(200));
        assert_eq!(b.next().await, (200, None));
        until("the writer to count the loss", || b.count(&b.status.history_lost) == 1).await;
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query::<()>(&mut admin).unwrap();
        assert!(b.history(3));
        let (n, Some((offset, epoch))) = b.next().await else { panic!("not numbered") };
        assert_eq!((n, offset), (3, 2));
        assert_ne!(epoch, old);
        until("the writer to count the new epoch", || b.count(&b.status.epochs_bumped) == 1).await;
    }

    #[actix::test]
    async fn an_unanswered_write_is_not_sent_again_and_starts_a_new_epoch() {
        let mut b = Bench::new(QUEUE_CAPACITY).await;
        b.start();
        b.connect(1).await;
        assert!(b.history(1));
        let (_, Some((1, old))) = b.next().await else { panic!("not numbered") };
        // Redis publishes before it answers: the answer is awaited, or
        // the stop could leave the first write unanswered.
        until("the first write's answer", || b.count(&b.status.published) == 1).await;
        b.redis.signal("-STOP");
        assert!(b.history(2));
        until("the write to time out", || b.count(&b.status.history_lost) == 1).await;
        b.redis.signal("-CONT");
        // Redis did write it, once.
        assert_eq!(b.next().await, (2, Some((2, old.clone()))));
        assert!(b.history(3));
        let (n, Some((offset, epoch))) = b.next().await else { panic!("not numbered") };
        assert_eq!((n, offset), (3, 3));
        assert_ne!(epoch, old);
        until("the writer to count the new epoch", || b.count(&b.status.epochs_bumped) == 1).await;
        assert_eq!(b.count(&b.status.history_lost), 1);
    }

    #[actix::test]
    async fn the_writer_keeps_the_answers_of_the_events_it_numbers() {
        let mut b = Bench::new(QUEUE_CAPACITY).await;
        b.start();
        b.connect(1).await;
        for (chunk, last) in [("Hel", false), ("lo", true)] {
            let data = serde_json::json!({"stream_id": "s1", "chunk": chunk, "is_final": last});
            let token = crate::protocol::encode(crate::protocol::kind::ASSISTANT_TOKEN, Some(CH), &data, None);
            assert!(b.outbox.history_event(&CH.into(), &token, KEEP));
        }
        // Published by the script that keeps the answer: once both are
        // seen, the answer is whole.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), b.messages.next()).await.unwrap().unwrap();
        }
        let mut conn = b.redis.connection().await;
        let opened = history::open(&mut conn, &b.keys, CH, KEEP).await.unwrap();
        assert_eq!(opened.top, 2);
        let a = &opened.answers[0];
        assert_eq!((a.stream_id.as_str(), a.text.as_str(), a.first, a.last, a.is_final), ("s1", "Hello", 1, 2, true));
    }

    #[test]
    fn a_loss_is_told_before_the_first_event_after_it() {
        let mut losses = Losses::default();
        let ch: Arc<str> = "team:t1".into();
        losses.mark(&ch, 5);
        assert!(!losses.due("team:t1", 3), "queued before the loss");
        assert!(!losses.due("team:t2", 9));
        assert!(losses.due("team:t1", 6));
        assert!(!losses.due("team:t1", 7), "told once");
        // Two losses with an event between them: told twice.
        losses.mark(&ch, 10);
        losses.mark(&ch, 20);
        assert!(losses.due("team:t1", 15));
        assert!(!losses.due("team:t1", 16));
        assert!(losses.due("team:t1", 21));
        assert!(!losses.due("team:t1", 22));
        let mut other = Losses::default();
        other.mark(&ch, 30);
        losses.absorb(other);
        assert!(losses.due("team:t1", 31));
    }
}
