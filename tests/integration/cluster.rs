//! Several nodes on one Redis: each test starts its own `redis-server` on a
//! free port and two or three real server nodes, and drives them with real
//! clients. Cross-node delivery (exactly once), subscriptions in Redis that
//! follow local interest, presence across nodes and after a node dies,
//! direct messages and broadcasts, an external publisher, forged and invalid
//! messages in the nodes' own format, and Redis missing, killed, restarted
//! and frozen.

use serde_json::{json, Value};

use crate::binary::Process;
use crate::common::{sealed, Client, RedisServer, TestServer, CLUSTER_SECRET};

/// Connected to Redis, both of them.
async fn pair(redis: &RedisServer) -> (TestServer, TestServer) {
    let (a, b) = (TestServer::node(redis, "node-a"), TestServer::node(redis, "node-b"));
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    (a, b)
}

/// Proves nothing more is on its way to `clients` from Redis: once each
/// node has written everything it queued for Redis, a marker published into
/// Redis now reaches every client after anything Redis had for it.
async fn assert_marker_is_next(redis: &RedisServer, nodes: &[&TestServer], channel: &str, clients: &mut [&mut Client]) {
    for node in nodes {
        node.wait_for_metrics("the outbox to drain", |m| m["redis"]["published"] == m["redis"]["queued"]).await;
    }
    let marker = format!("marker-{}", crate::common::now_ms());
    redis.publish(&format!("nova:ch:{channel}"), &json!({"type": "marker", "id": marker}).to_string());
    for client in clients {
        assert_eq!(recv_event(client, "marker").await["id"], marker.as_str());
    }
}

/// Waits until Redis counts `user` present in `channel` on `nodes` nodes:
/// a user is counted a moment after their `channel.subscribed`, and a
/// reconnecting node counts its users again a moment after it is up.
async fn wait_counted(redis: &RedisServer, channel: &str, user: &str, nodes: u32) {
    let key = format!("nova:presence:{channel}");
    let read =
        |r: &RedisServer| -> Option<u32> { redis::cmd("HGET").arg(&key).arg(user).query(&mut r.connection()).unwrap() };
    redis.wait_for(&format!("{user} counted on {nodes} nodes"), read, |n| *n == Some(nodes)).await;
}

/// Receives the next event of type `kind`, skipping presence frames.
async fn recv_event(client: &mut Client, kind: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] != "channel.presence" {
            assert_eq!(frame["type"], kind, "unexpected frame: {frame}");
            return frame;
        }
    }
}

#[actix_rt::test]
async fn an_event_published_on_any_node_reaches_every_subscriber_once() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let c = TestServer::node(&redis, "node-c");
    c.wait_for_redis("up").await;
    let mut subs = vec![
        a.subscriber("a1", &["team:t1"]).await,
        a.subscriber("a2", &["team:t1"]).await,
        b.subscriber("b1", &["team:t1"]).await,
        c.subscriber("c1", &["team:t1"]).await,
    ];
    let mut bystander = b.subscriber("other", &["team:t2"]).await;

    // REST on node A.
    let id = a.publish("team:t1", "demo.task", json!({"n": 1})).await;
    let mut texts = Vec::new();
    for sub in &mut subs {
        let frame = recv_event(sub, "demo.task").await;
        assert_eq!(frame["id"], id.as_str());
        assert_eq!(frame["data"]["n"], 1);
        texts.push(frame.to_string());
    }
    assert!(
        texts.windows(2).all(|w| w[0] == w[1]),
        "every node sends the same event, id and timestamp included: {texts:?}"
    );

    // A client's chat message on node B.
    let mut sender = b.subscriber("writer", &["team:t1"]).await;
    sender.request("chat.message", Some("team:t1"), json!({"content": "hi"})).await;
    let receipt = sender.recv_type("message.received").await;
    let message_id = receipt["data"]["message_id"].clone();
    for sub in &mut subs {
        let frame = recv_event(sub, "chat.message").await;
        assert_eq!(frame["data"]["message_id"], message_id);
        assert_eq!(frame["data"]["sender_id"], "writer");
    }
    let echo = recv_event(&mut sender, "chat.message").await;
    assert_eq!(echo["data"]["message_id"], message_id);

    // Exactly once: no node hands its own event back to its clients.
    let mut everyone: Vec<&mut Client> = subs.iter_mut().chain([&mut sender]).collect();
    assert_marker_is_next(&redis, &[&a, &b, &c], "team:t1", &mut everyone).await;
    bystander.assert_nothing_pending().await;
    let metrics = a.metrics().await;
    assert_eq!(metrics["redis"]["status"], "up", "{metrics}");
}

#[actix_rt::test]
async fn redis_subscriptions_follow_local_interest() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let name = "nova:ch:document:d1";
    assert_eq!(redis.subscribers(name), 0);

    // The first subscriber's `channel.subscribed` comes after the node's
    // subscription in Redis is in place.
    let mut on_a = a.subscriber("alice", &["document:d1"]).await;
    assert_eq!(redis.subscribers(name), 1, "node A subscribed");
    let mut also_on_a = a.subscriber("amy", &["document:d1"]).await;
    assert_eq!(redis.subscribers(name), 1, "a second local subscriber costs Redis nothing");
    let mut on_b = b.subscriber("bob", &["document:d1"]).await;
    assert_eq!(redis.subscribers(name), 2, "node B subscribed");
    assert_eq!(redis.channels("nova:ch:*"), vec![name.to_string()], "no node subscribes to channels nobody uses");

    on_a.request("channel.unsubscribe", None, json!({"channels": ["document:d1"]})).await;
    recv_event(&mut on_a, "channel.unsubscribed").await;
    assert_eq!(redis.subscribers(name), 2, "node A still has a subscriber");
    also_on_a.close().await;
    redis.wait_for("node A to unsubscribe", |r| r.subscribers(name), |n| *n == 1).await;

    // Node A no longer gets the channel's traffic, and B still does.
    let id = a.publish("document:d1", "doc.changed", json!({})).await;
    assert_eq!(recv_event(&mut on_b, "doc.changed").await["id"], id.as_str());
    on_b.close().await;
    redis.wait_for("no node to want the channel", |r| r.channels("nova:ch:*"), Vec::is_empty).await;
    // Users' channels follow connections the same way.
    let users = redis.wait_for("alice's direct channel only", |r| r.channels("nova:user:*"), |u| u.len() == 1).await;
    assert_eq!(users, vec!["nova:user:alice".to_string()]);
}

#[actix_rt::test]
async fn presence_spans_nodes() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = a.subscriber("alice", &["team:t1"]).await;
    wait_counted(&redis, "team:t1", "alice", 1).await;

    let mut bob = b.connect_as("bob").await;
    let subscribed = bob.subscribe(&["team:t1"]).await.remove(0);
    let mut present: Vec<&str> =
        subscribed["data"]["presence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    present.sort_unstable();
    assert_eq!(present, vec!["alice", "bob"], "{subscribed}");
    assert_eq!(subscribed["data"]["presence_count"], 2);

    let joined = alice.recv_type("channel.presence").await;
    assert_eq!(joined["data"], json!({"user_id": "bob", "state": "joined"}));
    assert_eq!(joined["channel"], "team:t1");

    // Alice opens a second connection on node B: she was already present,
    // so nobody hears of it, and nobody hears when her first one leaves.
    let mut alice_on_b = b.subscriber("alice", &["team:t1"]).await;
    // Counted on both nodes (a user who moves between nodes faster than
    // that is seen to leave and rejoin).
    wait_counted(&redis, "team:t1", "alice", 2).await;
    alice.close().await;
    bob.assert_nothing_pending().await;

    // Her last connection leaves: now she is gone from the channel.
    alice_on_b.close().await;
    let left = bob.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "alice", "state": "left"}));

    // The next thing Bob hears is Carol: Alice left once.
    let _carol = b.subscriber("carol", &["team:t1"]).await;
    let joined = bob.recv_type("channel.presence").await;
    assert_eq!(joined["data"], json!({"user_id": "carol", "state": "joined"}));
    let mut dave = a.connect_as("dave").await;
    let subscribed = dave.subscribe(&["team:t1"]).await.remove(0);
    let mut present: Vec<&str> =
        subscribed["data"]["presence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    present.sort_unstable();
    assert!(present.contains(&"bob") && present.contains(&"dave") && !present.contains(&"alice"), "{subscribed}");
}

#[actix_rt::test]
async fn a_killed_nodes_users_leave_when_its_heartbeat_expires() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("NOVA_REDIS_URL", url.as_str()),
        ("NOVA_NODE_ID", "doomed"),
        ("NOVA_REDIS_PRESENCE_TTL_MS", "1000"),
        ("NOVA_CLUSTER_SECRET", CLUSTER_SECRET),
    ];
    let mut doomed = Process::spawn(&["--bind", "127.0.0.1:0"], &env);
    let doomed_addr = doomed.listening();
    let until = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        let res = awc::Client::default().get(format!("http://{doomed_addr}/api/health/redis")).send().await;
        if res.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "the node did not connect to redis");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut ghost = Client::connect(&format!("ws://{doomed_addr}/ws")).await;
    ghost.init(json!({"api_key": "development", "user_id": "ghost"})).await;
    ghost.subscribe(&["team:t1"]).await;
    wait_counted(&redis, "team:t1", "ghost", 1).await;

    let b = TestServer::node(&redis, "survivor");
    b.wait_for_redis("up").await;
    let mut bob = b.connect_as("bob").await;
    let subscribed = bob.subscribe(&["team:t1"]).await.remove(0);
    assert!(subscribed["data"]["presence"].as_array().unwrap().contains(&json!("ghost")), "{subscribed}");

    // SIGKILL: no goodbye to Redis. The survivor notices the expired
    // heartbeat and announces the dead node's users as gone.
    doomed.child.kill().expect("kill the node");
    let left = bob.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "ghost", "state": "left"}));
    let mut carol = b.connect_as("carol").await;
    let subscribed = carol.subscribe(&["team:t1"]).await.remove(0);
    assert!(!subscribed["data"]["presence"].as_array().unwrap().contains(&json!("ghost")), "{subscribed}");
    let nodes: Vec<String> =
        redis::cmd("ZRANGE").arg("nova:nodes").arg(0).arg(-1).query(&mut redis.connection()).unwrap();
    assert_eq!(nodes, vec!["survivor".to_string()]);
}

#[actix_rt::test]
async fn direct_messages_and_broadcasts_reach_every_node() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice_a = a.connect_as("alice").await;
    let mut alice_b = b.connect_as("alice").await;
    let mut bob_b = b.connect_as("bob").await;
    redis.wait_for("alice's direct channel", |r| r.subscribers("nova:user:alice"), |n| *n == 2).await;

    let (status, body) = a.post("/api/users/alice/send", json!({"type": "notification", "data": {"n": 1}})).await;
    assert_eq!(status, 202, "{body}");
    for alice in [&mut alice_a, &mut alice_b] {
        let frame = alice.recv_type("notification").await;
        assert_eq!(frame["id"], body["id"]);
    }

    let (status, body) = b.post("/ws/broadcast", json!({"type": "maintenance", "data": {}})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], 2, "counts this node's connections");
    for client in [&mut alice_a, &mut alice_b, &mut bob_b] {
        assert_eq!(client.recv_type("maintenance").await["id"], body["id"]);
    }
    for client in [&mut alice_a, &mut alice_b, &mut bob_b] {
        client.assert_nothing_pending().await;
    }
}

#[actix_rt::test]
async fn an_external_publisher_reaches_every_node_and_bad_payloads_are_dropped() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut on_a = a.subscriber("alice", &["agent:core"]).await;
    let mut on_b = b.subscriber("bob", &["agent:core"]).await;

    let bad = [
        "not json",
        r#"{"type":"connection.ack","data":{}}"#,
        r#"{"type":"demo.status","data":[1,2]}"#,
        r#"{"type":"demo.status","unknown":true}"#,
        // A catalog type whose data breaks its schema, and one backends
        // may not send.
        r#"{"type":"agent.status","data":{"state":"running"}}"#,
        r#"{"type":"agent.invoke","data":{"input":"x"}}"#,
        r#"{"origin":"x","event":"nope"}"#,
    ];
    for payload in bad {
        assert_eq!(redis.publish("nova:ch:agent:core", payload), 2, "both nodes are subscribed");
    }
    let payload = r#"{"type":"demo.status","data":{"status":"thinking"},"id":"ext-1"}"#;
    redis.publish("nova:ch:agent:core", payload);
    for client in [&mut on_a, &mut on_b] {
        let frame = recv_event(client, "demo.status").await;
        assert_eq!(frame["id"], "ext-1");
        assert_eq!(frame["channel"], "agent:core");
        assert_eq!(frame["data"], json!({"status": "thinking"}));
        client.assert_nothing_pending().await;
    }
    for node in [&a, &b] {
        // The last one looks like a node's message, without a seal.
        node.wait_for_metrics("6 malformed, 1 unsealed", |m| {
            m["redis"]["malformed"] == 6 && m["redis"]["unsealed"] == 1
        })
        .await;
    }

    // A direct message from outside.
    redis.wait_for("bob's direct channel", |r| r.subscribers("nova:user:bob"), |n| *n == 1).await;
    redis.publish("nova:user:bob", r#"{"type":"notification","data":{"text":"done"}}"#);
    let frame = recv_event(&mut on_b, "notification").await;
    assert_eq!(frame["data"]["text"], "done");
    assert!(frame.get("channel").is_none(), "{frame}");
}

#[actix_rt::test]
async fn without_redis_a_node_serves_locally_then_joins_when_redis_appears() {
    let mut redis = RedisServer::unused();
    let a = TestServer::node(&redis, "node-a");
    let (_, health) = a.get_with("/health", None).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["redis"], "down");
    let (status, body) = a.get_with("/api/health/redis", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "down");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");

    // Local traffic, presence included, is untouched.
    let mut alice = a.subscriber("alice", &["team:t1"]).await;
    let mut bob = a.subscriber("bob", &["team:t1"]).await;
    assert_eq!(alice.recv_type("channel.presence").await["data"]["user_id"], "bob");
    let id = a.publish("team:t1", "demo.task", json!({})).await;
    assert_eq!(alice.recv_type("demo.task").await["id"], id.as_str());
    assert_eq!(bob.recv_type("demo.task").await["id"], id.as_str());

    // Redis appears: the node connects on its own, with its channel.
    redis.restart();
    a.wait_for_redis("up").await;
    let (_, health) = a.get_with("/health", None).await;
    assert_eq!(health["status"], "ok", "{health}");
    redis.wait_for("node A's subscription", |r| r.subscribers("nova:ch:team:t1"), |n| *n == 1).await;
    wait_counted(&redis, "team:t1", "alice", 1).await;
    wait_counted(&redis, "team:t1", "bob", 1).await;
    let b = TestServer::node(&redis, "node-b");
    b.wait_for_redis("up").await;
    let mut carol = b.connect_as("carol").await;
    let subscribed = carol.subscribe(&["team:t1"]).await.remove(0);
    let present = subscribed["data"]["presence"].as_array().unwrap();
    assert!(present.contains(&json!("alice")) && present.contains(&json!("bob")), "presence was synced: {subscribed}");
    let id = b.publish("team:t1", "demo.task", json!({})).await;
    assert_eq!(recv_event(&mut alice, "demo.task").await["id"], id.as_str());
}

#[actix_rt::test]
async fn redis_killed_and_restarted_mid_run() {
    let mut redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut local = a.subscriber("alice", &["team:t1"]).await;
    let mut remote = b.subscriber("bob", &["team:t1"]).await;
    local.recv_type("channel.presence").await;

    let mut sent = Vec::new();
    for n in 0..20 {
        sent.push(a.publish("team:t1", "tick", json!({"n": n})).await);
    }
    for id in &sent {
        assert_eq!(recv_event(&mut remote, "tick").await["id"], id.as_str());
    }
    for n in 20..60 {
        if n == 20 {
            redis.kill();
        }
        if n == 40 {
            a.wait_for_redis("down").await;
            assert_eq!(a.get_with("/health", None).await.1["status"], "degraded");
        }
        sent.push(a.publish("team:t1", "tick", json!({"n": n})).await);
    }
    // Local delivery never stopped: every event, in order.
    for id in &sent {
        assert_eq!(recv_event(&mut local, "tick").await["id"], id.as_str());
    }

    redis.restart();
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    redis.wait_for("both nodes resubscribed", |r| r.subscribers("nova:ch:team:t1"), |n| *n == 2).await;
    // Delivery across nodes resumes. What the remote node got of the
    // outage's events (those Redis passed on before it died) came in order,
    // each once, before the first event after it.
    let after = a.publish("team:t1", "tick", json!({"n": "after"})).await;
    let mut got = Vec::new();
    loop {
        let frame = recv_event(&mut remote, "tick").await;
        if frame["id"] == after.as_str() {
            break;
        }
        got.push(sent.iter().position(|s| frame["id"] == s.as_str()).expect("an event that was sent"));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]) && got.iter().all(|i| *i >= 20), "{got:?}");

    // Presence was republished into the empty Redis: a new node sees both.
    wait_counted(&redis, "team:t1", "alice", 1).await;
    wait_counted(&redis, "team:t1", "bob", 1).await;
    let c = TestServer::node(&redis, "node-c");
    c.wait_for_redis("up").await;
    let mut carol = c.connect_as("carol").await;
    let subscribed = carol.subscribe(&["team:t1"]).await.remove(0);
    let present = subscribed["data"]["presence"].as_array().unwrap();
    assert!(present.contains(&json!("alice")) && present.contains(&json!("bob")), "{subscribed}");
}

#[actix_rt::test]
async fn a_frozen_redis_never_holds_up_publishing_or_local_delivery() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut local = a.subscriber("alice", &["team:t1"]).await;

    redis.signal("-STOP");
    // Redis takes the bytes and answers nothing; if publishing waited on
    // it, these requests would not be answered at all.
    let mut sent = Vec::new();
    for n in 0..50 {
        sent.push(a.publish("team:t1", "tick", json!({"n": n})).await);
    }
    for id in &sent {
        assert_eq!(recv_event(&mut local, "tick").await["id"], id.as_str());
    }
    let mut other = a.subscriber("amy", &["team:t9"]).await;
    other.assert_nothing_pending().await;
    redis.signal("-CONT");
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;

    // Recovered: one pub/sub connection per node (the connection given up
    // while Redis was frozen is closed, not left subscribed), and events
    // cross nodes again.
    redis.wait_for("one subscription per node", |r| r.subscribers("nova:broadcast"), |n| *n == 2).await;
    let mut remote = b.subscriber("bob", &["team:t1"]).await;
    let id = a.publish("team:t1", "tick", json!({"n": "after"})).await;
    assert_eq!(recv_event(&mut remote, "tick").await["id"], id.as_str());
    assert_eq!(redis.subscribers("nova:broadcast"), 2);
}

#[actix_rt::test]
async fn deployments_with_different_prefixes_share_a_redis_without_meeting() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = TestServer::node(&redis, "node-a");
    let b = TestServer::with(|args| {
        args.redis_url = Some(url);
        args.redis_prefix = Some("staging:".into());
    });
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    let mut on_a = a.subscriber("alice", &["team:t1"]).await;
    let mut on_b = b.subscriber("bob", &["team:t1"]).await;
    assert_eq!(redis.subscribers("staging:ch:team:t1"), 1);
    assert_eq!(redis.subscribers("nova:ch:team:t1"), 1);

    let id = b.publish("team:t1", "demo.task", json!({})).await;
    assert_eq!(on_b.recv_type("demo.task").await["id"], id.as_str());
    // Once B has written it to Redis, a marker for A's deployment reaches
    // Alice next: B's event never got to her.
    assert_marker_is_next(&redis, &[&b], "team:t1", &mut [&mut on_a]).await;
    on_b.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn presence_missed_during_an_outage_is_corrected_after_it() {
    let mut redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = a.subscriber("alice", &["team:t1"]).await;
    let mut bob = b.subscriber("bob", &["team:t1"]).await;
    let _carol = b.subscriber("carol", &["team:t1"]).await;
    for _ in 0..2 {
        let joined = alice.recv_type("channel.presence").await;
        assert_eq!(joined["data"]["state"], "joined", "{joined}");
    }

    redis.kill();
    a.wait_for_redis("down").await;
    b.wait_for_redis("down").await;
    // While the nodes cannot talk: Bob leaves node B, Dave joins it.
    bob.close().await;
    let _dave = b.subscriber("dave", &["team:t1"]).await;
    redis.restart();
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;

    // Alice's channel on node A learns both, once each, in some order.
    let mut heard = Vec::new();
    for _ in 0..2 {
        let frame = alice.recv_type("channel.presence").await;
        let data = &frame["data"];
        heard.push((data["user_id"].as_str().unwrap().to_owned(), data["state"].as_str().unwrap().to_owned()));
    }
    heard.sort();
    let expected = [("bob", "left"), ("dave", "joined")].map(|(u, s)| (u.to_string(), s.to_string()));
    assert_eq!(heard, expected);
    let mut eve = a.connect_as("eve").await;
    let subscribed = eve.subscribe(&["team:t1"]).await.remove(0);
    let mut present: Vec<&str> =
        subscribed["data"]["presence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    present.sort_unstable();
    assert_eq!(present, vec!["alice", "carol", "dave", "eve"], "{subscribed}");
    let joined = alice.recv_type("channel.presence").await;
    assert_eq!(joined["data"], json!({"user_id": "eve", "state": "joined"}));
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_presence_change_that_arrives_after_a_later_one_is_ignored() {
    let redis = RedisServer::start();
    let a = TestServer::node(&redis, "node-a");
    a.wait_for_redis("up").await;
    let mut alice = a.subscriber("alice", &["team:t1"]).await;
    // Another node's announcements, as it writes them; each node publishes
    // through its own queue, so two nodes' changes about one user can cross.
    let change = |state: &str, seq: u64| {
        let event = json!({"id": format!("p{seq}"), "type": "channel.presence", "channel": "team:t1",
            "data": {"user_id": "zed", "state": state}, "timestamp": "2026-12-02T08:00:00.000Z"});
        sealed("nova:ch:team:t1", "node-z", &event.to_string(), Some(("zed", state == "joined", seq)))
    };
    redis.publish("nova:ch:team:t1", &change("joined", 5));
    assert_eq!(alice.recv_type("channel.presence").await["id"], "p5");
    redis.publish("nova:ch:team:t1", &change("left", 4));
    redis.publish("nova:ch:team:t1", r#"{"type":"marker","id":"m1"}"#);
    assert_eq!(alice.recv().await["id"], "m1", "the stale 'left' was dropped");
    redis.publish("nova:ch:team:t1", &change("left", 6));
    let left = alice.recv_type("channel.presence").await;
    assert_eq!((left["id"].clone(), left["data"]["state"].clone()), (json!("p6"), json!("left")));
}

/// An event as a node forwards it.
fn node_event(id: &str, kind: &str, channel: &str, data: Value) -> Value {
    json!({"id": id, "type": kind, "channel": channel, "data": data, "timestamp": "2026-12-02T08:00:00.000Z"})
}

#[actix_rt::test]
async fn forged_or_invalid_node_messages_never_reach_clients() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut on_a = a.subscriber("alice", &["team:t1"]).await;
    let mut on_b = b.subscriber("bob", &["team:t1"]).await;
    let name = "nova:ch:team:t1";
    let ack = node_event("f1", "connection.ack", "team:t1", json!({"connection_id": "x", "user_id": "admin"}));
    let error = node_event("f2", "error", "team:t1", json!({"code": 4001, "message": "session expired"}));
    // Claims the settings channel while published on team:t1's.
    let settings = node_event("f3", "prompt_updated", "system:settings", json!({"version": 99}));
    let deep = format!(
        r#"{{"id":"f4","type":"x","channel":"team:t1","data":{{"d":{}{}}},"timestamp":"2026-12-02T08:00:00.000Z"}}"#,
        "[".repeat(300_000),
        "]".repeat(300_000)
    );
    let legit = node_event("f5", "demo.task", "team:t1", json!({"n": 1}));

    // Without the secret, in the old format: what anyone with access to
    // Redis could publish.
    for event in [ack.to_string(), error.to_string(), settings.to_string(), deep.clone()] {
        redis.publish(name, &format!(r#"{{"origin":"node-z","event":{event}}}"#));
    }
    // Node A's own id on a real event, with no seal and with a wrong one:
    // node A must not take it for its echo while node B delivers it.
    redis.publish(name, &json!({"origin": "node-a", "event": legit}).to_string());
    let zeros = "0".repeat(64);
    redis.publish(name, &format!(r#"{{"nova":1,"origin":"node-a","event":{legit},"mac":"{zeros}"}}"#));
    // With the secret (a buggy or compromised node): checked like a REST
    // publish all the same.
    for event in [ack.to_string(), error.to_string(), settings.to_string(), deep] {
        redis.publish(name, &sealed(name, "node-z", &event, None));
    }

    assert_marker_is_next(&redis, &[&a, &b], "team:t1", &mut [&mut on_a, &mut on_b]).await;
    for node in [&a, &b] {
        // Unsealed: the three old-format events that parse and the two
        // with node A's id. Malformed: the deep one without a seal (too
        // deep to read at all) and the four sealed ones.
        let m = node
            .wait_for_metrics("5 unsealed, 5 malformed", |m| {
                m["redis"]["unsealed"] == 5 && m["redis"]["malformed"] == 5
            })
            .await;
        assert_eq!(m["redis"]["status"], "up", "{m}");
    }

    // Real events still cross, both ways, and so does a sealed event of
    // a third node.
    let mut sent = vec![
        a.publish("team:t1", "demo.task", json!({"n": 2})).await,
        b.publish("team:t1", "demo.task", json!({"n": 3})).await,
    ];
    sent.sort();
    for client in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(recv_event(client, "demo.task").await["id"].as_str().unwrap_or_default().to_owned());
        }
        got.sort();
        assert_eq!(got, sent);
    }
    redis.publish(name, &sealed(name, "node-z", &legit.to_string(), None));
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(recv_event(client, "demo.task").await, legit);
        client.assert_nothing_pending().await;
    }
}

#[actix_rt::test]
async fn a_forged_presence_join_leaves_no_ghost() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = a.subscriber("alice", &["team:t1"]).await;
    let name = "nova:ch:team:t1";
    let join = node_event("ghost", "channel.presence", "team:t1", json!({"user_id": "zed", "state": "joined"}));
    // Without a seal, numbered as Redis would and numbered so that no real
    // change of Zed's would ever count again; and that last one sealed by
    // a node with the secret.
    for seq in [1, u64::MAX] {
        let presence = json!({"user": "zed", "state": "joined", "seq": seq});
        redis.publish(name, &json!({"origin": "node-z", "event": join, "presence": presence}).to_string());
    }
    redis.publish(name, &sealed(name, "node-z", &join.to_string(), Some(("zed", true, u64::MAX))));
    redis.publish(name, r#"{"type":"marker","id":"m1"}"#);
    assert_eq!(alice.recv().await["id"], "m1", "no forged join reached Alice");

    // The real Zed comes and goes on node B: Alice hears both.
    let mut zed = b.subscriber("zed", &["team:t1"]).await;
    let joined = alice.recv_type("channel.presence").await;
    assert_eq!(joined["data"], json!({"user_id": "zed", "state": "joined"}));
    zed.close().await;
    let left = alice.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "zed", "state": "left"}));

    // And Zed is gone from the channel's list on node A.
    let mut carol = a.connect_as("carol").await;
    let subscribed = carol.subscribe(&["team:t1"]).await.remove(0);
    let mut present: Vec<&str> =
        subscribed["data"]["presence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    present.sort_unstable();
    assert_eq!(present, vec!["alice", "carol"], "{subscribed}");
}

#[actix_rt::test]
async fn a_node_with_another_cluster_secret_is_not_believed() {
    let redis = RedisServer::start();
    let a = TestServer::node(&redis, "node-a");
    let url = redis.url();
    let rogue = TestServer::with(|args| {
        args.redis_url = Some(url);
        args.node_id = Some("rogue".into());
        args.cluster_secret = Some("another-cluster-secret-0123456789".into());
    });
    a.wait_for_redis("up").await;
    rogue.wait_for_redis("up").await;
    let mut alice = a.subscriber("alice", &["team:t1"]).await;

    rogue.publish("team:t1", "demo.task", json!({})).await;
    assert_marker_is_next(&redis, &[&rogue], "team:t1", &mut [&mut alice]).await;
    a.wait_for_metrics("the rogue's event refused", |m| m["redis"]["unsealed"] == 1).await;
}

#[actix_rt::test]
async fn a_team_status_reaches_every_node_and_is_forgotten_when_its_user_leaves() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut alice = a.subscriber("alice", &["team:t1"]).await;
    let mut bob = b.subscriber("bob", &["team:t1"]).await;
    // Node A knows bob is present before his status comes: the two travel
    // by different paths (the presence script, the event outbox), and a
    // newcomer's list shows statuses of present users only.
    let joined = alice.recv_type("channel.presence").await;
    assert_eq!(joined["data"], json!({"user_id": "bob", "state": "joined"}));

    bob.request("team.presence.update", Some("team:t1"), json!({"status": "away", "text": "lunch"})).await;
    let seen = recv_event(&mut alice, "team.presence.update").await;
    assert_eq!(seen["data"], json!({"user_id": "bob", "status": "away", "text": "lunch"}));
    assert_eq!(recv_event(&mut bob, "team.presence.update").await["id"], seen["id"]);

    // A newcomer on the other node sees it in the channel's statuses.
    let mut carol = a.connect_as("carol").await;
    let subscribed = carol.subscribe(&["team:t1"]).await.remove(0);
    let statuses = subscribed["data"]["statuses"].as_array().cloned().unwrap_or_default();
    assert!(statuses.contains(&json!({"user_id": "bob", "status": "away", "text": "lunch"})), "{statuses:?}");
    // So does one on a node that opens the channel only now: Redis kept it
    // (node B writes it beside publishing the event; awaited, not raced).
    let stored = |r: &RedisServer| -> bool {
        redis::cmd("HEXISTS").arg("nova:status:team:t1").arg("bob").query(&mut r.connection()).unwrap_or(false)
    };
    redis.wait_for("bob's status in Redis", stored, |kept| *kept).await;
    let c = TestServer::node(&redis, "node-c");
    c.wait_for_redis("up").await;
    let mut erin = c.connect_as("erin").await;
    let subscribed = erin.subscribe(&["team:t1"]).await.remove(0);
    let statuses = subscribed["data"]["statuses"].as_array().cloned().unwrap_or_default();
    assert!(statuses.contains(&json!({"user_id": "bob", "status": "away", "text": "lunch"})), "{statuses:?}");

    // Bob's last connection goes: `left` everywhere, and his status with it.
    bob.close().await;
    loop {
        let frame = carol.recv_type("channel.presence").await;
        if frame["data"] == json!({"user_id": "bob", "state": "left"}) {
            break;
        }
    }
    // Back on node B, bob is `online` again on node A: his old status went
    // with his `left` there.
    let _bob = b.subscriber("bob", &["team:t1"]).await;
    // Erin's join (from node C) may reach carol before or after bob's
    // leave: nodes announce on paths of their own.
    loop {
        let frame = carol.recv_type("channel.presence").await;
        if frame["data"] == json!({"user_id": "bob", "state": "joined"}) {
            break;
        }
    }
    let mut dave = a.connect_as("dave").await;
    let subscribed = dave.subscribe(&["team:t1"]).await.remove(0);
    let statuses = subscribed["data"]["statuses"].as_array().cloned().unwrap_or_default();
    assert!(statuses.contains(&json!({"user_id": "bob", "status": "online"})), "{statuses:?}");
    let kept: Vec<String> =
        redis::cmd("HKEYS").arg("nova:status:team:t1").query(&mut redis.connection()).expect("HKEYS");
    assert!(kept.is_empty(), "statuses kept in Redis for users gone: {kept:?}");
}
