//! The way out to Redis: a bounded queue that every published event takes,
//! and the task that writes it.
//!
//! Whoever publishes (the registry, the bus for presence) puts the payload
//! in the queue without waiting; the writer takes everything queued, up to
//! [`MAX_PIPELINE`] events, and sends it as one pipeline of `PUBLISH`
//! commands, so under load one round trip carries many events. Publishing
//! never blocks: with Redis down the event is not queued at all, and with
//! the queue full (Redis slow) it is dropped from the bus and counted. Local
//! subscribers get every event either way; docs/scaling.md says what other
//! nodes miss.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};

use crate::cluster::wire::{PresenceNote, Wire};
use crate::cluster::{BusStatus, Keys, Topic};
use crate::protocol::Frame;

/// Events waiting for Redis at most.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

/// Events in one pipeline at most.
pub const MAX_PIPELINE: usize = 512;

/// How long one pipeline may take before it is given up (and its events
/// counted as dropped): a Redis that stops answering costs the queue this
/// long, never a publisher.
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
}

/// The publishing end, cheap to clone and safe to use from any thread.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    status: Arc<BusStatus>,
}

impl Outbox {
    /// An outbox and the writer to run beside it. The writer publishes on
    /// whatever connection `conn` holds, and drops events while it holds
    /// none.
    pub fn new(
        keys: Arc<Keys>,
        wire: Arc<Wire>,
        status: Arc<BusStatus>,
        conn: watch::Receiver<Conn>,
    ) -> (Outbox, Writer) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer { rx, conn, keys, wire, status: Arc::clone(&status), failed: None };
        (Outbox { tx, status }, writer)
    }

    /// Forwards an event of a channel, user or broadcast to the other nodes.
    pub fn event(&self, topic: &Topic, frame: &Frame) {
        self.send(topic, frame, None);
    }

    /// Forwards a presence change of `channel` to the other nodes.
    pub fn presence(&self, channel: &Arc<str>, frame: &Frame, note: &PresenceNote) {
        self.send(&Topic::Channel(Arc::clone(channel)), frame, Some(note.clone()));
    }

    fn send(&self, topic: &Topic, frame: &Frame, presence: Option<PresenceNote>) {
        if !self.status.is_up() {
            self.status.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A frame clone shares its bytes.
        let outgoing = Outgoing { topic: topic.clone(), frame: frame.clone(), presence };
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

/// Writes what the outbox queues; run it with [`Writer::run`] on the bus's
/// thread.
pub struct Writer {
    rx: mpsc::Receiver<Outgoing>,
    conn: watch::Receiver<Conn>,
    keys: Arc<Keys>,
    wire: Arc<Wire>,
    status: Arc<BusStatus>,
    failed: Option<Recipient<WriteFailed>>,
}

impl Writer {
    /// Where to report a connection that failed under a write.
    pub fn report_to(&mut self, failed: Recipient<WriteFailed>) {
        self.failed = Some(failed);
    }

    /// Writes until every [`Outbox`] is gone.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_PIPELINE);
        let mut last_complaint: Option<Instant> = None;
        while self.rx.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
            let count = batch.len() as u64;
            let conn = self.conn.borrow().clone();
            let Some((epoch, mut conn)) = conn else {
                self.status.dropped.fetch_add(count, Ordering::Relaxed);
                batch.clear();
                continue;
            };
            let mut pipe = redis::pipe();
            for out in batch.drain(..) {
                // Sealed here, once per event, whatever the number of
                // nodes and subscribers that receive it.
                let name = out.topic.key(&self.keys);
                let payload = match &out.presence {
                    None => self.wire.event(&name, &out.frame),
                    Some(note) => self.wire.presence(&name, &out.frame, note),
                };
                pipe.cmd("PUBLISH").arg(name).arg(payload).ignore();
            }
            let outcome = tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
            let error = match outcome {
                Ok(Ok(())) => {
                    self.status.published.fetch_add(count, Ordering::Relaxed);
                    continue;
                }
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
            self.status.dropped.fetch_add(count, Ordering::Relaxed);
            if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_complaint = Some(Instant::now());
                log::warn!("redis: publishing {count} events failed: {error}");
            }
        }
    }
}
