//! The handle other actors hold for a session: its mailbox plus the
//! bookkeeping that keeps a slow reader from growing server memory.
//!
//! Every delivery to a session goes through [`Link::deliver`], which counts
//! the bytes queued for it. The session subtracts them as it writes, and it
//! writes only as fast as its socket drains (see `session.rs`), so `pending`
//! is what the server holds for that client. When a delivery would take
//! `pending` past the budget, the link refuses it and every later one, and
//! tells the session to close with 4008. A client that reads nothing at all
//! never lets its session run again, so the registry also shuts its socket
//! down after a grace period ([`Link::shutdown_socket`]).

use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::Recipient;

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
}

impl Batch {
    /// A batch of the given frames.
    pub fn new(frames: Vec<Frame>) -> Arc<Batch> {
        let bytes = frames.iter().map(Frame::len).sum();
        Arc::new(Batch { frames, bytes })
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

/// A session as other actors see it.
pub struct Link {
    id: ConnId,
    user: Arc<str>,
    session: Recipient<Push>,
    pending: AtomicUsize,
    budget: usize,
    overflowed: AtomicBool,
    /// The connection's socket, until the session is dropped. The session
    /// lives inside the HTTP dispatcher's response state, which actix-http
    /// drops before the socket it owns, and the session clears this under
    /// the lock when dropped: so while this holds `Some`, the descriptor is
    /// still this connection's.
    socket: Mutex<Option<RawFd>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).field("user", &self.user).finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `session` with an outbound budget of `budget` bytes.
    pub fn new(id: ConnId, user: Arc<str>, session: Recipient<Push>, budget: usize, socket: Option<RawFd>) -> Self {
        Link {
            id,
            user,
            session,
            pending: AtomicUsize::new(0),
            budget,
            overflowed: AtomicBool::new(false),
            socket: Mutex::new(socket),
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

    /// Queues a batch for the session, within its budget. A single batch
    /// larger than the whole budget still goes to a session that has nothing
    /// queued, so one big event cannot be undeliverable.
    pub fn deliver(&self, batch: &Arc<Batch>) -> Delivery {
        if self.overflowed.load(Ordering::Acquire) {
            return Delivery::Dropped;
        }
        let bytes = batch.bytes();
        let before = self.pending.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > self.budget {
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

    /// Shuts the socket down if the session still owns it: its HTTP
    /// dispatcher then fails its next write and drops the connection. This is
    /// how a client that stopped reading is disconnected, since its session
    /// is never polled again to close itself.
    pub fn shutdown_socket(&self) -> bool {
        let Ok(socket) = self.socket.lock() else { return false };
        let Some(fd) = *socket else { return false };
        // SAFETY: `fd` is open and is this connection's socket while the lock
        // is held with `Some` (see the field's comment). `ManuallyDrop` keeps
        // the borrowed descriptor from being closed here; only shutdown(2)
        // runs on it.
        let stream = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        stream.shutdown(Shutdown::Both).is_ok()
    }

    /// Called by the session when it is dropped, before its socket closes.
    pub(crate) fn detach_socket(&self) {
        if let Ok(mut socket) = self.socket.lock() {
            *socket = None;
        }
    }
}
