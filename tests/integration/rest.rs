//! The REST API: admin authentication, input validation with JSON errors,
//! `/health`, `/ws/connections`, `/ws/metrics`, `/ws/ping`, `/ws/broadcast`
//! and the WebSocket endpoint's own HTTP answers.

use serde_json::{json, Value};

use crate::common::{jwt, parse_timestamp, prometheus_sample, TestServer, ADMIN_TOKEN, DEADLINE};

/// Asserts `body` is the API's error shape with `code`.
fn assert_api_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// A valid publish body.
fn event() -> Value {
    json!({"channel": "conversation:c1", "type": "demo.token", "data": {"token": "x"}})
}

#[actix_rt::test]
async fn admin_endpoints_refuse_missing_or_wrong_tokens_with_401() {
    let server = TestServer::start();
    let posts = [
        ("/api/publish", event()),
        ("/api/publish/batch", json!({"events": [event()]})),
        ("/api/users/alice/send", json!({"type": "note", "data": {}})),
        ("/ws/broadcast", json!({"type": "note", "data": {}})),
        ("/ws/ping", json!({})),
    ];
    let wrong = [None, Some("wrong-token"), Some(""), Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])];
    for (path, body) in &posts {
        for token in wrong {
            let (status, answer) = server.post_with(path, body.clone(), token).await;
            assert_api_error(status, &answer, 401, "unauthorized");
        }
    }
    for path in ["/ws/connections", "/ws/metrics"] {
        for token in wrong {
            let (status, answer) = server.get_with(path, token).await;
            assert_api_error(status, &answer, 401, "unauthorized");
        }
    }
}

#[actix_rt::test]
async fn refused_publish_delivers_nothing() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let (status, _) = server.post_with("/api/publish", event(), Some("wrong-token")).await;
    assert_eq!(status, 401);
    let (status, _) = server.post_with("/ws/broadcast", json!({"type": "note"}), None).await;
    assert_eq!(status, 401);
    let later = server.publish("conversation:c1", "demo.token", json!({"n": 2})).await;
    assert_eq!(alice.recv_type("demo.token").await["id"], later.as_str());
}

#[actix_rt::test]
async fn malformed_json_body_is_400() {
    let server = TestServer::start();
    for path in ["/api/publish", "/api/publish/batch", "/ws/broadcast", "/api/users/alice/send"] {
        let (status, body) = server.post_raw(path, "application/json", "{\"channel\": ", Some(ADMIN_TOKEN)).await;
        assert_api_error(status, &body, 400, "invalid_json");
    }
}

#[actix_rt::test]
async fn body_that_is_not_json_typed_is_refused() {
    let server = TestServer::start();
    let (status, body) = server.post_raw("/api/publish", "text/plain", &event().to_string(), Some(ADMIN_TOKEN)).await;
    assert_api_error(status, &body, 415, "unsupported_media_type");
}

#[actix_rt::test]
async fn missing_and_unknown_fields_are_400() {
    let server = TestServer::start();
    let cases = [
        json!({"type": "demo.token", "data": {}}),
        json!({"channel": "conversation:c1", "data": {}}),
        json!({"channel": "conversation:c1", "type": "demo.token", "data": {}, "extra": 1}),
        json!({"channel": 5, "type": "demo.token"}),
        json!([event()]),
    ];
    for body in cases {
        let (status, answer) = server.post("/api/publish", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_json", "{body}: {answer}");
    }
    let (status, answer) = server.post("/ws/broadcast", json!({"type": "note", "channels": []})).await;
    assert_api_error(status, &answer, 400, "invalid_json");
}

#[actix_rt::test]
async fn bad_channel_name_is_400() {
    let server = TestServer::start();
    for channel in ["bad", "chat:x", "conversation:../x", "conversation:", "team:a b"] {
        let (status, body) =
            server.post("/api/publish", json!({"channel": channel, "type": "demo.token", "data": {}})).await;
        assert_api_error(status, &body, 400, "invalid_channel");
    }
}

#[actix_rt::test]
async fn reserved_or_malformed_types_are_400() {
    let server = TestServer::start();
    let types =
        ["connection.ack", "connection.heartbeat", "channel.presence", "channel.subscribed", "error", "", "a b"];
    for kind in types {
        let (status, body) =
            server.post("/api/publish", json!({"channel": "conversation:c1", "type": kind, "data": {}})).await;
        assert_api_error(status, &body, 400, "invalid_type");
        let (status, body) = server.post("/ws/broadcast", json!({"type": kind, "data": {}})).await;
        assert_api_error(status, &body, 400, "invalid_type");
        let (status, body) = server.post("/api/users/alice/send", json!({"type": kind, "data": {}})).await;
        assert_api_error(status, &body, 400, "invalid_type");
    }
}

#[actix_rt::test]
async fn data_nested_deeper_than_64_levels_is_400() {
    let server = TestServer::start();
    let nested = |levels: usize| (1..levels).fold(json!({}), |inner, _| json!({ "a": inner }));
    let mut sub = server.subscriber("alice", &["conversation:c1"]).await;
    let (status, body) = server.post("/api/users/alice/send", json!({"type": "deep", "data": nested(65)})).await;
    assert_api_error(status, &body, 400, "invalid_data");
    let (status, body) =
        server.post("/api/publish", json!({"channel": "conversation:c1", "type": "deep", "data": nested(65)})).await;
    assert_api_error(status, &body, 400, "invalid_data");
    let (status, body) =
        server.post("/api/publish", json!({"channel": "conversation:c1", "type": "deep", "data": nested(64)})).await;
    assert_eq!(status, 202, "{body}");
    let frame = sub.recv_type("deep").await;
    assert_eq!(frame["data"], nested(64), "64 levels is the limit, and arrives whole");
}

#[actix_rt::test]
async fn non_object_data_is_400() {
    let server = TestServer::start();
    for data in [json!([1, 2]), json!("text"), json!(3), json!(true)] {
        let (status, body) = server
            .post("/api/publish", json!({"channel": "conversation:c1", "type": "demo.token", "data": data}))
            .await;
        assert_api_error(status, &body, 400, "invalid_data");
    }
}

#[actix_rt::test]
async fn event_over_the_frame_limit_is_413() {
    let server = TestServer::with(|a| a.max_frame_bytes = Some(4096));
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let big = json!({"pad": "x".repeat(5000)});
    let (status, body) =
        server.post("/api/publish", json!({"channel": "conversation:c1", "type": "demo.token", "data": big})).await;
    assert_api_error(status, &body, 413, "event_too_large");
    let (status, body) = server.post("/ws/broadcast", json!({"type": "note", "data": big})).await;
    assert_api_error(status, &body, 413, "event_too_large");
    let (status, body) = server.post("/api/users/alice/send", json!({"type": "note", "data": big})).await;
    assert_api_error(status, &body, 413, "event_too_large");
    let events = json!([event(), {"channel": "conversation:c1", "type": "demo.token", "data": big}]);
    let (status, body) = server.post("/api/publish/batch", json!({"events": events})).await;
    assert_api_error(status, &body, 413, "event_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("events[1]"), "{body}");
    // Just under the limit is fine, and nothing of the above was delivered.
    let (status, body) = server
        .post(
            "/api/publish",
            json!({"channel": "conversation:c1", "type": "demo.token", "data": {"pad": "x".repeat(3900)}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(alice.recv_type("demo.token").await["id"], body["id"]);
}

#[actix_rt::test]
async fn unknown_path_is_404_json() {
    let server = TestServer::start();
    for path in ["/nope", "/api/publish/nope", "/api/users/alice", "/ws/a/b"] {
        let (status, body) = server.get(path).await;
        assert_api_error(status, &body, 404, "not_found");
    }
    let (status, body) = server.post("/api/nope", json!({})).await;
    assert_api_error(status, &body, 404, "not_found");
}

#[actix_rt::test]
async fn wrong_method_is_405_json() {
    let server = TestServer::start();
    let cases = [
        ("GET", "/api/publish"),
        ("GET", "/api/publish/batch"),
        ("GET", "/api/users/alice/send"),
        ("POST", "/health"),
        ("DELETE", "/ws/metrics"),
        ("PUT", "/ws/connections"),
        ("GET", "/ws/broadcast"),
        ("GET", "/ws/ping"),
        ("POST", "/ws"),
    ];
    for (method, path) in cases {
        let (status, body) = server.call(method, path).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{method} {path}: {body}");
    }
}

#[actix_rt::test]
async fn health_needs_no_auth_and_counts_connections() {
    let server = TestServer::start();
    let (status, health) = server.get_with("/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["connections"], 0, "{health}");
    let _alice = server.connect_as("alice").await;
    let _bob = server.connect_as("bob").await;
    let (status, health) = server.get_with("/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["connections"], 2, "{health}");
}

#[actix_rt::test]
async fn connections_lists_users_client_ids_and_channels() {
    let server = TestServer::start();
    let mut alice = server.connect_path("/ws/tab1").await;
    let ack = alice.init(json!({"api_key": "development", "user_id": "alice"})).await;
    assert_eq!(ack["data"]["client_id"], "tab1");
    alice.subscribe(&["conversation:c1", "team:t1"]).await;
    let _bob = server.connect_as("bob").await;
    let _anonymous = server.connect().await; // not authenticated: not listed
    server.wait_for_connections(2).await;

    let (status, list) = server.get("/ws/connections").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2, "{list}");
    let entries = list["connections"].as_array().expect("connections");
    assert_eq!(entries.len(), 2);
    let alice_entry = entries.iter().find(|c| c["user_id"] == "alice").expect("alice listed");
    assert_eq!(alice_entry["client_id"], "tab1");
    assert_eq!(alice_entry["connection_id"], ack["data"]["connection_id"]);
    let mut channels: Vec<&str> =
        alice_entry["channels"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    channels.sort();
    assert_eq!(channels, ["conversation:c1", "team:t1"]);
    assert!(parse_timestamp(alice_entry["connected_at"].as_str().unwrap()).is_some(), "{alice_entry}");
    let bob_entry = entries.iter().find(|c| c["user_id"] == "bob").expect("bob listed");
    assert_eq!(bob_entry["client_id"], Value::Null);
    assert_eq!(bob_entry["channels"], json!([]));

    // Oldest first.
    assert_eq!(entries[0]["user_id"], "alice", "{list}");
    assert_eq!(entries[1]["user_id"], "bob", "{list}");

    let (status, limited) = server.get("/ws/connections?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(limited["total"], 2);
    assert_eq!(limited["connections"].as_array().unwrap().len(), 1);
    for bad in ["/ws/connections?limit=abc", "/ws/connections?limit=-1", "/ws/connections?bogus=1"] {
        let (status, body) = server.get(bad).await;
        assert_api_error(status, &body, 400, "invalid_query");
    }
}

#[actix_rt::test]
async fn metrics_report_counts_rates_and_latency() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1", "team:t1"]).await;
    let _bob = server.subscriber("bob", &["team:t1"]).await;
    let _ = alice.recv_type("channel.presence").await;
    server.publish("conversation:c1", "demo.token", json!({})).await;
    alice.recv_type("demo.token").await;

    let m = server.metrics().await;
    assert_eq!(m["connections"], 2, "{m}");
    assert_eq!(m["users"], 2, "{m}");
    assert_eq!(m["channels"], 2, "{m}");
    assert_eq!(m["dropped_slow_consumers"], 0, "{m}");
    // In: 2 inits + 2 subscribes. Out: 3 subscribed + 1 presence + 1 event.
    assert!(m["messages_in"].as_u64().unwrap() >= 4, "{m}");
    assert!(m["messages_out"].as_u64().unwrap() >= 5, "{m}");
    assert!(m["published"].as_u64().unwrap() >= 1, "{m}");
    let latency = &m["latency"];
    assert!(latency["count"].as_u64().unwrap() >= 5, "{m}");
    let p = |k: &str| latency[k].as_u64().unwrap_or_else(|| panic!("latency.{k} missing: {m}"));
    assert!(p("p50_us") <= p("p90_us") && p("p90_us") <= p("p99_us") && p("p99_us") <= p("max_us"), "{m}");
    assert!(m["messages_in_per_sec"].is_number() && m["messages_out_per_sec"].is_number(), "{m}");

    // Rates are sampled every second: keep traffic flowing until a sample
    // shows both directions.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        alice.assert_nothing_pending().await;
        server.publish("conversation:c1", "demo.token", json!({})).await;
        alice.recv_type("demo.token").await;
        let m = server.metrics().await;
        if m["messages_in_per_sec"].as_f64().unwrap() > 0.0 && m["messages_out_per_sec"].as_f64().unwrap() > 0.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "rates stay at zero under traffic: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn ping_sends_every_authenticated_connection_a_heartbeat() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    let mut bob = server.connect_as("bob").await;
    let mut anonymous = server.connect().await;
    let (status, body) = server.post("/ws/ping", json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], 2, "{body}");
    for client in [&mut alice, &mut bob] {
        let beat = client.recv_type("connection.heartbeat").await;
        assert_eq!(beat.get("reply_to"), None, "an unsolicited heartbeat answers nothing: {beat}");
        assert_eq!(beat["id"], body["id"]);
        client.assert_nothing_pending().await;
    }
    // The unauthenticated socket got nothing: its first frame is its ack.
    anonymous.init(json!({"api_key": "development", "user_id": "late"})).await;
}

#[actix_rt::test]
async fn broadcast_reaches_every_authenticated_connection() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    let mut bob = server.connect_as("bob").await;
    let (status, body) = server.post("/ws/broadcast", json!({"type": "maintenance", "data": {"at": "soon"}})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], 2);
    for client in [&mut alice, &mut bob] {
        let event = client.recv_type("maintenance").await;
        assert_eq!(event["id"], body["id"]);
        assert_eq!(event["data"], json!({"at": "soon"}));
        client.assert_nothing_pending().await;
    }
}

#[actix_rt::test]
async fn bad_client_id_in_the_path_is_400() {
    let server = TestServer::start();
    let long = format!("/ws/{}", "a".repeat(65));
    for path in ["/ws/has%20space", "/ws/semi;colon", "/ws/%C3%A9", long.as_str()] {
        let (status, body) = match server.try_connect(path, &[]).await {
            Ok(_) => panic!("{path} was accepted"),
            Err(refusal) => refusal,
        };
        assert_api_error(status, &body, 400, "invalid_client_id");
    }
    let longest = "A-z_0.9.".repeat(8);
    let mut ok = server.connect_path(&format!("/ws/{longest}")).await;
    let ack = ok.init(json!({"api_key": "development"})).await;
    assert_eq!(ack["data"]["client_id"], longest.as_str());
}

#[actix_rt::test]
async fn websocket_endpoint_without_an_upgrade_is_400() {
    let server = TestServer::start();
    let (status, body) = server.get_with("/ws", None).await;
    assert_api_error(status, &body, 400, "websocket_required");
}

#[actix_rt::test]
async fn the_metrics_views_count_connections_events_and_redis() {
    let server = TestServer::start();
    let _alice = server.connect_as("alice").await;
    let _bob = server.subscriber("bob", &["team:t1"]).await;
    let (status, body) = server.get("/api/metrics/websocket-connections").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["connections"].clone(), body["users"].clone(), body["channels"].clone()),
        (json!(2), json!(2), json!(1)),
        "{body}"
    );
    for view in ["websocket-connections", "event-throughput", "redis-health"] {
        let (status, _) = server.get_with(&format!("/api/metrics/{view}"), None).await;
        assert_eq!(status, 401, "{view} without the admin token");
    }
    for n in 0..5 {
        server.publish("team:t1", "tick", json!({ "n": n })).await;
    }
    // Sampled once a second: the count is awaited.
    let until = tokio::time::Instant::now() + crate::common::DEADLINE;
    loop {
        let (_, body) = server.get("/api/metrics/event-throughput").await;
        if body["events_per_minute"].as_u64() >= Some(5) {
            assert!(body["window_secs"].as_u64().is_some_and(|w| (1..=61).contains(&w)), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < until, "never counted: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = server.get("/api/metrics/redis-health").await;
    assert_eq!((status, body["status"].clone()), (200, json!("disabled")), "{body}");

    // A node whose Redis is away: a metric, so 200, saying "down".
    let nowhere = crate::common::RedisServer::unused();
    let node = TestServer::node(&nowhere, "lonely");
    node.wait_for_redis("down").await;
    let (status, body) = node.get("/api/metrics/redis-health").await;
    assert_eq!((status, body["status"].clone()), (200, json!("down")), "{body}");
}

#[actix_rt::test]
async fn prometheus_reads_the_counters_with_the_admin_or_the_metrics_token() {
    let server = TestServer::with(|a| a.metrics_token = Some("scrape-only-token".into()));
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    for n in 0..3 {
        server.publish("team:t1", "tick", json!({ "n": n })).await;
        alice.recv_type("tick").await;
    }
    assert_eq!(server.scrape(None).await.0, 401);
    assert_eq!(server.scrape(Some("wrong")).await.0, 401);
    let (status, text) = server.scrape(Some("scrape-only-token")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(prometheus_sample(&text, "nova_connections"), Some(1.0), "{text}");
    assert_eq!(prometheus_sample(&text, "nova_published_total"), Some(3.0), "{text}");
    // Every frame written is measured: the +Inf bucket holds them all, and
    // the buckets never go down.
    let inf = prometheus_sample(&text, "nova_publish_write_seconds_bucket{le=\"+Inf\"}").expect("a +Inf bucket");
    assert_eq!(Some(inf), prometheus_sample(&text, "nova_publish_write_seconds_count"), "{text}");
    assert!(inf >= 3.0, "{text}");
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("nova_publish_write_seconds_bucket"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // The admin token reads it too; the metrics token reads nothing else.
    assert_eq!(server.scrape(Some(ADMIN_TOKEN)).await.0, 200);
    assert_eq!(server.get_with("/ws/metrics", Some("scrape-only-token")).await.0, 401);
}

#[actix_rt::test]
async fn prometheus_counts_frames_by_family_bytes_and_failed_authentications() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    server.publish("conversation:c1", "assistant.token", json!({"stream_id": "s1", "chunk": "hi"})).await;
    server.publish("conversation:c1", "my_app.thing", json!({})).await;
    alice.recv_type("assistant.token").await;
    alice.recv_type("my_app.thing").await;
    // Two failed authentications: a bad token, an expired one.
    for (token, code) in [("not-a-jwt".to_owned(), 4001), (jwt("u", -3600, json!({})), 4002)] {
        let mut client = server.connect().await;
        client.request("connection.init", None, json!({ "token": token })).await;
        client.expect_error(code).await;
        client.expect_closed_with(code).await;
    }
    // A first frame that is not connection.init.
    let mut early = server.connect().await;
    early.request("channel.subscribe", None, json!({"channels": ["team:t1"]})).await;
    early.expect_error(4001).await;
    early.expect_closed_with(4001).await;

    let (status, text) = server.scrape(Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let get = |name: &str| prometheus_sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    // In: three connection.init, alice's channel.subscribe and the early one.
    assert_eq!(get("nova_messages_in_total{family=\"connection\"}"), 3.0);
    assert_eq!(get("nova_messages_in_total{family=\"channel\"}"), 2.0);
    // Out: alice's ack and subscribed, then the two events; each of the
    // three refused connections' error and connection.error notice.
    assert_eq!(get("nova_messages_out_total{family=\"assistant\"}"), 1.0);
    assert_eq!(get("nova_messages_out_total{family=\"other\"}"), 1.0);
    assert_eq!(get("nova_messages_out_total{family=\"channel\"}"), 1.0);
    assert_eq!(get("nova_messages_out_total{family=\"connection\"}"), 4.0);
    assert_eq!(get("nova_messages_out_total{family=\"error\"}"), 3.0);
    assert!(get("nova_bytes_out_total") > 200.0, "{text}");
    assert_eq!(get("nova_auth_failures_total{reason=\"invalid\"}"), 1.0);
    assert_eq!(get("nova_auth_failures_total{reason=\"expired\"}"), 1.0);
    assert_eq!(get("nova_auth_failures_total{reason=\"timeout\"}"), 0.0);
    assert_eq!(get("nova_auth_failures_total{reason=\"protocol\"}"), 1.0);
    assert_eq!(get("nova_rate_limited_total{limit=\"user\"}"), 0.0);
}
