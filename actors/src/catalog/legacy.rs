//! The earlier frontend's event names (seed 000), still published by parts
//! of the backend: their fields as that frontend's Zod schemas have them,
//! and, where it said nothing, what its components read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{event, from, Event};

/// `chat_message`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ChatMessageData {
    content: String,
    thread_id: String,
    sender_id: String,
}

/// `task_update`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct TaskUpdateData {
    /// The task.
    task_id: String,
    /// Its status now.
    #[serde(default)]
    status: Option<String>,
}

/// `agent_status`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct AgentStatusData {
    /// The agent.
    agent_id: String,
    /// Its status, as the navigation shows it.
    status: String,
}

/// `graph_update`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct GraphUpdateData {
    /// Nodes added or changed.
    #[serde(default)]
    nodes: Option<Vec<Value>>,
    /// Edges added or changed.
    #[serde(default)]
    edges: Option<Vec<Value>>,
}

/// `llm_stream`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct LlmStreamData {
    stream_id: String,
    chunk: String,
    is_final: bool,
    template_id: String,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("chat_message", from::BACKEND, Delivered, Optional, ChatMessageData,
        "Seed 000: a stored chat message.", {"content": "hi", "thread_id": "th1", "sender_id": "alice"}),
    event!("task_update", from::BACKEND, Delivered, Optional, TaskUpdateData,
        "Seed 000: a task changed (task_updated is the current name).", {"task_id": "t-7", "status": "done"}),
    event!("agent_status", from::BACKEND, Delivered, Optional, AgentStatusData,
        "Seed 000: an agent's status for the navigation.", {"agent_id": "core", "status": "active"}),
    event!("graph_update", from::BACKEND, Delivered, Optional, GraphUpdateData,
        "Seed 000: knowledge-graph nodes and edges changed.", {"nodes": [{"id": "n1", "label": "Q3 plan"}], "edges": []}),
    event!("llm_stream", from::BACKEND, Delivered, Optional, LlmStreamData,
        "Seed 000: a chunk of an LLM answer (assistant.token is the current name).",
        {"stream_id": "s1", "chunk": "Hel", "is_final": false, "template_id": "default"}),
];
