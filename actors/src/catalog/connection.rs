//! `connection.*`: authenticating, keeping alive, refreshing credentials and
//! learning why the server closes (seed 004 "connection management"), and
//! `error`, the answer to a request that failed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{event, from, Event, Violation};

/// `connection.init`: the first frame of every connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct InitData {
    /// A JWT (HS256). Send this or `api_key`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A configured API key. Send this or `token`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// With the development key only: the user to act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The protocol versions the client speaks: one, or a list of
    /// acceptable ones. Absent: version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolVersions>,
    /// Features the client understands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub capabilities: Option<Vec<String>>,
}

/// One protocol version, or a list of acceptable ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProtocolVersions {
    /// Exactly this version.
    One(#[schemars(range(min = 1))] u32),
    /// Any of these.
    Any(#[schemars(length(min = 1, max = 16))] Vec<u32>),
}

/// `connection.ack`: authentication succeeded.
#[derive(Serialize, Deserialize, JsonSchema)]
struct AckData {
    /// The server's id for this connection (`GET /ws/connections`).
    connection_id: String,
    /// The authenticated user.
    user_id: String,
    /// The user's tenant (the JWT's `tenant` claim, an API key's configured
    /// one); null for the default tenant.
    #[serde(default)]
    tenant: Option<String>,
    /// From `/ws/{client_id}`, when the client gave one.
    client_id: Option<String>,
    /// How often the server pings.
    heartbeat_interval_ms: u64,
    /// The protocol version chosen.
    protocol_version: u32,
    /// What the server implements (docs/protocol.md lists each).
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    /// When the JWT expires, RFC 3339; null for API keys.
    #[serde(default)]
    expires_at: Option<String>,
    /// This connection's limits.
    limits: AckLimits,
}

/// The limits `connection.ack` announces.
#[derive(Serialize, Deserialize, JsonSchema)]
struct AckLimits {
    max_frame_bytes: u64,
    max_outbound_bytes: u64,
    max_channels: u64,
    messages_per_second: u64,
    message_burst: u64,
}

/// No fields.
#[derive(Serialize, Deserialize, JsonSchema)]
pub(crate) struct Empty {}

/// `connection.reconnect`: a client that lost its connection takes its
/// channels back on a new one: as its first frame with credentials (one
/// round trip), or after `connection.init`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ReconnectData {
    /// As in `connection.init` (first frame only).
    #[serde(default)]
    token: Option<String>,
    /// As in `connection.init` (first frame only).
    #[serde(default)]
    api_key: Option<String>,
    /// As in `connection.init`, with `api_key`.
    #[serde(default)]
    user_id: Option<String>,
    /// As in `connection.init`.
    #[serde(default)]
    protocol: Option<ProtocolVersions>,
    /// As in `connection.init`.
    #[serde(default)]
    #[schemars(length(max = 32))]
    capabilities: Option<Vec<String>>,
    /// The channels to take back, each with the last position the client
    /// saw (`{}` when it has none: subscribed without recovery).
    #[schemars(extend("minProperties" = 1))]
    channels: std::collections::BTreeMap<String, Position>,
    /// The connection the client had before, for the logs.
    #[serde(default)]
    previous_connection_id: Option<String>,
}

/// Where a client was in a channel.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Position {
    /// The offset of the last event it received.
    #[serde(default)]
    offset: Option<u64>,
    /// The channel's epoch that offset belongs to.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    epoch: Option<String>,
}

/// `connection.refresh`: new credentials for the same user.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RefreshData {
    /// A fresh JWT for the same `sub`.
    pub token: String,
}

/// `connection.refreshed`: the new credentials are in force.
#[derive(Serialize, Deserialize, JsonSchema)]
struct RefreshedData {
    /// When the new token expires, RFC 3339.
    expires_at: Option<String>,
}

/// `connection.expiring`: refresh now.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ExpiringData {
    /// Milliseconds until the token expires and the connection is closed
    /// with 4002.
    expires_in_ms: u64,
}

/// `error` and `connection.error`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ErrorData {
    /// A code of docs/protocol.md's tables (40xx, or for `connection.error`
    /// the close code that follows).
    code: u16,
    /// What went wrong, for a person.
    message: String,
    /// With 4004: when the same request would pass.
    #[serde(default)]
    retry_after_ms: Option<u64>,
    /// With 4004: the limit that was hit.
    #[serde(default)]
    limit: Option<Value>,
    /// With 4005 for invalid `data`: each field at fault and the rule it
    /// broke.
    #[serde(default)]
    fields: Option<Vec<Violation>>,
    /// With 4010: the protocol versions the server speaks.
    #[serde(default)]
    protocol_versions: Option<Vec<u32>>,
    /// On `connection.error`: whether reconnecting (with backoff) may work.
    #[serde(default)]
    reconnect: Option<bool>,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("connection.init", from::CLIENT, Server, None, InitData,
        "Authenticate: the first frame, with a JWT or an API key, and optionally the protocol versions and capabilities.",
        {"token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "protocol": [1], "capabilities": ["token_refresh"]}),
    event!("connection.ack", from::SERVER, Delivered, None, AckData,
        "Authentication succeeded: who the connection is, the protocol version, capabilities and limits.",
        {"connection_id": "5f3a9c21-17", "user_id": "alice", "client_id": "tab1", "heartbeat_interval_ms": 30000,
         "protocol_version": 1, "capabilities": ["token_refresh"],
         "limits": {"max_frame_bytes": 1048576, "max_outbound_bytes": 2097152, "max_channels": 100,
                    "messages_per_second": 50, "message_burst": 100}}),
    event!(
        "connection.heartbeat",
        from::CLIENT_AND_SERVER,
        Server,
        None,
        Empty,
        "Keep-alive: a client's request is answered with one (reply_to set).",
        {}
    ),
    event!("connection.reconnect", from::CLIENT, Server, None, ReconnectData,
        "After a reconnect: take back channels, with the last position seen in each.",
        {"channels": {"conversation:c1": {"offset": 41, "epoch": "e1"}}, "previous_connection_id": "5f3a9c21-17"}),
    event!("connection.refresh", from::CLIENT, Server, None, RefreshData,
        "Replace the connection's token with a fresh one for the same user, without reconnecting.",
        {"token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}),
    event!("connection.refreshed", from::SERVER, Delivered, None, RefreshedData,
        "The refreshed token is in force.", {"expires_at": "2026-12-06T10:00:00.000Z"}),
    event!("connection.expiring", from::SERVER, Delivered, None, ExpiringData,
        "The token expires soon: refresh it or be closed with 4002.", {"expires_in_ms": 60000}),
    event!("connection.error", from::SERVER, Delivered, None, ErrorData,
        "Why the server is about to close the connection (code = the close code).",
        {"code": 4009, "message": "no heartbeat for 60 s", "reconnect": true}),
    event!("error", from::SERVER, Delivered, Optional, ErrorData,
        "A request failed (reply_to = its id); the connection stays unless a connection.error follows.",
        {"code": 4005, "message": "invalid 'chat.message': data.content: required string"}),
];
