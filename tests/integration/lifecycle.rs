//! The life of a connection: protocol version negotiation and capabilities
//! at `connection.init`, control frames, client closes, fragmentation rules,
//! the `connection.error` before a close the server initiates, and what the
//! server forgets when a client leaves.

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::common::{Client, TestServer};

/// What the server says it does, exactly.
const CAPABILITIES: [&str; 5] = ["token_refresh", "expiry_warning", "connection_error", "presence", "receipts"];

/// Authenticates with the development key as `alice`, with `extra` added
/// to `data`; the `connection.ack`.
async fn init_with(client: &mut Client, extra: Value) -> Value {
    let mut data = json!({"api_key": "development", "user_id": "alice"});
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    client.init(data).await
}

#[actix_rt::test]
async fn protocol_1_alone_or_in_a_list_is_acknowledged_with_the_servers_capabilities() {
    let server = TestServer::start();
    for protocol in [json!(1), json!([1])] {
        let mut client = server.connect().await;
        let ack = init_with(&mut client, json!({"protocol": protocol, "capabilities": ["token_refresh"]})).await;
        assert_eq!(ack["data"]["protocol_version"], 1, "{ack}");
        assert_eq!(ack["data"]["capabilities"], json!(CAPABILITIES), "{ack}");
        client.assert_nothing_pending().await;
    }
}

#[actix_rt::test]
async fn a_client_speaking_1_and_2_is_given_1() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let ack = init_with(&mut client, json!({"protocol": [1, 2], "capabilities": ["some_future_thing"]})).await;
    assert_eq!(ack["data"]["protocol_version"], 1, "{ack}");
    assert_eq!(ack["data"]["capabilities"], json!(CAPABILITIES), "{ack}");
    client.subscribe(&["conversation:c1"]).await;
}

#[actix_rt::test]
async fn a_client_naming_no_version_gets_1_and_api_key_connections_no_expiry() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let ack = init_with(&mut client, json!({})).await;
    assert_eq!(ack["data"]["protocol_version"], 1, "{ack}");
    assert_eq!(ack["data"]["capabilities"], json!(CAPABILITIES), "{ack}");
    assert_eq!(ack["data"]["expires_at"], Value::Null, "an API key does not expire: {ack}");
}

#[actix_rt::test]
async fn only_versions_the_server_lacks_are_refused_with_4010() {
    let server = TestServer::start();
    for protocol in [json!([2]), json!(2), json!([3, 2])] {
        let mut client = server.connect().await;
        let id = client.request("connection.init", None, json!({"api_key": "development", "protocol": protocol})).await;
        let error = client.expect_error(4010).await;
        assert_eq!(error["reply_to"], id.as_str(), "{error}");
        assert_eq!(error["data"]["protocol_versions"], json!([1]), "{error}");
        let message = error["data"]["message"].as_str().unwrap();
        assert!(message.contains("not supported") && message.contains("speaks 1"), "{message}");
        let notice = client.expect_closed_with(4010).await;
        assert_eq!(notice["data"]["reconnect"], false, "{notice}");
    }
    server.wait_for_connections(0).await;
}

#[actix_rt::test]
async fn malformed_protocol_or_capabilities_are_refused_with_4001_naming_the_field() {
    let server = TestServer::start();
    let too_many: Vec<u32> = (1..=17).collect();
    let many_names: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let cases = [
        (json!({"protocol": "1"}), "'data.protocol'"),
        (json!({"protocol": 0}), "'data.protocol'"),
        (json!({"protocol": 1.5}), "'data.protocol'"),
        (json!({"protocol": []}), "'data.protocol'"),
        (json!({"protocol": [1, "2"]}), "'data.protocol'"),
        (json!({"protocol": too_many}), "'data.protocol'"),
        (json!({"capabilities": "presence"}), "'data.capabilities'"),
        (json!({"capabilities": [1]}), "'data.capabilities'"),
        (json!({"capabilities": ["has space"]}), "'data.capabilities'"),
        (json!({"capabilities": ["x".repeat(65)]}), "'data.capabilities'"),
        (json!({"capabilities": many_names}), "'data.capabilities'"),
    ];
    for (extra, field) in cases {
        let mut client = server.connect().await;
        let mut data = json!({"api_key": "development"});
        data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let id = client.request("connection.init", None, data.clone()).await;
        let error = client.expect_error(4001).await;
        assert_eq!(error["reply_to"], id.as_str(), "{data}: {error}");
        // The catalog's schema names the field (`data.protocol: …`); the
        // finer rules of the session quote it (`'data.capabilities'`).
        let message = error["data"]["message"].as_str().unwrap();
        assert!(message.contains(field.trim_matches('\'')), "{data}: {error}");
        client.expect_closed_with(4001).await;
    }
}

#[actix_rt::test]
async fn a_full_node_answers_4003_and_announces_its_1013_close() {
    let server = TestServer::with(|a| a.max_connections = Some(1));
    let _first = server.connect_as("alice").await;
    let mut second = server.connect().await;
    let id = second.request("connection.init", None, json!({"api_key": "development", "user_id": "bob"})).await;
    assert_eq!(second.expect_error(4003).await["reply_to"], id.as_str());
    let notice = second.expect_closed_with(1013).await;
    assert_eq!(notice["data"]["reconnect"], true, "{notice}");
}

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
    client.expect_closed_with(1002).await;
}

#[actix_rt::test]
async fn new_message_inside_a_fragmented_one_is_closed_with_1002() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    client.send_message(fragment(r#"{"id":"a","#, Data::Text, false)).await;
    client.send_message(fragment(r#"{"id":"b","type":"connection.heartbeat"}"#, Data::Text, true)).await;
    client.expect_closed_with(1002).await;
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
