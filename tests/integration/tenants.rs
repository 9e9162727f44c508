//! Tenant isolation: the same channel name, user id or broadcast in two
//! tenants are different things, on one node and across nodes.

use serde_json::{json, Value};

use crate::common::*;

/// A client of `user` in `tenant` (`None`: the default one), subscribed to
/// `channels`.
async fn member(server: &TestServer, user: &str, tenant: Option<&str>, channels: &[&str]) -> Client {
    let mut claims = json!({"channels": ["conversation:*", "team:*"]});
    if let Some(tenant) = tenant {
        claims["tenant"] = json!(tenant);
    }
    let mut client = server.connect().await;
    let ack = client.init(json!({"token": jwt(user, 600, claims)})).await;
    assert_eq!(ack["data"]["tenant"], tenant.map_or(Value::Null, |t| json!(t)));
    if !channels.is_empty() {
        client.subscribe(channels).await;
    }
    client
}

/// Publishes through `POST /api/publish` in `tenant`, returning the id.
async fn publish_in(server: &TestServer, tenant: Option<&str>, channel: &str, kind: &str) -> String {
    let mut body = json!({"channel": channel, "type": kind, "data": {"n": 1}});
    if let Some(tenant) = tenant {
        body["tenant"] = json!(tenant);
    }
    let (status, answer) = server.post("/api/publish", body).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap_or_default().to_owned()
}

#[actix_rt::test]
async fn the_same_channel_in_two_tenants_shares_nothing() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice", Some("acme"), &["conversation:c1"]).await;
    let mut bob = member(&server, "bob", Some("globex"), &["conversation:c1"]).await;
    let mut carol = member(&server, "carol", None, &["conversation:c1"]).await;

    // Presence is the tenant's: nobody saw anybody join.
    let mut dave = server.connect().await;
    dave.init(json!({"token": jwt("dave", 600, json!({"channels": ["conversation:*"], "tenant": "acme"}))})).await;
    let subscribed = dave.subscribe(&["conversation:c1"]).await.remove(0);
    let mut present: Vec<String> =
        subscribed["data"]["presence"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
    present.sort();
    assert_eq!(present, ["alice", "dave"]);
    assert_eq!(subscribed["channel"], "conversation:c1", "clients see the name, never the tenant's key");
    assert_eq!(alice.recv_type("channel.presence").await["data"]["user_id"], "dave");

    // The backend names the tenant in the body, the query, or not at all.
    let id = publish_in(&server, Some("acme"), "conversation:c1", "demo.event").await;
    for client in [&mut alice, &mut dave] {
        let event = client.recv_type("demo.event").await;
        assert_eq!((event["id"].as_str(), event["channel"].as_str()), (Some(id.as_str()), Some("conversation:c1")));
    }
    let (status, answer) = server
        .post("/api/publish?tenant=globex", json!({"channel": "conversation:c1", "type": "demo.event", "data": {}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(bob.recv_type("demo.event").await["id"], answer["id"]);
    let id = publish_in(&server, None, "conversation:c1", "demo.event").await;
    assert_eq!(carol.recv_type("demo.event").await["id"], id.as_str());

    // A client's message stays in its tenant.
    alice.request("chat.message", Some("conversation:c1"), json!({"content": "acme only"})).await;
    alice.recv_type("message.received").await;
    assert_eq!(alice.recv_type("chat.message").await["data"]["content"], "acme only");
    assert_eq!(dave.recv_type("chat.message").await["data"]["sender_id"], "alice");
    bob.request("chat.message", Some("conversation:c1"), json!({"content": "globex only"})).await;
    bob.recv_type("message.received").await;
    assert_eq!(bob.recv_type("chat.message").await["data"]["content"], "globex only");

    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        client.assert_nothing_pending().await;
    }
}

#[actix_rt::test]
async fn user_sends_and_broadcasts_reach_their_tenant_only() {
    let server = TestServer::start();
    let mut sam_acme = member(&server, "sam", Some("acme"), &[]).await;
    let mut sam_globex = member(&server, "sam", Some("globex"), &[]).await;
    let mut sam_default = member(&server, "sam", None, &[]).await;

    let (status, answer) =
        server.post("/api/users/sam/send", json!({"type": "demo.direct", "data": {}, "tenant": "globex"})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(sam_globex.recv_type("demo.direct").await["id"], answer["id"]);
    let (_, answer) = server.post("/api/users/sam/send", json!({"type": "demo.direct", "data": {}})).await;
    assert_eq!(sam_default.recv_type("demo.direct").await["id"], answer["id"]);

    let (status, answer) = server.post("/ws/broadcast?tenant=acme", json!({"type": "demo.notice", "data": {}})).await;
    assert_eq!((status, answer["connections"].clone()), (202, json!(1)), "{answer}");
    assert_eq!(sam_acme.recv_type("demo.notice").await["id"], answer["id"]);

    // The server's own ping is for everyone.
    let (status, _) = server.post("/ws/ping", json!({})).await;
    assert_eq!(status, 202);
    for client in [&mut sam_acme, &mut sam_globex, &mut sam_default] {
        client.recv_type("connection.heartbeat").await;
        client.assert_nothing_pending().await;
    }
}

#[actix_rt::test]
async fn bad_tenants_are_refused() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let token = jwt("eve", 600, json!({"channels": ["conversation:*"], "tenant": "../acme"}));
    client.request("connection.init", None, json!({"token": token})).await;
    let error = client.expect_error(4001).await;
    assert!(error["data"]["message"].as_str().unwrap_or_default().contains("tenant"), "{error}");

    for (path, body) in [
        ("/api/publish", json!({"channel": "conversation:c1", "type": "x", "tenant": "a/b"})),
        ("/api/publish?tenant=acme", json!({"channel": "conversation:c1", "type": "x", "tenant": "globex"})),
        ("/api/users/sam/send", json!({"type": "x", "tenant": ""})),
        ("/ws/broadcast?tenant=a%20b", json!({"type": "x"})),
    ] {
        let (status, answer) = server.post(path, body).await;
        assert_eq!((status, answer["error"]["code"].clone()), (400, json!("invalid_tenant")), "{path}: {answer}");
    }
}

#[actix_rt::test]
async fn a_refresh_cannot_move_a_connection_to_another_tenant() {
    let server = TestServer::start();
    let mut alice = member(&server, "alice", Some("acme"), &[]).await;
    let other = jwt("alice", 600, json!({"channels": ["conversation:*"], "tenant": "globex"}));
    alice.request("connection.refresh", None, json!({"token": other})).await;
    let error = alice.expect_error(4001).await;
    assert!(error["data"]["message"].as_str().unwrap_or_default().contains("tenant"), "{error}");
    assert_eq!(alice.recv_type("connection.error").await["data"]["code"], 4001);
}

#[actix_rt::test]
async fn tenants_stay_apart_across_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (TestServer::node(&redis, "node-a"), TestServer::node(&redis, "node-b"));
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    let mut alice_on_a = member(&a, "alice", Some("acme"), &["team:t1"]).await;
    let mut bob_on_b = member(&b, "bob", Some("globex"), &["team:t1"]).await;
    let mut ann_on_b = member(&b, "ann", Some("acme"), &["team:t1"]).await;
    // Ann joined alice's channel (same tenant) from the other node; bob's is another.
    let joined = alice_on_a.recv_type("channel.presence").await;
    assert_eq!(joined["data"], json!({"user_id": "ann", "state": "joined"}));
    assert_eq!(joined["channel"], "team:t1", "the name, never the tenant's key");
    // Each tenant's channel, user and broadcast is its own Redis channel.
    for (name, nodes) in [
        ("nova:ch:acme/team:t1", 2),
        ("nova:ch:globex/team:t1", 1),
        ("nova:tuser:globex/bob", 1),
        ("nova:broadcast:acme", 2),
    ] {
        redis.wait_for(name, |r| r.subscribers(name), |n| *n == nodes).await;
    }

    let id = publish_in(&a, Some("acme"), "team:t1", "demo.event").await;
    assert_eq!(ann_on_b.recv_type("demo.event").await["id"], id.as_str());
    assert_eq!(alice_on_a.recv_type("demo.event").await["id"], id.as_str());
    let id = publish_in(&a, Some("globex"), "team:t1", "demo.event").await;
    assert_eq!(bob_on_b.recv_type("demo.event").await["id"], id.as_str());

    // Direct sends and broadcasts of a tenant cross nodes, to that tenant.
    let (status, answer) =
        a.post("/api/users/bob/send", json!({"type": "demo.direct", "data": {}, "tenant": "globex"})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(bob_on_b.recv_type("demo.direct").await["id"], answer["id"]);
    let (_, answer) = a.post("/ws/broadcast", json!({"type": "demo.notice", "data": {}, "tenant": "acme"})).await;
    assert_eq!(ann_on_b.recv_type("demo.notice").await["id"], answer["id"]);
    assert_eq!(alice_on_a.recv_type("demo.notice").await["id"], answer["id"]);

    // Nothing leaked: a marker of each tenant, from the other node, is
    // what each client gets next.
    let id = publish_in(&a, Some("globex"), "team:t1", "demo.marker").await;
    assert_eq!(bob_on_b.recv_type("demo.marker").await["id"], id.as_str());
    let id = publish_in(&b, Some("acme"), "team:t1", "demo.marker").await;
    assert_eq!(alice_on_a.recv_type("demo.marker").await["id"], id.as_str());
    assert_eq!(ann_on_b.recv_type("demo.marker").await["id"], id.as_str());

    // Ann leaves: node A hears it from node B, under the name alice knows.
    ann_on_b.close().await;
    let left = alice_on_a.recv_type("channel.presence").await;
    assert_eq!(
        (left["channel"].clone(), left["data"].clone()),
        (json!("team:t1"), json!({"user_id": "ann", "state": "left"}))
    );
    for node in [&a, &b] {
        let metrics = node.metrics().await;
        assert_eq!(metrics["redis"]["malformed"], 0, "a node refused another's message: {metrics}");
    }
}

#[actix_rt::test]
async fn a_users_rate_limits_are_their_tenants() {
    let server = TestServer::with(|a| {
        a.user_requests_per_second = Some(1);
        a.user_request_burst = Some(2);
    });
    let mut globex = member(&server, "alice", Some("globex"), &[]).await;
    let mut acme = member(&server, "alice", Some("acme"), &[]).await;
    // Globex's alice spends her burst, and more.
    let mut refused = false;
    for _ in 0..4 {
        globex.request("channel.subscribe", None, json!({"channels": ["conversation:g"]})).await;
        let answer = globex.recv().await;
        refused |= answer["type"] == "error" && answer["data"]["code"] == 4004;
    }
    assert!(refused, "4 requests at once, over a burst of 2");
    // Acme's alice has hers whole.
    for _ in 0..2 {
        let id = acme.request("channel.subscribe", None, json!({"channels": ["conversation:a"]})).await;
        assert_eq!(acme.recv_type("channel.subscribed").await["reply_to"], id.as_str());
    }
}
