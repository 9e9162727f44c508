//! The payload on the Redis channels: what nodes send each other, and what
//! an external publisher (a Python agent with redis-py, say) sends.
//!
//! A node forwards the event exactly as its own clients received it, so the
//! other nodes write the same bytes (same id, same timestamp) without
//! encoding it again:
//!
//! ```json
//! {"origin":"node-a","event":{"id":"…","type":"assistant.token","channel":"conversation:c1","data":{…},"timestamp":"…"}}
//! ```
//!
//! Presence changes carry who and what, so a node can keep its view of the
//! channel and skip the user's own connections:
//!
//! ```json
//! {"origin":"node-a","event":{…"type":"channel.presence"…},"presence":{"user":"alice","state":"joined","seq":3}}
//! ```
//!
//! An external publisher sends the fields of `POST /api/publish` less the
//! channel, which the Redis channel names; `id` is optional (give one so
//! every node shows the same id):
//!
//! ```json
//! {"type":"assistant.token","data":{"token":"Hel"},"id":"optional-id"}
//! ```
//!
//! Anything else is refused with a reason, logged and dropped by the bus.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::cluster::Topic;
use crate::protocol::{self, Frame};

/// A presence change carried beside its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceNote {
    /// The user who joined or left.
    pub user: Arc<str>,
    /// `true` for joined, `false` for left.
    pub joined: bool,
    /// The change's number among this user's changes in the channel, as
    /// Redis counted them; 0 when unknown (a node on its own).
    pub seq: u64,
}

/// An event from Redis, ready for the registry.
#[derive(Debug)]
pub struct Inbound {
    /// The bytes every local recipient gets.
    pub frame: Frame,
    /// Set on `channel.presence` events from other nodes.
    pub presence: Option<PresenceNote>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload<'a> {
    #[serde(default, borrow)]
    origin: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default)]
    presence: Option<PresenceWire>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceWire {
    user: String,
    state: String,
    #[serde(default)]
    seq: u64,
}

/// How this node marks what it sends, so it can skip its own events when
/// Redis echoes them back: the exact opening bytes of each payload.
#[derive(Debug, Clone)]
pub struct Origin {
    opening: String,
}

impl Origin {
    /// The mark of node `id`.
    pub fn new(id: &str) -> Self {
        let id = serde_json::to_string(id).unwrap_or_else(|_| String::from("\"\""));
        Origin { opening: format!("{{\"origin\":{id},") }
    }

    /// The payload that forwards `frame` (encoded once, by its publisher).
    pub fn event(&self, frame: &Frame) -> Vec<u8> {
        let text = frame.text().as_bytes();
        let mut out = Vec::with_capacity(self.opening.len() + text.len() + 10);
        out.extend_from_slice(self.opening.as_bytes());
        out.extend_from_slice(b"\"event\":");
        out.extend_from_slice(text);
        out.push(b'}');
        out
    }

    /// The payload of a presence change.
    pub fn presence(&self, frame: &Frame, note: &PresenceNote) -> Vec<u8> {
        let mut out = self.event(frame);
        out.pop();
        let user = serde_json::to_string(&*note.user).unwrap_or_default();
        let state = if note.joined { "joined" } else { "left" };
        let seq = note.seq;
        out.extend_from_slice(
            format!(",\"presence\":{{\"user\":{user},\"state\":\"{state}\",\"seq\":{seq}}}}}").as_bytes(),
        );
        out
    }

    /// Whether `payload` is one this node sent.
    pub fn is_own(&self, payload: &[u8]) -> bool {
        payload.starts_with(self.opening.as_bytes())
    }
}

/// Decodes a payload that arrived on `topic`. Errors say what was wrong, for
/// the log; the caller drops the payload.
pub fn decode(topic: &Topic, payload: &[u8], max_frame_bytes: usize) -> Result<Inbound, String> {
    if payload.len() > max_frame_bytes + 1024 {
        return Err(format!("payload of {} bytes is over the frame limit", payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
    let p: Payload = serde_json::from_str(text).map_err(|e| format!("payload is not an event: {e}"))?;
    if let Some(event) = p.event {
        if p.origin.is_none() || p.kind.is_some() || p.data.is_some() || p.id.is_some() {
            return Err("a forwarded event has 'origin' and 'event' and nothing of a new one".into());
        }
        if !event.get().starts_with('{') {
            return Err("'event' must be a JSON object".into());
        }
        let presence = match (p.presence, topic) {
            (None, _) => None,
            (Some(w), Topic::Channel(_)) => {
                crate::auth::check_user_id(&w.user).map_err(|why| format!("presence user {why}"))?;
                let joined = match w.state.as_str() {
                    "joined" => true,
                    "left" => false,
                    other => return Err(format!("presence state '{other}' is neither 'joined' nor 'left'")),
                };
                Some(PresenceNote { user: w.user.into(), joined, seq: w.seq })
            }
            (Some(_), _) => return Err("presence belongs on a channel".into()),
        };
        return Ok(Inbound { frame: Frame::from_encoded(event.get()), presence });
    }
    if p.origin.is_some() || p.presence.is_some() {
        return Err("'origin' and 'presence' come only with a forwarded 'event'".into());
    }
    let kind = p.kind.ok_or("missing 'type'")?;
    protocol::check_publish_type(&kind)?;
    let data = match p.data {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(data @ Value::Object(_)) => data,
        Some(_) => return Err("'data' must be a JSON object".into()),
    };
    let id = match p.id {
        Some(id) if id.is_empty() || id.len() > protocol::MAX_REQUEST_ID_LEN || id.chars().any(char::is_control) => {
            return Err(format!("'id' must be 1 to {} printable characters", protocol::MAX_REQUEST_ID_LEN))
        }
        Some(id) => id,
        None => protocol::new_id(),
    };
    let channel = match topic {
        Topic::Channel(c) => Some(&**c),
        Topic::User(_) | Topic::Broadcast => None,
    };
    let frame = protocol::encode_with_id(&id, &kind, channel, &data, None);
    if frame.len() > max_frame_bytes {
        return Err(format!("the encoded event is {} bytes, over the frame limit of {max_frame_bytes}", frame.len()));
    }
    Ok(Inbound { frame, presence: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channel() -> Topic {
        Topic::Channel("team:t1".into())
    }

    #[test]
    fn a_forwarded_event_keeps_its_bytes_and_is_recognised_by_its_origin() {
        let frame = protocol::encode("task_updated", Some("team:t1"), &json!({"n": 1}), None);
        let origin = Origin::new("node-a");
        let payload = origin.event(&frame);
        assert!(origin.is_own(&payload));
        assert!(!Origin::new("node-b").is_own(&payload));
        assert!(!Origin::new("node").is_own(&payload), "a prefix of the id is another node");
        let inbound = decode(&channel(), &payload, 1 << 20).unwrap();
        assert_eq!(inbound.frame.text(), frame.text());
        assert_eq!(inbound.presence, None);
    }

    #[test]
    fn a_presence_change_carries_user_and_state() {
        let frame = protocol::encode("channel.presence", Some("team:t1"), &json!({}), None);
        let note = PresenceNote { user: "al\"ice".into(), joined: false, seq: 7 };
        let payload = Origin::new("n").presence(&frame, &note);
        let inbound = decode(&channel(), &payload, 1 << 20).unwrap();
        assert_eq!(inbound.presence, Some(note));
        assert_eq!(inbound.frame.text(), frame.text());
    }

    #[test]
    fn an_external_event_is_encoded_with_the_channel_of_its_topic() {
        let payload = br#"{"type":"assistant.token","data":{"token":"Hi"},"id":"e1"}"#;
        let inbound = decode(&channel(), payload, 1 << 20).unwrap();
        let v: Value = serde_json::from_str(inbound.frame.text()).unwrap();
        assert_eq!(v["id"], "e1");
        assert_eq!(v["type"], "assistant.token");
        assert_eq!(v["channel"], "team:t1");
        assert_eq!(v["data"]["token"], "Hi");
        let direct = decode(&Topic::User("u".into()), br#"{"type":"note"}"#, 1 << 20).unwrap();
        let v: Value = serde_json::from_str(direct.frame.text()).unwrap();
        assert!(v.get("channel").is_none());
        assert_eq!(v["data"], json!({}));
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let cases: &[&[u8]] = &[
            b"not json",
            b"\xff\xfe",
            b"[1,2]",
            br#"{"data":{}}"#,
            br#"{"type":"connection.ack"}"#,
            br#"{"type":"x","data":[1]}"#,
            br#"{"type":"x","extra":1}"#,
            br#"{"type":"x","id":""}"#,
            br#"{"origin":"n","event":[1]}"#,
            br#"{"event":{"a":1}}"#,
            br#"{"origin":"n","event":{},"presence":{"user":"u","state":"gone"}}"#,
            br#"{"origin":"n","event":{},"type":"x"}"#,
        ];
        for case in cases {
            assert!(decode(&channel(), case, 1 << 20).is_err(), "accepted {}", String::from_utf8_lossy(case));
        }
        let big = format!(r#"{{"type":"x","data":{{"s":"{}"}}}}"#, "a".repeat(2000));
        assert!(decode(&channel(), big.as_bytes(), 1000).is_err());
    }
}
