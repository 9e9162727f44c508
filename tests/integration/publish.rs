//! Events from the backend: `POST /api/publish`, `/api/publish/batch` and
//! `/api/users/{user_id}/send` reach exactly who they should, intact and in
//! order.

use serde_json::{json, Value};

use crate::common::{assert_fresh_timestamp, TestServer};

#[actix_rt::test]
async fn published_event_reaches_exactly_the_subscribers() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let mut alice_tab2 = server.subscriber("alice", &["conversation:c1", "conversation:c2"]).await;
    let mut bob = server.subscriber("bob", &["conversation:c2"]).await;
    let mut carol = server.connect_as("carol").await;
    // Presence: alice's second tab joined nothing new; bob joined c2 after
    // alice's tab2, so tab2 heard of it.
    assert_eq!(alice_tab2.recv_type("channel.presence").await["data"]["user_id"], "bob");

    let data = json!({"token": "Hel", "index": 3, "nested": {"a": [1, 2]}});
    let id = server.publish("conversation:c1", "demo.token", data.clone()).await;
    for client in [&mut alice, &mut alice_tab2] {
        let event = client.recv_type("demo.token").await;
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["channel"], "conversation:c1");
        assert_eq!(event["data"], data);
    }
    bob.assert_nothing_pending().await;
    carol.assert_nothing_pending().await;
    alice.assert_nothing_pending().await;
    alice_tab2.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn published_frame_has_the_full_envelope() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["agent:a1"]).await;
    let (status, body) = server
        .post("/api/publish", json!({"channel": "agent:a1", "type": "demo.status", "data": {"status": "thinking"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id in the 202 answer");
    let event = alice.recv().await;
    assert_eq!(event["id"], id);
    assert_eq!(event["type"], "demo.status");
    assert_eq!(event["channel"], "agent:a1");
    assert_eq!(event["data"], json!({"status": "thinking"}));
    assert_eq!(event.get("reply_to"), None, "a published event answers no request: {event}");
    assert_fresh_timestamp(&event);
    // `agent:` keeps history: the channel's first event is offset 1.
    assert_eq!(event["offset"], 1, "{event}");
    let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "unexpected fields: {event}");
}

#[actix_rt::test]
async fn publish_without_data_delivers_an_empty_object() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    for body in [
        json!({"channel": "team:t1", "type": "ping_me"}),
        json!({"channel": "team:t1", "type": "ping_me", "data": null}),
    ] {
        let (status, answer) = server.post("/api/publish", body).await;
        assert_eq!(status, 202, "{answer}");
        let event = alice.recv_type("ping_me").await;
        assert_eq!(event["id"], answer["id"]);
        assert_eq!(event["data"], json!({}));
    }
}

#[actix_rt::test]
async fn events_to_one_channel_arrive_in_publish_order() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let mut ids = Vec::new();
    for seq in 0..60 {
        ids.push(server.publish("conversation:c1", "demo.token", json!({"seq": seq})).await);
    }
    for (seq, id) in ids.iter().enumerate() {
        let event = alice.recv_type("demo.token").await;
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["data"]["seq"], seq);
    }
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn publishing_to_a_channel_without_subscribers_is_accepted() {
    let server = TestServer::start();
    let (status, body) =
        server.post("/api/publish", json!({"channel": "team:empty", "type": "demo.task", "data": {}})).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
}

#[actix_rt::test]
async fn batch_is_delivered_whole_and_in_order() {
    let server = TestServer::start();
    let mut both = server.subscriber("alice", &["conversation:c1", "team:t1"]).await;
    let mut only_team = server.subscriber("bob", &["team:t1"]).await;
    let _ = both.recv_type("channel.presence").await; // bob joined team:t1
    let events: Vec<Value> = (0..30)
        .map(|i| {
            let channel = if i % 3 == 0 { "team:t1" } else { "conversation:c1" };
            json!({"channel": channel, "type": "demo.progress", "data": {"i": i}})
        })
        .collect();
    let (status, body) = server.post("/api/publish/batch", json!({"events": events})).await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<&str> = body["ids"].as_array().expect("ids").iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ids.len(), 30);

    // Per channel, the order of the batch; every event exactly once.
    let mut got_team = Vec::new();
    let mut got_conv = Vec::new();
    for _ in 0..30 {
        let event = both.recv_type("demo.progress").await;
        let i = event["data"]["i"].as_u64().unwrap() as usize;
        assert_eq!(event["id"], ids[i], "{event}");
        let got = if event["channel"] == "team:t1" { &mut got_team } else { &mut got_conv };
        got.push(i);
    }
    assert_eq!(got_team, (0..30).filter(|i| i % 3 == 0).collect::<Vec<_>>());
    assert_eq!(got_conv, (0..30).filter(|i| i % 3 != 0).collect::<Vec<_>>());
    both.assert_nothing_pending().await;

    for i in (0..30).filter(|i| i % 3 == 0) {
        let event = only_team.recv_type("demo.progress").await;
        assert_eq!(event["id"], ids[i]);
    }
    only_team.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn batch_with_one_bad_event_publishes_nothing() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let bad_batches = [
        (json!({"channel": "chat:nope", "type": "demo.token", "data": {}}), "events[1]"),
        (json!({"channel": "conversation:c1", "type": "connection.ack", "data": {}}), "events[1]"),
        (json!({"channel": "conversation:c1", "type": "demo.token", "data": [1]}), "events[1]"),
    ];
    for (bad, place) in bad_batches {
        let events = json!([
            {"channel": "conversation:c1", "type": "demo.token", "data": {"n": 0}},
            bad,
            {"channel": "conversation:c1", "type": "demo.token", "data": {"n": 2}},
        ]);
        let (status, body) = server.post("/api/publish/batch", json!({"events": events})).await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(place), "the error should name {place}: {body}");
        assert!(body["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{body}");
    }
    // The next event alice sees is one published after the refused batches.
    let after = server.publish("conversation:c1", "demo.token", json!({"n": "after"})).await;
    let event = alice.recv_type("demo.token").await;
    assert_eq!(event["id"], after.as_str(), "an event of a refused batch was delivered: {event}");
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn empty_or_missing_batch_is_refused() {
    let server = TestServer::start();
    let too_many: Vec<Value> =
        (0..1001).map(|_| json!({"channel": "team:t1", "type": "demo.task", "data": {}})).collect();
    for body in [json!({"events": []}), json!({}), json!({"events": too_many})] {
        let (status, answer) = server.post("/api/publish/batch", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
}

#[actix_rt::test]
async fn send_to_user_reaches_every_tab_of_that_user_only() {
    let server = TestServer::start();
    let mut tab1 = server.connect_as("alice").await;
    let mut tab2 = server.subscriber("alice", &["conversation:c1"]).await;
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let _ = tab2.recv_type("channel.presence").await; // bob joined
    let (status, body) =
        server.post("/api/users/alice/send", json!({"type": "notification", "data": {"text": "hello"}})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id");
    for tab in [&mut tab1, &mut tab2] {
        let event = tab.recv_type("notification").await;
        assert_eq!(event["id"], id);
        assert_eq!(event["data"], json!({"text": "hello"}));
        assert_eq!(event.get("channel"), None, "no channel was given: {event}");
        assert_fresh_timestamp(&event);
    }
    bob.assert_nothing_pending().await;
    tab1.assert_nothing_pending().await;
    tab2.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn send_to_user_may_name_a_channel() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let (status, body) = server
        .post("/api/users/alice/send", json!({"type": "demo.task", "channel": "team:t1", "data": {"done": true}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let event = alice.recv_type("demo.task").await;
    assert_eq!(event["id"], body["id"]);
    assert_eq!(event["channel"], "team:t1", "filed under the channel although not subscribed: {event}");
    assert_eq!(event["data"], json!({"done": true}));
}

#[actix_rt::test]
async fn send_to_user_validates_its_input() {
    let server = TestServer::start();
    let cases = [
        ("/api/users/alice/send", json!({"type": "error", "data": {}})),
        ("/api/users/alice/send", json!({"type": "note", "data": "text"})),
        ("/api/users/alice/send", json!({"type": "note", "channel": "bad"})),
        ("/api/users/alice/send", json!({"data": {}})),
    ];
    for (path, body) in cases {
        let (status, answer) = server.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    let long_user = format!("/api/users/{}/send", "u".repeat(129));
    let (status, answer) = server.post(&long_user, json!({"type": "note"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_user_id");
}
