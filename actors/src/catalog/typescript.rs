//! The TypeScript declarations of the catalog, for the JavaScript client
//! (`clients/js/nova-realtime.d.ts`): every event's `data` as an interface,
//! its frame as `NovaFrame<type, data>`, `EventMap` (type -> frame) and
//! `RequestMap` (what a client may send: type -> data). They fill the part
//! of the file between [`TS_START`] and [`TS_END`]; the client's API around
//! them is written by hand. A test fails when the committed file drifts;
//! `NOVA_UPDATE_DOCS=1 cargo test -p nova-actors --lib catalog` rewrites it.
//!
//! The types are made from the same JSON Schemas the server validates with,
//! so a field the server requires is required here, and one it may send as
//! `null` is typed `| null`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{events, Event, Sender, FAMILIES};

/// Where the generated declarations start in nova-realtime.d.ts.
pub const TS_START: &str = "// <catalog: made from actors/src/catalog by its tests>";
/// Where they end.
pub const TS_END: &str = "// </catalog>";

/// The declarations between [`TS_START`] and [`TS_END`], with the newline
/// after the start marker and before the end one.
pub fn declarations() -> String {
    let names = type_names();
    let mut out = String::from("\n");
    for (event, name) in events().zip(&names) {
        let schema = event.schema();
        out.push_str(&doc(&event_doc(event), ""));
        match object_body(&schema, "") {
            Some(body) => out.push_str(&format!("export interface {name}Data {body}\n")),
            None => out.push_str(&format!("export type {name}Data = {};\n", data_type(&schema))),
        }
        out.push_str(&format!("/** A `{}` frame. */\n", event.name));
        out.push_str(&format!("export type {name}Event = NovaFrame<'{}', {name}Data>;\n\n", event.name));
    }
    out.push_str("/** Every event type of the catalog, with its frame. */\nexport interface EventMap {\n");
    for (event, name) in events().zip(&names) {
        out.push_str(&format!("  '{}': {name}Event;\n", event.name));
    }
    out.push_str("}\n\n/** What a client may send, with its `data`. */\nexport interface RequestMap {\n");
    for (event, name) in events().zip(&names) {
        if event.sent_by(Sender::Client) {
            out.push_str(&format!("  '{}': {name}Data;\n", event.name));
        }
    }
    out.push_str("}\n");
    out
}

/// `assistant.token` -> `AssistantToken`, one name per event. Two types
/// that would get the same name (`chat.message`, the legacy `chat_message`)
/// are told apart by the later one's family: `LegacyChatMessage`.
fn type_names() -> Vec<String> {
    let mut taken = HashSet::new();
    let mut names = Vec::new();
    for (family, list) in FAMILIES {
        for event in list.iter() {
            let mut name = pascal(event.name);
            if !taken.insert(name.clone()) {
                name = format!("{}{name}", pascal(family.split(' ').next().unwrap_or(family)));
                taken.insert(name.clone());
            }
            names.push(name);
        }
    }
    names
}

fn pascal(name: &str) -> String {
    name.split(['.', '_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

fn event_doc(event: &Event) -> String {
    let senders: Vec<&str> = event.senders.iter().map(|s| s.as_str()).collect();
    format!("`{}`: {} Sent by: {}.", event.name, event.summary, senders.join(", "))
}

/// A JSDoc comment at `indent`, or nothing for an empty text.
fn doc(text: &str, indent: &str) -> String {
    let text = text.trim().replace("*/", "*\\/");
    if text.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    if lines.len() == 1 {
        return format!("{indent}/** {} */\n", lines[0]);
    }
    let mut out = format!("{indent}/**\n");
    for line in lines {
        if line.is_empty() {
            out.push_str(&format!("{indent} *\n"));
        } else {
            out.push_str(&format!("{indent} * {line}\n"));
        }
    }
    out.push_str(&format!("{indent} */\n"));
    out
}

/// The TypeScript type of a schema.
fn data_type(schema: &Value) -> String {
    ts_type(schema, "")
}

fn ts_type(schema: &Value, indent: &str) -> String {
    let Some(map) = schema.as_object() else {
        return if schema == &Value::Bool(false) { "never".into() } else { "unknown".into() };
    };
    if let Some(constant) = map.get("const") {
        return literal(constant);
    }
    if let Some(options) = map.get("enum").and_then(Value::as_array) {
        return union(options.iter().map(literal));
    }
    if let Some(branches) = map.get("oneOf").or_else(|| map.get("anyOf")).and_then(Value::as_array) {
        return union(branches.iter().map(|b| ts_type(b, indent)));
    }
    match map.get("type") {
        Some(Value::String(kind)) => single(kind, map, indent),
        Some(Value::Array(kinds)) => union(kinds.iter().filter_map(Value::as_str).map(|k| single(k, map, indent))),
        _ if map.contains_key("properties") => single("object", map, indent),
        _ => "unknown".into(),
    }
}

fn single(kind: &str, map: &Map<String, Value>, indent: &str) -> String {
    match kind {
        "string" => "string".into(),
        "integer" | "number" => "number".into(),
        "boolean" => "boolean".into(),
        "null" => "null".into(),
        "array" => {
            let item = map.get("items").map_or_else(|| "unknown".to_owned(), |items| ts_type(items, indent));
            if item.contains([' ', '|', '&']) && !item.starts_with('{') {
                format!("Array<{item}>")
            } else {
                format!("{item}[]")
            }
        }
        "object" => object_body(&Value::Object(map.clone()), indent).unwrap_or_else(|| record(map, indent)),
        _ => "unknown".into(),
    }
}

/// `Record<string, T>` for an object without named properties.
fn record(map: &Map<String, Value>, indent: &str) -> String {
    match map.get("additionalProperties") {
        Some(Value::Object(values)) => format!("Record<string, {}>", ts_type(&Value::Object(values.clone()), indent)),
        Some(Value::Bool(false)) => "Record<string, never>".into(),
        _ => "Record<string, unknown>".into(),
    }
}

/// `{ name: type; optional?: type }` for an object schema with properties,
/// each with its description; `None` without properties.
fn object_body(schema: &Value, indent: &str) -> Option<String> {
    let properties = schema.get("properties").and_then(Value::as_object).filter(|p| !p.is_empty())?;
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let inner = format!("{indent}  ");
    let mut out = String::from("{\n");
    for (name, property) in properties {
        if let Some(text) = property.get("description").and_then(Value::as_str) {
            out.push_str(&doc(text, &inner));
        }
        let optional = if required.contains(&name.as_str()) { "" } else { "?" };
        out.push_str(&format!("{inner}{}{optional}: {};\n", key(name), ts_type(property, &inner)));
    }
    out.push_str(&format!("{indent}}}"));
    Some(out)
}

/// A property name, quoted unless it is an identifier.
fn key(name: &str) -> String {
    let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if identifier {
        name.to_owned()
    } else {
        Value::from(name).to_string()
    }
}

fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => other.to_string(),
    }
}

/// `a | b`, each member once, in first-seen order.
fn union(members: impl Iterator<Item = String>) -> String {
    let mut seen = Vec::new();
    for member in members {
        if !seen.contains(&member) {
            seen.push(member);
        }
    }
    if seen.is_empty() {
        "never".into()
    } else {
        seen.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn client_dts() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js/nova-realtime.d.ts")
    }

    #[test]
    fn nova_realtime_d_ts_is_up_to_date() {
        let path = client_dts();
        let text = std::fs::read_to_string(&path).unwrap();
        let (Some(start), Some(end)) = (text.find(TS_START), text.find(TS_END)) else {
            panic!("clients/js/nova-realtime.d.ts lacks the catalog markers");
        };
        let current = &text[start + TS_START.len()..end];
        let made = declarations();
        if std::env::var_os("NOVA_UPDATE_DOCS").is_some() && current != made {
            let updated = format!("{}{}{}", &text[..start + TS_START.len()], made, &text[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert!(
            current == made,
            "clients/js/nova-realtime.d.ts is stale: NOVA_UPDATE_DOCS=1 cargo test -p nova-actors --lib catalog"
        );
    }

    #[test]
    fn every_event_is_in_the_event_map_once_with_a_name_of_its_own() {
        let made = declarations();
        let names = type_names();
        assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len(), "{names:?}");
        for (event, name) in events().zip(&names) {
            assert!(made.contains(&format!("  '{}': {name}Event;\n", event.name)), "{}", event.name);
        }
        assert!(names.contains(&"LegacyChatMessage".to_owned()), "{names:?}");
        assert!(names.contains(&"ChatMessage".to_owned()), "{names:?}");
    }

    #[test]
    fn schemas_become_the_types_a_client_reads() {
        let made = declarations();
        // Required, optional and nullable fields.
        let token = made.split("export interface AssistantTokenData ").nth(1).unwrap();
        let token = &token[..token.find("\n}\n").unwrap()];
        assert!(token.contains("  stream_id: string;"), "{token}");
        assert!(token.contains("  chunk: string;"), "{token}");
        assert!(token.contains("  is_final?: boolean | null;"), "{token}");
        // Enums, documented enums (oneOf consts), unions and records.
        assert!(made.contains("  state: 'joined' | 'left';"), "channel.presence");
        assert!(made.contains("'queued' | 'running' | 'waiting' | 'completed' | 'failed' | 'cancelled'"));
        assert!(made.contains("  protocol?: number | number[] | null;"), "connection.init");
        assert!(made.contains("  options?: Record<string, unknown> | null;"), "agent.invoke");
        assert!(made.contains("export type ConnectionHeartbeatData = Record<string, unknown>;"));
        // Only what a client may send is a request.
        let requests = made.split("export interface RequestMap {").nth(1).unwrap();
        assert!(requests.contains("'chat.message': ChatMessageData;"));
        assert!(!requests.contains("'assistant.token'"));
    }

    #[test]
    fn names_and_literals_are_valid_typescript() {
        assert_eq!(pascal("tool.call.progress"), "ToolCallProgress");
        assert_eq!(pascal("agent_availability"), "AgentAvailability");
        assert_eq!(key("user_id"), "user_id");
        assert_eq!(key("content-type"), "\"content-type\"");
        assert_eq!(literal(&Value::from("it's")), "'it\\'s'");
        assert_eq!(doc("ends */ here", ""), "/** ends *\\/ here */\n");
    }
}
