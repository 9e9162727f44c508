//! Heartbeats: the application-level `connection.heartbeat`, server pings,
//! and the 4009 close of a client that stops answering.

use std::time::Duration;

use serde_json::json;

use crate::common::{assert_connection_error, assert_fresh_timestamp, Ended, TestServer, DEADLINE};

#[actix_rt::test]
async fn heartbeat_is_answered_with_reply_to() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    let id = client.request("connection.heartbeat", None, json!({})).await;
    let reply = client.recv_type("connection.heartbeat").await;
    assert_eq!(reply["reply_to"], id.as_str());
    assert_eq!(reply["data"], json!({}));
    assert!(reply["id"].as_str().is_some_and(|i| !i.is_empty() && i != id));
    assert_fresh_timestamp(&reply);
    // `data` may be omitted.
    client.send(json!({"id": "no-data", "type": "connection.heartbeat"})).await;
    assert_eq!(client.recv_type("connection.heartbeat").await["reply_to"], "no-data");
}

#[actix_rt::test]
async fn server_pings_and_a_client_that_answers_stays_connected() {
    let server = TestServer::with(|a| a.heartbeat_interval_ms = Some(100));
    let mut client = server.connect_as("alice").await;
    // Four pings span more than two intervals; tungstenite answers each.
    for _ in 0..4 {
        client.recv_ping().await;
    }
    client.assert_nothing_pending().await;
    let metrics = server.metrics().await;
    assert_eq!(metrics["connections"], 1, "{metrics}");
}

#[actix_rt::test]
async fn silent_client_is_closed_with_4009() {
    let server = TestServer::with(|a| a.heartbeat_interval_ms = Some(100));
    let mut client = server.connect_as("alice").await;
    // From here on the client does not touch its socket: no pong, no frame.
    server.wait_for_connections(0).await;
    // The close is announced first, as the last text frame.
    let (frames, ended) = client.drain_raw().await;
    assert_eq!(ended, Ended::Closed(4009));
    let notice = frames.last().unwrap_or_else(|| panic!("no connection.error before the close"));
    assert_connection_error(notice, 4009);
    assert_eq!(notice["data"]["reconnect"], true, "{notice}");
}

#[actix_rt::test]
async fn silent_unauthenticated_client_is_closed_too() {
    // With a long auth timeout, the heartbeat is what ends a socket that
    // never says anything: it counts as a socket in /health until then.
    let server = TestServer::with(|a| {
        a.heartbeat_interval_ms = Some(100);
        a.auth_timeout_ms = Some(60_000);
    });
    let mut client = server.connect().await;
    wait_for_sockets(&server, 1).await;
    wait_for_sockets(&server, 0).await;
    assert_eq!(client.ended_raw().await, Ended::Closed(4009));
}

/// Polls `GET /health` until it counts `n` open sockets.
async fn wait_for_sockets(server: &TestServer, n: u64) {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, health) = server.get_with("/health", None).await;
        assert_eq!(status, 200);
        if health["connections"] == n {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "waiting for {n} sockets: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
