//! History and recovery: offsets and epochs, `data.recover`,
//! `connection.reconnect`, the history API, and what a client is told when
//! its missed events are gone.

use serde_json::{json, Value};

use crate::common::{Brokers, Client, Deployment, TestServer};

const CHANNEL: &str = "conversation:c1";

/// Publishes `n` events numbered `from..from+n` on `channel` in batches.
async fn publish_numbered(server: &TestServer, channel: &str, from: u64, n: u64) {
    let mut next = from;
    while next < from + n {
        let count = (from + n - next).min(250);
        let events: Vec<Value> =
            (next..next + count).map(|i| json!({"channel": channel, "type": "demo.tick", "data": {"n": i}})).collect();
        let (status, body) = server.post("/api/publish/batch", json!({ "events": events })).await;
        assert_eq!(status, 202, "{body}");
        next += count;
    }
}

/// Subscribes to `channel` asking to recover from `offset` in `epoch`;
/// returns the `channel.subscribed`.
async fn recover(client: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    let recover = json!({ channel: {"offset": offset, "epoch": epoch} });
    let id = client.request("channel.subscribe", None, json!({"channels": [channel], "recover": recover})).await;
    let ack = client.recv_type("channel.subscribed").await;
    assert_eq!(ack["reply_to"], id.as_str());
    ack
}

/// Reads events of `channel` until the one numbered `last`, checking each
/// follows the one before (offset +1, `data.n` +1): nothing lost, nothing
/// twice, in order. Returns the last offset.
async fn read_through(client: &mut Client, mut offset: u64, mut n: u64, last: u64) -> u64 {
    while n < last {
        let event = client.recv_type("demo.tick").await;
        assert_eq!(event["offset"], offset + 1, "after offset {offset}: {event}");
        assert_eq!(event["data"]["n"], n + 1, "after event {n}: {event}");
        offset += 1;
        n += 1;
    }
    offset
}

/// The epoch each `channel.subscribed` names, by channel (replies for
/// several channels come in any order).
fn epochs(acks: &[Value]) -> std::collections::BTreeMap<String, String> {
    acks.iter().map(|a| (a["channel"].as_str().unwrap().to_owned(), position(a).1)).collect()
}

fn position(ack: &Value) -> (u64, String) {
    let offset = ack["data"]["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {ack}"));
    let epoch = ack["data"]["epoch"].as_str().unwrap_or_else(|| panic!("no epoch: {ack}"));
    (offset, epoch.to_owned())
}

async fn channels_with_history_tell_their_position_and_number_events(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let mut alice = server.connect_as("alice").await;
    let mut acks = alice.subscribe(&[CHANNEL, "team:t1"]).await;
    acks.sort_by_key(|a| a["channel"].as_str().unwrap().to_owned());
    let (offset, epoch) = position(&acks[0]);
    assert_eq!(offset, 0);
    assert!(!epoch.is_empty());
    assert_eq!(acks[1]["data"].get("offset"), None, "team: keeps no history by default: {}", acks[1]);
    assert_eq!(acks[0]["data"].get("recovered"), None, "no recovery asked: {}", acks[0]);
    publish_numbered(&server, CHANNEL, 1, 3).await;
    assert_eq!(read_through(&mut alice, 0, 0, 3).await, 3);
    server.publish("team:t1", "demo.tick", json!({"n": 1})).await;
    let plain = alice.recv_type("demo.tick").await;
    assert_eq!(plain.get("offset"), None, "{plain}");
    // A second subscriber starts where the channel is.
    let mut bob = server.connect_as("bob").await;
    let ack = bob.subscribe(&[CHANNEL]).await.remove(0);
    assert_eq!(position(&ack), (3, epoch));
}

async fn a_client_that_dropped_recovers_every_missed_event_while_publishing_goes_on(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |a| a.history = Some("conversation=2000/10m".into()));
    let mut alice = server.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    publish_numbered(&server, CHANNEL, 1, 20).await;
    let seen = read_through(&mut alice, 0, 0, 20).await;
    alice.close().await;

    // 500 events while it is away, then more while it comes back.
    publish_numbered(&server, CHANNEL, 21, 500).await;
    server.wait_for_history(CHANNEL, 520).await;
    let back = async {
        let mut alice = server.connect_as("alice").await;
        let ack = recover(&mut alice, CHANNEL, seen, &epoch).await;
        (alice, ack)
    };
    let ((mut alice, ack), ()) = tokio::join!(back, publish_numbered(&server, CHANNEL, 521, 300));
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    let (top, same) = position(&ack);
    assert_eq!(same, epoch);
    assert!(top >= 520, "the subscription starts after what was published before it: {ack}");
    assert_eq!(ack["data"]["missed"], top - seen, "{ack}");
    read_through(&mut alice, seen, 20, 820).await;
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_position_in_another_epoch_is_not_recovered() {
    let first = TestServer::start();
    let mut alice = first.connect_as("alice").await;
    alice.subscribe(&[CHANNEL]).await;
    publish_numbered(&first, CHANNEL, 1, 5).await;
    read_through(&mut alice, 0, 0, 5).await;
    let (_, old_epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    drop(alice);
    drop(first);

    // A restarted node keeps nothing: a new epoch.
    let second = TestServer::start();
    publish_numbered(&second, CHANNEL, 1, 7).await;
    let mut alice = second.connect_as("alice").await;
    let ack = recover(&mut alice, CHANNEL, 5, &old_epoch).await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    assert_eq!(ack["data"]["missed"], 0, "{ack}");
    let (top, epoch) = position(&ack);
    assert_eq!(top, 7);
    assert_ne!(epoch, old_epoch);
    // Live events follow, and nothing old.
    publish_numbered(&second, CHANNEL, 8, 1).await;
    read_through(&mut alice, 7, 7, 8).await;
    alice.assert_nothing_pending().await;
}

async fn events_trimmed_or_expired_from_history_are_not_recovered(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |a| a.history = Some("conversation=5/1h,agent=50/300ms".into()));
    let mut alice = server.connect_as("alice").await;
    let epochs = epochs(&alice.subscribe(&[CHANNEL, "agent:a1"]).await);
    let (epoch, agent_epoch) = (epochs[CHANNEL].clone(), epochs["agent:a1"].clone());
    alice.close().await;
    publish_numbered(&server, CHANNEL, 1, 10).await;
    publish_numbered(&server, "agent:a1", 1, 2).await;
    server.wait_for_history(CHANNEL, 10).await;
    server.wait_for_history("agent:a1", 2).await;

    let mut back = server.connect_as("alice").await;
    // Offsets 2..=5 were trimmed: from 1, events are missing.
    let ack = recover(&mut back, CHANNEL, 1, &epoch).await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    // From 5, the five kept are exactly what was missed.
    let mut again = server.connect_as("alice").await;
    let ack = recover(&mut again, CHANNEL, 5, &epoch).await;
    assert_eq!((ack["data"]["recovered"].clone(), ack["data"]["missed"].clone()), (json!(true), json!(5)), "{ack}");
    read_through(&mut again, 5, 5, 10).await;

    // Time passes the agent channel's 300 ms: its events are gone.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let ack = recover(&mut back, "agent:a1", 0, &agent_epoch).await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    assert_eq!(position(&ack), (2, agent_epoch), "the position outlives the events");
    back.assert_nothing_pending().await;
}

async fn recovering_where_nothing_was_missed_or_without_history(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let mut alice = server.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    publish_numbered(&server, CHANNEL, 1, 2).await;
    read_through(&mut alice, 0, 0, 2).await;
    let mut bob = server.connect_as("bob").await;
    let ack = recover(&mut bob, CHANNEL, 2, &epoch).await;
    assert_eq!((ack["data"]["recovered"].clone(), ack["data"]["missed"].clone()), (json!(true), json!(0)), "{ack}");
    // A position ahead of the channel is not one it had.
    let ack = recover(&mut bob, "conversation:c2", 9, &epoch).await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    // No history in team: channels.
    let ack = recover(&mut bob, "team:t1", 1, "e1").await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    assert_eq!(ack["data"].get("offset"), None, "{ack}");
    bob.assert_nothing_pending().await;
}

async fn connection_reconnect_authenticates_and_recovers_three_channels_in_one_frame(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let channels = ["conversation:c1", "conversation:c2", "agent:a1"];
    let mut alice = server.connect_as("alice").await;
    let epochs = epochs(&alice.subscribe(&channels).await);
    alice.close().await;
    for (i, channel) in channels.iter().enumerate() {
        publish_numbered(&server, channel, 1, 3 + i as u64).await;
        server.wait_for_history(channel, 3 + i as u64).await;
    }

    let mut back = server.connect().await;
    let id = back
        .request(
            "connection.reconnect",
            None,
            json!({
                "api_key": "development",
                "user_id": "alice",
                "channels": {
                    "conversation:c1": {"offset": 0, "epoch": epochs["conversation:c1"]},
                    "conversation:c2": {"offset": 2, "epoch": epochs["conversation:c2"]},
                    "agent:a1": {},
                },
                "previous_connection_id": "node-1",
            }),
        )
        .await;
    let ack = back.recv_type("connection.ack").await;
    assert_eq!(ack["reply_to"], id.as_str());
    // Each channel: its reply, then what it missed; channels in any order.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let reply = back.recv_type("channel.subscribed").await;
        assert_eq!(reply["reply_to"], id.as_str());
        let channel = reply["channel"].as_str().unwrap().to_owned();
        let missed = reply["data"]["missed"].as_u64().unwrap_or(0);
        let from = match channel.as_str() {
            "conversation:c1" => 0,
            "conversation:c2" => 2,
            _ => {
                assert_eq!(reply["data"].get("recovered"), None, "no position given: {reply}");
                assert_eq!(position(&reply).0, 5);
                seen.insert(channel, reply);
                continue;
            }
        };
        assert_eq!(reply["data"]["recovered"], true, "{reply}");
        for i in 1..=missed {
            let event = back.recv_type("demo.tick").await;
            assert_eq!(event["channel"], channel.as_str());
            assert_eq!(event["offset"], from + i, "{event}");
        }
        seen.insert(channel, reply);
    }
    assert_eq!(seen["conversation:c1"]["data"]["missed"], 3);
    assert_eq!(seen["conversation:c2"]["data"]["missed"], 2);
    back.assert_nothing_pending().await;
}

async fn bad_recovery_requests_are_refused_and_change_nothing(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let mut alice = server.connect_as("alice").await;
    for recover in [
        json!({"conversation:c2": {"offset": 1, "epoch": "e"}}),
        json!({CHANNEL: {"offset": -1, "epoch": "e"}}),
        json!({CHANNEL: {"offset": 1}}),
        json!({CHANNEL: {"offset": 1, "epoch": ""}}),
        json!({CHANNEL: {"offset": 1, "epoch": "x".repeat(65)}}),
        json!([1, 2]),
    ] {
        let id = alice.request("channel.subscribe", None, json!({"channels": [CHANNEL], "recover": recover})).await;
        let error = alice.expect_error(4005).await;
        assert_eq!(error["reply_to"], id.as_str(), "{recover}: {error}");
    }
    // Nothing was subscribed: an event of the channel does not come.
    server.publish(CHANNEL, "demo.tick", json!({"n": 1})).await;
    alice.assert_nothing_pending().await;
    // A reconnect's position is both fields or none.
    for at in [json!({"offset": 1}), json!({"epoch": "e"}), json!({"offset": 1.5, "epoch": "e"})] {
        alice.request("connection.reconnect", None, json!({"channels": { CHANNEL: at }})).await;
        alice.expect_error(4005).await;
    }
    // Credentials once authenticated are refused.
    let channels = json!({"channels": {CHANNEL: {}}, "api_key": "development"});
    alice.request("connection.reconnect", None, channels).await;
    alice.expect_error(4005).await;
    alice.assert_nothing_pending().await;
}

async fn a_channel_named_twice_is_recovered_once(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let mut alice = server.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    alice.close().await;
    publish_numbered(&server, CHANNEL, 1, 6).await;
    server.wait_for_history(CHANNEL, 6).await;
    let mut back = server.connect_as("alice").await;
    let recover = json!({ CHANNEL: {"offset": 3, "epoch": epoch} });
    let id = back.request("channel.subscribe", None, json!({"channels": [CHANNEL, CHANNEL], "recover": recover})).await;
    let ack = back.recv_type("channel.subscribed").await;
    assert_eq!(ack["reply_to"], id.as_str());
    assert_eq!((ack["data"]["recovered"].clone(), ack["data"]["missed"].clone()), (json!(true), json!(3)), "{ack}");
    read_through(&mut back, 3, 3, 6).await;
    back.assert_nothing_pending().await;
}

async fn the_history_api_pages_through_kept_events(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |a| a.history = Some("conversation=5/1h".into()));
    publish_numbered(&server, CHANNEL, 1, 8).await;
    server.wait_for_history(CHANNEL, 8).await;
    let (status, body) = server.get(&format!("/api/channels/{CHANNEL}/history?since=4&limit=2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 8);
    assert_eq!(body["complete"], true, "{body}");
    let offsets: Vec<&Value> = body["events"].as_array().unwrap().iter().map(|e| &e["offset"]).collect();
    assert_eq!(offsets, [&json!(5), &json!(6)]);
    assert_eq!(body["events"][0]["data"]["n"], 5);
    // Offsets 1..=3 were trimmed.
    let (_, body) = server.get(&format!("/api/channels/{CHANNEL}/history")).await;
    assert_eq!(body["complete"], false, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 5);
    let (status, body) = server.get("/api/channels/team:t1/history").await;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!("history_not_kept")), "{body}");
    for bad in ["/api/channels/nope:x/history", "/api/channels/conversation:c1/history?limit=0"] {
        let (status, body) = server.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = server.get_with(&format!("/api/channels/{CHANNEL}/history"), None).await;
    assert_eq!(status, 401);
}

#[actix_rt::test]
async fn past_the_memory_cap_the_oldest_channels_lose_history_and_change_epoch() {
    let server = TestServer::with(|a| a.history_memory_mb = Some(1));
    let mut alice = server.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&["conversation:old"]).await.remove(0));
    alice.close().await;
    publish_numbered(&server, "conversation:old", 1, 3).await;
    // 300 events of ~1 KiB on each of 8 other channels: over 1 MiB.
    let filler = "x".repeat(1000);
    for c in 0..8 {
        let channel = format!("conversation:new{c}");
        let events: Vec<Value> = (0..300)
            .map(|i| json!({"channel": channel, "type": "demo.fill", "data": {"n": i, "text": filler}}))
            .collect();
        let (status, body) = server.post("/api/publish/batch", json!({ "events": events })).await;
        assert_eq!(status, 202, "{body}");
    }
    let mut back = server.connect_as("alice").await;
    let ack = recover(&mut back, "conversation:old", 0, &epoch).await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    let (_, new_epoch) = position(&ack);
    assert_ne!(new_epoch, epoch, "evicted history starts a new epoch");

    // A member that stays while its channel is evicted hears of the new
    // epoch before the channel's next event.
    for c in 0..4 {
        let channel = format!("conversation:more{c}");
        let events: Vec<Value> = (0..300)
            .map(|i| json!({"channel": channel, "type": "demo.fill", "data": {"n": i, "text": filler}}))
            .collect();
        server.post("/api/publish/batch", json!({ "events": events })).await;
    }
    publish_numbered(&server, "conversation:old", 1, 1).await;
    let notice = back.recv_type("channel.subscribed").await;
    assert_eq!(notice.get("reply_to"), None, "{notice}");
    assert_eq!(notice["data"]["offset"], 0, "{notice}");
    assert_ne!(notice["data"]["epoch"], new_epoch.as_str(), "{notice}");
    let event = back.recv_type("demo.tick").await;
    assert_eq!(event["offset"], 1, "{event}");
    back.assert_nothing_pending().await;
}

/// Publishes answer `stream` token by token; returns the offsets the
/// chunks got (read from `watcher`, a subscriber).
async fn stream_tokens(server: &TestServer, stream: &str, chunks: &[&str], last: bool) {
    let events: Vec<Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let is_final = last && i + 1 == chunks.len();
            json!({"channel": CHANNEL, "type": "assistant.token", "data": {"stream_id": stream, "chunk": chunk, "is_final": is_final}})
        })
        .collect();
    let (status, body) = server.post("/api/publish/batch", json!({ "events": events })).await;
    assert_eq!(status, 202, "{body}");
}

/// Reads `n` `assistant.token` frames, checking offsets follow `after`;
/// returns their text and the last offset.
async fn read_tokens(client: &mut Client, mut after: u64, n: usize) -> (String, u64) {
    let mut text = String::new();
    for _ in 0..n {
        let token = client.recv_type("assistant.token").await;
        assert!(token["offset"].as_u64().unwrap() > after, "a token at or before {after}: {token}");
        after = token["offset"].as_u64().unwrap();
        text.push_str(token["data"]["chunk"].as_str().unwrap());
    }
    (text, after)
}

async fn a_late_joiner_gets_the_answer_so_far_as_one_snapshot_then_the_rest(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let mut alice = server.subscriber("alice", &[CHANNEL]).await;
    server.publish(CHANNEL, "assistant.start", json!({"stream_id": "s1"})).await;
    alice.recv_type("assistant.start").await;
    stream_tokens(&server, "s1", &["The ", "answer ", "is"], false).await;
    let (early, at) = read_tokens(&mut alice, 1, 3).await;

    let mut bob = server.connect_as("bob").await;
    let ack = bob.subscribe(&[CHANNEL]).await.remove(0);
    assert_eq!(position(&ack).0, at);
    let snapshot = bob.recv_type("assistant.snapshot").await;
    alice.recv_type("channel.presence").await;
    assert_eq!(snapshot["channel"], CHANNEL);
    assert_eq!(snapshot["data"], json!({"stream_id": "s1", "text": early, "offset": at, "is_final": false}));

    stream_tokens(&server, "s1", &[" forty", "-two."], true).await;
    let (rest, _) = read_tokens(&mut bob, at, 2).await;
    let (alice_rest, _) = read_tokens(&mut alice, at, 2).await;
    assert_eq!(format!("{early}{rest}"), format!("{early}{alice_rest}"));
    assert_eq!(format!("{early}{rest}"), "The answer is forty-two.");
    bob.assert_nothing_pending().await;

    // Just finished: a newcomer gets it whole, marked final.
    let mut carol = server.connect_as("carol").await;
    carol.subscribe(&[CHANNEL]).await;
    let snapshot = carol.recv_type("assistant.snapshot").await;
    assert_eq!(snapshot["data"]["text"], "The answer is forty-two.");
    assert_eq!(snapshot["data"]["is_final"], true);
    carol.assert_nothing_pending().await;
}

async fn recovery_replaces_the_tokens_of_answers_begun_since_with_a_snapshot(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |_| {});
    let mut alice = server.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    publish_numbered(&server, CHANNEL, 1, 2).await;
    read_through(&mut alice, 0, 0, 2).await;
    alice.close().await;
    // While away: an answer streams (tokens at 3..=5), a tick (6), more tokens (7).
    stream_tokens(&server, "s1", &["a", "b", "c"], false).await;
    publish_numbered(&server, CHANNEL, 3, 1).await;
    stream_tokens(&server, "s1", &["d"], false).await;
    server.wait_for_history(CHANNEL, 7).await;

    let mut back = server.connect_as("alice").await;
    let ack = recover(&mut back, CHANNEL, 2, &epoch).await;
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    assert_eq!(ack["data"]["missed"], 1, "the tick; the tokens come as the snapshot: {ack}");
    let tick = back.recv_type("demo.tick").await;
    assert_eq!(tick["offset"], 6);
    let snapshot = back.recv_type("assistant.snapshot").await;
    assert_eq!(snapshot["data"], json!({"stream_id": "s1", "text": "abcd", "offset": 7, "is_final": false}));
    back.assert_nothing_pending().await;

    // A client that saw the answer begin gets the plain tokens it missed.
    let mut early = server.connect_as("dave").await;
    let ack = recover(&mut early, CHANNEL, 4, &epoch).await;
    assert_eq!((ack["data"]["recovered"].clone(), ack["data"]["missed"].clone()), (json!(true), json!(3)), "{ack}");
    let (text, _) = read_tokens(&mut early, 4, 1).await;
    assert_eq!(text, "c");
    early.recv_type("demo.tick").await;
    assert_eq!(read_tokens(&mut early, 6, 1).await.0, "d");
    early.assert_nothing_pending().await;
}

async fn an_answer_longer_than_the_history_still_comes_back_whole(brokers: Brokers) {
    let deployment = Deployment::new(brokers);
    let server = deployment.node("a", |a| a.history = Some("conversation=5/1h".into()));
    let mut alice = server.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    alice.close().await;
    let chunks: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    stream_tokens(&server, "long", &chunks, false).await;
    server.wait_for_history(CHANNEL, 40).await;

    let mut back = server.connect_as("alice").await;
    let ack = recover(&mut back, CHANNEL, 0, &epoch).await;
    assert_eq!(ack["data"]["recovered"], false, "35 tokens are gone from history: {ack}");
    let snapshot = back.recv_type("assistant.snapshot").await;
    assert_eq!(snapshot["data"]["text"], chunks.concat());
    assert_eq!(snapshot["data"]["offset"], 40);
    stream_tokens(&server, "long", &["end"], true).await;
    let (last, _) = read_tokens(&mut back, 40, 1).await;
    assert_eq!(last, "end");
    back.assert_nothing_pending().await;
}

/// Each suite above, once on the memory broker and once on Redis.
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use crate::common::Brokers;
            $(#[actix_rt::test]
            async fn $name() {
                super::$name(Brokers::Memory).await
            })*
        }
        mod redis {
            use crate::common::Brokers;
            $(#[actix_rt::test]
            async fn $name() {
                super::$name(Brokers::Redis).await
            })*
        }
    };
}

on_both_brokers!(
    a_channel_named_twice_is_recovered_once,
    channels_with_history_tell_their_position_and_number_events,
    a_client_that_dropped_recovers_every_missed_event_while_publishing_goes_on,
    events_trimmed_or_expired_from_history_are_not_recovered,
    recovering_where_nothing_was_missed_or_without_history,
    connection_reconnect_authenticates_and_recovers_three_channels_in_one_frame,
    bad_recovery_requests_are_refused_and_change_nothing,
    the_history_api_pages_through_kept_events,
    a_late_joiner_gets_the_answer_so_far_as_one_snapshot_then_the_rest,
    recovery_replaces_the_tokens_of_answers_begun_since_with_a_snapshot,
    an_answer_longer_than_the_history_still_comes_back_whole,
);
