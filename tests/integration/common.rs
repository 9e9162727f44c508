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
use nova_realtime::config::{Args, Config, FileConfig};
use nova_realtime::server::{self, Control};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The JWT secret every test server uses.
pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "integration-admin-token";
/// How long a test waits for something it expects.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A running server, stopped on drop.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    control: Control,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with the test defaults: development mode (so the
    /// `development` key works), a JWT secret, a known admin token, two
    /// workers.
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// A server with the test defaults changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Args)) -> TestServer {
        let mut args = Args {
            jwt_secret: Some(JWT_SECRET.into()),
            admin_token: Some(ADMIN_TOKEN.into()),
            workers: Some(2),
            drain_timeout_secs: Some(1),
            ..Args::default()
        };
        tweak(&mut args);
        let config = Config::resolve(args, FileConfig::default()).expect("test configuration");
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
        TestServer { addr, control, done, thread: Some(thread) }
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
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("frame is JSON"),
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

    /// Reads until a close frame and returns its code; skips other frames.
    pub async fn expect_close(&mut self) -> u16 {
        match self.ended().await {
            Ended::Closed(code) => code,
            Ended::Dropped => panic!("connection ended without a close frame"),
        }
    }
}
