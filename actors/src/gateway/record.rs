//! The record an agent receives, the signature on a webhook's body, and the
//! retry schedule: the gateway's pure parts.
//!
//! The record is serialized once, by the session that accepted the
//! client's frame, and the same bytes go to every agent and every retry:
//! the stream entry's `event` field and the webhook's body are identical,
//! so an agent can switch delivery without changing its parser.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The record, as docs/gateway.md pins it.
#[derive(Serialize)]
pub struct Record<'a> {
    /// The id the client's receipt carries (`message.received`'s
    /// `data.message_id`); for a `chat.message`, also the `id` and
    /// `data.message_id` it is relayed with.
    pub id: &'a str,
    /// The client's event type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The channel as the client named it.
    pub channel: Option<&'a str>,
    /// The client's `data`, as validated against the catalog (for a
    /// `chat.message`, with `sender_id` and `message_id` set by the server).
    pub data: &'a Map<String, Value>,
    /// The authenticated user: never the client's word.
    pub user_id: &'a str,
    /// The user's tenant; `null` for the default one.
    pub tenant: Option<&'a str>,
    /// The connection that sent it (`connection.ack`'s `connection_id`):
    /// `POST /api/connections/{connection_id}/send` answers that one tab.
    pub connection_id: &'a str,
    /// The client's own name for itself (`/ws/{client_id}`), if any.
    pub client_id: Option<&'a str>,
    /// The node that accepted it.
    pub node_id: &'a str,
    /// When it was accepted, RFC 3339 with milliseconds.
    pub timestamp: &'a str,
}

/// The record's shape for the documents (`docs/asyncapi.yaml`): the same
/// fields as [`Record`], owned, with what each means; a test keeps the two
/// alike.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(title = "AgentRecord")]
pub struct RecordSchema {
    /// The id the client's receipt carries (`message.received`'s `data.message_id`); for a `chat.message` also its `id` as relayed. Retries of the record keep it: deduplicate by it.
    pub id: String,
    /// The client's event type (`chat.message`, `agent.invoke`, `tool.call.response`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel as the client named it (`agent:{name}` for `agent.invoke`).
    pub channel: Option<String>,
    /// The client's `data`, valid by the event catalog's schema of its type.
    pub data: Map<String, Value>,
    /// The authenticated user, never the client's word.
    pub user_id: String,
    /// The user's tenant; null for the default one.
    pub tenant: Option<String>,
    /// The connection that sent it: `POST /api/connections/{connection_id}/send` answers that one tab.
    pub connection_id: String,
    /// The client's own name for itself (`/ws/{client_id}`).
    pub client_id: Option<String>,
    /// The node that accepted it.
    pub node_id: String,
    /// When it was accepted, RFC 3339 with milliseconds.
    pub timestamp: String,
}

impl Record<'_> {
    /// The JSON every agent receives.
    pub fn to_json(&self) -> String {
        // A struct of strings and a JSON map cannot fail to serialize.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// `X-Nova-Signature`'s value for `body`: `sha256=` and the hex HMAC-SHA256
/// of the body with the agent's secret.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// A short, fixed-size Redis key part for text of any length and alphabet
/// (user ids, request ids, call ids): the first 128 bits of its SHA-256, in
/// hex. The parts are joined with a 0 byte, which none of them holds.
pub fn digest(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash.update([0u8]);
        }
        hash.update(part.as_bytes());
    }
    hex(&hash.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What makes a resent request the same request, for idempotency: its id,
/// type and channel and the client's `data` as the client sent it. A client
/// that reuses an id for a new request (a counter restarted by a reload)
/// sends other content, and its request is not taken for a repeat.
pub fn fingerprint(request_id: &str, kind: &str, channel: Option<&str>, data: &Map<String, Value>) -> String {
    // A JSON map cannot fail to serialize; its keys come out sorted, so the
    // same content always makes the same text.
    let data = serde_json::to_string(data).unwrap_or_default();
    digest(&[request_id, kind, channel.unwrap_or(""), &data])
}

/// The first retry of a failed webhook delivery...
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// ...doubled after each failure up to this.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// How long to wait before attempt `failures + 1`: exponential from
/// [`FIRST_RETRY`], capped at [`MAX_RETRY`], times a jitter from 0.5 to 1.5
/// (`jitter` is a random number from 0 to 1), so the records an agent
/// refused while it restarted do not all come back at the same instant.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(MAX_RETRY).mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

/// A random number from 0 to 1, from the UUID generator the server already
/// uses.
pub fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn retries_back_off_with_jitter_up_to_a_cap() {
        assert_eq!(backoff(1, 0.5), FIRST_RETRY);
        assert_eq!(backoff(2, 0.5), FIRST_RETRY * 2);
        assert_eq!(backoff(4, 0.5), FIRST_RETRY * 8);
        assert_eq!(backoff(40, 0.5), MAX_RETRY);
        assert_eq!(backoff(1, 0.0), FIRST_RETRY / 2);
        assert_eq!(backoff(1, 1.0), FIRST_RETRY * 3 / 2);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn a_fingerprint_is_the_content_of_the_request() {
        let data = |v: Value| v.as_object().unwrap().clone();
        let a = fingerprint("3", "chat.message", Some("c:1"), &data(serde_json::json!({"content": "hi", "x": 1})));
        let same = fingerprint("3", "chat.message", Some("c:1"), &data(serde_json::json!({"x": 1, "content": "hi"})));
        assert_eq!(a, same, "key order does not matter");
        let other = fingerprint("3", "chat.message", Some("c:1"), &data(serde_json::json!({"content": "bye", "x": 1})));
        assert_ne!(a, other);
        assert_ne!(
            a,
            fingerprint("3", "chat.message", Some("c:2"), &data(serde_json::json!({"content": "hi", "x": 1})))
        );
    }

    #[test]
    fn digests_tell_parts_apart() {
        assert_ne!(digest(&["a", "bc"]), digest(&["ab", "c"]));
        assert_eq!(digest(&["a"]).len(), 32);
    }

    #[test]
    fn the_record_has_the_pinned_fields() {
        let data = serde_json::json!({"content": "hi"});
        let record = Record {
            id: "m1",
            kind: "chat.message",
            channel: Some("conversation:c1"),
            data: data.as_object().unwrap(),
            user_id: "alice",
            tenant: None,
            connection_id: "n1-7",
            client_id: None,
            node_id: "n1",
            timestamp: "2026-12-06T09:00:00.000Z",
        };
        let value: Value = serde_json::from_str(&record.to_json()).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        let documented = serde_json::to_value(schemars::schema_for!(RecordSchema)).unwrap();
        let mut documented: Vec<String> = documented["properties"].as_object().unwrap().keys().cloned().collect();
        documented.sort_unstable();
        let mut expected = vec![
            "id",
            "type",
            "channel",
            "data",
            "user_id",
            "tenant",
            "connection_id",
            "client_id",
            "node_id",
            "timestamp",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(documented, expected, "RecordSchema documents the record");
    }
}
