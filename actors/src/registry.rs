//! The registry actor: the node's directory.
//!
//! It maps channel names to channel actors (creating one on its first
//! subscriber and letting it go after the last), indexes connections by id
//! (for events to one connection) and by user for direct messages and
//! broadcasts, keeps each connection's
//! subscriptions (so a disconnect leaves every channel, and a refreshed token
//! that no longer grants a channel leaves it: [`Reauthorize`]), and routes
//! events from the publish API and client publishes to the channel actors.
//!
//! Everything beyond this node goes through the [`Broker`]: every channel
//! event is handed to it (it numbers events of channels with history, and
//! with several nodes sends them on), it learns of each channel's and
//! user's first and last local member (so a node subscribes in Redis only
//! to what it needs), and events from other nodes arrive as [`Deliver`],
//! which reaches local subscribers only.
//!
//! It encodes no published event: publishers hand it finished [`Frame`]s
//! (only its own small replies, and a team status, which it stamps with the
//! user it knows, are encoded here, once each). Channel
//! actors run on a pool of hub threads (by a hash of their name), so fan-out
//! uses as many cores as there are hubs while the registry itself only
//! looks names up.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use crate::auth::Identity;
use crate::broker::{Broker, Position, PresenceStore};
use crate::catalog::PresenceStatus;
use crate::channel::{self, Channel, StatusNote};
use crate::cluster::wire::Inbound;
use crate::cluster::Topic;
use crate::codes::{Close, ErrorCode};
use crate::link::{Batch, ConnId, Delivery, Link};
use crate::metrics::Metrics;
use crate::names;
use crate::node::connection_id;
use crate::protocol::{self, kind, Frame};
use crate::session::Push;

/// Messages the registry queues before the publish API is told to back off
/// (503). Sessions are never refused; their own limits bound them.
pub const MAILBOX_CAPACITY: usize = 100_000;

/// A new connection, not authenticated yet: known only so shutdown can
/// close it too.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Arrive {
    /// The connection.
    pub conn: ConnId,
    /// Its session.
    pub session: Recipient<Push>,
}

/// An authenticated connection joins the directory.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session.
    pub link: Arc<Link>,
    /// From `/ws/{client_id}`.
    pub client_id: Option<Arc<str>>,
    /// When it authenticated.
    pub connected_at: SystemTime,
}

/// A connection is gone: it leaves every channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The connection.
    pub conn: ConnId,
}

/// Subscribe a connection to channels it may use (the session checked).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The connection.
    pub conn: ConnId,
    /// Valid channel names, each with the position to recover from when
    /// the client gave one.
    pub channels: Vec<(Arc<str>, Option<Position>)>,
    /// The request's id for the replies.
    pub reply_to: String,
}

/// Unsubscribe a connection from channels.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The connection.
    pub conn: ConnId,
    /// Valid channel names.
    pub channels: Vec<Arc<str>>,
    /// The request's id for the replies.
    pub reply_to: String,
}

/// The `data.reason` of a `channel.unsubscribed` the server sends because
/// the connection's refreshed token no longer grants the channel.
pub const PERMISSION_REVOKED: &str = "permission_revoked";

/// A connection's credentials changed (`connection.refresh`): it leaves
/// every channel `identity` does not grant. Each gets a
/// `channel.unsubscribed` with `data.reason` [`PERMISSION_REVOKED`] and
/// `reply_to` the refresh, after everything the channel still had for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reauthorize {
    /// The connection.
    pub conn: ConnId,
    /// Its identity from now on.
    pub identity: Identity,
    /// The `connection.refresh` request's id.
    pub reply_to: String,
}

/// An encoded event for every subscriber of a channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The channel.
    pub channel: Arc<str>,
    /// The event, encoded once.
    pub frame: Frame,
}

/// Several [`Publish`]es in one message, so the batch API's events are
/// accepted or refused together.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishMany {
    /// The events, in order.
    pub events: Vec<Publish>,
}

/// A connection sets its user's status on a team channel (the session
/// checked the channel is a `team:` one the credentials grant).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetStatus {
    /// The connection.
    pub conn: ConnId,
    /// The team channel.
    pub channel: Arc<str>,
    /// The status.
    pub status: PresenceStatus,
    /// Its note.
    pub text: Option<String>,
    /// The request's id, for an error.
    pub reply_to: String,
}

/// An encoded event for every connection of one user; returns how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SendToUser {
    /// The user id.
    pub user: String,
    /// The user's tenant; `None` is the default one.
    pub tenant: Option<Arc<str>>,
    /// The event.
    pub frame: Frame,
}

/// An encoded event for one connection, on this node or, through the bus,
/// the node `node` names; answers where it went.
#[derive(Message)]
#[rtype(result = "SentTo")]
pub struct SendToConnection {
    /// The node that holds the connection.
    pub node: Arc<str>,
    /// Its number there.
    pub conn: ConnId,
    /// The tenant it must be in; `None`: whichever it is in.
    pub tenant: Option<Arc<str>>,
    /// The event.
    pub frame: Frame,
}

/// Where a [`SendToConnection`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub enum SentTo {
    /// A connection of this node: queued for it, within its outbound
    /// budget like every delivery.
    Local,
    /// Another node's: published for it through Redis, fire and forget.
    Forwarded,
    /// No such connection here (or not in the tenant named), or another
    /// node's with no bus to reach it.
    NotFound,
}

/// An encoded event for every authenticated connection of a tenant, or of
/// every tenant; returns how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Broadcast {
    /// The event.
    pub frame: Frame,
    /// Who gets it.
    pub audience: Audience,
}

/// Whom a broadcast reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The connections of one tenant (`None`: the default one).
    Tenant(Option<Arc<str>>),
    /// Every connection: the server's own ping.
    Everyone,
}

/// An event from another node (or this node's bus): for local subscribers
/// only, never forwarded again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Whom it is for.
    pub topic: Topic,
    /// The event.
    pub inbound: Inbound,
}

/// Every channel reloads who is present on every node (after this node
/// was cut off from Redis, it may have missed joins and leaves).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefreshPresence {
    /// Whether users missing from Redis are announced as gone (see
    /// [`channel::Refresh`]).
    pub gone: bool,
}

/// A session went over its outbound budget (reported once per session by
/// whoever delivered to it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlowConsumer {
    /// The session.
    pub link: Arc<Link>,
}

/// Closes every connection with `close`, and every one that arrives later;
/// returns how many it closed now.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    /// The close code (1012 on shutdown).
    pub close: Close,
}

/// Lists up to `limit` connections.
#[derive(Message)]
#[rtype(result = "ConnectionList")]
pub struct ListConnections {
    /// The most to list.
    pub limit: usize,
    /// Only this user's connections (in any tenant).
    pub user: Option<String>,
    /// The newest first (the default is the oldest first).
    pub newest_first: bool,
}

/// Closes one authenticated connection of this node with `close`; answers
/// its user, or `None` when there is no such connection.
#[derive(Message)]
#[rtype(result = "Option<Arc<str>>")]
pub struct CloseConnection {
    /// The connection.
    pub conn: ConnId,
    /// The close code (an operator's disconnect: 4011).
    pub close: Close,
}

/// Lists up to `limit` channels with subscribers on this node, by name
/// (then tenant).
#[derive(Message)]
#[rtype(result = "ChannelList")]
pub struct ListChannels {
    /// The most to list.
    pub limit: usize,
}

/// One channel as `GET /api/channels` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelInfo {
    /// Its name, as clients know it.
    pub channel: String,
    /// Its tenant; `None` is the default one (and `system:settings`,
    /// which every tenant shares).
    pub tenant: Option<String>,
    /// This node's connections subscribed to it.
    pub members: usize,
}

/// The answer to [`ListChannels`].
#[derive(Debug, Clone, Serialize, MessageResponse, utoipa::ToSchema)]
pub struct ChannelList {
    /// Channels with subscribers on this node.
    pub total: usize,
    /// Up to `limit` of them.
    pub channels: Vec<ChannelInfo>,
}

/// What an operator sees of one channel: its members on this node and who
/// is present; `None` when no connection of this node is subscribed.
#[derive(Message)]
#[rtype(result = "Option<ChannelDetails>")]
pub struct DescribeChannel {
    /// The channel's key (`names::channel_key`).
    pub key: Arc<str>,
}

/// A member of a channel in [`ChannelDetails`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberInfo {
    /// The id sent in `connection.ack`.
    pub connection_id: String,
    /// Its user.
    pub user_id: String,
}

/// A user's status on a team channel in [`ChannelDetails`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusInfo {
    /// The user.
    pub user_id: String,
    /// The status (`online` when the user set none).
    pub status: PresenceStatus,
    /// Its note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The answer to [`DescribeChannel`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelDetails {
    /// Its name, as clients know it.
    pub channel: String,
    /// Its tenant; `None` is the default one.
    pub tenant: Option<String>,
    /// This node's subscribed connections, oldest first (at most 1000).
    pub members: Vec<MemberInfo>,
    /// How many connections are subscribed on this node in all.
    pub member_count: usize,
    /// Users present on any node, sorted (at most 1000; none on `system:`
    /// channels, which carry no presence).
    pub presence: Vec<String>,
    /// How many users are present in all.
    pub presence_count: usize,
    /// On `team:` channels: each listed user's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<StatusInfo>>,
    /// With history: the offset of its last event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// With history: its epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Counts of what the registry holds.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// One connection as `GET /ws/connections` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionInfo {
    /// The id sent in `connection.ack`.
    pub connection_id: String,
    /// The user.
    pub user_id: String,
    /// The user's tenant; `None` is the default one.
    pub tenant: Option<String>,
    /// From `/ws/{client_id}`.
    pub client_id: Option<String>,
    /// Subscribed channels.
    pub channels: Vec<String>,
    /// When it authenticated, RFC 3339.
    pub connected_at: String,
    /// Bytes queued for it and not yet written.
    pub pending_bytes: usize,
}

/// The answer to [`ListConnections`].
#[derive(Debug, Clone, Serialize, MessageResponse, utoipa::ToSchema)]
pub struct ConnectionList {
    /// All authenticated connections (of the user asked for).
    pub total: usize,
    /// Up to `limit` of them.
    pub connections: Vec<ConnectionInfo>,
}

/// The answer to [`GetStats`].
#[derive(Debug, Clone, Copy, Serialize, MessageResponse)]
pub struct Stats {
    /// Authenticated connections.
    pub connections: usize,
    /// Distinct users connected.
    pub users: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
}

struct ChannelEntry {
    addr: Addr<Channel>,
    members: usize,
}

struct ConnEntry {
    link: Arc<Link>,
    client_id: Option<Arc<str>>,
    connected_at: SystemTime,
    channels: Vec<Arc<str>>,
}

/// The node's directory of channels and connections.
pub struct Registry {
    node_id: Arc<str>,
    max_channels_per_connection: usize,
    slow_consumer_grace: Duration,
    metrics: Arc<Metrics>,
    /// Where channel actors run.
    hubs: Vec<ArbiterHandle>,
    channels: HashMap<Arc<str>, ChannelEntry>,
    conns: HashMap<ConnId, ConnEntry>,
    /// Connections by user, keyed by the user's topic (user and tenant).
    users: HashMap<Topic, Vec<ConnId>>,
    /// Connections per tenant other than the default one, so the node
    /// listens to a tenant's broadcasts while it has connections of it.
    tenants: HashMap<Arc<str>, usize>,
    /// Connections still before `connection.init`.
    arriving: HashMap<ConnId, Recipient<Push>>,
    /// Set by [`CloseAll`]: the node is shutting down.
    closing: Option<Close>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
}

impl Registry {
    /// An empty registry whose channel actors run on `hubs` (at least one),
    /// reaching beyond the node through `broker` and `presence`.
    pub fn new(
        node_id: Arc<str>,
        max_channels_per_connection: usize,
        slow_consumer_grace: Duration,
        metrics: Arc<Metrics>,
        hubs: Vec<ArbiterHandle>,
        (broker, presence): (Arc<dyn Broker>, Arc<dyn PresenceStore>),
    ) -> Self {
        Registry {
            node_id,
            max_channels_per_connection,
            slow_consumer_grace,
            metrics,
            hubs,
            channels: HashMap::new(),
            conns: HashMap::new(),
            users: HashMap::new(),
            tenants: HashMap::new(),
            arriving: HashMap::new(),
            closing: None,
            broker,
            presence,
        }
    }

    /// Tells the broker the node needs `topic` now (`on`) or no longer.
    fn interest(&self, topic: Topic, on: bool) {
        self.broker.interest(topic, on);
    }

    /// Hands a channel's event to the broker and its local subscribers
    /// what it gives back.
    fn publish(&self, channel: Arc<str>, frame: Frame, status: Option<StatusNote>) {
        let Some((frame, position)) = self.broker.publish(&channel, frame) else { return };
        if let Some(entry) = self.channels.get(&channel) {
            entry.addr.do_send(channel::Publish { frame, status, position });
        }
    }

    fn deliver_to_user(&self, user: &Topic, batch: &Arc<Batch>, ctx: &mut Context<Self>) -> usize {
        let Some(conns) = self.users.get(user) else { return 0 };
        let mut reached = 0;
        for entry in conns.iter().filter_map(|c| self.conns.get(c)) {
            self.deliver(&entry.link, batch, ctx);
            reached += 1;
        }
        reached
    }

    /// Delivers to connection `conn` if it is here and, when `tenant` is
    /// named, in that tenant; returns whether it was.
    fn deliver_to_connection(
        &self,
        conn: ConnId,
        tenant: Option<&Arc<str>>,
        batch: &Arc<Batch>,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(entry) = self.conns.get(&conn) else { return false };
        if tenant.is_some_and(|tenant| entry.link.tenant() != Some(tenant)) {
            return false;
        }
        self.deliver(&entry.link, batch, ctx);
        true
    }

    fn deliver_to_all(&self, audience: &Audience, batch: &Arc<Batch>, ctx: &mut Context<Self>) -> usize {
        let mut reached = 0;
        for entry in self.conns.values() {
            let included = match audience {
                Audience::Everyone => true,
                Audience::Tenant(tenant) => entry.link.tenant() == tenant.as_ref(),
            };
            if included {
                self.deliver(&entry.link, batch, ctx);
                reached += 1;
            }
        }
        reached
    }

    fn deliver(&self, link: &Arc<Link>, batch: &Arc<Batch>, ctx: &mut Context<Self>) {
        match link.deliver(batch) {
            Delivery::Queued => {}
            Delivery::Overflowed => self.slow_consumer(Arc::clone(link), ctx),
            Delivery::Dropped => {
                self.metrics.dropped_deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn slow_consumer(&self, link: Arc<Link>, ctx: &mut Context<Self>) {
        self.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "connection {} (user '{}') exceeded its outbound budget: closing with {}",
            connection_id(&self.node_id, link.id()),
            link.user(),
            Close::SlowConsumer
        );
        ctx.run_later(self.slow_consumer_grace, move |_, _| {
            if link.hang_up() {
                log::warn!("connection {} did not close in time: hung up", link.id());
            }
        });
    }

    /// Starts a channel actor on the hub its name hashes to.
    fn start_channel(&self, name: &Arc<str>, registry: Addr<Registry>) -> Addr<Channel> {
        let mut hash = DefaultHasher::new();
        name.hash(&mut hash);
        let setup = channel::Setup {
            slow: registry.recipient(),
            metrics: Arc::clone(&self.metrics),
            broker: Arc::clone(&self.broker),
            presence: Arc::clone(&self.presence),
        };
        // Asked here, on the thread that hands the broker every event: no
        // event falls between this state and the channel's first one.
        let state = self.broker.state_now(name);
        let channel = Channel::new(Arc::clone(name), setup, state);
        match self.hubs.get(hash.finish() as usize % self.hubs.len().max(1)) {
            Some(hub) => Channel::start_in_arbiter(hub, move |_| channel),
            None => channel.start(),
        }
    }

    /// Leaves `channel` for a member: forwards the leave and lets the
    /// channel actor go when it was the last member.
    fn leave(
        &mut self,
        conn: ConnId,
        channel: &Arc<str>,
        reply: Option<(Arc<Link>, String)>,
        reason: Option<&'static str>,
    ) {
        let Some(entry) = self.channels.get_mut(channel) else { return };
        entry.addr.do_send(channel::Leave { conn, reply, reason });
        entry.members -= 1;
        if entry.members == 0 {
            // Dropping the address stops the actor after it has handled the
            // Leave just sent.
            self.channels.remove(channel);
            self.interest(Topic::Channel(Arc::clone(channel)), false);
        }
    }

    /// Gives memory back after a spike of connections or channels.
    fn shrink(&mut self) {
        fn shrink<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
                map.shrink_to_fit();
            }
        }
        shrink(&mut self.channels);
        shrink(&mut self.conns);
        shrink(&mut self.users);
        shrink(&mut self.arriving);
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.metrics.sample_rates();
            act.shrink();
            act.broker.tick();
        });
    }
}

impl Handler<Arrive> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Arrive, _: &mut Self::Context) {
        match self.closing {
            Some(close) => msg.session.do_send(Push::Close(close)),
            None => {
                self.arriving.insert(msg.conn, msg.session);
            }
        }
    }
}

impl Handler<Connect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        let conn = msg.link.id();
        self.arriving.remove(&conn);
        if let Some(close) = self.closing {
            return msg.link.close(close);
        }
        let user = msg.link.user_topic();
        let user_conns = self.users.entry(user.clone()).or_default();
        user_conns.push(conn);
        if user_conns.len() == 1 {
            self.interest(user, true);
        }
        if let Some(tenant) = msg.link.tenant() {
            let count = self.tenants.entry(Arc::clone(tenant)).or_default();
            *count += 1;
            if *count == 1 {
                self.interest(Topic::Broadcast(Some(Arc::clone(tenant))), true);
            }
        }
        self.conns.insert(
            conn,
            ConnEntry {
                link: msg.link,
                client_id: msg.client_id,
                connected_at: msg.connected_at,
                channels: Vec::new(),
            },
        );
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        self.arriving.remove(&msg.conn);
        let Some(entry) = self.conns.remove(&msg.conn) else { return };
        for channel in &entry.channels {
            self.leave(msg.conn, channel, None, None);
        }
        let user = entry.link.user_topic();
        if let Some(conns) = self.users.get_mut(&user) {
            conns.retain(|c| *c != msg.conn);
            if conns.is_empty() {
                self.users.remove(&user);
                self.interest(user, false);
            }
        }
        if let Some(tenant) = entry.link.tenant() {
            if let Some(count) = self.tenants.get_mut(tenant) {
                *count -= 1;
                if *count == 0 {
                    self.tenants.remove(tenant);
                    self.interest(Topic::Broadcast(Some(Arc::clone(tenant))), false);
                }
            }
        }
    }
}

impl Handler<Subscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) {
        let registry = ctx.address();
        for (name, recover) in msg.channels {
            let Some(entry) = self.conns.get_mut(&msg.conn) else { return };
            let link = Arc::clone(&entry.link);
            if !entry.channels.contains(&name) {
                if entry.channels.len() >= self.max_channels_per_connection {
                    let message = format!("channel limit reached: {} per connection", self.max_channels_per_connection);
                    let frame = protocol::error_frame(
                        ErrorCode::PermissionDenied,
                        &message,
                        Some(names::visible(&name)),
                        Some(&msg.reply_to),
                    );
                    self.deliver(&link, &Batch::one(frame), ctx);
                    continue;
                }
                entry.channels.push(Arc::clone(&name));
                if !self.channels.contains_key(&name) {
                    // Interest first: the new channel asks the bus for the
                    // cluster's presence, which subscribes before it reads.
                    self.interest(Topic::Channel(Arc::clone(&name)), true);
                    let addr = self.start_channel(&name, registry.clone());
                    self.channels.insert(Arc::clone(&name), ChannelEntry { addr, members: 0 });
                }
                if let Some(channel) = self.channels.get_mut(&name) {
                    channel.members += 1;
                }
            }
            if let Some(channel) = self.channels.get(&name) {
                channel.addr.do_send(channel::Join { link, reply_to: msg.reply_to.clone(), recover });
            }
        }
    }
}

impl Handler<Unsubscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        for name in msg.channels {
            let Some(entry) = self.conns.get_mut(&msg.conn) else { return };
            let link = Arc::clone(&entry.link);
            let reply = Some((Arc::clone(&link), msg.reply_to.clone()));
            if let Some(i) = entry.channels.iter().position(|c| *c == name) {
                entry.channels.swap_remove(i);
                self.leave(msg.conn, &name, reply, None);
            } else if let Some(channel) = self.channels.get(&name) {
                // Not a member, but the channel may still be delivering to
                // it: its reply comes after those deliveries.
                channel.addr.do_send(channel::Leave { conn: msg.conn, reply, reason: None });
            } else {
                // Unsubscribing is idempotent.
                let frame = protocol::encode(
                    kind::UNSUBSCRIBED,
                    Some(names::visible(&name)),
                    &serde_json::json!({}),
                    Some(&msg.reply_to),
                );
                self.deliver(&link, &Batch::one(frame), ctx);
            }
        }
    }
}

impl Handler<Reauthorize> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Reauthorize, _: &mut Self::Context) {
        let Some(entry) = self.conns.get_mut(&msg.conn) else { return };
        let link = Arc::clone(&entry.link);
        let (kept, revoked): (Vec<_>, Vec<_>) = std::mem::take(&mut entry.channels)
            .into_iter()
            .partition(|c| msg.identity.may_subscribe(names::visible(c)));
        entry.channels = kept;
        for channel in revoked {
            log::debug!("connection {}: '{channel}' no longer granted", connection_id(&self.node_id, msg.conn));
            let reply = Some((Arc::clone(&link), msg.reply_to.clone()));
            self.leave(msg.conn, &channel, reply, Some(PERMISSION_REVOKED));
        }
    }
}

impl Handler<Publish> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        self.publish(msg.channel, msg.frame, None);
    }
}

impl Handler<SetStatus> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SetStatus, ctx: &mut Self::Context) {
        let Some(entry) = self.conns.get(&msg.conn) else { return };
        let link = Arc::clone(&entry.link);
        if !entry.channels.contains(&msg.channel) {
            let visible = names::visible(&msg.channel);
            let message = format!("subscribe to '{visible}' before setting a status there");
            let frame =
                protocol::error_frame(ErrorCode::PermissionDenied, &message, Some(visible), Some(&msg.reply_to));
            return self.deliver(&link, &Batch::one(frame), ctx);
        }
        let note = StatusNote { user: Arc::clone(link.user()), status: msg.status, text: msg.text };
        let frame = channel::status_frame(&msg.channel, &note);
        let json = serde_json::json!({ "status": note.status, "text": note.text }).to_string();
        self.presence.store_status(&msg.channel, &note.user, json);
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        self.publish(msg.channel, frame, Some(note));
    }
}

impl Handler<PublishMany> for Registry {
    type Result = ();

    fn handle(&mut self, msg: PublishMany, ctx: &mut Self::Context) {
        for publish in msg.events {
            <Self as Handler<Publish>>::handle(self, publish, ctx);
        }
    }
}

impl Handler<SendToUser> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: SendToUser, ctx: &mut Self::Context) -> usize {
        let user = Topic::user(msg.tenant.as_deref(), &msg.user);
        self.broker.forward(&user, &msg.frame);
        self.deliver_to_user(&user, &Batch::one(msg.frame), ctx)
    }
}

impl Handler<SendToConnection> for Registry {
    type Result = SentTo;

    fn handle(&mut self, msg: SendToConnection, ctx: &mut Self::Context) -> SentTo {
        if msg.node == self.node_id {
            let batch = Batch::one(msg.frame);
            let found = self.deliver_to_connection(msg.conn, msg.tenant.as_ref(), &batch, ctx);
            return if found { SentTo::Local } else { SentTo::NotFound };
        }
        let topic = Topic::Connection { node: msg.node, conn: msg.conn, tenant: msg.tenant };
        match self.broker.forward(&topic, &msg.frame) {
            true => SentTo::Forwarded,
            false => SentTo::NotFound,
        }
    }
}

impl Handler<Broadcast> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: Broadcast, ctx: &mut Self::Context) -> usize {
        // The ping goes out as a default-tenant broadcast: other nodes know
        // a heartbeat there is for everyone (see `Inbound::everyone`).
        let topic = match &msg.audience {
            Audience::Tenant(tenant) => Topic::Broadcast(tenant.clone()),
            Audience::Everyone => Topic::Broadcast(None),
        };
        self.broker.forward(&topic, &msg.frame);
        self.deliver_to_all(&msg.audience, &Batch::one(msg.frame), ctx)
    }
}

impl Handler<RefreshPresence> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RefreshPresence, _: &mut Self::Context) {
        for entry in self.channels.values() {
            entry.addr.do_send(channel::Refresh { gone: msg.gone });
        }
    }
}

impl Handler<Deliver> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let Inbound { frame, presence, status, everyone, position } = msg.inbound;
        match msg.topic {
            Topic::Channel(name) => {
                let Some(channel) = self.channels.get(&name) else { return };
                let position = position.map(|(offset, epoch)| Position { offset, epoch });
                match presence {
                    Some(note) => channel.addr.do_send(channel::Presence { frame, note }),
                    None => channel.addr.do_send(channel::Publish { frame, status, position }),
                }
            }
            user @ (Topic::User(_) | Topic::TenantUser { .. }) => {
                self.deliver_to_user(&user, &Batch::one(frame), ctx);
            }
            Topic::Broadcast(tenant) => {
                let audience = if everyone { Audience::Everyone } else { Audience::Tenant(tenant) };
                self.deliver_to_all(&audience, &Batch::one(frame), ctx);
            }
            // The bus listens only to this node's connections; another
            // node's number would name the wrong connection here.
            Topic::Connection { node, conn, tenant } => {
                if node == self.node_id {
                    self.deliver_to_connection(conn, tenant.as_ref(), &Batch::one(frame), ctx);
                }
            }
        }
    }
}

impl Handler<SlowConsumer> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SlowConsumer, ctx: &mut Self::Context) {
        self.slow_consumer(msg.link, ctx);
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) -> usize {
        self.closing = Some(msg.close);
        for entry in self.conns.values() {
            entry.link.close(msg.close);
        }
        for session in self.arriving.values() {
            session.do_send(Push::Close(msg.close));
        }
        self.conns.len() + self.arriving.len()
    }
}

impl Handler<ListConnections> for Registry {
    type Result = ConnectionList;

    fn handle(&mut self, msg: ListConnections, _: &mut Self::Context) -> ConnectionList {
        let mut entries: Vec<&ConnEntry> =
            self.conns.values().filter(|e| msg.user.as_deref().is_none_or(|u| **e.link.user() == *u)).collect();
        let total = entries.len();
        if msg.newest_first {
            crate::keep_smallest(&mut entries, msg.limit, |e| std::cmp::Reverse(e.link.id()));
        } else {
            crate::keep_smallest(&mut entries, msg.limit, |e| e.link.id());
        }
        let connections = entries
            .into_iter()
            .map(|e| ConnectionInfo {
                connection_id: connection_id(&self.node_id, e.link.id()),
                user_id: e.link.user().to_string(),
                tenant: e.link.tenant().map(|t| t.to_string()),
                client_id: e.client_id.as_deref().map(str::to_owned),
                channels: e.channels.iter().map(|c| names::visible(c).to_owned()).collect(),
                connected_at: humantime::format_rfc3339_millis(e.connected_at).to_string(),
                pending_bytes: e.link.pending(),
            })
            .collect();
        ConnectionList { total, connections }
    }
}

impl Handler<CloseConnection> for Registry {
    type Result = Option<Arc<str>>;

    fn handle(&mut self, msg: CloseConnection, _: &mut Self::Context) -> Option<Arc<str>> {
        // The session announces the close, closes, and its Disconnect
        // takes it out of the directory like any other close.
        let entry = self.conns.get(&msg.conn)?;
        log::info!(
            "connection {} (user '{}') closed by an administrator: {}",
            connection_id(&self.node_id, msg.conn),
            entry.link.user(),
            msg.close
        );
        entry.link.close(msg.close);
        Some(Arc::clone(entry.link.user()))
    }
}

impl Handler<ListChannels> for Registry {
    type Result = ChannelList;

    fn handle(&mut self, msg: ListChannels, _: &mut Self::Context) -> ChannelList {
        let mut entries: Vec<(&str, Option<&str>, &ChannelEntry)> =
            self.channels.iter().map(|(key, entry)| (names::visible(key), names::tenant_of(key), entry)).collect();
        crate::keep_smallest(&mut entries, msg.limit, |(name, tenant, _)| (*name, *tenant));
        let channels = entries
            .into_iter()
            .map(|(name, tenant, entry)| ChannelInfo {
                channel: name.to_owned(),
                tenant: tenant.map(str::to_owned),
                members: entry.members,
            })
            .collect();
        ChannelList { total: self.channels.len(), channels }
    }
}

impl Handler<DescribeChannel> for Registry {
    type Result = ResponseFuture<Option<ChannelDetails>>;

    fn handle(&mut self, msg: DescribeChannel, _: &mut Self::Context) -> Self::Result {
        let addr = self.channels.get(&msg.key).map(|entry| entry.addr.clone());
        let node_id = Arc::clone(&self.node_id);
        // The channel answers on its hub while the registry goes on.
        Box::pin(async move {
            let view = addr?.send(channel::Describe).await.ok()?;
            let members = view
                .members
                .into_iter()
                .map(|(conn, user)| MemberInfo {
                    connection_id: connection_id(&node_id, conn),
                    user_id: user.to_string(),
                })
                .collect();
            let statuses = view.statuses.map(|statuses| {
                statuses
                    .into_iter()
                    .map(|(user, (status, text))| StatusInfo { user_id: user.to_string(), status, text })
                    .collect()
            });
            Some(ChannelDetails {
                channel: names::visible(&msg.key).to_owned(),
                tenant: names::tenant_of(&msg.key).map(str::to_owned),
                members,
                member_count: view.member_count,
                presence: view.presence.iter().map(|u| u.to_string()).collect(),
                presence_count: view.presence_count,
                statuses,
                offset: view.position.as_ref().map(|p| p.offset),
                epoch: view.position.map(|p| p.epoch.to_string()),
            })
        })
    }
}

impl Handler<GetStats> for Registry {
    type Result = Stats;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Stats {
        Stats { connections: self.conns.len(), users: self.users.len(), channels: self.channels.len() }
    }
}
