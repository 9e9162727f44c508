//! What an outside hostile-client test found (issue 8): connections held
//! open on plain HTTP, big frames before authentication, guessing
//! credentials, floods of control and continuation frames, malformed
//! upgrades. Each test fails on the server as it was before its fix.

use std::net::SocketAddr;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::MaybeTlsStream;

use crate::common::{frame_header, masked_frame, Client, RawClient, TestServer, DEADLINE};

/// Each test process holds both ends of every connection.
fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// A kept-alive HTTP connection that has had one answer (`GET /health`).
async fn kept_alive(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
        let n = tokio::time::timeout(DEADLINE, tcp.read(&mut chunk)).await.expect("answer in time").expect("read");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    tcp
}

/// Reads until the server closes the connection (what it sent meanwhile is
/// returned); panics if it is still open after `DEADLINE`.
async fn closed_by_server(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, tcp.read(&mut chunk)).await.expect("the server closes it in time") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[actix_rt::test]
async fn idle_http_connections_beyond_max_connections_do_not_lock_out_clients() {
    raise_fd_limit();
    let server = TestServer::with(|a| {
        a.max_connections = Some(1000);
        // Long enough that no idle connection times out during the test:
        // the budgets alone must keep room.
        a.http_timeout_ms = Some(60_000);
    });
    // More idle keep-alive connections than the node takes clients: they
    // have a budget of their own.
    let mut held = Vec::with_capacity(1500);
    for _ in 0..1500 {
        held.push(kept_alive(server.addr).await);
    }
    let mut client = server.connect().await;
    let ack = client.init(json!({"api_key": "development", "user_id": "late"})).await;
    assert_eq!(ack["type"], "connection.ack", "{ack}");
    client.subscribe(&["team:t"]).await;
    let id = server.publish("team:t", "note", json!({})).await;
    assert_eq!(client.recv_type("note").await["id"], id.as_str());
    drop(held);
}

#[actix_rt::test]
async fn when_the_pending_budget_is_full_the_oldest_idle_connection_makes_room() {
    let server = TestServer::with(|a| {
        a.max_pending_connections = Some(20);
        a.http_timeout_ms = Some(60_000);
    });
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(kept_alive(server.addr).await);
    }
    // Still served, and the oldest held connection was closed for it.
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
    closed_by_server(&mut held[0]).await;
    let metrics = server.metrics().await;
    assert!(metrics["shed_connections"].as_u64().unwrap_or(0) >= 10, "{metrics}");
}

#[actix_rt::test]
async fn idle_and_slow_http_requests_are_timed_out_on_every_request_of_a_connection() {
    let server = TestServer::with(|a| a.http_timeout_ms = Some(300));
    // Idle after an answer.
    let mut idle = kept_alive(server.addr).await;
    closed_by_server(&mut idle).await;
    // One byte of a second request.
    let mut slow_head = kept_alive(server.addr).await;
    slow_head.write_all(b"G").await.expect("a byte");
    closed_by_server(&mut slow_head).await;
    // A head that never ends, on a new connection.
    let mut partial = TcpStream::connect(server.addr).await.expect("connect");
    partial.write_all(b"GET /health HTTP/1.1\r\nHost").await.expect("part of a head");
    closed_by_server(&mut partial).await;
    // A body that never arrives, on a kept-alive connection.
    let mut slow_body = kept_alive(server.addr).await;
    slow_body
        .write_all(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ch")
        .await
        .expect("part of a body");
    closed_by_server(&mut slow_body).await;
    // And the server still answers.
    assert_eq!(server.get("/health").await.0, 200);
}

#[actix_rt::test]
async fn before_connection_init_only_small_frames_are_read() {
    let server = TestServer::start();
    let mut stranger = RawClient::connect(server.addr).await;
    // 20 KiB declared before authenticating: refused at the header.
    let mut bytes = frame_header(0x1, 20 * 1024, [1, 2, 3, 4]);
    bytes.extend(std::iter::repeat_n(b'x', 1024));
    stranger.send(&bytes).await;
    assert_eq!(stranger.close_code().await, Some(1009));
    // After authenticating, the same size is an ordinary frame (answered
    // as a malformed request, not refused for its size).
    let mut client = RawClient::authenticated(server.addr, "alice").await;
    let big = json!({"id": "big", "type": "connection.heartbeat", "data": {"pad": "x".repeat(20 * 1024)}});
    client.send(&masked_frame(0x1, big.to_string().as_bytes())).await;
    let answer = client.next_text().await.expect("an answer");
    assert_eq!(answer["reply_to"], "big", "{answer}");
}

#[actix_rt::test]
async fn a_flood_of_empty_continuation_frames_is_closed_with_1008() {
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(10);
        a.message_burst = Some(10);
    });
    let mut witness = server.subscriber("witness", &["team:t"]).await;
    let mut flooder = RawClient::authenticated(server.addr, "flooder").await;
    // A text message opened, then continued with empty fragments forever.
    let mut flood = vec![0x01, 0x80, 0, 0, 0, 0];
    for _ in 0..100_000 {
        flood.extend_from_slice(&[0x00, 0x80, 0, 0, 0, 0]);
    }
    // The server may close before everything is written.
    let _ = flooder.tcp.write_all(&flood).await;
    assert_eq!(flooder.close_code().await, Some(1008));
    let id = server.publish("team:t", "note", json!({})).await;
    assert_eq!(witness.recv_type("note").await["id"], id.as_str());
    let metrics = server.metrics().await;
    assert_eq!(metrics["flood_closes"], 1, "{metrics}");
}

#[actix_rt::test]
async fn a_ping_flood_is_closed_with_1008_and_a_burst_within_the_limit_is_not() {
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(10);
        a.message_burst = Some(10);
    });
    let mut polite = RawClient::authenticated(server.addr, "polite").await;
    // Twice the burst: some pings go unanswered, nobody is closed.
    for _ in 0..20 {
        polite.send(&masked_frame(0x9, b"p")).await;
    }
    polite.send(&masked_frame(0x1, br#"{"id":"still","type":"connection.heartbeat"}"#)).await;
    let answer = polite.next_text().await.expect("the connection lives");
    assert_eq!(answer["reply_to"], "still", "{answer}");

    let mut flooder = RawClient::authenticated(server.addr, "flooder").await;
    let ping = masked_frame(0x9, b"flood");
    let flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 100_000).collect();
    let _ = flooder.tcp.write_all(&flood).await;
    assert_eq!(flooder.close_code().await, Some(1008));
}

/// A WebSocket from `source` (a loopback address) to the server, with
/// extra request headers.
async fn connect_from(server: &TestServer, source: &str, headers: &[(&str, &str)]) -> Client {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().expect("address")).expect("bind the source address");
    let stream = tokio::time::timeout(DEADLINE, socket.connect(server.addr)).await.expect("in time").expect("connect");
    let mut request = server.ws_url("/ws").into_client_request().expect("request");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        request.headers_mut().append(name, HeaderValue::from_str(value).expect("header value"));
    }
    let (ws, _) =
        tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)))
            .await
            .expect("handshake in time")
            .expect("handshake");
    Client::from_stream(ws)
}

/// `connection.init` with `key`: the answer's type and code, and the close
/// code if the server closed.
async fn try_key(mut client: Client, key: &str) -> (Value, Option<u16>) {
    client.send(json!({"id": "i", "type": "connection.init", "data": {"api_key": key, "user_id": "u"}})).await;
    let answer = client.recv().await;
    if answer["type"] == "connection.ack" {
        return (answer, None);
    }
    let close = client.expect_close().await;
    (answer, Some(close))
}

#[actix_rt::test]
async fn failed_authentications_from_one_address_are_throttled_and_others_are_not() {
    let server = TestServer::with(|a| a.auth_failure_limit = Some(5));
    for _ in 0..5 {
        let (answer, close) = try_key(connect_from(&server, "127.0.0.1", &[]).await, "wrong").await;
        assert_eq!((answer["data"]["code"].as_u64(), close), (Some(4001), Some(4001)), "{answer}");
    }
    // Blocked now, even with the right key.
    let (answer, close) = try_key(connect_from(&server, "127.0.0.1", &[]).await, "development").await;
    assert_eq!((answer["data"]["code"].as_u64(), close), (Some(4004), Some(4004)), "{answer}");
    // Another address is served, and a forwarded-for header from an
    // untrusted peer changes nothing.
    let (answer, _) = try_key(connect_from(&server, "127.0.0.2", &[]).await, "development").await;
    assert_eq!(answer["type"], "connection.ack", "{answer}");
    let forged = [("x-forwarded-for", "203.0.113.9")];
    let (answer, _) = try_key(connect_from(&server, "127.0.0.1", &forged).await, "development").await;
    assert_eq!(answer["data"]["code"], 4004, "{answer}");
    assert!(server.metrics().await["auth_throttled"].as_u64().unwrap_or(0) >= 2);
}

#[actix_rt::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_throttled() {
    let server = TestServer::with(|a| {
        a.auth_failure_limit = Some(3);
        a.trusted_proxies = Some(vec!["127.0.0.1".into()]);
    });
    // The guesser forges a line of its own with a new address each time;
    // the proxy adds its line (as HAProxy does) rather than appending.
    for i in 0..3 {
        let forged = format!("198.51.100.{i}");
        let lines = [("x-forwarded-for", forged.as_str()), ("x-forwarded-for", "203.0.113.7")];
        let (answer, _) = try_key(connect_from(&server, "127.0.0.1", &lines).await, "wrong").await;
        assert_eq!(answer["data"]["code"], 4001, "{answer}");
    }
    let guesser = [("x-forwarded-for", "203.0.113.7")];
    let (answer, _) = try_key(connect_from(&server, "127.0.0.1", &guesser).await, "development").await;
    assert_eq!(answer["data"]["code"], 4004, "{answer}");
    // Another client behind the same proxy is not blocked.
    let neighbour = [("x-forwarded-for", "203.0.113.8")];
    let (answer, _) = try_key(connect_from(&server, "127.0.0.1", &neighbour).await, "development").await;
    assert_eq!(answer["type"], "connection.ack", "{answer}");
}

/// Sends a raw upgrade request; the status line of the answer.
async fn upgrade_status(addr: SocketAddr, version: &str, key: Option<&str>) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let key = key.map(|k| format!("Sec-WebSocket-Key: {k}\r\n")).unwrap_or_default();
    let head = format!(
        "GET /ws HTTP/{version}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("send");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut answer)).await.expect("answer in time").expect("read");
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

#[actix_rt::test]
async fn upgrades_without_a_valid_key_or_over_http_1_0_are_refused() {
    let server = TestServer::start();
    let good = "dGhlIHNhbXBsZSBub25jZQ==";
    assert!(upgrade_status(server.addr, "1.1", Some(good)).await.starts_with("HTTP/1.1 101"));
    for (version, key) in
        [("1.1", None), ("1.1", Some("short")), ("1.1", Some("!!!!!!!!!!!!!!!!!!!!!!==")), ("1.0", Some(good))]
    {
        let status = upgrade_status(server.addr, version, key).await;
        assert!(status.contains(" 400"), "HTTP/{version} key {key:?}: {status}");
    }
}

/// `GET path` from `source` with the admin `token`: the status code.
async fn admin_get_from(server: &TestServer, source: &str, path: &str, token: &str) -> u16 {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().expect("address")).expect("bind the source address");
    let mut tcp = tokio::time::timeout(DEADLINE, socket.connect(server.addr)).await.expect("in time").expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("send");
    let answer = closed_by_server(&mut tcp).await;
    let status = String::from_utf8_lossy(&answer).split_whitespace().nth(1).unwrap_or_default().to_owned();
    status.parse().unwrap_or_else(|_| panic!("no status in {}", String::from_utf8_lossy(&answer)))
}

#[actix_rt::test]
async fn wrong_admin_tokens_are_throttled_per_address() {
    let server = TestServer::with(|a| a.auth_failure_limit = Some(3));
    for _ in 0..3 {
        assert_eq!(admin_get_from(&server, "127.0.0.1", "/ws/metrics", "guess").await, 401);
    }
    // Blocked now, even with the right token; another address is not.
    assert_eq!(admin_get_from(&server, "127.0.0.1", "/ws/metrics", crate::common::ADMIN_TOKEN).await, 429);
    assert_eq!(admin_get_from(&server, "127.0.0.2", "/ws/metrics", crate::common::ADMIN_TOKEN).await, 200);
}
