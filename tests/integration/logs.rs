//! The log as an operator reads it: `NOVA_LOG_FORMAT=json` gives one JSON
//! object per line, and a REST request's lines carry its `X-Request-Id`.

use serde_json::Value;

use crate::binary::Process;

/// Every field a JSON log line has.
fn assert_json_line(line: &str) -> Value {
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
    for field in ["timestamp", "level", "target", "message"] {
        assert!(value[field].is_string(), "no '{field}' in {line}");
    }
    value
}

#[actix_rt::test]
async fn json_logs_carry_each_rest_requests_id() {
    let env = [
        ("NOVA_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,nova_realtime=debug,nova_actors::session=debug"),
        ("NOVA_DEVELOPMENT", "true"),
    ];
    let mut server = Process::spawn(&["--bind", "127.0.0.1:0"], &env);
    let addr = server.listening();

    // A request id the client chose comes back and marks the request's lines.
    let res = awc::Client::default()
        .get(format!("http://{addr}/health"))
        .insert_header(("X-Request-Id", "trace-42.a"))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(res.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("trace-42.a"));
    let line = server.wait_for_line("trace-42.a");
    let value = assert_json_line(&line);
    assert_eq!(value["request_id"], "trace-42.a", "{line}");
    assert!(value["message"].as_str().unwrap().contains("GET /health"), "{line}");

    // One that could forge a log line is replaced by a fresh one.
    let res = awc::Client::default()
        .get(format!("http://{addr}/health"))
        .insert_header(("X-Request-Id", "a b\"c"))
        .send()
        .await
        .expect("GET /health");
    let given = res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(given.len(), 36, "a new UUID: {given}");
    let line = server.wait_for_line(&given);
    assert_eq!(assert_json_line(&line)["request_id"], given.as_str());

    // A connection's lines carry its id, as the ack gives it.
    let mut client = crate::common::Client::connect(&format!("ws://{addr}/ws")).await;
    let ack = client.init(serde_json::json!({"api_key": "development", "user_id": "logged"})).await;
    let id = ack["data"]["connection_id"].as_str().expect("a connection id").to_owned();
    let line = server.wait_for_line("authenticated as 'logged'");
    assert_eq!(assert_json_line(&line)["connection_id"], id.as_str(), "{line}");
    client.close().await;

    // Every line so far, the start-up's included, is one JSON object.
    let _ = server.child.kill();
    for line in server.stderr().lines() {
        assert_json_line(line);
    }
}
