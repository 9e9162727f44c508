//! The event catalog, enforced: every catalog type, valid and invalid, from
//! each sender that may send it, and from one that may not.

use nova_actors::catalog::{self, docs::example_channel, ChannelUse, Event, Handling, Sender};
use serde_json::{json, Value};

use crate::common::*;

/// The channels the examples use; the witness follows all of them.
const CHANNELS: &[&str] = &["conversation:c1", "team:t1", "agent:researcher", "system:settings"];

/// `data` that breaks the schema of `event`: a required field left out, or,
/// when nothing is required, a field of the wrong type. `None` when the
/// schema accepts any object.
fn invalid_data(event: &Event) -> Option<(Value, String)> {
    let schema = event.schema();
    let mut data = event.example();
    if let Some(required) = schema["required"].as_array().and_then(|r| r.first()).and_then(Value::as_str) {
        data.as_object_mut()?.remove(required);
        return Some((data, format!("data.{required}")));
    }
    let properties = schema["properties"].as_object()?;
    let (name, property) = properties.iter().find(|(_, p)| p.get("type").is_some() || p.get("oneOf").is_some())?;
    let wrong =
        if property["type"].as_array().is_some_and(|t| t.contains(&json!("string"))) || property["type"] == "string" {
            json!({"not": "a string"})
        } else {
            json!("not of this type")
        };
    data.as_object_mut()?.insert(name.clone(), wrong);
    Some((data, format!("data.{name}")))
}

/// A frame of `event` with `data`, from a client.
fn frame(id: &str, event: &Event, data: Value) -> Value {
    let mut frame = json!({"id": id, "type": event.name, "data": data});
    if event.channel != ChannelUse::None {
        frame["channel"] = json!(example_channel(event));
    }
    frame
}

/// Sends `frame`, then a heartbeat, and returns what came before the
/// heartbeat's reply: every answer the session gives itself (errors,
/// refusals). Answers that come through the registry or a channel may come
/// later and spill into the next call's frames, so callers judge only the
/// `error`s, which this test's requests all draw from the session.
async fn answers(client: &mut Client, frame: Value) -> Vec<Value> {
    client.send(frame).await;
    let id = client.request("connection.heartbeat", None, json!({})).await;
    let mut out = Vec::new();
    loop {
        let next = client.recv().await;
        if next["type"] == "connection.heartbeat" && next["reply_to"] == id.as_str() {
            return out;
        }
        out.push(next);
    }
}

fn errors(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|f| f["type"] == "error").collect()
}

fn error_codes(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter(|f| f["type"] == "error").filter_map(|f| f["data"]["code"].as_u64()).collect()
}

#[actix_rt::test]
async fn every_client_type_is_validated_and_answered() {
    // Some 200 requests at once: over the default rate limits, which the
    // rate limit tests cover.
    let server = TestServer::with(|a| {
        a.messages_per_second = Some(10_000);
        a.message_burst = Some(10_000);
        a.user_requests_per_second = Some(0);
        a.event_rate_limits =
            Some("chat.message=off,chat.typing=off,agent.invoke=off,file.upload.request=off".parse().expect("limits"));
    });
    let mut alice = server.subscriber("alice", CHANNELS).await;
    let mut n = 0;
    for event in catalog::events() {
        n += 1;
        let id = format!("r{n}");
        if event.name == "connection.init" {
            // Covered by the authentication tests: it closes the connection.
            continue;
        }
        // Leaving a channel the other checks need would change their answers.
        let valid = match event.name {
            "channel.unsubscribe" => json!({"channels": ["document:elsewhere"]}),
            _ => event.example(),
        };
        if event.handling == Handling::Relayed {
            // Relayed through the channel: awaited, not raced with a heartbeat.
            alice.send(frame(&id, event, valid)).await;
            loop {
                let next = alice.recv().await;
                assert_ne!(next["type"], "error", "a valid '{}' was refused: {next}", event.name);
                if next["type"] == event.name {
                    break;
                }
            }
        } else {
            let got = answers(&mut alice, frame(&id, event, valid)).await;
            if !event.sent_by(Sender::Client) {
                assert_eq!(error_codes(&got), [4003], "{} from a client: {got:?}", event.name);
                let message = errors(&got)[0]["data"]["message"].as_str().unwrap_or_default().to_owned();
                assert!(message.contains("not by a client"), "{message}");
                continue;
            }
            match event.handling {
                Handling::Agent => assert_eq!(error_codes(&got), [4007], "{}: {got:?}", event.name),
                // The refresh tests cover JWTs; an API key has no expiry.
                _ if event.name == "connection.refresh" => {
                    assert_eq!(error_codes(&got), [4005], "{got:?}");
                    assert!(errors(&got)[0]["data"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("nothing to refresh"));
                }
                _ => assert!(error_codes(&got).is_empty(), "a valid '{}' was refused: {got:?}", event.name),
            }
        }
        let Some((bad, field)) = invalid_data(event) else { continue };
        let got = answers(&mut alice, frame(&id, event, bad)).await;
        assert_eq!(error_codes(&got), [4005], "an invalid '{}': {got:?}", event.name);
        let error = &errors(&got)[0]["data"];
        assert!(error["message"].as_str().unwrap_or_default().contains(&field), "{error}");
        assert_eq!(error["fields"][0]["field"], field.as_str(), "{error}");
        assert_eq!(errors(&got)[0]["reply_to"], id.as_str());
    }
    // Still open, still served.
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn every_backend_type_is_validated_and_delivered() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", CHANNELS).await;
    for event in catalog::events() {
        let channel = example_channel(event);
        let body = json!({"channel": channel, "type": event.name, "data": event.example()});
        let (status, answer) = server.post("/api/publish", body).await;
        if !event.sent_by(Sender::Backend) {
            assert_eq!(status, 400, "{} from a backend: {answer}", event.name);
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            assert!(matches!(code, "forbidden_event" | "invalid_type"), "{}: {answer}", event.name);
            continue;
        }
        assert_eq!(status, 202, "a valid '{}' was refused: {answer}", event.name);
        let delivered = alice.recv().await;
        assert_eq!(delivered["type"], event.name);
        assert_eq!(delivered["id"], answer["id"]);
        assert_eq!(delivered["data"], event.example());

        let Some((bad, field)) = invalid_data(event) else { continue };
        let body = json!({"channel": channel, "type": event.name, "data": bad});
        let (status, answer) = server.post("/api/publish", body).await;
        assert_eq!(status, 400, "an invalid '{}' was accepted", event.name);
        assert_eq!(answer["error"]["code"], "invalid_event", "{answer}");
        assert_eq!(answer["error"]["fields"][0]["field"], field.as_str(), "{answer}");
        assert!(answer["error"]["fields"][0]["rule"].as_str().is_some_and(|r| !r.is_empty()), "{answer}");
    }
    // Nothing refused reached anyone.
    alice.assert_nothing_pending().await;
}

#[actix_rt::test]
async fn a_malformed_assistant_token_never_reaches_a_browser() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let bad = json!({"channel": "conversation:c1", "type": "assistant.token", "data": {"chunk": "Hel"}});
    let (status, body) = server.post("/api/publish", bad.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"code": "invalid_event",
            "message": "invalid 'assistant.token': data.stream_id: required string",
            "fields": [{"field": "data.stream_id", "rule": "required string"}]}})
    );
    // A batch holding it publishes nothing; a user send is refused too.
    let good =
        json!({"channel": "conversation:c1", "type": "assistant.token", "data": {"stream_id": "s", "chunk": "x"}});
    let (status, body) = server.post("/api/publish/batch", json!({"events": [good, bad]})).await;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("invalid_event")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().starts_with("events[1]"), "{body}");
    let (status, _) = server
        .post("/api/users/alice/send", json!({"type": "tool.call.progress", "data": {"call_id": "c", "progress": 2}}))
        .await;
    assert_eq!(status, 400);
    alice.assert_nothing_pending().await;
    // Types outside the catalog pass, as the application adds its own.
    let id = server.publish("conversation:c1", "my_app.thing", json!({"anything": [1, 2]})).await;
    assert_eq!(alice.recv_type("my_app.thing").await["id"], id.as_str());
}

#[actix_rt::test]
async fn strict_events_refuses_types_outside_the_catalog() {
    let server = TestServer::with(|args| args.strict_events = true);
    let mut alice = server.subscriber("alice", &["conversation:c1"]).await;
    let (status, body) =
        server.post("/api/publish", json!({"channel": "conversation:c1", "type": "my_app.thing", "data": {}})).await;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("unknown_event")), "{body}");
    let id = server.publish("conversation:c1", "assistant.token", json!({"stream_id": "s", "chunk": "x"})).await;
    assert_eq!(alice.recv_type("assistant.token").await["id"], id.as_str());
}

#[actix_rt::test]
async fn requests_for_agents_check_the_channel_before_answering_4007() {
    let server = TestServer::start();
    let token = jwt("carol", 600, json!({"channels": ["conversation:*"]}));
    let mut carol = server.connect().await;
    carol.init(json!({"token": token})).await;
    let invoke = json!({"input": {"task": "x"}});
    // Not granted: 4003, not a hint that an agent exists.
    carol.request("agent.invoke", Some("agent:researcher"), invoke.clone()).await;
    assert_eq!(carol.expect_error(4003).await["channel"], "agent:researcher");
    carol.request("agent.invoke", Some("nowhere:x"), invoke.clone()).await;
    carol.expect_error(4006).await;
    // Granted and valid: the agent is not available (yet).
    carol.request("chat.regenerate", Some("conversation:c1"), json!({"message_id": "m1"})).await;
    let error = carol.expect_error(4007).await;
    assert!(error["data"]["message"].as_str().unwrap_or_default().contains("chat.regenerate"), "{error}");
    // A missing channel where one is required.
    carol.request("agent.invoke", None, invoke).await;
    assert!(carol.expect_error(4005).await["data"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("needs a 'channel'"));
}

#[actix_rt::test]
async fn a_team_status_is_set_seen_and_reset_when_the_user_leaves() {
    let server = TestServer::start();
    let mut alice = server.subscriber("alice", &["team:t1"]).await;
    let mut bob = server.subscriber("bob", &["team:t1"]).await;
    alice.recv_type("channel.presence").await;

    bob.request("team.presence.update", Some("team:t1"), json!({"status": "busy", "text": "in a meeting"})).await;
    for client in [&mut alice, &mut bob] {
        let update = client.recv_type("team.presence.update").await;
        assert_eq!(update["channel"], "team:t1");
        assert_eq!(update["data"], json!({"user_id": "bob", "status": "busy", "text": "in a meeting"}));
    }
    // A newcomer sees everyone's status.
    let mut carol = server.connect_as("carol").await;
    let subscribed = carol.subscribe(&["team:t1"]).await.remove(0);
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv_type("channel.presence").await["data"]["user_id"], "carol");
    }
    let mut statuses = subscribed["data"]["statuses"].as_array().cloned().unwrap_or_default();
    statuses.sort_by_key(|s| s["user_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        statuses,
        [
            json!({"user_id": "alice", "status": "online"}),
            json!({"user_id": "bob", "status": "busy", "text": "in a meeting"}),
            json!({"user_id": "carol", "status": "online"}),
        ]
    );
    // Too long a text, a status outside the set, a channel not subscribed to,
    // or not a team channel.
    bob.request("team.presence.update", Some("team:t1"), json!({"status": "busy", "text": "x".repeat(141)})).await;
    assert_eq!(bob.expect_error(4005).await["data"]["fields"][0]["field"], "data.text");
    bob.request("team.presence.update", Some("team:t1"), json!({"status": "asleep"})).await;
    bob.expect_error(4005).await;
    bob.request("team.presence.update", Some("team:t2"), json!({"status": "away"})).await;
    bob.expect_error(4003).await;
    bob.request("team.presence.update", Some("conversation:c1"), json!({"status": "away"})).await;
    bob.expect_error(4005).await;

    // Bob leaves: `left`, and when he comes back he is `online` again.
    bob.close().await;
    let left = carol.recv_type("channel.presence").await;
    assert_eq!(left["data"], json!({"user_id": "bob", "state": "left"}));
    let mut bob = server.connect_as("bob").await;
    let subscribed = bob.subscribe(&["team:t1"]).await.remove(0);
    let statuses = subscribed["data"]["statuses"].as_array().cloned().unwrap_or_default();
    assert!(statuses.contains(&json!({"user_id": "bob", "status": "online"})), "{statuses:?}");
}

#[actix_rt::test]
async fn connection_reconnect_takes_the_channels_back() {
    let server = TestServer::start();
    let mut alice = server.connect_as("alice").await;
    let id = alice
        .request(
            "connection.reconnect",
            None,
            json!({"channels": {"conversation:c1": {"offset": 41, "epoch": "e1"}, "team:t1": {}}}),
        )
        .await;
    let mut joined = Vec::new();
    for _ in 0..2 {
        let subscribed = alice.recv_type("channel.subscribed").await;
        assert_eq!(subscribed["reply_to"], id.as_str());
        joined.push(subscribed["channel"].as_str().unwrap_or_default().to_owned());
    }
    joined.sort();
    assert_eq!(joined, ["conversation:c1", "team:t1"]);
    let sent = server.publish("team:t1", "team.notification", json!({"title": "hello"})).await;
    assert_eq!(alice.recv_type("team.notification").await["id"], sent.as_str());
    alice.request("connection.reconnect", None, json!({"channels": {}})).await;
    alice.expect_error(4005).await;
}
