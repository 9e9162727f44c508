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
//! An event of a channel that keeps history is not published by the node
//! but by the script that numbers it (`history.rs`), which puts the
//! channel's position in front of the node's sealed message:
//!
//! ```text
//! @<offset>,<epoch>|{"nova":1,"origin":"node-a","event":{…},"mac":"…"}
//! ```
//!
//! Every node delivers it, the publishing node too: its local subscribers
//! get such events only through this echo, so every client of every node
//! sees each event with the offset Redis gave it. The position itself is
//! not sealed (Redis makes it after the node sealed the message), so it is
//! only as trustworthy as Redis; the event it carries must still be a
//! node's, sealed for this Redis channel.
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
use crate::cluster::history::{self, MAX_EPOCH_LEN};
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

/// The longest position in front of a numbered event: an offset of up to
/// 20 digits, a comma, an epoch, the bar.
const POSITION_MAX: usize = 20 + 1 + MAX_EPOCH_LEN + 1;

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
    /// Set on events of channels with history: the offset Redis gave the
    /// event (already in `frame`) and the channel's epoch, by which a
    /// client tells a continuation from a new history.
    pub position: Option<(u64, Arc<str>)>,
}

/// What a payload from Redis turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// This node's own unnumbered message, echoed by Redis: already
    /// delivered here.
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
        if let Some(rest) = payload.strip_prefix(b"@") {
            return self.positioned(topic, redis_channel, rest).map(Decoded::Event);
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
        if Wire::split_seal(payload).is_some() {
            return self.sealed(topic, redis_channel, payload, false).map(Decoded::Event);
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

    /// Decodes an event of a channel with history as its numbering script
    /// published it, `rest` following the `@`.
    fn positioned(&self, topic: &Topic, redis_channel: &str, rest: &[u8]) -> Result<Inbound, Refused> {
        let bar = rest
            .iter()
            .take(POSITION_MAX)
            .position(|&b| b == b'|')
            .ok_or_else(|| Refused::invalid("a position must be '@<offset>,<epoch>|' before the message"))?;
        let (header, tail) = (&rest[..bar], &rest[bar + 1..]);
        let header = std::str::from_utf8(header).map_err(|_| Refused::NotUtf8)?;
        let (offset, epoch) =
            header.split_once(',').ok_or_else(|| Refused::invalid("a position must be '<offset>,<epoch>'"))?;
        let offset = parse_offset(offset)
            .ok_or_else(|| Refused::invalid("an offset must be a number from 1 to 2^64-1 without leading zeros"))?;
        if !history::is_epoch(epoch) {
            return Err(Refused::invalid(format!(
                "an epoch must be 1 to {MAX_EPOCH_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"
            )));
        }
        let inbound = self.numbered(topic, redis_channel, offset, tail)?;
        Ok(Inbound { position: Some((offset, epoch.into())), ..inbound })
    }

    /// Checks an entry of a channel's history (`history.rs`): the node's
    /// message the script stored with offset `offset`, which must be sealed
    /// for the channel's Redis channel `redis_channel`. Returns the event
    /// as clients get it, with its offset.
    pub fn history_entry(
        &self,
        topic: &Topic,
        redis_channel: &str,
        offset: u64,
        payload: &[u8],
    ) -> Result<Frame, Refused> {
        if payload.len() > self.max_frame_bytes + ENVELOPE_ALLOWANCE {
            return Err(Refused::TooLarge(payload.len()));
        }
        if offset == 0 {
            return Err(Refused::invalid("offsets start at 1"));
        }
        self.numbered(topic, redis_channel, offset, payload).map(|inbound| inbound.frame)
    }

    /// A numbered event: only a sealed node message of a channel, without
    /// a presence note; its frame gets the offset.
    fn numbered(&self, topic: &Topic, redis_channel: &str, offset: u64, payload: &[u8]) -> Result<Inbound, Refused> {
        if !matches!(topic, Topic::Channel(_)) {
            return Err(Refused::invalid("only a channel's events have offsets"));
        }
        if protocol::json_depth(payload, MAX_DATA_DEPTH + 2) > MAX_DATA_DEPTH + 2 {
            return Err(Refused::TooDeep);
        }
        let inbound = self.sealed(topic, redis_channel, payload, true)?;
        let frame = inbound.frame.with_offset(offset);
        Ok(Inbound { frame, ..inbound })
    }

    /// Checks a node's message: the seal first (over the bytes and the
    /// Redis channel), then the event. `numbered`: one carrying an offset,
    /// which a presence change never does.
    fn sealed(&self, topic: &Topic, redis_channel: &str, payload: &[u8], numbered: bool) -> Result<Inbound, Refused> {
        let Some((body, seal)) = Wire::split_seal(payload) else { return Err(Refused::Unsealed) };
        if !self.key.verify(redis_channel.as_bytes(), body, seal) {
            return Err(Refused::Unsealed);
        }
        let text = std::str::from_utf8(payload).map_err(|_| Refused::NotUtf8)?;
        let sealed: Sealed = serde_json::from_str(text)?;
        if sealed.nova != VERSION {
            return Err(Refused::invalid(format!("format version {} (this node reads {VERSION})", sealed.nova)));
        }
        if numbered && sealed.presence.is_some() {
            return Err(Refused::invalid("a presence change has no offset"));
        }
        self.forwarded(topic, sealed.event, sealed.presence)
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
        Ok(Inbound {
            frame: Frame::from_encoded(event.get(), &view.kind),
            presence: note,
            status,
            everyone,
            position: None,
        })
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
        Ok(Inbound { frame, presence: None, status: None, everyone: false, position: None })
    }
}

/// An offset as a position writes it: 1 to 20 digits, no leading zero,
/// at most `u64::MAX`.
fn parse_offset(digits: &str) -> Option<u64> {
    let valid =
        (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if valid {
        digits.parse().ok()
    } else {
        None
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
        wire("node-z").event(CH, &Frame::from_encoded(&event.to_string(), "x.y"))
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
        let deep_payload = wire("node-z").event(CH, &Frame::from_encoded(&deep, "x.y"));
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
        let payload = wire("node-z").event("nova:user:u", &Frame::from_encoded(&direct.to_string(), "x.y"));
        assert!(wire("node-a").decode(&user, "nova:user:u", &payload).is_ok());
        direct["channel"] = json!("nope");
        let payload = wire("node-z").event("nova:user:u", &Frame::from_encoded(&direct.to_string(), "x.y"));
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

    /// The message the history script publishes for `frame`, sealed by
    /// `node`, at `position` (`<offset>,<epoch>`).
    fn numbered(node: &str, position: &str, frame: &Frame) -> Vec<u8> {
        let mut payload = format!("@{position}|").into_bytes();
        payload.extend_from_slice(&wire(node).event(CH, frame));
        payload
    }

    fn task(n: u64) -> Frame {
        protocol::encode("task_updated", Some("team:t1"), &json!({ "n": n }), None)
    }

    #[test]
    fn a_numbered_event_carries_its_position_and_offset() {
        let frame = task(1);
        let inbound = event(wire("node-b").decode(&channel(), CH, &numbered("node-a", "42,Ep-och_1", &frame)));
        assert_eq!(inbound.position, Some((42, "Ep-och_1".into())));
        assert_eq!(inbound.frame.text(), &crate::protocol::splice_offset(frame.text(), 42));
        assert!(inbound.frame.text().ends_with(r#","offset":42}"#));
        let v: Value = serde_json::from_str(inbound.frame.text()).unwrap();
        assert_eq!((v["offset"].as_u64(), v["data"]["n"].as_u64()), (Some(42), Some(1)));
        assert_eq!(inbound.presence, None);
        let max = event(wire("b").decode(&channel(), CH, &numbered("a", "18446744073709551615,e", &frame)));
        assert_eq!(max.position, Some((u64::MAX, "e".into())));
        let long = "x".repeat(MAX_EPOCH_LEN);
        assert!(wire("b").decode(&channel(), CH, &numbered("a", &format!("1,{long}"), &frame)).is_ok());
    }

    #[test]
    fn a_numbered_event_is_delivered_to_the_node_that_sent_it() {
        // Its local subscribers get it only through Redis, with its offset.
        let inbound = event(wire("node-a").decode(&channel(), CH, &numbered("node-a", "7,e1", &task(7))));
        assert_eq!(inbound.position, Some((7, "e1".into())));
        // Unnumbered, the same message is an echo, already delivered.
        assert!(matches!(wire("node-a").decode(&channel(), CH, &wire("node-a").event(CH, &task(7))), Ok(Decoded::Own)));
    }

    #[test]
    fn a_position_must_be_well_formed() {
        let frame = task(1);
        for position in ["0,e", "01,e", ",e", "x,e", "-1,e", "+1,e", " 1,e", "18446744073709551616,e", "1e", "1"] {
            let refused = wire("b").decode(&channel(), CH, &numbered("a", position, &frame)).unwrap_err();
            assert!(matches!(refused, Refused::Invalid(_)), "{position}: {refused:?}");
        }
        let long = "x".repeat(MAX_EPOCH_LEN + 1);
        for epoch in ["", long.as_str(), "a b", "é", "a,b", "a.b"] {
            let refused = wire("b").decode(&channel(), CH, &numbered("a", &format!("1,{epoch}"), &frame)).unwrap_err();
            assert!(refused.to_string().contains("epoch"), "{epoch}: {refused}");
        }
        // No bar within reach of the longest position.
        let refused = wire("b").decode(&channel(), CH, b"@1,e").unwrap_err();
        assert!(refused.to_string().contains("'@<offset>,<epoch>|'"), "{refused}");
        let far = format!("@1,{}|{}", "e".repeat(60), String::from_utf8(wire("a").event(CH, &frame)).unwrap());
        assert!(wire("b").decode(&channel(), CH, far.as_bytes()).is_err());
    }

    #[test]
    fn a_numbered_event_must_be_a_sealed_node_message_of_its_channel() {
        let frame = task(1);
        let good = numbered("a", "1,e", &frame);
        assert!(wire("b").decode(&channel(), CH, &good).is_ok());
        // An external publisher's event, a forged or stale seal, another
        // channel's message: all unsealed.
        let tampered = String::from_utf8(good.clone()).unwrap().replace(r#""n":1"#, r#""n":2"#).into_bytes();
        let zeros = "0".repeat(64);
        let text = frame.text().to_string();
        for payload in [
            br#"@1,e|{"type":"task_updated","data":{"n":1}}"#.to_vec(),
            format!(r#"@1,e|{{"nova":1,"origin":"a","event":{text},"mac":"{zeros}"}}"#).into_bytes(),
            format!("@1,e|{text}").into_bytes(),
            b"@1,e|".to_vec(),
            tampered,
        ] {
            let refused = wire("b").decode(&channel(), CH, &payload);
            assert!(matches!(refused, Err(Refused::Unsealed)), "{}: {refused:?}", String::from_utf8_lossy(&payload));
        }
        let t2 = Topic::Channel("team:t2".into());
        assert!(matches!(wire("b").decode(&t2, "nova:ch:team:t2", &good), Err(Refused::Unsealed)));
        // Only a channel's events, never a presence change, are numbered.
        let mut direct = b"@1,e|".to_vec();
        direct.extend_from_slice(&wire("a").event("nova:user:u", &frame));
        assert!(matches!(wire("b").decode(&Topic::User("u".into()), "nova:user:u", &direct), Err(Refused::Invalid(_))));
        let note = PresenceNote { user: "alice".into(), joined: true, seq: 1 };
        let mut presence = b"@1,e|".to_vec();
        presence.extend_from_slice(&wire("a").presence(
            CH,
            &crate::channel::presence_frame("team:t1", "alice", true),
            &note,
        ));
        assert!(matches!(wire("b").decode(&channel(), CH, &presence), Err(Refused::Invalid(_))));
        // The event inside is checked as any node's is.
        let mut bad = good_event();
        bad["type"] = json!("connection.ack");
        let mut wrong = b"@1,e|".to_vec();
        wrong.extend_from_slice(&sealed(&bad));
        assert!(matches!(wire("b").decode(&channel(), CH, &wrong), Err(Refused::Invalid(_))));
    }

    #[test]
    fn a_history_entry_is_checked_and_given_its_offset() {
        let frame = task(3);
        let stored = wire("a").event(CH, &frame);
        let entry = wire("b").history_entry(&channel(), CH, 9, &stored).unwrap();
        assert_eq!(entry.text(), &crate::protocol::splice_offset(frame.text(), 9));
        assert!(wire("b").history_entry(&channel(), CH, 0, &stored).is_err());
        assert!(matches!(wire("b").history_entry(&channel(), "nova:ch:team:t2", 9, &stored), Err(Refused::Unsealed)));
        assert!(matches!(wire("b").history_entry(&channel(), CH, 9, frame.text().as_bytes()), Err(Refused::Unsealed)));
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
