//! The settings page's events (seed 002), on `system:settings`: what the
//! server says when `configs/mcp_servers.yaml` or the prompt changes, and
//! the task and health events backends add. docs/settings.md explains them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{event, from, Event};

/// `config_validated`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ValidatedData {
    /// The file (`mcp_servers.yaml` or `agents.yaml`).
    file: String,
    /// Whether it is in force.
    valid: bool,
    /// `mcp_servers.yaml`: servers in the config in force.
    #[serde(default)]
    servers: Option<u64>,
    /// `agents.yaml`: agents in the config in force.
    #[serde(default)]
    agents: Option<u64>,
    /// When valid: what changed.
    #[serde(default)]
    changes: Option<Vec<Change>>,
    /// When invalid: what is wrong.
    #[serde(default)]
    errors: Option<Vec<ConfigError>>,
}

/// One server (or agent) that changed.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Change {
    /// The server's name; in `agents.yaml`, the agent's.
    server: String,
    change: ChangeKind,
    fields: Vec<String>,
}

/// How it changed.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ChangeKind {
    Added,
    Removed,
    Modified,
}

/// One problem in the file.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ConfigError {
    server: Option<String>,
    field: Option<String>,
    line: Option<u64>,
    message: String,
}

/// `mcp_toggled`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ToggledData {
    /// The server.
    name: String,
    /// Its new `enabled`.
    enabled: bool,
}

/// `agent_availability`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct AgentStatusData {
    /// The agent (`configs/agents.yaml`).
    name: String,
    /// Whether requests for it are accepted now.
    status: Availability,
    /// What it was before.
    previous: Previous,
    /// Why, for a person: what showed it alive, or what is missing.
    reason: String,
    /// When this node saw the change, RFC 3339.
    #[serde(default)]
    checked_at: Option<String>,
}

/// An agent's availability.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Availability {
    Available,
    Unavailable,
}

/// An agent's availability before a change.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Previous {
    Available,
    Unavailable,
    Unknown,
}

/// `prompt_updated`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct PromptData {
    /// The prompt file.
    file: String,
    /// `sha256:<hex>` of the text.
    hash: String,
    /// +1 per change since the server started.
    version: u64,
    /// The text's size.
    bytes: u64,
    /// The text, unless over the inline limit.
    content: Option<String>,
    /// Whether `content` was left out for size.
    truncated: bool,
    /// When truncated: the beginning.
    #[serde(default)]
    preview: Option<String>,
}

/// `system_health`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct HealthData {
    /// The MCP server or service.
    name: String,
    /// Its status now.
    status: Status,
    /// Its status before.
    #[serde(default)]
    previous: Option<Status>,
    /// How long the check took.
    #[serde(default)]
    latency_ms: Option<u64>,
    /// Why it is down.
    #[serde(default)]
    error: Option<String>,
    /// When it was checked, RFC 3339.
    #[serde(default)]
    checked_at: Option<String>,
}

/// A health status.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Status {
    Up,
    Down,
    Unknown,
}

/// `task_updated`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct TaskData {
    /// The task.
    task_id: String,
    /// Its status now (`todo`, `in_progress`, `done`, …; the task board's).
    status: String,
    /// Its title, when it changed.
    #[serde(default)]
    title: Option<String>,
    /// Who it is assigned to.
    #[serde(default)]
    assignee: Option<String>,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("config_validated", from::SERVER, Delivered, Required, ValidatedData,
        "mcp_servers.yaml or agents.yaml was reloaded: valid with its changes, or invalid with its errors (the last good one stays).",
        {"file": "mcp_servers.yaml", "valid": true, "servers": 2, "changes": [{"server": "search", "change": "modified", "fields": ["url"]}]}),
    event!("mcp_toggled", from::SERVER, Delivered, Required, ToggledData,
        "An MCP server was enabled or disabled.", {"name": "search", "enabled": false}),
    event!("agent_toggled", from::SERVER, Delivered, Required, ToggledData,
        "An agent of agents.yaml was enabled or disabled.", {"name": "researcher", "enabled": false}),
    event!("agent_availability", from::SERVER, Delivered, Required, AgentStatusData,
        "An agent became available or unavailable to the gateway (each node tells its own clients).",
        {"name": "chat", "status": "available", "previous": "unavailable", "reason": "a consumer read its stream 120 ms ago",
         "checked_at": "2026-12-06T09:00:00.000Z"}),
    event!("prompt_updated", from::SERVER, Delivered, Required, PromptData,
        "The system prompt changed.",
        {"file": "NOVA_SYSTEM_PROMPT.md", "hash": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
         "version": 3, "bytes": 3, "content": "foo", "truncated": false}),
    event!("system_health", from::SERVER_OR_BACKEND, Delivered, Required, HealthData,
        "A server's or service's health changed.",
        {"name": "search", "status": "down", "previous": "up", "error": "connection refused", "checked_at": "2026-12-06T09:00:00.000Z"}),
    event!("task_updated", from::BACKEND, Delivered, Required, TaskData,
        "A task on the task board changed.", {"task_id": "t-7", "status": "done"}),
];
