//! The payload on the Redis channels: what nodes send each other, and what
//! an external publisher (a Python agent with redis-py, say) sends.
//!
//! A node forwards the event exactly as its own clients received it, so the
//! other nodes write the same bytes (same id, same timestamp) without
//! encoding it again. The message opens with a version marker and closes
//! with a seal (`seal.rs`: HMAC-SHA256 with the cluster secret over the
//! Redis channel and every byte before `,"mac"`):
//!
//! ```json
//! {"nova":1,"origin":"node-a","event":{"id":"…","type":"assistant.token","channel":"conversation:c1","data":{…},"timestamp":"…"},"mac":"<64 hex digits>"}
//! ```
//!
//! Presence changes carry who and what, so a node can keep its view of the
//! channel and skip the user's own connections:
//!
//! ```json
//! {"nova":1,"origin":"node-a","event":{…"type":"channel.presence"…},"presence":{"user":"alice","state":"joined","seq":3},"mac":"…"}
//! ```
//!
//! An external publisher sends the fields of `POST /api/publish` less the
//! channel, which the Redis channel names; `id` is optional (give one so
//! every node shows the same id):
//!
//! ```json
//! {"type":"assistant.token","data":{"stream_id":"s1","chunk":"Hel"},"id":"optional-id"}
//! ```
//!
//! Redis is not trusted: anyone who can publish to it can send anything.
//! So a message in the nodes' format counts only with a valid seal, and
//! every event, sealed or not, is checked as a REST publish is (type, the
//! channel it arrived on, size, depth; an external one also against the
//! event catalog) before a client sees it. Anything
//! else is refused with a [`Refused`] reason; the bus logs it, counts it
//! and drops it.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::catalog::{self, Refusal, TeamPresenceUpdate};
use crate::channel::StatusNote;
use crate::cluster::seal::{ClusterKey, SEAL_HEX_LEN};
use crate::cluster::Topic;
use crate::names;
use crate::protocol::{self, kind, Frame, MAX_DATA_DEPTH};

/// The version of the nodes' format; a node refuses others.
pub const VERSION: u32 = 1;

/// What a node's message may add to the event it forwards: the opening
/// with the node id, a presence note (a user id escapes to at most 6 bytes
/// a character) and the seal.
const ENVELOPE_ALLOWANCE: usize = 2048;

/// A presence number more than this above the last one seen for a user
/// is not a later change but a broken or hostile node: it would make the
/// channel ignore every real change after it.
pub const MAX_SEQ_JUMP: u64 = 1 << 32;

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

/// Where a numbered presence change stands against the last one seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOrder {
    /// Not numbered (decided by one node on its own): always taken.
    Unnumbered,
    /// Later than the last one seen: taken, and remembered.
    Next,
    /// Not later than the last one seen: a late arrival, ignored.
    Stale,
    /// Far beyond anything Redis counts: refused.
    Absurd,
}

impl PresenceNote {
    /// How this change stands after `last`, the last number seen for the
    /// user in the channel (none yet: counted from 0).
    pub fn order(&self, last: Option<u64>) -> SeqOrder {
        let last = last.unwrap_or(0);
        match self.seq {
            0 => SeqOrder::Unnumbered,
            seq if seq == u64::MAX || seq.saturating_sub(last) > MAX_SEQ_JUMP => SeqOrder::Absurd,
            seq if seq <= last => SeqOrder::Stale,
            _ => SeqOrder::Next,
        }
    }
}

/// An event from Redis, ready for the registry.
#[derive(Debug)]
pub struct Inbound {
    /// The bytes every local recipient gets.
    pub frame: Frame,
    /// Set on `channel.presence` events from other nodes.
    pub presence: Option<PresenceNote>,
    /// Set on `team.presence.update` events from other nodes.
    pub status: Option<StatusNote>,
    /// A broadcast for every tenant: the server's ping.
    pub everyone: bool,
}

/// What a payload from Redis turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// This node's own message, echoed by Redis: already delivered here.
    Own,
    /// An event for this node's clients.
    Event(Inbound),
}

/// Why a payload from Redis was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// In the nodes' format but without a valid seal: forged, or from a
    /// node with another `NOVA_CLUSTER_SECRET`.
    #[error("a node's message without a valid seal (forged, or the sender has another NOVA_CLUSTER_SECRET)")]
    Unsealed,
    /// Over the size limit.
    #[error("payload of {0} bytes is over the frame limit")]
    TooLarge(usize),
    /// Nested deeper than clients are given.
    #[error("'data' nests deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
    /// Not UTF-8 text.
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// Not JSON of the expected shape.
    #[error("payload is not an event: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON of the right shape breaking a rule of events.
    #[error("{0}")]
    Invalid(String),
    /// A catalog type with `data` its schema refuses, or one backends may
    /// not send.
    #[error("{0}")]
    Event(#[from] Refusal),
}

impl Refused {
    fn invalid(why: impl Into<String>) -> Refused {
        Refused::Invalid(why.into())
    }
}

/// An external publisher's payload. The nodes' fields are listed only to
/// tell an unsealed node message from a mistyped event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct External {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    nova: Option<IgnoredAny>,
    #[serde(default)]
    origin: Option<IgnoredAny>,
    #[serde(default)]
    event: Option<IgnoredAny>,
    #[serde(default)]
    presence: Option<IgnoredAny>,
    #[serde(default)]
    mac: Option<IgnoredAny>,
}

/// A node's message, read once its seal checked out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed<'a> {
    nova: u32,
    #[allow(dead_code)]
    origin: IgnoredAny,
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(default)]
    presence: Option<PresenceWire>,
    #[allow(dead_code)]
    mac: IgnoredAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceWire {
    user: String,
    state: String,
    #[serde(default)]
    seq: u64,
}

/// A forwarded event's envelope, as `protocol::encode` writes it; no
/// `reply_to`: replies never cross nodes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventView<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(default, borrow)]
    source: Option<Cow<'a, str>>,
}

/// The data of a `channel.presence` event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceData<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    state: Cow<'a, str>,
}

/// This node's side of the nodes' format: it seals what the node sends,
/// and checks what arrives (seal, own echo, the rules of events).
#[derive(Debug, Clone)]
pub struct Wire {
    /// The exact opening bytes of this node's messages, by which it skips
    /// its own when Redis echoes them back.
    opening: String,
    key: ClusterKey,
    max_frame_bytes: usize,
    strict_events: bool,
}

/// Between the sealed bytes and the seal.
const MAC_OPEN: &[u8] = b",\"mac\":\"";
/// After the seal.
const MAC_CLOSE: &[u8] = b"\"}";

impl Wire {
    /// Node `id`'s side, with the deployment's key and the largest event
    /// it accepts.
    pub fn new(id: &str, key: ClusterKey, max_frame_bytes: usize) -> Self {
        let id = serde_json::to_string(id).unwrap_or_else(|_| String::from("\"\""));
        Wire { opening: format!("{{\"nova\":{VERSION},\"origin\":{id},"), key, max_frame_bytes, strict_events: false }
    }

    /// Whether external events must be of a catalog type
    /// (`NOVA_STRICT_EVENTS`).
    pub fn strict(self, strict_events: bool) -> Self {
        Wire { strict_events, ..self }
    }

    /// The message that forwards `frame` (encoded once, by its publisher)
    /// on Redis channel `redis_channel`.
    pub fn event(&self, redis_channel: &str, frame: &Frame) -> Vec<u8> {
        self.seal(redis_channel, self.body(frame, None))
    }

    /// The message of a presence change on Redis channel `redis_channel`.
    pub fn presence(&self, redis_channel: &str, frame: &Frame, note: &PresenceNote) -> Vec<u8> {
        self.seal(redis_channel, self.body(frame, Some(note)))
    }

    fn body(&self, frame: &Frame, note: Option<&PresenceNote>) -> Vec<u8> {
        let text = frame.text().as_bytes();
        let mut out = Vec::with_capacity(self.opening.len() + text.len() + 200);
        out.extend_from_slice(self.opening.as_bytes());
        out.extend_from_slice(b"\"event\":");
        out.extend_from_slice(text);
        if let Some(note) = note {
            let user = serde_json::to_string(&*note.user).unwrap_or_default();
            let state = if note.joined { "joined" } else { "left" };
            let seq = note.seq;
            out.extend_from_slice(
                format!(",\"presence\":{{\"user\":{user},\"state\":\"{state}\",\"seq\":{seq}}}").as_bytes(),
            );
        }
        out
    }

    fn seal(&self, redis_channel: &str, mut body: Vec<u8>) -> Vec<u8> {
        let seal = self.key.seal(redis_channel.as_bytes(), &body);
        body.reserve(MAC_OPEN.len() + SEAL_HEX_LEN + MAC_CLOSE.len());
        body.extend_from_slice(MAC_OPEN);
        body.extend_from_slice(&seal);
        body.extend_from_slice(MAC_CLOSE);
        body
    }

    /// The sealed bytes and the seal of a payload that ends like a node's
    /// message.
    fn split_seal(payload: &[u8]) -> Option<(&[u8], &[u8])> {
        let tail = MAC_OPEN.len() + SEAL_HEX_LEN + MAC_CLOSE.len();
        let cut = payload.len().checked_sub(tail)?;
        let (body, rest) = payload.split_at(cut);
        let seal = rest.strip_prefix(MAC_OPEN)?.strip_suffix(MAC_CLOSE)?;
        Some((body, seal))
    }

    /// Decodes a payload that arrived on `topic` (Redis channel
    /// `redis_channel`), once per message whatever the number of local
    /// recipients.
    pub fn decode(&self, topic: &Topic, redis_channel: &str, payload: &[u8]) -> Result<Decoded, Refused> {
        if payload.len() > self.max_frame_bytes + ENVELOPE_ALLOWANCE {
            return Err(Refused::TooLarge(payload.len()));
        }
        // Redis hands every node its own messages back: recognised by their
        // opening, believed only with their seal (a forgery naming this node
        // is refused and counted, as on every other node).
        if payload.starts_with(self.opening.as_bytes()) {
            return match Wire::split_seal(payload) {
                Some((body, seal)) if self.key.verify(redis_channel.as_bytes(), body, seal) => Ok(Decoded::Own),
                _ => Err(Refused::Unsealed),
            };
        }
        // Before any parsing: `RawValue` skips over a nested value without
        // serde_json's recursion limit, and clients would get it as it is.
        // A node's message wraps the event one level deeper than an
        // external payload wraps `data`.
        let depth = protocol::json_depth(payload, MAX_DATA_DEPTH + 2);
        if depth > MAX_DATA_DEPTH + 2 {
            return Err(Refused::TooDeep);
        }
        if let Some((body, seal)) = Wire::split_seal(payload) {
            if !self.key.verify(redis_channel.as_bytes(), body, seal) {
                return Err(Refused::Unsealed);
            }
            let text = std::str::from_utf8(payload).map_err(|_| Refused::NotUtf8)?;
            let sealed: Sealed = serde_json::from_str(text)?;
            if sealed.nova != VERSION {
                return Err(Refused::invalid(format!("format version {} (this node reads {VERSION})", sealed.nova)));
            }
            return self.forwarded(topic, sealed.event, sealed.presence).map(Decoded::Event);
        }
        if depth > MAX_DATA_DEPTH + 1 {
            return Err(Refused::TooDeep);
        }
        let text = std::str::from_utf8(payload).map_err(|_| Refused::NotUtf8)?;
        let p: External = serde_json::from_str(text)?;
        if p.nova.is_some() || p.origin.is_some() || p.event.is_some() || p.presence.is_some() || p.mac.is_some() {
            return Err(Refused::Unsealed);
        }
        self.external(topic, p).map(Decoded::Event)
    }

    /// Checks an event another node forwarded, as its own REST API would
    /// have checked it.
    fn forwarded(&self, topic: &Topic, event: &RawValue, presence: Option<PresenceWire>) -> Result<Inbound, Refused> {
        if event.get().len() > self.max_frame_bytes {
            return Err(Refused::invalid(format!("the event is {} bytes, over the frame limit", event.get().len())));
        }
        let view: EventView = serde_json::from_str(event.get())?;
        check_id(&view.id)?;
        if view.timestamp.is_empty() || view.timestamp.len() > 64 {
            return Err(Refused::invalid("'timestamp' must be 1 to 64 characters"));
        }
        if view.source.as_ref().is_some_and(|s| s.is_empty() || s.len() > 64) {
            return Err(Refused::invalid("'source' must be 1 to 64 characters"));
        }
        if !view.data.get().starts_with('{') {
            return Err(Refused::invalid("'data' must be a JSON object"));
        }
        match (topic, view.channel.as_deref()) {
            (Topic::Channel(key), Some(channel)) if names::visible(key) == channel => {}
            (Topic::Channel(name), claimed) => {
                let claimed: String = claimed.unwrap_or("none").chars().take(140).collect();
                return Err(Refused::invalid(format!("event of channel '{claimed}' on the Redis channel of '{name}'")));
            }
            (_, Some(channel)) => {
                crate::names::parse_channel(channel).map_err(|e| Refused::invalid(e.to_string()))?;
            }
            (_, None) => {}
        }
        let note = match presence {
            Some(w) => {
                if !matches!(topic, Topic::Channel(_)) || view.kind != kind::PRESENCE {
                    return Err(Refused::invalid("a presence note belongs to a channel's 'channel.presence'"));
                }
                crate::auth::check_user_id(&w.user).map_err(|why| Refused::invalid(format!("presence user {why}")))?;
                let joined = match w.state.as_str() {
                    "joined" => true,
                    "left" => false,
                    _ => return Err(Refused::invalid("presence state is neither 'joined' nor 'left'")),
                };
                let data: PresenceData = serde_json::from_str(view.data.get())?;
                if data.user_id != w.user || data.state != w.state {
                    return Err(Refused::invalid("the presence note and its event disagree"));
                }
                Some(PresenceNote { user: w.user.into(), joined, seq: w.seq })
            }
            // The server's ping (`POST /ws/ping`) goes to every connection
            // of every node.
            None if view.kind == kind::HEARTBEAT && matches!(topic, Topic::Broadcast(_)) => None,
            None => {
                protocol::check_publish_type(&view.kind).map_err(Refused::Invalid)?;
                None
            }
        };
        // A member's status on a team channel: the channel keeps a list.
        let status = match topic {
            Topic::Channel(key) if view.kind == kind::TEAM_PRESENCE && names::visible(key).starts_with("team:") => {
                let update: TeamPresenceUpdate = serde_json::from_str(view.data.get())?;
                let user = update.user_id.ok_or_else(|| Refused::invalid("a status without its 'user_id'"))?;
                crate::auth::check_user_id(&user).map_err(|why| Refused::invalid(format!("status user {why}")))?;
                Some(StatusNote { user: user.into(), status: update.status, text: update.text })
            }
            _ => None,
        };
        let everyone = view.kind == kind::HEARTBEAT && matches!(topic, Topic::Broadcast(None));
        Ok(Inbound { frame: Frame::from_encoded(event.get()), presence: note, status, everyone })
    }

    /// Checks and encodes an external publisher's event.
    fn external(&self, topic: &Topic, p: External) -> Result<Inbound, Refused> {
        let kind = p.kind.ok_or_else(|| Refused::invalid("missing 'type'"))?;
        protocol::check_publish_type(&kind).map_err(Refused::Invalid)?;
        let data = match p.data {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(data @ Value::Object(_)) => data,
            Some(_) => return Err(Refused::invalid("'data' must be a JSON object")),
        };
        // Only external events: a node's sealed event was checked by the
        // node that accepted it, and checking it again on every node would
        // multiply the cost by the cluster's size.
        catalog::check_published(&kind, &data, self.strict_events)?;
        let id = match p.id {
            Some(id) => {
                check_id(&id)?;
                id
            }
            None => protocol::new_id(),
        };
        let channel = match topic {
            Topic::Channel(key) => Some(names::visible(key)),
            Topic::User(_) | Topic::TenantUser { .. } | Topic::Broadcast(_) | Topic::Connection { .. } => None,
        };
        let frame = protocol::encode_with_id(&id, &kind, channel, &data, None);
        if frame.len() > self.max_frame_bytes {
            return Err(Refused::invalid(format!(
                "the encoded event is {} bytes, over the frame limit of {}",
                frame.len(),
                self.max_frame_bytes
            )));
        }
        Ok(Inbound { frame, presence: None, status: None, everyone: false })
    }
}

fn check_id(id: &str) -> Result<(), Refused> {
    if id.is_empty() || id.len() > protocol::MAX_REQUEST_ID_LEN || id.chars().any(char::is_control) {
        return Err(Refused::invalid(format!(
            "'id' must be 1 to {} printable characters",
            protocol::MAX_REQUEST_ID_LEN
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = 1 << 20;
    const CH: &str = "nova:ch:team:t1";

    fn channel() -> Topic {
        Topic::Channel("team:t1".into())
    }

    fn wire(node: &str) -> Wire {
        Wire::new(node, ClusterKey::new(b"test-secret").unwrap(), MAX)
    }

    fn event(decoded: Result<Decoded, Refused>) -> Inbound {
        match decoded {
            Ok(Decoded::Event(inbound)) => inbound,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// A node's message around `event`, sealed by `node` with the test key.
    fn sealed(event: &Value) -> Vec<u8> {
        wire("node-z").event(CH, &Frame::from_encoded(&event.to_string()))
    }

    fn good_event() -> Value {
        json!({"id": "e1", "type": "task_updated", "channel": "team:t1", "data": {"n": 1},
            "timestamp": "2026-01-01T00:00:00.000Z"})
    }

    #[test]
    fn a_forwarded_event_keeps_its_bytes_and_is_recognised_by_its_origin() {
        let frame = protocol::encode("task_updated", Some("team:t1"), &json!({"n": 1}), None);
        let payload = wire("node-a").event(CH, &frame);
        assert!(payload.starts_with(br#"{"nova":1,"origin":"node-a","event":{"#));
        assert!(matches!(wire("node-a").decode(&channel(), CH, &payload), Ok(Decoded::Own)));
        let inbound = event(wire("node-b").decode(&channel(), CH, &payload));
        assert_eq!(inbound.frame.text(), frame.text());
        assert_eq!(inbound.presence, None);
        // A prefix of the id is another node.
        assert!(matches!(wire("node").decode(&channel(), CH, &payload), Ok(Decoded::Event(_))));
    }

    #[test]
    fn a_presence_change_carries_user_and_state() {
        let frame = crate::channel::presence_frame("team:t1", "al\"ice", false);
        let note = PresenceNote { user: "al\"ice".into(), joined: false, seq: 7 };
        let payload = wire("n").presence(CH, &frame, &note);
        let inbound = event(wire("m").decode(&channel(), CH, &payload));
        assert_eq!(inbound.presence, Some(note));
        assert_eq!(inbound.frame.text(), frame.text());
    }

    #[test]
    fn the_server_ping_crosses_nodes_as_a_broadcast_only() {
        let ping = protocol::encode(kind::HEARTBEAT, None, &json!({}), None);
        let on = |topic: &Topic, name: &str| wire("m").decode(topic, name, &wire("n").event(name, &ping));
        assert!(matches!(on(&Topic::Broadcast(None), "nova:broadcast"), Ok(Decoded::Event(_))));
        assert!(matches!(on(&Topic::User("u".into()), "nova:user:u"), Err(Refused::Invalid(_))));
    }

    #[test]
    fn a_node_message_without_a_valid_seal_is_refused() {
        let payload = sealed(&good_event());
        let receiver = wire("node-a");
        assert!(matches!(receiver.decode(&channel(), CH, &payload), Ok(Decoded::Event(_))));
        // Another secret, another Redis channel, a changed byte.
        let other = Wire::new("node-a", ClusterKey::new(b"other-secret").unwrap(), MAX);
        assert!(matches!(other.decode(&channel(), CH, &payload), Err(Refused::Unsealed)));
        let t2 = Topic::Channel("team:t2".into());
        assert!(matches!(receiver.decode(&t2, "nova:ch:team:t2", &payload), Err(Refused::Unsealed)));
        let tampered = String::from_utf8(payload.clone()).unwrap().replace("\"n\":1", "\"n\":2");
        assert!(matches!(receiver.decode(&channel(), CH, tampered.as_bytes()), Err(Refused::Unsealed)));
        // The old, unsealed format, a missing or wrong seal, and a forged
        // origin naming the receiver itself: refused, not taken for an echo.
        let (event, zeros) = (good_event(), "0".repeat(64));
        for bytes in [
            format!(r#"{{"origin":"node-z","event":{event}}}"#),
            format!(r#"{{"origin":"node-a","event":{event}}}"#),
            format!(r#"{{"nova":1,"origin":"node-z","event":{event}}}"#),
            format!(r#"{{"nova":1,"origin":"node-a","event":{event}}}"#),
            format!(r#"{{"nova":1,"origin":"node-z","event":{event},"mac":"{zeros}"}}"#),
            format!(r#"{{"nova":1,"origin":"node-a","event":{event},"mac":"{zeros}"}}"#),
            format!(r#"{{"nova":1,"origin":"node-a","event":{event},"mac":"zz"}}"#),
        ] {
            assert!(
                matches!(receiver.decode(&channel(), CH, bytes.as_bytes()), Err(Refused::Unsealed)),
                "accepted {bytes}"
            );
        }
    }

    #[test]
    fn sealed_events_are_checked_like_a_rest_publish() {
        let deep = format!("{}{}", "[".repeat(300_000), "]".repeat(300_000));
        let deep = format!(
            r#"{{"id":"d","type":"x","channel":"team:t1","data":{{"deep":{deep}}},"timestamp":"2026-01-01T00:00:00Z"}}"#
        );
        let deep_payload = wire("node-z").event(CH, &Frame::from_encoded(&deep));
        assert!(matches!(wire("node-a").decode(&channel(), CH, &deep_payload), Err(Refused::TooDeep)));
        let mut cases = Vec::new();
        for (field, value) in [
            ("type", json!("connection.ack")),
            ("type", json!("error")),
            ("type", json!("channel.subscribed")),
            ("type", json!("channel.presence")),
            ("type", json!("connection.heartbeat")),
            ("channel", json!("system:settings")),
            ("channel", Value::Null),
            ("data", json!([1])),
            ("id", json!("")),
            ("reply_to", json!("1")),
            ("extra", json!(1)),
        ] {
            let mut event = good_event();
            if value.is_null() {
                event.as_object_mut().unwrap().remove(field);
            } else {
                event[field] = value;
            }
            cases.push(event);
        }
        for case in cases {
            let refused = wire("node-a").decode(&channel(), CH, &sealed(&case));
            assert!(refused.is_err(), "accepted {case}");
            assert!(!matches!(refused, Err(Refused::Unsealed)), "{case}");
        }
        // Data 64 levels deep is what REST accepts; 65 is refused.
        let nested = |levels: usize| {
            let mut data = json!({});
            for _ in 1..levels {
                data = json!({ "a": data });
            }
            let mut event = good_event();
            event["data"] = data;
            event
        };
        assert!(wire("node-a").decode(&channel(), CH, &sealed(&nested(MAX_DATA_DEPTH))).is_ok());
        assert!(matches!(
            wire("node-a").decode(&channel(), CH, &sealed(&nested(MAX_DATA_DEPTH + 1))),
            Err(Refused::TooDeep)
        ));
        // A direct message may name a channel, a valid one.
        let user = Topic::User("u".into());
        let mut direct = good_event();
        direct["channel"] = json!("system:settings");
        let payload = wire("node-z").event("nova:user:u", &Frame::from_encoded(&direct.to_string()));
        assert!(wire("node-a").decode(&user, "nova:user:u", &payload).is_ok());
        direct["channel"] = json!("nope");
        let payload = wire("node-z").event("nova:user:u", &Frame::from_encoded(&direct.to_string()));
        assert!(wire("node-a").decode(&user, "nova:user:u", &payload).is_err());
    }

    #[test]
    fn an_event_for_one_connection_is_sealed_to_that_connection() {
        let keys = crate::cluster::Keys::new("nova:");
        let to = |conn| Topic::Connection { node: "node-b".into(), conn, tenant: None };
        let (seven, eight) = (to(7), to(8));
        let (name, other) = (seven.key(&keys), eight.key(&keys));
        let frame = protocol::encode("notification", None, &json!({"n": 1}), None);
        let payload = wire("node-a").event(&name, &frame);
        assert_eq!(event(wire("node-b").decode(&seven, &name, &payload)).frame.text(), frame.text());
        // Replayed to another connection: refused.
        assert!(matches!(wire("node-b").decode(&eight, &other, &payload), Err(Refused::Unsealed)));
        // An external publisher's, checked as a direct message.
        let direct = event(wire("node-b").decode(&seven, &name, br#"{"type":"note"}"#));
        assert!(serde_json::from_str::<Value>(direct.frame.text()).unwrap().get("channel").is_none());
        assert!(wire("node-b").decode(&seven, &name, br#"{"type":"connection.ack"}"#).is_err());
    }

    #[test]
    fn a_presence_note_must_match_its_event() {
        let frame = crate::channel::presence_frame("team:t1", "alice", true);
        let decode = |note: &PresenceNote| wire("m").decode(&channel(), CH, &wire("n").presence(CH, &frame, note));
        assert!(decode(&PresenceNote { user: "alice".into(), joined: true, seq: 1 }).is_ok());
        assert!(decode(&PresenceNote { user: "bob".into(), joined: true, seq: 1 }).is_err());
        assert!(decode(&PresenceNote { user: "alice".into(), joined: false, seq: 1 }).is_err());
        let event =
            wire("n").presence("nova:user:alice", &frame, &PresenceNote { user: "alice".into(), joined: true, seq: 1 });
        assert!(wire("m").decode(&Topic::User("alice".into()), "nova:user:alice", &event).is_err());
    }

    #[test]
    fn presence_numbers_that_jump_absurdly_are_refused() {
        let note = |seq| PresenceNote { user: "u".into(), joined: true, seq };
        assert_eq!(note(0).order(Some(5)), SeqOrder::Unnumbered);
        assert_eq!(note(1).order(None), SeqOrder::Next);
        assert_eq!(note(6).order(Some(5)), SeqOrder::Next);
        assert_eq!(note(5).order(Some(5)), SeqOrder::Stale);
        assert_eq!(note(4).order(Some(5)), SeqOrder::Stale);
        assert_eq!(note(MAX_SEQ_JUMP).order(None), SeqOrder::Next);
        assert_eq!(note(MAX_SEQ_JUMP + 1).order(None), SeqOrder::Absurd);
        assert_eq!(note(MAX_SEQ_JUMP + 10).order(Some(10)), SeqOrder::Next);
        assert_eq!(note(u64::MAX).order(None), SeqOrder::Absurd);
        assert_eq!(note(u64::MAX).order(Some(u64::MAX - 1)), SeqOrder::Absurd);
    }

    #[test]
    fn an_external_catalog_event_with_bad_data_is_refused_and_strict_mode_refuses_unknown_types() {
        let payload = br#"{"type":"assistant.token","data":{"chunk":"Hi"}}"#;
        let refused = wire("a").decode(&channel(), CH, payload).unwrap_err();
        assert!(matches!(refused, Refused::Event(_)), "{refused:?}");
        assert_eq!(refused.to_string(), "invalid 'assistant.token': data.stream_id: required string");
        let forbidden = wire("a").decode(&channel(), CH, br#"{"type":"agent.invoke","data":{"input":1}}"#);
        assert!(matches!(forbidden, Err(Refused::Event(Refusal::NotFrom { .. }))), "{forbidden:?}");
        let unknown = br#"{"type":"my.thing","data":{}}"#;
        assert!(wire("a").decode(&channel(), CH, unknown).is_ok());
        let strict = wire("a").strict(true).decode(&channel(), CH, unknown).unwrap_err();
        assert!(strict.to_string().contains("not in the event catalog"), "{strict}");
    }

    #[test]
    fn an_external_event_is_encoded_with_the_channel_of_its_topic() {
        let payload = br#"{"type":"assistant.token","data":{"stream_id":"s1","chunk":"Hi"},"id":"e1"}"#;
        let inbound = event(wire("a").decode(&channel(), CH, payload));
        let v: Value = serde_json::from_str(inbound.frame.text()).unwrap();
        assert_eq!(v["id"], "e1");
        assert_eq!(v["type"], "assistant.token");
        assert_eq!(v["channel"], "team:t1");
        assert_eq!(v["data"]["chunk"], "Hi");
        let direct = event(wire("a").decode(&Topic::User("u".into()), "nova:user:u", br#"{"type":"note"}"#));
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
            br#"{"type":"error"}"#,
            br#"{"type":"channel.presence"}"#,
            br#"{"type":"x","data":[1]}"#,
            br#"{"type":"x","extra":1}"#,
            br#"{"type":"x","id":""}"#,
            br#"{"origin":"n","event":[1]}"#,
            br#"{"event":{"a":1}}"#,
            br#"{"origin":"n","event":{},"presence":{"user":"u","state":"gone"}}"#,
            br#"{"origin":"n","event":{},"type":"x"}"#,
        ];
        for case in cases {
            assert!(wire("a").decode(&channel(), CH, case).is_err(), "accepted {}", String::from_utf8_lossy(case));
        }
        let big = format!(r#"{{"type":"x","data":{{"s":"{}"}}}}"#, "a".repeat(2000));
        let small = Wire::new("a", ClusterKey::new(b"k").unwrap(), 1000);
        assert!(small.decode(&channel(), CH, big.as_bytes()).is_err());
        // Deeper than REST allows, though serde_json would parse it.
        let deep = format!(r#"{{"type":"x","data":{}{}}}"#, "{\"a\":".repeat(MAX_DATA_DEPTH) + "{", "}".repeat(65));
        assert!(matches!(wire("a").decode(&channel(), CH, deep.as_bytes()), Err(Refused::TooDeep)));
        let at_limit =
            format!(r#"{{"type":"x","data":{}{}}}"#, "{\"a\":".repeat(MAX_DATA_DEPTH - 1) + "{", "}".repeat(64));
        assert!(wire("a").decode(&channel(), CH, at_limit.as_bytes()).is_ok());
    }
}
