//! Publishing from a client: `chat.message` with its receipt and
//! `chat.typing` without one; the server names the sender.

use serde_json::json;

use crate::common::{assert_fresh_timestamp, jwt, TestServer};

#[actix_rt::test]
async fn chat_message_is_receipted_and_fanned_out_with_the_real_sender() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut carol = server.subscriber("carol", &["conversation:c2"]).await;
    assert_eq!(alice.recv_type("channel.presence").await["data"]["user_id"], "bob");

    let id = alice
        .request(
            "chat.message",
            Some("conversation:c1"),
            json!({"content": "hi", "sender_id": "mallory", "message_id": "forged", "thread": "t-1", "meta": {"k": [1]}}),
        )
        .await;
    // The sender is subscribed, so it gets its receipt and the message, in
    // either order.
    let (first, second) = (alice.recv().await, alice.recv().await);
    let (receipt, own_copy) = if first["type"] == "message.received" { (first, second) } else { (second, first) };
    assert_eq!(receipt["type"], "message.received", "{receipt}");
    assert_eq!(receipt["reply_to"], id.as_str());
    assert_eq!(receipt["channel"], "conversation:c1");
    assert_eq!(receipt["data"]["channel"], "conversation:c1");
    assert_fresh_timestamp(&receipt);
    let message_id = receipt["data"]["message_id"].as_str().expect("data.message_id").to_owned();
    assert_ne!(message_id, "forged");

    let from_bob = bob.recv().await;
    for message in [from_bob, own_copy] {
        assert_eq!(message["type"], "chat.message", "{message}");
        assert_eq!(message["id"], message_id.as_str());
        assert_eq!(message["channel"], "conversation:c1");
        assert_eq!(message["data"]["message_id"], message_id.as_str());
        assert_eq!(message["data"]["sender_id"], "alice", "sender_id must be the authenticated user: {message}");
        assert_eq!(message["data"]["content"], "hi");
        assert_eq!(message["data"]["thread"], "t-1");
        assert_eq!(message["data"]["meta"], json!({"k": [1]}));
        assert_eq!(message.get("reply_to"), None, "{message}");
        assert_fresh_timestamp(&message);
    }
    carol.assert_nothing_pending().await;
    alice.assert_nothing_pending().await;
    bob.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn sender_need_not_be_subscribed() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut dave = server.connect_as("dave").await;
    let id = dave.request("chat.message", Some("conversation:c1"), json!({"content": "from outside"})).await;
    let receipt = dave.recv_type("message.received").await;
    assert_eq!(receipt["reply_to"], id.as_str());
    let message = bob.recv_type("chat.message").await;
    assert_eq!(message["id"], receipt["data"]["message_id"]);
    assert_eq!(message["data"]["sender_id"], "dave");
    assert_eq!(message["data"]["content"], "from outside");
    dave.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn jwt_user_is_the_sender() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut erin = server.connect().await;
    erin.init(json!({"token": jwt("erin", 600, json!({"channels": ["conversation:c1"]}))})).await;
    erin.request("chat.message", Some("conversation:c1"), json!({"content": "x", "sender_id": "bob"})).await;
    erin.recv_type("message.received").await;
    assert_eq!(bob.recv_type("chat.message").await["data"]["sender_id"], "erin");
}

#[actix_rt::test]
async fn chat_typing_reaches_subscribers_without_a_receipt() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut alice = server.connect_as("alice").await;
    alice.request("chat.typing", Some("conversation:c1"), json!({"typing": true, "sender_id": "mallory"})).await;
    let typing = bob.recv_type("chat.typing").await;
    assert_eq!(typing["channel"], "conversation:c1");
    assert_eq!(typing["data"]["sender_id"], "alice");
    assert_eq!(typing["data"]["typing"], true);
    assert!(typing["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_fresh_timestamp(&typing);
    // No receipt for a typing indicator.
    alice.assert_nothing_pending().await;
    bob.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn chat_typing_without_data_is_accepted() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["team:t1"]).await;
    let mut alice = server.connect_as("alice").await;
    alice.send(json!({"id": "t", "type": "chat.typing", "channel": "team:t1"})).await;
    let typing = bob.recv_type("chat.typing").await;
    assert_eq!(typing["data"], json!({"sender_id": "alice"}));
}

#[actix_rt::test]
async fn publishing_to_a_forbidden_channel_is_refused_with_4003() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["team:t1"]).await;
    let mut erin = server.connect().await;
    erin.init(json!({"token": jwt("erin", 600, json!({"channels": ["conversation:*"]}))})).await;
    for kind in ["chat.message", "chat.typing"] {
        let id = erin.request(kind, Some("team:t1"), json!({"content": "sneaky"})).await;
        let error = erin.expect_error(4003).await;
        assert_eq!(error["reply_to"], id.as_str());
        assert_eq!(error["channel"], "team:t1");
    }
    erin.assert_nothing_pending().await;
    // Nothing reached the channel: bob's next frame is a later event.
    let later = server.publish("team:t1", "demo.task", json!({})).await;
    assert_eq!(bob.recv_type("demo.task").await["id"], later.as_str());
}

#[actix_rt::test]
async fn chat_message_without_string_content_is_refused_with_4005() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut alice = server.connect_as("alice").await;
    for data in [json!({}), json!({"text": "hi"}), json!({"content": 42}), json!({"content": null})] {
        let id = alice.request("chat.message", Some("conversation:c1"), data.clone()).await;
        let error = alice.expect_error(4005).await;
        assert_eq!(error["reply_to"], id.as_str(), "{data}");
        assert!(error["data"]["message"].as_str().unwrap().contains("content"), "{data}: {error}");
    }
    alice.assert_nothing_pending().await;
    let later = server.publish("conversation:c1", "demo.token", json!({})).await;
    assert_eq!(bob.recv_type("demo.token").await["id"], later.as_str());
}

#[actix_rt::test]
async fn chat_message_needs_a_valid_channel() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let id = alice.request("chat.message", None, json!({"content": "hi"})).await;
    let error = alice.expect_error(4005).await;
    assert_eq!(error["reply_to"], id.as_str());
    assert!(error["data"]["message"].as_str().unwrap().contains("channel"), "{error}");
    let id = alice.request("chat.message", Some("chat:c1"), json!({"content": "hi"})).await;
    let error = alice.expect_error(4006).await;
    assert_eq!(error["reply_to"], id.as_str());
    assert_eq!(error["channel"], "chat:c1");
    alice.assert_nothing_pending().await;
}
