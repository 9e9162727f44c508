//! Authentication: `connection.init` with JWTs and API keys.

use serde_json::json;

use crate::common::{jwt, TestServer};

#[actix_rt::test]
async fn api_key_connection_is_acknowledged() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let ack = client.init(json!({"api_key": "development", "user_id": "alice"})).await;
    assert_eq!(ack["data"]["user_id"], "alice");
    assert_eq!(ack["data"]["protocol_version"], 1);
    assert!(ack["data"]["connection_id"].as_str().unwrap().len() > 2);
    assert!(ack["data"]["heartbeat_interval_ms"].as_u64().unwrap() > 0);
    assert!(ack["data"]["limits"]["max_frame_bytes"].as_u64().unwrap() > 0);
}

#[actix_rt::test]
async fn valid_jwt_is_acknowledged_with_its_subject() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let ack = client.init(json!({"token": jwt("bob", 60, json!({"channels": ["conversation:*"]}))})).await;
    assert_eq!(ack["data"]["user_id"], "bob");
}
