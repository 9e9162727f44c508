//! Bad client frames after authentication: each is answered with error 4005
//! naming what was wrong, and the connection keeps working (proved by a
//! heartbeat round trip, and where it matters a subscription).

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::{Client, TestServer};

/// Sends `text`, expects a 4005 error whose message contains `names`
/// (and `reply_to` when given), then proves the connection still works.
async fn assert_invalid(client: &mut Client, text: &str, names: &str, reply_to: Option<&str>) {
    client.send_text(text).await;
    let error = client.expect_error(4005).await;
    let message = error["data"]["message"].as_str().unwrap();
    assert!(message.contains(names), "the message should name {names}: {error}");
    match reply_to {
        Some(id) => assert_eq!(error["reply_to"], id, "{error}"),
        None => assert_eq!(error.get("reply_to"), None, "{error}"),
    }
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn malformed_json_is_4005_and_the_connection_survives() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    assert_invalid(&mut client, "{\"id\":\"1\",\"type\":", "JSON", None).await;
    assert_invalid(&mut client, "not json at all", "JSON", None).await;
    client.subscribe(&["conversation:c1"]).await;
}

#[actix_rt::test]
async fn non_object_frame_is_4005() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    assert_invalid(&mut client, "[1,2,3]", "object", None).await;
    assert_invalid(&mut client, "\"connection.heartbeat\"", "object", None).await;
}

#[actix_rt::test]
async fn missing_or_bad_id_is_4005_naming_the_field() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    assert_invalid(&mut client, r#"{"type":"connection.heartbeat"}"#, "'id'", None).await;
    assert_invalid(&mut client, r#"{"id":7,"type":"connection.heartbeat"}"#, "'id'", None).await;
    assert_invalid(&mut client, r#"{"id":"","type":"connection.heartbeat"}"#, "'id'", None).await;
    let long = format!(r#"{{"id":"{}","type":"connection.heartbeat"}}"#, "x".repeat(129));
    assert_invalid(&mut client, &long, "'id'", None).await;
    // 128 characters is fine.
    let id = "y".repeat(128);
    client.send(json!({"id": id, "type": "connection.heartbeat"})).await;
    assert_eq!(client.recv_type("connection.heartbeat").await["reply_to"], id.as_str());
}

#[actix_rt::test]
async fn missing_or_bad_type_is_4005_naming_the_field() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    assert_invalid(&mut client, r#"{"id":"m1","data":{}}"#, "'type'", Some("m1")).await;
    assert_invalid(&mut client, r#"{"id":"m2","type":5}"#, "'type'", Some("m2")).await;
}

#[actix_rt::test]
async fn non_object_data_is_4005_naming_the_field() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    for data in ["[]", "\"text\"", "3", "true"] {
        let frame = format!(r#"{{"id":"d","type":"connection.heartbeat","data":{data}}}"#);
        assert_invalid(&mut client, &frame, "'data'", Some("d")).await;
    }
    let frame = r#"{"id":"c","type":"chat.message","channel":7,"data":{"content":"x"}}"#;
    assert_invalid(&mut client, frame, "'channel'", Some("c")).await;
}

#[actix_rt::test]
async fn unknown_type_is_4005_naming_the_type() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    assert_invalid(&mut client, r#"{"id":"u","type":"chat.explode","data":{}}"#, "chat.explode", Some("u")).await;
    // Server-to-client types are not requests either: clients may not send
    // them (4003, the catalog knows who sends what).
    client.send_text(r#"{"id":"v","type":"connection.ack"}"#).await;
    let error = client.expect_error(4003).await;
    assert_eq!(error["reply_to"], "v");
    assert!(error["data"]["message"].as_str().unwrap_or_default().contains("'connection.ack' is sent by a server"));
    client.subscribe(&["team:t1"]).await;
}

#[actix_rt::test]
async fn binary_frame_is_4005_and_the_connection_survives() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client.send_message(Message::binary(br#"{"id":"b","type":"connection.heartbeat"}"#.to_vec())).await;
    let error = client.expect_error(4005).await;
    assert!(error["data"]["message"].as_str().unwrap().contains("binary"), "{error}");
    client.assert_nothing_pending().await;
    client.subscribe(&["team:t1"]).await;
}

#[actix_rt::test]
async fn fragmented_text_message_is_reassembled() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    let text = r#"{"id":"frag","type":"channel.subscribe","data":{"channels":["conversation:c1"]}}"#;
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(30);
    client
        .send_message(Message::Frame(Frame::message(Bytes::from(a.to_owned()), OpCode::Data(Data::Text), false)))
        .await;
    client
        .send_message(Message::Frame(Frame::message(Bytes::from(b.to_owned()), OpCode::Data(Data::Continue), false)))
        .await;
    client
        .send_message(Message::Frame(Frame::message(Bytes::from(c.to_owned()), OpCode::Data(Data::Continue), true)))
        .await;
    let ack = client.recv_type("channel.subscribed").await;
    assert_eq!(ack["reply_to"], "frag");
    assert_eq!(ack["channel"], "conversation:c1");
}

#[actix_rt::test]
async fn fragmented_binary_message_is_4005() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client
        .send_message(Message::Frame(Frame::message(Bytes::from_static(b"ab"), OpCode::Data(Data::Binary), false)))
        .await;
    client
        .send_message(Message::Frame(Frame::message(Bytes::from_static(b"cd"), OpCode::Data(Data::Continue), true)))
        .await;
    client.expect_error(4005).await;
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn text_frame_that_is_not_utf8_is_closed_with_1007() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    let invalid = Bytes::from_static(&[b'{', 0xff, 0xfe, b'}']);
    client.send_message(Message::Frame(Frame::message(invalid, OpCode::Data(Data::Text), true))).await;
    client.expect_closed_with(1007).await;
}
