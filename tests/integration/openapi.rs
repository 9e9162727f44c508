//! `GET /openapi.json` and `GET /docs`: the document is OpenAPI 3.1, it
//! describes exactly the routes `src/http/mod.rs` registers, the operations
//! it says take the admin token refuse requests without it, and the docs
//! page and its assets are served. (scripts/test-api holds every response
//! to the document with schemathesis.)

use std::collections::BTreeSet;

use awc::http::Method;
use serde_json::Value;

use crate::common::{TestServer, DEADLINE};

/// The routes `routes()` registers, read from its source: each
/// `resource("…")` with the methods of the `.route(web::…())` calls that
/// follow it. A route added there without its `#[utoipa::path]` in the
/// document fails the test below.
fn registered_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/http/mod.rs");
    let body = source.split("pub fn routes(").nth(1).expect("src/http/mod.rs has routes()");
    let mut routes = BTreeSet::new();
    for chunk in body.split("resource(\"").skip(1) {
        let path = chunk.split('"').next().expect("a quoted path");
        let mut methods = 0;
        for method in ["get", "post", "put", "delete", "patch", "head"] {
            if chunk.contains(&format!("web::{method}()")) {
                routes.insert((method.to_uppercase(), path.to_owned()));
                methods += 1;
            }
        }
        assert!(methods > 0, "no method found for resource {path}");
    }
    assert!(routes.len() > 20, "only {} routes read from src/http/mod.rs: {routes:?}", routes.len());
    routes
}

/// Every operation of the document: method, path and the operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            all.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    all
}

/// A path with each `{parameter}` replaced by a harmless value.
fn concrete(path: &str) -> String {
    path.replace("{connection_id}", "node-1")
        .replace("{channel}", "conversation:c1")
        .replace("{asset}", "nova-docs.js")
        .split('/')
        .map(|segment| if segment.starts_with('{') { "x" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

async fn document(server: &TestServer) -> Value {
    let mut res = awc::Client::default().get(server.url("/openapi.json")).timeout(DEADLINE).send().await.expect("GET");
    assert_eq!(res.status().as_u16(), 200, "/openapi.json without a token");
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    res.json::<Value>().limit(16 * 1024 * 1024).await.expect("JSON")
}

/// Sends `method path` without a body or token: status, headers, body.
async fn call(server: &TestServer, method: &str, path: &str) -> (u16, awc::http::header::HeaderMap, Value) {
    let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let mut res =
        awc::Client::default().request(method, server.url(path)).timeout(DEADLINE).send().await.expect("request");
    let headers = res.headers().clone();
    let body = res.json::<Value>().limit(16 * 1024 * 1024).await.unwrap_or(Value::Null);
    (res.status().as_u16(), headers, body)
}

#[actix_rt::test]
async fn the_document_is_openapi_3_1_and_describes_every_registered_route() {
    let server = TestServer::start();
    let doc = document(&server).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "openapi: {}", doc["openapi"]);
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let registered = registered_routes();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes without a #[utoipa::path] in ApiDoc (src/http/openapi.rs): {undocumented:?}"
    );
    assert!(unregistered.is_empty(), "documented operations that are not routes: {unregistered:?}");
    // Every response names its body's schema, and every schema referred
    // to is there.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("a schema name");
        assert!(doc["components"]["schemas"].get(name).is_some(), "{name} is referred to but not defined");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["metrics_token"]["scheme"], "bearer");
}

#[actix_rt::test]
async fn every_operation_that_takes_the_admin_token_refuses_requests_without_it() {
    let server = TestServer::start();
    let doc = document(&server).await;
    let mut admin = 0;
    for (method, path, operation) in operations(&doc) {
        let takes_admin = operation["security"]
            .as_array()
            .is_some_and(|all| all.iter().any(|requirement| requirement.get("admin_token").is_some()));
        let (status, headers, body) = call(&server, &method, &concrete(&path)).await;
        if takes_admin {
            admin += 1;
            assert_eq!(status, 401, "{method} {path} without a token: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}: {body}");
            assert!(headers.contains_key("www-authenticate"), "{method} {path}: no WWW-Authenticate");
            assert!(operation["responses"]["401"].is_object(), "{method} {path} does not document its 401");
        } else {
            assert_ne!(status, 401, "{method} {path} is documented without a token but refused: {body}");
        }
    }
    assert!(admin >= 20, "only {admin} operations take the admin token");
}

#[actix_rt::test]
async fn other_methods_are_405_naming_the_documented_ones_in_allow() {
    let server = TestServer::start();
    let doc = document(&server).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let documented: BTreeSet<String> = item.as_object().expect("item").keys().map(|m| m.to_uppercase()).collect();
        let other =
            ["PATCH", "DELETE", "PUT", "POST"].into_iter().find(|m| !documented.contains(*m)).expect("a method");
        let (status, headers, body) = call(&server, other, &concrete(path)).await;
        assert_eq!(status, 405, "{other} {path}: {body}");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{other} {path}: {body}");
        let allow = headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let allowed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
        assert_eq!(allowed, documented, "Allow of {path}");
    }
}

#[actix_rt::test]
async fn the_docs_page_and_its_assets_are_served_without_a_token() {
    let server = TestServer::start();
    let expect = [
        ("/docs", "text/html", "swagger-ui"),
        ("/docs/nova-docs.js", "text/javascript", "openapi.json"),
        ("/docs/swagger-ui-bundle.js", "text/javascript", "SwaggerUIBundle"),
        ("/docs/swagger-ui.css", "text/css", ".swagger-ui"),
    ];
    for (path, content_type, needle) in expect {
        let mut res = awc::Client::default().get(server.url(path)).timeout(DEADLINE).send().await.expect("GET");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let got = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(got.starts_with(content_type), "{path}: content type {got}");
        let body = res.body().limit(16 * 1024 * 1024).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(needle), "{path} does not contain {needle}");
        // Nothing the page loads comes from another host.
        if path == "/docs" {
            assert!(!text.contains("http://") && !text.contains("https://"), "the page names another host");
        }
    }
    let (status, _, body) = call(&server, "GET", "/docs/missing.js").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

// What schemathesis found, kept as tests of their own.

#[actix_rt::test]
async fn raw_bodies_over_their_limit_get_the_json_error() {
    let server = TestServer::start();
    let toggle = " ".repeat(300 * 1024);
    let (status, body) = server.send_raw("PUT", "/api/mcp/gmail/toggle", "application/json", &toggle).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
}

#[actix_rt::test]
async fn a_user_id_is_held_to_128_characters_not_bytes() {
    let server = TestServer::start();
    let event = serde_json::json!({"type": "note", "data": {}});
    // "é", percent-encoded: two bytes each.
    let two_byte = "%C3%A9".repeat(128);
    let (status, body) = server.post(&format!("/api/users/{two_byte}/send"), event.clone()).await;
    assert_eq!(status, 202, "{body}");
    let too_long = "%C3%A9".repeat(129);
    let (status, body) = server.post(&format!("/api/users/{too_long}/send"), event).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_user_id");
}

#[actix_rt::test]
async fn counts_and_offsets_too_large_for_64_bits_read_as_the_largest() {
    let server = TestServer::start();
    let huge = "99999999999999999999999999";
    let (status, body) = server.get(&format!("/ws/connections?limit={huge}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["connections"].is_array(), "{body}");
    let (status, body) = server.get(&format!("/api/channels/conversation:c1/history?since={huge}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], serde_json::json!([]), "{body}");
    for bad in ["-1", "1.5", "ten", ""] {
        let (status, body) = server.get(&format!("/ws/connections?limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    }
}
