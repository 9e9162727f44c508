//! Recovery across nodes: a client that moves to another node, a node
//! killed mid-answer, a Redis that dies and comes back while a node
//! publishes, events that could not reach Redis.

use serde_json::{json, Value};

use crate::binary::Process;
use crate::common::{Client, RedisServer, TestServer, CLUSTER_SECRET};

const CHANNEL: &str = "conversation:c1";

async fn pair(redis: &RedisServer) -> (TestServer, TestServer) {
    let (a, b) = (TestServer::node(redis, "node-a"), TestServer::node(redis, "node-b"));
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    (a, b)
}

/// Publishes events numbered `from..from+n` on `server`, in one batch.
async fn publish_numbered(server: &TestServer, from: u64, n: u64) {
    let events: Vec<Value> =
        (from..from + n).map(|i| json!({"channel": CHANNEL, "type": "demo.tick", "data": {"n": i}})).collect();
    let (status, body) = server.post("/api/publish/batch", json!({ "events": events })).await;
    assert_eq!(status, 202, "{body}");
}

fn position(ack: &Value) -> (u64, String) {
    (ack["data"]["offset"].as_u64().unwrap(), ack["data"]["epoch"].as_str().unwrap().to_owned())
}

/// The `data.n` of the next `demo.tick`s up to `last`, skipping the
/// channel's own `channel.subscribed` notices (a new epoch).
async fn ticks_until(client: &mut Client, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("demo.tick") => {
                let n = frame["data"]["n"].as_u64().unwrap();
                seen.push(n);
                if n == last {
                    return seen;
                }
            }
            Some("channel.subscribed") => assert_eq!(frame.get("reply_to"), None, "{frame}"),
            _ => panic!("unexpected frame: {frame}"),
        }
    }
}

#[actix_rt::test]
async fn a_client_that_drops_from_one_node_recovers_on_another() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = a.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    publish_numbered(&a, 1, 10).await;
    assert_eq!(ticks_until(&mut alice, 10).await, (1..=10).collect::<Vec<_>>());
    alice.close().await;
    // Published on both nodes while it is away: one numbering.
    publish_numbered(&b, 11, 25).await;
    // Numbered by Redis as they arrive: node B's first, then node A's.
    b.wait_for_history(CHANNEL, 35).await;
    publish_numbered(&a, 36, 25).await;
    b.wait_for_history(CHANNEL, 60).await;

    let mut back = b.connect().await;
    let channels = json!({ CHANNEL: {"offset": 10, "epoch": epoch} });
    let id = back
        .request(
            "connection.reconnect",
            None,
            json!({"api_key": "development", "user_id": "alice", "channels": channels}),
        )
        .await;
    back.recv_type("connection.ack").await;
    let ack = back.recv_type("channel.subscribed").await;
    assert_eq!(ack["reply_to"], id.as_str());
    assert_eq!((ack["data"]["recovered"].clone(), ack["data"]["missed"].clone()), (json!(true), json!(50)), "{ack}");
    for offset in 11..=60 {
        let event = back.recv_type("demo.tick").await;
        assert_eq!((event["offset"].as_u64(), event["data"]["n"].as_u64()), (Some(offset), Some(offset)), "{event}");
    }
    // And live from either node.
    publish_numbered(&a, 61, 1).await;
    assert_eq!(back.recv_type("demo.tick").await["offset"], 61);
    back.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_node_killed_mid_answer_loses_nothing_of_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("NOVA_REDIS_URL", url.as_str()),
        ("NOVA_NODE_ID", "doomed"),
        ("NOVA_CLUSTER_SECRET", CLUSTER_SECRET),
        ("NOVA_DEVELOPMENT", "true"),
        // Its users stay listed well past the test: no presence frame
        // comes between the ones it reads.
        ("NOVA_REDIS_PRESENCE_TTL_MS", "60000"),
    ];
    let mut doomed = Process::spawn(&["--bind", "127.0.0.1:0"], &env);
    let doomed_addr = doomed.listening();
    let b = TestServer::node(&redis, "survivor");
    b.wait_for_redis("up").await;

    let mut alice = Client::connect(&format!("ws://{doomed_addr}/ws")).await;
    alice.init(json!({"api_key": "development", "user_id": "alice"})).await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    // The agent streams through the surviving node.
    let token = |chunk: &str, last: bool| json!({"channel": CHANNEL, "type": "assistant.token", "data": {"stream_id": "s1", "chunk": chunk, "is_final": last}});
    let (status, _) =
        b.post("/api/publish/batch", json!({"events": [token("Forty", false), token(" two", false)]})).await;
    assert_eq!(status, 202);
    let mut seen = 0;
    let mut text = String::new();
    for _ in 0..2 {
        let t = alice.recv_type("assistant.token").await;
        seen = t["offset"].as_u64().unwrap();
        text.push_str(t["data"]["chunk"].as_str().unwrap());
    }

    doomed.child.kill().expect("kill the node");
    let (status, _) =
        b.post("/api/publish/batch", json!({"events": [token(" is", false), token(" the", false)]})).await;
    assert_eq!(status, 202);
    b.wait_for_history(CHANNEL, seen + 2).await;

    // The returning client gets the tokens it missed; a new page, the
    // answer so far in one snapshot.
    let mut back = b.connect_as("alice").await;
    let recover = json!({ CHANNEL: {"offset": seen, "epoch": epoch} });
    back.request("channel.subscribe", None, json!({"channels": [CHANNEL], "recover": recover})).await;
    let ack = back.recv_type("channel.subscribed").await;
    assert_eq!((ack["data"]["recovered"].clone(), ack["data"]["missed"].clone()), (json!(true), json!(2)), "{ack}");
    for _ in 0..2 {
        text.push_str(back.recv_type("assistant.token").await["data"]["chunk"].as_str().unwrap());
    }
    let mut fresh = b.connect_as("bob").await;
    fresh.subscribe(&[CHANNEL]).await;
    let snapshot = fresh.recv_type("assistant.snapshot").await;
    assert_eq!(snapshot["data"]["text"], "Forty two is the");
    let (status, _) = b.post("/api/publish/batch", json!({"events": [token(" answer", true)]})).await;
    assert_eq!(status, 202);
    back.recv_type("channel.presence").await;
    text.push_str(back.recv_type("assistant.token").await["data"]["chunk"].as_str().unwrap());
    let last = fresh.recv_type("assistant.token").await;
    assert_eq!(
        format!("{}{}", snapshot["data"]["text"].as_str().unwrap(), last["data"]["chunk"].as_str().unwrap()),
        text
    );
    assert_eq!(text, "Forty two is the answer");
}

#[actix_rt::test]
async fn redis_killed_and_restarted_while_a_node_publishes_loses_no_event() {
    let mut redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = a.subscriber("alice", &[CHANNEL]).await;
    let mut bob = b.subscriber("bob", &[CHANNEL]).await;
    alice.recv_type("channel.presence").await;
    publish_numbered(&a, 1, 20).await;
    assert_eq!(ticks_until(&mut bob, 20).await, (1..=20).collect::<Vec<_>>());
    assert_eq!(ticks_until(&mut alice, 20).await, (1..=20).collect::<Vec<_>>());

    redis.kill();
    a.wait_for_redis("down").await;
    // Accepted while Redis is gone: kept in node A's outbox, in order.
    for n in (21..=40).step_by(5) {
        publish_numbered(&a, n, 5).await;
    }
    redis.restart();
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    publish_numbered(&a, 41, 10).await;

    // Every event once, in order, on both nodes; the new epoch (Redis
    // restarted empty) is announced on the way.
    assert_eq!(ticks_until(&mut bob, 50).await, (21..=50).collect::<Vec<_>>());
    assert_eq!(ticks_until(&mut alice, 50).await, (21..=50).collect::<Vec<_>>());
    bob.assert_nothing_pending().await;
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn events_that_could_not_reach_redis_change_the_epoch() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = b.connect_as("alice").await;
    let (_, epoch) = position(&alice.subscribe(&[CHANNEL]).await.remove(0));
    publish_numbered(&a, 1, 5).await;
    assert_eq!(ticks_until(&mut alice, 5).await, (1..=5).collect::<Vec<_>>());
    alice.close().await;

    // A frozen Redis: node A's outbox fills (16,384 events) and overflows.
    redis.signal("-STOP");
    for n in 0..17 {
        publish_numbered(&a, 6 + n * 1000, 1000).await;
    }
    redis.signal("-CONT");
    a.wait_for_metrics("events counted as lost", |m| m["redis"]["history_lost"].as_u64() > Some(0)).await;
    a.wait_for_metrics("the outbox to drain", |m| m["redis"]["published"] == m["redis"]["queued"]).await;
    // The channel's next event goes out in a new epoch.
    publish_numbered(&a, 100_000, 1).await;
    a.wait_for_metrics("the epoch changed", |m| m["redis"]["epochs_bumped"].as_u64() > Some(0)).await;

    let mut back = b.connect_as("alice").await;
    let recover = json!({ CHANNEL: {"offset": 5, "epoch": epoch} });
    back.request("channel.subscribe", None, json!({"channels": [CHANNEL], "recover": recover})).await;
    let ack = back.recv_type("channel.subscribed").await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    assert_ne!(position(&ack).1, epoch, "{ack}");
}
