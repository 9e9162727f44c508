//! The WebSocket transport: the first thing every new TCP connection meets.
//!
//! It reads the connection's first request head. A valid WebSocket upgrade
//! to `/ws` or `/ws/{client_id}` is answered here and its session actor runs
//! directly on the socket. Anything else (REST calls, bad upgrades) is
//! replayed, byte for byte, into the actix-web application, which answers it
//! as usual.
//!
//! Why not let actix-web upgrade: its HTTP/1 dispatcher keeps two 8 KiB
//! buffers, a shutdown signal and its own state for the life of a connection
//! and copies every outgoing chunk once more. For a server whose connections
//! are mostly idle WebSockets that was most of a connection's memory. Here an
//! idle connection holds no buffer at all: input is read into a stack buffer
//! and copied out at its exact size, and each chunk the session produces is
//! written straight from its own bytes.
//!
//! A WebSocket upgrade that arrives later on a kept-alive HTTP connection is
//! still served, by actix-web (`http/ws.rs`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
use nova_actors::session::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::config::Origins;

/// Longest first request head the transport reads; a longer one goes to
/// actix-web, which refuses it.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4 * 1024;

/// Paths under `/ws/` that are admin endpoints, not client ids.
pub const RESERVED_CLIENT_IDS: &[&str] = &["connections", "metrics", "broadcast", "ping"];

/// Client ids from the path: 1–64 characters of `A–Z a–z 0–9 _ . -`; they
/// show up in listings.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What the transport needs from the rest of the server.
pub struct Transport {
    /// The node sessions belong to.
    pub node: Arc<Node>,
    /// Allowed browser origins.
    pub origins: Origins,
}

/// A WebSocket upgrade the transport accepted.
struct Upgrade {
    client_id: Option<Arc<str>>,
    accept: [u8; 28],
    /// Length of the request head; bytes after it are WebSocket frames.
    head_len: usize,
}

/// Checks a complete request head. `None` means "not ours": actix-web
/// answers it, with the right error when it is a bad upgrade.
fn accept_upgrade(req: &httparse::Request<'_, '_>, head_len: usize, origins: &Origins) -> Option<Upgrade> {
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let path = req.path?.split('?').next()?;
    let client_id = match path.strip_prefix("/ws") {
        Some("") | Some("/") => None,
        Some(rest) => {
            let id = rest.strip_prefix('/')?;
            if !valid_client_id(id) || RESERVED_CLIENT_IDS.contains(&id) {
                return None;
            }
            Some(Arc::from(id))
        }
        None => return None,
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
    let key = header("sec-websocket-key")?;
    if let Some(origin) = header("origin") {
        if !HeaderValue::from_bytes(origin).is_ok_and(|o| origins.allows(&o)) {
            return None;
        }
    }
    Some(Upgrade { client_id, accept: hash_key(key), head_len })
}

/// Reads the first request head. `Ok(Some)` is an upgrade the transport
/// serves; `Ok(None)` leaves `buf` holding everything read, for actix-web.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut, origins: &Origins) -> io::Result<Option<Upgrade>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(accept_upgrade(&req, len, origins)),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
            // Malformed, too many headers, too long: actix-web says so.
            _ => return Ok(None),
        }
        // Request heads are usually a few hundred bytes.
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Serves one new connection: a WebSocket session here, or HTTP through
/// `http` (actix-web).
pub async fn serve<S>(mut stream: TcpStream, transport: Arc<Transport>, http: &S) -> Result<(), S::Error>
where
    S: Service<(Replay, Protocol, Option<SocketAddr>), Response = ()>,
{
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut buf = BytesMut::new();
    // A new connection gets the auth timeout to send its request head, as a
    // WebSocket gets it to send `connection.init`.
    let deadline = transport.node.limits.auth_timeout;
    match tokio::time::timeout(deadline, read_head(&mut stream, &mut buf, &transport.origins)).await {
        Ok(Ok(Some(upgrade))) => {
            // Copied so the head buffer is freed now, not when the session
            // ends.
            let early_frames = Bytes::copy_from_slice(&buf[upgrade.head_len..]);
            drop(buf);
            run_session(stream, upgrade, early_frames, transport.node.clone()).await;
            Ok(())
        }
        // Boxed: the HTTP dispatcher's state is large, and inline it would
        // make every WebSocket connection's task as large.
        Ok(Ok(None)) => Box::pin(http.call((Replay { head: buf.freeze(), io: stream }, Protocol::Http1, peer))).await,
        // Closed, failed, or too slow to send a request: nothing to answer.
        Ok(Err(_)) | Err(_) => Ok(()),
    }
}

/// Answers the upgrade and runs the session until it ends or is hung up.
async fn run_session(stream: TcpStream, upgrade: Upgrade, early_frames: Bytes, node: Arc<Node>) {
    let (read, mut write) = stream.into_split();
    let mut response = Vec::with_capacity(160);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    response.extend_from_slice(&upgrade.accept);
    response.extend_from_slice(b"\r\n\r\n");
    if write.write_all(&response).await.is_err() {
        return;
    }
    drop(response);

    let hangup = Arc::new(Hangup::default());
    let max_frame = node.limits.max_frame_bytes;
    let session = Session::new(node, upgrade.client_id, Some(hangup.clone()));
    let input = SocketInput { read, early: early_frames };
    let mut output = std::pin::pin!(WebsocketContext::with_codec(session, input, Codec::new().max_size(max_frame)));
    // The session is polled again only once its last chunk is written: a
    // client that does not read holds up its own session, nothing else.
    loop {
        let chunk = tokio::select! {
            biased;
            _ = hangup.wait() => return,
            next = std::future::poll_fn(|cx| output.as_mut().poll_next(cx)) => match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(_)) | None => return,
            },
        };
        tokio::select! {
            biased;
            _ = hangup.wait() => return,
            written = write.write_all(&chunk) => if written.is_err() { return },
        }
    }
}

/// The socket's read half as the session's input stream. Each read goes into
/// a stack buffer and is copied out at its exact size, so an idle connection
/// keeps no read buffer.
struct SocketInput {
    read: OwnedReadHalf,
    /// Frames that arrived with the request head.
    early: Bytes,
}

impl Stream for SocketInput {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.early))));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut this.read).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(PayloadError::Io(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A connection handed to actix-web: first the bytes the transport already
/// read, then the socket.
pub struct Replay {
    head: Bytes,
    io: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.head.has_remaining() {
            let n = this.head.len().min(buf.remaining());
            buf.put_slice(&this.head[..n]);
            this.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
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
        let mut headers = [httparse::EMPTY_HEADER; 32];
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
        let any = Origins::default();
        let u = parse(&upgrade_to("/ws", ""), &any).unwrap();
        assert!(u.client_id.is_none());
        assert_eq!(&u.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455 example key");
        assert_eq!(parse(&upgrade_to("/ws/tab-1?x=1", ""), &any).unwrap().client_id.as_deref(), Some("tab-1"));
    }

    #[test]
    fn leaves_everything_else_to_actix_web() {
        let any = Origins::default();
        for path in ["/ws/metrics", "/ws/connections", "/ws/a/b", "/ws/bad%20id", "/wsx", "/api/publish", "/health"] {
            assert!(parse(&upgrade_to(path, ""), &any).is_none(), "{path}");
        }
        let plain = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(parse(plain, &any).is_none());
        let post = upgrade_to("/ws", "").replacen("GET", "POST", 1);
        assert!(parse(&post, &any).is_none());
        let old = upgrade_to("/ws", "").replace("Version: 13", "Version: 99");
        assert!(parse(&old, &any).is_none());
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
}
