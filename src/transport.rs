//! The WebSocket transport: the first thing every new TCP connection meets.
//!
//! It reads the connection's first request head. A valid WebSocket upgrade
//! to `/ws` or `/ws/{client_id}` is answered here and its session actor runs
//! directly on the socket. Anything else (REST calls, refused upgrades) is
//! replayed, byte for byte, into the actix-web application through
//! [`Replay`], which answers it as usual.
//!
//! Why not let actix-web upgrade: its HTTP/1 dispatcher keeps two 8 KiB
//! buffers, a shutdown signal and its own state for the life of a connection
//! and copies every outgoing chunk once more. For a server whose connections
//! are mostly idle WebSockets that was most of a connection's memory. Here an
//! idle connection holds no buffer at all.
//!
//! Every connection is bounded both ways, whichever path serves it:
//! - input reaches the WebSocket decoder one frame at a time
//!   ([`FrameAligned`]), so a client cannot make the server buffer more than
//!   one frame by sending faster than it is served;
//! - a write that makes no progress for two heartbeat intervals ends the
//!   connection, and the registry can hang any connection up ([`Hangup`]),
//!   even one whose session is stuck behind a full socket.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_http::ws::{hash_key, Codec};
use actix_http::Protocol;
use actix_service::Service;
use actix_web::error::PayloadError;
use actix_web::http::header::HeaderValue;
use actix_web_actors::ws::WebsocketContext;
use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use nova_actors::link::Hangup;
use nova_actors::node::Node;
use nova_actors::session::{Session, FRAME_TOO_LARGE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant as TokioInstant, Sleep};

use crate::admission::{Admission, HttpClock, Pending};
use crate::origins::Origins;
use crate::peer::{forwarded_for, TrustedProxies};

/// Longest first request head the transport reads; a longer one goes to
/// actix-web.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Headers the transport parses in a first request head.
const MAX_HEAD_HEADERS: usize = 64;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4 * 1024;

/// Time a closing connection gets to read the close frame before the socket
/// goes.
const LINGER: Duration = Duration::from_secs(1);

/// Paths under `/ws/` that are admin endpoints, not client ids.
pub const RESERVED_CLIENT_IDS: &[&str] = &["connections", "metrics", "broadcast", "ping"];

/// Client ids from the path: 1–64 bytes of `A–Z a–z 0–9 _ . -`; they show up
/// in listings.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What the transport needs from the rest of the server.
pub struct Transport {
    /// The node sessions belong to.
    pub node: Arc<Node>,
    /// Allowed browser origins.
    pub origins: Origins,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub proxies: TrustedProxies,
    /// How long an HTTP connection may idle, and a request take to arrive.
    pub http_timeout: Duration,
}

impl Transport {
    /// How long a write may make no progress: a client that has read
    /// nothing for two heartbeat intervals is gone.
    pub fn write_stall_limit(&self) -> Duration {
        self.node.limits.heartbeat_interval * 2
    }
}

/// The hang-up of an HTTP connection, recorded in its connection data so a
/// WebSocket upgraded through actix-web can be hung up too.
#[derive(Clone)]
pub struct ConnHangup(pub Arc<Hangup>);

/// A WebSocket upgrade the transport accepted.
struct Upgrade {
    client_id: Option<Arc<str>>,
    accept: [u8; 28],
    /// Length of the request head; bytes after it are WebSocket frames.
    head_len: usize,
    /// The client's `X-Forwarded-For` address, if a trusted proxy sent one.
    client_ip: Option<IpAddr>,
}

/// Whether `key` is a `Sec-WebSocket-Key`: base64 of 16 bytes, which is 22
/// base64 characters and `==` (RFC 6455 §4.2.1).
pub fn valid_websocket_key(key: &[u8]) -> bool {
    let base64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/');
    key.len() == 24 && key[..22].iter().all(base64) && key.ends_with(b"==") && b"AQgw".contains(&key[21])
}

/// Checks a complete request head. `None` means "not ours": actix-web
/// answers it, with the right error when it is a bad upgrade.
fn accept_upgrade(req: &httparse::Request<'_, '_>, head_len: usize, origins: &Origins) -> Option<Upgrade> {
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let path = req.path?.split('?').next()?;
    let client_id = match path.strip_prefix("/ws")? {
        "" => None,
        rest => {
            let id = rest.strip_prefix('/')?;
            if !valid_client_id(id) || RESERVED_CLIENT_IDS.contains(&id) {
                return None;
            }
            Some(Arc::from(id))
        }
    };
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let has_token = |name: &str, token: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    // The same checks as actix-web-actors' handshake.
    let upgrade = header("upgrade").and_then(|v| std::str::from_utf8(v).ok())?;
    if !upgrade.to_ascii_lowercase().contains("websocket") || !has_token("connection", "upgrade") {
        return None;
    }
    if !matches!(header("sec-websocket-version"), Some(b"13" | b"8" | b"7")) {
        return None;
    }
    let key = header("sec-websocket-key").filter(|k| valid_websocket_key(k))?;
    if let Some(origin) = header("origin") {
        if !HeaderValue::from_bytes(origin).is_ok_and(|o| origins.allows_for(&o, header("host"))) {
            return None;
        }
    }
    Some(Upgrade { client_id, accept: hash_key(key), head_len, client_ip: None })
}

/// What the bytes read so far say.
enum Head {
    /// A WebSocket upgrade the transport serves.
    Ours(Upgrade),
    /// Anything else, for actix-web (malformed, too many headers or too long
    /// included: actix-web answers those).
    NotOurs,
    /// Incomplete.
    Partial,
}

/// Parses a request head. A plain function on purpose: the header array
/// lives on the stack only while parsing, not in the connection's task for
/// its whole life.
fn parse_head(buf: &[u8], transport: &Transport, peer: Option<IpAddr>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEAD_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => match accept_upgrade(&req, len, &transport.origins) {
            Some(mut upgrade) => {
                let forwarded = forwarded_for(
                    req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")).map(|h| h.value),
                );
                upgrade.client_ip = peer.map(|p| transport.proxies.client_ip(p, forwarded.as_deref()));
                Head::Ours(upgrade)
            }
            None => Head::NotOurs,
        },
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => Head::Partial,
        _ => Head::NotOurs,
    }
}

/// Reads the first request head. `Ok(Some)` is an upgrade the transport
/// serves; `Ok(None)` leaves `buf` holding everything read, for actix-web.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    transport: &Transport,
    peer: Option<IpAddr>,
) -> io::Result<Option<Upgrade>> {
    loop {
        match parse_head(buf, transport, peer) {
            Head::Ours(upgrade) => return Ok(Some(upgrade)),
            Head::NotOurs => return Ok(None),
            Head::Partial => {}
        }
        // Request heads are usually a few hundred bytes.
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Serves one new connection: a WebSocket session here, or HTTP through
/// `http` (actix-web). Until it is an authenticated WebSocket it holds a
/// place in its worker's `pending` budget.
pub async fn serve<S>(
    mut stream: TcpStream,
    transport: Arc<Transport>,
    http: &S,
    pending: &Rc<Pending>,
) -> Result<(), S::Error>
where
    S: Service<(Replay, Protocol, Option<SocketAddr>), Response = ()>,
{
    let _ = stream.set_nodelay(true);
    let hangup = Arc::new(Hangup::default());
    // A connection still sending its first head is idle: it may be shed.
    let Some(admission) = pending.admit(hangup.clone()) else {
        log::debug!("every pending connection is busy with a request: dropped a new one");
        return Ok(());
    };
    // A new connection has the auth timeout to send its request head and
    // then `connection.init`: the clock starts now.
    let auth_deadline = Instant::now() + transport.node.limits.auth_timeout;
    let mut buf = BytesMut::new();
    match first_head(&mut stream, &mut buf, &transport, &hangup, auth_deadline).await {
        Some(Some(upgrade)) => {
            // Copied so the head buffer is freed now, not when the session
            // ends.
            let early_frames = Bytes::copy_from_slice(&buf[upgrade.head_len..]);
            drop(buf);
            let session = SessionStart { upgrade, early_frames, auth_deadline, hangup, admission };
            run_session(stream, session, &transport).await;
            Ok(())
        }
        Some(None) => {
            let peer = stream.peer_addr().ok();
            let clock = HttpClock::new(transport.http_timeout);
            admission.track(clock.clone());
            let replay = Replay::new(buf.freeze(), stream, transport.write_stall_limit(), hangup, clock, admission);
            // Boxed: the HTTP dispatcher's state is large, and inline it
            // would make every WebSocket connection's task as large.
            Box::pin(http.call((replay, Protocol::Http1, peer))).await
        }
        // Closed, failed, shed, or too slow to send a request: nothing to
        // answer.
        None => Ok(()),
    }
}

/// Reads the first request head within the HTTP timeout (and the auth
/// timeout): `Some(Some)` is an upgrade the transport serves, `Some(None)`
/// leaves the head in `buf` for actix-web, `None` ends the connection. A
/// function of its own so its state is not part of a session's.
async fn first_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    transport: &Transport,
    hangup: &Hangup,
    auth_deadline: Instant,
) -> Option<Option<Upgrade>> {
    let peer = stream.peer_addr().ok().map(|p| p.ip());
    // The first head has the HTTP timeout, like every later one; a
    // WebSocket then has what is left of the auth timeout to authenticate.
    let head_deadline = auth_deadline.min(Instant::now() + transport.http_timeout);
    let head = async {
        tokio::select! {
            biased;
            _ = hangup.wait() => Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
            head = read_head(stream, buf, transport, peer) => head,
        }
    };
    tokio::time::timeout_at(head_deadline.into(), head).await.ok()?.ok()
}

/// What a session starts from, once its upgrade is accepted.
struct SessionStart {
    upgrade: Upgrade,
    early_frames: Bytes,
    auth_deadline: Instant,
    hangup: Arc<Hangup>,
    admission: Admission,
}

/// Answers the upgrade and runs the session until it ends or is hung up.
async fn run_session(stream: TcpStream, start: SessionStart, transport: &Transport) {
    let SessionStart { upgrade, early_frames, auth_deadline, hangup, admission } = start;
    let (read, mut write) = stream.into_split();
    let stall = transport.write_stall_limit();
    let mut response = Vec::with_capacity(160);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    response.extend_from_slice(&upgrade.accept);
    response.extend_from_slice(b"\r\n\r\n");
    if !matches!(tokio::time::timeout(stall, write.write_all(&response)).await, Ok(Ok(()))) {
        return;
    }
    drop(response);

    let node = transport.node.clone();
    let max_frame = node.limits.max_frame_bytes;
    let limits = FrameLimits::of(&node.limits);
    let session = Session::new(node, upgrade.client_id, Some(hangup.clone()), auth_deadline, upgrade.client_ip);
    let input = FrameAligned::new(SocketReader { read }, early_frames, limits, hangup.clone()).admitted(admission);
    // Pinned here, once: taken by value, `pump` would hold a second copy
    // in its own state (an async fn keeps its arguments' slots), and this
    // future is the biggest part of every connection's memory.
    let output = std::pin::pin!(WebsocketContext::with_codec(session, input, Codec::new().max_size(max_frame)));
    if pump(output, &mut write, &hangup, stall).await {
        linger(&mut write, &hangup).await;
    }
}

/// Writes what the session produces until it ends (true: it closed
/// cleanly) or the connection must go (false). The session is polled again
/// only once its last chunk is written: a client that does not read holds up
/// its own session, nothing else.
async fn pump(
    mut output: Pin<&mut impl Stream<Item = Result<Bytes, actix_web::Error>>>,
    write: &mut OwnedWriteHalf,
    hangup: &Hangup,
    stall: Duration,
) -> bool {
    loop {
        let chunk = tokio::select! {
            biased;
            _ = hangup.wait() => return false,
            next = std::future::poll_fn(|cx| output.as_mut().poll_next(cx)) => match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(_)) => return false,
                None => return true,
            },
        };
        // Most writes go through at once: try without arming a timer, and
        // wait (with the stall deadline) only for what the socket left.
        let rest = match write.try_write(&chunk) {
            Ok(n) => &chunk[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => &chunk[..],
            Err(_) => return false,
        };
        if rest.is_empty() {
            continue;
        }
        tokio::select! {
            biased;
            _ = hangup.wait() => return false,
            written = tokio::time::timeout(stall, write.write_all(rest)) => {
                if !matches!(written, Ok(Ok(()))) {
                    return false;
                }
            }
        }
    }
}

/// After the session's close frame: half-close, then read and discard until
/// the client closes too (or briefly), so unread input does not make the
/// kernel reset the connection before the close frame is delivered.
async fn linger(write: &mut OwnedWriteHalf, hangup: &Hangup) {
    let _ = write.shutdown().await;
    let stream: &TcpStream = write.as_ref();
    let drain = async {
        let mut sink = [0u8; 64];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                // The client closed too.
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    // A hang-up (a shed connection, shutdown) ends it at once: the
    // descriptor is wanted elsewhere.
    tokio::select! {
        _ = hangup.wait() => {}
        _ = tokio::time::timeout(LINGER, drain) => {}
    }
}

/// The socket's read half as a byte stream. Each read goes into a stack
/// buffer and is copied out at its exact size, so an idle connection keeps
/// no read buffer.
struct SocketReader {
    read: OwnedReadHalf,
}

impl Stream for SocketReader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.get_mut().read).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(PayloadError::Io(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Feeds a WebSocket decoder one complete frame at a time.
///
/// actix-web-actors' decoder reads its input until the input has nothing
/// more, then decodes a single frame; fed a raw socket, a client sending many
/// small frames makes it buffer everything it sends. And it refuses an
/// oversized frame only once the whole frame has arrived, buffering it all.
/// This adapter yields one whole frame, then reports "nothing more" once
/// (waking its task), so the decoder holds about one frame and what the
/// client sends beyond it waits in the kernel, pushing back on the client. A
/// frame whose header declares more than `max_frame` bytes ends the input at
/// once with [`FRAME_TOO_LARGE`], before any of it is buffered (close 1009).
/// Until the session has authenticated (as its [`Hangup`] says), the limit
/// is the small one for `connection.init`, so a socket that never
/// authenticates can make the server hold a few KiB at most.
pub struct FrameAligned<S> {
    inner: S,
    buf: BytesMut,
    limits: FrameLimits,
    session: Arc<Hangup>,
    /// The connection's place among those that are not clients yet, given
    /// back once the session has authenticated.
    admission: Option<Admission>,
    paused: bool,
    refused: bool,
}

/// The largest frame payloads [`FrameAligned`] lets through (32 bits: one
/// more word per connection would be paid by every idle one).
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Once the session has authenticated.
    pub authenticated: u32,
    /// Before: `connection.init` and nothing else.
    pub before: u32,
}

impl FrameLimits {
    /// The limits of `node`'s sessions.
    pub fn of(limits: &nova_actors::node::Limits) -> FrameLimits {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        FrameLimits { authenticated: clamp(limits.max_frame_bytes), before: clamp(limits.max_init_frame_bytes) }
    }
}

impl<S> FrameAligned<S> {
    /// Wraps `inner`; `early` holds bytes already read from it; `session`
    /// tells when the session has authenticated.
    pub fn new(inner: S, early: Bytes, limits: FrameLimits, session: Arc<Hangup>) -> Self {
        let buf = BytesMut::from(&early[..]);
        FrameAligned { inner, buf, limits, session, admission: None, paused: false, refused: false }
    }

    /// Holds `admission` until the session has authenticated.
    pub fn admitted(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    fn max_frame(&mut self) -> usize {
        let limit = if self.session.is_authenticated() {
            self.admission = None;
            self.limits.authenticated
        } else {
            self.limits.before.min(self.limits.authenticated)
        };
        limit as usize
    }
}

/// The total length of the first frame in `buf` and whether its payload is
/// over `max_frame`, once its header is complete.
fn frame_len(buf: &[u8], max_frame: usize) -> Option<(usize, bool)> {
    let second = *buf.get(1)?;
    let (ext, payload) = match second & 0x7f {
        126 => (2, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as u64),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (8, u64::from_be_bytes(bytes))
        }
        n => (0, n as u64),
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let header = 2 + ext + mask;
    if payload > max_frame as u64 {
        return Some((header, true));
    }
    Some((header + payload as usize, false))
}

impl<S> Stream for FrameAligned<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(None);
        }
        if this.paused {
            this.paused = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let max_frame = this.max_frame();
        loop {
            match frame_len(&this.buf, max_frame) {
                Some((_, true)) => {
                    this.refused = true;
                    this.buf = BytesMut::new();
                    let error = io::Error::new(io::ErrorKind::InvalidData, FRAME_TOO_LARGE);
                    return Poll::Ready(Some(Err(PayloadError::Io(error))));
                }
                Some((len, false)) if this.buf.len() >= len => {
                    let frame = this.buf.split_to(len).freeze();
                    if this.buf.is_empty() {
                        // Release the allocation: idle connections hold none.
                        this.buf = BytesMut::new();
                    }
                    this.paused = true;
                    return Poll::Ready(Some(Ok(frame)));
                }
                _ => {}
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.buf.extend_from_slice(&bytes),
                other => return other,
            }
        }
    }
}

/// A connection handed to actix-web: first the bytes the transport already
/// read, then the socket. Like a session's own transport, it ends the
/// connection when a write makes no progress for too long or when the
/// registry hangs it up.
///
/// It also keeps the HTTP clock ([`HttpClock`]): a read that has waited for
/// the client past the clock's deadline fails, and actix-web drops the
/// connection. Writing the response counts as progress, so a large answer
/// read slowly is bounded by the write stall limit, not by the clock.
pub struct Replay {
    head: Bytes,
    io: TcpStream,
    hangup: Arc<Hangup>,
    stall_limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    clock: Rc<HttpClock>,
    /// Fires at the clock's deadline.
    read_timer: Option<Pin<Box<Sleep>>>,
    /// When a write last made progress.
    wrote_at: Instant,
    admission: Option<Admission>,
}

impl Replay {
    fn new(
        head: Bytes,
        io: TcpStream,
        stall_limit: Duration,
        hangup: Arc<Hangup>,
        clock: Rc<HttpClock>,
        admission: Admission,
    ) -> Self {
        Replay {
            head,
            io,
            hangup,
            stall_limit,
            stalled: None,
            clock,
            read_timer: None,
            wrote_at: Instant::now(),
            admission: Some(admission),
        }
    }

    /// This connection's hang-up (for a WebSocket upgraded on it).
    pub fn hangup(&self) -> &Arc<Hangup> {
        &self.hangup
    }

    /// This connection's request clock.
    pub fn clock(&self) -> &Rc<HttpClock> {
        &self.clock
    }

    /// When the client must have sent what the server waits for, if it is
    /// waiting for the client.
    fn read_deadline(&self) -> Option<Instant> {
        let deadline = self.clock.deadline()?;
        Some(deadline.max(self.wrote_at + self.clock.timeout()))
    }

    /// Fails a read that has waited past the deadline; arms the timer that
    /// wakes the connection then.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.read_deadline() else {
            self.read_timer = None;
            return Ok(());
        };
        let deadline = TokioInstant::from_std(deadline);
        let timer = self.read_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::TimedOut, "HTTP request or keep-alive timeout")),
            Poll::Pending => Ok(()),
        }
    }

    fn hung_up(&self, cx: &mut Context<'_>) -> bool {
        self.hangup.poll_triggered(cx).is_ready()
    }

    /// A write, unless the connection was hung up; a write blocked for
    /// longer than the stall limit fails.
    fn guarded_write(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.hung_up(cx) {
            return Poll::Ready(Err(hung_up_error()));
        }
        match write(Pin::new(&mut self.io), cx) {
            Poll::Pending => self.poll_stall(cx).map(Err),
            done => {
                self.stalled = None;
                self.wrote_at = Instant::now();
                done
            }
        }
    }

    /// A write is blocked: has it been for too long?
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.stall_limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "write stalled")),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn hung_up_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "hung up by the server")
}

impl AsyncRead for Replay {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.hung_up(cx) {
            return Poll::Ready(Err(hung_up_error()));
        }
        if this.admission.is_some() && this.hangup.is_authenticated() {
            // A WebSocket upgraded on this connection has authenticated.
            this.admission = None;
        }
        if let Err(e) = this.poll_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        if this.head.has_remaining() {
            let n = this.head.len().min(buf.remaining());
            buf.put_slice(&this.head[..n]);
            this.head.advance(n);
            if this.head.is_empty() {
                this.head = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().guarded_write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().guarded_write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str, origins: &Origins) -> Option<Upgrade> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEAD_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head.as_bytes()) {
            Ok(httparse::Status::Complete(len)) => accept_upgrade(&req, len, origins),
            other => panic!("not a complete head: {other:?}"),
        }
    }

    fn upgrade_to(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn accepts_upgrades_to_the_ws_paths() {
        let no_browsers = Origins::default();
        let u = parse(&upgrade_to("/ws", ""), &no_browsers).unwrap();
        assert!(u.client_id.is_none());
        assert_eq!(&u.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455 example key");
        let with_id = parse(&upgrade_to("/ws/tab-1?x=1", ""), &no_browsers).unwrap();
        assert_eq!(with_id.client_id.as_deref(), Some("tab-1"));
    }

    #[test]
    fn leaves_everything_else_to_actix_web() {
        let no_browsers = Origins::default();
        let paths = ["/ws/", "/ws/metrics", "/ws/connections", "/ws/a/b", "/ws/bad%20id", "/wsx", "/api/publish"];
        for path in paths {
            assert!(parse(&upgrade_to(path, ""), &no_browsers).is_none(), "{path}");
        }
        let plain = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(parse(plain, &no_browsers).is_none());
        let post = upgrade_to("/ws", "").replacen("GET", "POST", 1);
        assert!(parse(&post, &no_browsers).is_none());
        let old = upgrade_to("/ws", "").replace("Version: 13", "Version: 99");
        assert!(parse(&old, &no_browsers).is_none());
    }

    #[test]
    fn refused_origins_go_to_actix_web_for_the_error() {
        let prod = Origins::new(&["https://app.example.com".into()], false);
        assert!(parse(&upgrade_to("/ws", "Origin: https://app.example.com\r\n"), &prod).is_some());
        assert!(parse(&upgrade_to("/ws", "Origin: https://evil.example.com\r\n"), &prod).is_none());
        assert!(parse(&upgrade_to("/ws", ""), &prod).is_some(), "no Origin: not a browser");
    }

    #[test]
    fn client_ids() {
        assert!(valid_client_id("tab_1.a-b"));
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }

    #[test]
    fn frame_lengths() {
        let max = 1000;
        assert_eq!(frame_len(&[0x81], max), None);
        assert_eq!(frame_len(&[0x81, 0x85], max), Some((2 + 4 + 5, false)), "masked, 5 bytes");
        assert_eq!(frame_len(&[0x81, 0x05], max), Some((2 + 5, false)), "unmasked");
        assert_eq!(frame_len(&[0x81, 0xfe, 0x01], max), None, "16-bit length incomplete");
        assert_eq!(frame_len(&[0x81, 0xfe, 0x01, 0x00], max), Some((4 + 4 + 256, false)));
        assert_eq!(frame_len(&[0x81, 0xfe, 0x04, 0x00], max), Some((8, true)), "1024 > max");
        let huge = [0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(frame_len(&huge, max), Some((14, true)));
    }

    /// A source that yields fixed chunks, then ends.
    struct Chunks(Vec<Bytes>);

    impl Stream for Chunks {
        type Item = Result<Bytes, PayloadError>;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(if self.0.is_empty() { None } else { Some(Ok(self.0.remove(0))) })
        }
    }

    #[test]
    fn frame_aligned_yields_whole_frames_one_at_a_time() {
        // Three 2-byte unmasked frames split awkwardly across chunks.
        let chunks = vec![Bytes::from_static(&[0x89, 0x00, 0x8a]), Bytes::from_static(&[0x00, 0x81, 0x00])];
        let limits = FrameLimits { authenticated: 100, before: 100 };
        let mut aligned = FrameAligned::new(Chunks(chunks), Bytes::from_static(&[]), limits, Arc::default());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut frames = Vec::new();
        loop {
            match Pin::new(&mut aligned).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => frames.push(frame),
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                // The pause after each frame.
                Poll::Pending => {}
            }
        }
        assert_eq!(
            frames,
            vec![Bytes::from_static(&[0x89, 0]), Bytes::from_static(&[0x8a, 0]), Bytes::from_static(&[0x81, 0])]
        );
    }
}
