//! Channels: subscribe and unsubscribe, access patterns, bad names, the
//! per-connection channel limit.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::common::{jwt, Client, TestServer};

/// A connection authenticated with a JWT for `user` granting `channels`.
async fn jwt_client(server: &TestServer, user: &str, claims: Value) -> Client {
    let mut client = server.connect().await;
    client.init(json!({"token": jwt(user, 600, claims)})).await;
    client
}

/// Reads `n` frames and files them by channel.
async fn frames_by_channel(client: &mut Client, n: usize) -> BTreeMap<String, Value> {
    let mut by_channel = BTreeMap::new();
    for _ in 0..n {
        let frame = client.recv().await;
        let channel =
            frame["channel"].as_str().unwrap_or_else(|| panic!("frame without a channel: {frame}")).to_owned();
        assert!(by_channel.insert(channel, frame).is_none(), "two answers for one channel");
    }
    by_channel
}

#[actix_rt::test]
async fn subscribe_answers_with_presence() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let id = alice.request("channel.subscribe", None, json!({"channels": ["conversation:c1"]})).await;
    let ack = alice.recv_type("channel.subscribed").await;
    assert_eq!(ack["reply_to"], id.as_str());
    assert_eq!(ack["channel"], "conversation:c1");
    assert_eq!(ack["data"]["presence"], json!(["alice"]));
    assert_eq!(ack["data"]["presence_count"], 1);
}

#[actix_rt::test]
async fn jwt_pattern_grants_matching_channels_only() {
    let server = TestServer::start();
    let mut bob = jwt_client(&server, "bob", json!({"channels": ["conversation:*", "team:t1"]})).await;
    bob.subscribe(&["conversation:c1", "conversation:other", "team:t1"]).await;
    for denied in ["team:t2", "document:d1", "system:ops"] {
        let id = bob.request("channel.subscribe", None, json!({"channels": [denied]})).await;
        let error = bob.expect_error(4003).await;
        assert_eq!(error["channel"], denied, "{error}");
        assert_eq!(error["reply_to"], id.as_str());
    }
    bob.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn jwt_without_channels_claim_is_denied_every_channel() {
    let server = TestServer::start();
    let mut bob = jwt_client(&server, "bob", json!({})).await;
    let id = bob.request("channel.subscribe", None, json!({"channels": ["conversation:c1"]})).await;
    let error = bob.expect_error(4003).await;
    assert_eq!(error["channel"], "conversation:c1");
    assert_eq!(error["reply_to"], id.as_str());
    bob.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn denied_subscription_receives_no_events() {
    let server = TestServer::start();
    let mut bob = jwt_client(&server, "bob", json!({"channels": ["conversation:*"]})).await;
    bob.request("channel.subscribe", None, json!({"channels": ["team:t1"]})).await;
    bob.expect_error(4003).await;
    let mut witness = server.subscriber("witness", &["team:t1"]).await;
    server.publish("team:t1", "demo.task", json!({"n": 1})).await;
    witness.recv_type("demo.task").await;
    bob.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn bad_channel_names_are_refused_with_4006() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let long = format!("team:{}", "x".repeat(129));
    for bad in ["bad", "chat:x", "conversation:../x", "conversation:", "conversation:a b", "*:*", long.as_str()] {
        let id = alice.request("channel.subscribe", None, json!({"channels": [bad]})).await;
        let error = alice.expect_error(4006).await;
        assert_eq!(error["channel"], bad, "{error}");
        assert_eq!(error["reply_to"], id.as_str());
    }
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn mixed_list_is_answered_channel_by_channel() {
    let server = TestServer::start();
    let mut bob = jwt_client(&server, "bob", json!({"channels": ["conversation:*"]})).await;
    let id = bob
        .request(
            "channel.subscribe",
            None,
            json!({"channels": ["conversation:c1", "team:t1", "bad", "conversation:c2"]}),
        )
        .await;
    let answers = frames_by_channel(&mut bob, 4).await;
    for frame in answers.values() {
        assert_eq!(frame["reply_to"], id.as_str(), "{frame}");
    }
    assert_eq!(answers["conversation:c1"]["type"], "channel.subscribed");
    assert_eq!(answers["conversation:c2"]["type"], "channel.subscribed");
    assert_eq!(answers["team:t1"]["type"], "error");
    assert_eq!(answers["team:t1"]["data"]["code"], 4003);
    assert_eq!(answers["bad"]["type"], "error");
    assert_eq!(answers["bad"]["data"]["code"], 4006);
    bob.assert_nothing_pending().await;
    // The connection is usable and subscribed to the good ones.
    let sent = server.publish("conversation:c2", "demo.token", json!({"token": "hi"})).await;
    let event = bob.recv_type("demo.token").await;
    assert_eq!(event["id"], sent.as_str());
}

#[actix_rt::test]
async fn admin_role_may_subscribe_anywhere() {
    let server = TestServer::start();
    let mut root = jwt_client(&server, "root", json!({"role": "admin"})).await;
    root.subscribe(&["system:settings", "team:any", "document:d9", "agent:a1", "conversation:c1"]).await;
    let sent = server.publish("system:settings", "settings_changed", json!({})).await;
    assert_eq!(root.recv_type("settings_changed").await["id"], sent.as_str());
}

#[actix_rt::test]
async fn channel_limit_refuses_the_extra_channel_with_4003() {
    let server = TestServer::with(|a| a.max_channels_per_connection = Some(2));
    let mut alice = server.connect_as("alice").await;
    alice.subscribe(&["team:a", "team:b"]).await;
    let id = alice.request("channel.subscribe", None, json!({"channels": ["team:c"]})).await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["channel"], "team:c", "{refused}");
    assert_eq!(refused["data"]["code"], 4003);
    assert_eq!(refused["reply_to"], id.as_str());
    // Subscribing again to a channel already held is not a new channel.
    alice.subscribe(&["team:a"]).await;
    // Leaving one makes room.
    alice.request("channel.unsubscribe", None, json!({"channels": ["team:a"]})).await;
    alice.recv_type("channel.unsubscribed").await;
    alice.subscribe(&["team:c"]).await;
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_request_naming_more_channels_than_a_connection_may_hold_is_refused_whole() {
    let server = TestServer::with(|a| a.max_channels_per_connection = Some(2));
    let mut alice = server.connect_as("alice").await;
    let id = alice.request("channel.subscribe", None, json!({"channels": ["team:a", "team:b", "team:c"]})).await;
    let refused = alice.recv_type("error").await;
    assert_eq!(refused["data"]["code"], 4005, "{refused}");
    assert_eq!(refused["reply_to"], id.as_str());
    assert!(refused["data"]["message"].as_str().unwrap().contains("at most 2"), "{refused}");
    alice.assert_nothing_pending().await;
    let (_, list) = server.get("/ws/connections").await;
    assert_eq!(list["connections"][0]["channels"], json!([]), "nothing was subscribed: {list}");
}

#[actix_rt::test]
async fn subscribing_twice_delivers_each_event_once() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let again = alice.subscribe(&["conversation:c1"]).await;
    assert_eq!(again[0]["data"]["presence"], json!(["alice"]));
    assert_eq!(again[0]["data"]["presence_count"], 1);
    let sent = server.publish("conversation:c1", "demo.token", json!({"token": "x"})).await;
    assert_eq!(alice.recv_type("demo.token").await["id"], sent.as_str());
    alice.assert_nothing_pending().await;
    let (_, list) = server.get("/ws/connections").await;
    assert_eq!(list["connections"][0]["channels"], json!(["conversation:c1"]), "{list}");
}

#[actix_rt::test]
async fn unsubscribe_stops_the_channel_events() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1", "conversation:c2"]).await;
    let mut witness = server.subscriber("witness", &["conversation:c1"]).await;
    assert_eq!(alice.recv_type("channel.presence").await["data"]["user_id"], "witness");
    let id = alice.request("channel.unsubscribe", None, json!({"channels": ["conversation:c1"]})).await;
    let left = alice.recv_type("channel.unsubscribed").await;
    assert_eq!(left["reply_to"], id.as_str());
    assert_eq!(left["channel"], "conversation:c1");
    assert_eq!(witness.recv_type("channel.presence").await["data"], json!({"user_id": "alice", "state": "left"}));
    let sent = server.publish("conversation:c1", "demo.token", json!({"token": "gone"})).await;
    assert_eq!(witness.recv_type("demo.token").await["id"], sent.as_str());
    alice.assert_nothing_pending().await;
    // Still subscribed to the other channel.
    let sent = server.publish("conversation:c2", "demo.token", json!({"token": "here"})).await;
    assert_eq!(alice.recv_type("demo.token").await["id"], sent.as_str());
}

#[actix_rt::test]
async fn unsubscribing_a_channel_not_joined_is_acknowledged() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let id = alice.request("channel.unsubscribe", None, json!({"channels": ["team:never"]})).await;
    let left = alice.recv_type("channel.unsubscribed").await;
    assert_eq!(left["reply_to"], id.as_str());
    assert_eq!(left["channel"], "team:never");
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn unsubscribing_a_bad_name_is_refused_with_4006() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let id = alice.request("channel.unsubscribe", None, json!({"channels": ["chat:x"]})).await;
    let error = alice.expect_error(4006).await;
    assert_eq!(error["channel"], "chat:x");
    assert_eq!(error["reply_to"], id.as_str());
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn malformed_channel_lists_are_refused_with_4005() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    for data in [json!({"channels": []}), json!({"channels": "team:t1"}), json!({}), json!({"channels": [1]})] {
        let id = alice.request("channel.subscribe", None, data.clone()).await;
        let error = alice.expect_error(4005).await;
        assert_eq!(error["reply_to"], id.as_str(), "{data}: {error}");
        assert!(error["data"]["message"].as_str().unwrap().contains("channels"), "{data}: {error}");
    }
    alice.assert_nothing_pending().await;
}

/// Publishes `n` events numbered from `from` to `channel` in one batch.
async fn publish_numbered(server: &TestServer, channel: &str, from: usize, n: usize) -> Vec<String> {
    let events: Vec<Value> =
        (from..from + n).map(|seq| json!({"channel": channel, "type": "tick", "data": {"seq": seq}})).collect();
    let (status, body) = server.post("/api/publish/batch", json!({"events": events})).await;
    assert_eq!(status, 202, "{body}");
    body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[actix_rt::test]
async fn subscribing_mid_stream_gets_an_unbroken_tail_after_the_ack() {
    let server = TestServer::start();
    let mut witness = server.subscriber("witness", &["team:live"]).await;
    let mut alice = server.connect_as("alice").await;
    let mut ids = publish_numbered(&server, "team:live", 0, 150).await;
    let request = alice.request("channel.subscribe", None, json!({"channels": ["team:live"]})).await;
    ids.extend(publish_numbered(&server, "team:live", 150, 150).await);

    // The witness sees all 300 in order (and alice joining somewhere).
    let mut seen = 0;
    while seen < 300 {
        let frame = witness.recv().await;
        if frame["type"] == "channel.presence" {
            continue;
        }
        assert_eq!(frame["id"], ids[seen].as_str(), "{frame}");
        seen += 1;
    }
    // alice: the ack first, then every event from some point on, in order,
    // and at least the whole second batch.
    let ack = alice.recv_type("channel.subscribed").await;
    assert_eq!(ack["reply_to"], request.as_str());
    let first = alice.recv_type("tick").await;
    let start = first["data"]["seq"].as_u64().unwrap() as usize;
    assert!(start <= 150, "alice missed events published after her subscription (first was {start})");
    assert_eq!(first["id"], ids[start].as_str());
    for id in &ids[start + 1..] {
        assert_eq!(alice.recv_type("tick").await["id"], id.as_str());
    }
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn nothing_arrives_after_channel_unsubscribed_even_mid_stream() {
    let server = TestServer::start();
    let mut witness = server.subscriber("witness", &["team:live"]).await;
    let mut alice = server.subscriber("alice", &["team:live"]).await;
    assert_eq!(witness.recv_type("channel.presence").await["data"]["state"], "joined");
    let mut ids = publish_numbered(&server, "team:live", 0, 150).await;
    let request = alice.request("channel.unsubscribe", None, json!({"channels": ["team:live"]})).await;
    ids.extend(publish_numbered(&server, "team:live", 150, 150).await);

    let mut seen = 0;
    while seen < 300 {
        let frame = witness.recv().await;
        if frame["type"] == "channel.presence" {
            assert_eq!(frame["data"]["state"], "left");
            continue;
        }
        assert_eq!(frame["id"], ids[seen].as_str(), "{frame}");
        seen += 1;
    }
    // alice: an unbroken head of the stream (at least the first batch), then
    // the `channel.unsubscribed`, then nothing.
    let mut got = 0;
    loop {
        let frame = alice.recv().await;
        if frame["type"] == "channel.unsubscribed" {
            assert_eq!(frame["reply_to"], request.as_str());
            break;
        }
        assert_eq!(frame["id"], ids[got].as_str(), "{frame}");
        got += 1;
    }
    assert!(got >= 150, "alice lost events published before she unsubscribed (got {got})");
    alice.assert_nothing_pending().await;
}
