//! `tool.call.*`: an agent calling a tool (an MCP server's, or one that asks
//! the user).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{event, from, Event};

/// `tool.call.start`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct StartData {
    /// The call's id: every later `tool.call.*` of it carries it.
    call_id: String,
    /// The tool.
    tool: String,
    /// Its arguments.
    #[serde(default)]
    arguments: Option<Value>,
    /// The answer that made the call.
    #[serde(default)]
    stream_id: Option<String>,
    /// Whether the tool waits for a `tool.call.response` from the user.
    #[serde(default)]
    interactive: Option<bool>,
    /// The agent that made the call (`configs/agents.yaml`): a
    /// `tool.call.response` with this `call_id` is routed to it.
    #[serde(default)]
    agent: Option<String>,
}

/// `tool.call.progress`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ProgressData {
    /// The call.
    call_id: String,
    /// How far, from 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    progress: f64,
    /// What it is doing, for a person.
    #[serde(default)]
    message: Option<String>,
}

/// `tool.call.complete`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct CompleteData {
    /// The call.
    call_id: String,
    /// What the tool returned.
    #[serde(default)]
    result: Option<Value>,
    /// How long it took.
    #[serde(default)]
    duration_ms: Option<u64>,
}

/// `tool.call.error`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ErrorData {
    /// The call.
    call_id: String,
    /// Why it failed, for a person.
    message: String,
    /// A machine-readable reason.
    #[serde(default)]
    code: Option<String>,
    /// Whether calling again may work.
    #[serde(default)]
    retryable: Option<bool>,
}

/// `tool.call.response`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ResponseData {
    /// The interactive call being answered.
    call_id: String,
    /// The user's answer.
    response: Value,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("tool.call.start", from::BACKEND, Delivered, Required, StartData,
        "A tool call begins.", {"call_id": "call-1", "tool": "web_search", "arguments": {"q": "Q3 plan"}, "stream_id": "s1"}),
    event!("tool.call.progress", from::BACKEND, Delivered, Required, ProgressData,
        "How far a tool call is (0–1).", {"call_id": "call-1", "progress": 0.4, "message": "3 of 8 pages read"}),
    event!("tool.call.complete", from::BACKEND, Delivered, Required, CompleteData,
        "A tool call returned.", {"call_id": "call-1", "result": {"hits": 8}, "duration_ms": 1840}),
    event!("tool.call.error", from::BACKEND, Delivered, Required, ErrorData,
        "A tool call failed.", {"call_id": "call-1", "message": "search backend unreachable", "retryable": true}),
    event!("tool.call.response", from::CLIENT, Agent, Required, ResponseData,
        "The user's answer to an interactive tool call.", {"call_id": "call-2", "response": {"approved": true}}),
];
