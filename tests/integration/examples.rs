//! The Python examples in `examples/` run against the real server: the
//! stream agent (`python_agent.py`) on a Redis of the test's own, the
//! webhook agent (`webhook_agent.py`) on a free port, and the chat client
//! (`chat_client.py`). Each is a real `python3` process, stopped when its
//! test ends; its output is printed when a test fails.
//!
//! They need Python 3 with `redis` and `websockets`
//! (`pip install -r examples/requirements.txt`); without them the tests fail
//! saying so, they are not skipped.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{Client, RedisServer, TestServer, ADMIN_TOKEN, CLUSTER_SECRET};

/// How long an example may take to start and be seen by the server (Python
/// starts slowly on a busy machine).
const STARTUP: Duration = Duration::from_secs(30);

/// The secret of the webhook agent in these tests.
const SECRET: &str = "examples-webhook-secret";

/// `examples/` in the repository.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The Python interpreter that can import `modules`: its real path
/// (`sys.executable`), so the processes the tests stop are Python itself and
/// not a wrapper such as a pyenv shim. Fails, with what to install, when
/// there is none.
fn python(modules: &[&str]) -> PathBuf {
    let script =
        modules.iter().map(|m| format!("import {m}\n")).collect::<String>() + "import sys\nprint(sys.executable)";
    let output = Command::new("python3").arg("-c").arg(&script).output().unwrap_or_else(|e| {
        panic!("the examples need python3 ({e}): install Python 3, then `pip install -r examples/requirements.txt`")
    });
    assert!(
        output.status.success(),
        "the Python examples need the modules {modules:?}: run `pip install -r examples/requirements.txt`\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("an ephemeral port").port()
}

/// A running example, its stdout and stderr in a file; stopped (SIGTERM,
/// then SIGKILL) on drop, its output printed if the test is failing.
struct Example {
    name: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Example {
    fn spawn(python: &Path, script: &str, args: &[String]) -> Example {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("output.log");
        let out = File::create(&log).expect("the example's log file");
        let err = out.try_clone().expect("the log file, again");
        let child = Command::new(python)
            .arg(examples().join(script))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        Example { name: script.to_owned(), child, log, _dir: dir }
    }

    /// Everything it printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it has printed `needle` `times` times (it prints once
    /// it has answered, so a client may see the answer first); its output.
    async fn wait_for_output(&self, needle: &str, times: usize) -> String {
        let until = Instant::now() + STARTUP;
        loop {
            let output = self.output();
            if output.matches(needle).count() >= times {
                return output;
            }
            assert!(Instant::now() < until, "{} did not print '{needle}' {times} times:\n{output}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fails the test if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.output());
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`).
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
    }

    /// Waits up to `within` for it to exit.
    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// SIGTERM and its exit status (it must exit within 10 s).
    fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        match self.wait(Duration::from_secs(10)) {
            Some(status) => status,
            None => panic!("{} did not stop within 10 s of SIGTERM:\n{}", self.name, self.output()),
        }
    }

    /// SIGKILL, as a crash.
    fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-TERM");
            if self.wait(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}---- end of {} ----", self.name, self.output(), self.name);
        }
    }
}

/// Settings directories holding `agents_yaml` as `configs/agents.yaml`.
fn settings_dirs(agents_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::create_dir_all(dir.path().join("prompts")).unwrap();
    std::fs::write(dir.path().join("configs/agents.yaml"), agents_yaml).unwrap();
    dir
}

/// A server reading its settings from `dirs`, checking agents every 100 ms;
/// with Redis when `redis` is given, else taking a webhook agent as gone
/// 2 s after its last good health check (not the default 30 s).
fn server_with(dirs: &tempfile::TempDir, redis: Option<&RedisServer>) -> TestServer {
    let (configs, prompts) = (dirs.path().join("configs"), dirs.path().join("prompts"));
    let redis_url = redis.map(RedisServer::url);
    TestServer::with(|a| {
        a.config_dir = Some(configs);
        a.prompts_dir = Some(prompts);
        a.agent_check_interval_ms = Some(100);
        if redis_url.is_none() {
            a.agent_idle_ms = Some(2000);
        }
        if let Some(url) = redis_url {
            a.redis_url = Some(url);
            a.node_id = Some("examples-1".into());
            a.cluster_secret = Some(CLUSTER_SECRET.into());
        }
    })
}

/// `GET /api/agents` until agent `name` is `available` (or not); fails if
/// `example` exits meanwhile.
async fn wait_for_agent(server: &TestServer, name: &str, available: bool, example: &mut Example) -> Value {
    let until = Instant::now() + STARTUP;
    loop {
        let (status, body) = server.get("/api/agents").await;
        assert_eq!(status, 200, "GET /api/agents answered {body}");
        let agent = body["agents"].as_array().and_then(|a| a.iter().find(|a| a["name"] == name)).cloned();
        if let Some(agent) = agent.filter(|a| a["available"] == available) {
            return agent;
        }
        if available {
            example.assert_running();
        }
        assert!(
            Instant::now() < until,
            "agent '{name}' was not {} within {STARTUP:?}: {body}\n{} said:\n{}",
            if available { "available" } else { "unavailable" },
            example.name,
            example.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Frames until `done` holds for those read; an `error` frame fails.
async fn frames_until(client: &mut Client, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    while !done(&frames) {
        let frame = client.recv().await;
        assert_ne!(frame["type"], "error", "after {frames:?}");
        frames.push(frame);
    }
    frames
}

/// The frames of type `kind`, in arrival order.
fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

/// Where the first frame of type `kind` is.
fn position(frames: &[Value], kind: &str) -> usize {
    frames.iter().position(|f| f["type"] == kind).unwrap_or_else(|| panic!("no '{kind}' in {frames:?}"))
}

/// The answer an example agent streams to a message `content`, as checked
/// by [`chat_round_trip`]: the text, its stream id and how many tokens.
struct Answer {
    message_id: String,
    stream_id: String,
    content: String,
    tokens: usize,
}

/// Sends a `chat.message` from `client` (`user`, subscribed to `channel`)
/// and checks all that comes back: the receipt, the message relayed with
/// the same id, and the agent's answer to it streamed word by word. Frames
/// may interleave, so they are collected first and checked by type.
async fn chat_round_trip(client: &mut Client, user: &str, channel: &str, content: &str) -> Answer {
    let id = client.request("chat.message", Some(channel), json!({ "content": content })).await;
    let frames = frames_until(client, |f| {
        !of_type(f, "message.received").is_empty()
            && !of_type(f, "chat.message").is_empty()
            && !of_type(f, "assistant.complete").is_empty()
    })
    .await;

    let receipt = of_type(&frames, "message.received")[0];
    assert_eq!(receipt["reply_to"], id.as_str(), "{receipt}");
    let message_id = receipt["data"]["message_id"].as_str().expect("the receipt's message_id").to_owned();
    let relayed = of_type(&frames, "chat.message")[0];
    assert_eq!(relayed["id"], message_id.as_str(), "{relayed}");
    assert_eq!(relayed["channel"], channel);
    assert_eq!(relayed["data"]["message_id"], message_id.as_str());
    assert_eq!(relayed["data"]["content"], content);
    assert_eq!(relayed["data"]["sender_id"], user);

    let starts = of_type(&frames, "assistant.start");
    assert_eq!(starts.len(), 1, "one answer: {frames:?}");
    let start = starts[0];
    assert_eq!(start["channel"], channel);
    assert_eq!(start["data"]["in_reply_to"], message_id.as_str(), "{start}");
    let stream_id = start["data"]["stream_id"].as_str().expect("a stream_id").to_owned();

    let tokens = of_type(&frames, "assistant.token");
    assert!(tokens.len() >= 2, "the answer comes in several tokens: {frames:?}");
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(token["channel"], channel);
        assert_eq!(token["data"]["stream_id"], stream_id.as_str(), "{token}");
        assert_eq!(token["data"]["index"], i, "tokens in order, none missing: {frames:?}");
    }
    let text: String = tokens.iter().map(|t| t["data"]["chunk"].as_str().expect("a chunk")).collect();

    let complete = of_type(&frames, "assistant.complete")[0];
    assert_eq!(complete["channel"], channel);
    assert_eq!(complete["data"]["stream_id"], stream_id.as_str());
    assert_eq!(complete["data"]["finish_reason"], "stop");
    assert_eq!(complete["data"]["content"], text.as_str(), "the tokens add up to the answer");
    assert!(text.contains(&format!("You said: \"{content}\"")), "the agent answered this message: {text}");

    let (start_at, complete_at) = (position(&frames, "assistant.start"), position(&frames, "assistant.complete"));
    let token_at: Vec<usize> =
        frames.iter().enumerate().filter(|(_, f)| f["type"] == "assistant.token").map(|(i, _)| i).collect();
    assert!(
        start_at < token_at[0] && token_at[token_at.len() - 1] < complete_at,
        "start, tokens, complete: {frames:?}"
    );
    Answer { message_id, stream_id, content: text, tokens: tokens.len() }
}

/// Sends an `agent.invoke` to `agent:{agent}` (the client is subscribed
/// there) and checks the run: receipt, `agent.status` (running),
/// `agent.output`, `agent.complete`, all with the invocation id, which is
/// `invocation_id` when given and else the record's id (the receipt's).
async fn invoke_round_trip(client: &mut Client, agent: &str, invocation_id: Option<&str>) {
    let channel = format!("agent:{agent}");
    let input = json!({"task": "add", "numbers": [1, 2]});
    let mut data = json!({ "input": input });
    if let Some(invocation) = invocation_id {
        data["invocation_id"] = json!(invocation);
    }
    let id = client.request("agent.invoke", Some(&channel), data).await;
    let frames = frames_until(client, |f| {
        !of_type(f, "message.received").is_empty() && !of_type(f, "agent.complete").is_empty()
    })
    .await;
    let receipt = of_type(&frames, "message.received")[0];
    assert_eq!(receipt["reply_to"], id.as_str(), "{receipt}");
    let record_id = receipt["data"]["message_id"].as_str().expect("the receipt's message_id");
    let invocation = invocation_id.unwrap_or(record_id);

    for kind in ["agent.status", "agent.output", "agent.complete"] {
        let events = of_type(&frames, kind);
        assert_eq!(events.len(), 1, "one '{kind}': {frames:?}");
        assert_eq!(events[0]["channel"], channel.as_str());
        assert_eq!(events[0]["data"]["invocation_id"], invocation, "{}", events[0]);
    }
    assert_eq!(of_type(&frames, "agent.status")[0]["data"]["state"], "running");
    assert_eq!(of_type(&frames, "agent.output")[0]["data"]["output"]["echo"], input);
    let complete = of_type(&frames, "agent.complete")[0];
    assert_eq!(complete["data"]["result"]["input"], input);
    assert!(complete["data"]["duration_ms"].is_u64(), "{complete}");
    let (status, output, done) =
        (position(&frames, "agent.status"), position(&frames, "agent.output"), position(&frames, "agent.complete"));
    assert!(status < output && output < done, "status, output, complete: {frames:?}");
}

const STREAM_AGENTS: &str = "chat:
  description: the stream example (examples/python_agent.py)
  receives: [chat.message, agent.invoke]
  delivery: stream
";

/// A server on a Redis of its own with the stream agent `chat`, and
/// `python_agent.py` reading for it as `consumer`.
struct StreamSetup {
    server: TestServer,
    redis: RedisServer,
    python: PathBuf,
    _dirs: tempfile::TempDir,
}

impl StreamSetup {
    fn start() -> StreamSetup {
        let python = python(&["redis"]);
        let redis = RedisServer::start();
        let dirs = settings_dirs(STREAM_AGENTS);
        let server = server_with(&dirs, Some(&redis));
        StreamSetup { server, redis, python, _dirs: dirs }
    }

    fn agent(&self, consumer: &str, token_delay_ms: u64) -> Example {
        let args = [
            "--redis-url".into(),
            self.redis.url(),
            "--server".into(),
            format!("http://{}", self.server.addr),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
            "--token-delay-ms".into(),
            token_delay_ms.to_string(),
            "--consumer".into(),
            consumer.into(),
        ];
        Example::spawn(&self.python, "python_agent.py", &args)
    }

    /// `XPENDING nova:inbound:chat chat-workers`: records read and not
    /// acknowledged.
    fn pending(redis: &RedisServer) -> u64 {
        let (count, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("nova:inbound:chat")
            .arg("chat-workers")
            .query(&mut redis.connection())
            .expect("XPENDING");
        count
    }

    /// `XINFO CONSUMERS nova:inbound:chat chat-workers`: the consumers' names.
    fn consumers(&self) -> Vec<String> {
        let infos: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg("nova:inbound:chat")
            .arg("chat-workers")
            .query(&mut self.redis.connection())
            .expect("XINFO CONSUMERS");
        infos
            .iter()
            .filter_map(|c| c.get("name").and_then(|n| redis::from_redis_value::<String>(n.clone()).ok()))
            .collect()
    }
}

#[actix_rt::test]
async fn the_stream_agent_streams_answers_and_runs_invocations() {
    let setup = StreamSetup::start();
    let mut agent = setup.agent("examples-test", 5);
    let seen = wait_for_agent(&setup.server, "chat", true, &mut agent).await;
    assert_eq!(seen["delivery"], "stream");

    let mut alice = setup.server.subscriber("alice", &["conversation:demo", "agent:chat"]).await;
    let first = chat_round_trip(&mut alice, "alice", "conversation:demo", "hello").await;
    let second = chat_round_trip(&mut alice, "alice", "conversation:demo", "and again").await;
    assert_ne!(first.stream_id, second.stream_id);
    assert_ne!(first.message_id, second.message_id);
    assert!(first.tokens >= 2 && !first.content.is_empty());
    invoke_round_trip(&mut alice, "chat", Some("inv-1")).await;
    invoke_round_trip(&mut alice, "chat", None).await;
    alice.assert_nothing_pending().await;

    // One line per record handled, each record acknowledged.
    let output = agent.wait_for_output("ran agent.invoke", 2).await;
    assert_eq!(output.matches("answered chat.message").count(), 2, "{output}");
    assert!(output.contains("as invocation inv-1"), "{output}");
    setup.redis.wait_for("no record left unacknowledged", StreamSetup::pending, |n| *n == 0).await;

    // SIGTERM: a clean stop, and the consumer, holding nothing, leaves the
    // group.
    assert_eq!(setup.consumers(), ["examples-test"]);
    let status = agent.terminate();
    assert!(status.success(), "exit status {status}:\n{}", agent.output());
    assert!(agent.output().trim_end().ends_with("stopped"), "{}", agent.output());
    assert!(setup.consumers().is_empty(), "the consumer left its group: {:?}", setup.consumers());
    // With no consumer, requests for the agent are refused, not queued.
    wait_for_agent(&setup.server, "chat", false, &mut agent).await;
    alice.request("agent.invoke", Some("agent:chat"), json!({"input": "anyone?"})).await;
    alice.expect_error(4007).await;
}

#[actix_rt::test]
async fn a_stream_agent_killed_mid_answer_answers_again_after_restart() {
    let setup = StreamSetup::start();
    // Slow tokens, so the agent is killed in the middle of its answer.
    let mut agent = setup.agent("examples-restart", 300);
    wait_for_agent(&setup.server, "chat", true, &mut agent).await;
    let mut alice = setup.server.subscriber("alice", &["conversation:demo"]).await;
    let id = alice.request("chat.message", Some("conversation:demo"), json!({"content": "resume"})).await;
    let frames = frames_until(&mut alice, |f| {
        !of_type(f, "message.received").is_empty() && !of_type(f, "assistant.token").is_empty()
    })
    .await;
    agent.crash();
    let receipt = of_type(&frames, "message.received")[0];
    assert_eq!(receipt["reply_to"], id.as_str());
    let message_id = receipt["data"]["message_id"].as_str().unwrap().to_owned();
    let abandoned = of_type(&frames, "assistant.start")[0]["data"]["stream_id"].clone();

    // The same consumer again: it reads its unacknowledged record first and
    // answers it in full, under a new stream id.
    let mut again = setup.agent("examples-restart", 5);
    let frames = frames_until(&mut alice, |f| {
        f.iter().any(|f| f["type"] == "assistant.complete" && f["data"]["stream_id"] != abandoned)
    })
    .await;
    let start = frames
        .iter()
        .find(|f| f["type"] == "assistant.start")
        .unwrap_or_else(|| panic!("a new answer: {frames:?}\n{}", again.output()));
    assert_eq!(start["data"]["in_reply_to"], message_id.as_str());
    assert_ne!(start["data"]["stream_id"], abandoned);
    let stream_id = start["data"]["stream_id"].clone();
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "assistant.token" && f["data"]["stream_id"] == stream_id)
        .map(|f| f["data"]["chunk"].as_str().unwrap())
        .collect();
    let complete = frames.iter().find(|f| f["type"] == "assistant.complete").unwrap();
    assert_eq!(complete["data"]["content"], text.as_str());
    assert!(text.contains("You said: \"resume\""), "{text}");
    again.wait_for_output(&format!("answered chat.message {message_id}"), 1).await;
    again.assert_running();
}

/// A server without Redis whose agent `researcher` is `webhook_agent.py`
/// on a free port, the agent started with `agent_secret`.
struct WebhookSetup {
    server: TestServer,
    agent: Example,
    _dirs: tempfile::TempDir,
}

impl WebhookSetup {
    async fn start(agent_secret: &str) -> WebhookSetup {
        let python = python(&[]);
        let port = free_port();
        let yaml = format!(
            "researcher:
  description: the webhook example (examples/webhook_agent.py)
  receives: [chat.message, agent.invoke]
  delivery: webhook
  url: http://127.0.0.1:{port}/nova/events
  secret: {SECRET}
  health_url: http://127.0.0.1:{port}/health
"
        );
        let dirs = settings_dirs(&yaml);
        let server = server_with(&dirs, None);
        let args = [
            "--port".into(),
            port.to_string(),
            "--secret".into(),
            agent_secret.into(),
            "--agent".into(),
            "researcher".into(),
            "--server".into(),
            format!("http://{}", server.addr),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
            "--token-delay-ms".into(),
            "5".into(),
        ];
        let mut agent = Example::spawn(&python, "webhook_agent.py", &args);
        let seen = wait_for_agent(&server, "researcher", true, &mut agent).await;
        assert_eq!(seen["delivery"], "webhook");
        WebhookSetup { server, agent, _dirs: dirs }
    }
}

#[actix_rt::test]
async fn the_webhook_agent_streams_answers_and_runs_invocations() {
    let mut setup = WebhookSetup::start(SECRET).await;
    let mut bob = setup.server.subscriber("bob", &["conversation:demo", "agent:researcher"]).await;
    let first = chat_round_trip(&mut bob, "bob", "conversation:demo", "hello webhook").await;
    assert!(first.content.contains("researcher example agent"), "{}", first.content);
    chat_round_trip(&mut bob, "bob", "conversation:demo", "second").await;
    invoke_round_trip(&mut bob, "researcher", Some("inv-w")).await;
    invoke_round_trip(&mut bob, "researcher", None).await;
    bob.assert_nothing_pending().await;

    let output = setup.agent.wait_for_output("ran agent.invoke", 2).await;
    assert_eq!(output.matches("answered chat.message").count(), 2, "{output}");
    let (_, body) = setup.server.get("/api/agents").await;
    let researcher = &body["agents"][0];
    assert_eq!(researcher["delivered"], 4, "{body}");
    assert_eq!(researcher["failed_attempts"], 0, "{body}");

    let status = setup.agent.terminate();
    assert!(status.success(), "exit status {status}:\n{}", setup.agent.output());
    assert!(setup.agent.output().trim_end().ends_with("stopped"), "{}", setup.agent.output());
}

#[actix_rt::test]
async fn the_webhook_agent_refuses_records_signed_with_another_secret() {
    let setup = WebhookSetup::start("not-the-secret-in-agents-yaml").await;
    let mut carol = setup.server.subscriber("carol", &["conversation:demo"]).await;
    let id = carol.request("chat.message", Some("conversation:demo"), json!({"content": "forged?"})).await;
    // Accepted by the server (the agent's health check is fine)...
    let frames = frames_until(&mut carol, |f| {
        !of_type(f, "message.received").is_empty() && !of_type(f, "chat.message").is_empty()
    })
    .await;
    assert_eq!(of_type(&frames, "message.received")[0]["reply_to"], id.as_str());
    // ...and refused by the agent (401), so retried and never answered.
    let until = Instant::now() + STARTUP;
    loop {
        let (_, body) = setup.server.get("/api/agents").await;
        if body["agents"][0]["failed_attempts"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(body["agents"][0]["delivered"], 0, "{body}");
            assert_eq!(body["agents"][0]["queued"], 1, "{body}");
            break;
        }
        assert!(Instant::now() < until, "no failed delivery: {body}\n{}", setup.agent.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = setup.agent.output();
    assert!(output.contains("bad signature"), "{output}");
    assert!(!output.contains("answered chat.message"), "{output}");
    carol.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn the_chat_client_prints_the_answer_as_it_streams() {
    // The client's own dependency is checked first, for a clear message.
    let python = python(&["websockets"]);
    let setup = WebhookSetup::start(SECRET).await;
    let (interpreter, url) = (python.clone(), setup.server.ws_url("/ws"));
    let run = move || {
        Command::new(&interpreter)
            .arg(examples().join("chat_client.py"))
            .args(["--url", &url, "--user", "dave", "--channel", "conversation:demo"])
            .args(["--message", "hello from the client", "--timeout", "30"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run chat_client.py")
    };
    let output = tokio::time::timeout(Duration::from_secs(60), actix_rt::task::spawn_blocking(run))
        .await
        .expect("chat_client.py finished within 60 s")
        .expect("the client's thread");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "chat_client.py failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("receipt: message "), "{stdout}");
    let answer = "You said: \"hello from the client\". This is the researcher example agent answering word by word.";
    assert!(stdout.contains(&format!("assistant: {answer}\n")), "the tokens, printed in order: {stdout}");
    let tokens = answer.split_whitespace().count();
    assert!(stdout.contains(&format!("complete: {tokens} tokens, finish_reason stop")), "{stdout}");
    setup.agent.wait_for_output("answered chat.message", 1).await;

    // With the agent gone, the client says so and fails.
    drop(setup.agent);
    let until = Instant::now() + STARTUP;
    loop {
        let (_, body) = setup.server.get("/api/agents").await;
        if body["agents"][0]["available"] == false {
            break;
        }
        assert!(Instant::now() < until, "the agent stayed available: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = Command::new(&python)
        .arg(examples().join("chat_client.py"))
        .args(["--url", &setup.server.ws_url("/ws"), "--message", "anyone?", "--timeout", "10"])
        .output()
        .expect("run chat_client.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("4007"), "{stderr}");
}
