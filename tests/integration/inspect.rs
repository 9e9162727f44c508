//! What an operator (the dashboard) reads and does beyond publishing: one
//! user's connections, disconnecting a connection, the channels with their
//! members and presence, the nodes of a cluster.

use serde_json::{json, Value};

use crate::common::{jwt, RedisServer, TestServer, DEADLINE};

/// Asserts `body` is the API's error shape with `code`.
fn assert_api_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[actix_rt::test]
async fn connections_are_listed_for_one_user() {
    let server = TestServer::start();
    let _alice = server.connect_as("alice").await;
    let _alice_again = server.connect_as("alice").await;
    let _bob = server.connect_as("bob").await;
    server.wait_for_connections(3).await;
    let (status, list) = server.get("/ws/connections?user_id=alice").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2, "{list}");
    let users: Vec<&Value> = list["connections"].as_array().unwrap().iter().map(|c| &c["user_id"]).collect();
    assert_eq!(users, [&json!("alice"), &json!("alice")], "{list}");
    let (_, nobody) = server.get("/ws/connections?user_id=carol").await;
    assert_eq!(nobody, json!({"total": 0, "connections": []}));
    let (_, everyone) = server.get("/ws/connections").await;
    assert_eq!(everyone["total"], 3, "{everyone}");
    let (_, newest) = server.get("/ws/connections?order=newest&limit=1").await;
    assert_eq!((&newest["total"], &newest["connections"][0]["user_id"]), (&json!(3), &json!("bob")), "{newest}");
    let (_, oldest) = server.get("/ws/connections?order=oldest&limit=1").await;
    assert_eq!(oldest["connections"][0]["user_id"], "alice", "{oldest}");
    let (status, _) = server.get("/ws/connections?order=random").await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn a_disconnected_connection_is_told_why_and_closed_with_4011() {
    let server = TestServer::start();
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let mut alice = server.connect().await;
    let ack = alice.init(json!({"api_key": "development", "user_id": "alice"})).await;
    alice.subscribe(&["conversation:c1"]).await;
    assert_eq!(bob.recv_type("channel.presence").await["data"]["state"], "joined");
    let id = ack["data"]["connection_id"].as_str().expect("connection id").to_owned();

    let (status, answer) = server.call("DELETE", &format!("/api/connections/{id}")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"connection_id": id, "user_id": "alice", "close_code": 4011}));
    let notice = alice.expect_closed_with(4011).await;
    assert_eq!(notice["data"]["reconnect"], false, "{notice}");
    assert_eq!(notice["data"]["message"], "disconnected by an administrator", "{notice}");
    // Gone for everyone: bob sees alice leave, the directory forgets her.
    let left = bob.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "alice", "state": "left"}), "{left}");
    server.wait_for_connections(1).await;
    let (status, again) = server.call("DELETE", &format!("/api/connections/{id}")).await;
    assert_api_error(status, &again, 404, "connection_not_found");
}

#[actix_rt::test]
async fn disconnecting_a_bad_or_foreign_id_is_refused() {
    let server = TestServer::start();
    let ack = server.connect().await.init(json!({"api_key": "development"})).await;
    let id = ack["data"]["connection_id"].as_str().expect("connection id").to_owned();
    let (node, _) = id.rsplit_once('-').expect("node-number");
    for bad in ["nope", "x-01", "-5", "a_b-1"] {
        let (status, body) = server.call("DELETE", &format!("/api/connections/{bad}")).await;
        assert_api_error(status, &body, 400, "invalid_connection_id");
    }
    let (status, body) = server.call("DELETE", &format!("/api/connections/{node}-999999")).await;
    assert_api_error(status, &body, 404, "connection_not_found");
    // Another node's connection: named, not guessed at.
    let (status, body) = server.call("DELETE", "/api/connections/other-node-7").await;
    assert_api_error(status, &body, 404, "connection_not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("'other-node'"), "{body}");
    let (status, body) = server.call("POST", &format!("/api/connections/{id}")).await;
    assert_api_error(status, &body, 405, "method_not_allowed");
    let answer = awc::Client::default().delete(server.url(&format!("/api/connections/{id}"))).send().await;
    assert_eq!(answer.expect("DELETE").status().as_u16(), 401);
}

#[actix_rt::test]
async fn channels_are_listed_with_their_members_here() {
    let server = TestServer::start();
    let _alice = server.subscriber("alice", &["team:t1", "conversation:c1"]).await;
    let _bob = server.subscriber("bob", &["team:t1"]).await;
    let mut acme = server.connect().await;
    acme.init(json!({"token": jwt("dave", 600, json!({"channels": ["team:*"], "tenant": "acme"}))})).await;
    acme.subscribe(&["team:t1"]).await;

    let (status, list) = server.get("/api/channels").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list,
        json!({"total": 3, "channels": [
            {"channel": "conversation:c1", "tenant": null, "members": 1},
            {"channel": "team:t1", "tenant": null, "members": 2},
            {"channel": "team:t1", "tenant": "acme", "members": 1},
        ]})
    );
    let (_, limited) = server.get("/api/channels?limit=1").await;
    assert_eq!((&limited["total"], limited["channels"].as_array().map(Vec::len)), (&json!(3), Some(1)));
    let (status, body) = server.get("/api/channels?bogus=1").await;
    assert_api_error(status, &body, 400, "invalid_query");
}

#[actix_rt::test]
async fn a_channel_shows_its_members_presence_and_statuses() {
    let server = TestServer::start();
    let mut alice = server.connect().await;
    let alice_ack = alice.init(json!({"api_key": "development", "user_id": "alice"})).await;
    alice.subscribe(&["team:t1"]).await;
    let mut bob = server.connect().await;
    let bob_ack = bob.init(json!({"api_key": "development", "user_id": "bob"})).await;
    bob.subscribe(&["team:t1"]).await;
    bob.request("team.presence.update", Some("team:t1"), json!({"status": "busy", "text": "in a meeting"})).await;
    bob.recv_type("team.presence.update").await;

    let (status, team) = server.get("/api/channels/team:t1").await;
    assert_eq!(status, 200, "{team}");
    assert_eq!(
        team,
        json!({
            "channel": "team:t1",
            "tenant": null,
            "members": [
                {"connection_id": alice_ack["data"]["connection_id"], "user_id": "alice"},
                {"connection_id": bob_ack["data"]["connection_id"], "user_id": "bob"},
            ],
            "member_count": 2,
            "presence": ["alice", "bob"],
            "presence_count": 2,
            "statuses": [
                {"user_id": "alice", "status": "online"},
                {"user_id": "bob", "status": "busy", "text": "in a meeting"},
            ],
        })
    );

    // A channel with history tells its position; the settings channel has
    // no presence to show.
    let _carol = server.subscriber("carol", &["conversation:c1", "system:settings"]).await;
    server.publish("conversation:c1", "note", json!({})).await;
    let (_, conversation) = server.get("/api/channels/conversation:c1").await;
    assert_eq!(conversation["presence"], json!(["carol"]), "{conversation}");
    assert!(conversation["epoch"].is_string() && conversation.get("statuses").is_none(), "{conversation}");
    let (_, settings) = server.get("/api/channels/system:settings").await;
    assert_eq!((&settings["presence"], &settings["presence_count"]), (&json!([]), &json!(0)), "{settings}");
    assert_eq!(settings["members"].as_array().map(Vec::len), Some(1), "{settings}");

    let (status, body) = server.get("/api/channels/team:t1?tenant=acme").await;
    assert_api_error(status, &body, 404, "channel_not_found");
    let (status, body) = server.get("/api/channels/conversation:nobody").await;
    assert_api_error(status, &body, 404, "channel_not_found");
    for bad in ["/api/channels/chat:x", "/api/channels/nope", "/api/channels/team:t1?tenant=a%2Fb"] {
        let (status, body) = server.get(bad).await;
        assert!(status == 400, "{bad}: {status} {body}");
    }
}

#[actix_rt::test]
async fn a_node_on_its_own_lists_itself() {
    let server = TestServer::with(|a| a.node_id = Some("solo".into()));
    let (status, nodes) = server.get("/api/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(
        nodes,
        json!({"node_id": "solo", "redis": "disabled", "nodes": [{"node_id": "solo", "self": true, "expires_in_ms": null}]})
    );
}

#[actix_rt::test]
async fn every_node_with_a_live_heartbeat_is_listed() {
    let redis = RedisServer::start();
    let a = TestServer::node(&redis, "node-a");
    let b = TestServer::node(&redis, "node-b");
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    // Each node writes its heartbeat once connected: awaited through the
    // endpoint itself.
    let until = tokio::time::Instant::now() + DEADLINE;
    let nodes = loop {
        let (status, nodes) = a.get("/api/nodes").await;
        assert_eq!(status, 200, "{nodes}");
        if nodes["nodes"].as_array().is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["expires_in_ms"].is_u64())) {
            break nodes;
        }
        assert!(tokio::time::Instant::now() < until, "both nodes never listed: {nodes}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(nodes["redis"], "up", "{nodes}");
    let mut listed: Vec<(&str, bool)> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node_id"].as_str().unwrap(), n["self"] == true))
        .collect();
    listed.sort();
    assert_eq!(listed, [("node-a", true), ("node-b", false)]);
    assert!(nodes["nodes"].as_array().unwrap().iter().all(|n| n["expires_in_ms"].as_u64() <= Some(1500)), "{nodes}");
}

#[actix_rt::test]
async fn the_dashboard_is_served_without_a_token_under_a_strict_policy() {
    let server = TestServer::start();
    let client = awc::Client::default();
    for (path, kind) in [("/dashboard", "text/html"), ("/dashboard/dashboard.js", "text/javascript")] {
        let res = client.get(server.url(path)).send().await.expect("GET");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe"), "{policy}");
        assert!(policy.contains(&format!("connect-src 'self' ws://{0} wss://{0};", server.addr)), "{policy}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
    }
    let mut missing = client.get(server.url("/dashboard/../Cargo.toml")).send().await.expect("GET");
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
