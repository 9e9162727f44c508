//! The test harness: a real server on an ephemeral port, real WebSocket
//! clients and a real HTTP client.
//!
//! Each [`TestServer`] runs `nova_realtime::server` in a thread of its own
//! with its own actix `System`, exactly as the binary does, and stops when
//! dropped. [`Client`] is a tokio-tungstenite connection with helpers that
//! wait for frames with a deadline instead of sleeping.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use nova_realtime::config::{Args, Config};
use nova_realtime::server::{self, Control};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The JWT secret every test server uses.
pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "integration-admin-token";
/// The cluster secret of every node [`TestServer::node`] starts.
pub const CLUSTER_SECRET: &str = "integration-cluster-secret-0123456789abcdef";
/// How long a test waits for something it expects.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A running server, stopped on drop.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config and prompts directories, unless the test chose its own.
    pub dirs: Option<tempfile::TempDir>,
    control: Control,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with the test defaults: development mode asked for
    /// explicitly (so the `development` key works beside JWTs), a JWT
    /// secret, a known admin token, two workers.
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// A server with the test defaults changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Args)) -> TestServer {
        let mut args = Args {
            development: true,
            jwt_secret: Some(JWT_SECRET.into()),
            admin_token: Some(ADMIN_TOKEN.into()),
            workers: Some(2),
            drain_timeout_secs: Some(1),
            ..Args::default()
        };
        tweak(&mut args);
        if args.redis_url.is_none() && std::env::var("NOVA_TEST_BROKER").as_deref() == Ok("redis") {
            // The suites that run on both brokers (scripts/test): a node on
            // the shared Redis, alone under a prefix of its own.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            args.redis_url = Some(shared_redis_url().to_owned());
            args.redis_prefix = Some(format!("e{}-{n}:", std::process::id()));
            args.cluster_secret = Some(CLUSTER_SECRET.into());
        }
        // Settings files of its own, so no test reads or writes the
        // repository's configs/ and prompts/.
        let dirs = match (&args.config_dir, &args.prompts_dir) {
            (None, None) => {
                let dirs = tempfile::tempdir().expect("a temporary directory");
                args.config_dir = Some(dirs.path().join("configs"));
                args.prompts_dir = Some(dirs.path().join("prompts"));
                Some(dirs)
            }
            _ => None,
        };
        let config = Config::resolve(args, Args::default()).expect("test configuration");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let running = server::build(listener, config).expect("build server");
                ready_tx.send((running.addr, running.control())).expect("report address");
                if let Err(e) = running.run().await {
                    eprintln!("test server stopped with an error: {e}");
                }
            });
            let _ = done_tx.send(());
        });
        let (addr, control) = ready_rx.recv().expect("server started");
        TestServer { addr, dirs, control, done, thread: Some(thread) }
    }

    /// The control handle (graceful shutdown tests).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// `ws://addr/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A WebSocket on `/ws`, not yet authenticated.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url("/ws")).await
    }

    /// A connection authenticated with the development key as `user`.
    pub async fn connect_as(&self, user: &str) -> Client {
        let mut client = self.connect().await;
        client.init(json!({"api_key": "development", "user_id": user})).await;
        client
    }

    /// A connection authenticated with the development key as `user` and
    /// subscribed to `channels` (each `channel.subscribed` awaited).
    pub async fn subscriber(&self, user: &str, channels: &[&str]) -> Client {
        let mut client = self.connect_as(user).await;
        client.subscribe(channels).await;
        client
    }

    /// `POST path` with the admin token; status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_with(path, body, Some(ADMIN_TOKEN)).await
    }

    /// `POST path` with the given bearer token, or none.
    pub async fn post_with(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = awc::Client::default().post(self.url(path)).timeout(DEADLINE);
        if let Some(token) = token {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut res = req.send_json(&body).await.expect("POST");
        let status = res.status().as_u16();
        let body = res.json::<Value>().limit(16 * 1024 * 1024).await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET path` with the admin token.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, Some(ADMIN_TOKEN)).await
    }

    /// `GET path` with the given bearer token, or none.
    pub async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = awc::Client::default().get(self.url(path)).timeout(DEADLINE);
        if let Some(token) = token {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut res = req.send().await.expect("GET");
        let status = res.status().as_u16();
        let body = res.json::<Value>().limit(16 * 1024 * 1024).await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Publishes an event through the REST API and returns its id.
    pub async fn publish(&self, channel: &str, kind: &str, data: Value) -> String {
        let (status, body) = self.post("/api/publish", json!({"channel": channel, "type": kind, "data": data})).await;
        assert_eq!(status, 202, "publish answered {body}");
        body["id"].as_str().expect("event id").to_owned()
    }

    /// A WebSocket on `path` (e.g. `/ws/tab1`), not yet authenticated.
    pub async fn connect_path(&self, path: &str) -> Client {
        Client::connect(&self.ws_url(path)).await
    }

    /// A WebSocket upgrade of `path` with extra request headers (e.g.
    /// `Origin`): the client, or the status and JSON body of the refusal.
    pub async fn try_connect(&self, path: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, Value)> {
        let mut request = self.ws_url(path).into_client_request().expect("a WebSocket request");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let attempt = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake answered in time");
        match attempt {
            Ok((ws, _)) => Ok(Client::from_stream(ws)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok());
                Err((response.status().as_u16(), body.unwrap_or(Value::Null)))
            }
            Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
        }
    }

    /// A WebSocket on `/ws` whose socket has a receive buffer of about
    /// `bytes` (set before connecting, so the TCP window stays small): a
    /// client that can be made to stop reading without the kernel soaking up
    /// megabytes for it.
    pub async fn connect_with_recv_buffer(&self, bytes: u32) -> Client {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket.set_recv_buffer_size(bytes).expect("set SO_RCVBUF");
        let stream = tokio::time::timeout(DEADLINE, socket.connect(self.addr))
            .await
            .expect("connect in time")
            .expect("TCP connect");
        let (ws, _) = tokio::time::timeout(
            DEADLINE,
            tokio_tungstenite::client_async(self.ws_url("/ws"), MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("handshake in time")
        .expect("WebSocket handshake");
        Client::from_stream(ws)
    }

    /// `POST path` with a raw body and content type, and the given bearer
    /// token or none; status and JSON body (`Null` when not JSON).
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = awc::Client::default()
            .post(self.url(path))
            .timeout(DEADLINE)
            .insert_header(("Content-Type", content_type.to_owned()));
        if let Some(token) = token {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut res = req.send_body(body.to_owned()).await.expect("POST");
        let status = res.status().as_u16();
        let body = res.json::<Value>().limit(16 * 1024 * 1024).await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `method path` with the admin token and a raw body; status and JSON.
    pub async fn send_raw(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let req = awc::Client::default()
            .request(method, self.url(path))
            .timeout(DEADLINE)
            .insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
            .insert_header(("Content-Type", content_type));
        let mut res = req.send_body(body.to_owned()).await.expect("HTTP request");
        let status = res.status().as_u16();
        let body = res.json::<Value>().limit(16 * 1024 * 1024).await.unwrap_or(Value::Null);
        (status, body)
    }

    /// A request with any method and no body, with the admin token.
    pub async fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let req = awc::Client::default()
            .request(method, self.url(path))
            .timeout(DEADLINE)
            .insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")));
        let mut res = req.send().await.expect("HTTP request");
        let status = res.status().as_u16();
        let body = res.json::<Value>().limit(16 * 1024 * 1024).await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET /metrics` (Prometheus) with `token`: status and body text.
    pub async fn scrape(&self, token: Option<&str>) -> (u16, String) {
        let mut req = awc::Client::default().get(self.url("/metrics"));
        if let Some(token) = token {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut res = req.send().await.expect("GET /metrics");
        let body = res.body().await.expect("body");
        (res.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /ws/metrics`.
    pub async fn metrics(&self) -> Value {
        let (status, metrics) = self.get("/ws/metrics").await;
        assert_eq!(status, 200, "metrics answered {metrics}");
        metrics
    }

    /// Waits until the registry counts exactly `n` authenticated connections.
    pub async fn wait_for_connections(&self, n: u64) -> Value {
        self.wait_for_metrics(&format!("{n} connections"), |m| m["connections"] == n).await
    }

    /// Polls `GET /ws/metrics` until `done` holds for it; the metrics are
    /// the observable state, so this waits on it rather than sleeping.
    pub async fn wait_for_metrics(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, metrics) = self.get("/ws/metrics").await;
            assert_eq!(status, 200);
            if done(&metrics) {
                return metrics;
            }
            assert!(tokio::time::Instant::now() < until, "timed out waiting for {what}: {metrics}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // `stop` sends its command when called; the future only waits.
        drop(self.control.stop_now());
        if self.done.recv_timeout(Duration::from_secs(10)).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// A JWT signed with [`JWT_SECRET`] for `sub`, valid for `ttl_secs` (negative:
/// already expired), with the given claims merged in.
pub fn jwt(sub: &str, ttl_secs: i64, extra: Value) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut claims = json!({"sub": sub, "exp": now + ttl_secs});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign JWT")
}

/// What a connection saw when it ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code.
    Closed(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

/// A real WebSocket client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Client {
    /// Opens a WebSocket to `url`.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        Client { ws, next_id: 100 }
    }

    /// Wraps an already-open stream (custom sockets).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { ws, next_id: 100 }
    }

    /// A fresh request id.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send text frame");
    }

    /// Sends a raw frame.
    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send frame");
    }

    /// Sends a raw frame; an error (the server already closed) is returned,
    /// not a test failure.
    pub async fn try_send_message(&mut self, message: Message) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Sends a request of `kind` with `data` (and `channel`), returning its id.
    pub async fn request(&mut self, kind: &str, channel: Option<&str>, data: Value) -> String {
        let id = self.id();
        let mut frame = json!({"id": id, "type": kind, "data": data});
        if let Some(channel) = channel {
            frame["channel"] = json!(channel);
        }
        self.send(frame).await;
        id
    }

    /// The next text frame as JSON, within the deadline. Pings are answered
    /// by tungstenite; a close or end of stream fails the test.
    pub async fn recv(&mut self) -> Value {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let next = tokio::time::timeout_at(until, self.ws.next()).await.expect("a frame in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("frame is JSON");
                    assert_matches_catalog(&frame);
                    return frame;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be of type `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "unexpected frame: {frame}");
        frame
    }

    /// Authenticates with `data` and returns the `connection.ack`.
    pub async fn init(&mut self, data: Value) -> Value {
        let id = self.request("connection.init", None, data).await;
        let ack = self.recv_type("connection.ack").await;
        assert_eq!(ack["reply_to"], id.as_str());
        ack
    }

    /// Subscribes to `channels` and waits for a `channel.subscribed` for each.
    pub async fn subscribe(&mut self, channels: &[&str]) -> Vec<Value> {
        let id = self.request("channel.subscribe", None, json!({"channels": channels})).await;
        let mut acks = Vec::new();
        for _ in channels {
            let ack = self.recv_type("channel.subscribed").await;
            assert_eq!(ack["reply_to"], id.as_str());
            acks.push(ack);
        }
        acks
    }

    /// Round-trips a `connection.heartbeat` and asserts its reply is the
    /// next frame. A session handles deliveries already in its mailbox before
    /// the next client frame, so this proves nothing else was on its way to
    /// this client when it was sent.
    pub async fn assert_nothing_pending(&mut self) {
        let id = self.request("connection.heartbeat", None, json!({})).await;
        let reply = self.recv().await;
        assert_eq!(reply["type"], "connection.heartbeat", "expected nothing before the heartbeat reply, got {reply}");
        assert_eq!(reply["reply_to"], id.as_str());
    }

    /// The next WebSocket message of any kind (pings and pongs included),
    /// within the deadline; the end of the stream fails the test.
    pub async fn next_message(&mut self) -> Message {
        match tokio::time::timeout(DEADLINE, self.ws.next()).await.expect("a message in time") {
            Some(Ok(message)) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Waits for the next WebSocket ping from the server (tungstenite answers
    /// it); a text frame or the end of the connection fails the test.
    pub async fn recv_ping(&mut self) {
        let until = tokio::time::Instant::now() + DEADLINE;
        match tokio::time::timeout_at(until, self.ws.next()).await.expect("a ping in time") {
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    /// The next frame, which must be an `error` with `data.code == code`.
    pub async fn expect_error(&mut self, code: u16) -> Value {
        let frame = self.recv_type("error").await;
        assert_eq!(frame["data"]["code"], code, "unexpected error: {frame}");
        assert!(frame["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {frame}");
        frame
    }

    /// Closes the connection normally (1000) and waits for the server's
    /// answer or the end of the stream.
    pub async fn close(&mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await.expect("the close answered in time") {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Says how the connection ended, reading the raw socket: unlike
    /// [`Client::ended`], it never writes (tungstenite answers every ping it
    /// reads, and a pong written to a socket the server has already closed
    /// makes the kernel reset the connection before the buffered close frame
    /// is read). For clients that stopped reading. Bytes tungstenite has
    /// already buffered are not seen, so call it on a client whose last read
    /// was a reply the server sent on its own.
    pub async fn ended_raw(&mut self) -> Ended {
        self.drain_raw().await.1
    }

    /// [`Client::ended_raw`], with the text frames read on the way (JSON).
    pub async fn drain_raw(&mut self) -> (Vec<Value>, Ended) {
        let MaybeTlsStream::Plain(stream) = self.ws.get_mut() else { panic!("plain TCP expected") };
        let until = tokio::time::Instant::now() + DEADLINE;
        let mut buf: Vec<u8> = Vec::new();
        let mut frames = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let mut at = 0;
            while let Some((opcode, payload, len)) = raw_frame(&buf[at..]) {
                if opcode == 0x8 {
                    let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    return (frames, Ended::Closed(code));
                }
                if opcode == 0x1 {
                    let frame: Value = serde_json::from_slice(payload).expect("frame is JSON");
                    assert_matches_catalog(&frame);
                    frames.push(frame);
                }
                at += len;
            }
            buf.drain(..at);
            match tokio::time::timeout_at(until, stream.read(&mut chunk)).await.expect("the connection to end in time")
            {
                Ok(0) | Err(_) => return (frames, Ended::Dropped),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads every remaining text frame until the connection ends: the
    /// frames and how it ended.
    pub async fn drain(&mut self) -> (Vec<Value>, Ended) {
        let until = tokio::time::Instant::now() + DEADLINE;
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await.expect("the connection to end in time") {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("frame is JSON");
                    assert_matches_catalog(&frame);
                    frames.push(frame);
                }
                Some(Ok(Message::Close(Some(frame)))) => return (frames, Ended::Closed(u16::from(frame.code))),
                Some(Ok(Message::Close(None))) => return (frames, Ended::Closed(u16::from(CloseCode::Status))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (frames, Ended::Dropped),
            }
        }
    }

    /// Reads until the connection ends and says how.
    pub async fn ended(&mut self) -> Ended {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await.expect("the connection to end in time") {
                Some(Ok(Message::Close(Some(frame)))) => return Ended::Closed(u16::from(frame.code)),
                Some(Ok(Message::Close(None))) => return Ended::Closed(u16::from(CloseCode::Status)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }

    /// The end the server announces: the next frame must be a
    /// `connection.error` with `data.code == code` and a message, and the
    /// connection must then close with `code`. Returns the
    /// `connection.error`.
    pub async fn expect_closed_with(&mut self, code: u16) -> Value {
        let notice = self.recv_type("connection.error").await;
        assert_connection_error(&notice, code);
        assert_eq!(self.expect_close().await, code, "after {notice}");
        notice
    }

    /// Reads until a close frame and returns its code; skips other frames.
    pub async fn expect_close(&mut self) -> u16 {
        match self.ended().await {
            Ended::Closed(code) => code,
            Ended::Dropped => panic!("connection ended without a close frame"),
        }
    }
}

/// One unmasked server frame at the start of `buf`: opcode, payload and the
/// frame's whole length, or `None` if `buf` does not hold all of it yet.
fn raw_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (header, len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize),
        126 | 127 => return None,
        n => (2, n as usize),
    };
    let end = header + len;
    (buf.len() >= end).then(|| (opcode, &buf[header..end], end))
}

/// Asserts `frame` is the `connection.error` announcing close `code`.
pub fn assert_connection_error(frame: &Value, code: u16) {
    assert_eq!(frame["type"], "connection.error", "{frame}");
    assert_eq!(frame["data"]["code"], code, "{frame}");
    assert!(frame["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {frame}");
    assert!(frame["data"]["reconnect"].is_boolean(), "{frame}");
    assert_eq!(frame.get("reply_to"), None, "a connection.error answers no request: {frame}");
    assert_fresh_timestamp(frame);
}

/// Every frame a client receives whose type is in the event catalog must
/// match its schema: the server's own frames included, so every test checks
/// the server keeps the contract it publishes.
pub fn assert_matches_catalog(frame: &Value) {
    use nova_actors::catalog::{self, Sender};
    let Some(kind) = frame["type"].as_str() else { panic!("a frame without a type: {frame}") };
    let Some(event) = catalog::find(kind) else { return };
    let data = frame.get("data").cloned().unwrap_or(Value::Null);
    let sender = [Sender::Server, Sender::Backend].into_iter().find(|s| event.sent_by(*s));
    let Some(sender) = sender else { panic!("a client received '{kind}', which only clients send: {frame}") };
    if let Err(refusal) = catalog::check(kind, sender, &data) {
        panic!("the server sent a '{kind}' its own catalog refuses ({refusal}): {frame}");
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Parses the server's timestamp format, RFC 3339 in UTC with milliseconds
/// (`2024-05-01T12:34:56.789Z`), into milliseconds since the epoch; `None`
/// for anything else.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = &s[from..to];
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok()).flatten()
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// Asserts `frame` carries a server timestamp close to now.
pub fn assert_fresh_timestamp(frame: &Value) {
    let ts = frame["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {frame}"));
    let at = parse_timestamp(ts).unwrap_or_else(|| panic!("timestamp '{ts}' is not RFC 3339 UTC with milliseconds"));
    assert!((at - now_ms()).abs() < 60_000, "timestamp '{ts}' is not close to now");
}

#[test]
fn timestamps_parse_to_epoch_milliseconds() {
    assert_eq!(parse_timestamp("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(parse_timestamp("2000-03-01T00:00:00.001Z"), Some(951_868_800_001));
    assert_eq!(parse_timestamp("2024-02-29T23:59:59.999Z"), Some(1_709_251_199_999));
    for bad in ["2024-02-29T23:59:59Z", "2024-02-29 23:59:59.999Z", "2024-13-01T00:00:00.000Z", "x"] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
}

/// A client frame header for `opcode` declaring `len` payload bytes, masked
/// with `mask` (the payload must be masked with the same key).
pub fn frame_header(opcode: u8, len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut header = vec![0x80 | opcode];
    match len {
        0..=125 => header.push(0x80 | len as u8),
        126..=0xffff => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&len.to_be_bytes());
        }
    }
    header.extend_from_slice(&mask);
    header
}

/// A whole masked client frame.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x3a, 0x91, 0x07, 0xc4];
    let mut frame = frame_header(opcode, payload.len() as u64, mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A WebSocket client on a bare socket, for sending what no library would:
/// floods, lying headers. It reads only when asked.
pub struct RawClient {
    /// The socket, after the handshake.
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to `addr` and completes the handshake on `/ws`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let head = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        tcp.write_all(head.as_bytes()).await.expect("send the upgrade");
        let mut client = RawClient { tcp, buf: Vec::new() };
        let until = tokio::time::Instant::now() + DEADLINE;
        while !client.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            client.fill(until).await.expect("a handshake answer");
        }
        let end = client.buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
        assert!(client.buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&client.buf[..end]));
        client.buf.drain(..end);
        client
    }

    /// Connects and authenticates with the development key as `user`.
    pub async fn authenticated(addr: SocketAddr, user: &str) -> RawClient {
        let mut client = RawClient::connect(addr).await;
        let init = json!({"id": "1", "type": "connection.init", "data": {"api_key": "development", "user_id": user}});
        client.send(&masked_frame(0x1, init.to_string().as_bytes())).await;
        let ack = client.next_text().await.expect("an answer to connection.init");
        assert_eq!(ack["type"], "connection.ack", "{ack}");
        client
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    async fn fill(&mut self, until: tokio::time::Instant) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, self.tcp.read(&mut chunk)).await.expect("data in time") {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    /// The next text frame as JSON; `None` if the connection ends first.
    /// Other frames are skipped; a close frame ends it.
    pub async fn next_text(&mut self) -> Option<Value> {
        match self.next_frame_until(|opcode| opcode == 0x1 || opcode == 0x8).await? {
            (0x1, payload) => Some(serde_json::from_slice(&payload).expect("frame is JSON")),
            _ => None,
        }
    }

    /// Reads until the connection ends: the close code, or `None` when it
    /// ended without a close frame.
    pub async fn close_code(&mut self) -> Option<u16> {
        match self.next_frame_until(|opcode| opcode == 0x8).await? {
            (_, payload) if payload.len() >= 2 => Some(u16::from_be_bytes([payload[0], payload[1]])),
            _ => Some(1005),
        }
    }

    async fn next_frame_until(&mut self, wanted: impl Fn(u8) -> bool) -> Option<(u8, Vec<u8>)> {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            while let Some((opcode, payload, len)) = raw_frame(&self.buf) {
                let payload = payload.to_vec();
                self.buf.drain(..len);
                if wanted(opcode) {
                    return Some((opcode, payload));
                }
            }
            self.fill(until).await?;
        }
    }
}

/// A `redis-server` of the test's own on a free port (never the shared one
/// on 6379), stopped on drop. It keeps nothing on disk, so a restart starts
/// empty, as after a crash of a cache.
pub struct RedisServer {
    /// The port it listens on, kept across restarts.
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub fn start() -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = RedisServer { port, child: None, dir };
        server.restart();
        server
    }

    /// A port nothing listens on (yet).
    pub fn unused() -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        RedisServer { port: free_port(), child: None, dir }
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (install it: apt-get install redis-server)");
        self.child = Some(child);
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(mut conn) = self.try_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            assert!(std::time::Instant::now() < until, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL): connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the process: a Redis that
    /// accepts bytes and answers nothing.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success());
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A raw client connection.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().expect("connect to the test redis-server")
    }

    /// `PUBSUB NUMSUB name`: how many connections subscribe to `name`.
    pub fn subscribers(&self, name: &str) -> u64 {
        let (_, n): (String, u64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(name).query(&mut self.connection()).expect("PUBSUB NUMSUB");
        n
    }

    /// `PUBSUB CHANNELS pattern`, sorted.
    pub fn channels(&self, pattern: &str) -> Vec<String> {
        let mut names: Vec<String> =
            redis::cmd("PUBSUB").arg("CHANNELS").arg(pattern).query(&mut self.connection()).expect("PUBSUB CHANNELS");
        names.sort();
        names
    }

    /// `PUBLISH name payload`; how many subscribers Redis handed it to.
    pub fn publish(&self, name: &str, payload: &str) -> u64 {
        redis::cmd("PUBLISH").arg(name).arg(payload).query(&mut self.connection()).expect("PUBLISH")
    }

    /// Polls Redis until `done` holds for what `read` returns (Redis's own
    /// state is what is awaited; there is no event to wait on).
    pub async fn wait_for<T: std::fmt::Debug>(
        &self,
        what: &str,
        read: impl Fn(&Self) -> T,
        done: impl Fn(&T) -> bool,
    ) -> T {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let value = read(self);
            if done(&value) {
                return value;
            }
            assert!(tokio::time::Instant::now() < until, "timed out waiting for {what}: {value:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl TestServer {
    /// A node of a cluster on `redis`, with a short presence TTL.
    pub fn node(redis: &RedisServer, id: &str) -> TestServer {
        let url = redis.url();
        TestServer::with(|a| {
            a.redis_url = Some(url);
            a.node_id = Some(id.into());
            a.redis_presence_ttl_ms = Some(1500);
            a.cluster_secret = Some(CLUSTER_SECRET.into());
        })
    }

    /// `GET /api/mcp` until server `name`'s health status is `status`;
    /// returns its health.
    pub async fn wait_for_health(&self, name: &str, status: &str) -> Value {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (_, body) = self.get("/api/mcp").await;
            let server = body["servers"].as_array().and_then(|s| s.iter().find(|s| s["name"] == name)).cloned();
            if let Some(server) = server.filter(|s| s["health"]["status"] == status) {
                return server["health"].clone();
            }
            assert!(tokio::time::Instant::now() < until, "timed out waiting for '{name}' to be {status}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/mcp` until server `name` has been checked `n` more times
    /// (its `checked_at` changed `n` times).
    pub async fn wait_for_health_checks(&self, name: &str, n: usize) {
        let until = tokio::time::Instant::now() + DEADLINE;
        let mut seen: Vec<Value> = Vec::new();
        loop {
            let (_, body) = self.get("/api/mcp").await;
            let at = body["servers"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name))
                .map(|s| s["health"]["checked_at"].clone())
                .unwrap_or(Value::Null);
            if seen.last() != Some(&at) {
                seen.push(at);
            }
            if seen.len() > n {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "timed out waiting for {n} checks of '{name}'");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/health/redis` until its status is `status`.
    pub async fn wait_for_redis(&self, status: &str) -> Value {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (_, body) = self.get_with("/api/health/redis", None).await;
            if body["status"] == status {
                return body;
            }
            assert!(tokio::time::Instant::now() < until, "timed out waiting for redis '{status}': {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A message in the nodes' own format from node `origin`, sealed with
/// [`CLUSTER_SECRET`] for Redis channel `name` as a real node seals it: what
/// a node with the secret (a buggy or compromised one) could publish.
pub fn sealed(name: &str, origin: &str, event: &str, presence: Option<(&str, bool, u64)>) -> String {
    use nova_actors::cluster::seal::ClusterKey;
    use nova_actors::cluster::wire::{PresenceNote, Wire};
    let key = ClusterKey::new(CLUSTER_SECRET.as_bytes()).expect("a key");
    let wire = Wire::new(origin, key, 1 << 20);
    let frame = nova_actors::protocol::Frame::from_encoded(event, "x.y");
    let bytes = match presence {
        None => wire.event(name, &frame),
        Some((user, joined, seq)) => wire.presence(name, &frame, &PresenceNote { user: user.into(), joined, seq }),
    };
    String::from_utf8(bytes).expect("a node's message is UTF-8")
}

/// One `redis-server` for every test of this process that only needs a
/// Redis of its own prefix (cheaper than a server per test). It runs under
/// a shell that kills it when this process's end of the pipe closes, so it
/// never outlives the test run, however that ends.
pub fn shared_redis_url() -> &'static str {
    /// The URL, and the watchdog shell (with its stdin) kept for the
    /// process's life.
    type Shared = (String, std::sync::Mutex<std::process::Child>);
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    let (url, _) = SHARED.get_or_init(|| {
        let port = free_port();
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pid=$!; \
             read _; kill $pid"
        );
        let child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("start the shared redis-server");
        let url = format!("redis://127.0.0.1:{port}");
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            let ping = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < until, "the shared redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (url, std::sync::Mutex::new(child))
    });
    url
}

/// Which broker a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brokers {
    /// One node, history in memory.
    Memory,
    /// Nodes on the shared Redis, under a prefix of the test's own.
    Redis,
}

/// A deployment of one or more nodes on one broker: for Redis, every node
/// it starts shares a fresh prefix on the shared redis-server.
pub struct Deployment {
    /// The broker.
    pub brokers: Brokers,
    prefix: String,
}

impl Deployment {
    /// A new deployment on `brokers`.
    pub fn new(brokers: Brokers) -> Deployment {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Deployment { brokers, prefix: format!("t{}-{n}:", std::process::id()) }
    }

    /// A node, with `tweak` applied to its settings.
    pub fn node(&self, id: &str, tweak: impl FnOnce(&mut Args)) -> TestServer {
        let (brokers, prefix) = (self.brokers, self.prefix.clone());
        TestServer::with(|a| {
            a.node_id = Some(id.into());
            if brokers == Brokers::Redis {
                a.redis_url = Some(shared_redis_url().to_owned());
                a.redis_prefix = Some(prefix);
                a.redis_presence_ttl_ms = Some(1500);
                a.cluster_secret = Some(CLUSTER_SECRET.into());
            }
            tweak(a);
        })
    }
}

impl TestServer {
    /// Polls `GET /api/channels/{channel}/history` until the channel's
    /// last offset is `top` or more: events published through REST are
    /// numbered later (by the registry, or by Redis through the outbox),
    /// and a test that recovers must know they are in history first.
    pub async fn wait_for_history(&self, channel: &str, top: u64) {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.get(&format!("/api/channels/{channel}/history?limit=1")).await;
            if status == 200 && body["offset"].as_u64() >= Some(top) {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "'{channel}' never reached offset {top}: {body}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The value of sample `name` (with its labels, as written) in a
/// Prometheus exposition.
pub fn prometheus_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
