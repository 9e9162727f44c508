//! Authentication: `connection.init` with JWTs and API keys, and everything
//! that must happen when it is missing, late, wrong or repeated.

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{assert_fresh_timestamp, jwt, now_ms, Client, TestServer, ADMIN_TOKEN, JWT_SECRET};

/// Sends `connection.init` with `data` and asserts the refusal the protocol
/// promises: an `error` frame with `code` answering the request, then a
/// `connection.error` announcing the close, then a close with the same code.
async fn assert_init_refused(client: &mut Client, data: Value, code: u16) -> Value {
    let id = client.request("connection.init", None, data).await;
    let error = client.expect_error(code).await;
    assert_eq!(error["reply_to"], id.as_str(), "{error}");
    let notice = client.expect_closed_with(code).await;
    assert_eq!(notice["data"]["message"], error["data"]["message"], "{notice}");
    error
}

/// A JWT with `claims`, signed with `header`'s algorithm and `secret`.
fn jwt_signed(header: jsonwebtoken::Header, secret: &[u8], claims: Value) -> String {
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).expect("sign JWT")
}

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
    let ack = client.init(json!({"token": jwt("bob", 600, json!({"channels": ["conversation:*"]}))})).await;
    assert_eq!(ack["data"]["user_id"], "bob");
}

#[actix_rt::test]
async fn ack_reports_the_configured_heartbeat_and_limits() {
    let server = TestServer::with(|a| {
        a.heartbeat_interval_ms = Some(12_345);
        a.max_frame_bytes = Some(200_000);
        a.max_outbound_bytes = Some(400_000);
        a.max_channels_per_connection = Some(7);
        a.messages_per_second = Some(11);
        a.message_burst = Some(22);
    });
    let mut client = server.connect().await;
    let ack = client.init(json!({"token": jwt("carol", 600, json!({}))})).await;
    let data = &ack["data"];
    assert_eq!(data["user_id"], "carol");
    assert_eq!(data["heartbeat_interval_ms"], 12_345);
    assert_eq!(data["protocol_version"], 1);
    assert_eq!(data["client_id"], Value::Null, "no client id on /ws: {ack}");
    assert_eq!(
        data["limits"],
        json!({"max_frame_bytes": 200_000, "max_outbound_bytes": 400_000, "max_channels": 7,
               "messages_per_second": 11, "message_burst": 22})
    );
    assert_eq!(ack.get("channel"), None, "{ack}");
    assert!(ack["id"].as_str().is_some_and(|id| !id.is_empty()), "{ack}");
    assert_fresh_timestamp(&ack);
}

#[actix_rt::test]
async fn connection_ids_are_distinct_and_the_default_development_user_is_developer() {
    let server = TestServer::start();
    let mut first = server.connect().await;
    let a = first.init(json!({"api_key": "development"})).await;
    let mut second = server.connect().await;
    let b = second.init(json!({"api_key": "development"})).await;
    assert_eq!(a["data"]["user_id"], "developer");
    assert_ne!(a["data"]["connection_id"], b["data"]["connection_id"]);
}

#[actix_rt::test]
async fn jwt_with_a_bad_signature_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let claims = json!({"sub": "mallory", "exp": now_ms() / 1000 + 60, "channels": ["*:*"]});
    let forged = jwt_signed(jsonwebtoken::Header::default(), b"not-the-server-secret-0123456789abc", claims);
    assert_init_refused(&mut client, json!({"token": forged}), 4001).await;
}

#[actix_rt::test]
async fn garbage_token_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    assert_init_refused(&mut client, json!({"token": "not.a.jwt"}), 4001).await;
}

#[actix_rt::test]
async fn jwt_signed_with_another_algorithm_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let claims = json!({"sub": "eve", "exp": now_ms() / 1000 + 60});
    let token = jwt_signed(jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512), JWT_SECRET.as_bytes(), claims);
    assert_init_refused(&mut client, json!({"token": token}), 4001).await;
}

#[actix_rt::test]
async fn jwt_without_exp_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let token = jwt_signed(jsonwebtoken::Header::default(), JWT_SECRET.as_bytes(), json!({"sub": "eve"}));
    assert_init_refused(&mut client, json!({"token": token}), 4001).await;
}

#[actix_rt::test]
async fn expired_jwt_is_refused_with_4002() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let error = assert_init_refused(&mut client, json!({"token": jwt("bob", -3600, json!({}))}), 4002).await;
    assert!(error["data"]["message"].as_str().unwrap().contains("expired"), "{error}");
}

#[actix_rt::test]
async fn jwt_expiring_while_connected_is_closed_with_4002() {
    // The server allows 5 s of clock skew on `exp`, so a token that expired
    // 3 s ago is still accepted and runs out 2 s later. It is within the
    // warning period at once, so `connection.expiring` comes first; the close
    // is announced with `connection.error` (not an `error`: it answers no
    // request).
    let server = TestServer::start();
    let mut client = server.connect().await;
    client.init(json!({"token": jwt("bob", -3, json!({"channels": ["conversation:*"]}))})).await;
    assert_eq!(client.recv_type("connection.expiring").await["data"], json!({"expires_in_ms": 0}));
    let notice = client.expect_closed_with(4002).await;
    assert!(notice["data"]["message"].as_str().unwrap().contains("expired"), "{notice}");
    assert_eq!(notice["data"]["reconnect"], false, "{notice}");
}

#[actix_rt::test]
async fn unknown_api_key_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    assert_init_refused(&mut client, json!({"api_key": "no-such-key"}), 4001).await;
}

#[actix_rt::test]
async fn development_key_is_refused_in_production() {
    let server = TestServer::with(|a| {
        a.production = true;
        a.development = false;
    });
    let mut client = server.connect().await;
    assert_init_refused(&mut client, json!({"api_key": "development", "user_id": "alice"}), 4001).await;
}

#[actix_rt::test]
async fn init_without_credentials_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    assert_init_refused(&mut client, json!({}), 4001).await;
}

#[actix_rt::test]
async fn no_init_within_the_auth_timeout_is_closed_with_4001() {
    let server = TestServer::with(|a| a.auth_timeout_ms = Some(200));
    let mut client = server.connect().await;
    let started = std::time::Instant::now();
    let notice = client.expect_closed_with(4001).await;
    assert!(notice["data"]["message"].as_str().unwrap().contains("connection.init"), "{notice}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150), "closed before the auth timeout");
}

#[actix_rt::test]
async fn another_request_before_init_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    let id = client.request("channel.subscribe", None, json!({"channels": ["conversation:c1"]})).await;
    let error = client.expect_error(4001).await;
    assert_eq!(error["reply_to"], id.as_str());
    client.expect_closed_with(4001).await;
}

#[actix_rt::test]
async fn heartbeat_before_init_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    client.request("connection.heartbeat", None, json!({})).await;
    client.expect_error(4001).await;
    client.expect_closed_with(4001).await;
}

#[actix_rt::test]
async fn malformed_json_before_init_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    client.send_text("{\"id\":\"1\",\"type\":").await;
    client.expect_error(4001).await;
    client.expect_closed_with(4001).await;
}

#[actix_rt::test]
async fn binary_frame_before_init_is_refused_with_4001() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    client.send_message(Message::binary(br#"{"id":"1","type":"connection.init"}"#.to_vec())).await;
    client.expect_error(4001).await;
    client.expect_closed_with(4001).await;
}

#[actix_rt::test]
async fn second_init_is_refused_with_4005_and_the_connection_stays_open() {
    let server = TestServer::start();
    let mut client = server.connect_as("alice").await;
    let id = client.request("connection.init", None, json!({"api_key": "development", "user_id": "bob"})).await;
    let error = client.expect_error(4005).await;
    assert_eq!(error["reply_to"], id.as_str());
    client.assert_nothing_pending().await;
    // Still alice: the connection listing shows the identity did not change.
    client.subscribe(&["conversation:c1"]).await;
    let (status, list) = server.get("/ws/connections").await;
    assert_eq!(status, 200);
    assert_eq!(list["connections"][0]["user_id"], "alice", "{list}");
}

#[actix_rt::test]
async fn static_api_key_acts_as_its_user_with_only_its_channels() {
    let server = TestServer::with(|a| {
        a.api_keys = Some(vec!["svc-agent:s3cret-key-1".into()]);
        a.api_key_channels = Some(vec!["team:*".into(), "agent:a1".into()]);
    });
    let mut client = server.connect().await;
    let ack = client.init(json!({"api_key": "s3cret-key-1"})).await;
    assert_eq!(ack["data"]["user_id"], "svc-agent");
    client.subscribe(&["team:t1", "agent:a1"]).await;
    for denied in ["conversation:c1", "agent:a2"] {
        let id = client.request("channel.subscribe", None, json!({"channels": [denied]})).await;
        let error = client.expect_error(4003).await;
        assert_eq!(error["channel"], denied);
        assert_eq!(error["reply_to"], id.as_str());
    }
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn static_api_key_cannot_choose_its_user() {
    let server = TestServer::with(|a| {
        a.api_keys = Some(vec!["svc-agent:s3cret-key-1".into()]);
        a.api_key_channels = Some(vec!["team:*".into()]);
    });
    let mut client = server.connect().await;
    assert_init_refused(&mut client, json!({"api_key": "s3cret-key-1", "user_id": "admin"}), 4001).await;
}

#[actix_rt::test]
async fn malformed_credentials_are_refused_with_4001() {
    let server = TestServer::start();
    let token = jwt("bob", 600, json!({}));
    let cases = [
        json!({"token": token, "api_key": "development"}),
        json!({"token": 42}),
        json!({"api_key": "development", "user_id": 7}),
        json!({"api_key": "development", "user_id": ""}),
        json!({"api_key": "development", "user_id": "a\nb"}),
        json!({"api_key": "development", "user_id": "nova:admin"}),
        json!({"token": jwt("nova:admin", 600, json!({}))}),
        json!({"token": jwt("", 600, json!({}))}),
        json!({"token": jwt("bob", 600, json!({"channels": ["nope:*"]}))}),
    ];
    for data in cases {
        let mut client = server.connect().await;
        assert_init_refused(&mut client, data, 4001).await;
    }
}

#[actix_rt::test]
async fn non_admin_role_grants_nothing_extra() {
    let server = TestServer::start();
    let mut client = server.connect().await;
    client.init(json!({"token": jwt("bob", 600, json!({"role": "user", "channels": ["team:t1"]}))})).await;
    client.subscribe(&["team:t1"]).await;
    client.request("channel.subscribe", None, json!({"channels": ["system:ops"]})).await;
    client.expect_error(4003).await;
}

#[actix_rt::test]
async fn the_admin_token_as_an_api_key_connects_as_admin_and_reads_every_channel() {
    let server = TestServer::start();
    let mut admin = server.connect().await;
    let ack = admin.init(json!({"api_key": ADMIN_TOKEN})).await;
    assert_eq!(ack["data"]["user_id"], "nova:admin", "{ack}");
    assert_eq!(ack["data"]["expires_at"], Value::Null, "{ack}");
    admin.subscribe(&["system:settings", "conversation:c1", "team:t1", "system:ops"]).await;
    server.publish("conversation:c1", "note", json!({"n": 1})).await;
    let event = admin.recv_type("note").await;
    assert_eq!(event["channel"], "conversation:c1", "{event}");
    // It cannot pose as another user.
    let mut other = server.connect().await;
    assert_init_refused(&mut other, json!({"api_key": ADMIN_TOKEN, "user_id": "alice"}), 4001).await;
}

#[actix_rt::test]
async fn wrong_admin_tokens_count_against_the_address_like_any_key() {
    let server = TestServer::with(|a| a.auth_failure_limit = Some(3));
    for _ in 0..3 {
        let mut guess = server.connect().await;
        assert_init_refused(&mut guess, json!({"api_key": format!("{ADMIN_TOKEN}x")}), 4001).await;
    }
    let mut right = server.connect().await;
    assert_init_refused(&mut right, json!({"api_key": ADMIN_TOKEN}), 4004).await;
}
