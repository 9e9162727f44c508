//! What an operator (the dashboard) reads and does beyond publishing: one
//! user's connections, disconnecting a connection, the channels with their
//! members and presence.

use serde_json::{json, Value};

use crate::common::TestServer;

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
