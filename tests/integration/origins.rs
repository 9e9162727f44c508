//! Browser origins: a WebSocket upgrade with an `Origin` header is allowed
//! only for configured origins (and localhost in development mode).

use serde_json::json;

use crate::common::TestServer;

/// Upgrades with `origin`, expecting a refusal with 403 and the JSON error.
async fn assert_refused(server: &TestServer, origin: &str) {
    match server.try_connect("/ws", &[("Origin", origin)]).await {
        Ok(_) => panic!("origin {origin} was allowed"),
        Err((status, body)) => {
            assert_eq!(status, 403, "{origin}: {body}");
            assert_eq!(body["error"]["code"], "origin_not_allowed", "{origin}: {body}");
        }
    }
}

/// Upgrades with `origin` and authenticates, expecting both to work.
async fn assert_allowed(server: &TestServer, origin: &str) {
    let mut client = match server.try_connect("/ws", &[("Origin", origin)]).await {
        Ok(client) => client,
        Err((status, body)) => panic!("origin {origin} was refused with {status}: {body}"),
    };
    client.init(json!({"api_key": "development", "user_id": "browser"})).await;
}

#[actix_rt::test]
async fn foreign_origin_is_refused_with_403() {
    let server = TestServer::start();
    for origin in ["https://evil.example.com", "http://localhost.evil.com", "null", "http://127.0.0.2:80"] {
        assert_refused(&server, origin).await;
    }
}

#[actix_rt::test]
async fn localhost_origins_are_allowed_in_development() {
    let server = TestServer::start();
    for origin in ["http://localhost:5173", "https://localhost", "http://127.0.0.1:3000", "http://[::1]:8080"] {
        assert_allowed(&server, origin).await;
    }
}

#[actix_rt::test]
async fn configured_origin_is_allowed() {
    let server = TestServer::with(|a| a.allowed_origins = Some(vec!["https://app.example.com".into()]));
    assert_allowed(&server, "https://app.example.com").await;
    assert_refused(&server, "https://other.example.com").await;
    assert_refused(&server, "http://app.example.com").await;
}

#[actix_rt::test]
async fn production_allows_only_configured_origins() {
    let server = TestServer::with(|a| {
        a.production = true;
        a.development = false;
        a.allowed_origins = Some(vec!["https://app.example.com".into()]);
    });
    assert_refused(&server, "http://localhost:5173").await;
    match server.try_connect("/ws", &[("Origin", "https://app.example.com")]).await {
        Ok(mut client) => {
            let token = crate::common::jwt("alice", 600, json!({}));
            client.init(json!({"token": token})).await;
        }
        Err((status, body)) => panic!("configured origin refused with {status}: {body}"),
    }
}

#[actix_rt::test]
async fn request_without_origin_is_accepted() {
    let server = TestServer::with(|a| {
        a.production = true;
        a.development = false;
        a.allowed_origins = Some(vec!["https://app.example.com".into()]);
    });
    let mut client = server.connect().await;
    client.init(json!({"token": crate::common::jwt("service", 600, json!({}))})).await;
}

/// A CORS preflight for `POST /api/publish` from `origin`: status and the
/// `Access-Control-Allow-Origin` answered, if any.
async fn preflight(server: &TestServer, origin: &str) -> (u16, Option<String>) {
    let res = awc::Client::default()
        .request(awc::http::Method::OPTIONS, server.url("/api/publish"))
        .timeout(crate::common::DEADLINE)
        .insert_header(("Origin", origin))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header(("Access-Control-Request-Headers", "authorization, content-type"))
        .send()
        .await
        .expect("OPTIONS");
    let allowed = res.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (res.status().as_u16(), allowed)
}

#[actix_rt::test]
async fn rest_api_cors_follows_the_same_origins() {
    let server = TestServer::with(|a| {
        a.production = true;
        a.development = false;
        a.allowed_origins = Some(vec!["https://app.example.com".into()]);
    });
    let (status, allowed) = preflight(&server, "https://app.example.com").await;
    assert!((200..300).contains(&status), "preflight answered {status}");
    assert_eq!(allowed.as_deref(), Some("https://app.example.com"));
    let (_, allowed) = preflight(&server, "https://evil.example.com").await;
    assert_eq!(allowed, None, "a foreign origin must not be allowed by CORS");
    let (_, allowed) = preflight(&server, "http://localhost:5173").await;
    assert_eq!(allowed, None, "localhost is allowed only in development");
}

#[actix_rt::test]
async fn a_page_of_the_server_itself_may_connect_whatever_the_list() {
    let server = TestServer::with(|a| {
        a.development = false;
        a.allowed_origins = Some(vec!["https://app.example.com".into()]);
    });
    // The dashboard's page, served by this server, connects back to it.
    let own = format!("http://{}", server.addr);
    let mut client = match server.try_connect("/ws", &[("Origin", own.as_str())]).await {
        Ok(client) => client,
        Err((status, body)) => panic!("the server's own origin was refused with {status}: {body}"),
    };
    client.init(json!({"token": crate::common::jwt("page", 600, json!({}))})).await;
    let other_port = format!("http://{}:{}", server.addr.ip(), server.addr.port().wrapping_add(1));
    assert_refused(&server, &other_port).await;
}
