//! The agent gateway: what a client sends for an agent reaches it (a Redis
//! stream read with a real consumer group, or a real HTTP server in the
//! test), at least once and in order, and its answer reaches the clients.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::common::{Client, RedisServer, TestServer, DEADLINE};

/// Writes `configs/agents.yaml` of `server` and waits until `GET
/// /api/agents` lists exactly `names`.
async fn configure(server: &TestServer, yaml: &str, names: &[&str]) {
    let dir = server.dirs.as_ref().expect("the server's own dirs").path().join("configs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agents.yaml"), yaml).unwrap();
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, body) = server.get("/api/agents").await;
        let listed: Vec<&str> = body["agents"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["name"].as_str()).collect())
            .unwrap_or_default();
        if listed == names {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "agents.yaml was not loaded: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until agent `name` is (or is not) available; returns its entry.
async fn wait_available(server: &TestServer, name: &str, available: bool) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, body) = server.get("/api/agents").await;
        let agent = body["agents"].as_array().and_then(|a| a.iter().find(|a| a["name"] == name)).cloned();
        if let Some(agent) = agent.filter(|a| a["available"] == available) {
            return agent;
        }
        assert!(tokio::time::Instant::now() < until, "agent '{name}' never became available={available}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test server whose availability checks run often.
fn server_with(redis: Option<&RedisServer>, id: &str) -> TestServer {
    let url = redis.map(RedisServer::url);
    TestServer::with(|a| {
        a.agent_check_interval_ms = Some(50);
        a.agent_timeout_ms = Some(3000);
        if let Some(url) = url {
            a.redis_url = Some(url);
            a.node_id = Some(id.into());
            a.redis_presence_ttl_ms = Some(1500);
            a.cluster_secret = Some(crate::common::CLUSTER_SECRET.into());
        }
    })
}

/// An agent reading its stream with a consumer group, as a real one does.
struct StreamAgent {
    conn: redis::Connection,
    key: String,
    group: String,
}

impl StreamAgent {
    /// Creates the group (and the stream) and reads once, which registers
    /// the consumer.
    fn join(redis: &RedisServer, agent: &str) -> StreamAgent {
        let mut conn = redis.connection();
        let key = format!("nova:inbound:{agent}");
        let group = format!("{agent}-workers");
        let created: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(&key).arg(&group).arg("$").arg("MKSTREAM").query(&mut conn);
        if let Err(e) = created {
            assert!(e.to_string().contains("BUSYGROUP"), "{e}");
        }
        // As a real agent does: a group without a consumer is nobody.
        let _: i64 =
            redis::cmd("XGROUP").arg("CREATECONSUMER").arg(&key).arg(&group).arg("worker-1").query(&mut conn).unwrap();
        let mut agent = StreamAgent { conn, key, group };
        assert!(agent.read_once(1).is_empty());
        agent
    }

    fn read_once(&mut self, block_ms: u64) -> Vec<Value> {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg("worker-1")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query(&mut self.conn)
            .expect("XREADGROUP");
        let mut records = Vec::new();
        for (id, fields) in entries(reply) {
            let _: i64 = redis::cmd("XACK").arg(&self.key).arg(&self.group).arg(&id).query(&mut self.conn).unwrap();
            let event = fields.get("event").expect("an 'event' field");
            records.push(serde_json::from_str(event).expect("the record is JSON"));
        }
        records
    }

    /// The next `n` records, within the deadline.
    fn read(&mut self, n: usize) -> Vec<Value> {
        let until = std::time::Instant::now() + DEADLINE;
        let mut records = Vec::new();
        while records.len() < n {
            assert!(std::time::Instant::now() < until, "only {} of {n} records arrived: {records:?}", records.len());
            records.extend(self.read_once(100));
        }
        assert_eq!(records.len(), n, "{records:?}");
        records
    }
}

/// The entries of an XREADGROUP reply: `[[key, [[id, [field, value, …]], …]]]`.
fn entries(reply: redis::Value) -> Vec<(String, HashMap<String, String>)> {
    let text = |v: &redis::Value| -> String { redis::from_redis_value_ref::<String>(v).unwrap() };
    let mut out = Vec::new();
    let redis::Value::Array(streams) = reply else { return out };
    for stream in streams {
        let redis::Value::Array(parts) = stream else { continue };
        let Some(redis::Value::Array(items)) = parts.into_iter().nth(1) else { continue };
        for item in items {
            let redis::Value::Array(pair) = item else { continue };
            let id = text(&pair[0]);
            let redis::Value::Array(fields) = &pair[1] else { continue };
            let map = fields.chunks(2).map(|kv| (text(&kv[0]), text(&kv[1]))).collect();
            out.push((id, map));
        }
    }
    out
}

/// One request a [`Hook`] received.
#[derive(Debug)]
struct Posted {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Posted {
    fn record(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A real HTTP server standing in for an agent: reports every request,
/// answers POSTs with the planned statuses (then 200), `GET /health` with
/// 200, and holds POSTs while its gate is closed.
struct Hook {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Posted>,
    plan: Arc<Mutex<VecDeque<u16>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let plan: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let (p, g) = (plan.clone(), gate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, plan, gate) = (tx.clone(), p.clone(), g.clone());
                std::thread::spawn(move || serve(stream, tx, plan, gate));
            }
        });
        Hook { addr, rx, plan, gate }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn plan(&self, statuses: &[u16]) {
        self.plan.lock().unwrap().extend(statuses);
    }

    fn set_open(&self, open: bool) {
        let (lock, cvar) = &*self.gate;
        *lock.lock().unwrap() = open;
        cvar.notify_all();
    }

    /// The next POST, within the deadline.
    async fn next_post(&mut self) -> Posted {
        loop {
            let posted = tokio::time::timeout(DEADLINE, self.rx.recv()).await.expect("a request in time").unwrap();
            if posted.path != "/health" {
                return posted;
            }
        }
    }
}

fn serve(
    stream: std::net::TcpStream,
    tx: mpsc::UnboundedSender<Posted>,
    plan: Arc<Mutex<VecDeque<u16>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let is_post = line.starts_with("POST");
        let status = if is_post {
            let (lock, cvar) = &*gate;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            drop(open);
            plan.lock().unwrap().pop_front().unwrap_or(200)
        } else {
            200
        };
        let _ = tx.send(Posted { path, headers, body });
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Frames until one of each of `kinds` has come (in any order), past
/// presence changes; returns them by type.
async fn collect(client: &mut Client, kinds: &[&str]) -> HashMap<String, Value> {
    let mut got = HashMap::new();
    while kinds.iter().any(|k| !got.contains_key(*k)) {
        let frame = client.recv().await;
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        if kind == "channel.presence" {
            continue;
        }
        assert!(kinds.contains(&kind.as_str()), "unexpected frame: {frame}");
        got.insert(kind, frame);
    }
    got
}

/// The next settings event of `kind`, past the agents' availability
/// changes, which the gateway announces on its own thread in any order with
/// the watcher's events.
async fn settings_event(page: &mut Client, kind: &str) -> Value {
    loop {
        let frame = page.recv().await;
        if frame["type"] == kind {
            return frame;
        }
        assert_eq!(frame["type"], "agent_availability", "unexpected frame: {frame}");
    }
}

#[actix_rt::test]
async fn a_chat_message_reaches_the_stream_agent_as_its_sender_and_the_reply_reaches_every_subscriber() {
    let redis = RedisServer::start();
    let server = server_with(Some(&redis), "n1");
    configure(&server, "chat:\n  receives: [chat.message]\n  delivery: stream\n", &["chat"]).await;
    let mut agent = StreamAgent::join(&redis, "chat");
    wait_available(&server, "chat", true).await;

    let mut alice = server.connect().await;
    let ack = alice.init(json!({"api_key": "development", "user_id": "alice"})).await;
    alice.subscribe(&["conversation:c1"]).await;
    let mut bob = server.subscriber("bob", &["conversation:c1"]).await;
    let id =
        alice.request("chat.message", Some("conversation:c1"), json!({"content": "hi", "sender_id": "mallory"})).await;
    // The receipt comes before the sender's own copy of its message.
    let receipt = &collect(&mut alice, &["message.received"]).await["message.received"];
    assert_eq!(receipt["reply_to"], id.as_str());
    assert_eq!(alice.recv_type("chat.message").await["id"], receipt["data"]["message_id"]);
    let message_id = receipt["data"]["message_id"].as_str().unwrap().to_owned();
    let relayed = bob.recv_type("chat.message").await;
    assert_eq!((relayed["id"].as_str(), relayed["data"]["sender_id"].as_str()), (Some(&*message_id), Some("alice")));

    let record = agent.read(1).remove(0);
    assert_eq!(record["id"], message_id.as_str(), "{record}");
    assert_eq!(record["type"], "chat.message");
    assert_eq!(record["channel"], "conversation:c1");
    assert_eq!(record["user_id"], "alice", "the authenticated user, not the client's word");
    assert_eq!(record["data"]["sender_id"], "alice");
    assert_eq!(record["data"]["content"], "hi");
    assert_eq!(record["connection_id"], ack["data"]["connection_id"]);
    assert_eq!(record["node_id"], "n1");
    assert_eq!(record["tenant"], Value::Null);
    assert!(record["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{record}");

    // The agent answers through the REST API; every subscriber sees it.
    for (i, chunk) in ["Hel", "lo"].iter().enumerate() {
        let data = json!({"stream_id": "s1", "chunk": chunk, "index": i});
        server.publish("conversation:c1", "assistant.token", data).await;
    }
    for client in [&mut alice, &mut bob] {
        for chunk in ["Hel", "lo"] {
            assert_eq!(client.recv_type("assistant.token").await["data"]["chunk"], chunk);
        }
    }

    // Redis forgets its scripts (SCRIPT FLUSH): the write that finds it gone
    // is refused, not half done, and its resend goes through.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut redis.connection()).unwrap();
    let again =
        json!({"id": "again-1", "type": "chat.message", "channel": "conversation:c1", "data": {"content": "again"}});
    bob.send(again.clone()).await;
    let refused = bob.expect_error(4007).await;
    assert!(refused["data"]["message"].as_str().unwrap().contains("script"), "{refused}");
    bob.send(again).await;
    let receipt = collect(&mut bob, &["message.received"]).await.remove("message.received").unwrap();
    let record = agent.read(1).remove(0);
    assert_eq!((&record["id"], record["data"]["content"].as_str()), (&receipt["data"]["message_id"], Some("again")));
}

#[actix_rt::test]
async fn agent_invoke_reaches_a_webhook_signed_and_the_run_streams_back() {
    let mut hook = Hook::start();
    let server = server_with(None, "n1");
    let yaml = format!(
        "researcher:\n  receives: [agent.invoke]\n  delivery: webhook\n  url: {}\n  secret: s3cret\n",
        hook.url("/nova/events")
    );
    configure(&server, &yaml, &["researcher"]).await;
    wait_available(&server, "researcher", true).await;
    let mut alice = server.subscriber("alice", &["agent:researcher"]).await;
    let data = json!({"input": {"task": "summarise"}, "invocation_id": "inv-1"});
    let id = alice.request("agent.invoke", Some("agent:researcher"), data).await;
    let receipt = alice.recv_type("message.received").await;
    assert_eq!(receipt["reply_to"], id.as_str());
    let message_id = receipt["data"]["message_id"].as_str().unwrap();

    let posted = hook.next_post().await;
    assert_eq!(posted.path, "/nova/events");
    let expected = format!("sha256={}", hmac_hex("s3cret", &posted.body));
    assert_eq!(posted.headers.get("x-nova-signature"), Some(&expected), "the signature verifies");
    assert_eq!(posted.headers.get("x-nova-event-id").map(String::as_str), Some(message_id));
    assert_eq!(posted.headers.get("content-type").map(String::as_str), Some("application/json"));
    let record = posted.record();
    assert_eq!((record["type"].as_str(), record["user_id"].as_str()), (Some("agent.invoke"), Some("alice")));
    assert_eq!(record["data"]["invocation_id"], "inv-1");

    for (kind, data) in [
        ("agent.status", json!({"invocation_id": "inv-1", "state": "running"})),
        ("agent.output", json!({"invocation_id": "inv-1", "output": {"draft": "…"}, "sequence": 0})),
        ("agent.complete", json!({"invocation_id": "inv-1", "result": {"summary": "done"}})),
    ] {
        server.publish("agent:researcher", kind, data).await;
        assert_eq!(alice.recv_type(kind).await["data"]["invocation_id"], "inv-1");
    }
}

#[actix_rt::test]
async fn a_failing_webhook_gets_every_record_in_order_once_it_recovers() {
    let mut hook = Hook::start();
    hook.plan(&[500, 503, 500]);
    let server = server_with(None, "n1");
    let yaml = format!(
        "chat:\n  receives: [chat.message]\n  delivery: webhook\n  url: {}\n  health_url: {}\n",
        hook.url("/events"),
        hook.url("/health")
    );
    configure(&server, &yaml, &["chat"]).await;
    wait_available(&server, "chat", true).await;
    let mut alice = server.connect_as("alice").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        alice.request("chat.message", Some("conversation:c1"), json!({"content": format!("m{n}")})).await;
        ids.push(alice.recv_type("message.received").await["data"]["message_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        let posted = hook.next_post().await;
        let attempt = posted.headers.get("x-nova-attempt").cloned().unwrap_or_default();
        seen.push((posted.record()["id"].as_str().unwrap().to_owned(), attempt));
    }
    let expected: Vec<(String, String)> = [(0, "1"), (0, "2"), (0, "3"), (0, "4"), (1, "1"), (2, "1")]
        .iter()
        .map(|(i, a)| (ids[*i].clone(), a.to_string()))
        .collect();
    assert_eq!(seen, expected, "retried until delivered, the rest held back and then in order");
    // The hook has the last POST before the gateway has its answer: the
    // count is awaited, not read at once.
    let agent = wait_for_agent(&server, "chat", |a| a["delivered"] == 3).await;
    assert_eq!(agent["failed_attempts"], 3, "{agent}");
    // `/metrics` counts the same by agent.
    let (_, text) = server.scrape(Some(crate::common::ADMIN_TOKEN)).await;
    let by_agent = |name: &str| {
        crate::common::prometheus_sample(&text, &format!("nova_gateway_agent_{name}_total{{agent=\"chat\"}}"))
    };
    assert_eq!(
        [by_agent("records"), by_agent("delivered"), by_agent("failed_attempts"), by_agent("rejected")],
        [Some(3.0), Some(3.0), Some(3.0), Some(0.0)],
        "{text}"
    );
}

/// `GET /api/agents` until agent `name` satisfies `done`; returns it.
async fn wait_for_agent(server: &TestServer, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, body) = server.get("/api/agents").await;
        let agent = body["agents"].as_array().and_then(|a| a.iter().find(|a| a["name"] == name)).cloned();
        if let Some(agent) = agent.filter(&done) {
            return agent;
        }
        assert!(tokio::time::Instant::now() < until, "agent '{name}' never got there: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_full_webhook_queue_answers_4007_instead_of_a_receipt() {
    let hook = Hook::start();
    hook.set_open(false);
    let server = server_with(None, "n1");
    let yaml =
        format!("chat:\n  receives: [chat.message]\n  delivery: webhook\n  url: {}\n  queue: 2\n", hook.url("/e"));
    configure(&server, &yaml, &["chat"]).await;
    wait_available(&server, "chat", true).await;
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    for n in 0..2 {
        alice.request("chat.message", Some("conversation:c1"), json!({"content": format!("m{n}")})).await;
        collect(&mut alice, &["message.received", "chat.message"]).await;
    }
    let id = alice.request("chat.message", Some("conversation:c1"), json!({"content": "one too many"})).await;
    let error = alice.expect_error(4007).await;
    assert_eq!(error["reply_to"], id.as_str());
    assert!(error["data"]["message"].as_str().unwrap().contains("waiting"), "{error}");
    // Refused means not relayed either: the next frame is the heartbeat's.
    alice.assert_nothing_pending().await;
    hook.set_open(true);
}

#[actix_rt::test]
async fn requests_no_agent_can_take_are_refused_with_4007_and_a_toggle_takes_effect() {
    let redis = RedisServer::start();
    let server = server_with(Some(&redis), "n1");
    let mut alice = server.connect_as("alice").await;
    // No agents at all: a chat message is still relayed and receipted.
    alice.request("chat.message", Some("conversation:c1"), json!({"content": "hi"})).await;
    alice.recv_type("message.received").await;
    alice.request("agent.invoke", Some("agent:nobody"), json!({"input": "x"})).await;
    assert!(alice.expect_error(4007).await["data"]["message"].as_str().unwrap().contains("no agent 'nobody'"));
    alice.request("chat.regenerate", Some("conversation:c1"), json!({"message_id": "m1"})).await;
    assert!(alice.expect_error(4007).await["data"]["message"].as_str().unwrap().contains("no agent takes"));

    let yaml = "\
# agents
chat:
  receives: [chat.regenerate]
  delivery: stream
researcher:
  receives: [agent.invoke]
  delivery: stream
  enabled: false
";
    configure(&server, yaml, &["chat", "researcher"]).await;
    // A stream nobody reads: not available.
    alice.request("chat.regenerate", Some("conversation:c1"), json!({"message_id": "m1"})).await;
    let error = alice.expect_error(4007).await;
    assert!(error["data"]["message"].as_str().unwrap().contains("'chat' is not available"), "{error}");
    alice.request("agent.invoke", Some("agent:researcher"), json!({"input": "x"})).await;
    assert!(alice.expect_error(4007).await["data"]["message"].as_str().unwrap().contains("disabled"));

    // The toggle edits the file; the watcher reloads it.
    let (status, body) = server.send_raw("PUT", "/api/agents/researcher/toggle", "application/json", "").await;
    assert_eq!((status, &body["enabled"], &body["changed"]), (200, &json!(true), &json!(true)), "{body}");
    let text = std::fs::read_to_string(server.dirs.as_ref().unwrap().path().join("configs/agents.yaml")).unwrap();
    assert!(text.starts_with("# agents\n") && text.contains("  enabled: true"), "{text}");
    let mut researcher = StreamAgent::join(&redis, "researcher");
    wait_available(&server, "researcher", true).await;
    alice.request("agent.invoke", Some("agent:researcher"), json!({"input": "x"})).await;
    let receipt = alice.recv_type("message.received").await;
    assert_eq!(researcher.read(1)[0]["id"], receipt["data"]["message_id"]);
    let (status, _) = server.send_raw("PUT", "/api/agents/nobody/toggle", "application/json", "").await;
    assert_eq!(status, 404);
    // agent.invoke names its agent by its channel.
    alice.request("agent.invoke", Some("conversation:c1"), json!({"input": "x"})).await;
    alice.expect_error(4005).await;
}

#[actix_rt::test]
async fn an_invalid_agents_file_keeps_the_last_good_one_and_says_why() {
    let server = server_with(None, "n1");
    let mut page = server.subscriber("settings-page", &["system:settings"]).await;
    configure(&server, "a:\n  receives: [agent.invoke]\n  delivery: webhook\n  url: http://127.0.0.1:9/\n", &["a"])
        .await;
    let valid = settings_event(&mut page, "config_validated").await;
    assert_eq!((valid["data"]["file"].as_str(), valid["data"]["valid"].as_bool()), (Some("agents.yaml"), Some(true)));
    let dir = server.dirs.as_ref().unwrap().path().join("configs");
    std::fs::write(dir.join("agents.yaml"), "a:\n  receives: [chat.typing]\n  delivery: webhook\n").unwrap();
    let invalid = settings_event(&mut page, "config_validated").await;
    assert_eq!(invalid["data"]["valid"], false, "{invalid}");
    let errors = invalid["data"]["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["field"] == "receives" && e["line"] == 2), "{invalid}");
    let (_, body) = server.get("/api/agents").await;
    assert_eq!((body["valid"].as_bool(), body["agents"][0]["name"].as_str()), (Some(false), Some("a")), "{body}");
    assert!(body["agents"][0].get("secret").is_none());
}

#[actix_rt::test]
async fn a_resend_to_another_node_gets_the_first_receipt_and_the_agent_sees_the_record_once() {
    let redis = RedisServer::start();
    let (a, b) = (server_with(Some(&redis), "na"), server_with(Some(&redis), "nb"));
    let yaml = "chat:\n  receives: [chat.message]\n  delivery: stream\n";
    configure(&a, yaml, &["chat"]).await;
    configure(&b, yaml, &["chat"]).await;
    let mut agent = StreamAgent::join(&redis, "chat");
    wait_available(&a, "chat", true).await;
    wait_available(&b, "chat", true).await;

    let frame =
        json!({"id": "req-1", "type": "chat.message", "channel": "conversation:c1", "data": {"content": "once"}});
    let mut on_a = a.connect_as("alice").await;
    on_a.send(frame.clone()).await;
    let first = on_a.recv_type("message.received").await;
    // The tab reconnects to the other node and sends the request again.
    let mut on_b = b.connect_as("alice").await;
    on_b.send(frame).await;
    let again = on_b.recv_type("message.received").await;
    assert_eq!(again["data"]["message_id"], first["data"]["message_id"], "the first receipt again");
    // Another user's request with the same id is a request of its own.
    let mut carol = b.connect_as("carol").await;
    carol
        .send(json!({"id": "req-1", "type": "chat.message", "channel": "conversation:c1", "data": {"content": "mine"}}))
        .await;
    let hers = carol.recv_type("message.received").await;
    assert_ne!(hers["data"]["message_id"], first["data"]["message_id"]);
    // The same id with other content (a client whose counter started over)
    // is a new request, not a repeat.
    on_a.send(json!({"id": "req-1", "type": "chat.message", "channel": "conversation:c1", "data": {"content": "new"}}))
        .await;
    let new = on_a.recv_type("message.received").await;
    assert_ne!(new["data"]["message_id"], first["data"]["message_id"]);
    let records = agent.read(3);
    assert_eq!(records[0]["id"], first["data"]["message_id"]);
    assert_eq!(records[1]["id"], hers["data"]["message_id"], "the resend wrote nothing: {records:?}");
    assert_eq!(records[1]["node_id"], "nb");
    assert_eq!(records[2]["data"]["content"], "new");
}

#[actix_rt::test]
async fn a_client_on_one_node_reaches_the_agent_and_its_answer_comes_back_through_another() {
    let redis = RedisServer::start();
    let (a, b) = (server_with(Some(&redis), "na"), server_with(Some(&redis), "nb"));
    configure(&b, "chat:\n  receives: [chat.message]\n  delivery: stream\n", &["chat"]).await;
    let mut agent = StreamAgent::join(&redis, "chat");
    wait_available(&b, "chat", true).await;
    let mut alice = b.subscriber("alice", &["conversation:c9"]).await;
    alice.request("chat.message", Some("conversation:c9"), json!({"content": "hello"})).await;
    collect(&mut alice, &["message.received", "chat.message"]).await;
    let record = agent.read(1).remove(0);
    assert_eq!(record["node_id"], "nb");
    // The agent answers on node A: the reply crosses to the client on B.
    let data = json!({"stream_id": "s1", "chunk": "Hi", "index": 0});
    a.publish(record["channel"].as_str().unwrap(), "assistant.token", data).await;
    assert_eq!(alice.recv_type("assistant.token").await["data"]["chunk"], "Hi");
}

#[actix_rt::test]
async fn a_tool_call_response_goes_to_the_agent_that_made_the_call_even_across_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (server_with(Some(&redis), "na"), server_with(Some(&redis), "nb"));
    let (mut chat_hook, mut tools_hook) = (Hook::start(), Hook::start());
    let yaml = format!(
        "chat:\n  receives: [tool.call.response]\n  delivery: webhook\n  url: {}\n\
         tools:\n  receives: [tool.call.response]\n  delivery: webhook\n  url: {}\n",
        chat_hook.url("/chat"),
        tools_hook.url("/tools")
    );
    configure(&a, &yaml, &["chat", "tools"]).await;
    configure(&b, &yaml, &["chat", "tools"]).await;
    wait_available(&b, "tools", true).await;
    let mut alice = b.subscriber("alice", &["conversation:c1"]).await;
    // The tool runner announces the call on node A, naming itself.
    let start = json!({"call_id": "call-9", "tool": "confirm", "interactive": true, "agent": "tools"});
    a.publish("conversation:c1", "tool.call.start", start).await;
    alice.recv_type("tool.call.start").await;
    // Node A keeps the call in Redis beside sending the event: the client
    // could answer faster than that write lands.
    let keys =
        |r: &RedisServer| -> Vec<String> { redis::cmd("KEYS").arg("nova:call:*").query(&mut r.connection()).unwrap() };
    redis.wait_for("the call kept in Redis", keys, |k| k.len() == 1).await;
    alice
        .request("tool.call.response", Some("conversation:c1"), json!({"call_id": "call-9", "response": {"ok": true}}))
        .await;
    alice.recv_type("message.received").await;
    let posted = tools_hook.next_post().await;
    assert_eq!(posted.record()["data"]["call_id"], "call-9");
    // A call nobody announced goes to every agent taking the type: the chat
    // agent's first record is that one, so call-9 never went to it.
    alice.request("tool.call.response", Some("conversation:c1"), json!({"call_id": "call-x", "response": 1})).await;
    alice.recv_type("message.received").await;
    assert_eq!(chat_hook.next_post().await.record()["data"]["call_id"], "call-x");
    assert_eq!(tools_hook.next_post().await.record()["data"]["call_id"], "call-x");
}

#[actix_rt::test]
async fn during_a_redis_outage_requests_are_refused_rather_than_lost_and_resume_after() {
    let mut redis = RedisServer::start();
    let server = server_with(Some(&redis), "n1");
    configure(&server, "chat:\n  receives: [chat.message]\n  delivery: stream\n", &["chat"]).await;
    let mut agent = StreamAgent::join(&redis, "chat");
    wait_available(&server, "chat", true).await;
    let mut alice = server.connect_as("alice").await;
    alice.request("chat.message", Some("conversation:c1"), json!({"content": "before"})).await;
    alice.recv_type("message.received").await;
    assert_eq!(agent.read(1)[0]["data"]["content"], "before");

    redis.kill();
    wait_available(&server, "chat", false).await;
    alice.request("chat.message", Some("conversation:c1"), json!({"content": "during"})).await;
    let error = alice.expect_error(4007).await;
    assert!(error["data"]["message"].as_str().unwrap().contains("redis"), "{error}");

    // Redis comes back empty (it keeps nothing on disk): the agent makes
    // its group again, as a real one does when its reads fail.
    redis.restart();
    let mut agent = StreamAgent::join(&redis, "chat");
    wait_available(&server, "chat", true).await;
    alice.request("chat.message", Some("conversation:c1"), json!({"content": "after"})).await;
    alice.recv_type("message.received").await;
    assert_eq!(agent.read(1)[0]["data"]["content"], "after", "only what was receipted reached the agent");
}

#[actix_rt::test]
async fn a_request_waiting_for_its_tool_calls_agent_keeps_its_place_in_the_channel() {
    let redis = RedisServer::start();
    let (a, b) = (server_with(Some(&redis), "na"), server_with(Some(&redis), "nb"));
    let mut hook = Hook::start();
    let yaml = format!(
        "chat:\n  receives: [chat.message, tool.call.response]\n  delivery: webhook\n  url: {}\n",
        hook.url("/chat")
    );
    configure(&b, &yaml, &["chat"]).await;
    wait_available(&b, "chat", true).await;
    a.publish("conversation:c1", "tool.call.start", json!({"call_id": "call-1", "tool": "ask", "agent": "chat"})).await;
    let keys =
        |r: &RedisServer| -> Vec<String> { redis::cmd("KEYS").arg("nova:call:*").query(&mut r.connection()).unwrap() };
    redis.wait_for("the call kept in Redis", keys, |k| k.len() == 1).await;
    // Node B does not know the call: the response waits for Redis to name
    // its agent, and the message sent right after it waits behind it.
    let mut alice = b.connect_as("alice").await;
    // Redis is frozen until both requests are in: the lookup cannot answer
    // before the message arrives.
    let before = b.metrics().await["messages_in"].as_u64().unwrap();
    redis.signal("-STOP");
    alice.request("tool.call.response", Some("conversation:c1"), json!({"call_id": "call-1", "response": "yes"})).await;
    alice.request("chat.message", Some("conversation:c1"), json!({"content": "and then"})).await;
    b.wait_for_metrics("both requests read", |m| m["messages_in"].as_u64() >= Some(before + 2)).await;
    redis.signal("-CONT");
    alice.recv_type("message.received").await;
    alice.recv_type("message.received").await;
    let first = hook.next_post().await.record();
    let second = hook.next_post().await.record();
    assert_eq!((first["type"].as_str(), second["type"].as_str()), (Some("tool.call.response"), Some("chat.message")));
}

#[actix_rt::test]
async fn a_record_the_webhook_refuses_for_good_is_dropped_and_the_channel_goes_on() {
    let mut hook = Hook::start();
    hook.plan(&[422]);
    let server = server_with(None, "n1");
    let yaml = format!("chat:\n  receives: [chat.message]\n  delivery: webhook\n  url: {}\n", hook.url("/e"));
    configure(&server, &yaml, &["chat"]).await;
    wait_available(&server, "chat", true).await;
    let mut alice = server.connect_as("alice").await;
    for n in 0..2 {
        alice.request("chat.message", Some("conversation:c1"), json!({"content": format!("m{n}")})).await;
        alice.recv_type("message.received").await;
    }
    assert_eq!(hook.next_post().await.record()["data"]["content"], "m0");
    assert_eq!(hook.next_post().await.record()["data"]["content"], "m1", "m0 was not retried");
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, body) = server.get("/api/agents").await;
        if body["agents"][0]["delivered"] == 1 {
            assert_eq!(
                (body["agents"][0]["rejected"].as_u64(), body["agents"][0]["queued"].as_u64()),
                (Some(1), Some(0))
            );
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn the_agents_file_can_be_checked_before_it_is_saved() {
    let server = server_with(None, "n1");
    let check = |file: &str, yaml: &str| {
        let (path, yaml) = (format!("/api/config/validate?file={file}"), yaml.to_owned());
        let server = &server;
        async move { server.post_raw(&path, "text/plain", &yaml, Some(crate::common::ADMIN_TOKEN)).await }
    };
    let (status, body) = check("agents.yaml", "chat:\n  receives: [chat.message]\n  delivery: stream\n").await;
    assert_eq!((status, &body["valid"], &body["agents"][0]["name"]), (200, &json!(true), &json!("chat")), "{body}");
    let (status, body) = check("agents.yaml", "chat:\n  receives: [chat.typing]\n  delivery: stream\n").await;
    assert_eq!((status, &body["valid"]), (200, &json!(false)), "{body}");
    assert_eq!((&body["errors"][0]["field"], &body["errors"][0]["line"]), (&json!("receives"), &json!(2)), "{body}");
    let (status, body) = check("../etc/passwd", "x: 1\n").await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_file")), "{body}");
    let (_, listed) = server.get("/api/agents").await;
    assert_eq!(listed["agents"], json!([]), "nothing was saved");
}

#[actix_rt::test]
async fn a_tool_call_response_whose_agent_redis_cannot_name_is_refused_not_misrouted() {
    let redis = RedisServer::start();
    let server = server_with(Some(&redis), "n1");
    let mut hook = Hook::start();
    let yaml = format!("chat:\n  receives: [tool.call.response]\n  delivery: webhook\n  url: {}\n", hook.url("/chat"));
    configure(&server, &yaml, &["chat"]).await;
    wait_available(&server, "chat", true).await;
    // Redis answers the lookup of call-9 with an error (its key holds a
    // hash): whose call it is cannot be told.
    let digest: String = Sha256::digest(b"call-9")[..16].iter().map(|b| format!("{b:02x}")).collect();
    let _: i64 =
        redis::cmd("HSET").arg(format!("nova:call:{digest}")).arg("f").arg("v").query(&mut redis.connection()).unwrap();
    let mut alice = server.connect_as("alice").await;
    alice.request("tool.call.response", Some("conversation:c1"), json!({"call_id": "call-9", "response": 1})).await;
    let error = alice.expect_error(4007).await;
    assert!(error["data"]["message"].as_str().unwrap().contains("redis refused"), "{error}");
    // A call Redis does not know goes by type: the webhook's first record
    // is that one, so call-9 never reached it.
    alice.request("tool.call.response", Some("conversation:c1"), json!({"call_id": "call-x", "response": 2})).await;
    alice.recv_type("message.received").await;
    assert_eq!(hook.next_post().await.record()["data"]["call_id"], "call-x");
}
