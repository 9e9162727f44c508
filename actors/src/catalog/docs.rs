//! The documents made from the catalog: `docs/asyncapi.yaml` (AsyncAPI 3.0)
//! and the event tables of docs/protocol.md. Tests compare them with the
//! committed files and fail when they drift; `NOVA_UPDATE_DOCS=1 cargo test
//! -p nova-actors --lib catalog` rewrites them.

use serde_json::{json, Map, Value};

use super::{events, ChannelUse, Event, Handling, Sender, FAMILIES};
use crate::protocol::PROTOCOL_VERSION;

/// Where the catalog tables go in docs/protocol.md.
pub const TABLE_START: &str = "<!-- catalog: made from actors/src/catalog by its tests -->";
/// Where they end.
pub const TABLE_END: &str = "<!-- /catalog -->";

/// The AsyncAPI 3.0 document of the WebSocket protocol.
pub fn asyncapi() -> Value {
    let mut messages = Map::new();
    let mut channel_messages = Map::new();
    let mut schemas = Map::new();
    let (mut received, mut sent) = (Vec::new(), Vec::new());
    let mut generator = super::generator();
    let record = generator.subschema_for::<crate::gateway::record::RecordSchema>().to_value();
    let mut definitions = generator.take_definitions(true);
    let record = definitions.remove("RecordSchema").unwrap_or(record);
    for event in events() {
        let key = event.name;
        schemas.insert(key.to_owned(), event.schema());
        messages.insert(key.to_owned(), message(event));
        channel_messages.insert(key.to_owned(), json!({"$ref": format!("#/components/messages/{key}")}));
        let reference = json!({"$ref": format!("#/channels/socket/messages/{key}")});
        if event.sent_by(Sender::Client) {
            received.push(reference.clone());
        }
        if event.sent_by(Sender::Server) || event.sent_by(Sender::Backend) {
            sent.push(reference);
        }
    }
    schemas.insert("agentRecord".to_owned(), record);
    messages.insert(
        "agentRecord".to_owned(),
        json!({"name": "agentRecord", "title": "The record an agent receives",
               "payload": {"$ref": "#/components/schemas/agentRecord"}}),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "nova-realtime WebSocket protocol",
            "version": PROTOCOL_VERSION.to_string(),
            "description": "Generated from actors/src/catalog by its tests: do not edit by hand. \
                docs/protocol.md explains the protocol; this document lists every event type with \
                the JSON Schema of its `data`. `x-nova-senders` says who may send an event: a \
                `client` over the WebSocket, a `backend` through the REST API or Redis, or the \
                `server` itself. Fields not listed pass through.",
        },
        "servers": {
            "local": {"host": "localhost:8080", "protocol": "ws", "pathname": "/ws",
                      "description": "The embedded default; `/ws/{client_id}` works the same."},
        },
        "defaultContentType": "application/json",
        "channels": {
            "socket": {
                "address": "/ws",
                "title": "One client's WebSocket",
                "description": "Every frame is one JSON text frame holding an envelope.",
                "messages": channel_messages,
            },
            "agentInbound": {
                "address": "{prefix}inbound:{agent}",
                "title": "An agent's records (docs/gateway.md)",
                "description": "What a client sends for an agent, as the agent receives it: the field `event` \
                    of an entry of the Redis stream `{prefix}inbound:{agent}` (delivery: stream), or the \
                    body of a POST to the agent's url (delivery: webhook, signed with X-Nova-Signature).",
                "parameters": {"prefix": {"description": "NOVA_REDIS_PREFIX, `nova:` by default."},
                               "agent": {"description": "The agent's name in configs/agents.yaml."}},
                "messages": {"agentRecord": {"$ref": "#/components/messages/agentRecord"}},
            },
        },
        "operations": {
            "receiveFromClient": {
                "action": "receive",
                "channel": {"$ref": "#/channels/socket"},
                "summary": "What a client may send.",
                "messages": received,
            },
            "sendToClient": {
                "action": "send",
                "channel": {"$ref": "#/channels/socket"},
                "summary": "What a client receives: the server's own events and what backends publish.",
                "messages": sent,
            },
            "deliverToAgent": {
                "action": "send",
                "channel": {"$ref": "#/channels/agentInbound"},
                "summary": "A record for an agent, once a client's request is accepted.",
                "messages": [{"$ref": "#/channels/agentInbound/messages/agentRecord"}],
            },
        },
        "components": {"messages": messages, "schemas": schemas},
    })
}

fn message(event: &Event) -> Value {
    let senders: Vec<&str> = event.senders.iter().map(|s| s.as_str()).collect();
    let channel = match event.channel {
        ChannelUse::Required => json!({"type": "string", "description": "The channel (`namespace:id`)."}),
        ChannelUse::Optional => json!({"type": "string", "description": "The channel, when there is one."}),
        ChannelUse::None => json!({"not": {}, "description": "Never set."}),
    };
    let mut required = vec!["type"];
    if event.sent_by(Sender::Client) {
        required.push("id");
    }
    if event.channel == ChannelUse::Required {
        required.push("channel");
    }
    let payload = json!({
        "type": "object",
        "required": required,
        "properties": {
            "id": {"type": "string", "maxLength": 128,
                   "description": "From a client: its request id (echoed as reply_to). From the server: the event's id."},
            "type": {"const": event.name},
            "channel": channel,
            "data": {"$ref": format!("#/components/schemas/{}", event.name)},
            "timestamp": {"type": "string", "description": "Set by the server: RFC 3339, UTC, milliseconds."},
            "reply_to": {"type": "string", "description": "Set by the server on replies: the request's id."},
            "source": {"type": "string", "description": "On settings events: the service that made them."},
        },
    });
    let mut example = Map::new();
    if event.sent_by(Sender::Client) {
        example.insert("id".into(), json!("1"));
    }
    example.insert("type".into(), json!(event.name));
    if event.channel == ChannelUse::Required {
        example.insert("channel".into(), json!(example_channel(event)));
    }
    example.insert("data".into(), event.example());
    json!({
        "name": event.name,
        "title": event.name,
        "summary": event.summary,
        "x-nova-senders": senders,
        "x-nova-handling": handling_key(event.handling),
        "payload": payload,
        "examples": [{"payload": Value::Object(example)}],
    })
}

fn handling_key(handling: Handling) -> &'static str {
    match handling {
        Handling::Server => "server",
        Handling::Relayed => "relayed",
        Handling::Agent => "agent",
        Handling::Delivered => "delivered",
    }
}

/// A channel an example of `event` would name.
pub fn example_channel(event: &Event) -> &'static str {
    match event.name.split('.').next() {
        Some("team") => "team:t1",
        Some("agent") => "agent:researcher",
        Some("file") => "conversation:c1",
        _ if super::settings::EVENTS.iter().any(|e| e.name == event.name) => "system:settings",
        _ => "conversation:c1",
    }
}

/// `docs/asyncapi.yaml`'s text.
pub fn asyncapi_yaml() -> String {
    let header = "# Generated from actors/src/catalog by its tests; do not edit by hand.\n\
                  # Regenerate: NOVA_UPDATE_DOCS=1 cargo test -p nova-actors --lib catalog\n";
    match serde_yaml::to_string(&asyncapi()) {
        Ok(yaml) => format!("{header}{yaml}"),
        Err(e) => format!("{header}# could not be written: {e}\n"),
    }
}

/// The catalog tables of docs/protocol.md, between [`TABLE_START`] and
/// [`TABLE_END`].
pub fn protocol_tables() -> String {
    let mut out = String::new();
    for (family, list) in FAMILIES {
        out.push_str(&format!("\n#### {family}\n\n"));
        out.push_str("| type | sent by | `data` (* required) | meaning |\n| --- | --- | --- | --- |\n");
        for event in list.iter() {
            let mut senders: Vec<String> = event.senders.iter().map(|s| s.as_str().to_owned()).collect();
            if event.sent_by(Sender::Client) && event.handling != Handling::Server {
                senders[0] = format!("client ({})", short_handling(event.handling));
            }
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                event.name,
                senders.join(", "),
                fields(&event.schema()),
                event.summary.replace('|', "\\|")
            ));
        }
    }
    out.push('\n');
    out
}

fn short_handling(handling: Handling) -> &'static str {
    match handling {
        Handling::Relayed => "relayed",
        Handling::Agent => "for an agent (docs/gateway.md)",
        Handling::Server | Handling::Delivered => "",
    }
}

/// `` `stream_id`* string, `index` integer `` for a schema's properties.
fn fields(schema: &Value) -> String {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return "—".into() };
    if properties.is_empty() {
        return "—".into();
    }
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    properties
        .iter()
        .map(|(name, property)| {
            let star = if required.contains(&name.as_str()) { "*" } else { "" };
            let kind = super::type_name(property).unwrap_or_else(|| "any".into());
            let mut bounds = Vec::new();
            for (key, word) in [("minimum", "≥"), ("maximum", "≤"), ("maxLength", "≤"), ("minItems", "≥")] {
                // The bounds of an unsigned Rust type say nothing a reader
                // needs ("integer" already means ≥ 0 here).
                let implied = property.get("format").and_then(Value::as_str).is_some_and(|f| f.starts_with("uint"));
                if let Some(limit) = property.get(key).filter(|_| !(implied && matches!(key, "minimum" | "maximum"))) {
                    let unit = if key == "maxLength" {
                        " chars"
                    } else if key == "minItems" {
                        " items"
                    } else {
                        ""
                    };
                    bounds.push(format!("{word} {limit}{unit}"));
                }
            }
            let bounds = if bounds.is_empty() { String::new() } else { format!(" ({})", bounds.join(", ")) };
            format!("`{name}`{star} {}{bounds}", kind.replace('|', "\\|"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo_file(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    fn updating() -> bool {
        std::env::var_os("NOVA_UPDATE_DOCS").is_some()
    }

    #[test]
    fn asyncapi_yaml_is_up_to_date() {
        let path = repo_file("docs/asyncapi.yaml");
        let made = asyncapi_yaml();
        if updating() {
            std::fs::write(&path, &made).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == made,
            "docs/asyncapi.yaml is stale: NOVA_UPDATE_DOCS=1 cargo test -p nova-actors --lib catalog"
        );
    }

    #[test]
    fn protocol_md_tables_are_up_to_date() {
        let path = repo_file("docs/protocol.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (Some(start), Some(end)) = (text.find(TABLE_START), text.find(TABLE_END)) else {
            panic!("docs/protocol.md lacks the catalog markers");
        };
        let current = &text[start + TABLE_START.len()..end];
        let made = protocol_tables();
        if updating() && current != made {
            let updated = format!("{}{}{}", &text[..start + TABLE_START.len()], made, &text[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert!(
            current == made,
            "docs/protocol.md's catalog is stale: NOVA_UPDATE_DOCS=1 cargo test -p nova-actors --lib catalog"
        );
    }

    #[test]
    fn the_asyncapi_document_lists_every_event_in_the_right_operations() {
        let doc = asyncapi();
        assert_eq!(doc["asyncapi"], "3.0.0");
        let count = |op: &str| doc["operations"][op]["messages"].as_array().map_or(0, Vec::len);
        // Every event, and the agents' record.
        assert_eq!(doc["components"]["messages"].as_object().unwrap().len(), events().count() + 1);
        let record = &doc["components"]["schemas"]["agentRecord"];
        assert!(record["properties"]["user_id"]["description"].as_str().is_some_and(|d| d.contains("never")));
        assert_eq!(doc["operations"]["deliverToAgent"]["channel"]["$ref"], "#/channels/agentInbound");
        assert_eq!(count("receiveFromClient"), events().filter(|e| e.sent_by(Sender::Client)).count());
        let server = doc["components"]["messages"]["assistant.token"].clone();
        assert_eq!(server["x-nova-senders"], json!(["backend"]));
        assert_eq!(server["payload"]["properties"]["data"]["$ref"], "#/components/schemas/assistant.token");
        assert!(doc["components"]["schemas"]["assistant.token"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("stream_id")));
    }

    /// Every `{…}` object in docs/protocol.md's code blocks that names a
    /// `type` is a frame: it must be JSON, its type in the catalog, and its
    /// `data` valid for that type.
    #[test]
    fn every_example_frame_in_protocol_md_matches_its_schema() {
        let text = std::fs::read_to_string(repo_file("docs/protocol.md")).unwrap();
        let mut checked = 0;
        for block in text.split("```").skip(1).step_by(2) {
            for object in top_level_objects(block) {
                let frame: Value = serde_json::from_str(&object)
                    .unwrap_or_else(|e| panic!("an example in docs/protocol.md is not JSON ({e}): {object}"));
                let Some(kind) = frame.get("type").and_then(Value::as_str) else { continue };
                let event = super::super::find(kind)
                    .unwrap_or_else(|| panic!("docs/protocol.md shows '{kind}', which is not in the catalog"));
                let data = frame.get("data").cloned().unwrap_or(json!({}));
                let sender = event.senders[0];
                if let Err(e) = super::super::check(kind, sender, &data) {
                    panic!("docs/protocol.md's example does not match the schema: {e}: {object}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} example frames found");
    }

    /// The balanced `{…}` substrings at the top level of `block`, strings
    /// taken into account.
    fn top_level_objects(block: &str) -> Vec<String> {
        let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for (i, c) in block.char_indices() {
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' if depth > 0 => in_string = true,
                '{' => {
                    if depth == 0 {
                        start = i;
                    }
                    depth += 1;
                }
                '}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(block[start..=i].to_owned());
                    }
                }
                _ => {}
            }
        }
        out
    }
}
