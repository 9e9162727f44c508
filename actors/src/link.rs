//! The handle other actors hold for a session: its mailbox plus the
//! bookkeeping that keeps a slow reader from growing server memory.
//!
//! Every delivery to a session goes through [`Link::deliver`], which counts
//! the bytes queued for it. The session subtracts them as it writes, and it
//! writes only as fast as its socket drains (see `session.rs`), so `pending`
//! is what the server holds for that client. When a delivery would take
//! `pending` past the budget, the link refuses it and every later one, and
//! tells the session to close with 4008. A client that reads nothing at all
//! never lets its session run again, so the registry also hangs the
//! connection up after a grace period ([`Link::hang_up`]).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix::Recipient;
use futures_util::task::AtomicWaker;

use crate::cluster::Topic;
use crate::codes::Close;
use crate::protocol::Frame;
use crate::session::Push;

/// A connection's number on this node.
pub type ConnId = u64;

/// Frames delivered together, shared by every recipient: an event is encoded
/// once and each subscriber gets an `Arc` of the same batch.
#[derive(Debug)]
pub struct Batch {
    frames: Vec<Frame>,
    bytes: usize,
    /// The family all its frames share, if they do (the common case): a
    /// session counts the batch by family with one update.
    family: Option<u8>,
    /// When its oldest frame was made, for the latency figures.
    oldest: Option<Instant>,
}

impl Batch {
    /// A batch of the given frames.
    pub fn new(frames: Vec<Frame>) -> Arc<Batch> {
        // Worked out once here rather than by each of the batch's
        // recipients.
        let bytes = frames.iter().map(Frame::len).sum();
        let family = frames.first().map(Frame::family).filter(|&f| frames.iter().all(|x| x.family() == f));
        let oldest = frames.iter().map(Frame::created).min();
        Arc::new(Batch { frames, bytes, family, oldest })
    }

    /// A batch of one frame.
    pub fn one(frame: Frame) -> Arc<Batch> {
        Batch::new(vec![frame])
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Their total size, what the budget counts.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The family every frame of the batch has, or `None` when they
    /// differ.
    pub fn family(&self) -> Option<u8> {
        self.family
    }

    /// When its oldest frame was made (`None` for an empty batch).
    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the session.
    Queued,
    /// This delivery took the session over its budget: it was refused and
    /// the session told to close. Happens once per session; the caller
    /// reports it to the registry.
    Overflowed,
    /// The session is already over budget; nothing was queued.
    Dropped,
}

/// What a connection's I/O and its session share, beside the socket.
///
/// It lets the registry drop a connection whose session is no longer
/// polled: the connection's I/O checks it beside the socket, so it works
/// even while the session is stuck behind a full socket. And it tells the
/// I/O when the session has authenticated: until then the connection reads
/// only small frames and counts against the budget of connections that are
/// not yet clients.
#[derive(Debug, Default)]
pub struct Hangup {
    triggered: AtomicBool,
    waker: AtomicWaker,
    authenticated: AtomicBool,
}

impl Hangup {
    /// Drops the connection (remembered if nothing is polling yet).
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once [`Hangup::trigger`] has been called; registers the task to
    /// be woken then.
    pub fn poll_triggered(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.triggered.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.triggered.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once [`Hangup::trigger`] has been called.
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_triggered(cx)).await
    }

    /// Whether [`Hangup::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// The session accepted `connection.init`.
    pub fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Release);
    }

    /// Whether the session has accepted `connection.init`.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }
}

/// A session as other actors see it.
pub struct Link {
    id: ConnId,
    user: Arc<str>,
    /// The user's tenant; `None` is the default one.
    tenant: Option<Arc<str>>,
    session: Recipient<Push>,
    pending: AtomicUsize,
    budget: usize,
    overflowed: AtomicBool,
    /// `None` only for sessions started without a transport (never in the
    /// server).
    hangup: Option<Arc<Hangup>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).field("user", &self.user).finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `session` with an outbound budget of `budget` bytes.
    pub fn new(
        id: ConnId,
        user: Arc<str>,
        session: Recipient<Push>,
        budget: usize,
        hangup: Option<Arc<Hangup>>,
    ) -> Self {
        Link {
            id,
            user,
            tenant: None,
            session,
            pending: AtomicUsize::new(0),
            budget,
            overflowed: AtomicBool::new(false),
            hangup,
        }
    }

    /// The same link for a user of `tenant`.
    pub fn in_tenant(self, tenant: Option<Arc<str>>) -> Self {
        Link { tenant, ..self }
    }

    /// The user's tenant; `None` is the default one.
    pub fn tenant(&self) -> Option<&Arc<str>> {
        self.tenant.as_ref()
    }

    /// The topic of this connection's user (user and tenant), sharing the
    /// link's strings.
    pub fn user_topic(&self) -> Topic {
        match &self.tenant {
            None => Topic::User(Arc::clone(&self.user)),
            Some(tenant) => Topic::TenantUser { tenant: Arc::clone(tenant), user: Arc::clone(&self.user) },
        }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The authenticated user.
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }

    /// Bytes queued for the session and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Queues a batch for the session, within its budget. A single frame
    /// larger than the whole budget still goes to a session that has nothing
    /// queued, so one big event cannot be undeliverable; the configuration
    /// keeps the budget at two frames or more, so this is for the odd
    /// protocol frame, never a way around the limit.
    pub fn deliver(&self, batch: &Arc<Batch>) -> Delivery {
        if self.overflowed.load(Ordering::Acquire) {
            return Delivery::Dropped;
        }
        let bytes = batch.bytes();
        let before = self.pending.fetch_add(bytes, Ordering::AcqRel);
        let lone_frame = before == 0 && batch.frames().len() == 1;
        if before + bytes > self.budget && !lone_frame {
            self.pending.fetch_sub(bytes, Ordering::AcqRel);
            if self.overflowed.swap(true, Ordering::AcqRel) {
                return Delivery::Dropped;
            }
            self.session.do_send(Push::Close(Close::SlowConsumer));
            return Delivery::Overflowed;
        }
        self.session.do_send(Push::Frames(Arc::clone(batch)));
        Delivery::Queued
    }

    /// Asks the session to close, outside the budget (shutdown).
    pub fn close(&self, close: Close) {
        self.session.do_send(Push::Close(close));
    }

    /// Whether the session went over its budget.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// The session wrote `bytes` of what was delivered.
    pub(crate) fn written(&self, bytes: usize) {
        self.pending.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Drops the connection if its session is still alive: for a client
    /// that stopped reading, whose session is never polled again to close
    /// itself. Returns whether there was a connection to drop.
    pub fn hang_up(&self) -> bool {
        match &self.hangup {
            Some(hangup) if self.session.connected() => {
                hangup.trigger();
                true
            }
            _ => false,
        }
    }
}
