//! The transport in front of actix-web: what reaches a session directly, and
//! what is handed to actix-web, seen from raw sockets.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{Client, TestServer, DEADLINE};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A client text frame, masked as RFC 6455 requires.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let payload = text.as_bytes();
    assert!(payload.len() < 126, "short frames only");
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one HTTP response head, byte by byte so nothing after it is taken.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(DEADLINE, tcp.read(&mut byte)).await.expect("a response in time").expect("read");
        assert_eq!(n, 1, "connection closed inside a response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("response head is text")
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .expect("a content-length")
}

#[actix_rt::test]
async fn frames_sent_with_the_upgrade_head_are_not_lost() {
    let server = TestServer::start();
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let init = json!({"id":"1","type":"connection.init","data":{"api_key":"development","user_id":"eager"}});
    let mut bytes = format!("GET /ws/eager-tab HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n").into_bytes();
    bytes.extend(masked_text(&init.to_string()));
    tcp.write_all(&bytes).await.expect("one write: head and frame");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455 accept key: {head}");
    let ws = WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(tcp), Role::Client, None).await;
    let mut client = Client::from_stream(ws);
    let ack = client.recv_type("connection.ack").await;
    assert_eq!(ack["data"]["user_id"], "eager");
    assert_eq!(ack["data"]["client_id"], "eager-tab");
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn upgrade_on_a_kept_alive_http_connection_is_served_too() {
    let server = TestServer::start();
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; content_length(&head)];
    tcp.read_exact(&mut body).await.expect("health body");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).expect("JSON")["status"], "ok");

    // The same connection now asks for a WebSocket: actix-web serves it.
    let (ws, response) = tokio_tungstenite::client_async(server.ws_url("/ws/kept"), MaybeTlsStream::Plain(tcp))
        .await
        .expect("upgrade on the kept-alive connection");
    assert_eq!(response.status().as_u16(), 101);
    let mut client = Client::from_stream(ws);
    let ack = client.init(json!({"api_key": "development", "user_id": "kept"})).await;
    assert_eq!(ack["data"]["client_id"], "kept");
    client.subscribe(&["team:kept"]).await;
    let id = server.publish("team:kept", "note", json!({"n": 1})).await;
    let event = client.recv_type("note").await;
    assert_eq!(event["id"], id.as_str());
}

#[actix_rt::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let server = TestServer::with(|a| a.auth_timeout_ms = Some(200));
    let started = Instant::now();
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut byte)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "expected the server to close, got {n:?}");
    assert!(started.elapsed() >= Duration::from_millis(200), "closed before the timeout");
}

#[actix_rt::test]
async fn garbage_instead_of_http_gets_a_400_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"\x16\x03\x01 not http at all\r\n\r\n").await.expect("write garbage");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let mut client = server.subscriber("after", &["team:t"]).await;
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn an_upgrade_head_too_long_for_the_transport_is_served_by_actix_web() {
    let server = TestServer::start();
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let filler = "x".repeat(16 * 1024);
    let request = format!("GET /ws HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n{UPGRADE}\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write the long head");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ws = WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(tcp), Role::Client, None).await;
    let mut client = Client::from_stream(ws);
    let ack = client.init(json!({"api_key": "development", "user_id": "long"})).await;
    assert_eq!(ack["data"]["user_id"], "long");
}
