//! Rate limits per user and per request type (`actors/src/quota.rs`): they
//! span all of a user's connections on the node, refuse with 4004 naming the
//! limit and the time after which the request would pass, keep the
//! connection, and are configured through flags, the environment and the
//! YAML file, a bad rate refusing the start.

use std::time::Duration;

use serde_json::{json, Value};

use crate::binary::Process;
use crate::common::{Client, TestServer};

/// Asserts `frame` is the refusal of request `id` by `limit` and returns
/// its `retry_after_ms`.
fn refusal(frame: &Value, id: &str, limit: Value) -> u64 {
    assert_eq!(frame["type"], "error", "not refused: {frame}");
    assert_eq!(frame["data"]["code"], 4004, "{frame}");
    assert_eq!(frame["reply_to"], id, "the refusal names the request: {frame}");
    assert_eq!(frame["data"]["limit"], limit, "{frame}");
    assert!(frame["data"]["message"].as_str().is_some_and(|m| m.contains("rate limit")), "{frame}");
    let retry_after = frame["data"]["retry_after_ms"].as_u64();
    retry_after.unwrap_or_else(|| panic!("no integer retry_after_ms: {frame}"))
}

/// A `channel.subscribe` of one channel: a request no limit per type
/// applies to by default; its id.
async fn subscribe_request(client: &mut Client, channel: &str) -> String {
    client.request("channel.subscribe", None, json!({"channels": [channel]})).await
}

/// Sends a `chat.message` and waits for its receipt.
async fn chat(client: &mut Client, channel: &str, content: &str) {
    let id = client.request("chat.message", Some(channel), json!({"content": content})).await;
    let receipt = client.recv().await;
    assert_eq!(receipt["type"], "message.received", "{receipt}");
    assert_eq!(receipt["reply_to"], id.as_str());
}

#[actix_rt::test]
async fn the_user_limit_spans_the_users_connections_and_spares_other_users() {
    // One request a second, bursts of 4: far under the per-connection limit
    // (50/s, bursts of 100) that each connection has on its own.
    let server = TestServer::with(|a| {
        a.user_requests_per_second = Some(1);
        a.user_request_burst = Some(4);
    });
    let mut tab1 = server.connect_as("alice").await;
    let mut tab2 = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;
    for _ in 0..4 {
        let id = subscribe_request(&mut tab1, "conversation:a").await;
        assert_eq!(tab1.recv_type("channel.subscribed").await["reply_to"], id.as_str());
    }
    // The first tab spent the user's burst: the second is refused, though
    // it has sent nothing yet. (Three requests, so that a stall of the
    // machine long enough to refill a cell or two cannot hide the limit.)
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(subscribe_request(&mut tab2, "conversation:b").await);
    }
    let mut retry_after = None;
    for id in &ids {
        let frame = tab2.recv().await;
        if frame["type"] == "channel.subscribed" {
            assert_eq!(frame["reply_to"], id.as_str());
            continue;
        }
        let limit = json!({"scope": "user", "rate": "1/s", "burst": 4});
        let ms = refusal(&frame, id, limit);
        assert!((1..=1000).contains(&ms), "one cell at 1/s is at most a second away: {frame}");
        retry_after = Some((id.clone(), ms));
    }
    let (refused, ms) = retry_after.expect("the second connection is refused once the user's limit is spent");

    // Another user has a limit of its own.
    let id = subscribe_request(&mut bob, "conversation:c").await;
    assert_eq!(bob.recv_type("channel.subscribed").await["reply_to"], id.as_str());
    // The connection stays open (a heartbeat does not count).
    tab2.assert_nothing_pending().await;
    // After the time the server gave, the same request passes.
    tokio::time::sleep(Duration::from_millis(ms)).await;
    tab2.send(json!({"id": refused, "type": "channel.subscribe", "data": {"channels": ["conversation:b"]}})).await;
    assert_eq!(tab2.recv_type("channel.subscribed").await["reply_to"], refused.as_str());

    let metrics = server.metrics().await;
    assert!(metrics["user_rate_limited"].as_u64().is_some_and(|n| (1..=3).contains(&n)), "{metrics}");
    assert_eq!(metrics["event_rate_limited"], 0, "{metrics}");
}

#[actix_rt::test]
async fn each_request_type_has_its_own_limit_per_user() {
    let server = TestServer::with(|a| {
        a.event_rate_limits = Some("chat.message=2/min,chat.typing=1/min".parse().expect("limits"));
    });
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut alice = server.connect_as("alice").await;
    for content in ["m0", "m1"] {
        chat(&mut alice, "conversation:c1", content).await;
        assert_eq!(bob.recv_type("chat.message").await["data"]["content"], content);
    }
    let id = alice.request("chat.message", Some("conversation:c1"), json!({"content": "m2"})).await;
    let limit = json!({"scope": "event", "type": "chat.message", "rate": "2/min", "burst": 2});
    let ms = refusal(&alice.recv().await, &id, limit);
    assert!((1..=30_000).contains(&ms), "2/min: a cell every 30 s, got {ms}");

    // chat.typing counts apart from chat.message.
    alice.request("chat.typing", Some("conversation:c1"), json!({})).await;
    assert_eq!(bob.recv_type("chat.typing").await["data"]["sender_id"], "alice");
    let id = alice.request("chat.typing", Some("conversation:c1"), json!({})).await;
    let limit = json!({"scope": "event", "type": "chat.typing", "rate": "1/min", "burst": 1});
    let ms = refusal(&alice.recv().await, &id, limit);
    assert!((1..=60_000).contains(&ms), "{ms}");

    // Another user has limits of its own.
    let mut carol = server.connect_as("carol").await;
    chat(&mut carol, "conversation:c1", "from carol").await;
    assert_eq!(bob.recv_type("chat.message").await["data"]["sender_id"], "carol");
    // Nothing refused reached the channel, and alice's connection serves on.
    bob.assert_nothing_pending().await;
    alice.subscribe(&["conversation:c2"]).await;

    let metrics = server.metrics().await;
    assert_eq!(metrics["event_rate_limited"], 2, "{metrics}");
    // Every limited type is listed, the defaults not replaced included.
    let by_type = json!({"agent.invoke": 0, "chat.message": 1, "chat.typing": 1, "file.upload.request": 0});
    assert_eq!(metrics["event_rate_limited_by_type"], by_type, "{metrics}");
    assert_eq!(metrics["user_rate_limited"], 0, "{metrics}");
}

#[actix_rt::test]
async fn malformed_requests_do_not_count_against_their_types_limit() {
    let server = TestServer::with(|a| a.event_rate_limits = Some("chat.message=1/min".parse().expect("limits")));
    let mut alice = server.connect_as("alice").await;
    for _ in 0..3 {
        let id = alice.request("chat.message", Some("conversation:c1"), json!({"text": "no content"})).await;
        assert_eq!(alice.expect_error(4005).await["reply_to"], id.as_str());
    }
    chat(&mut alice, "conversation:c1", "the first that counts").await;
    let id = alice.request("chat.message", Some("conversation:c1"), json!({"content": "over"})).await;
    let limit = json!({"scope": "event", "type": "chat.message", "rate": "1/min", "burst": 1});
    refusal(&alice.recv().await, &id, limit);
}

#[actix_rt::test]
async fn after_retry_after_ms_the_same_request_passes() {
    let server = TestServer::with(|a| a.event_rate_limits = Some("chat.message=4/s burst 2".parse().expect("limits")));
    let mut alice = server.connect_as("alice").await;
    // Requests back to back until one is refused: a stall of the machine
    // that refills a cell between two of them only makes the loop longer.
    let request =
        |id: &str| json!({"id": id, "type": "chat.message", "channel": "conversation:c1", "data": {"content": id}});
    let mut refused = None;
    for n in 0..20 {
        let id = format!("m{n}");
        alice.send(request(&id)).await;
        let answer = alice.recv().await;
        if answer["type"] == "error" {
            refused = Some((id, answer));
            break;
        }
        assert_eq!(answer["type"], "message.received", "{answer}");
    }
    let (id, answer) = refused.expect("4/s with bursts of 2 refuses one of 20 requests sent back to back");
    let limit = json!({"scope": "event", "type": "chat.message", "rate": "4/s", "burst": 2});
    let ms = refusal(&answer, &id, limit);
    assert!((1..=250).contains(&ms), "4/s: a cell every 250 ms, got {ms}");
    // Waiting what the server said is what this test is about.
    tokio::time::sleep(Duration::from_millis(ms)).await;
    alice.send(request(&id)).await;
    let receipt = alice.recv().await;
    assert_eq!(receipt["type"], "message.received", "not admitted after retry_after_ms: {receipt}");
    assert_eq!(receipt["reply_to"], id.as_str());
}

/// `configs/server.yaml`-style file in a directory of the test's own.
fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("server.yaml");
    std::fs::write(&path, yaml).expect("write the config file");
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    (dir, path)
}

#[actix_rt::test]
async fn limits_from_the_file_and_the_environment_take_effect() {
    // The file sets two types; the environment replaces one of them.
    let (_dir, path) = config_file("event_rate_limits:\n  chat.message: 1/min\n  chat.typing: 5/s\n");
    let env = [("NOVA_EVENT_RATE_LIMITS", "chat.typing=1/h")];
    let mut process = Process::spawn(&["--bind", "127.0.0.1:0", "--config", &path], &env);
    let addr = process.listening();
    let mut alice = Client::connect(&format!("ws://{addr}/ws")).await;
    alice.init(json!({"api_key": "development", "user_id": "alice"})).await;
    alice.subscribe(&["conversation:c1"]).await;

    chat(&mut alice, "conversation:c1", "hi").await;
    alice.recv_type("chat.message").await;
    let id = alice.request("chat.message", Some("conversation:c1"), json!({"content": "again"})).await;
    let limit = json!({"scope": "event", "type": "chat.message", "rate": "1/min", "burst": 1});
    refusal(&alice.recv().await, &id, limit);

    alice.request("chat.typing", Some("conversation:c1"), json!({})).await;
    alice.recv_type("chat.typing").await;
    let id = alice.request("chat.typing", Some("conversation:c1"), json!({})).await;
    let limit = json!({"scope": "event", "type": "chat.typing", "rate": "1/h", "burst": 1});
    refusal(&alice.recv().await, &id, limit);
}

#[actix_rt::test]
async fn a_bad_rate_is_refused_at_start_with_what_is_wrong() {
    let (_dir, path) = config_file("event_rate_limits:\n  chat.message: 5/x\n");
    let from_file = Process::spawn(&["--bind", "127.0.0.1:0", "--config", &path], &[]);
    let from_flag = Process::spawn(&["--bind", "127.0.0.1:0", "--event-rate-limits", "agent.invoke=fast"], &[]);
    let from_env = Process::spawn(&["--bind", "127.0.0.1:0"], &[("NOVA_EVENT_RATE_LIMITS", "chat.typing=2/s burst 0")]);
    for (mut process, needles) in [
        (from_file, ["event_rate_limits", "'chat.message'", "'5/x'", "the unit must be s, min or h"]),
        (from_flag, ["event_rate_limits", "'agent.invoke'", "'fast' is not a rate", "COUNT/UNIT"]),
        (from_env, ["event_rate_limits", "'chat.typing'", "'2/s burst 0'", "the burst must be at least 1"]),
    ] {
        let status = process.exit_status().await;
        let stderr = process.stderr();
        assert!(!status.success(), "started with a bad rate: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "the error should say {needle}:\n{stderr}");
        }
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}
