//! `chat.*`, `message.received`, `conversation.updated`: the conversation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{event, from, Event};

/// `chat.message`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct MessageData {
    /// The text.
    content: String,
    /// The thread it answers, if any.
    #[serde(default)]
    thread_id: Option<String>,
    /// Set by the server: the authenticated sender (a client's value is
    /// overwritten).
    #[serde(default)]
    sender_id: Option<String>,
    /// Set by the server: the message's id, the `message_id` of the receipt.
    #[serde(default)]
    message_id: Option<String>,
}

/// `chat.typing`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct TypingData {
    /// Whether the user is typing (absent: true).
    #[serde(default)]
    is_typing: Option<bool>,
    /// Set by the server.
    #[serde(default)]
    sender_id: Option<String>,
}

/// `chat.configure`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ConfigureData {
    /// The model to answer with.
    #[serde(default)]
    model: Option<String>,
    /// Sampling temperature.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 2.0))]
    temperature: Option<f64>,
    /// A system prompt for this conversation only.
    #[serde(default)]
    system_prompt: Option<String>,
    /// The MCP tools the agent may use here.
    #[serde(default)]
    tools: Option<Vec<String>>,
    /// Anything else the agent understands.
    #[serde(default)]
    settings: Option<Map<String, Value>>,
}

/// `chat.regenerate`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct RegenerateData {
    /// The assistant message to answer again.
    message_id: String,
    /// A different model for the new answer.
    #[serde(default)]
    model: Option<String>,
}

/// `message.received`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ReceivedData {
    /// The id the message got (its `id` and `data.message_id` as delivered).
    message_id: String,
    /// The channel it went to.
    #[serde(default)]
    channel: Option<String>,
}

/// `conversation.updated`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ConversationData {
    /// The conversation.
    conversation_id: String,
    /// Its title, when it changed.
    #[serde(default)]
    title: Option<String>,
    /// Other metadata that changed.
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    /// When, RFC 3339.
    #[serde(default)]
    updated_at: Option<String>,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("chat.message", from::ANYONE, Relayed, Required, MessageData,
        "A message: from a client, relayed to the channel with sender_id and message_id set, receipt to the sender; a backend may publish one too (an agent's own message).",
        {"content": "What changed in the Q3 plan?", "thread_id": "th1"}),
    event!("chat.typing", from::ANYONE, Relayed, Required, TypingData,
        "A typing indicator (a backend's for an agent that is typing), relayed to the channel with sender_id set; no receipt.", {"is_typing": true}),
    event!("chat.configure", from::CLIENT, Agent, Required, ConfigureData,
        "Change this conversation's settings (model, temperature, tools) for its agent.",
        {"model": "gpt-4o", "temperature": 0.3}),
    event!("chat.regenerate", from::CLIENT, Agent, Required, RegenerateData,
        "Ask the agent to answer a message again.", {"message_id": "m-41"}),
    event!("message.received", from::SERVER, Delivered, Required, ReceivedData,
        "Receipt for a chat.message: the id it was delivered with.",
        {"message_id": "0b1f6c1e-4c5e-4bb5-9d0a-0d3c2f1e7a10", "channel": "conversation:c1"}),
    event!("conversation.updated", from::BACKEND, Delivered, Required, ConversationData,
        "A conversation's metadata changed (title, settings).",
        {"conversation_id": "c1", "title": "Q3 planning"}),
];
