//! Per-connection limits: frame size (close 1009) and the client rate limit
//! (error 4004, connection kept).

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::TestServer;

/// A heartbeat request padded to exactly `size` bytes of JSON.
fn padded_frame(size: usize) -> String {
    let empty = r#"{"id":"big","type":"connection.heartbeat","data":{"pad":""}}"#;
    let frame = format!(
        r#"{{"id":"big","type":"connection.heartbeat","data":{{"pad":"{}"}}}}"#,
        "x".repeat(size - empty.len())
    );
    assert_eq!(frame.len(), size);
    frame
}

#[actix_rt::test]
async fn frame_at_the_limit_is_accepted() {
    let server = TestServer::with(|a| a.max_frame_bytes = Some(4096));
    let mut client = server.connect_as("alice").await;
    client.send_text(&padded_frame(4096)).await;
    assert_eq!(client.recv_type("connection.heartbeat").await["reply_to"], "big");
}

#[actix_rt::test]
async fn oversize_frame_is_closed_with_1009_and_others_are_unaffected() {
    let server = TestServer::with(|a| a.max_frame_bytes = Some(4096));
    let mut other = server.subscriber("bob", &["conversation:c1"]).await;
    let mut client = server.subscriber("alice", &["conversation:c1"]).await;
    let _ = other.recv_type("channel.presence").await; // alice joined
    client.send_text(&padded_frame(5000)).await;
    client.expect_closed_with(1009).await;
    // bob hears alice leave and keeps receiving events.
    let left = other.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "alice", "state": "left"}));
    let id = server.publish("conversation:c1", "demo.token", json!({"t": 1})).await;
    assert_eq!(other.recv_type("demo.token").await["id"], id.as_str());
    other.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn oversize_fragmented_message_is_closed_with_1009() {
    let server = TestServer::with(|a| a.max_frame_bytes = Some(4096));
    let mut client = server.connect_as("alice").await;
    let text = padded_frame(6000);
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(1000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let last = i + 1 == chunks.len();
        let frame = Frame::message(Bytes::copy_from_slice(chunk), OpCode::Data(opcode), last);
        // The server may close before the last fragments arrive.
        if client.try_send_message(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    client.expect_closed_with(1009).await;
}

#[actix_rt::test]
async fn rate_limit_answers_4004_and_keeps_the_connection() {
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(20);
        a.message_burst = Some(5);
    });
    let mut client = server.connect_as("alice").await;
    let sent = 30;
    let mut ids = Vec::new();
    for _ in 0..sent {
        ids.push(client.request("connection.heartbeat", None, json!({})).await);
    }
    // The burst is answered in order; the first refusal gets one 4004 and
    // the refused frames are dropped, with no error each (at most one 4004
    // a second).
    let mut replies = Vec::new();
    let error = loop {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("connection.heartbeat") => replies.push(frame["reply_to"].as_str().unwrap().to_owned()),
            Some("error") => break frame,
            _ => panic!("unexpected frame {frame}"),
        }
    };
    assert_eq!(error["data"]["code"], 4004, "{error}");
    assert_eq!(&replies[..], &ids[..5], "the burst of 5 is answered first, in order");
    let refused = error["reply_to"].as_str().expect("the 4004 names a request").to_owned();
    assert!(!replies.contains(&refused) && ids.contains(&refused));

    // The connection stays: once the bucket has refilled (5 tokens at 20/s
    // take 250 ms; the refill is time itself, not an event to await),
    // requests are served again. Replies to requests that tokens refilled
    // while the burst was arriving may come first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = client.request("connection.heartbeat", None, json!({})).await;
    loop {
        let frame = client.recv().await;
        assert_eq!(frame["type"], "connection.heartbeat", "no second 4004 within the second: {frame}");
        if frame["reply_to"] == id.as_str() {
            break;
        }
        assert!(ids.iter().any(|i| frame["reply_to"] == i.as_str()), "{frame}");
    }
}

#[actix_rt::test]
async fn rate_limited_error_answers_the_request() {
    // docs/protocol.md: errors carry `reply_to` "when the request had a
    // readable id"; a rate-limited request has one.
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(1);
        a.message_burst = Some(1);
    });
    let mut client = server.connect_as("alice").await;
    let first = client.request("connection.heartbeat", None, json!({})).await;
    let second = client.request("connection.heartbeat", None, json!({})).await;
    assert_eq!(client.recv_type("connection.heartbeat").await["reply_to"], first.as_str());
    let error = client.expect_error(4004).await;
    assert_eq!(error["reply_to"], second.as_str(), "the 4004 error does not say which request it refused: {error}");
}
