//! The life of a connection at the WebSocket level: control frames, client
//! closes, fragmentation rules, and what the server forgets when a client
//! leaves.

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::TestServer;

fn fragment(text: &str, opcode: Data, last: bool) -> Message {
    Message::Frame(Frame::message(Bytes::from(text.to_owned()), OpCode::Data(opcode), last))
}

#[actix_rt::test]
async fn client_ping_is_answered_with_a_pong() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client.send_message(Message::Ping(Bytes::from_static(b"are you there"))).await;
    match client.next_message().await {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn client_close_is_answered_and_the_connection_forgotten() {
    let server = TestServer::start();
    let mut client = server.subscriber("alice", &["conversation:c1"]).await;
    let frame = CloseFrame { code: 1000.into(), reason: "done".into() };
    client.send_message(Message::Close(Some(frame))).await;
    assert_eq!(client.expect_close().await, 1000);
    server
        .wait_for_metrics("connection and channel released", |m| {
            m["connections"] == 0 && m["channels"] == 0 && m["users"] == 0
        })
        .await;
}

#[actix_rt::test]
async fn dropped_client_is_forgotten() {
    let server = TestServer::start();
    let client = server.subscriber("alice", &["conversation:c1", "team:t1"]).await;
    server.wait_for_metrics("two channels", |m| m["channels"] == 2).await;
    drop(client);
    server.wait_for_metrics("connection and channels released", |m| m["connections"] == 0 && m["channels"] == 0).await;
    let (_, health) = server.get_with("/health", None).await;
    assert_eq!(health["connections"], 0, "{health}");
}

#[actix_rt::test]
async fn authenticated_connection_outlives_the_auth_timeout() {
    let server = TestServer::with(|a| {
        a.auth_timeout_ms = Some(150);
        a.heartbeat_interval_ms = Some(100);
    });
    let mut client = server.connect_as("alice").await;
    // Four server pings: well past the auth timeout.
    for _ in 0..4 {
        client.recv_ping().await;
    }
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn resubscribing_after_the_channel_was_released_works() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    alice.request("channel.unsubscribe", None, json!({"channels": ["conversation:c1"]})).await;
    alice.recv_type("channel.unsubscribed").await;
    server.wait_for_metrics("channel released", |m| m["channels"] == 0).await;
    let acks = alice.subscribe(&["conversation:c1"]).await;
    assert_eq!(acks[0]["data"]["presence"], json!(["alice"]));
    let id = server.publish("conversation:c1", "demo.token", json!({})).await;
    assert_eq!(alice.recv_type("demo.token").await["id"], id.as_str());
}

#[actix_rt::test]
async fn ping_between_fragments_is_answered_and_the_message_reassembled() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client.send_message(fragment(r#"{"id":"f1","type":"conn"#, Data::Text, false)).await;
    client.send_message(Message::Ping(Bytes::from_static(b"mid"))).await;
    client.send_message(fragment(r#"ection.heartbeat"}"#, Data::Continue, true)).await;
    match client.next_message().await {
        Message::Pong(payload) => assert_eq!(&payload[..], b"mid"),
        other => panic!("expected a pong first, got {other:?}"),
    }
    assert_eq!(client.recv_type("connection.heartbeat").await["reply_to"], "f1");
}

#[actix_rt::test]
async fn continuation_without_a_first_fragment_is_closed_with_1002() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client.send_message(fragment(r#"{"id":"x"}"#, Data::Continue, true)).await;
    assert_eq!(client.expect_close().await, 1002);
}

#[actix_rt::test]
async fn new_message_inside_a_fragmented_one_is_closed_with_1002() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client.send_message(fragment(r#"{"id":"a","#, Data::Text, false)).await;
    client.send_message(fragment(r#"{"id":"b","type":"connection.heartbeat"}"#, Data::Text, true)).await;
    assert_eq!(client.expect_close().await, 1002);
}

#[actix_rt::test]
async fn events_published_while_disconnected_are_not_replayed() {
    let server = TestServer::start();
    let mut witness = server.subscriber("witness", &["conversation:c1"]).await;
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    assert_eq!(witness.recv_type("channel.presence").await["data"]["state"], "joined");
    alice.close().await;
    assert_eq!(witness.recv_type("channel.presence").await["data"]["state"], "left");
    let missed = server.publish("conversation:c1", "demo.token", json!({"n": 1})).await;
    assert_eq!(witness.recv_type("demo.token").await["id"], missed.as_str());

    let mut again = server.subscriber("alice", &["conversation:c1"]).await;
    let next = server.publish("conversation:c1", "demo.token", json!({"n": 2})).await;
    assert_eq!(again.recv_type("demo.token").await["id"], next.as_str(), "an old event was replayed");
}
