//! The wire protocol: what a client may send, how it is validated, and the one
//! function that turns an outgoing event into the bytes every recipient gets.
//!
//! Every frame is a JSON text frame with the envelope
//! `{"id", "type", "channel"?, "data", "timestamp", "reply_to"?}`. Clients
//! send `id`, `type`, `data` and, for channel events, `channel`; the server
//! sets `id` and `timestamp` on everything it sends and `reply_to` on replies.
//! docs/protocol.md is the contract; this module is its implementation.

use std::fmt;
use std::time::{Instant, SystemTime};

use bytestring::ByteString;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::broker::Position;
use crate::catalog::channel::RecoverFrom;
use crate::catalog::{self, ChannelUse, Handling, Refusal, Sender, TeamPresenceUpdate, Violation};
use crate::codes::ErrorCode;

/// Sent in `connection.ack` so clients can tell protocol revisions apart.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this server speaks; `connection.init` may ask for
/// any of them (`data.protocol`) and gets the highest it shares.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

/// What this server does beyond the basics of its protocol version, named in
/// `connection.ack` (`data.capabilities`) so a client can tell what to rely
/// on. Only what is implemented is listed.
pub mod capability {
    /// `connection.refresh` / `connection.refreshed`: a JWT connection takes
    /// a new token without reconnecting.
    pub const TOKEN_REFRESH: &str = "token_refresh";
    /// `connection.expiring`: a JWT connection is warned before its token
    /// runs out.
    pub const EXPIRY_WARNING: &str = "expiry_warning";
    /// `connection.error`: every close the server initiates is announced
    /// with its code and reason first.
    pub const CONNECTION_ERROR: &str = "connection_error";
    /// `channel.presence` and the presence list of `channel.subscribed`.
    pub const PRESENCE: &str = "presence";
    /// `message.received`: a receipt for every `chat.message` and every
    /// request for an agent, once it is accepted for delivery.
    pub const RECEIPTS: &str = "receipts";

    /// All of them, as `connection.ack` lists them.
    pub const ALL: &[&str] = &[TOKEN_REFRESH, EXPIRY_WARNING, CONNECTION_ERROR, PRESENCE, RECEIPTS];
}

/// Longest `id` a client may put on a request.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// How deeply an event's `data` may nest objects and arrays (the `data`
/// object itself is the first level), whoever publishes it: REST, a client,
/// a node or a backend through Redis. Some clients' JSON parsers recurse and
/// crash on deep input, and every event reaches many clients.
pub const MAX_DATA_DEPTH: usize = 64;

/// The event types of the protocol, named once.
pub mod kind {
    /// Client → server: authenticate (the first frame).
    pub const INIT: &str = "connection.init";
    /// Server → client: authentication succeeded.
    pub const ACK: &str = "connection.ack";
    /// Client → server: new credentials (a JWT) for the same user.
    pub const REFRESH: &str = "connection.refresh";
    /// Server → client: the new credentials are in force.
    pub const REFRESHED: &str = "connection.refreshed";
    /// Server → client: the JWT runs out soon; refresh it.
    pub const EXPIRING: &str = "connection.expiring";
    /// Server → client: the server is about to close the connection, and why.
    pub const CONNECTION_ERROR: &str = "connection.error";
    /// Both ways: application-level keep-alive.
    pub const HEARTBEAT: &str = "connection.heartbeat";
    /// Client → server: join channels.
    pub const SUBSCRIBE: &str = "channel.subscribe";
    /// Server → client: one per channel joined.
    pub const SUBSCRIBED: &str = "channel.subscribed";
    /// Client → server: leave channels.
    pub const UNSUBSCRIBE: &str = "channel.unsubscribe";
    /// Server → client: one per channel left.
    pub const UNSUBSCRIBED: &str = "channel.unsubscribed";
    /// Server → client: a user joined or left a channel.
    pub const PRESENCE: &str = "channel.presence";
    /// Client → channel: a chat message.
    pub const CHAT_MESSAGE: &str = "chat.message";
    /// Client → channel: a typing indicator.
    pub const CHAT_TYPING: &str = "chat.typing";
    /// Server → client: receipt for a `chat.message`.
    pub const MESSAGE_RECEIVED: &str = "message.received";
    /// Server → client: a request failed.
    pub const ERROR: &str = "error";
    /// Client → server: take channels back after a reconnect.
    pub const RECONNECT: &str = "connection.reconnect";
    /// Both ways: a member's status on a team channel.
    pub const TEAM_PRESENCE: &str = "team.presence.update";
    /// Client → agent: run an agent (channel `agent:{name}`).
    pub const AGENT_INVOKE: &str = "agent.invoke";
    /// Client → agent: the user's answer to an interactive tool call.
    pub const TOOL_CALL_RESPONSE: &str = "tool.call.response";
    /// Backend → client: a tool call begins (naming its agent, for the
    /// routing of the response).
    pub const TOOL_CALL_START: &str = "tool.call.start";
    /// Backend → clients: an answer begins.
    pub const ASSISTANT_START: &str = "assistant.start";
    /// Backend → clients: the next chunk of an answer.
    pub const ASSISTANT_TOKEN: &str = "assistant.token";
    /// Backend → clients: an answer finished.
    pub const ASSISTANT_COMPLETE: &str = "assistant.complete";
    /// Backend → clients: an answer failed.
    pub const ASSISTANT_ERROR: &str = "assistant.error";
    /// Server → client: an answer so far, for a client that joined or
    /// returned mid-answer.
    pub const ASSISTANT_SNAPSHOT: &str = "assistant.snapshot";
}

/// An encoded frame, ready to write, with the moment it was made so the
/// session can measure publish→write latency.
#[derive(Clone, Debug)]
pub struct Frame {
    text: ByteString,
    created: Instant,
    /// Its type's family ([`catalog::FAMILY_LABELS`]), found once per
    /// event so a session counts frames by family without parsing them.
    family: u8,
}

impl Frame {
    /// The JSON text.
    pub fn text(&self) -> &ByteString {
        &self.text
    }

    /// Length in bytes, what budgets count.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether the frame is empty (never, for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// When the frame was encoded.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Its type's family: an index into [`catalog::FAMILY_LABELS`].
    pub fn family(&self) -> u8 {
        self.family
    }

    /// The same event with `"offset":offset` as its last field: the one
    /// copy a channel with history makes of an event, once, whatever the
    /// number of subscribers.
    pub fn with_offset(&self, offset: u64) -> Frame {
        Frame { text: ByteString::from(splice_offset(&self.text, offset)), created: self.created, family: self.family }
    }

    /// A frame another node encoded, taken as it is: the text must be one
    /// JSON object of type `kind` (the caller has parsed it). Its clock
    /// starts now, so this node's latency figures measure this node.
    pub fn from_encoded(text: &str, kind: &str) -> Frame {
        Frame { text: ByteString::from(text), created: Instant::now(), family: catalog::family_of(kind) }
    }
}

/// `text` (one JSON object) with `"offset":offset` added as its last
/// field.
pub fn splice_offset(text: &str, offset: u64) -> String {
    let body = text.trim_end().strip_suffix('}').unwrap_or(text);
    let mut out = String::with_capacity(body.len() + 32);
    out.push_str(body);
    // An empty object takes no comma.
    if !body.trim_end().ends_with('{') {
        out.push(',');
    }
    out.push_str("\"offset\":");
    out.push_str(itoa::Buffer::new().format(offset));
    out.push('}');
    out
}

/// `SystemTime` as RFC 3339 with milliseconds, written without an
/// intermediate `String`.
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

#[derive(Serialize)]
struct Envelope<'a, D: Serialize + ?Sized> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: &'a D,
    timestamp: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

/// `t` as RFC 3339 in UTC with milliseconds, the format of every
/// `timestamp`; `None` past the year 9999, which the format cannot write.
pub fn rfc3339(t: SystemTime) -> Option<String> {
    use std::fmt::Write;
    let mut text = String::new();
    // The formatter fails (rather than panics) past the year 9999.
    write!(text, "{}", humantime::format_rfc3339_millis(t)).ok().map(|()| text)
}

/// A fresh event id (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Encodes one outgoing frame with the given id. This is the only place that
/// produces wire bytes: a published event goes through it once and the
/// resulting [`Frame`] is shared by every recipient.
pub fn encode_with_id<D: Serialize + ?Sized>(
    id: &str,
    kind: &str,
    channel: Option<&str>,
    data: &D,
    reply_to: Option<&str>,
) -> Frame {
    let envelope =
        Envelope { id, kind, channel, data, timestamp: Timestamp(SystemTime::now()), reply_to, source: None };
    finish(kind, &envelope)
}

/// Encodes an event that names its `source` (the service that made it), as
/// settings events do.
pub fn encode_sourced<D: Serialize + ?Sized>(kind: &str, channel: Option<&str>, data: &D, source: &str) -> Frame {
    let id = new_id();
    let envelope = Envelope {
        id: &id,
        kind,
        channel,
        data,
        timestamp: Timestamp(SystemTime::now()),
        reply_to: None,
        source: Some(source),
    };
    finish(kind, &envelope)
}

fn finish<D: Serialize + ?Sized>(kind: &str, envelope: &Envelope<'_, D>) -> Frame {
    // Serializing plain structs, strings and `serde_json::Value` into a
    // String cannot fail: there is no I/O and every map key is a string.
    let text = serde_json::to_string(envelope).unwrap_or_else(|e| {
        log::error!("encoding a '{kind}' frame failed: {e}");
        String::from("{}")
    });
    Frame { text: ByteString::from(text), created: Instant::now(), family: catalog::family_of(kind) }
}

/// Encodes one outgoing frame with a fresh id.
pub fn encode<D: Serialize + ?Sized>(kind: &str, channel: Option<&str>, data: &D, reply_to: Option<&str>) -> Frame {
    encode_with_id(&new_id(), kind, channel, data, reply_to)
}

#[derive(Serialize)]
struct ErrorData<'a> {
    code: u16,
    message: &'a str,
    #[serde(skip_serializing_if = "<[Violation]>::is_empty")]
    fields: &'a [Violation],
}

/// An `error` frame.
pub fn error_frame(code: ErrorCode, message: &str, channel: Option<&str>, reply_to: Option<&str>) -> Frame {
    encode(kind::ERROR, channel, &ErrorData { code: code.as_u16(), message, fields: &[] }, reply_to)
}

/// The `error` frame of a refused request: with `data.fields` when the
/// catalog named the fields at fault.
pub fn rejection_frame(rejection: &Rejection, channel: Option<&str>) -> Frame {
    let data = ErrorData { code: rejection.code.as_u16(), message: &rejection.message, fields: &rejection.fields };
    encode(kind::ERROR, channel, &data, rejection.reply_to.as_deref())
}

#[derive(Serialize)]
struct ErrorDataWith<'a, E: Serialize + ?Sized> {
    code: u16,
    message: &'a str,
    #[serde(flatten)]
    extra: &'a E,
}

/// An `error` frame whose `data` carries, beside `code` and `message`, the
/// fields of `extra` (a struct or map; its own `code` or `message` would
/// repeat those keys, so it has none).
pub fn error_frame_with<E: Serialize + ?Sized>(
    code: ErrorCode,
    message: &str,
    channel: Option<&str>,
    reply_to: Option<&str>,
    extra: &E,
) -> Frame {
    encode(kind::ERROR, channel, &ErrorDataWith { code: code.as_u16(), message, extra }, reply_to)
}

/// A request the server refuses, with what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The request's id, when it had a readable one.
    pub reply_to: Option<String>,
    /// The error code for the `error` frame.
    pub code: ErrorCode,
    /// A message naming what was wrong.
    pub message: String,
    /// The fields of `data` at fault, when the catalog's schema refused it.
    pub fields: Vec<Violation>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.as_u16(), self.message)
    }
}

impl Rejection {
    fn invalid(reply_to: Option<&str>, message: impl Into<String>) -> Self {
        Rejection {
            reply_to: reply_to.map(str::to_owned),
            code: ErrorCode::InvalidMessage,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// What the catalog said, as an answer to a client: 4003 for a type
    /// clients may not send, 4005 with the fields for invalid `data` (4001
    /// for an invalid `connection.init`, which closes the connection).
    fn refused(reply_to: Option<&str>, refusal: Refusal) -> Self {
        let message = refusal.to_string();
        let reply_to = reply_to.map(str::to_owned);
        match refusal {
            Refusal::NotFrom { .. } => {
                Rejection { reply_to, code: ErrorCode::PermissionDenied, message, fields: Vec::new() }
            }
            Refusal::Invalid { kind, violations } => {
                let code = if kind == kind::INIT { ErrorCode::InvalidToken } else { ErrorCode::InvalidMessage };
                Rejection { reply_to, code, message, fields: violations }
            }
            // Only published events are refused for being unknown.
            Refusal::Unknown(_) => Rejection::invalid(reply_to.as_deref(), message),
        }
    }
}

/// The credentials of a `connection.init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `data.token`: a JWT.
    Token(String),
    /// `data.api_key`, and for the development key an optional
    /// `data.user_id` to act as.
    ApiKey {
        /// The key.
        key: String,
        /// The user to act as (development key only).
        user_id: Option<String>,
    },
}

/// The event types a client may publish to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// `chat.message`: gets a `message.received` receipt.
    ChatMessage,
    /// `chat.typing`: no receipt.
    ChatTyping,
}

impl ClientEvent {
    /// The wire type.
    pub fn kind(self) -> &'static str {
        match self {
            ClientEvent::ChatMessage => kind::CHAT_MESSAGE,
            ClientEvent::ChatTyping => kind::CHAT_TYPING,
        }
    }
}

/// A channel a client asks to join, with where it was when it asks to
/// recover what it missed.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The name as sent.
    pub name: String,
    /// The last offset and epoch it saw there.
    pub recover: Option<Position>,
}

/// What a valid client frame asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `connection.init`.
    Init {
        /// The credentials.
        credentials: Credentials,
        /// `data.protocol` as sent: the versions the client accepts. The
        /// session checks and negotiates it.
        protocol: Option<Value>,
        /// `data.capabilities` as sent: what the client understands.
        capabilities: Option<Value>,
    },
    /// `connection.refresh` with its `data.token`.
    Refresh(String),
    /// `connection.heartbeat`.
    Heartbeat,
    /// `channel.subscribe` with the names as sent (each is checked on its
    /// own, so one bad name does not spoil the rest).
    Subscribe(Vec<Wanted>),
    /// `channel.unsubscribe`.
    Unsubscribe(Vec<String>),
    /// `connection.reconnect`: the channels to take back, with the
    /// credentials when it is the first frame.
    Reconnect {
        /// Present when the client sent `token` or `api_key`.
        credentials: Option<Credentials>,
        /// As `Init`'s.
        protocol: Option<Value>,
        /// As `Init`'s.
        capabilities: Option<Value>,
        /// The channels.
        channels: Vec<Wanted>,
    },
    /// `team.presence.update`: the user's status on a team channel.
    TeamStatus {
        /// The channel name as sent.
        channel: String,
        /// The status (its `user_id`, if the client sent one, is ignored).
        update: TeamPresenceUpdate,
    },
    /// A catalog type meant for an agent (`chat.configure`, `agent.invoke`,
    /// …), valid by its schema.
    ForAgent {
        /// The type.
        kind: &'static str,
        /// The channel name as sent, when there is one.
        channel: Option<String>,
        /// The client's `data`.
        data: Map<String, Value>,
    },
    /// `chat.message` or `chat.typing` to a channel.
    Publish {
        /// Which event.
        event: ClientEvent,
        /// The channel name as sent.
        channel: String,
        /// The client's `data`; the server overwrites `sender_id` (and
        /// `message_id`) before it goes out.
        data: Map<String, Value>,
    },
}

impl Action {
    /// The request's wire `type`, by which the limits per type name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Init { .. } => kind::INIT,
            Action::Refresh(_) => kind::REFRESH,
            Action::Heartbeat => kind::HEARTBEAT,
            Action::Subscribe(_) => kind::SUBSCRIBE,
            Action::Unsubscribe(_) => kind::UNSUBSCRIBE,
            Action::Publish { event, .. } => event.kind(),
            Action::Reconnect { .. } => kind::RECONNECT,
            Action::TeamStatus { .. } => kind::TEAM_PRESENCE,
            Action::ForAgent { kind, .. } => kind,
        }
    }
}

/// A client frame that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The client's id for this request, echoed as `reply_to`.
    pub id: String,
    /// What it asks for.
    pub action: Action,
}

/// How deeply `json` nests objects and arrays, counting stops once past
/// `stop_above` (so an absurdly deep input costs no more than a shallow
/// one). A byte scan, without parsing or recursion: it is meant to run
/// before a parser sees the text, and gives a bound for any input, valid
/// JSON or not.
pub fn json_depth(json: &[u8], stop_above: usize) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > stop_above {
                        break;
                    }
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether an event or client frame (`{…,"data":{…}}`, the `data` object
/// one level in) nests its `data` deeper than [`MAX_DATA_DEPTH`].
pub fn data_too_deep(frame: &[u8]) -> bool {
    json_depth(frame, MAX_DATA_DEPTH + 1) > MAX_DATA_DEPTH + 1
}

/// Parses and validates one client text frame.
pub fn parse_request(text: &str) -> Result<Request, Rejection> {
    // Before parsing: what a client sends in `data` reaches other clients.
    if data_too_deep(text.as_bytes()) {
        return Err(Rejection::invalid(None, format!("'data' nests deeper than {MAX_DATA_DEPTH} levels")));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| Rejection::invalid(None, format!("malformed JSON: {e}")))?;
    let Value::Object(mut frame) = value else {
        return Err(Rejection::invalid(None, "a frame must be a JSON object"));
    };
    let id = match frame.remove("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN => id,
        Some(Value::String(_)) => {
            return Err(Rejection::invalid(None, "field 'id' must be 1 to 128 characters"));
        }
        Some(_) => return Err(Rejection::invalid(None, "field 'id' must be a string")),
        None => return Err(Rejection::invalid(None, "missing field 'id'")),
    };
    let reply_to = Some(id.as_str());
    let kind = match frame.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(Rejection::invalid(reply_to, "field 'type' must be a string")),
        None => return Err(Rejection::invalid(reply_to, "missing field 'type'")),
    };
    let data = match frame.remove("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(Rejection::invalid(reply_to, "field 'data' must be an object")),
    };
    let channel = match frame.remove("channel") {
        Some(Value::String(channel)) => Some(channel),
        None | Some(Value::Null) => None,
        Some(_) => return Err(Rejection::invalid(reply_to, "field 'channel' must be a string")),
    };

    // The catalog decides: whether clients may send this type at all, and
    // whether its `data` is what the type says.
    let data = Value::Object(data);
    let event = match catalog::check(&kind, Sender::Client, &data) {
        Ok(Some(event)) => event,
        Ok(None) => {
            let shown: String = kind.chars().take(64).filter(|c| !c.is_control()).collect();
            return Err(Rejection::invalid(reply_to, format!("unknown type '{shown}'")));
        }
        Err(refusal) => return Err(Rejection::refused(reply_to, refusal)),
    };
    let Value::Object(data) = data else { return Err(Rejection::invalid(reply_to, "field 'data' must be an object")) };
    if event.channel == ChannelUse::Required && channel.is_none() {
        return Err(Rejection::invalid(reply_to, format!("'{}' needs a 'channel'", event.name)));
    }

    let action = match (event.name, channel) {
        (kind::INIT, _) => {
            let (protocol, capabilities) = (data.get("protocol").cloned(), data.get("capabilities").cloned());
            Action::Init { credentials: credentials(reply_to, data)?, protocol, capabilities }
        }
        (kind::REFRESH, _) => match data.get("token") {
            Some(Value::String(token)) => Action::Refresh(token.clone()),
            _ => return Err(Rejection::invalid(reply_to, "'connection.refresh' needs a string 'data.token'")),
        },
        (kind::HEARTBEAT, _) => Action::Heartbeat,
        (kind::SUBSCRIBE, _) => {
            let recover = data.get("recover").cloned();
            let names = channel_list(reply_to, data)?;
            Action::Subscribe(wanted(reply_to, names, recover)?)
        }
        (kind::UNSUBSCRIBE, _) => Action::Unsubscribe(channel_list(reply_to, data)?),
        (kind::RECONNECT, _) => {
            let mut channels = Vec::new();
            if let Some(Value::Object(given)) = data.get("channels") {
                for (name, at) in given {
                    // The catalog checked the types; a position is both
                    // fields or none, as in `data.recover`.
                    let offset = at.get("offset").filter(|v| !v.is_null()).map(Value::as_u64);
                    let epoch = at.get("epoch").filter(|v| !v.is_null()).map(Value::as_str);
                    let recover = match (offset, epoch) {
                        (None, None) => None,
                        (Some(Some(offset)), Some(Some(epoch))) => Some(Position { offset, epoch: epoch.into() }),
                        _ => {
                            let shown: String = name.chars().take(140).filter(|c| !c.is_control()).collect();
                            let message =
                                format!("the position of '{shown}' needs both 'offset' and 'epoch', or neither");
                            return Err(Rejection::invalid(reply_to, message));
                        }
                    };
                    channels.push(Wanted { name: name.clone(), recover });
                }
            }
            let (protocol, capabilities) = (data.get("protocol").cloned(), data.get("capabilities").cloned());
            let credentials = match data.contains_key("token") || data.contains_key("api_key") {
                true => Some(credentials(reply_to, data)?),
                false => None,
            };
            Action::Reconnect { credentials, protocol, capabilities, channels }
        }
        (kind::TEAM_PRESENCE, Some(channel)) => {
            let update = serde_json::from_value(Value::Object(data))
                .map_err(|e| Rejection::invalid(reply_to, format!("invalid 'team.presence.update': {e}")))?;
            Action::TeamStatus { channel, update }
        }
        (kind::CHAT_MESSAGE, Some(channel)) => Action::Publish { event: ClientEvent::ChatMessage, channel, data },
        (kind::CHAT_TYPING, Some(channel)) => Action::Publish { event: ClientEvent::ChatTyping, channel, data },
        (name, channel) if event.handling == Handling::Agent => Action::ForAgent { kind: name, channel, data },
        (name, _) => return Err(Rejection::invalid(reply_to, format!("'{name}' is not handled by this server"))),
    };
    Ok(Request { id, action })
}

fn credentials(reply_to: Option<&str>, mut data: Map<String, Value>) -> Result<Credentials, Rejection> {
    let auth_error = |message: &str| Rejection {
        reply_to: reply_to.map(str::to_owned),
        code: ErrorCode::InvalidToken,
        message: message.to_owned(),
        fields: Vec::new(),
    };
    match (data.remove("token"), data.remove("api_key")) {
        (Some(Value::String(token)), None) => Ok(Credentials::Token(token)),
        (None, Some(Value::String(key))) => {
            let user_id = match data.remove("user_id") {
                Some(Value::String(user)) => Some(user),
                None | Some(Value::Null) => None,
                Some(_) => return Err(auth_error("'data.user_id' must be a string")),
            };
            Ok(Credentials::ApiKey { key, user_id })
        }
        (Some(_), Some(_)) => Err(auth_error("send either 'data.token' or 'data.api_key', not both")),
        (None, None) => Err(auth_error("'connection.init' needs 'data.token' or 'data.api_key'")),
        _ => Err(auth_error("'data.token' and 'data.api_key' must be strings")),
    }
}

/// The names of a `channel.subscribe` with the positions of its
/// `data.recover`, each of which must name one of them.
fn wanted(reply_to: Option<&str>, names: Vec<String>, recover: Option<Value>) -> Result<Vec<Wanted>, Rejection> {
    let mut recover: std::collections::BTreeMap<String, RecoverFrom> = match recover {
        None | Some(Value::Null) => Default::default(),
        Some(value) => serde_json::from_value(value)
            .map_err(|e| Rejection::invalid(reply_to, format!("invalid 'data.recover': {e}")))?,
    };
    let mut wanted: Vec<Wanted> = Vec::with_capacity(names.len());
    for name in names {
        // A name given twice is one subscription, answered once.
        if wanted.iter().any(|w| w.name == name) {
            continue;
        }
        let recover = recover.remove(&name).map(|at| Position { offset: at.offset, epoch: at.epoch.into() });
        wanted.push(Wanted { name, recover });
    }
    if let Some(stray) = recover.keys().next() {
        let shown: String = stray.chars().take(140).filter(|c| !c.is_control()).collect();
        return Err(Rejection::invalid(
            reply_to,
            format!("'data.recover' names '{shown}', which 'data.channels' does not"),
        ));
    }
    Ok(wanted)
}

fn channel_list(reply_to: Option<&str>, mut data: Map<String, Value>) -> Result<Vec<String>, Rejection> {
    let Some(Value::Array(items)) = data.remove("channels") else {
        return Err(Rejection::invalid(reply_to, "'data.channels' must be a list of channel names"));
    };
    if items.is_empty() {
        return Err(Rejection::invalid(reply_to, "'data.channels' is empty"));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(name) => Ok(name),
            _ => Err(Rejection::invalid(reply_to, "'data.channels' must hold only strings")),
        })
        .collect()
}

/// Checks an event type given to the publish API: 1–64 characters of
/// letters, digits and `_ . -`, not one of the protocol's own namespaces
/// (clients must be able to trust `connection.*`, `channel.*` and `error`).
pub fn check_publish_type(kind: &str) -> Result<(), String> {
    if kind.is_empty() || kind.len() > 64 {
        return Err("'type' must be 1 to 64 characters".into());
    }
    if !kind.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err("'type' may hold only letters, digits and _ . -".into());
    }
    if kind == kind::ERROR || kind.starts_with("connection.") || kind.starts_with("channel.") {
        return Err(format!("'type' '{kind}' is reserved for the protocol"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Rejection {
        parse_request(text).unwrap_err()
    }

    #[test]
    fn parses_init_with_token_or_key() {
        let r = parse_request(r#"{"id":"1","type":"connection.init","data":{"token":"t"}}"#).unwrap();
        let init = Action::Init { credentials: Credentials::Token("t".into()), protocol: None, capabilities: None };
        assert_eq!(r, Request { id: "1".into(), action: init });
        let r = parse_request(r#"{"id":"1","type":"connection.init","data":{"api_key":"k","user_id":"u"}}"#).unwrap();
        let key = Credentials::ApiKey { key: "k".into(), user_id: Some("u".into()) };
        assert_eq!(r.action, Action::Init { credentials: key, protocol: None, capabilities: None });
    }

    #[test]
    fn init_carries_protocol_and_capabilities_as_sent() {
        let text = r#"{"id":"1","type":"connection.init","data":{"token":"t","protocol":[1,2],"capabilities":["x"]}}"#;
        let Action::Init { protocol, capabilities, .. } = parse_request(text).unwrap().action else {
            panic!("not an init")
        };
        assert_eq!(protocol, Some(serde_json::json!([1, 2])));
        assert_eq!(capabilities, Some(serde_json::json!(["x"])), "names are checked by the session");
        // Their types are the catalog's: a malformed init is a failed one.
        let text = r#"{"id":"1","type":"connection.init","data":{"token":"t","capabilities":"x"}}"#;
        let r = parse_request(text).unwrap_err();
        assert_eq!(
            (r.code, r.message.as_str()),
            (ErrorCode::InvalidToken, "invalid 'connection.init': data.capabilities: must be an array")
        );
    }

    #[test]
    fn refresh_needs_a_string_token() {
        let r = parse_request(r#"{"id":"2","type":"connection.refresh","data":{"token":"t"}}"#).unwrap();
        assert_eq!(r.action, Action::Refresh("t".into()));
        for bad in [
            r#"{"id":"2","type":"connection.refresh"}"#,
            r#"{"id":"2","type":"connection.refresh","data":{"token":1}}"#,
        ] {
            let r = rejected(bad);
            assert_eq!((r.code, r.reply_to.as_deref()), (ErrorCode::InvalidMessage, Some("2")));
            assert!(r.message.contains("data.token"), "{}", r.message);
        }
    }

    #[test]
    fn init_without_credentials_is_an_auth_error() {
        let r = rejected(r#"{"id":"1","type":"connection.init","data":{}}"#);
        assert_eq!(r.code, ErrorCode::InvalidToken);
        assert_eq!(r.reply_to.as_deref(), Some("1"));
        let r = rejected(r#"{"id":"1","type":"connection.init","data":{"token":"a","api_key":"b"}}"#);
        assert_eq!(r.code, ErrorCode::InvalidToken);
    }

    #[test]
    fn malformed_json_is_4005() {
        let r = rejected("{not json");
        assert_eq!(r.code, ErrorCode::InvalidMessage);
        assert!(r.message.starts_with("malformed JSON"));
        assert_eq!(r.reply_to, None);
        assert_eq!(rejected("[1,2]").code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn missing_or_mistyped_fields_name_the_field() {
        assert!(rejected(r#"{"type":"connection.heartbeat"}"#).message.contains("'id'"));
        assert!(rejected(r#"{"id":5,"type":"connection.heartbeat"}"#).message.contains("'id'"));
        assert!(rejected(r#"{"id":"1"}"#).message.contains("'type'"));
        assert!(rejected(r#"{"id":"1","type":7}"#).message.contains("'type'"));
        assert!(rejected(r#"{"id":"1","type":"connection.heartbeat","data":[]}"#).message.contains("'data'"));
        let r = rejected(r#"{"id":"1","type":"chat.message","data":{"content":"x"}}"#);
        assert!(r.message.contains("'channel'"));
        let r = rejected(r#"{"id":"1","type":"chat.message","channel":"team:a","data":{"content":3}}"#);
        assert!(r.message.contains("data.content"));
        let r = rejected(r#"{"id":"1","type":"channel.subscribe","data":{"channels":"team:a"}}"#);
        assert!(r.message.contains("data.channels"));
        let r = rejected(r#"{"id":"1","type":"channel.subscribe","data":{"channels":[]}}"#);
        assert!(r.message.contains("data.channels: at least 1 items"), "{}", r.message);
    }

    #[test]
    fn overlong_id_is_refused() {
        let frame = format!(r#"{{"id":"{}","type":"connection.heartbeat"}}"#, "x".repeat(129));
        assert!(rejected(&frame).message.contains("1 to 128"));
    }

    #[test]
    fn unknown_type_is_named() {
        let r = rejected(r#"{"id":"9","type":"chat.explode"}"#);
        assert_eq!(r.code, ErrorCode::InvalidMessage);
        assert_eq!(r.message, "unknown type 'chat.explode'");
        assert_eq!(r.reply_to.as_deref(), Some("9"));
    }

    #[test]
    fn chat_message_keeps_extra_data() {
        let r = parse_request(
            r#"{"id":"3","type":"chat.message","channel":"conversation:c1","data":{"content":"hi","thread":"t"}}"#,
        )
        .unwrap();
        let Action::Publish { event, channel, data } = r.action else { panic!("not a publish") };
        assert_eq!(event, ClientEvent::ChatMessage);
        assert_eq!(channel, "conversation:c1");
        assert_eq!(data["thread"], "t");
    }

    #[test]
    fn encoded_frame_has_the_envelope() {
        let frame = encode("x.y", Some("team:t"), &serde_json::json!({"a":1}), Some("7"));
        let v: Value = serde_json::from_str(frame.text()).unwrap();
        assert_eq!(v["type"], "x.y");
        assert_eq!(v["channel"], "team:t");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["reply_to"], "7");
        assert_eq!(v["id"].as_str().unwrap().len(), 36);
        let ts = v["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        let bare = encode("x", None, &serde_json::json!({}), None);
        let v: Value = serde_json::from_str(bare.text()).unwrap();
        assert!(v.get("channel").is_none() && v.get("reply_to").is_none());
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert_eq!(json_depth(b"{}", 10), 1);
        assert_eq!(json_depth(br#"{"a":[{"b":[]}],"c":{}}"#, 10), 4);
        assert_eq!(json_depth(br#"{"a":"[[[{{{\"[[["}"#, 10), 1, "brackets in strings, escaped quotes");
        assert_eq!(json_depth(b"not json", 10), 0);
        let deep = format!("{}{}", "[".repeat(300_000), "]".repeat(300_000));
        assert_eq!(json_depth(deep.as_bytes(), 64), 65, "the scan stops once past the limit");
    }

    #[test]
    fn data_deeper_than_the_limit_is_refused_before_parsing() {
        let nested = |levels: usize| {
            format!(
                r#"{{"id":"1","type":"chat.message","channel":"team:t1","data":{}"content":"x"{}}}"#,
                "{\"a\":".repeat(levels - 1) + "{",
                "}".repeat(levels)
            )
        };
        let at_limit = nested(MAX_DATA_DEPTH);
        assert_eq!(json_depth(at_limit.as_bytes(), 1000), MAX_DATA_DEPTH + 1);
        assert!(!data_too_deep(at_limit.as_bytes()));
        let over = nested(MAX_DATA_DEPTH + 1);
        assert!(data_too_deep(over.as_bytes()));
        assert!(rejected(&over).message.contains("deeper than 64"));
    }

    #[test]
    fn every_action_names_the_type_it_was_parsed_from() {
        for frame in [
            r#"{"id":"1","type":"connection.init","data":{"token":"t"}}"#,
            r#"{"id":"1","type":"connection.heartbeat"}"#,
            r#"{"id":"1","type":"channel.subscribe","data":{"channels":["team:a"]}}"#,
            r#"{"id":"1","type":"channel.unsubscribe","data":{"channels":["team:a"]}}"#,
            r#"{"id":"1","type":"chat.message","channel":"team:a","data":{"content":"x"}}"#,
            r#"{"id":"1","type":"chat.typing","channel":"team:a"}"#,
        ] {
            let sent: Value = serde_json::from_str(frame).unwrap();
            assert_eq!(parse_request(frame).unwrap().action.kind(), sent["type"], "{frame}");
        }
    }

    #[test]
    fn an_error_frame_may_carry_more_fields() {
        let extra = serde_json::json!({"retry_after_ms": 5, "limit": {"scope": "user"}});
        let frame = error_frame_with(ErrorCode::RateLimited, "slow down", None, Some("4"), &extra);
        let v: Value = serde_json::from_str(frame.text()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["reply_to"], "4");
        assert_eq!(
            v["data"],
            serde_json::json!({"code": 4004, "message": "slow down", "retry_after_ms": 5, "limit": {"scope": "user"}})
        );
    }

    #[test]
    fn publish_types_are_checked() {
        assert!(check_publish_type("assistant.token").is_ok());
        assert!(check_publish_type("prompt_updated").is_ok());
        for bad in ["", "a b", "connection.ack", "channel.presence", "error", &"x".repeat(65)] {
            assert!(check_publish_type(bad).is_err(), "{bad}");
        }
    }
}
