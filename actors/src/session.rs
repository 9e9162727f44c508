//! The session actor: one per WebSocket connection.
//!
//! It reads and validates client frames, authenticates the connection,
//! answers heartbeats, enforces the per-connection limits, asks the registry
//! to subscribe and publish, and writes what channels and the registry push
//! to it.
//!
//! Writing is paced by the socket. The transport polls a session only once
//! its previous output has been written, so after each [`WRITE_QUANTUM`] of
//! delivered bytes the session pauses its mailbox until the next poll.
//! Deliveries it has not written stay in its mailbox, counted by its
//! [`Link`], and a client that does not keep up runs into the outbound budget
//! instead of growing the server's buffers.
//!
//! Reading is paced too: the transport hands the session one frame at a time
//! (see `FrameAligned` in the server crate) and every client frame, control
//! and continuation frames included, costs a token from the rate limit. A
//! frame over the limit is dropped unread; a connection that keeps sending
//! over [`FLOOD_FACTOR`] times its limit for about [`FLOOD_WINDOW`] is closed with 1008,
//! because even a dropped frame costs the server a wake-up and a decode.
//!
//! Until `connection.init` is accepted a connection may send frames of
//! `max_init_frame_bytes` only (the transport refuses larger ones at the
//! header), and an address with too many failed authentications is refused
//! before its credentials are looked at (see `throttle.rs`).
//!
//! The lifecycle: `connection.init` negotiates the protocol version
//! ([`negotiate`]) and authenticates; a JWT connection is warned with
//! `connection.expiring` [`Limits::expiry_warning`] before its `exp`, may
//! take a new token for the same user with `connection.refresh` (channels
//! the new token does not grant are left, through the registry), and is
//! closed with 4002 once its (latest) `exp` has passed. Every close the
//! server initiates is announced first with `connection.error` naming the
//! close code: replies to requests stay `error` frames, so a refused
//! `connection.init` gets its `error` and then the `connection.error`.
//!
//! [`Limits::expiry_warning`]: crate::node::Limits::expiry_warning

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, ProtocolError, WebsocketContext};
use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::auth::{AuthError, Identity, RefreshError};
use crate::catalog::TeamPresenceUpdate;
use crate::codes::{Close, ErrorCode};
use crate::gateway::record::{fingerprint, Record};
use crate::gateway::{Answer, Relay, Submit, Target};
use crate::link::{Batch, ConnId, Hangup, Link};
use crate::metrics::{AuthFailure, ByFamily};
use crate::names::{channel_key, parse_channel};
use crate::node::{connection_id, Node};
use crate::protocol::{self, capability, kind, rfc3339, Action, ClientEvent, Credentials, Request, Wanted};
use crate::registry;

/// Delivered bytes a session writes before it lets the transport flush.
pub const WRITE_QUANTUM: usize = 64 * 1024;

/// The message of the input error a transport reports when a client frame
/// declares more than the frame limit; the session closes with 1009.
/// actix-web-actors hands input errors to the session as their text only
/// (see `Session::on_protocol_error`), so this text is the contract.
pub const FRAME_TOO_LARGE: &str = "websocket frame over the size limit";

/// Versions `data.protocol` of `connection.init` may list at most.
pub const MAX_PROTOCOL_VERSIONS: usize = 16;

/// Names `data.capabilities` of `connection.init` may list at most...
pub const MAX_CAPABILITIES: usize = 32;

/// ...each of at most this many bytes.
pub const MAX_CAPABILITY_LEN: usize = 64;

/// Longest a lifecycle timer waits at once: a token valid for years is
/// looked at again now and then rather than given a timer the runtime would
/// have to clamp.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);

/// Why `connection.init`'s `data.protocol` or `data.capabilities` was
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// `data.protocol` is not a version or a list of versions (4001, like
    /// any malformed `connection.init`).
    #[error(
        "'data.protocol' must be a protocol version (an integer from 1) or a list of 1 to \
         {MAX_PROTOCOL_VERSIONS} of them"
    )]
    BadProtocol,
    /// `data.capabilities` is not a short list of short names (4001).
    #[error(
        "'data.capabilities' must be a list of at most {MAX_CAPABILITIES} names, each 1 to \
         {MAX_CAPABILITY_LEN} letters, digits or _ . -"
    )]
    BadCapabilities,
    /// No version the client accepts is one this server speaks (4010).
    #[error("protocol version {} not supported: this server speaks {}", versions(asked), versions(supported))]
    Unsupported {
        /// What the client asked for.
        asked: Vec<u64>,
        /// What this server speaks.
        supported: Vec<u64>,
    },
}

fn versions(list: &[u64]) -> String {
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Checks `connection.init`'s `data.protocol` and `data.capabilities` and
/// picks the version: the highest one both sides speak; version 1 when the
/// client names none (`null` is none). The client's capabilities are only
/// checked: the server's behaviour does not depend on them today (a client
/// ignores frames it does not know), so they are not kept.
pub fn negotiate(protocol: Option<&Value>, capabilities: Option<&Value>) -> Result<u32, HelloError> {
    let version = |v: &Value| v.as_u64().filter(|n| *n >= 1);
    let asked: Vec<u64> = match protocol {
        None | Some(Value::Null) => vec![u64::from(protocol::PROTOCOL_VERSION)],
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_PROTOCOL_VERSIONS => {
            list.iter().map(version).collect::<Option<_>>().ok_or(HelloError::BadProtocol)?
        }
        Some(one) => vec![version(one).ok_or(HelloError::BadProtocol)?],
    };
    let name = |v: &Value| {
        v.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.len() <= MAX_CAPABILITY_LEN
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
    };
    match capabilities {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.len() <= MAX_CAPABILITIES && list.iter().all(name) => {}
        Some(_) => return Err(HelloError::BadCapabilities),
    }
    let supported = protocol::SUPPORTED_PROTOCOL_VERSIONS;
    supported
        .iter()
        .copied()
        .filter(|v| asked.contains(&u64::from(*v)))
        .max()
        .ok_or_else(|| HelloError::Unsupported { asked, supported: supported.iter().copied().map(u64::from).collect() })
}

/// A connection sending more than this many times its sustained rate
/// limit...
pub const FLOOD_FACTOR: u32 = 10;

/// ...for about this long is closed with 1008 (policy violation). Exactly:
/// frames refused beyond `(FLOOD_FACTOR - 1) ×` the rate are counted in a
/// bucket of `(FLOOD_FACTOR - 1) × rate × FLOOD_WINDOW`, and the connection
/// is closed when it overflows; a flood of thousands of frames a second
/// overflows it at once, twenty times the limit after about 5 s.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(5);

/// What other actors push to a session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Push {
    /// Frames to write, shared with every other recipient.
    Frames(Arc<Batch>),
    /// Close the connection (slow consumer, shutdown).
    Close(Close),
}

/// Where a connection is in its life.
enum Auth {
    /// Connected, no `connection.init` yet. `peer` is the client's address
    /// (behind a trusted proxy, the one it forwarded), for the throttle of
    /// failed authentications.
    Waiting { timer: SpawnHandle, deadline: Instant, peer: Option<IpAddr> },
    /// Authenticated and known to the registry. `expiry` is the timer of
    /// the next step of a JWT's life (warning, then close); `warned`,
    /// whether `connection.expiring` went out for the current token.
    Ready { identity: Identity, link: Arc<Link>, expiry: SpawnHandle, warned: bool },
}

/// A message being reassembled from continuation frames.
struct Fragments {
    text: bool,
    buf: BytesMut,
    /// A fragment was over the rate limit: the rest is skipped and the
    /// message dropped as a whole, as a single frame would be.
    refused: bool,
}

/// Tokens for client frames, refilled at `messages_per_second`.
struct TokenBucket {
    tokens: f32,
    /// What is left of the flood allowance (see [`FLOOD_WINDOW`]); refilled
    /// with `tokens`, at `FLOOD_FACTOR - 1` times their rate.
    flood: f32,
    at: Instant,
    /// When the last 4004 was sent: at most one a second, so a flood does
    /// not get a flood of errors back.
    refused_at: Option<Instant>,
}

/// One WebSocket connection.
pub struct Session {
    node: Arc<Node>,
    conn: ConnId,
    /// From `/ws/{client_id}`: the client's own name for itself.
    client_id: Option<Arc<str>>,
    /// How the registry drops this connection if it stops reading; handed to
    /// the [`Link`] at authentication.
    hangup: Option<Arc<Hangup>>,
    auth: Auth,
    /// Any frame from the client counts as a sign of life.
    last_seen: Instant,
    bucket: TokenBucket,
    /// Delivered bytes written since the session last yielded.
    unyielded: usize,
    fragments: Option<Fragments>,
}

impl Session {
    /// A session for a new connection. `hangup` lets the registry drop the
    /// connection if it stops reading; `auth_deadline` is when it must have
    /// authenticated, counted from when the connection was accepted; `peer`
    /// is the client's address, when known.
    pub fn new(
        node: Arc<Node>,
        client_id: Option<Arc<str>>,
        hangup: Option<Arc<Hangup>>,
        auth_deadline: Instant,
        peer: Option<IpAddr>,
    ) -> Self {
        let conn = node.next_conn_id();
        let burst = node.limits.message_burst as f32;
        let flood = flood_allowance(&node.limits);
        Session {
            node,
            conn,
            client_id,
            hangup,
            auth: Auth::Waiting { timer: SpawnHandle::default(), deadline: auth_deadline, peer },
            last_seen: Instant::now(),
            bucket: TokenBucket { tokens: burst, flood, at: Instant::now(), refused_at: None },
            unyielded: 0,
            fragments: None,
        }
    }

    /// Writes a frame of this session's own (a reply, an error, a notice):
    /// counted as written like the frames of a batch.
    fn send(&self, ctx: &mut WebsocketContext<Self>, frame: protocol::Frame) {
        let metrics = &self.node.metrics;
        metrics.bytes_out.fetch_add(frame.len() as u64, Relaxed);
        metrics.messages_out_by_family.add(frame.family(), 1);
        ctx.text(frame.text().clone());
    }

    fn send_error(
        &self,
        ctx: &mut WebsocketContext<Self>,
        code: ErrorCode,
        message: &str,
        channel: Option<&str>,
        reply_to: Option<&str>,
    ) {
        self.send(ctx, protocol::error_frame(code, message, channel, reply_to));
    }

    /// Closes the connection with `close`, announced by a `connection.error`
    /// giving the close's own reason.
    fn close(&mut self, ctx: &mut WebsocketContext<Self>, close: Close) {
        self.close_with(ctx, close, close.reason());
    }

    /// Sends `connection.error` (`message` says why) and the close frame.
    /// Both go after what the session has written already and before
    /// anything still in its mailbox: for a slow consumer, past the backlog.
    /// Once the session is stopping it sends nothing more, so a connection
    /// gets one `connection.error` however many reasons to close pile up.
    fn close_with(&mut self, ctx: &mut WebsocketContext<Self>, close: Close, message: &str) {
        if ctx.state().stopping() {
            return;
        }
        log::debug!(connection_id = connection_id(&self.node.id, self.conn).as_str(); "connection {} closing: {close}: {message}", self.conn);
        let data = json!({ "code": close.code(), "message": message, "reconnect": close.reconnect() });
        self.send(ctx, protocol::encode(kind::CONNECTION_ERROR, None, &data, None));
        ctx.close(Some(close.into()));
        ctx.stop();
    }

    /// Answers a request with an `error` and closes: for auth failures. The
    /// `error` has the close's code (4001 for closes without one of their
    /// own).
    fn refuse(&mut self, ctx: &mut WebsocketContext<Self>, close: Close, message: &str, reply_to: Option<&str>) {
        let code = close.error_code().unwrap_or(ErrorCode::InvalidToken);
        self.send_error(ctx, code, message, None, reply_to);
        self.close_with(ctx, close, message);
    }

    /// Takes `n` tokens if there are that many.
    fn take_tokens(&mut self, n: usize) -> bool {
        let limits = &self.node.limits;
        let now = Instant::now();
        let refill = now.duration_since(self.bucket.at).as_secs_f32() * limits.messages_per_second as f32;
        self.bucket.tokens = (self.bucket.tokens + refill).min(limits.message_burst as f32);
        let flood_refill = refill * (FLOOD_FACTOR - 1) as f32;
        self.bucket.flood = (self.bucket.flood + flood_refill).min(flood_allowance(limits));
        self.bucket.at = now;
        if self.bucket.tokens >= n as f32 {
            self.bucket.tokens -= n as f32;
            true
        } else {
            false
        }
    }

    /// Counts a frame refused by the rate limit (after [`Self::take_tokens`]
    /// refilled the buckets); true once the flood allowance is spent.
    fn flooding(&mut self) -> bool {
        self.bucket.flood -= 1.0;
        self.bucket.flood < 0.0
    }

    /// The largest frame or message accepted now: small until the client
    /// has authenticated.
    fn frame_limit(&self) -> usize {
        let limits = &self.node.limits;
        match self.auth {
            Auth::Waiting { .. } => limits.max_init_frame_bytes.min(limits.max_frame_bytes),
            Auth::Ready { .. } => limits.max_frame_bytes,
        }
    }

    /// Answers a refused frame with 4004, at most once a second; `request`
    /// is evaluated only then, to name the refused request.
    fn rate_limited(&mut self, ctx: &mut WebsocketContext<Self>, request: impl FnOnce() -> Option<String>) {
        let now = Instant::now();
        if self.bucket.refused_at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.bucket.refused_at = Some(now);
        let limits = &self.node.limits;
        let message = format!(
            "rate limit exceeded: {} frames per second, bursts of {}; frames over it are dropped",
            limits.messages_per_second, limits.message_burst
        );
        let reply_to = request();
        self.send_error(ctx, ErrorCode::RateLimited, &message, None, reply_to.as_deref());
    }

    fn heartbeat(&mut self, ctx: &mut WebsocketContext<Self>) {
        let interval = self.node.limits.heartbeat_interval;
        if self.last_seen.elapsed() >= interval * 2 {
            log::info!(connection_id = connection_id(&self.node.id, self.conn).as_str(); "connection {} missed two heartbeats", self.conn);
            let message =
                format!("nothing from the client for two heartbeat intervals ({} ms)", interval.as_millis() * 2);
            return self.close_with(ctx, Close::HeartbeatTimeout, &message);
        }
        // The expiry timer runs on the monotonic clock; this catches a wall
        // clock that jumped past `exp` in the meantime.
        if matches!(&self.auth, Auth::Ready { identity, .. } if identity.expired(SystemTime::now())) {
            return self.expired(ctx);
        }
        ctx.ping(b"");
    }

    fn expired(&mut self, ctx: &mut WebsocketContext<Self>) {
        let Auth::Ready { identity, .. } = &self.auth else { return };
        let at = identity.expires_at.and_then(rfc3339).unwrap_or_default();
        let message = format!("token expired at {at}: reconnect with a new one (refresh it before it expires)");
        self.close_with(ctx, Close::TokenExpired, &message);
    }

    /// The next step of a JWT connection's life, when its time has come:
    /// `connection.expiring` once the token is within the warning period of
    /// its `exp`, the 4002 close once `exp` and the leeway have passed. Then
    /// sets the timer for the step after. A refresh cancels the timer and
    /// starts again here with the new token.
    fn expiry_step(&mut self, ctx: &mut WebsocketContext<Self>) {
        let now = SystemTime::now();
        let warning = self.node.limits.expiry_warning;
        let Auth::Ready { identity, warned, .. } = &self.auth else { return };
        let (Some(exp), Some(end)) = (identity.expires_at, identity.ends_at()) else { return };
        if now > end {
            return self.expired(ctx);
        }
        let mut warned = *warned || warning.is_zero();
        let warn_at = exp.checked_sub(warning).unwrap_or(UNIX_EPOCH);
        if !warned && now >= warn_at {
            let expires_in_ms = exp.duration_since(now).unwrap_or_default().as_millis() as u64;
            self.send(ctx, protocol::encode(kind::EXPIRING, None, &json!({ "expires_in_ms": expires_in_ms }), None));
            warned = true;
        }
        let next = if warned { end } else { warn_at };
        // The close is due once `now > end`: a millisecond past it.
        let delay = next.duration_since(now).unwrap_or_default().min(MAX_TIMER) + Duration::from_millis(1);
        let timer = ctx.run_later(delay, |act, ctx| act.expiry_step(ctx));
        if let Auth::Ready { expiry, warned: was_warned, .. } = &mut self.auth {
            *expiry = timer;
            *was_warned = warned;
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
        let metrics = &self.node.metrics;
        metrics.messages_in.fetch_add(1, Relaxed);
        let parsed = protocol::parse_request(text);
        let kind = parsed.as_ref().map_or("", |request| request.action.kind());
        metrics.messages_in_by_family.add(crate::catalog::family_of(kind), 1);
        if matches!(self.auth, Auth::Waiting { .. }) {
            return match parsed {
                Ok(Request { id, action: Action::Init { credentials, protocol, capabilities } }) => {
                    match negotiate(protocol.as_ref(), capabilities.as_ref()) {
                        Ok(version) => self.authenticate(&id, &credentials, version, ctx),
                        Err(refused) => self.refuse_hello(&id, &refused, ctx),
                    }
                }
                // One round trip back after a reconnect: credentials, then
                // every channel with what it missed.
                Ok(Request {
                    id,
                    action: Action::Reconnect { credentials: Some(credentials), protocol, capabilities, channels },
                }) => match negotiate(protocol.as_ref(), capabilities.as_ref()) {
                    Ok(version) => {
                        self.authenticate(&id, &credentials, version, ctx);
                        if matches!(self.auth, Auth::Ready { .. }) {
                            self.change_subscriptions(true, channels, &id, ctx);
                        }
                    }
                    Err(refused) => self.refuse_hello(&id, &refused, ctx),
                },
                Ok(request) => {
                    self.node.metrics.auth_failed(AuthFailure::Protocol);
                    self.refuse(
                        ctx,
                        Close::InvalidToken,
                        "authenticate first: send 'connection.init'",
                        Some(&request.id),
                    )
                }
                Err(rejection) => {
                    self.node.metrics.auth_failed(AuthFailure::Protocol);
                    let message = format!("authenticate first: {}", rejection.message);
                    self.refuse(ctx, Close::InvalidToken, &message, rejection.reply_to.as_deref())
                }
            };
        }
        match parsed {
            Ok(request) => self.handle(request, ctx),
            Err(rejection) => self.send(ctx, protocol::rejection_frame(&rejection, None)),
        }
    }

    /// Refuses a `connection.init` whose `protocol` or `capabilities` will
    /// not do: 4010 when the server speaks none of the versions asked for
    /// (the `error` lists those it speaks, in `data.protocol_versions`),
    /// 4001 when they are malformed, as for malformed credentials.
    fn refuse_hello(&mut self, id: &str, refused: &HelloError, ctx: &mut WebsocketContext<Self>) {
        self.node.metrics.auth_failed(AuthFailure::Protocol);
        let message = refused.to_string();
        let HelloError::Unsupported { supported, .. } = refused else {
            return self.refuse(ctx, Close::InvalidToken, &message, Some(id));
        };
        let code = ErrorCode::UnsupportedVersion.as_u16();
        let data = json!({ "code": code, "message": message, "protocol_versions": supported });
        self.send(ctx, protocol::encode(kind::ERROR, None, &data, Some(id)));
        self.close_with(ctx, Close::UnsupportedVersion, &message);
    }

    fn authenticate(&mut self, id: &str, credentials: &Credentials, version: u32, ctx: &mut WebsocketContext<Self>) {
        let peer = match self.auth {
            Auth::Waiting { peer, .. } => peer,
            Auth::Ready { .. } => None,
        };
        if let Some(Err(left)) = peer.map(|p| self.node.auth_throttle.check(p)) {
            self.node.metrics.auth_throttled.fetch_add(1, Relaxed);
            self.node.metrics.auth_failed(AuthFailure::Throttled);
            let message = format!(
                "too many failed authentications from this address: refused for another {} s",
                left.as_secs().max(1)
            );
            return self.refuse(ctx, Close::AuthThrottled, &message, Some(id));
        }
        let identity = match self.node.auth.authenticate(credentials) {
            Ok(identity) => identity,
            Err(error) => {
                // An expired or refused token is a real one, not a guess: it
                // does not count (a tab reconnecting with a stale token must
                // not get its office's shared address blocked).
                if let (Some(peer), AuthError::Invalid(_)) = (peer, &error) {
                    self.node.auth_throttle.failed(peer);
                }
                self.node.metrics.auth_failed(match error {
                    AuthError::Invalid(_) => AuthFailure::Invalid,
                    AuthError::Expired => AuthFailure::Expired,
                    AuthError::Refused(_) => AuthFailure::Refused,
                });
                return match error {
                    AuthError::Expired => self.refuse(ctx, Close::TokenExpired, "token expired", Some(id)),
                    AuthError::Invalid(why) | AuthError::Refused(why) => {
                        self.refuse(ctx, Close::InvalidToken, &why, Some(id))
                    }
                };
            }
        };
        let limits = &self.node.limits;
        // Counted before the check so two racing connections cannot both
        // take the last slot.
        let clients = self.node.metrics.clients.fetch_add(1, Relaxed);
        if clients >= limits.max_clients as u64 {
            self.node.metrics.clients.fetch_sub(1, Relaxed);
            let message = format!("this node holds {} connections, its limit: reconnect later", limits.max_clients);
            self.send_error(ctx, ErrorCode::PermissionDenied, &message, None, Some(id));
            return self.close_with(ctx, Close::TryAgainLater, &message);
        }
        if let Auth::Waiting { timer, .. } = self.auth {
            ctx.cancel_future(timer);
        }
        if let Some(hangup) = &self.hangup {
            // The transport reads full-size frames from now on and no longer
            // counts this connection among those that are not clients yet.
            hangup.mark_authenticated();
        }
        let link = Arc::new(
            Link::new(
                self.conn,
                identity.user_id.clone(),
                ctx.address().recipient(),
                limits.max_outbound_bytes,
                self.hangup.take(),
            )
            .in_tenant(identity.tenant.clone()),
        );
        self.node.registry.do_send(registry::Connect {
            link: link.clone(),
            client_id: self.client_id.clone(),
            connected_at: SystemTime::now(),
        });
        let data = json!({
            "connection_id": connection_id(&self.node.id, self.conn),
            "user_id": &*identity.user_id,
            "tenant": identity.tenant.as_deref(),
            "client_id": self.client_id.as_deref(),
            "heartbeat_interval_ms": limits.heartbeat_interval.as_millis() as u64,
            "protocol_version": version,
            "capabilities": capability::ALL,
            "expires_at": identity.expires_at.and_then(rfc3339),
            "limits": {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_outbound_bytes": limits.max_outbound_bytes,
                "max_channels": limits.max_channels_per_connection,
                "messages_per_second": limits.messages_per_second,
                "message_burst": limits.message_burst,
            },
        });
        self.send(ctx, protocol::encode(kind::ACK, None, &data, Some(id)));
        log::debug!(connection_id = connection_id(&self.node.id, self.conn).as_str(); "connection {} authenticated as '{}'", self.conn, identity.user_id);
        self.auth = Auth::Ready { identity, link, expiry: SpawnHandle::default(), warned: false };
        self.expiry_step(ctx);
    }

    /// `connection.refresh`: a new JWT for the same user. On success its
    /// grants and expiry replace the old ones (channels it does not grant
    /// are left, by the registry, which knows the subscriptions). A token
    /// for another user closes the connection; any other refusal leaves the
    /// current credentials in force.
    fn refresh(&mut self, token: &str, id: &str, ctx: &mut WebsocketContext<Self>) {
        let reply_to = Some(id);
        let Auth::Ready { identity, .. } = &self.auth else { return };
        let next = match self.node.auth.refresh(identity, token) {
            Ok(next) => next,
            Err(e @ (RefreshError::OtherUser | RefreshError::OtherTenant)) => {
                self.node.metrics.auth_failed(AuthFailure::Refresh);
                log::info!(connection_id = connection_id(&self.node.id, self.conn).as_str(); "connection {} presented a token for another user or tenant: closed", self.conn);
                return self.refuse(ctx, Close::InvalidToken, &e.to_string(), reply_to);
            }
            Err(e @ RefreshError::NotRefreshable) => {
                return self.send_error(ctx, ErrorCode::InvalidMessage, &e.to_string(), None, reply_to);
            }
            Err(RefreshError::Auth(e)) => {
                self.node.metrics.auth_failed(AuthFailure::Refresh);
                let code = if e == AuthError::Expired { ErrorCode::TokenExpired } else { ErrorCode::InvalidToken };
                let message = format!("{e}: the connection keeps its current credentials until they expire");
                return self.send_error(ctx, code, &message, None, reply_to);
            }
        };
        self.node.registry.do_send(registry::Reauthorize {
            conn: self.conn,
            identity: next.clone(),
            reply_to: id.to_owned(),
        });
        let data = json!({ "expires_at": next.expires_at.and_then(rfc3339) });
        if let Auth::Ready { identity, expiry, warned, .. } = &mut self.auth {
            ctx.cancel_future(*expiry);
            *identity = next;
            *warned = false;
        }
        self.send(ctx, protocol::encode(kind::REFRESHED, None, &data, reply_to));
        self.expiry_step(ctx);
    }

    fn handle(&mut self, request: Request, ctx: &mut WebsocketContext<Self>) {
        if !self.within_quotas(&request, ctx) {
            return;
        }
        let reply_to = Some(request.id.as_str());
        match request.action {
            Action::Init { .. } => {
                self.send_error(ctx, ErrorCode::InvalidMessage, "already authenticated", None, reply_to);
            }
            Action::Refresh(token) => self.refresh(&token, &request.id, ctx),
            Action::Heartbeat => {
                self.send(ctx, protocol::encode(kind::HEARTBEAT, None, &json!({}), reply_to));
            }
            Action::Reconnect { credentials: Some(_), .. } => {
                self.send_error(
                    ctx,
                    ErrorCode::InvalidMessage,
                    "already authenticated: send 'connection.reconnect' without credentials",
                    None,
                    reply_to,
                );
            }
            Action::Subscribe(wanted) | Action::Reconnect { channels: wanted, .. } => {
                self.change_subscriptions(true, wanted, &request.id, ctx)
            }
            Action::Unsubscribe(names) => {
                let wanted = names.into_iter().map(|name| Wanted { name, recover: None }).collect();
                self.change_subscriptions(false, wanted, &request.id, ctx)
            }
            Action::Publish { event, channel, data } => self.publish(event, &channel, data, &request.id, ctx),
            Action::TeamStatus { channel, update } => self.team_status(&channel, update, &request.id, ctx),
            Action::ForAgent { kind, channel, data } => self.for_agent(kind, channel.as_deref(), data, request.id, ctx),
        }
    }

    /// A channel a client names in a request, checked: its name (4006) and
    /// whether the credentials grant it (4003). `system:` channels carry
    /// the server's own events: nobody sends there from a client, admins
    /// included.
    fn granted_channel(&self, name: &str, id: &str, ctx: &mut WebsocketContext<Self>) -> Option<Arc<str>> {
        let Auth::Ready { identity, .. } = &self.auth else { return None };
        let channel = match parse_channel(name) {
            Ok(channel) => channel,
            Err(e) => {
                self.send_error(ctx, ErrorCode::ChannelNotFound, &e.to_string(), Some(name), Some(id));
                return None;
            }
        };
        if !identity.may_access(&channel) || channel.starts_with("system:") {
            let message = format!("not allowed to publish to '{channel}'");
            self.send_error(ctx, ErrorCode::PermissionDenied, &message, Some(&channel), Some(id));
            return None;
        }
        Some(channel)
    }

    /// A valid request meant for an agent: its channel checked (4006,
    /// 4003), its record made and handed to the gateway, which answers
    /// with the receipt or the refusal (see the `Answer` handler).
    fn for_agent(
        &mut self,
        kind: &'static str,
        channel: Option<&str>,
        data: Map<String, Value>,
        id: String,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let channel = match channel {
            Some(name) => match self.granted_channel(name, &id, ctx) {
                Some(channel) => Some(channel),
                None => return,
            },
            None => None,
        };
        let target = if kind == kind::AGENT_INVOKE {
            match channel.as_deref().and_then(|c| c.strip_prefix("agent:")) {
                Some(name) => Target::Named(name.to_owned()),
                None => {
                    let message = format!("'{kind}' goes to a channel 'agent:{{name}}' naming the agent");
                    return self.send_error(ctx, ErrorCode::InvalidMessage, &message, channel.as_deref(), Some(&id));
                }
            }
        } else {
            Target::ByType
        };
        let call_id = (kind == kind::TOOL_CALL_RESPONSE)
            .then(|| data.get("call_id").and_then(Value::as_str).map(str::to_owned))
            .flatten();
        let id_of_record: Arc<str> = Arc::from(protocol::new_id());
        let fingerprint = fingerprint(&id, kind, channel.as_deref(), &data);
        let request = ForAgents { kind, channel, target, call_id, id: id_of_record, relay: None, fingerprint };
        self.submit(request, &data, id, ctx);
    }

    /// Hands a request to the agent gateway: the record (the authenticated
    /// user, never the client's word), serialized once here.
    fn submit(
        &mut self,
        request: ForAgents,
        data: &Map<String, Value>,
        request_id: String,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let ForAgents { kind, channel, target, call_id, id: message_id, relay, fingerprint } = request;
        let Auth::Ready { identity, .. } = &self.auth else { return };
        let timestamp = rfc3339(SystemTime::now()).unwrap_or_default();
        let connection = connection_id(&self.node.id, self.conn);
        let record = Record {
            id: &message_id,
            kind,
            channel: channel.as_deref(),
            data,
            user_id: &identity.user_id,
            tenant: identity.tenant.as_deref(),
            connection_id: &connection,
            client_id: self.client_id.as_deref(),
            node_id: &self.node.id,
            timestamp: &timestamp,
        };
        let record: Arc<str> = Arc::from(record.to_json());
        // Without a channel, a user's requests are one lane.
        let lane = match &channel {
            Some(channel) => self.key(channel),
            None => user_key(identity),
        };
        self.node.gateway.do_send(Submit {
            kind,
            request_id,
            fingerprint,
            user: user_key(identity).to_string(),
            channel,
            lane,
            target,
            call_id,
            id: message_id,
            record,
            relay,
            reply: ctx.address().recipient(),
        });
    }

    /// `team.presence.update`: the user's status on a team channel they
    /// are subscribed to; the channel tells its members.
    fn team_status(&mut self, name: &str, update: TeamPresenceUpdate, id: &str, ctx: &mut WebsocketContext<Self>) {
        let Some(channel) = self.granted_channel(name, id, ctx) else { return };
        if !channel.starts_with("team:") {
            let message = format!("'team.presence.update' goes to a 'team:' channel, not '{channel}'");
            return self.send_error(ctx, ErrorCode::InvalidMessage, &message, Some(&channel), Some(id));
        }
        let (conn, reply_to) = (self.conn, id.to_owned());
        self.node.registry.do_send(registry::SetStatus {
            conn,
            channel: self.key(&channel),
            status: update.status,
            text: update.text,
            reply_to,
        });
    }

    /// Counts a parsed request against its user's limits (`quota.rs`); a
    /// refused one is answered with 4004 and not run, and the connection
    /// stays. Every refusal is answered: a client needs the `retry_after_ms`
    /// of each request it retries, and the per-connection bucket, which
    /// every frame has passed before this, bounds how many answers a flood
    /// can draw.
    fn within_quotas(&self, request: &Request, ctx: &mut WebsocketContext<Self>) -> bool {
        let Auth::Ready { identity, .. } = &self.auth else { return true };
        match self.node.quotas.check(&user_key(identity), request.action.kind()) {
            Ok(()) => true,
            Err(refusal) => {
                self.send(ctx, refusal.frame(&request.id));
                false
            }
        }
    }

    /// `channel.subscribe` / `channel.unsubscribe`: every name is checked
    /// here and answered on its own when refused; the rest go to the
    /// registry in one message.
    fn change_subscriptions(
        &mut self,
        subscribe: bool,
        names: Vec<Wanted>,
        id: &str,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let reply_to = Some(id);
        let max = self.node.limits.max_channels_per_connection;
        if names.len() > max {
            let message = format!("at most {max} channels per request");
            return self.send_error(ctx, ErrorCode::InvalidMessage, &message, None, reply_to);
        }
        // Each name beyond the first costs a token of its own.
        if names.len() > 1 && !self.take_tokens(names.len() - 1) {
            let owned = id.to_owned();
            return self.rate_limited(ctx, || Some(owned));
        }
        let Auth::Ready { identity, .. } = &self.auth else { return };
        let mut channels = Vec::with_capacity(names.len());
        for Wanted { name, recover } in names {
            match parse_channel(&name) {
                Err(e) => self.send_error(ctx, ErrorCode::ChannelNotFound, &e.to_string(), Some(&name), reply_to),
                Ok(channel) if subscribe && !identity.may_subscribe(&channel) => {
                    let message = format!("not allowed to subscribe to '{channel}'");
                    self.send_error(ctx, ErrorCode::PermissionDenied, &message, Some(&channel), reply_to);
                }
                Ok(channel) => channels.push((self.key(&channel), recover)),
            }
        }
        if channels.is_empty() {
            return;
        }
        let (conn, reply_to) = (self.conn, id.to_owned());
        if subscribe {
            self.node.registry.do_send(registry::Subscribe { conn, channels, reply_to });
        } else {
            let channels = channels.into_iter().map(|(channel, _)| channel).collect();
            self.node.registry.do_send(registry::Unsubscribe { conn, channels, reply_to });
        }
    }

    /// `chat.message` / `chat.typing`: the server sets who sent it.
    fn publish(
        &mut self,
        event: ClientEvent,
        channel: &str,
        mut data: Map<String, Value>,
        id: &str,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let reply_to = Some(id);
        let Some(channel) = self.granted_channel(channel, id, ctx) else { return };
        let Auth::Ready { identity, .. } = &self.auth else { return };
        let message_id = protocol::new_id();
        // With agents for chat messages, a message goes to them too, and is
        // relayed once the gateway has accepted it; without, the gateway is
        // not in its way.
        let to_agents = event == ClientEvent::ChatMessage && self.node.gateway_stats.chat_agents.load(Relaxed);
        // Before the server's fields, which differ on every resend.
        let fingerprint = to_agents.then(|| fingerprint(id, event.kind(), Some(&channel), &data));
        data.insert("sender_id".into(), Value::from(&*identity.user_id));
        match event {
            ClientEvent::ChatMessage => data.insert("message_id".into(), Value::from(message_id.as_str())),
            ClientEvent::ChatTyping => data.remove("message_id"),
        };
        let frame = protocol::encode_with_id(&message_id, event.kind(), Some(&channel), &data, None);
        let limit = self.node.limits.max_frame_bytes;
        if frame.len() > limit {
            let message = format!("the message is {} bytes with the server's fields, over {limit}", frame.len());
            return self.send_error(ctx, ErrorCode::InvalidMessage, &message, Some(&channel), reply_to);
        }
        self.node.metrics.published.fetch_add(1, Relaxed);
        let Some(fingerprint) = fingerprint else {
            if event == ClientEvent::ChatMessage {
                let receipt = json!({ "message_id": message_id, "channel": &*channel });
                self.send(ctx, protocol::encode(kind::MESSAGE_RECEIVED, Some(&channel), &receipt, reply_to));
            }
            return self.node.registry.do_send(registry::Publish { channel: self.key(&channel), frame });
        };
        let relay = Some(Relay { key: self.key(&channel), frame });
        let id_of_record = Arc::from(message_id.as_str());
        let (kind, target) = (kind::CHAT_MESSAGE, Target::ByType);
        let request =
            ForAgents { kind, channel: Some(channel), target, call_id: None, id: id_of_record, relay, fingerprint };
        self.submit(request, &data, id.to_owned(), ctx);
    }

    /// The key of a channel the client names, in its tenant (`names.rs`):
    /// what the registry and the channels route by.
    fn key(&self, channel: &Arc<str>) -> Arc<str> {
        match &self.auth {
            Auth::Ready { identity, .. } => channel_key(identity.tenant.as_deref(), channel),
            Auth::Waiting { .. } => Arc::clone(channel),
        }
    }

    /// A fragment of a message; `admitted` is whether it was within the
    /// rate limit.
    fn on_fragment(&mut self, item: Item, admitted: bool, ctx: &mut WebsocketContext<Self>) {
        let (first, bytes, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        match (first, self.fragments.as_mut()) {
            (Some(text), None) => {
                self.fragments = Some(Fragments { text, buf: BytesMut::from(&bytes[..]), refused: !admitted })
            }
            (None, Some(fragments)) if fragments.refused || !admitted => {
                fragments.refused = true;
                fragments.buf = BytesMut::new();
            }
            (None, Some(fragments)) => fragments.buf.extend_from_slice(&bytes),
            _ => return self.close(ctx, Close::ProtocolError),
        }
        let limit = self.frame_limit();
        let too_big = self.fragments.as_ref().is_some_and(|f| f.buf.len() > limit);
        if too_big {
            self.fragments = None;
            return self.close(ctx, Close::MessageTooBig);
        }
        if !last {
            return;
        }
        let Some(Fragments { text, buf, refused }) = self.fragments.take() else { return };
        if refused {
            return self.rate_limited(ctx, || None);
        }
        if !text {
            return self.on_binary(ctx);
        }
        match std::str::from_utf8(&buf) {
            Ok(s) => self.on_text(s, ctx),
            Err(_) => self.close(ctx, Close::InvalidPayload),
        }
    }

    fn on_binary(&mut self, ctx: &mut WebsocketContext<Self>) {
        self.node.metrics.messages_in.fetch_add(1, Relaxed);
        self.node.metrics.messages_in_by_family.add(crate::catalog::family_of(""), 1);
        let message = "binary frames are not supported: send JSON text frames";
        if matches!(self.auth, Auth::Waiting { .. }) {
            self.node.metrics.auth_failed(AuthFailure::Protocol);
            return self.refuse(ctx, Close::InvalidToken, &format!("authenticate first: {message}"), None);
        }
        self.send_error(ctx, ErrorCode::InvalidMessage, message, None, None);
    }
}

/// A request for the agent gateway, before its record is made.
struct ForAgents {
    kind: &'static str,
    /// The channel as the client named it.
    channel: Option<Arc<str>>,
    target: Target,
    /// For `tool.call.response`: the call it answers.
    call_id: Option<String>,
    /// The record's id, the receipt's `message_id`.
    id: Arc<str>,
    /// For `chat.message`: relayed to the channel once accepted.
    relay: Option<Relay>,
    /// What makes a resend the same request (`record::fingerprint`).
    fingerprint: String,
}

/// A user as the per-user limits and the gateway's idempotency know them:
/// qualified by tenant, since `alice` of one tenant is not `alice` of
/// another. User ids hold no control character, so the key cannot be forged
/// from the default tenant.
fn user_key(identity: &Identity) -> Arc<str> {
    match &identity.tenant {
        None => Arc::clone(&identity.user_id),
        Some(tenant) => Arc::from(format!("{tenant}\u{1}{}", identity.user_id)),
    }
}

/// Refused frames a connection may accumulate beyond its flood rate.
fn flood_allowance(limits: &crate::node::Limits) -> f32 {
    (FLOOD_FACTOR - 1) as f32 * limits.messages_per_second.max(1) as f32 * FLOOD_WINDOW.as_secs_f32()
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.node.metrics.sockets.fetch_add(1, Relaxed);
        self.node.registry.do_send(registry::Arrive { conn: self.conn, session: ctx.address().recipient() });
        ctx.run_interval(self.node.limits.heartbeat_interval, |act, ctx| act.heartbeat(ctx));
        if let Auth::Waiting { deadline, peer, .. } = self.auth {
            let timer = ctx.run_later(deadline.saturating_duration_since(Instant::now()), |act, ctx| {
                if matches!(act.auth, Auth::Waiting { .. }) {
                    act.node.metrics.auth_failed(AuthFailure::Timeout);
                    let message = format!("no 'connection.init' within {:?}", act.node.limits.auth_timeout);
                    act.close_with(ctx, Close::InvalidToken, &message);
                }
            });
            self.auth = Auth::Waiting { timer, deadline, peer };
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.node.metrics.sockets.fetch_sub(1, Relaxed);
        if matches!(self.auth, Auth::Ready { .. }) {
            self.node.metrics.clients.fetch_sub(1, Relaxed);
        }
        self.node.registry.do_send(registry::Disconnect { conn: self.conn });
    }
}

impl Handler<Answer> for Session {
    type Result = ();

    /// The gateway's answer: the receipt, or why there is none.
    fn handle(&mut self, answer: Answer, ctx: &mut Self::Context) {
        let channel = answer.channel.as_deref();
        let reply_to = Some(answer.reply_to.as_str());
        match answer.result {
            Ok(message_id) => {
                let receipt = json!({ "message_id": &*message_id, "channel": channel });
                self.send(ctx, protocol::encode(kind::MESSAGE_RECEIVED, channel, &receipt, reply_to));
            }
            Err(refused) => self.send_error(ctx, refused.code, &refused.message, channel, reply_to),
        }
    }
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, push: Push, ctx: &mut Self::Context) {
        let batch = match push {
            Push::Close(close) => return self.close(ctx, close),
            Push::Frames(batch) => batch,
        };
        let Auth::Ready { link, .. } = &self.auth else { return };
        if link.overflowed() {
            // Skip the backlog: the close frame goes out next.
            return self.close(ctx, Close::SlowConsumer);
        }
        for frame in batch.frames() {
            ctx.write_raw(ws::Message::Text(frame.text().clone()));
        }
        link.written(batch.bytes());
        let metrics = &self.node.metrics;
        let frames = batch.frames().len() as u64;
        // The frames written are the sum of the families' counts: one
        // counter update for a batch of one family.
        match batch.family() {
            Some(family) => metrics.messages_out_by_family.add(family, frames),
            None => count_families(&metrics.messages_out_by_family, batch.frames()),
        }
        metrics.bytes_out.fetch_add(batch.bytes() as u64, Relaxed);
        // One record per batch, for its oldest frame: an upper bound for
        // the rest, at a fraction of the cost.
        if let Some(oldest) = batch.oldest() {
            metrics.latency.record_n(Instant::now().saturating_duration_since(oldest).as_micros() as u64, frames);
        }
        self.unyielded += batch.bytes();
        if self.unyielded >= WRITE_QUANTUM {
            self.unyielded = 0;
            // Stops the mailbox until the transport polls this session again,
            // which it does only once the output so far is written.
            ctx.wait(actix::fut::wrap_future(YieldOnce(false)));
        }
    }
}

/// Counts written frames by family: one counter update per run of frames
/// of one family (a batch is most often one family), not one per frame.
fn count_families(counters: &ByFamily, frames: &[protocol::Frame]) {
    let mut run: Option<(u8, u64)> = None;
    for family in frames.iter().map(protocol::Frame::family) {
        run = match run {
            Some((f, n)) if f == family => Some((f, n + 1)),
            Some((f, n)) => {
                counters.add(f, n);
                Some((family, 1))
            }
            None => Some((family, 1)),
        };
    }
    if let Some((f, n)) = run {
        counters.add(f, n);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        let msg = match msg {
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                return ctx.stop();
            }
            Ok(ws::Message::Nop) => return,
            Ok(msg) => msg,
            Err(e) => return self.on_protocol_error(e, ctx),
        };
        // Every frame costs a token, taken before any parsing: a flood costs
        // a counter per frame, not a JSON parse, and a long flood ends the
        // connection. Except a text frame before authentication: it either
        // authenticates or closes the connection, so it cannot be repeated,
        // and the client's burst starts whole once it is in.
        let first_text = matches!(msg, ws::Message::Text(_)) && matches!(self.auth, Auth::Waiting { .. });
        let admitted = first_text || self.take_tokens(1);
        if !admitted && self.flooding() {
            self.node.metrics.flood_closes.fetch_add(1, Relaxed);
            log::info!(connection_id = connection_id(&self.node.id, self.conn).as_str(); "connection {} closed: frames far over its rate limit", self.conn);
            return self.close(ctx, Close::PolicyViolation);
        }
        match msg {
            // A fragment's refusal is answered once its message is complete.
            ws::Message::Continuation(item) => self.on_fragment(item, admitted, ctx),
            _ if !admitted => match msg {
                ws::Message::Text(text) => self.rate_limited(ctx, || match protocol::parse_request(&text) {
                    Ok(request) => Some(request.id),
                    Err(rejection) => rejection.reply_to,
                }),
                ws::Message::Binary(_) => self.rate_limited(ctx, || None),
                // Past the limit a ping gets no pong.
                _ => {}
            },
            ws::Message::Text(text) => self.on_text(&text, ctx),
            ws::Message::Binary(_) => self.on_binary(ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop | ws::Message::Close(_) => {}
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Session {
    /// Closes for an error of the input: 1009, 1007 or 1002.
    ///
    /// Two of them are known by their text only. actix-web-actors 4.3
    /// (`WsStream::poll_next` in its `ws.rs`) rebuilds every error of the
    /// input stream as `io::Error::new(ErrorKind::Other, format!("{err}"))`,
    /// and a text frame that is not UTF-8 the same way from the
    /// `Utf8Error`: the typed error is gone before the session sees it
    /// (`get_ref` finds only the string; the unit test
    /// `input_errors_reach_the_session_as_text_only` checks this). So the
    /// contract is two substrings: [`FRAME_TOO_LARGE`], which this crate
    /// defines and the transport (`FrameAligned`) reports, and `"utf-8"`,
    /// which every `std::str::Utf8Error` message holds ("invalid utf-8
    /// sequence …", "incomplete utf-8 byte sequence …"). The integration
    /// tests of the 1009 and 1007 closes fail if either stops matching.
    fn on_protocol_error(&mut self, error: ProtocolError, ctx: &mut WebsocketContext<Self>) {
        match error {
            ProtocolError::Overflow => self.close(ctx, Close::MessageTooBig),
            ProtocolError::Io(e) if e.to_string().contains(FRAME_TOO_LARGE) => self.close(ctx, Close::MessageTooBig),
            ProtocolError::Io(e) if e.to_string().contains("utf-8") => self.close(ctx, Close::InvalidPayload),
            e => {
                log::debug!(connection_id = connection_id(&self.node.id, self.conn).as_str(); "connection {}: websocket error: {e}", self.conn);
                self.close(ctx, Close::ProtocolError);
            }
        }
    }
}

/// A future that is pending once: it lets the session's task return to the
/// transport, which writes before it polls the session again.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::error::PayloadError;
    use futures_util::StreamExt;
    use serde_json::json;

    #[test]
    fn the_highest_shared_version_is_chosen() {
        assert_eq!(negotiate(None, None), Ok(1));
        assert_eq!(negotiate(Some(&Value::Null), Some(&Value::Null)), Ok(1));
        assert_eq!(negotiate(Some(&json!(1)), None), Ok(1));
        assert_eq!(negotiate(Some(&json!([1])), Some(&json!(["token_refresh", "x.y-z_1"]))), Ok(1));
        assert_eq!(negotiate(Some(&json!([2, 1, 7])), Some(&json!([]))), Ok(1));
    }

    #[test]
    fn versions_the_server_lacks_are_named_with_those_it_speaks() {
        let refused = negotiate(Some(&json!([2, 3])), None).unwrap_err();
        assert_eq!(refused, HelloError::Unsupported { asked: vec![2, 3], supported: vec![1] });
        assert_eq!(refused.to_string(), "protocol version 2, 3 not supported: this server speaks 1");
        assert!(matches!(negotiate(Some(&json!(2)), None), Err(HelloError::Unsupported { .. })));
    }

    #[test]
    fn malformed_protocol_or_capabilities_are_refused() {
        let too_many: Vec<u32> = (1..=MAX_PROTOCOL_VERSIONS as u32 + 1).collect();
        for bad in [json!("1"), json!(0), json!(-1), json!(1.5), json!([]), json!([1, "2"]), json!({}), json!(too_many)]
        {
            assert_eq!(negotiate(Some(&bad), None), Err(HelloError::BadProtocol), "{bad}");
        }
        let long = "c".repeat(MAX_CAPABILITY_LEN + 1);
        let many: Vec<String> = (0..=MAX_CAPABILITIES).map(|i| format!("c{i}")).collect();
        for bad in [json!("presence"), json!([1]), json!([""]), json!(["a b"]), json!([long]), json!(many), json!({})] {
            assert_eq!(negotiate(None, Some(&bad)), Err(HelloError::BadCapabilities), "{bad}");
        }
    }

    #[test]
    fn expiry_times_are_written_as_timestamps_are() {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(86_400)).as_deref(), Some("1970-01-02T00:00:00.000Z"));
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(300_000_000_000)), None, "past the year 9999");
    }

    /// The error the probe below feeds in as if from the transport.
    #[derive(Debug, thiserror::Error)]
    #[error("typed marker")]
    struct Marker;

    /// Reports what an input error looks like once it reaches a session.
    struct Probe(std::sync::mpsc::Sender<(bool, String)>);

    impl Actor for Probe {
        type Context = WebsocketContext<Self>;
    }

    impl StreamHandler<Result<ws::Message, ProtocolError>> for Probe {
        fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
            if let Err(ProtocolError::Io(e)) = msg {
                let typed = e.get_ref().is_some_and(|inner| inner.is::<Marker>());
                let _ = self.0.send((typed, e.to_string()));
            }
            ctx.stop();
        }
    }

    /// Why [`Session::on_protocol_error`] matches text: if this fails, the
    /// library keeps the typed error now, and the session should downcast.
    #[actix::test]
    async fn input_errors_reach_the_session_as_text_only() {
        let (tx, rx) = std::sync::mpsc::channel();
        let error = PayloadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, Marker));
        let input = futures_util::stream::iter([Err::<bytes::Bytes, _>(error)]);
        let mut output = Box::pin(WebsocketContext::create(Probe(tx), input));
        while output.next().await.is_some() {}
        let (typed, text) = rx.try_recv().expect("the probe saw the error");
        assert!(!typed, "the typed error reaches the session now: match it instead of its text");
        assert!(text.contains("typed marker"), "{text}");
    }
}
