//! The event catalog: every event type of the application, typed once.
//!
//! Each family file (`connection`, `channel`, `chat`, `assistant`, `tool`,
//! `file`, `team`, `agent`, `settings`, `legacy`) declares the `data` of its
//! events as Rust types and lists its events with `event!`: the type name,
//! who may send it, what the server does with it from a client, the data
//! type and a one-line meaning, and an example. Everything else is made
//! from that list:
//!
//! - the JSON Schema of each event's `data` (schemars, draft-07, inlined),
//! - the validators the server runs on every client frame and every backend
//!   publish (the `jsonschema` crate, compiled once per process),
//! - `docs/asyncapi.yaml` and the catalog table in docs/protocol.md (see
//!   `docs.rs`; a test fails when either is out of date),
//! - the event types of the JavaScript client's TypeScript declarations,
//!   `clients/js/nova-realtime.d.ts` (see `typescript.rs`; the same).
//!
//! Validation runs once per inbound frame and once per published event,
//! never per recipient: what a channel fans out is already encoded bytes.
//!
//! `data` may carry fields the catalog does not name (they pass through):
//! the application adds fields faster than servers are redeployed.

mod agent;
mod assistant;
pub(crate) mod channel;
mod chat;
mod connection;
pub mod docs;
mod file;
mod legacy;
mod settings;
mod team;
mod tool;
pub mod typescript;

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

pub use agent::AgentState;
pub use connection::{InitData, RefreshData};
pub use team::{PresenceStatus, TeamPresenceUpdate, MAX_STATUS_TEXT};

/// Who sends an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// A browser or other WebSocket client, to the server.
    Client,
    /// A backend service, through the REST API or Redis, to clients.
    Backend,
    /// The server itself, to clients.
    Server,
}

impl Sender {
    /// How the documents name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Client => "client",
            Sender::Backend => "backend",
            Sender::Server => "server",
        }
    }
}

/// What the server does with an event a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// The server answers it itself (`connection.*`, `channel.*`,
    /// `team.presence.update`).
    Server,
    /// Relayed to the subscribers of its channel, the sender set by the
    /// server (`chat.message`, `chat.typing`).
    Relayed,
    /// Meant for an agent: validated, then handed to the agent gateway
    /// (`gateway/`), which delivers it to the agents configured for it.
    Agent,
    /// Not sent by clients: delivered to clients by a backend or the server.
    Delivered,
}

/// One event type of the catalog.
pub struct Event {
    /// The wire `type`.
    pub name: &'static str,
    /// Who may send it.
    pub senders: &'static [Sender],
    /// What the server does with it from a client.
    pub handling: Handling,
    /// Whether it is about one channel (`channel` set in the envelope).
    pub channel: ChannelUse,
    /// One line: what it means.
    pub summary: &'static str,
    /// The JSON Schema of its `data`.
    schema: fn(&mut SchemaGenerator) -> Schema,
    /// A valid `data`, for the documents and the tests.
    example: fn() -> Value,
}

/// Whether an event's envelope names a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelUse {
    /// Always (a client must send one).
    Required,
    /// Sometimes (a user send or a broadcast has none).
    Optional,
    /// Never.
    None,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Event {
    /// Whether `sender` may send it.
    pub fn sent_by(&self, sender: Sender) -> bool {
        self.senders.contains(&sender)
    }

    /// The JSON Schema of its `data`, as a value.
    pub fn schema(&self) -> Value {
        let mut generator = generator();
        (self.schema)(&mut generator).to_value()
    }

    /// A valid example of its `data`.
    pub fn example(&self) -> Value {
        (self.example)()
    }
}

/// Draft-07 with every subschema inlined: one self-contained schema per
/// event, as AsyncAPI's default schema format and the validator both read.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
}

/// Declares one catalog entry: `event!(name, senders, handling, channel,
/// DataType, "meaning", example)`.
macro_rules! event {
    ($name:literal, $senders:expr, $handling:ident, $channel:ident, $ty:ty, $summary:literal, $example:tt) => {
        $crate::catalog::Event {
            name: $name,
            senders: $senders,
            handling: $crate::catalog::Handling::$handling,
            channel: $crate::catalog::ChannelUse::$channel,
            summary: $summary,
            schema: $crate::catalog::schema_of::<$ty>,
            example: || serde_json::json!($example),
        }
    };
}
pub(crate) use event;

/// The schema of `T`, for [`Event::schema`].
pub(crate) fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// Sender lists, named once.
pub(crate) mod from {
    use super::Sender::{self, Backend, Client, Server};
    /// A client only.
    pub const CLIENT: &[Sender] = &[Client];
    /// A backend only.
    pub const BACKEND: &[Sender] = &[Backend];
    /// The server only.
    pub const SERVER: &[Sender] = &[Server];
    /// The server or a backend.
    pub const SERVER_OR_BACKEND: &[Sender] = &[Server, Backend];
    /// A client (to the server), the server (answers and relays).
    pub const CLIENT_AND_SERVER: &[Sender] = &[Client, Server];
    /// Anyone: a client (relayed by the server) or a backend.
    pub const ANYONE: &[Sender] = &[Client, Server, Backend];
}

/// Every family with its events, in the documents' order.
pub const FAMILIES: &[(&str, &[Event])] = &[
    ("connection", connection::EVENTS),
    ("channel", channel::EVENTS),
    ("chat", chat::EVENTS),
    ("assistant", assistant::EVENTS),
    ("tool", tool::EVENTS),
    ("file", file::EVENTS),
    ("team", team::EVENTS),
    ("agent", agent::EVENTS),
    ("settings", settings::EVENTS),
    ("legacy (seed 000)", legacy::EVENTS),
];

/// Every event of the catalog, in the documents' order.
pub fn events() -> impl Iterator<Item = &'static Event> {
    FAMILIES.iter().flat_map(|(_, family)| family.iter())
}

/// The type families metrics count by: the catalog's families in
/// [`FAMILIES`]' order, then `error` and `other` (a type outside the
/// catalog; publishers may send any). A fixed list, so a publisher
/// inventing types cannot grow the label set.
pub const FAMILY_LABELS: [&str; 12] = [
    "connection",
    "channel",
    "chat",
    "assistant",
    "tool",
    "file",
    "team",
    "agent",
    "settings",
    "legacy",
    "error",
    "other",
];

/// The index into [`FAMILY_LABELS`] of the family of `kind`.
pub fn family_of(kind: &str) -> u8 {
    static BY_TYPE: OnceLock<HashMap<&'static str, u8>> = OnceLock::new();
    let by_type = BY_TYPE.get_or_init(|| {
        let mut map = HashMap::new();
        for (i, (_, family)) in FAMILIES.iter().enumerate() {
            for event in family.iter() {
                map.insert(event.name, i as u8);
            }
        }
        map.insert(crate::protocol::kind::ERROR, 10);
        map
    });
    by_type.get(kind).copied().unwrap_or(11)
}

/// An event of the catalog by its type.
pub fn find(name: &str) -> Option<&'static Event> {
    index().get(name).map(|entry| entry.event)
}

struct Compiled {
    event: &'static Event,
    validator: jsonschema::Validator,
    /// The schema, to name a missing field's type.
    schema: Value,
}

fn index() -> &'static HashMap<&'static str, Compiled> {
    static INDEX: OnceLock<HashMap<&'static str, Compiled>> = OnceLock::new();
    INDEX.get_or_init(|| {
        events()
            .filter_map(|event| {
                let schema = event.schema();
                match jsonschema::draft7::new(&schema) {
                    Ok(validator) => Some((event.name, Compiled { event, validator, schema })),
                    // The catalog's own tests compile every schema; this
                    // cannot happen in a build that passed them.
                    Err(e) => {
                        log::error!("the schema of '{}' does not compile: {e}", event.name);
                        None
                    }
                }
            })
            .collect()
    })
}

/// Compiles every validator now, so the first frame of a kind does not pay
/// for it on an actor thread.
pub fn init() {
    let _ = index();
}

/// One rule a `data` broke.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Violation {
    /// Where: `data`, `data.stream_id`, `data.items.0.name`.
    pub field: String,
    /// What: `required string`, `must be a number`, `at most 140 characters`.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The type is in the catalog, but not for this sender.
    #[error("'{kind}' is sent by {allowed}, not by a {sender}")]
    NotFrom {
        /// The type.
        kind: &'static str,
        /// Who tried.
        sender: &'static str,
        /// Who may.
        allowed: String,
    },
    /// A published type outside the catalog, refused because
    /// `NOVA_STRICT_EVENTS` is on.
    #[error("'{0}' is not in the event catalog, and NOVA_STRICT_EVENTS is on")]
    Unknown(String),
    /// `data` does not match the type's schema.
    #[error("invalid '{kind}': {}", join(.violations))]
    Invalid {
        /// The type.
        kind: &'static str,
        /// What was wrong, at most [`MAX_VIOLATIONS`].
        violations: Vec<Violation>,
    },
}

fn join(violations: &[Violation]) -> String {
    violations.iter().map(Violation::to_string).collect::<Vec<_>>().join("; ")
}

/// At most this many violations are reported for one event.
pub const MAX_VIOLATIONS: usize = 10;

/// Checks an event from `sender` against the catalog: `Ok(Some(event))`
/// when it is a catalog type `sender` may send with valid `data`, `Ok(None)`
/// when the type is not in the catalog (the caller decides).
pub fn check(kind: &str, sender: Sender, data: &Value) -> Result<Option<&'static Event>, Refusal> {
    let Some(entry) = index().get(kind) else { return Ok(None) };
    let event = entry.event;
    if !event.sent_by(sender) {
        let allowed = event.senders.iter().map(|s| format!("a {}", s.as_str())).collect::<Vec<_>>().join(" or ");
        return Err(Refusal::NotFrom { kind: event.name, sender: sender.as_str(), allowed });
    }
    // `validate` stops at the first error; `iter_errors` collects every
    // one before handing out the first, which on a list of a hundred
    // thousand wrong items costs a hundred thousand errors. So only a small
    // `data` is told all it got wrong.
    let first = match entry.validator.validate(data) {
        Ok(()) => return Ok(Some(event)),
        Err(error) => violation(&error, &entry.schema),
    };
    let violations = if fewer_nodes_than(data, SMALL_DATA_NODES) {
        entry.validator.iter_errors(data).take(MAX_VIOLATIONS).map(|e| violation(&e, &entry.schema)).collect()
    } else {
        vec![first]
    };
    Err(Refusal::Invalid { kind: event.name, violations })
}

/// Up to this many values in `data`, a refusal names every field at fault
/// (at most [`MAX_VIOLATIONS`]); beyond, the first only.
const SMALL_DATA_NODES: usize = 256;

/// Whether `value` holds fewer than `budget` values, counted without
/// walking more than that.
fn fewer_nodes_than(value: &Value, budget: usize) -> bool {
    fn walk(value: &Value, left: &mut usize) -> bool {
        if *left == 0 {
            return false;
        }
        *left -= 1;
        match value {
            Value::Array(items) => items.iter().all(|v| walk(v, left)),
            Value::Object(map) => map.values().all(|v| walk(v, left)),
            _ => true,
        }
    }
    let mut left = budget;
    walk(value, &mut left)
}

/// Checks an event a backend publishes (REST, or Redis from outside): a
/// catalog type must be one backends send, with valid `data`; another type
/// passes unless `strict` (`NOVA_STRICT_EVENTS`), because the application
/// adds events faster than servers are redeployed.
pub fn check_published(kind: &str, data: &Value, strict: bool) -> Result<(), Refusal> {
    match check(kind, Sender::Backend, data)? {
        None if strict => Err(Refusal::Unknown(kind.chars().take(64).collect())),
        _ => Ok(()),
    }
}

/// Turns a validator error into `field: rule`, in the words a client
/// developer reads: `data.stream_id: required string`.
fn violation(error: &jsonschema::ValidationError<'_>, schema: &Value) -> Violation {
    use jsonschema::error::ValidationErrorKind as Kind;
    let pointer = error.instance_path().to_string();
    let mut field = String::from("data");
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        field.push('.');
        field.push_str(&segment.replace("~1", "/").replace("~0", "~"));
    }
    let rule = match error.kind() {
        Kind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let kind = property_type(schema, &pointer, name);
            field.push('.');
            field.push_str(name);
            match kind {
                Some(kind) => format!("required {kind}"),
                None => "required".to_owned(),
            }
        }
        Kind::Type { .. } => match subschema(schema, &pointer).and_then(type_name) {
            Some(kind) => format!("must be {}", with_article(&kind)),
            None => error.to_string(),
        },
        Kind::Minimum { limit } => format!("must be at least {limit}"),
        Kind::Maximum { limit } => format!("must be at most {limit}"),
        Kind::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        Kind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        Kind::MaxLength { limit } => format!("at most {limit} characters"),
        Kind::MinLength { limit } => format!("at least {limit} characters"),
        Kind::MaxItems { limit } => format!("at most {limit} items"),
        Kind::MinItems { limit } => format!("at least {limit} items"),
        Kind::Enum { options } => {
            let options: Vec<String> = match &**options {
                Value::Array(items) => items.iter().filter(|v| !v.is_null()).map(Value::to_string).collect(),
                other => vec![other.to_string()],
            };
            format!("must be one of {}", options.join(", "))
        }
        Kind::Constant { expected_value } => format!("must be {expected_value}"),
        // Enums whose variants are documented are `oneOf` a list of consts.
        Kind::OneOfNotValid { .. } | Kind::AnyOf { .. } => match subschema(schema, &pointer).and_then(type_name) {
            Some(kind) => format!("must be {}", with_article(&kind)),
            None => error.to_string(),
        },
        _ => error.to_string(),
    };
    Violation { field, rule }
}

/// The subschema describing the value at `pointer` (object properties and
/// array items only, which is all the catalog's schemas use).
fn subschema<'a>(schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut at = schema;
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        at = match (at.get("properties").and_then(|p| p.get(segment)), at.get("items")) {
            (Some(property), _) => property,
            (None, Some(items)) if segment.parse::<usize>().is_ok() => items,
            _ => at.get("additionalProperties")?,
        };
    }
    Some(at)
}

fn property_type(schema: &Value, pointer: &str, name: &str) -> Option<String> {
    subschema(schema, pointer)?.get("properties")?.get(name).and_then(type_name)
}

/// `string`, `integer`, `string or null`, `one of "a", "b"`.
fn type_name(schema: &Value) -> Option<String> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let shown: Vec<String> = options.iter().filter(|v| !v.is_null()).map(Value::to_string).collect();
        return Some(format!("one of {}", shown.join(", ")));
    }
    if let Some(branches) = schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Value::as_array) {
        let consts: Option<Vec<String>> = branches
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
            .map(|b| b.get("const").or_else(|| b.get("enum").and_then(|e| e.get(0))).map(Value::to_string))
            .collect();
        if let Some(consts) = consts {
            return Some(format!("one of {}", consts.join(", ")));
        }
        let kinds: Vec<String> = branches.iter().filter_map(type_name).filter(|k| k != "null").collect();
        return (!kinds.is_empty()).then(|| kinds.join(" or "));
    }
    match schema.get("type")? {
        Value::String(kind) => Some(kind.clone()),
        Value::Array(kinds) => {
            let kinds: Vec<&str> = kinds.iter().filter_map(Value::as_str).filter(|k| *k != "null").collect();
            Some(kinds.join(" or "))
        }
        _ => None,
    }
}

fn with_article(kind: &str) -> String {
    if kind.starts_with("one of") {
        return kind.to_owned();
    }
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families_follow_the_catalog_and_bound_the_labels() {
        assert_eq!(FAMILIES.len() + 2, FAMILY_LABELS.len());
        for (i, (name, _)) in FAMILIES.iter().enumerate() {
            assert!(name.starts_with(FAMILY_LABELS[i]), "{name} is labelled {}", FAMILY_LABELS[i]);
        }
        assert_eq!(FAMILY_LABELS[family_of("assistant.token") as usize], "assistant");
        assert_eq!(FAMILY_LABELS[family_of("chat.message") as usize], "chat");
        assert_eq!(FAMILY_LABELS[family_of("error") as usize], "error");
        assert_eq!(FAMILY_LABELS[family_of("my_app.thing") as usize], "other");
    }

    #[test]
    fn names_are_unique_and_every_schema_compiles() {
        let mut seen = std::collections::HashSet::new();
        for event in events() {
            assert!(seen.insert(event.name), "{} listed twice", event.name);
            assert!(find(event.name).is_some(), "{}'s schema does not compile", event.name);
        }
        assert!(seen.len() >= 45, "{} events", seen.len());
    }

    #[test]
    fn every_example_is_valid_for_each_of_its_senders() {
        for event in events() {
            for &sender in event.senders {
                let checked = check(event.name, sender, &event.example());
                assert!(matches!(checked, Ok(Some(_))), "{} from {sender:?}: {checked:?}", event.name);
            }
        }
    }

    #[test]
    fn a_missing_field_is_named_with_its_type() {
        let err = check("assistant.token", Sender::Backend, &json!({"chunk": "Hel"})).unwrap_err();
        let Refusal::Invalid { violations, .. } = &err else { panic!("{err:?}") };
        assert_eq!(violations[0].to_string(), "data.stream_id: required string");
        assert_eq!(err.to_string(), "invalid 'assistant.token': data.stream_id: required string");
    }

    #[test]
    fn wrong_types_ranges_and_enums_are_named() {
        let err = check("tool.call.progress", Sender::Backend, &json!({"call_id": "c", "progress": 1.5}));
        assert_eq!(err.unwrap_err().to_string(), "invalid 'tool.call.progress': data.progress: must be at most 1.0");
        let err = check("assistant.token", Sender::Backend, &json!({"stream_id": 7, "chunk": "x"}));
        assert_eq!(err.unwrap_err().to_string(), "invalid 'assistant.token': data.stream_id: must be a string");
        let err = check("agent.status", Sender::Backend, &json!({"invocation_id": "i", "state": "dancing"}));
        assert!(err.unwrap_err().to_string().contains("data.state: must be one of \"queued\""));
    }

    #[test]
    fn senders_are_enforced() {
        let err = check("assistant.token", Sender::Client, &json!({"stream_id": "s", "chunk": "x"})).unwrap_err();
        assert!(matches!(err, Refusal::NotFrom { .. }), "{err:?}");
        assert!(err.to_string().contains("a backend"), "{err}");
        assert!(matches!(check("connection.ack", Sender::Backend, &json!({})), Err(Refusal::NotFrom { .. })));
    }

    #[test]
    fn types_outside_the_catalog_are_left_to_the_caller() {
        assert!(matches!(check("my_app.thing", Sender::Backend, &json!({"x": 1})), Ok(None)));
    }

    #[test]
    fn a_huge_invalid_data_costs_one_error_not_one_per_item() {
        let data = json!({"channels": vec![0; 200_000]});
        let err = check("channel.subscribe", Sender::Client, &data).unwrap_err();
        let Refusal::Invalid { violations, .. } = err else { panic!("{err:?}") };
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "data.channels.0", "the first only, not ten of 200,000");
        let small = check("assistant.token", Sender::Backend, &json!({"index": "x"})).unwrap_err();
        let Refusal::Invalid { violations, .. } = small else { panic!() };
        assert_eq!(violations.len(), 3, "a small data is told everything: {violations:?}");
    }

    #[test]
    fn extra_fields_pass() {
        let data = json!({"stream_id": "s", "chunk": "x", "model": "m"});
        assert!(check("assistant.token", Sender::Backend, &data).is_ok());
    }
}
