//! Token refresh and expiry: `connection.refresh` / `connection.refreshed`,
//! the `connection.expiring` warning before a JWT runs out, the 4002 close
//! at the latest token's `exp`, and what a refresh changes (expiry,
//! channels) and never changes (the user).

use serde_json::{json, Value};

use crate::common::{jwt, now_ms, parse_timestamp, Client, TestServer};

/// The warning period of the tests that wait for `connection.expiring`:
/// short, so they are quick, and long enough that a warning a busy machine
/// delivers late still comes before `exp`.
const WARNING_MS: u64 = 2000;

/// Seconds since the epoch, now.
fn now_secs() -> i64 {
    now_ms() / 1000
}

/// A JWT for `sub` with `exp` (seconds since the epoch) granting `channels`.
fn token(sub: &str, exp: i64, channels: &[&str]) -> String {
    jwt(sub, 0, json!({"exp": exp, "channels": channels}))
}

/// A connection authenticated with `token`, and its `connection.ack`.
async fn connect_with(server: &TestServer, token: &str) -> (Client, Value) {
    let mut client = server.connect().await;
    let ack = client.init(json!({"token": token})).await;
    (client, ack)
}

/// Sends `connection.refresh` with `token`; the request's id.
async fn refresh(client: &mut Client, token: &str) -> String {
    client.request("connection.refresh", None, json!({"token": token})).await
}

/// The next frame, which must be the `connection.refreshed` answering `id`;
/// its `expires_at` in milliseconds since the epoch.
async fn expect_refreshed(client: &mut Client, id: &str) -> i64 {
    let refreshed = client.recv_type("connection.refreshed").await;
    assert_eq!(refreshed["reply_to"], id, "{refreshed}");
    assert_eq!(refreshed["data"].as_object().map(|d| d.len()), Some(1), "only expires_at: {refreshed}");
    let at = refreshed["data"]["expires_at"].as_str().unwrap_or_else(|| panic!("no expires_at: {refreshed}"));
    parse_timestamp(at).unwrap_or_else(|| panic!("expires_at '{at}' is not RFC 3339 UTC with milliseconds"))
}

/// The next frame, which must be a `connection.expiring` for a token with
/// `exp` (seconds) sent within `warning_ms` of it; its `expires_in_ms`.
async fn expect_expiring(client: &mut Client, exp: i64, warning_ms: i64) -> i64 {
    let expiring = client.recv_type("connection.expiring").await;
    let received = now_ms();
    assert_eq!(expiring["data"].as_object().map(|d| d.len()), Some(1), "only expires_in_ms: {expiring}");
    let left = expiring["data"]["expires_in_ms"].as_i64().unwrap_or_else(|| panic!("no expires_in_ms: {expiring}"));
    assert!(left > 0 && left <= warning_ms, "expires_in_ms {left} outside (0, {warning_ms}]");
    // Sent before it was received: what was left then is at least what is
    // left now (a millisecond for rounding), and it was not sent early.
    let left_now = exp * 1000 - received;
    assert!(left + 1 >= left_now, "expires_in_ms {left}, but {left_now} ms are left on receipt");
    assert!(left_now > -1000 && received >= exp * 1000 - warning_ms - 5, "sent {left_now} ms before exp");
    left
}

#[actix_rt::test]
async fn a_refresh_is_answered_with_the_new_expiry() {
    let server = TestServer::start();
    let first_exp = now_secs() + 600;
    let (mut client, ack) = connect_with(&server, &token("alice", first_exp, &["conversation:*"])).await;
    assert_eq!(parse_timestamp(ack["data"]["expires_at"].as_str().unwrap()), Some(first_exp * 1000), "{ack}");
    let exp = now_secs() + 1200;
    let id = refresh(&mut client, &token("alice", exp, &["conversation:*"])).await;
    assert_eq!(expect_refreshed(&mut client, &id).await, exp * 1000);
    client.assert_nothing_pending().await;
    client.subscribe(&["conversation:c1"]).await;
}

#[actix_rt::test]
async fn a_token_for_another_user_is_refused_and_the_connection_closed() {
    let server = TestServer::start();
    let (mut client, _) = connect_with(&server, &token("alice", now_secs() + 600, &["conversation:*"])).await;
    let id = refresh(&mut client, &token("mallory", now_secs() + 600, &["*:*"])).await;
    let error = client.expect_error(4001).await;
    assert_eq!(error["reply_to"], id.as_str(), "{error}");
    assert!(error["data"]["message"].as_str().unwrap().contains("user never changes"), "{error}");
    let notice = client.expect_closed_with(4001).await;
    assert_eq!(notice["data"]["reconnect"], false, "{notice}");
    server.wait_for_connections(0).await;
}

#[actix_rt::test]
async fn an_invalid_or_expired_refresh_token_leaves_the_connection_working() {
    let server = TestServer::start();
    let (mut client, _) = connect_with(&server, &token("alice", now_secs() + 600, &["conversation:*"])).await;
    client.subscribe(&["conversation:c1"]).await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": now_secs() + 600, "channels": ["*:*"]}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-0123456789abc"),
    )
    .expect("sign");
    for (bad, code) in [("not.a.jwt".to_owned(), 4001), (forged, 4001), (token("alice", now_secs() - 3600, &[]), 4002)]
    {
        let id = refresh(&mut client, &bad).await;
        let error = client.expect_error(code).await;
        assert_eq!(error["reply_to"], id.as_str(), "{error}");
        assert!(error["data"]["message"].as_str().unwrap().contains("current credentials"), "{error}");
    }
    // Still open, still alice, still subscribed, still within the old grants.
    let id = server.publish("conversation:c1", "demo.token", json!({"t": 1})).await;
    assert_eq!(client.recv_type("demo.token").await["id"], id.as_str());
    client.request("channel.subscribe", None, json!({"channels": ["team:t1"]})).await;
    client.expect_error(4003).await;
    client.assert_nothing_pending().await;
    assert_eq!(server.wait_for_connections(1).await["users"], 1);
}

#[actix_rt::test]
async fn a_token_near_its_exp_is_warned_in_time() {
    let server = TestServer::with(|a| a.token_expiry_warning_ms = Some(WARNING_MS));
    let exp = now_secs() + 3;
    let (mut client, _) = connect_with(&server, &token("alice", exp, &[])).await;
    expect_expiring(&mut client, exp, WARNING_MS as i64).await;
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_refresh_rearms_the_warning_for_the_new_exp() {
    let server = TestServer::with(|a| a.token_expiry_warning_ms = Some(WARNING_MS));
    // A long token: no warning for ten minutes, until a refresh makes it
    // short.
    let (mut client, _) = connect_with(&server, &token("alice", now_secs() + 600, &[])).await;
    let exp = now_secs() + 3;
    let id = refresh(&mut client, &token("alice", exp, &[])).await;
    assert_eq!(expect_refreshed(&mut client, &id).await, exp * 1000);
    expect_expiring(&mut client, exp, WARNING_MS as i64).await;
    // Warned already: a refresh starts the count again for its own token.
    let exp = now_secs() + 3;
    let id = refresh(&mut client, &token("alice", exp, &[])).await;
    assert_eq!(expect_refreshed(&mut client, &id).await, exp * 1000);
    expect_expiring(&mut client, exp, WARNING_MS as i64).await;
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn the_connection_ends_at_the_refreshed_tokens_exp() {
    // The first token is good for ten minutes; the second expired a second
    // ago (up to two, as `exp` is whole seconds), within the 5 s of clock
    // skew the server allows, so it is taken and the connection ends some
    // 4 s later, announced, not ten minutes later.
    let server = TestServer::start();
    let (mut client, _) = connect_with(&server, &token("alice", now_secs() + 600, &[])).await;
    let exp = now_secs() - 1;
    let id = refresh(&mut client, &token("alice", exp, &[])).await;
    assert_eq!(expect_refreshed(&mut client, &id).await, exp * 1000);
    assert_eq!(client.recv_type("connection.expiring").await["data"], json!({"expires_in_ms": 0}));
    let notice = client.expect_closed_with(4002).await;
    assert!(notice["data"]["message"].as_str().unwrap().contains("expired"), "{notice}");
}

#[actix_rt::test]
async fn a_refresh_that_no_longer_grants_a_channel_leaves_it() {
    let server = TestServer::start();
    let mut witness = server.subscriber("witness", &["team:t1"]).await;
    let grants = ["conversation:*", "team:t1"];
    let (mut alice, _) = connect_with(&server, &token("alice", now_secs() + 600, &grants)).await;
    alice.subscribe(&["conversation:c1", "team:t1", "system:settings"]).await;
    assert_eq!(witness.recv_type("channel.presence").await["data"], json!({"user_id": "alice", "state": "joined"}));

    let id = refresh(&mut alice, &token("alice", now_secs() + 600, &["conversation:*"])).await;
    expect_refreshed(&mut alice, &id).await;
    let left = alice.recv_type("channel.unsubscribed").await;
    assert_eq!(left["channel"], "team:t1", "{left}");
    assert_eq!(left["data"], json!({"reason": "permission_revoked"}), "{left}");
    assert_eq!(left["reply_to"], id.as_str(), "{left}");
    assert_eq!(witness.recv_type("channel.presence").await["data"], json!({"user_id": "alice", "state": "left"}));

    // The revoked channel delivers to the witness, not to alice; the one
    // still granted delivers to alice.
    let revoked = server.publish("team:t1", "demo.activity", json!({"n": 1})).await;
    let kept = server.publish("conversation:c1", "demo.token", json!({"n": 2})).await;
    assert_eq!(witness.recv_type("demo.activity").await["id"], revoked.as_str());
    assert_eq!(alice.recv_type("demo.token").await["id"], kept.as_str());
    alice.assert_nothing_pending().await;

    // The new grants hold for new requests too; the settings channel, which
    // every client may follow, stays.
    alice.request("channel.subscribe", None, json!({"channels": ["team:t1"]})).await;
    assert_eq!(alice.expect_error(4003).await["channel"], "team:t1");
    let (_, list) = server.get("/ws/connections").await;
    let entry = list["connections"].as_array().unwrap().iter().find(|c| c["user_id"] == "alice").cloned();
    let mut channels: Vec<String> = entry
        .and_then(|e| serde_json::from_value(e["channels"].clone()).ok())
        .unwrap_or_else(|| panic!("alice listed with channels: {list}"));
    channels.sort();
    assert_eq!(channels, ["conversation:c1", "system:settings"]);
}

#[actix_rt::test]
async fn an_api_key_connection_has_nothing_to_refresh() {
    let server = TestServer::start();
    let mut client = server.subscriber("alice", &["conversation:c1"]).await;
    let id = refresh(&mut client, &token("alice", now_secs() + 600, &["conversation:*"])).await;
    let error = client.expect_error(4005).await;
    assert_eq!(error["reply_to"], id.as_str(), "{error}");
    assert!(error["data"]["message"].as_str().unwrap().contains("API key"), "{error}");
    let id = server.publish("conversation:c1", "demo.token", json!({})).await;
    assert_eq!(client.recv_type("demo.token").await["id"], id.as_str());
    client.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_refresh_without_a_token_is_an_invalid_message() {
    let server = TestServer::start();
    let (mut client, _) = connect_with(&server, &token("alice", now_secs() + 600, &[])).await;
    let id = client.request("connection.refresh", None, json!({"token": 7})).await;
    let error = client.expect_error(4005).await;
    assert_eq!(error["reply_to"], id.as_str(), "{error}");
    assert!(error["data"]["message"].as_str().unwrap().contains("data.token"), "{error}");
    client.assert_nothing_pending().await;
}
