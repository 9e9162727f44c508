//! Live settings: real files in temporary directories, edited the ways
//! editors and people edit them, and real clients subscribed to
//! `system:settings`. Bursts, renames, delete-and-recreate, invalid YAML
//! and its recovery, toggles and restores through the REST API, backups and
//! path tricks, the prompt, health checks against a real HTTP server going
//! down and up, and the restart endpoint.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::common::{jwt, Client, TestServer};

const YAML: &str = "# MCP servers the agents may use
gmail:
  url: http://localhost:8002/mcp
  health_url: http://localhost:8002/health
  description: Gmail MCP Server for email operations
  enabled: true

# tools for code
github:
  url: \"https://mcp.example.com/github\"   # quoted
  health_url: https://mcp.example.com/github/health
  description: GitHub tools
  enabled: false
";

/// A server whose settings directories hold `yaml` and `prompt`.
struct Settings {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Settings {
    fn start(yaml: &str, prompt: &str, tweak: impl FnOnce(&mut nova_realtime::config::Args)) -> Settings {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("configs")).unwrap();
        std::fs::create_dir_all(dir.path().join("prompts")).unwrap();
        std::fs::write(dir.path().join("configs/mcp_servers.yaml"), yaml).unwrap();
        std::fs::write(dir.path().join("prompts/NOVA_SYSTEM_PROMPT.md"), prompt).unwrap();
        let (configs, prompts) = (dir.path().join("configs"), dir.path().join("prompts"));
        let server = TestServer::with(|a| {
            a.config_dir = Some(configs);
            a.prompts_dir = Some(prompts);
            // Health targets in these files are not running: poll rarely.
            a.mcp_health_interval_ms = Some(60_000);
            tweak(a);
        });
        Settings { server, dir }
    }

    fn yaml_path(&self) -> PathBuf {
        self.dir.path().join("configs/mcp_servers.yaml")
    }

    fn prompt_path(&self) -> PathBuf {
        self.dir.path().join("prompts/NOVA_SYSTEM_PROMPT.md")
    }

    /// A client following the settings channel.
    async fn client(&self) -> Client {
        self.server.subscriber("settings-page", &["system:settings"]).await
    }
}

/// The next settings event, which must be of type `kind`; checks the
/// envelope the settings page expects. The health targets in these files
/// are not running, so a `system_health` for them may come at any time and
/// is skipped unless asked for.
async fn event(client: &mut Client, kind: &str) -> Value {
    let mut frame = client.recv().await;
    while frame["type"] == "system_health" && kind != "system_health" {
        frame = client.recv().await;
    }
    assert_eq!(frame["type"], kind, "unexpected frame: {frame}");
    assert_eq!(frame["channel"], "system:settings", "{frame}");
    assert_eq!(frame["source"], "nova-realtime", "{frame}");
    assert!(frame["id"].as_str().is_some_and(|id| !id.is_empty()) && frame["timestamp"].is_string(), "{frame}");
    frame["data"].clone()
}

fn replace_atomically(path: &Path, text: &str) {
    let temp = path.with_file_name(".edit.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[actix_rt::test]
async fn a_burst_of_writes_in_place_is_one_reload_and_one_event() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let mut client = s.client().await;
    // 20 writes in quick succession, the way a sync tool or a slow editor
    // produces them; the last one disables gmail.
    for n in 0..20 {
        let text = YAML.replace("description: Gmail MCP Server", &format!("description: draft {n} of Gmail"));
        std::fs::write(s.yaml_path(), text).unwrap();
    }
    let last = YAML.replace("  enabled: true", "  enabled: false");
    std::fs::write(s.yaml_path(), &last).unwrap();

    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], true, "{data}");
    assert_eq!(data["changes"], json!([{"server": "gmail", "change": "modified", "fields": ["enabled"]}]), "{data}");
    let toggled = event(&mut client, "mcp_toggled").await;
    assert_eq!(toggled, json!({"name": "gmail", "enabled": false}));

    // The next change is the next event: the burst made no other.
    replace_atomically(&s.yaml_path(), YAML);
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["changes"][0]["server"], "gmail", "{data}");
    assert_eq!(event(&mut client, "mcp_toggled").await, json!({"name": "gmail", "enabled": true}));
}

#[actix_rt::test]
async fn renames_and_delete_then_recreate_are_seen() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let mut client = s.client().await;

    let renamed = YAML.replace("GitHub tools", "GitHub tools, renamed save");
    replace_atomically(&s.yaml_path(), &renamed);
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["changes"], json!([{"server": "github", "change": "modified", "fields": ["description"]}]));

    std::fs::remove_file(s.yaml_path()).unwrap();
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], false, "a deleted file is reported: {data}");
    let (_, listed) = s.server.get("/api/mcp").await;
    assert_eq!(listed["servers"].as_array().unwrap().len(), 2, "the last good config stays: {listed}");

    let added =
        format!("{renamed}slack:\n  url: http://localhost:8010/mcp\n  health_url: http://localhost:8010/health\n");
    std::fs::write(s.yaml_path(), added).unwrap();
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], true, "{data}");
    assert_eq!(data["changes"], json!([{"server": "slack", "change": "added", "fields": []}]), "{data}");
}

#[actix_rt::test]
async fn an_invalid_file_keeps_the_last_good_config_until_it_is_fixed() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let mut client = s.client().await;

    std::fs::write(s.yaml_path(), YAML.replace("url: http://localhost:8002/mcp", "url: not a url")).unwrap();
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], false, "{data}");
    let error = &data["errors"][0];
    assert_eq!(
        (&error["server"], &error["field"], &error["line"]),
        (&json!("gmail"), &json!("url"), &json!(3)),
        "{data}"
    );
    let (_, listed) = s.server.get("/api/mcp").await;
    assert_eq!(listed["valid"], false);
    assert_eq!(listed["servers"][0]["url"], "http://localhost:8002/mcp", "still the last good: {listed}");

    std::fs::write(s.yaml_path(), "gmail:\n  url: [unclosed\n").unwrap();
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], false);
    assert!(data["errors"][0]["line"].is_u64(), "a syntax error names its line: {data}");

    std::fs::write(s.yaml_path(), YAML.replace("GitHub tools", "GitHub tools v2")).unwrap();
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], true, "{data}");
    let (_, listed) = s.server.get("/api/mcp").await;
    assert_eq!(
        (listed["valid"].clone(), listed["servers"][1]["description"].clone()),
        (json!(true), json!("GitHub tools v2"))
    );
    // Two changes refused, one taken: what `/metrics` counts.
    let (_, text) = s.server.scrape(Some(crate::common::ADMIN_TOKEN)).await;
    let reloads = |result: &str| {
        let name = format!("nova_settings_reloads_total{{file=\"mcp_servers.yaml\",result=\"{result}\"}}");
        crate::common::prometheus_sample(&text, &name)
    };
    assert_eq!((reloads("invalid"), reloads("applied")), (Some(2.0), Some(1.0)), "{text}");
}

#[actix_rt::test]
async fn a_toggle_with_a_null_body_flips_like_one_without_a_body() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let (status, body) = s.server.send_raw("PUT", "/api/mcp/gmail/toggle", "application/json", "null").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"name": "gmail", "enabled": false, "changed": true}));
}

#[actix_rt::test]
async fn a_toggle_through_the_api_edits_one_line_backs_up_and_is_announced() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let mut client = s.client().await;

    let (status, body) = s.server.send_raw("PUT", "/api/mcp/gmail/toggle", "application/json", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"name": "gmail", "enabled": false, "changed": true}));
    assert_eq!(event(&mut client, "config_validated").await["valid"], true);
    assert_eq!(event(&mut client, "mcp_toggled").await, json!({"name": "gmail", "enabled": false}));
    let text = std::fs::read_to_string(s.yaml_path()).unwrap();
    assert_eq!(text, YAML.replacen("  enabled: true", "  enabled: false", 1), "only that line changed");

    // An explicit value, the same as now: nothing to write.
    let (status, body) =
        s.server.send_raw("PUT", "/api/mcp/github/toggle", "application/json", r#"{"enabled": false}"#).await;
    assert_eq!((status, body["changed"].clone()), (200, json!(false)), "{body}");
    let (status, body) = s.server.send_raw("PUT", "/api/mcp/nope/toggle", "application/json", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        s.server.send_raw("PUT", "/api/mcp/gmail/toggle", "application/json", r#"{"enabled":"x"}"#).await;
    assert_eq!(status, 400, "{body}");

    let (_, backups) = s.server.get("/api/config/backups").await;
    let backups = backups["backups"].as_array().unwrap().clone();
    assert_eq!(backups.len(), 1, "one write, one backup: {backups:?}");
    assert_eq!(backups[0]["file"], "mcp_servers.yaml");
    let backup_path = s.dir.path().join("configs/backups").join(backups[0]["id"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(backup_path).unwrap(), YAML, "the backup is the file before the toggle");

    let id = backups[0]["id"].as_str().unwrap();
    let (status, body) = s.server.post(&format!("/api/config/restore/{id}"), json!(null)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(s.yaml_path()).unwrap(), YAML);
    assert_eq!(event(&mut client, "config_validated").await["valid"], true);
    assert_eq!(event(&mut client, "mcp_toggled").await, json!({"name": "gmail", "enabled": true}));
}

#[actix_rt::test]
async fn concurrent_toggles_both_land() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let (a, b) = tokio::join!(
        s.server.send_raw("PUT", "/api/mcp/gmail/toggle", "application/json", ""),
        s.server.send_raw("PUT", "/api/mcp/github/toggle", "application/json", ""),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let text = std::fs::read_to_string(s.yaml_path()).unwrap();
    let swapped = YAML
        .replace("  enabled: true", "  enabled: X")
        .replace("  enabled: false", "  enabled: true")
        .replace("  enabled: X", "  enabled: false");
    assert_eq!(text, swapped, "neither write was lost");
}

#[actix_rt::test]
async fn restore_refuses_path_tricks_and_changes_nothing() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    std::fs::write(s.dir.path().join("configs/secret-mcp_servers.yaml"), "stolen: {}").unwrap();
    for id in ["..%2Fsecret-mcp_servers.yaml", "%2E%2E", "..", "x-mcp_servers.yaml", "%2Fetc%2Fpasswd", "a%00b"] {
        let (status, body) = s.server.post(&format!("/api/config/restore/{id}"), json!(null)).await;
        assert!((400..500).contains(&status), "{id}: {status} {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    assert_eq!(std::fs::read_to_string(s.yaml_path()).unwrap(), YAML);
}

#[actix_rt::test]
async fn validation_without_saving_names_server_field_and_line() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let (status, body) = s.server.send_raw("POST", "/api/config/validate", "text/yaml", YAML).await;
    assert_eq!((status, body["valid"].clone()), (200, json!(true)), "{body}");
    let bad = "a:\n  url: http://x/mcp\n  health_url: http://x/health\n  colour: red\n";
    let (_, body) = s.server.send_raw("POST", "/api/config/validate", "text/yaml", bad).await;
    assert_eq!(body["valid"], false);
    assert_eq!(body["errors"][0]["server"], "a");
    assert_eq!(body["errors"][0]["field"], "colour");
    assert_eq!(body["errors"][0]["line"], 4);
    assert_eq!(std::fs::read_to_string(s.yaml_path()).unwrap(), YAML, "nothing saved");
}

/// A server whose `url` is a flow list nested `depth` levels deep: at
/// 60,000 levels (120 KB) serde_yaml alone spends seconds of CPU on it.
fn deeply_nested(depth: usize) -> String {
    format!("gmail:\n  url: {}x{}\n", "[".repeat(depth), "]".repeat(depth))
}

fn assert_too_deep(body: &Value) {
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["line"], 2, "{body}");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nested more than 64 levels"), "{body}");
}

#[actix_rt::test]
async fn pathological_yaml_is_refused_at_once_and_stalls_no_worker() {
    let s = Settings::start(YAML, "", |_| {});
    // The test server has two workers and hands connections to them in
    // turn, so these readers are on both; so are the validations below.
    let mut readers = Vec::new();
    for n in 0..6 {
        readers.push(s.server.subscriber(&format!("reader-{n}"), &["conversation:ticks"]).await);
    }
    let deep = deeply_nested(60_000);
    let start = Instant::now();
    let validated = Cell::new(false);

    // Three streams of four validations each, all at once.
    let validations = async {
        let streams = (0..3).map(|_| async {
            let mut slowest = Duration::ZERO;
            for _ in 0..4 {
                let began = Instant::now();
                let (status, body) = s.server.send_raw("POST", "/api/config/validate", "text/yaml", &deep).await;
                slowest = slowest.max(began.elapsed());
                assert_eq!((status, body["valid"].clone()), (200, json!(false)), "{body}");
                assert_too_deep(&body);
            }
            slowest
        });
        let slowest = join_all(streams).await.into_iter().max().unwrap_or_default();
        validated.set(true);
        slowest
    };
    // Meanwhile a tick every 20 ms, each stamped with when it was sent.
    let publisher = async {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        let mut sent = 0u64;
        while !(validated.get() && sent >= 10) {
            pace.tick().await;
            let at_ms = start.elapsed().as_millis() as u64;
            s.server.publish("conversation:ticks", "tick", json!({"n": sent, "at_ms": at_ms})).await;
            sent += 1;
        }
        s.server.publish("conversation:ticks", "tick.done", json!({})).await;
        sent
    };
    let reading = join_all(readers.iter_mut().map(|client| async {
        let (mut got, mut worst_ms) = (0u64, 0u64);
        loop {
            let frame = client.recv().await;
            match frame["type"].as_str() {
                Some("tick.done") => return (got, worst_ms),
                Some("tick") => {
                    assert_eq!(frame["data"]["n"], got, "in order, none lost: {frame}");
                    let at_ms = frame["data"]["at_ms"].as_u64().unwrap_or_default();
                    worst_ms = worst_ms.max(start.elapsed().as_millis() as u64 - at_ms);
                    got += 1;
                }
                // Other readers joining the channel.
                _ => assert_eq!(frame["type"], "channel.presence", "{frame}"),
            }
        }
    }));
    let (slowest, sent, seen) = tokio::join!(validations, publisher, reading);

    assert!(slowest < Duration::from_secs(1), "a validation took {slowest:?}");
    for (got, worst_ms) in seen {
        assert_eq!(got, sent, "every tick reached every reader");
        assert!(worst_ms < 1000, "a tick took {worst_ms} ms to arrive while validations ran");
    }
}

#[actix_rt::test]
async fn a_flood_of_duplicate_keys_is_answered_quickly_and_briefly() {
    let s = Settings::start(YAML, "", |_| {});
    // 60,000 duplicate keys: over the entry limit, refused before parsing.
    let began = Instant::now();
    let (status, body) =
        s.server.send_raw("POST", "/api/config/validate", "text/yaml", &"dup: 1\n".repeat(60_000)).await;
    assert!(began.elapsed() < Duration::from_secs(1), "took {:?}", began.elapsed());
    assert_eq!((status, body["valid"].clone()), (200, json!(false)), "{body}");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["errors"][0]["line"], 10_001, "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains("more than 10000 entries"), "{body}");

    // Under the limit every duplicate is reported, but the list is capped:
    // 9,000 servers that are not mappings, 8,999 of them duplicates.
    let began = Instant::now();
    let (status, body) =
        s.server.send_raw("POST", "/api/config/validate", "text/yaml", &"dup: 1\n".repeat(9_000)).await;
    assert!(began.elapsed() < Duration::from_secs(1), "took {:?}", began.elapsed());
    assert_eq!(status, 200, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 101, "the first 100 and a count of the rest");
    assert_eq!(errors[1]["line"], 2, "{}", errors[1]);
    assert_eq!(errors[100]["message"], "…and 17899 more problems");
    let bytes = body.to_string().len();
    assert!(bytes < 32 * 1024, "a small answer: {bytes} bytes");

    // One server with 9,000 duplicate fields, each named on its own line.
    let fields = format!("s:\n  url: http://a/\n  health_url: http://a/h\n{}", "  url: http://a/\n".repeat(9_000));
    let began = Instant::now();
    let (status, body) = s.server.send_raw("POST", "/api/config/validate", "text/yaml", &fields).await;
    assert!(began.elapsed() < Duration::from_secs(1), "took {:?}", began.elapsed());
    assert_eq!(status, 200, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 101, "{body}");
    assert_eq!(
        (&errors[99]["server"], &errors[99]["field"], &errors[99]["line"], &errors[99]["message"]),
        (&json!("s"), &json!("url"), &json!(103), &json!("duplicate field")),
        "{body}"
    );
    assert_eq!(errors[100]["message"], "…and 8900 more problems");
}

#[actix_rt::test]
async fn a_pathological_file_is_refused_quickly_and_the_last_good_config_stays() {
    let s = Settings::start(YAML, "", |_| {});
    let mut client = s.client().await;

    let began = Instant::now();
    std::fs::write(s.yaml_path(), deeply_nested(60_000)).unwrap();
    let data = event(&mut client, "config_validated").await;
    // Two debounce windows (the second for a file that looks mid-save).
    assert!(began.elapsed() < Duration::from_secs(2), "took {:?}", began.elapsed());
    assert_eq!((data["valid"].clone(), data["servers"].clone()), (json!(false), json!(2)), "{data}");
    assert_too_deep(&data);
    let (_, listed) = s.server.get("/api/mcp").await;
    assert_eq!(listed["valid"], false, "{listed}");
    assert_eq!(listed["servers"].as_array().map(Vec::len), Some(2), "the last good config stays: {listed}");

    // A flood of duplicates makes a small event too.
    std::fs::write(s.yaml_path(), "dup: 1\n".repeat(9_000)).unwrap();
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["errors"].as_array().map(Vec::len), Some(101), "{data}");

    // The watcher is not stuck: the next good edit is announced.
    replace_atomically(&s.yaml_path(), &YAML.replace("GitHub tools", "GitHub tools v2"));
    let data = event(&mut client, "config_validated").await;
    assert_eq!(data["valid"], true, "{data}");
}

#[actix_rt::test]
async fn prompt_edits_reach_clients_with_their_hash() {
    let s = Settings::start(YAML, "You are Nova.", |_| {});
    let mut client = s.client().await;
    let (_, prompt) = s.server.get("/api/prompt").await;
    assert_eq!((prompt["content"].clone(), prompt["version"].clone()), (json!("You are Nova."), json!(1)));

    std::fs::write(s.prompt_path(), "You are Nova, a careful agent.").unwrap();
    let data = event(&mut client, "prompt_updated").await;
    assert_eq!(data["content"], "You are Nova, a careful agent.");
    assert_eq!(data["version"], 2);
    let sha = data["hash"].as_str().unwrap().to_owned();
    assert!(sha.starts_with("sha256:") && sha.len() == 71, "{data}");

    let (status, body) = s.server.send_raw("PUT", "/api/prompt", "application/json", r#"{"content":"v3"}"#).await;
    assert_eq!(status, 200, "{body}");
    let data = event(&mut client, "prompt_updated").await;
    assert_eq!((data["content"].clone(), data["version"].clone()), (json!("v3"), json!(3)));
    assert_eq!(data["hash"], body["hash"]);
    assert_ne!(data["hash"].as_str(), Some(sha.as_str()));
    let (_, backups) = s.server.get("/api/config/backups").await;
    assert_eq!(backups["backups"][0]["file"], "NOVA_SYSTEM_PROMPT.md");
}

#[actix_rt::test]
async fn every_client_may_follow_settings_but_not_publish_there() {
    // No servers, so no health check: its first result is announced
    // whenever it lands, and this test expects nothing else to arrive.
    let s = Settings::start("", "", |_| {});
    let mut client = s.server.connect().await;
    client.init(json!({"token": jwt("viewer", 600, json!({"channels": ["conversation:*"]}))})).await;
    client.subscribe(&["system:settings"]).await;
    client.request("chat.message", Some("system:settings"), json!({"content": "hi"})).await;
    client.expect_error(4003).await;
    // Not even a client that may use every channel.
    let mut everything = s.server.connect_as("dev").await;
    everything.subscribe(&["system:settings"]).await;
    everything.request("chat.message", Some("system:settings"), json!({"content": "hi"})).await;
    everything.expect_error(4003).await;
    client.assert_nothing_pending().await;
}

/// A tiny HTTP health target: answers 200 to anything until stopped.
async fn health_target(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        });
    }
}

#[actix_rt::test]
async fn health_changes_are_announced_once_each() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = tokio::spawn(health_target(listener));
    let yaml = format!("tools:\n  url: http://{addr}/mcp\n  health_url: http://{addr}/health\n  enabled: true\n");
    let s = Settings::start(&yaml, "", |a| {
        a.mcp_health_interval_ms = Some(100);
        a.mcp_health_timeout_ms = Some(300);
    });
    let mut client = s.client().await;
    let up = s.server.wait_for_health("tools", "up").await;
    assert!(up["latency_ms"].is_u64(), "{up}");

    target.abort();
    let _ = target.await;
    let data = event(&mut client, "system_health").await;
    // The first check may have been announced before the client subscribed.
    let data = if data["status"] == "up" { event(&mut client, "system_health").await } else { data };
    assert_eq!(
        (data["name"].clone(), data["status"].clone(), data["previous"].clone()),
        (json!("tools"), json!("down"), json!("up"))
    );
    assert!(data["error"].is_string(), "{data}");

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let target = tokio::spawn(health_target(listener));
    let data = event(&mut client, "system_health").await;
    assert_eq!((data["status"].clone(), data["previous"].clone()), (json!("up"), json!("down")));
    // Polls that find nothing new announce nothing.
    s.server.wait_for_health_checks("tools", 3).await;
    client.assert_nothing_pending().await;
    target.abort();
}

#[actix_rt::test]
async fn restart_runs_an_allowed_command_without_a_shell() {
    let s = Settings::start(YAML, "", |a| {
        a.restart_services = Some(vec!["web".into()]);
        a.restart_command = Some("echo restarting {service};".into());
    });
    let (status, body) = s.server.post("/api/admin/restart/web", json!(null)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["stdout"], "restarting web;\n", "no shell: ';' is an argument: {body}");
    let (status, body) = s.server.post("/api/admin/restart/db", json!(null)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.server.post("/api/admin/restart/web%3Brm", json!(null)).await;
    assert_eq!(status, 404, "{body}");

    let off = Settings::start(YAML, "", |_| {});
    let (status, body) = off.server.post("/api/admin/restart/web", json!(null)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "restart_disabled");
}

#[actix_rt::test]
async fn nodes_sharing_the_files_announce_each_change_once() {
    let redis = crate::common::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::create_dir_all(dir.path().join("prompts")).unwrap();
    std::fs::write(dir.path().join("configs/mcp_servers.yaml"), YAML).unwrap();
    let prompt = dir.path().join("prompts/NOVA_SYSTEM_PROMPT.md");
    std::fs::write(&prompt, "v1").unwrap();
    let node = |id: &str| {
        let (url, root) = (redis.url(), dir.path().to_path_buf());
        TestServer::with(|a| {
            a.redis_url = Some(url);
            a.node_id = Some(id.into());
            a.config_dir = Some(root.join("configs"));
            a.prompts_dir = Some(root.join("prompts"));
            a.mcp_health_interval_ms = Some(60_000);
        })
    };
    let (a, b) = (node("node-a"), node("node-b"));
    a.wait_for_redis("up").await;
    b.wait_for_redis("up").await;
    let mut on_a = a.subscriber("amy", &["system:settings"]).await;
    let mut on_b = b.subscriber("bea", &["system:settings"]).await;

    // Both nodes see the write; one announces it, to both nodes' clients.
    std::fs::write(&prompt, "v2").unwrap();
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(event(client, "prompt_updated").await["content"], "v2");
    }
    // The next event each client gets is the next change, not a copy.
    let (status, _) = b.send_raw("PUT", "/api/prompt", "application/json", r#"{"content":"v3"}"#).await;
    assert_eq!(status, 200);
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(event(client, "prompt_updated").await["content"], "v3");
    }
}
