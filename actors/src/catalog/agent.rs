//! `agent.*`: invoking an agent directly and following its run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{event, from, Event};

/// Where an invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Accepted, not started.
    Queued,
    /// Working.
    Running,
    /// Waiting for a tool or the user.
    Waiting,
    /// Done (an `agent.complete` follows or came).
    Completed,
    /// Gave up.
    Failed,
    /// Stopped on request.
    Cancelled,
}

/// `agent.invoke`, on channel `agent:{name}`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct InvokeData {
    /// What the agent is asked to do.
    input: Value,
    /// The client's id for the run, echoed in `agent.status`.
    #[serde(default)]
    invocation_id: Option<String>,
    /// Options the agent understands.
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

/// `agent.status`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct StatusData {
    /// The run.
    invocation_id: String,
    /// Where it is.
    state: AgentState,
    /// What it is doing, for a person.
    #[serde(default)]
    message: Option<String>,
    /// How far, from 0 to 1, when known.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    progress: Option<f64>,
}

/// `agent.output`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct OutputData {
    /// The run.
    invocation_id: String,
    /// An intermediate result.
    output: Value,
    /// Its position (0, 1, 2, …).
    #[serde(default)]
    sequence: Option<u64>,
}

/// `agent.complete`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct CompleteData {
    /// The run.
    invocation_id: String,
    /// Its final result (absent when it failed).
    #[serde(default)]
    result: Option<Value>,
    /// Why it failed.
    #[serde(default)]
    error: Option<String>,
    /// How long it ran.
    #[serde(default)]
    duration_ms: Option<u64>,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("agent.invoke", from::CLIENT, Agent, Required, InvokeData,
        "Run an agent directly (channel agent:{name}).",
        {"input": {"task": "summarise the Q3 plan"}, "invocation_id": "inv-1"}),
    event!("agent.status", from::BACKEND, Delivered, Required, StatusData,
        "Where an agent run is.", {"invocation_id": "inv-1", "state": "running", "message": "reading 8 documents"}),
    event!("agent.output", from::BACKEND, Delivered, Required, OutputData,
        "An intermediate output of a run.", {"invocation_id": "inv-1", "output": {"draft": "…"}, "sequence": 0}),
    event!("agent.complete", from::BACKEND, Delivered, Required, CompleteData,
        "A run finished.", {"invocation_id": "inv-1", "result": {"summary": "…"}, "duration_ms": 5210}),
];
