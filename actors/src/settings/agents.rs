//! The agents the gateway delivers to, `configs/agents.yaml`: parsing,
//! validation, diffing and the `enabled` toggle.
//!
//! The file maps an agent's name to how it is reached:
//!
//! ```yaml
//! chat:
//!   description: Nova chat agent
//!   receives: [chat.message, chat.regenerate, chat.configure, tool.call.response]
//!   delivery: stream            # a Redis stream, {prefix}inbound:chat
//! researcher:
//!   receives: [agent.invoke]
//!   delivery: webhook           # an HTTP POST of each record
//!   url: http://127.0.0.1:8003/nova/events
//!   secret: change-me           # signs the body (X-Nova-Signature)
//!   health_url: http://127.0.0.1:8003/health
//!   queue: 1000
//!   enabled: true
//! ```
//!
//! It is read with the MCP file's machinery (`mcp/`): the same size and
//! nesting pre-scan, the same tree that keeps duplicates, errors with the
//! line they are on, and the same one-line edit of `enabled`. Like the MCP
//! file, everything here is pure: the watcher reads the file off the actor
//! threads and the gateway uses what this returns. docs/gateway.md is the
//! contract.

use serde::Serialize;

use super::mcp::tree::Node;
use super::mcp::validate::{check_entry, optional_bool, optional_string, required, url_value, Site};
use super::mcp::{diff_entries, parse_entries, quote, set_entry_enabled, Change, ConfigError};
use crate::catalog::{self, Handling};
use crate::protocol::kind;

/// The fields an agent may have, in the order errors and diffs list them.
const FIELDS: &[&str] = &["description", "receives", "delivery", "url", "secret", "health_url", "queue", "enabled"];

/// Records a webhook agent's queue holds at most, whatever the file says.
pub const MAX_QUEUE: usize = 1_000_000;

/// How an agent receives its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", tag = "delivery")]
pub enum Delivery {
    /// `XADD` to the Redis stream `{prefix}inbound:{name}`; needs Redis.
    Stream,
    /// An HTTP `POST` of each record.
    Webhook {
        /// Where records are posted.
        url: String,
        /// Polled for availability, when given.
        health_url: Option<String>,
        /// Signs each body (`X-Nova-Signature`); never shown by the API.
        #[serde(skip)]
        secret: Option<String>,
        /// Records queued at most; `None`: the server's default.
        queue: Option<usize>,
    },
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Agent {
    /// The key it is listed under: 1–64 characters of `A–Z a–z 0–9 _ - .`.
    pub name: String,
    /// What it does, for people.
    pub description: String,
    /// The client event types it is sent.
    pub receives: Vec<String>,
    /// How it is reached.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Whether it gets anything; `true` when the file does not say.
    pub enabled: bool,
}

impl Agent {
    /// Whether it takes records of type `kind`.
    pub fn receives(&self, kind: &str) -> bool {
        self.receives.iter().any(|k| k == kind)
    }

    /// A webhook agent's `health_url`.
    pub fn health_url(&self) -> Option<&str> {
        match &self.delivery {
            Delivery::Webhook { health_url, .. } => health_url.as_deref(),
            Delivery::Stream => None,
        }
    }
}

/// The whole file, agents in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentsConfig {
    /// The agents; names are unique.
    pub agents: Vec<Agent>,
}

impl AgentsConfig {
    /// The agent listed under `name`.
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|agent| agent.name == name)
    }
}

/// The event types an agent may receive: those the catalog says are for
/// agents, and `chat.message`, which is also relayed to its channel.
pub fn receivable() -> Vec<&'static str> {
    catalog::events()
        .filter(|e| e.handling == Handling::Agent || e.name == kind::CHAT_MESSAGE)
        .map(|e| e.name)
        .collect()
}

/// Parses and validates, reporting every problem found (as the MCP file's
/// [`parse`](super::mcp::parse) does). Up to a megabyte of work: call it off
/// event loops.
pub fn parse(text: &str) -> Result<AgentsConfig, Vec<ConfigError>> {
    let allowed = receivable();
    parse_entries(text, "agent", |site, key, value, errors| check_agent(site, key, value, &allowed, errors))
        .map(|agents| AgentsConfig { agents })
}

/// The fields found so far in one agent.
#[derive(Default)]
struct Fields {
    description: Option<String>,
    receives: Option<Vec<String>>,
    delivery: Option<String>,
    url: Option<String>,
    secret: Option<String>,
    health_url: Option<String>,
    queue: Option<usize>,
    enabled: Option<bool>,
}

fn check_agent(site: &Site, key: &Node, value: Node, allowed: &[&str], errors: &mut Vec<ConfigError>) -> Option<Agent> {
    let mut fields = Fields::default();
    let seen = check_entry(site, key, value, "agent", errors, |key, field, value| {
        take_field(&mut fields, key, field, value, allowed)
    })?;
    let delivery = required(site, fields.delivery, seen.contains_key("delivery"), "delivery", errors)?;
    let delivery = match delivery.as_str() {
        "stream" => {
            for field in ["url", "secret", "health_url", "queue"] {
                if seen.contains_key(field) {
                    errors.push(site.error(Some((field, 0)), format!("{} is for webhook delivery", quote(field))));
                }
            }
            Delivery::Stream
        }
        _ => {
            let url = required(site, fields.url, seen.contains_key("url"), "url", errors)?;
            Delivery::Webhook { url, health_url: fields.health_url, secret: fields.secret, queue: fields.queue }
        }
    };
    Some(Agent {
        name: key.key_text(),
        description: fields.description.unwrap_or_default(),
        receives: fields.receives.unwrap_or_default(),
        delivery,
        enabled: fields.enabled.unwrap_or(true),
    })
}

/// Checks one field and stores it; a bad value is not stored.
fn take_field(fields: &mut Fields, key: &Node, field: &str, value: Node, allowed: &[&str]) -> Result<(), String> {
    if !matches!(key, Node::Str(_)) || !FIELDS.contains(&field) {
        return Err(format!("unknown field (known: {})", FIELDS.join(", ")));
    }
    match field {
        "description" => fields.description = optional_string(value)?,
        "receives" => fields.receives = Some(receives(value, allowed)?),
        "delivery" => match value {
            Node::Str(d) if d == "stream" || d == "webhook" => fields.delivery = Some(d),
            other => return Err(format!("expected stream or webhook, found {}", other.describe())),
        },
        "url" => fields.url = Some(url_value(value)?),
        "health_url" => fields.health_url = Some(url_value(value)?),
        "secret" => match value {
            Node::Str(s) if !s.is_empty() => fields.secret = Some(s),
            other => return Err(format!("expected a non-empty string, found {}", other.describe())),
        },
        "queue" => match value {
            Node::Number(n) => match n.parse::<usize>() {
                Ok(q) if (1..=MAX_QUEUE).contains(&q) => fields.queue = Some(q),
                _ => return Err(format!("expected a whole number from 1 to {MAX_QUEUE}, found {}", quote(&n))),
            },
            other => return Err(format!("expected a whole number, found {}", other.describe())),
        },
        _ => fields.enabled = optional_bool(value)?,
    }
    Ok(())
}

/// `receives`: a list of event types an agent may take, without repeats.
fn receives(value: Node, allowed: &[&str]) -> Result<Vec<String>, String> {
    let items = match value {
        Node::Seq(items) => items,
        Node::Null => return Ok(Vec::new()),
        other => return Err(format!("expected a list of event types, found {}", other.describe())),
    };
    let mut kinds: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let kind = match item {
            Node::Str(kind) => kind,
            other => return Err(format!("expected event types, found {}", other.describe())),
        };
        if !allowed.contains(&kind.as_str()) {
            return Err(format!(
                "{} is not an event clients send for agents (one of: {})",
                quote(&kind),
                allowed.join(", ")
            ));
        }
        if kinds.contains(&kind) {
            return Err(format!("{} is listed twice", quote(&kind)));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// What changed between two valid configs, for `config_validated`: the
/// MCP file's [`Change`] shape, `server` naming the agent.
pub fn diff(old: &AgentsConfig, new: &AgentsConfig) -> Vec<Change> {
    diff_entries(&old.agents, &new.agents, |agent| &agent.name, changed_fields)
}

fn changed_fields(old: &Agent, new: &Agent) -> Vec<String> {
    let mut fields = Vec::new();
    if old.description != new.description {
        fields.push("description");
    }
    if old.receives != new.receives {
        fields.push("receives");
    }
    if old.delivery != new.delivery {
        fields.push("delivery");
    }
    if old.enabled != new.enabled {
        fields.push("enabled");
    }
    fields.into_iter().map(str::to_owned).collect()
}

/// Flips one agent's `enabled` by editing that one line, as
/// [`set_enabled`](super::mcp::set_enabled) does for an MCP server.
pub fn set_enabled(text: &str, name: &str, enabled: bool) -> Result<String, ConfigError> {
    set_entry_enabled(text, name, enabled, parse, |config: &mut AgentsConfig, name| {
        config.agents.iter_mut().find(|agent| agent.name == name).map(|agent| &mut agent.enabled)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# the agents
chat:
  description: Nova chat agent
  receives: [chat.message, chat.regenerate, chat.configure, tool.call.response]
  delivery: stream
researcher:
  receives:
    - agent.invoke
  delivery: webhook
  url: http://127.0.0.1:8003/nova/events
  secret: s3cret
  queue: 10
  enabled: false   # not yet
";

    fn errors(text: &str) -> Vec<ConfigError> {
        parse(text).expect_err("expected errors")
    }

    #[test]
    fn parses_the_example() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.agents.len(), 2);
        let chat = config.get("chat").unwrap();
        assert_eq!(chat.delivery, Delivery::Stream);
        assert!(chat.receives("chat.message") && chat.receives("tool.call.response") && chat.enabled);
        let researcher = config.get("researcher").unwrap();
        assert_eq!(
            researcher.delivery,
            Delivery::Webhook {
                url: "http://127.0.0.1:8003/nova/events".into(),
                health_url: None,
                secret: Some("s3cret".into()),
                queue: Some(10),
            }
        );
        assert!(!researcher.enabled);
        assert_eq!(researcher.receives, ["agent.invoke"]);
    }

    #[test]
    fn the_secret_is_never_serialized() {
        let config = parse(EXAMPLE).unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("\"delivery\":\"webhook\""), "{json}");
    }

    #[test]
    fn problems_name_agent_field_and_line() {
        let all = errors("chat:\n  receives: [chat.typing]\n  delivery: carrier-pigeon\nweb:\n  delivery: webhook\n");
        let at: Vec<_> = all.iter().map(|e| (e.server.as_deref(), e.field.as_deref(), e.line)).collect();
        assert!(at.contains(&(Some("chat"), Some("receives"), Some(2))), "{all:#?}");
        assert!(at.contains(&(Some("chat"), Some("delivery"), Some(3))), "{all:#?}");
        assert!(at.contains(&(Some("web"), Some("url"), Some(4))), "{all:#?}");
        assert!(all[0].message.contains("chat.message"), "lists what is allowed: {}", all[0].message);
    }

    #[test]
    fn webhook_fields_on_a_stream_agent_are_refused() {
        let all = errors("chat:\n  delivery: stream\n  url: http://a/\n");
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(all[0].field.as_deref(), Some("url"));
        assert!(errors("a:\n  delivery: webhook\n  url: http://a/\n  queue: 0\n")[0].message.contains("1 to"));
        assert!(errors("a:\n  delivery: stream\n  receives: [agent.invoke, agent.invoke]\n")[0]
            .message
            .contains("twice"));
        assert!(errors("a b:\n  delivery: stream\n")[0].message.contains("agent name"));
        assert!(errors("a:\n  delivery: stream\na:\n  delivery: stream\n")
            .iter()
            .any(|e| e.message.contains("duplicate")));
    }

    #[test]
    fn empty_files_have_no_agents() {
        assert_eq!(parse("# none yet\n").unwrap(), AgentsConfig::default());
    }

    #[test]
    fn the_toggle_edits_one_line_and_diff_sees_it() {
        let off = set_enabled(EXAMPLE, "chat", false).unwrap();
        assert_eq!(off.lines().count(), EXAMPLE.lines().count() + 1, "an enabled line is added:\n{off}");
        assert!(off.contains("# the agents") && off.contains("# not yet"));
        let on = set_enabled(EXAMPLE, "researcher", true).unwrap();
        assert!(on.contains("  enabled: true   # not yet"), "{on}");
        let changes = diff(&parse(EXAMPLE).unwrap(), &parse(&on).unwrap());
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].server.as_str(), changes[0].fields.as_slice()),
            ("researcher", &["enabled".to_string()][..])
        );
        assert!(set_enabled(EXAMPLE, "nobody", true).is_err());
    }
}
