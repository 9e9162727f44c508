//! `assistant.*`: an LLM answer, streamed (seed 000's `llm_stream` is its
//! earlier name: `stream_id`, `chunk`, `is_final`, `template_id`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{event, from, Event};

/// `assistant.start`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct StartData {
    /// The answer's id: every later `assistant.*` of it carries it.
    stream_id: String,
    /// The id the finished message will have.
    #[serde(default)]
    message_id: Option<String>,
    /// The user message it answers.
    #[serde(default)]
    in_reply_to: Option<String>,
    /// The model answering.
    #[serde(default)]
    model: Option<String>,
    /// The prompt template used.
    #[serde(default)]
    template_id: Option<String>,
}

/// `assistant.token`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct TokenData {
    /// The answer this belongs to.
    stream_id: String,
    /// The next piece of text.
    chunk: String,
    /// Its position in the answer (0, 1, 2, …), so a client can spot a gap.
    #[serde(default)]
    index: Option<u64>,
    /// True on the last chunk.
    #[serde(default)]
    is_final: Option<bool>,
    /// The prompt template used.
    #[serde(default)]
    template_id: Option<String>,
}

/// `assistant.complete`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct CompleteData {
    /// The answer.
    stream_id: String,
    /// The stored message's id.
    #[serde(default)]
    message_id: Option<String>,
    /// The whole text, so a client that missed tokens has it.
    #[serde(default)]
    content: Option<String>,
    /// `stop`, `length`, `tool_calls`, `cancelled`.
    #[serde(default)]
    finish_reason: Option<String>,
    /// Tokens used.
    #[serde(default)]
    usage: Option<Usage>,
}

/// Tokens used by an answer.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// `assistant.error`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ErrorData {
    /// The answer that failed.
    stream_id: String,
    /// Why, for a person.
    message: String,
    /// A machine-readable reason.
    #[serde(default)]
    code: Option<String>,
    /// Whether asking again may work.
    #[serde(default)]
    retryable: Option<bool>,
}

/// `assistant.snapshot`: an answer so far, sent by the server itself.
#[derive(Serialize, Deserialize, JsonSchema)]
struct SnapshotData {
    /// The answer.
    stream_id: String,
    /// Its chunks so far, in order.
    text: String,
    /// The offset of the last token in `text`: the answer's tokens after
    /// it follow as `assistant.token` events.
    offset: u64,
    /// Whether the answer has ended (nothing of it follows but
    /// `assistant.complete` or `assistant.error`, if not received yet).
    is_final: bool,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("assistant.start", from::BACKEND, Delivered, Required, StartData,
        "An answer begins streaming.", {"stream_id": "s1", "message_id": "m-42", "model": "gpt-4o"}),
    event!("assistant.token", from::BACKEND, Delivered, Required, TokenData,
        "The next chunk of a streaming answer.", {"stream_id": "s1", "chunk": "Hel", "index": 0}),
    event!("assistant.complete", from::BACKEND, Delivered, Required, CompleteData,
        "An answer finished: its full text and why it stopped.",
        {"stream_id": "s1", "message_id": "m-42", "content": "Hello!", "finish_reason": "stop"}),
    event!("assistant.snapshot", from::SERVER, Delivered, Required, SnapshotData,
        "An answer so far, for a client that joined or returned mid-answer; its later tokens follow.",
        {"stream_id": "s1", "text": "Hello, wor", "offset": 57, "is_final": false}),
    event!("assistant.error", from::BACKEND, Delivered, Required, ErrorData,
        "An answer failed.", {"stream_id": "s1", "message": "the model timed out", "retryable": true}),
];
