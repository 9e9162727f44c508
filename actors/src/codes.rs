//! The one table of error codes (sent in `error` frames) and close codes (sent
//! when the server ends a connection).
//!
//! Error codes 4001–4007 are the application team's catalog (seeds document
//! 004). Where an error ends the connection, the same number is used as the
//! close code, so a client reads one table. The codes in the 4008+ range are
//! this server's own additions; [`Close::reconnect`] tells a client what to
//! do after each close. Before every close it initiates, the server sends a
//! `connection.error` naming the close code (see `session.rs`).

use std::fmt;

/// The code in an `error` frame's `data.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Missing, malformed or unverifiable credentials, or a request sent
    /// before `connection.init`.
    InvalidToken = 4001,
    /// A JWT whose `exp` has passed.
    TokenExpired = 4002,
    /// The credentials do not allow this channel, or a limit of the
    /// connection forbids it.
    PermissionDenied = 4003,
    /// The connection sends faster than its rate limit, or the request is
    /// over its user's limit (over all requests, or for its type).
    RateLimited = 4004,
    /// Malformed JSON, a missing or mistyped field, an unknown `type`, a
    /// binary frame.
    InvalidMessage = 4005,
    /// A channel name that is not well formed or names no known namespace.
    ChannelNotFound = 4006,
    /// A request for agents that the gateway cannot accept: no agent takes
    /// it, or one is disabled, unavailable or has a full queue.
    AgentUnavailable = 4007,
    /// `connection.init` asked only for protocol versions this server does
    /// not speak.
    UnsupportedVersion = 4010,
}

impl ErrorCode {
    /// The number sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// Why the server closes a connection; the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client asked to close, or the server closes for no fault.
    Normal,
    /// A text frame that is not UTF-8 (RFC 6455).
    InvalidPayload,
    /// A frame, or a fragmented message, over the size limit (RFC 6455).
    MessageTooBig,
    /// A WebSocket protocol violation (RFC 6455).
    ProtocolError,
    /// The server is shutting down or restarting: reconnect, possibly to
    /// another node.
    ServiceRestart,
    /// Authentication failed, timed out, or was not the first frame; or a
    /// `connection.refresh` presented a token for another user.
    InvalidToken,
    /// The JWT expired, at `connection.init` or while connected.
    TokenExpired,
    /// The client did not read fast enough and its outbound budget ran out.
    SlowConsumer,
    /// The client missed two heartbeats.
    HeartbeatTimeout,
    /// The client kept sending far over its rate limit (see
    /// `session::FLOOD_FACTOR`): frames cost the server CPU even when they
    /// are dropped, so a flood ends the connection (RFC 6455).
    PolicyViolation,
    /// Too many failed authentications from the client's address: it is
    /// refused for a while, whatever it sends (see `throttle.rs`).
    AuthThrottled,
    /// The node has as many authenticated connections as it may hold:
    /// reconnect later, or to another node (RFC 6455 "try again later").
    TryAgainLater,
    /// `connection.init` asked only for protocol versions this server does
    /// not speak: the client must change before it reconnects. A code of
    /// this server's own rather than 1002, which names WebSocket framing
    /// errors, so a client can tell "upgrade me" from "you are broken".
    UnsupportedVersion,
    /// An operator ended the connection (`DELETE /api/connections/{id}`,
    /// the dashboard's "disconnect"). The client must not come straight
    /// back on its own: that would undo what the operator did.
    Disconnected,
}

impl Close {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Close::Normal => 1000,
            Close::InvalidPayload => 1007,
            Close::MessageTooBig => 1009,
            Close::ProtocolError => 1002,
            Close::ServiceRestart => 1012,
            Close::InvalidToken => 4001,
            Close::TokenExpired => 4002,
            Close::SlowConsumer => 4008,
            Close::HeartbeatTimeout => 4009,
            Close::PolicyViolation => 1008,
            Close::AuthThrottled => 4004,
            Close::TryAgainLater => 1013,
            Close::UnsupportedVersion => 4010,
            Close::Disconnected => 4011,
        }
    }

    /// The close reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Close::Normal => "normal closure",
            Close::InvalidPayload => "text frame is not valid UTF-8",
            Close::MessageTooBig => "message too big",
            Close::ProtocolError => "websocket protocol error",
            Close::ServiceRestart => "server restarting, reconnect",
            Close::InvalidToken => "invalid token",
            Close::TokenExpired => "token expired",
            Close::SlowConsumer => "slow consumer: outbound buffer full",
            Close::HeartbeatTimeout => "heartbeat timeout",
            Close::PolicyViolation => "policy violation: frames far over the rate limit",
            Close::AuthThrottled => "too many failed authentications from this address",
            Close::TryAgainLater => "server full, try again later",
            Close::UnsupportedVersion => "unsupported protocol version",
            Close::Disconnected => "disconnected by an administrator",
        }
    }

    /// Whether a client should reconnect after this close (with backoff).
    /// Auth closes need fresh credentials first, an unsupported version
    /// a changed client, and an operator's disconnect a person's decision,
    /// so they say no.
    pub fn reconnect(self) -> bool {
        !matches!(
            self,
            Close::InvalidToken
                | Close::TokenExpired
                | Close::AuthThrottled
                | Close::UnsupportedVersion
                | Close::Disconnected
        )
    }

    /// The error code that tells of this close in an `error` reply, for the
    /// closes a request can cause.
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            Close::InvalidToken => Some(ErrorCode::InvalidToken),
            Close::TokenExpired => Some(ErrorCode::TokenExpired),
            Close::AuthThrottled => Some(ErrorCode::RateLimited),
            Close::UnsupportedVersion => Some(ErrorCode::UnsupportedVersion),
            _ => None,
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

impl From<Close> for actix_web_actors::ws::CloseReason {
    fn from(close: Close) -> Self {
        actix_web_actors::ws::CloseReason {
            code: actix_web_actors::ws::CloseCode::Other(close.code()),
            description: Some(close.reason().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_and_closes_share_numbers() {
        assert_eq!(ErrorCode::InvalidToken.as_u16(), Close::InvalidToken.code());
        assert_eq!(ErrorCode::RateLimited.as_u16(), Close::AuthThrottled.code());
        assert_eq!(ErrorCode::TokenExpired.as_u16(), Close::TokenExpired.code());
        assert_eq!(ErrorCode::UnsupportedVersion.as_u16(), Close::UnsupportedVersion.code());
        for close in [Close::InvalidToken, Close::TokenExpired, Close::AuthThrottled, Close::UnsupportedVersion] {
            assert_eq!(close.error_code().map(ErrorCode::as_u16), Some(close.code()), "{close}");
        }
    }

    #[test]
    fn only_auth_closes_forbid_a_plain_reconnect() {
        assert!(Close::ServiceRestart.reconnect());
        assert!(Close::SlowConsumer.reconnect());
        assert!(!Close::InvalidToken.reconnect());
        assert!(!Close::TokenExpired.reconnect());
        assert!(!Close::UnsupportedVersion.reconnect());
        assert!(!Close::Disconnected.reconnect());
    }
}
