//! The bus actor: this node's link to the other nodes through Redis.
//!
//! It owns two Redis connections: a pub/sub connection whose messages it
//! takes as a stream (events other nodes published, handed to the registry),
//! and a multiplexed one for presence scripts and for the outbox's writer.
//!
//! It subscribes only to what this node needs: the registry reports each
//! channel's first and last local subscriber and each user's first and last
//! connection as [`Interest`], and the bus sends the net change as one
//! `SUBSCRIBE` and one `UNSUBSCRIBE` once its mailbox is drained, so churn
//! costs a command per burst, not per connection.
//!
//! Channel actors report a user's first and last local connection as
//! [`PresenceChange`]; the bus counts them in Redis (see `presence.rs`) and
//! announces a join or leave to every node only when it is one for the
//! whole cluster. A heartbeat keeps this node registered; the node that
//! first sees another's heartbeat expire takes its presence back.
//!
//! Events for one connection (`POST /api/connections/{connection_id}/send`
//! on another node) come under one pattern per node,
//! `{prefix}conn:{node}:*`, subscribed once per Redis connection: a
//! subscription per client connection would cost Redis and this node
//! memory for every idle client.
//!
//! When Redis is unreachable the node serves its own clients as a single
//! node would (presence included), logs one warning, and retries with
//! capped exponential backoff. On reconnecting it subscribes again to
//! everything it needs and syncs its presence.
//!
//! The state behind these rules lives in plain structs that do no I/O, so
//! it is tested without Redis: the connection's in `retry.rs`, the
//! subscriptions' in `interest.rs`, this node's presence in
//! `membership.rs`. This file does the Redis side and the messages.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, Client, Msg, RedisError, Script};
use tokio::sync::watch;

use crate::channel::presence_frame;
use crate::cluster::interest::{Changes, Subscriptions};
use crate::cluster::membership::Membership;
use crate::cluster::outbox::{Conn, Outbox, WriteFailed, Writer};
use crate::cluster::presence::{self, Transition};
use crate::cluster::retry::Retry;
use crate::cluster::seal::ClusterKey;
use crate::cluster::wire::{self, Decoded, Refused, Wire};
use crate::cluster::{BusStatus, Keys, Topic};
use crate::registry::{Deliver, RefreshPresence};

/// Time to connect, and to wait for any one answer from Redis.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::cluster::retry::MAX_RETRY;

/// After a reconnect, how long until users missing from Redis are taken
/// as gone: the longest retry interval plus a connection attempt, by which
/// every live node has connected again and synced its presence.
pub const RESYNC_SETTLE: Duration = Duration::from_secs(MAX_RETRY.as_secs() + REDIS_TIMEOUT.as_secs());

/// How the bus is set up.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// The Redis URL.
    pub url: String,
    /// Key and channel prefix.
    pub prefix: String,
    /// How long this node's presence outlives its last heartbeat; the
    /// heartbeat runs three times per TTL.
    pub presence_ttl: Duration,
    /// Largest event accepted from Redis.
    pub max_frame_bytes: usize,
    /// Refuse external events whose type is not in the catalog.
    pub strict_events: bool,
    /// The deployment's cluster secret, keyed: seals what this node sends
    /// and checks what others send.
    pub key: ClusterKey,
}

/// A channel or user gained its first local member (`on`) or lost its last.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Interest {
    /// The channel or user.
    pub topic: Topic,
    /// Whether the node needs it now.
    pub on: bool,
}

/// A user's first connection joined a channel on this node, or the last
/// one left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceChange {
    /// The channel.
    pub channel: Arc<str>,
    /// The user.
    pub user: Arc<str>,
    /// Joined (`true`) or left.
    pub joined: bool,
}

/// Keeps a status a user set on a team channel in Redis, so a node that
/// opens the channel later lists it (`presence.rs` deletes it with the
/// user's presence).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreStatus {
    /// The channel's key.
    pub channel: Arc<str>,
    /// The user.
    pub user: Arc<str>,
    /// `{"status","text"?}`.
    pub json: String,
}

/// The statuses kept for a team channel: user → `{"status","text"?}`;
/// `None` while Redis is down or does not answer.
#[derive(Message)]
#[rtype(result = "Option<Vec<(String, String)>>")]
pub struct LoadStatuses {
    /// The channel's key.
    pub channel: Arc<str>,
}

/// The users present in a channel on every node; `None` while Redis is
/// down or does not answer.
#[derive(Message)]
#[rtype(result = "Option<Vec<String>>")]
pub struct LoadPresence {
    /// The channel.
    pub channel: Arc<str>,
}

/// Asks whether this node is the one to announce something every node
/// observes (a settings file change on a shared volume): the first node to
/// claim `key` gets `true`, the others `false` for `ttl`. Without Redis the
/// answer is `true`: a duplicate is better than a lost event.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Claim {
    /// What is being announced, the same on every node.
    pub key: String,
    /// How long the claim holds.
    pub ttl: Duration,
}

/// Takes this node's presence out of Redis (graceful shutdown), so other
/// nodes announce its users as gone at once instead of after the TTL.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Sends the net subscription change; sent to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushSubscriptions;

/// Counts the presence changes gathered; sent to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushPresence;

/// What the pub/sub stream yields: a message, or the end of the
/// connection with the given number.
enum FromRedis {
    Message(u64, Msg),
    Closed(u64),
}

impl Message for FromRedis {
    type Result = ();
}

/// A live connection to Redis.
struct Link {
    conn: MultiplexedConnection,
    sink: PubSubSink,
}

/// The scripts, built once per process; `'static` so an invocation can
/// travel in a spawned future.
struct Scripts {
    apply: Script,
    sync: Script,
    heartbeat: Script,
    reap: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    apply: presence::apply(),
    sync: presence::sync(),
    heartbeat: presence::heartbeat(),
    reap: presence::reap(),
});

/// This node's link to the others.
pub struct Bus {
    client: Client,
    config: BusConfig,
    keys: Arc<Keys>,
    node: Arc<str>,
    wire: Arc<Wire>,
    /// Where events from Redis go (the registry), held as the one
    /// message the bus sends it so the two need not know each other.
    deliver: Recipient<Deliver>,
    /// Where reconnects are reported (the registry).
    refresh: Recipient<RefreshPresence>,
    status: Arc<BusStatus>,
    outbox: Outbox,
    writer: Option<Writer>,
    conn_tx: watch::Sender<Conn>,
    /// The current pub/sub stream, cancelled when its connection is given
    /// up, so a connection never outlives its replacement.
    stream: Option<SpawnHandle>,
    link: Option<Link>,
    /// The connection's number, the attempts and the backoff.
    retry: Retry,
    /// Redis channels the node needs, and those it is subscribed to.
    interest: Subscriptions,
    subscriptions_flush: bool,
    /// The number of the last subscription change Redis has answered,
    /// shared with the changes' futures: `LoadPresence` waits until its
    /// channel's subscription is in place.
    changes_done: Arc<watch::Sender<u64>>,
    /// Who is present on this node, and what Redis has not counted yet.
    members: Membership,
    presence_flush: bool,
}

impl Bus {
    /// The bus of node `node`, handing what comes from Redis to
    /// `deliver` and `refresh` (the registry), with the outbox the broker
    /// publishes through. The server starts it on a thread of its own.
    pub fn new(
        config: BusConfig,
        node: Arc<str>,
        (deliver, refresh): (Recipient<Deliver>, Recipient<RefreshPresence>),
        status: Arc<BusStatus>,
    ) -> Result<(Bus, Outbox), RedisError> {
        let client = Client::open(config.url.as_str())?;
        let keys = Arc::new(Keys::new(&config.prefix));
        let wire = Arc::new(Wire::new(&node, config.key.clone(), config.max_frame_bytes).strict(config.strict_events));
        let (conn_tx, conn_rx) = watch::channel(None);
        let (outbox, writer) = Outbox::new(Arc::clone(&keys), Arc::clone(&wire), Arc::clone(&status), conn_rx);
        let bus = Bus {
            client,
            interest: Subscriptions::new([keys.broadcast()]),
            keys,
            config,
            node,
            wire,
            deliver,
            refresh,
            status,
            outbox: outbox.clone(),
            writer: Some(writer),
            conn_tx,
            stream: None,
            link: None,
            retry: Retry::new(),
            subscriptions_flush: false,
            changes_done: Arc::new(watch::Sender::new(0)),
            members: Membership::new(),
            presence_flush: false,
        };
        Ok((bus, outbox))
    }

    /// The connection to Redis as it comes and goes (`None` while down),
    /// for the agent gateway, which writes records on it, and history
    /// reads.
    pub fn connection(&self) -> watch::Receiver<Conn> {
        self.conn_tx.subscribe()
    }

    /// The deployment's key names.
    pub fn keys(&self) -> Arc<Keys> {
        Arc::clone(&self.keys)
    }

    /// This node's side of the nodes' format, which checks what history
    /// hands back.
    pub fn wire(&self) -> Arc<Wire> {
        Arc::clone(&self.wire)
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.link.is_some() || !self.retry.begin() {
            return;
        }
        let client = self.client.clone();
        let attempt = async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT));
            let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
            Ok::<_, RedisError>((conn, pubsub))
        };
        ctx.spawn(attempt.into_actor(self).map(|result, act, ctx| {
            act.retry.ended();
            match result {
                Ok((conn, pubsub)) => act.connected(conn, pubsub, ctx),
                Err(e) => act.lost(None, format!("cannot connect: {e}"), ctx),
            }
        }));
    }

    fn connected(&mut self, conn: MultiplexedConnection, pubsub: redis::aio::PubSub, ctx: &mut Context<Self>) {
        let (epoch, after_outage) = self.retry.connected();
        let (sink, messages) = pubsub.split();
        if let Some(old) = self.stream.take() {
            ctx.cancel_future(old);
        }
        self.stream = Some(
            ctx.add_stream(
                messages
                    .map(move |m| FromRedis::Message(epoch, m))
                    .chain(stream::once(async move { FromRedis::Closed(epoch) })),
            ),
        );
        self.conn_tx.send_replace(Some((epoch, conn.clone())));
        self.link = Some(Link { conn, sink });
        self.interest.reset();
        self.status.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.status.set(true, None);
        if after_outage {
            log::info!("redis: connected again; resubscribing and syncing presence");
        } else {
            log::info!("redis: connected (prefix '{}')", self.keys.prefix());
        }
        self.subscribe_connections(ctx);
        self.flush_subscriptions(ctx);
        self.heartbeat(true, ctx);
    }

    /// Subscribes the new pub/sub connection to the pattern of this node's
    /// connections; a new connection has no subscriptions, so this runs on
    /// every connect.
    fn subscribe_connections(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else { return };
        let (mut sink, epoch) = (link.sink.clone(), self.retry.epoch());
        let pattern = self.keys.connections(&self.node);
        let subscribe = async move { tokio::time::timeout(REDIS_TIMEOUT, sink.psubscribe(pattern)).await };
        ctx.spawn(subscribe.into_actor(self).map(move |result, act, ctx| match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => act.lost(Some(epoch), format!("subscribing to this node's connections failed: {e}"), ctx),
            Err(_) => act.lost(Some(epoch), "subscribing to this node's connections got no answer".into(), ctx),
        }));
    }

    /// The connection numbered `epoch` (or the attempt to make one, with
    /// `None`) failed: serve locally and retry.
    fn lost(&mut self, epoch: Option<u64>, why: String, ctx: &mut Context<Self>) {
        let Some(outage) = self.retry.failed(epoch) else { return };
        if self.link.take().is_some() {
            // Dropping the stream closes the old pub/sub connection, and
            // with it every subscription Redis still holds for it.
            if let Some(stream) = self.stream.take() {
                ctx.cancel_future(stream);
            }
            self.conn_tx.send_replace(None);
            self.interest.reset();
            // Changes not yet counted: this node's subscribers hear of
            // them now; the sync after reconnecting tells the others.
            for change in self.members.take_changes() {
                if let Some(transition) = change.transition() {
                    self.announce(transition, false);
                }
            }
        }
        self.status.set(false, Some(why.clone()));
        if outage.first {
            log::warn!("redis: {why}; serving this node's clients only, retrying every {:?} at most", MAX_RETRY);
        } else {
            log::debug!("redis: {why}; next try in {:?}", outage.next_try);
        }
        if outage.schedule {
            ctx.run_later(outage.next_try, |act, ctx| {
                act.retry.due();
                act.connect(ctx);
            });
        }
    }

    /// Whether a failed command means the connection is gone.
    fn fatal(e: &RedisError) -> bool {
        e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
    }

    fn flush_subscriptions(&mut self, ctx: &mut Context<Self>) {
        self.subscriptions_flush = false;
        let Some(link) = &self.link else { return };
        let Some(Changes { add, remove, number: sent }) = self.interest.take_changes() else { return };
        let (mut sink, epoch, done) = (link.sink.clone(), self.retry.epoch(), Arc::clone(&self.changes_done));
        let change = async move {
            let result = async {
                if !add.is_empty() {
                    sink.subscribe(&add).await?;
                }
                if !remove.is_empty() {
                    sink.unsubscribe(&remove).await?;
                }
                Ok::<_, RedisError>(())
            };
            let result = tokio::time::timeout(REDIS_TIMEOUT, result).await;
            done.send_modify(|d| *d = (*d).max(sent));
            result
        };
        ctx.spawn(change.into_actor(self).map(move |result, act, ctx| match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => act.lost(Some(epoch), format!("subscribing failed: {e}"), ctx),
            Err(_) => act.lost(Some(epoch), "subscribing got no answer".into(), ctx),
        }));
    }

    /// Announces a presence change to this node's subscribers, and with
    /// `remote` to every other node too.
    fn announce(&self, Transition { channel, note }: Transition, remote: bool) {
        let frame = presence_frame(&channel, &note.user, note.joined);
        if remote {
            self.outbox.presence(&channel, &frame, &note);
        }
        let inbound = wire::Inbound { frame, presence: Some(note), status: None, everyone: false, position: None };
        self.deliver.do_send(Deliver { topic: Topic::Channel(channel), inbound });
    }

    /// Runs a presence script and announces the transitions it reports.
    /// `local` says whether this node's own subscribers hear of them (they
    /// already did when the change happened during an outage).
    fn run_presence(
        &mut self,
        invocation: redis::ScriptInvocation<'static>,
        local: bool,
        on_error: Vec<Transition>,
        ctx: &mut Context<Self>,
    ) {
        let Some(link) = &self.link else { return };
        let (mut conn, epoch) = (link.conn.clone(), self.retry.epoch());
        let run = async move { invocation.invoke_async::<Vec<String>>(&mut conn).await };
        ctx.spawn(run.into_actor(self).map(move |result, act, ctx| match result {
            Ok(answer) => {
                if !local {
                    // After a sync: channels here may have missed changes
                    // on other nodes while this one was away. Departures
                    // are believed once every node has had time to
                    // reconnect and sync again.
                    act.refresh.do_send(RefreshPresence { gone: false });
                    ctx.run_later(RESYNC_SETTLE, |act, _| act.refresh.do_send(RefreshPresence { gone: true }));
                }
                for transition in presence::transitions(answer) {
                    if local {
                        act.announce(transition, true);
                    } else {
                        let Transition { channel, note } = transition;
                        act.outbox.presence(&channel, &presence_frame(&channel, &note.user, note.joined), &note);
                    }
                }
            }
            Err(e) => {
                log::warn!("redis: presence update failed: {e}");
                act.members.count_failed();
                // This node's subscribers still hear of its own changes.
                for transition in on_error {
                    act.announce(transition, false);
                }
                if Bus::fatal(&e) {
                    act.lost(Some(epoch), format!("presence update failed: {e}"), ctx);
                }
            }
        }));
    }

    fn flush_presence(&mut self, ctx: &mut Context<Self>) {
        self.presence_flush = false;
        if self.link.is_none() {
            return;
        }
        let changes = self.members.take_changes();
        if changes.is_empty() {
            return;
        }
        let mut fallback = Vec::with_capacity(changes.len());
        let mut invocation = SCRIPTS.apply.prepare_invoke();
        invocation.key(self.keys.node_presence(&self.node)).arg(self.keys.prefix());
        for change in changes {
            fallback.extend(change.transition());
            invocation.arg(change.arg());
        }
        self.run_presence(invocation, true, fallback, ctx);
    }

    /// Makes Redis hold exactly this node's presence; what changes is news
    /// for the other nodes only.
    fn sync_presence(&mut self, ctx: &mut Context<Self>) {
        let mut invocation = SCRIPTS.sync.prepare_invoke();
        invocation.key(self.keys.node_presence(&self.node)).arg(self.keys.prefix());
        for member in self.members.sync() {
            invocation.arg(member);
        }
        self.run_presence(invocation, false, Vec::new(), ctx);
    }

    /// Refreshes the heartbeat, reaps dead nodes, and syncs this node's
    /// presence when `sync` asks (after connecting: changes made during an
    /// outage) or when a survivor took this node for dead.
    fn heartbeat(&mut self, sync: bool, ctx: &mut Context<Self>) {
        if self.members.retired() {
            return;
        }
        let Some(link) = &self.link else { return };
        let (mut conn, epoch) = (link.conn.clone(), self.retry.epoch());
        let mut invocation = SCRIPTS.heartbeat.prepare_invoke();
        invocation.key(self.keys.nodes()).arg(&*self.node).arg(self.config.presence_ttl.as_millis() as u64);
        let invocation = invocation;
        let beat = async move { invocation.invoke_async::<Vec<String>>(&mut conn).await };
        ctx.spawn(beat.into_actor(self).map(move |result, act, ctx| match result {
            Ok(answer) => {
                let mut answer = answer.into_iter();
                if act.members.sync_due(answer.next().as_deref() == Some("1"), sync) {
                    act.sync_presence(ctx);
                }
                let node = Arc::clone(&act.node);
                for dead in answer.filter(|n| **n != *node) {
                    act.reap(dead, ctx);
                }
            }
            Err(e) if Bus::fatal(&e) => act.lost(Some(epoch), format!("heartbeat failed: {e}"), ctx),
            Err(e) => log::warn!("redis: heartbeat failed: {e}"),
        }));
    }

    /// Takes back the presence of a node whose heartbeat expired.
    fn reap(&mut self, dead: String, ctx: &mut Context<Self>) {
        log::info!("redis: node '{dead}' stopped beating; taking its presence back");
        let mut invocation = SCRIPTS.reap.prepare_invoke();
        invocation.key(self.keys.nodes()).key(self.keys.node_presence(&dead)).arg(self.keys.prefix()).arg(&dead);
        self.run_presence(invocation, true, Vec::new(), ctx);
    }
}

impl Actor for Bus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(mut writer) = self.writer.take() {
            writer.report_to(ctx.address().recipient());
            ctx.spawn(writer.run().into_actor(self));
        }
        let beat = (self.config.presence_ttl / 3).max(Duration::from_millis(100));
        ctx.run_interval(beat, |act, ctx| act.heartbeat(false, ctx));
        self.connect(ctx);
    }
}

impl StreamHandler<FromRedis> for Bus {
    fn handle(&mut self, item: FromRedis, ctx: &mut Self::Context) {
        let (epoch, msg) = match item {
            FromRedis::Closed(epoch) => return self.lost(Some(epoch), "connection closed".into(), ctx),
            FromRedis::Message(epoch, msg) => (epoch, msg),
        };
        if !self.retry.is_current(epoch) {
            return;
        }
        let name = msg.get_channel_name();
        let Some(topic) = Topic::parse(&self.keys, name) else { return };
        match self.wire.decode(&topic, name, msg.get_payload_bytes()) {
            Ok(Decoded::Own) => {}
            Ok(Decoded::Event(inbound)) => {
                self.status.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.deliver.do_send(Deliver { topic, inbound });
            }
            Err(why) => {
                let (counter, what) = match why {
                    Refused::Unsealed => (&self.status.unsealed, "an unsealed node message"),
                    _ => (&self.status.malformed, "a payload"),
                };
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Logged at a falling rate: a broken or hostile publisher
                // must not flood the log.
                if n.is_power_of_two() || n == 0 {
                    log::warn!("redis: dropped {what} on '{name}' ({} so far): {why}", n + 1);
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // Each connection's stream ends with `FromRedis::Closed`; the actor
        // lives on and reconnects.
    }
}

impl Handler<Interest> for Bus {
    type Result = ();

    fn handle(&mut self, msg: Interest, ctx: &mut Self::Context) {
        self.interest.want(msg.topic.key(&self.keys), msg.on);
        if !self.subscriptions_flush {
            self.subscriptions_flush = true;
            ctx.notify(FlushSubscriptions);
        }
    }
}

impl Handler<FlushSubscriptions> for Bus {
    type Result = ();

    fn handle(&mut self, _: FlushSubscriptions, ctx: &mut Self::Context) {
        self.flush_subscriptions(ctx);
    }
}

impl Handler<PresenceChange> for Bus {
    type Result = ();

    fn handle(&mut self, msg: PresenceChange, ctx: &mut Self::Context) {
        let counted = self.link.is_some();
        self.members.change(&msg.channel, &msg.user, msg.joined, counted);
        if !counted {
            // On its own, the node announces what it sees; the sync after
            // reconnecting tells the others.
            return self.announce(Transition::local(msg.channel, msg.user, msg.joined), false);
        }
        if !self.presence_flush {
            self.presence_flush = true;
            ctx.notify(FlushPresence);
        }
    }
}

impl Handler<FlushPresence> for Bus {
    type Result = ();

    fn handle(&mut self, _: FlushPresence, ctx: &mut Self::Context) {
        self.flush_presence(ctx);
    }
}

/// Answers once every subscription asked for so far is in place (or Redis
/// did not confirm in time): what happens in Redis after it reaches this
/// node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribed;

impl Handler<Subscribed> for Bus {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Subscribed, ctx: &mut Self::Context) -> Self::Result {
        self.flush_subscriptions(ctx);
        let (sent, mut done) = (self.interest.sent(), self.changes_done.subscribe());
        Box::pin(async move {
            let _ = tokio::time::timeout(REDIS_TIMEOUT, done.wait_for(|d| *d >= sent)).await;
        })
    }
}

impl Handler<LoadPresence> for Bus {
    type Result = ResponseFuture<Option<Vec<String>>>;

    fn handle(&mut self, msg: LoadPresence, ctx: &mut Self::Context) -> Self::Result {
        // Subscribed first, so no change falls between the list and the
        // subscription that reports changes, and the first subscriber's
        // `channel.subscribed` means events from other nodes flow.
        self.flush_subscriptions(ctx);
        let Some(link) = &self.link else { return Box::pin(async { None }) };
        let mut conn = link.conn.clone();
        let key = self.keys.presence(&msg.channel);
        let (sent, mut done) = (self.interest.sent(), self.changes_done.subscribe());
        Box::pin(async move {
            let _ = tokio::time::timeout(REDIS_TIMEOUT, done.wait_for(|d| *d >= sent)).await;
            let mut hkeys = redis::cmd("HKEYS");
            hkeys.arg(key);
            match tokio::time::timeout(REDIS_TIMEOUT, hkeys.query_async::<Vec<String>>(&mut conn)).await {
                Ok(Ok(users)) => Some(users),
                Ok(Err(e)) => {
                    log::warn!("redis: reading presence failed: {e}");
                    None
                }
                Err(_) => None,
            }
        })
    }
}

impl Handler<StoreStatus> for Bus {
    type Result = ();

    fn handle(&mut self, msg: StoreStatus, ctx: &mut Self::Context) {
        // Without Redis the status still reaches the nodes that have the
        // channel open (it is an event); only late openers miss it.
        let Some(link) = &self.link else { return };
        let mut conn = link.conn.clone();
        let mut hset = redis::cmd("HSET");
        hset.arg(self.keys.status(&msg.channel)).arg(&*msg.user).arg(msg.json);
        ctx.spawn(actix::fut::wrap_future(async move {
            match tokio::time::timeout(REDIS_TIMEOUT, hset.query_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => log::warn!("redis: storing a team status failed: {e}"),
                Err(_) => log::warn!("redis: storing a team status timed out"),
            }
        }));
    }
}

impl Handler<LoadStatuses> for Bus {
    type Result = ResponseFuture<Option<Vec<(String, String)>>>;

    fn handle(&mut self, msg: LoadStatuses, _: &mut Self::Context) -> Self::Result {
        let Some(link) = &self.link else { return Box::pin(async { None }) };
        let mut conn = link.conn.clone();
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(self.keys.status(&msg.channel));
        Box::pin(async move {
            match tokio::time::timeout(REDIS_TIMEOUT, hgetall.query_async::<Vec<(String, String)>>(&mut conn)).await {
                Ok(Ok(statuses)) => Some(statuses),
                Ok(Err(e)) => {
                    log::warn!("redis: reading team statuses failed: {e}");
                    None
                }
                Err(_) => None,
            }
        })
    }
}

impl Handler<WriteFailed> for Bus {
    type Result = ();

    fn handle(&mut self, msg: WriteFailed, ctx: &mut Self::Context) {
        self.lost(Some(msg.epoch), format!("publishing failed: {}", msg.error), ctx);
    }
}

impl Handler<Claim> for Bus {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Claim, _: &mut Self::Context) -> Self::Result {
        let Some(link) = &self.link else { return Box::pin(async { true }) };
        let mut conn = link.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(format!("{}claim:{}", self.keys.prefix(), msg.key))
            .arg(&*self.node)
            .arg("NX")
            .arg("PX")
            .arg(msg.ttl.as_millis() as u64);
        Box::pin(async move {
            match tokio::time::timeout(REDIS_TIMEOUT, set.query_async::<Option<String>>(&mut conn)).await {
                Ok(Ok(answer)) => answer.is_some(),
                Ok(Err(e)) => {
                    log::warn!("redis: claim failed, announcing anyway: {e}");
                    true
                }
                Err(_) => true,
            }
        })
    }
}

impl Handler<Retire> for Bus {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Retire, _: &mut Self::Context) -> Self::Result {
        self.members.retire();
        let Some(link) = &self.link else { return Box::pin(async {}) };
        let mut conn = link.conn.clone();
        let (wire, keys, node) = (Arc::clone(&self.wire), Arc::clone(&self.keys), Arc::clone(&self.node));
        Box::pin(async move {
            let mut sync = SCRIPTS.sync.prepare_invoke();
            sync.key(keys.node_presence(&node)).arg(keys.prefix());
            let retire = async {
                let left = sync.invoke_async::<Vec<String>>(&mut conn).await?;
                // Announced here rather than through the outbox, so they
                // are written before the node stops.
                let mut pipe = redis::pipe();
                pipe.cmd("ZREM").arg(keys.nodes()).arg(&*node).ignore();
                for Transition { channel, note } in presence::transitions(left) {
                    let frame = presence_frame(&channel, &note.user, note.joined);
                    let name = keys.channel(&channel);
                    let payload = wire.presence(&name, &frame, &note);
                    pipe.cmd("PUBLISH").arg(name).arg(payload).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            };
            match tokio::time::timeout(REDIS_TIMEOUT, retire).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::warn!("redis: could not retire this node's presence: {e}"),
                Err(_) => log::warn!("redis: could not retire this node's presence in time"),
            }
        })
    }
}
