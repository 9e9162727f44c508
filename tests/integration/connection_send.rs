//! `POST /api/connections/{connection_id}/send`: one event to one
//! connection, by the id its `connection.ack` reported. On one node: only
//! that connection gets it, and unknown, malformed and other tenants' ids
//! are refused. Across nodes: the node that takes the request reaches a
//! connection on another through Redis, with one pattern subscription per
//! node and none per connection.

use serde_json::{json, Value};

use crate::common::*;

/// A connection of `user` (in `tenant`, when named) and the id its
/// `connection.ack` reported.
async fn connection(server: &TestServer, user: &str, tenant: Option<&str>) -> (Client, String) {
    let mut client = server.connect().await;
    let ack = match tenant {
        None => client.init(json!({"api_key": "development", "user_id": user})).await,
        Some(tenant) => {
            let claims = json!({"channels": ["conversation:*"], "tenant": tenant});
            client.init(json!({"token": jwt(user, 600, claims)})).await
        }
    };
    let id = ack["data"]["connection_id"].as_str().expect("connection.ack names the connection").to_owned();
    (client, id)
}

/// `POST /api/connections/{id}/send` with `body`.
async fn send_to(server: &TestServer, id: &str, body: Value) -> (u16, Value) {
    server.post(&format!("/api/connections/{id}/send"), body).await
}

/// `POST /api/connections/{id}/send?tenant={tenant}` with `body`.
async fn send_in(server: &TestServer, id: &str, tenant: &str, body: Value) -> (u16, Value) {
    server.post(&format!("/api/connections/{id}/send?tenant={tenant}"), body).await
}

/// Sends `kind` to every connection of `user` (default tenant) and returns
/// its id: whatever a client receives before it was sent to it before.
async fn send_to_user(server: &TestServer, user: &str, kind: &str) -> String {
    let (status, body) = server.post(&format!("/api/users/{user}/send"), json!({"type": kind, "data": {}})).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().expect("an event id").to_owned()
}

/// The error code of a refusal with `status`.
fn refused(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!((answer.0, answer.1["error"]["code"].clone()), (status, json!(code)), "{}", answer.1);
}

#[actix_rt::test]
async fn only_the_connection_named_gets_the_event() {
    // A node id with '-' in it: the id splits at its last one.
    let server = TestServer::with(|a| a.node_id = Some("solo-1".into()));
    let (mut first, first_id) = connection(&server, "alice", None).await;
    let (mut second, second_id) = connection(&server, "alice", None).await;
    assert!(first_id.starts_with("solo-1-") && first_id != second_id, "{first_id} {second_id}");

    let (status, body) =
        send_to(&server, &first_id, json!({"type": "demo.direct", "data": {"n": 1}, "channel": "team:t1"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!((body["node"].clone(), body["forwarded"].clone()), (json!("solo-1"), json!(false)), "{body}");
    let frame = first.recv_type("demo.direct").await;
    assert_eq!(frame["id"], body["id"]);
    assert_eq!(frame["data"], json!({"n": 1}));
    assert_eq!(frame["channel"], "team:t1");

    // Sent to both afterwards: the next thing the other one gets.
    let after = send_to_user(&server, "alice", "demo.after").await;
    for client in [&mut second, &mut first] {
        assert_eq!(client.recv_type("demo.after").await["id"], after.as_str());
    }
    assert_eq!(server.metrics().await["published"], 2);
}

#[actix_rt::test]
async fn unknown_malformed_and_invalid_sends_are_refused() {
    let server = TestServer::with(|a| a.node_id = Some("solo-1".into()));
    let (mut client, id) = connection(&server, "alice", None).await;
    let event = json!({"type": "demo.direct", "data": {}});

    refused(&send_to(&server, "solo-1-999999", event.clone()).await, 404, "connection_not_found");
    // Another node's connection, and no Redis to reach it.
    refused(&send_to(&server, "node-b-1", event.clone()).await, 404, "connection_not_found");
    for bad in
        ["solo", "solo-", "solo-1-0", "solo-1-01", "solo-1-x", "solo-1-%2B1", "so:lo-1", "-1", "18446744073709551616"]
    {
        refused(&send_to(&server, bad, event.clone()).await, 400, "invalid_connection_id");
    }
    let long_node = format!("{}-1", "n".repeat(33));
    refused(&send_to(&server, &long_node, event.clone()).await, 400, "invalid_connection_id");

    // The body is held to what `POST /api/users/{user_id}/send` takes.
    let invalid = send_to(&server, &id, json!({"type": "assistant.token", "data": {"chunk": "Hi"}})).await;
    refused(&invalid, 400, "invalid_event");
    assert!(invalid.1["error"]["fields"].is_array(), "{}", invalid.1);
    refused(&send_to(&server, &id, json!({"type": "connection.ack"})).await, 400, "invalid_type");
    refused(&send_to(&server, &id, json!({"type": "x", "data": [1]})).await, 400, "invalid_data");
    refused(&send_to(&server, &id, json!({"type": "x", "channel": "nope"})).await, 400, "invalid_channel");
    refused(&send_to(&server, &id, json!({"type": "x", "extra": 1})).await, 400, "invalid_json");
    let unauthorized = server.post_with(&format!("/api/connections/{id}/send"), event.clone(), None).await;
    refused(&unauthorized, 401, "unauthorized");

    // None of it reached the client.
    let after = send_to_user(&server, "alice", "demo.after").await;
    assert_eq!(client.recv_type("demo.after").await["id"], after.as_str());
}

#[actix_rt::test]
async fn a_tenant_named_must_be_the_connections() {
    let server = TestServer::start();
    let (mut acme, acme_id) = connection(&server, "sam", Some("acme")).await;
    let (mut plain, plain_id) = connection(&server, "sam", None).await;
    let event = json!({"type": "demo.direct", "data": {}});

    refused(&send_in(&server, &acme_id, "globex", event.clone()).await, 404, "connection_not_found");
    let mut in_body = event.clone();
    in_body["tenant"] = json!("globex");
    refused(&send_to(&server, &acme_id, in_body).await, 404, "connection_not_found");
    refused(&send_in(&server, &plain_id, "acme", event.clone()).await, 404, "connection_not_found");
    refused(&send_in(&server, &acme_id, "a%20b", event.clone()).await, 400, "invalid_tenant");

    let (status, body) = send_in(&server, &acme_id, "acme", event.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(acme.recv_type("demo.direct").await["id"], body["id"]);
    // Naming no tenant: whichever the connection is in.
    let (status, body) = send_to(&server, &acme_id, event.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(acme.recv_type("demo.direct").await["id"], body["id"]);
    let (status, body) = send_to(&server, &plain_id, event).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(plain.recv_type("demo.direct").await["id"], body["id"]);
    acme.assert_nothing_pending().await;
}

/// `PUBSUB NUMPAT`: pattern subscriptions over every Redis connection.
fn patterns(redis: &RedisServer) -> u64 {
    redis::cmd("PUBSUB").arg("NUMPAT").query(&mut redis.connection()).expect("PUBSUB NUMPAT")
}

#[actix_rt::test]
async fn a_connection_on_another_node_is_reached_through_redis() {
    let redis = RedisServer::start();
    let (a, b) = (TestServer::node(&redis, "node-a"), TestServer::node(&redis, "node-b"));
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    redis.wait_for("each node's pattern subscription", patterns, |n| *n == 2).await;
    let (mut target, target_id) = connection(&b, "alice", None).await;
    let (mut sibling, _) = connection(&b, "alice", None).await;
    let (mut on_a, _) = connection(&a, "alice", None).await;
    assert!(target_id.starts_with("node-b-"), "{target_id}");

    let (status, body) = send_to(&a, &target_id, json!({"type": "demo.direct", "data": {"n": 1}})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!((body["node"].clone(), body["forwarded"].clone()), (json!("node-b"), json!(true)), "{body}");
    let frame = target.recv_type("demo.direct").await;
    assert_eq!(frame["id"], body["id"]);
    assert_eq!(frame["data"], json!({"n": 1}));

    // The node checks a tenant named: node A cannot know it, node B drops it.
    let (status, _) = send_in(&a, &target_id, "acme", json!({"type": "demo.wrong"})).await;
    assert_eq!(status, 202, "fire and forget");
    // An unknown connection on another node: the same.
    let (status, _) = send_to(&a, "node-b-999999", json!({"type": "demo.nobody"})).await;
    assert_eq!(status, 202);
    // An external publisher reaches one connection the same way.
    let name = format!("nova:conn:{}", target_id.replacen("node-b-", "node-b:", 1));
    assert_eq!(redis.publish(&name, r#"{"type":"demo.external","id":"ext-1"}"#), 1, "node B only");
    assert_eq!(target.recv_type("demo.external").await["id"], "ext-1");

    // Sent to every connection of alice afterwards: the next thing each of
    // them gets, on both nodes, once the nodes wrote everything to Redis.
    for node in [&a, &b] {
        node.wait_for_metrics("the outbox to drain", |m| m["redis"]["published"] == m["redis"]["queued"]).await;
    }
    redis.wait_for("alice's direct channel", |r| r.subscribers("nova:user:alice"), |n| *n == 2).await;
    let after = send_to_user(&a, "alice", "demo.after").await;
    for client in [&mut target, &mut sibling, &mut on_a] {
        assert_eq!(client.recv_type("demo.after").await["id"], after.as_str());
    }
    // No subscription per connection: still one pattern per node.
    assert_eq!(patterns(&redis), 2);
    assert!(redis.channels("nova:conn:*").is_empty());
}
