//! The channel actor: one per channel with subscribers on this node.
//!
//! It keeps the channel's members and who is present, tells members when a
//! user joins or leaves, and fans events out. Events that arrive together
//! (a burst the mailbox holds at once) go out as one shared [`Batch`]: one
//! mailbox message per subscriber per burst, not per event.
//!
//! The registry creates a channel on its first subscriber and drops its
//! address after the last one leaves; the actor then stops once its mailbox
//! is empty. Joins and leaves reach it only through the registry, so they
//! arrive in the order the registry decided them.
//!
//! Presence goes through the node's [`PresenceStore`]: a new channel first
//! loads who is present elsewhere (and handles nothing else until it has),
//! reports its users' first and last local connection, and announces a
//! join or leave when the store says it is news for everyone (at once on
//! one node; through the bus, counted in Redis, with several).
//!
//! A channel whose namespace keeps history knows its position (last offset
//! and epoch) and tells it in `channel.subscribed`. A member that joins
//! with a position to recover from is held apart from the fan-out while
//! the [`Broker`] reads what it missed; events published meanwhile are
//! kept for it and follow the missed ones, so it gets every event once, in
//! order.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::broker::answers::{self, Answers, Piece};
use crate::broker::{
    ready_now, Broker, ChannelState, Counted, HistoryError, Page, Position, PresenceStore, Retention, MAX_HISTORY_SIZE,
};
use crate::catalog::PresenceStatus;
use crate::catalog::TeamPresenceUpdate;
use crate::cluster::wire::{PresenceNote, SeqOrder};
use crate::link::{Batch, ConnId, Delivery, Link};
use crate::metrics::Metrics;
use crate::names;
use crate::protocol::{self, kind, Frame};
use crate::registry::SlowConsumer;

/// Users listed in a `channel.subscribed` reply at most; `presence_count`
/// always has the full number. Also the size up to which joins and leaves
/// are announced: every announcement goes to every member, so in a channel
/// of n users a reconnecting crowd would cost n² deliveries.
pub const MAX_PRESENCE_LIST: usize = 1000;

/// Frames and bytes a channel holds back for one batch at most.
const MAX_BATCH_FRAMES: usize = 256;
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Adds a connection to the channel; it gets `channel.subscribed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The session.
    pub link: Arc<Link>,
    /// The `channel.subscribe` request's id.
    pub reply_to: String,
    /// The client's last position in the channel: what it missed after
    /// it comes first (`data.recover`).
    pub recover: Option<Position>,
}

/// Removes a connection. With `reply` the connection gets
/// `channel.unsubscribed` (member or not) after everything the channel
/// still had for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The connection.
    pub conn: ConnId,
    /// The session and the id of the request that caused the leave
    /// (`channel.unsubscribe`, or `connection.refresh`); `None` when the
    /// connection is gone.
    pub reply: Option<(Arc<Link>, String)>,
    /// Why the server, not the client, ended the subscription: sent as
    /// `data.reason` of `channel.unsubscribed`.
    pub reason: Option<&'static str>,
}

#[derive(Serialize)]
struct UnsubscribedData {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// An encoded event for every member.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The event, encoded once.
    pub frame: Frame,
    /// When the event is a `team.presence.update`: whose status it sets,
    /// for the channel's list of statuses.
    pub status: Option<StatusNote>,
    /// Its offset and epoch, when the channel keeps history.
    pub position: Option<Position>,
}

/// A member's status on a team channel, as a `team.presence.update` set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusNote {
    /// Whose.
    pub user: Arc<str>,
    /// The status.
    pub status: PresenceStatus,
    /// Its note.
    pub text: Option<String>,
}

#[derive(Serialize)]
struct StatusData<'a> {
    user_id: &'a str,
    status: PresenceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// The `team.presence.update` event telling channel `key` (or name) of
/// `note`; the frame names the channel as clients know it.
pub fn status_frame(key: &str, note: &StatusNote) -> Frame {
    let data = StatusData { user_id: &note.user, status: note.status, text: note.text.as_deref() };
    protocol::encode(kind::TEAM_PRESENCE, Some(names::visible(key)), &data, None)
}

/// A join or leave for the whole cluster, from the bus (this node's users)
/// or another node: told to every member but the user's own connections.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Presence {
    /// The `channel.presence` event, encoded once.
    pub frame: Frame,
    /// Who joined or left.
    pub note: PresenceNote,
}

/// Reloads who is present on every node and announces what changed (the
/// node was cut off from Redis and may have missed joins and leaves).
/// Right after a reconnect only joins are announced: a Redis that restarted
/// empty lacks the users of nodes that have not synced again yet, so their
/// absence means nothing until every node has had time to reconnect.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh {
    /// Whether users missing from Redis are announced as gone.
    pub gone: bool,
}

/// Asks what an operator sees of the channel ([`ChannelView`]).
#[derive(Message)]
#[rtype(result = "ChannelView")]
pub struct Describe;

/// The channel as an operator sees it (`GET /api/channels/{channel}`).
#[derive(Debug, Clone, MessageResponse)]
pub struct ChannelView {
    /// This node's subscribed connections, each with its user, by
    /// connection number (those still recovering what they missed too); at
    /// most [`MAX_PRESENCE_LIST`], the oldest.
    pub members: Vec<(ConnId, Arc<str>)>,
    /// How many connections are subscribed here in all.
    pub member_count: usize,
    /// Who is present on any node (none on `system:` channels), at most
    /// [`MAX_PRESENCE_LIST`], sorted.
    pub presence: Vec<Arc<str>>,
    /// How many are present in all.
    pub presence_count: usize,
    /// On `team:` channels: each listed user's status and note.
    pub statuses: Option<Vec<(Arc<str>, Status)>>,
    /// With history: the channel's position.
    pub position: Option<Position>,
}

/// Sends what [`Publish`] held back; sent to itself after the mailbox is
/// drained.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

#[derive(Serialize)]
struct SubscribedData<'a> {
    presence: Vec<&'a str>,
    presence_count: usize,
    /// On `team:` channels: each listed user's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    statuses: Option<Vec<StatusData<'a>>>,
    /// With history: the position the subscription starts at.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    /// When the client asked to recover: whether it got everything it
    /// missed, and how many events that was.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<usize>,
}

/// What a `channel.subscribed` says about recovery.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// The client asked for none.
    NotAsked,
    /// It got every event it missed: this many.
    Recovered(usize),
    /// The events are gone or the epoch changed: reload from the
    /// application.
    Failed,
}

/// A gap's bounds and what history said of it (`None`: nothing to read).
type CaughtUp = (Position, Position, Result<Option<Page>, HistoryError>);

/// Events a channel holds behind a gap while it reads the missed ones, at
/// most: past it, it goes on without them.
const MAX_HELD_EVENTS: usize = 100_000;

/// Frames held for a member while what it missed is read, at most: past
/// it, the member is too slow to be served and is treated as one.
const MAX_HELD_BATCHES: usize = 4096;

/// A member whose missed events are being read: not in the fan-out yet.
struct Recovering {
    link: Arc<Link>,
    reply_to: String,
    from: Position,
    /// The channel's position when it joined: the missed events end there.
    top: Position,
    /// What was published for the channel since, in order.
    held: Vec<Arc<Batch>>,
    /// The snapshots of the answers that began after `from`, as of `top`,
    /// sent after the missed events (whose tokens of those answers they
    /// replace) when recovery succeeds.
    newer: Vec<(Arc<str>, Frame)>,
    /// The snapshots of every answer as of `top`, sent when it fails.
    all: Vec<Frame>,
    /// Which recovery of the connection this is: a read that ends after
    /// the connection left and joined again is not applied to the next.
    generation: u64,
    /// Over [`MAX_HELD_BATCHES`]: nothing more is held for it.
    overflowed: bool,
}

#[derive(Serialize)]
struct PresenceData<'a> {
    user_id: &'a str,
    state: &'a str,
}

/// The `channel.presence` event for `user` joining or leaving channel `key`
/// (or name); the frame names the channel as clients know it.
pub fn presence_frame(key: &str, user: &str, joined: bool) -> Frame {
    let state = if joined { "joined" } else { "left" };
    protocol::encode(kind::PRESENCE, Some(names::visible(key)), &PresenceData { user_id: user, state }, None)
}

/// A status and its note.
pub type Status = (PresenceStatus, Option<String>);

/// One channel on this node.
pub struct Channel {
    name: Arc<str>,
    /// A vector for fast fan-out, with an index for O(1) removal.
    members: Vec<Arc<Link>>,
    index: HashMap<ConnId, usize>,
    /// Connections per user: presence changes on the first and the last.
    users: HashMap<Arc<str>, u32>,
    pending: Vec<Frame>,
    pending_bytes: usize,
    flush_scheduled: bool,
    slow: Recipient<SlowConsumer>,
    metrics: Arc<Metrics>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
    /// What the channel's namespace keeps; `None`: no history.
    retention: Option<Retention>,
    /// The offset and epoch of the last event handled, with history.
    position: Option<Position>,
    /// Answers streaming in the channel as of `position`.
    answers: Answers,
    /// Whether `answers` holds every answer from its first token: not
    /// when the broker could not say what was streaming when the channel
    /// opened (a snapshot would then lack the start).
    answers_known: bool,
    /// Members whose missed events are being read.
    recovering: HashMap<ConnId, Recovering>,
    /// Numbers the recoveries and catch-ups, so a read that ends late is
    /// recognised as stale.
    generation: u64,
    /// While events the channel missed are read: the events that came
    /// after them, held.
    catching_up: Option<Vec<Publish>>,
    /// Users present in the channel on any node, as the presence store
    /// last said.
    cluster_users: HashSet<Arc<str>>,
    /// The sequence number of the last cluster change seen per user, so a
    /// change that arrives after a later one is dropped.
    seqs: HashMap<Arc<str>, u64>,
    /// Local users not (yet) in `cluster_users`, so the channel's size is
    /// known without walking both sets.
    local_only: usize,
    /// `system:` channels are the server's broadcasts (settings): they have
    /// no presence, so following them tells no one who else is online.
    has_presence: bool,
    /// On `team:` channels: the statuses members set (a present user with
    /// none is `online`); a user's entry goes when they leave.
    statuses: Option<HashMap<Arc<str>, Status>>,
}

/// What a channel actor is started with.
pub struct Setup {
    /// Where a member over its outbound budget is reported.
    pub slow: Recipient<SlowConsumer>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The node's broker.
    pub broker: Arc<dyn Broker>,
    /// The node's presence store.
    pub presence: Arc<dyn PresenceStore>,
}

impl Channel {
    /// An empty channel. `position` is the channel's position when the
    /// broker knows it exactly at creation; with history and without it,
    /// the channel loads it before serving anyone.
    pub fn new(name: Arc<str>, setup: Setup, state: Option<ChannelState>) -> Self {
        let Setup { slow, metrics, broker, presence } = setup;
        let (position, answers) = match state {
            Some(ChannelState { position, answers }) => (Some(position), answers),
            None => (None, Answers::new()),
        };
        Channel {
            has_presence: !names::visible(&name).starts_with("system:"),
            statuses: names::visible(&name).starts_with("team:").then(HashMap::new),
            retention: broker.retention(&name),
            answers_known: position.is_some(),
            position,
            answers,
            recovering: HashMap::new(),
            generation: 0,
            catching_up: None,
            name,
            members: Vec::new(),
            index: HashMap::new(),
            users: HashMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            flush_scheduled: false,
            slow,
            metrics,
            broker,
            presence,
            cluster_users: HashSet::new(),
            local_only: 0,
            seqs: HashMap::new(),
        }
    }

    fn deliver(&self, link: &Arc<Link>, batch: &Arc<Batch>) {
        match link.deliver(batch) {
            Delivery::Queued => {}
            Delivery::Overflowed => self.slow.do_send(SlowConsumer { link: Arc::clone(link) }),
            Delivery::Dropped => {
                self.metrics.dropped_deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the held-back events. Runs before every membership change, so
    /// each member gets exactly the events published while it was a member.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.pending_bytes = 0;
        let batch = Batch::new(mem::take(&mut self.pending));
        for link in &self.members {
            self.deliver(link, &batch);
        }
        self.hold(&batch, None);
    }

    /// Keeps `batch` for the members still recovering (all but `user`'s),
    /// to follow their missed events.
    fn hold(&mut self, batch: &Arc<Batch>, except_user: Option<&str>) {
        if self.recovering.is_empty() {
            return;
        }
        let mut overflowed = Vec::new();
        for r in self.recovering.values_mut().filter(|r| !r.overflowed && except_user != Some(&**r.link.user())) {
            if r.held.len() >= MAX_HELD_BATCHES {
                // Reported once; it is closed as a slow consumer.
                r.overflowed = true;
                overflowed.push(Arc::clone(&r.link));
                continue;
            }
            r.held.push(Arc::clone(batch));
        }
        for link in overflowed {
            self.slow.do_send(SlowConsumer { link });
        }
    }

    /// A user's first connection here joined (`true`) or the last left:
    /// announced here on a single node, reported to the bus with several.
    ///
    /// With several nodes a join is told to this node's members at once, as
    /// the channel sees it (a user it did not know of), and to the others
    /// through the bus; a leave is told only once Redis says the user is
    /// gone from every node.
    fn local_presence(&mut self, user: &Arc<str>, joined: bool) {
        if !self.has_presence {
            return;
        }
        match self.presence.change(&self.name, user, joined) {
            Counted::Now => self.cluster_change(user, joined, None),
            Counted::Later => {
                if joined && !self.cluster_users.contains(user) {
                    // Known from now on: the store's echo of this join is
                    // not news.
                    self.cluster_change(user, true, None);
                }
            }
        }
    }

    /// Users here and on other nodes, each once.
    fn present(&self) -> impl Iterator<Item = &str> {
        let remote = self.cluster_users.iter().filter(|u| !self.users.contains_key(*u));
        self.users.keys().chain(remote).map(|u| &**u)
    }

    fn present_count(&self) -> usize {
        self.cluster_users.len() + self.local_only
    }

    /// Takes the cluster's list of present users as it is now.
    fn set_cluster_users(&mut self, users: HashSet<Arc<str>>) {
        self.cluster_users = users;
        self.local_only = self.users.keys().filter(|u| !self.cluster_users.contains(*u)).count();
    }

    /// A user joined or left the whole cluster: members hear of it (all but
    /// the user's own connections) unless the channel knew already.
    fn cluster_change(&mut self, user: &Arc<str>, joined: bool, frame: Option<Frame>) {
        self.flush();
        let size = self.present_count();
        let news = if joined { self.cluster_users.insert(Arc::clone(user)) } else { self.cluster_users.remove(user) };
        // A change the channel already knows of (its presence list was
        // loaded after the change, before its event arrived) is not news.
        if !news {
            return;
        }
        if let (false, Some(statuses)) = (joined, &mut self.statuses) {
            statuses.remove(user);
        }
        if self.users.contains_key(user) {
            if joined {
                self.local_only = self.local_only.saturating_sub(1);
            } else {
                self.local_only += 1;
            }
        }
        // The same size limit as on a single node, counted before the
        // change so a user's join and leave are treated alike.
        if size.max(self.present_count()) > MAX_PRESENCE_LIST {
            return;
        }
        let batch = Batch::one(frame.unwrap_or_else(|| presence_frame(&self.name, user, joined)));
        for link in self.members.iter().filter(|l| l.user() != user) {
            self.deliver(link, &batch);
        }
        // Not held for recovering members: their reply's presence list,
        // made when the recovery ends, counts this change already.
    }

    /// The `channel.subscribed` reply: presence, and with history the
    /// position the subscription starts at and what recovery made of it.
    fn subscribed_frame(&self, reply_to: Option<&str>, position: Option<&Position>, recovery: Recovery) -> Frame {
        let (recovered, missed) = match recovery {
            Recovery::NotAsked => (None, None),
            Recovery::Recovered(missed) => (Some(true), Some(missed)),
            Recovery::Failed => (Some(false), Some(0)),
        };
        let (offset, epoch) = (position.map(|p| p.offset), position.map(|p| &*p.epoch));
        let data = if !self.has_presence {
            let presence = Vec::new();
            SubscribedData { presence, presence_count: 0, statuses: None, offset, epoch, recovered, missed }
        } else {
            let presence: Vec<&str> = self.present().take(MAX_PRESENCE_LIST).collect();
            let statuses = self.statuses.as_ref().map(|statuses| {
                presence
                    .iter()
                    .map(|&user_id| match statuses.get(user_id) {
                        Some((status, text)) => StatusData { user_id, status: *status, text: text.as_deref() },
                        None => StatusData { user_id, status: PresenceStatus::Online, text: None },
                    })
                    .collect()
            });
            let presence_count = self.present_count();
            SubscribedData { presence, presence_count, statuses, offset, epoch, recovered, missed }
        };
        protocol::encode(kind::SUBSCRIBED, Some(names::visible(&self.name)), &data, reply_to)
    }

    /// The reply, and with it the snapshot of every answer streaming
    /// unless the client recovered everything.
    fn subscribed(&self, link: &Arc<Link>, reply_to: &str, recovery: Recovery) {
        let mut frames = vec![self.subscribed_frame(Some(reply_to), self.position.as_ref(), recovery)];
        if !matches!(recovery, Recovery::Recovered(_)) {
            frames.extend(self.snapshots(0).into_iter().map(|(_, frame)| frame));
        }
        self.deliver(link, &Batch::new(frames));
    }

    /// The snapshots of the answers whose first token came after offset
    /// `after`.
    fn snapshots(&self, after: u64) -> Vec<(Arc<str>, Frame)> {
        if self.answers.is_empty() || !self.answers_known {
            return Vec::new();
        }
        self.answers
            .snapshottable()
            .into_iter()
            .filter(|(_, a)| a.first > after)
            .map(|(id, a)| (Arc::clone(id), answers::snapshot_frame(&self.name, id, a)))
            .collect()
    }

    fn add_member(&mut self, link: Arc<Link>) {
        self.index.insert(link.id(), self.members.len());
        self.members.push(link);
    }

    /// Takes a connection out of the fan-out (or out of recovery).
    fn remove_member(&mut self, conn: ConnId) -> Option<Arc<Link>> {
        if let Some(r) = self.recovering.remove(&conn) {
            return Some(r.link);
        }
        let i = self.index.remove(&conn)?;
        let link = self.members.swap_remove(i);
        if let Some(moved) = self.members.get(i) {
            self.index.insert(moved.id(), i);
        }
        Some(link)
    }

    /// A new member with a position to recover from: answered at once
    /// when there is nothing to read, held apart while the broker reads
    /// what it missed otherwise.
    fn recover(&mut self, link: Arc<Link>, reply_to: String, from: Position, ctx: &mut Context<Self>) {
        self.metrics.recoveries.fetch_add(1, Ordering::Relaxed);
        let at_once = match &self.position {
            // No history here: nothing can be recovered.
            None => Some(Recovery::Failed),
            Some(top) if from.epoch != top.epoch || from.offset > top.offset => Some(Recovery::Failed),
            Some(top) if from.offset == top.offset => Some(Recovery::Recovered(0)),
            Some(_) => None,
        };
        if let Some(recovery) = at_once {
            if matches!(recovery, Recovery::Failed) {
                self.metrics.recoveries_failed.fetch_add(1, Ordering::Relaxed);
            }
            self.subscribed(&link, &reply_to, recovery);
            return self.add_member(link);
        }
        let Some(top) = self.position.clone() else { return };
        let conn = link.id();
        let missed = (top.offset - from.offset) as usize;
        let mut read = self.broker.history(&self.name, from.offset, Some(top.offset), missed);
        let newer = self.snapshots(from.offset);
        let all = self.snapshots(0).into_iter().map(|(_, frame)| frame).collect();
        self.generation += 1;
        let generation = self.generation;
        let recovering =
            Recovering { link, reply_to, from, top, held: Vec::new(), newer, all, generation, overflowed: false };
        self.recovering.insert(conn, recovering);
        // The memory broker answers at once: no holding at all then.
        if let Some(page) = ready_now(&mut read) {
            return self.recovered(conn, generation, page);
        }
        ctx.spawn(read.into_actor(self).map(move |page, act, _| act.recovered(conn, generation, page)));
    }

    /// The missed events of a recovering member are read: it gets its
    /// reply, the missed events, what was held for it, and joins the
    /// fan-out.
    fn recovered(&mut self, conn: ConnId, generation: u64, page: Result<Page, HistoryError>) {
        // Gone meanwhile (or gone and back, recovering anew): nothing to
        // send for this read.
        if self.recovering.get(&conn).is_none_or(|r| r.generation != generation) {
            return;
        }
        let Some(r) = self.recovering.remove(&conn) else { return };
        let wanted = (r.top.offset - r.from.offset) as usize;
        let events = match page {
            Ok(page) => page.exactly(r.from.offset, wanted, &r.from.epoch),
            Err(e) => {
                log::warn!("channel '{}': recovery failed: {e}", self.name);
                None
            }
        };
        let mut frames = Vec::new();
        match events {
            Some(events) => {
                // The tokens of answers that began after the client's
                // position come as one snapshot each, after the rest.
                let replaced = |frame: &Frame| {
                    !r.newer.is_empty()
                        && matches!(answers::piece(frame.text()),
                            Some(Piece::Token { stream_id, .. }) if r.newer.iter().any(|(id, _)| *id == stream_id))
                };
                let events: Vec<Frame> = events.into_iter().map(|(_, f)| f).filter(|f| !replaced(f)).collect();
                frames.push(self.subscribed_frame(Some(&r.reply_to), Some(&r.top), Recovery::Recovered(events.len())));
                frames.extend(events);
                frames.extend(r.newer.into_iter().map(|(_, frame)| frame));
            }
            None => {
                self.metrics.recoveries_failed.fetch_add(1, Ordering::Relaxed);
                frames.push(self.subscribed_frame(Some(&r.reply_to), Some(&r.top), Recovery::Failed));
                frames.extend(r.all);
            }
        }
        self.deliver(&r.link, &Batch::new(frames));
        for batch in &r.held {
            self.deliver(&r.link, batch);
        }
        self.add_member(r.link);
    }
}

impl Actor for Channel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Nothing else is handled until the presence elsewhere is known,
        // so the first `channel.subscribed` lists users on every node.
        let load = self.presence.load(&self.name);
        ctx.wait(load.into_actor(self).map(|users, act, _| {
            act.set_cluster_users(users.unwrap_or_default().into_iter().map(Arc::from).collect());
        }));
        if self.statuses.is_some() {
            // Statuses set before this node opened the channel.
            let load = self.presence.load_statuses(&self.name);
            ctx.wait(load.into_actor(self).map(|statuses, act, _| {
                let Some(map) = &mut act.statuses else { return };
                for (user, json) in statuses.unwrap_or_default() {
                    // Written by a node, but Redis is not trusted: a value
                    // that is not a status is skipped.
                    if let Ok(update) = serde_json::from_str::<TeamPresenceUpdate>(&json) {
                        map.insert(Arc::from(user), (update.status, update.text));
                    }
                }
            }));
        }
        if self.retention.is_some() && self.position.is_none() {
            // After the presence load: the node's subscription is in place,
            // so every event after this position arrives as a Publish.
            let load = self.broker.load_state(&self.name);
            ctx.wait(load.into_actor(self).map(|state, act, _| match state {
                Ok(state) => {
                    act.position = Some(state.position);
                    act.answers = state.answers;
                    act.answers_known = true;
                }
                Err(e) => log::warn!("channel '{}': its position is unknown: {e}", act.name),
            }));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        log::debug!("channel '{}' closed", self.name);
    }
}

impl Handler<Join> for Channel {
    type Result = ();

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) {
        self.flush();
        let conn = join.link.id();
        if self.recovering.contains_key(&conn) {
            // Asked again while its first subscribe recovers: that one's
            // reply answers both, so no event comes before its position.
            return;
        }
        if self.index.contains_key(&conn) {
            // Subscribed already: the reply says where the channel is.
            let recovery = match (&join.recover, &self.position) {
                (None, _) => Recovery::NotAsked,
                (Some(from), Some(top)) if *from == *top => Recovery::Recovered(0),
                (Some(_), _) => Recovery::Failed,
            };
            return self.subscribed(&join.link, &join.reply_to, recovery);
        }
        let count = self.users.entry(Arc::clone(join.link.user())).or_insert(0);
        *count += 1;
        if *count == 1 {
            if !self.cluster_users.contains(join.link.user()) {
                self.local_only += 1;
            }
            self.local_presence(join.link.user(), true);
        }
        match join.recover {
            Some(from) => self.recover(join.link, join.reply_to, from, ctx),
            None => {
                self.subscribed(&join.link, &join.reply_to, Recovery::NotAsked);
                self.add_member(join.link);
            }
        }
    }
}

impl Handler<Leave> for Channel {
    type Result = ();

    fn handle(&mut self, leave: Leave, _: &mut Self::Context) {
        self.flush();
        if let Some(r) = self.recovering.get(&leave.conn) {
            // Its subscribe is answered before its unsubscribe, as any is.
            let reply = self.subscribed_frame(Some(&r.reply_to), Some(&r.top), Recovery::Failed);
            self.deliver(&r.link, &Batch::one(reply));
        }
        if let Some(link) = self.remove_member(leave.conn) {
            if let Some(count) = self.users.get_mut(link.user()) {
                *count -= 1;
                if *count == 0 {
                    // Announced while the leaving user still counts, so the
                    // size limit applies the same way to its join and leave.
                    self.local_presence(link.user(), false);
                    self.users.remove(link.user());
                    if !self.cluster_users.contains(link.user()) {
                        self.local_only = self.local_only.saturating_sub(1);
                    }
                }
            }
        }
        if let Some((link, reply_to)) = leave.reply {
            let data = UnsubscribedData { reason: leave.reason };
            let frame = protocol::encode(kind::UNSUBSCRIBED, Some(names::visible(&self.name)), &data, Some(&reply_to));
            self.deliver(&link, &Batch::one(frame));
        }
    }
}

impl Handler<Publish> for Channel {
    type Result = ();

    fn handle(&mut self, publish: Publish, ctx: &mut Self::Context) {
        if let Some(held) = &mut self.catching_up {
            held.push(publish);
            if held.len() > MAX_HELD_EVENTS {
                self.give_up(ctx);
            }
            return;
        }
        self.take(publish, ctx);
    }
}

impl Channel {
    /// Fans an event out, after what it says of the channel's position: a
    /// duplicate is dropped, an event after a gap or in a new epoch first
    /// has what was missed read from history.
    fn take(&mut self, publish: Publish, ctx: &mut Context<Self>) {
        if let Some(position) = &publish.position {
            match &self.position {
                // Loaded after the event was written: it is in the history
                // every member's position already counts.
                Some(top) if top.epoch == position.epoch && position.offset <= top.offset => return,
                Some(top) if top.epoch == position.epoch && position.offset > top.offset + 1 => {
                    let from = top.clone();
                    return self.catch_up(from, position.clone(), Some(publish), ctx);
                }
                Some(top) if top.epoch != position.epoch => {
                    let from = Position { offset: 0, epoch: Arc::clone(&position.epoch) };
                    return self.catch_up(from, position.clone(), Some(publish), ctx);
                }
                _ => {}
            }
        }
        self.fan_out(publish, ctx);
    }

    fn fan_out(&mut self, publish: Publish, ctx: &mut Context<Self>) {
        if let Some(position) = publish.position {
            if let Some(piece) = answers::piece(publish.frame.text()) {
                self.answers.apply(&piece, position.offset, std::time::Instant::now());
            }
            self.position = Some(position);
        }
        if let (Some(note), Some(statuses)) = (publish.status, &mut self.statuses) {
            statuses.insert(note.user, (note.status, note.text));
        }
        self.pending_bytes += publish.frame.len();
        self.pending.push(publish.frame);
        if self.pending.len() >= MAX_BATCH_FRAMES || self.pending_bytes >= MAX_BATCH_BYTES {
            self.flush();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            // actix runs notified messages after the mailbox is drained, so
            // every Publish already queued joins this batch.
            ctx.notify(Flush);
        }
    }

    /// The channel missed events between `from` and `to` (this node's
    /// link to Redis dropped them, or the epoch changed): events are held
    /// while the missed ones are read, then everything goes out in order.
    fn catch_up(&mut self, from: Position, to: Position, event: Option<Publish>, ctx: &mut Context<Self>) {
        let last_missed = match &event {
            Some(_) => to.offset.saturating_sub(1),
            None => to.offset,
        };
        // Events held already (a resync) stay first.
        let mut held = self.catching_up.take().unwrap_or_default();
        held.extend(event);
        self.catching_up = Some(held);
        let wanted = last_missed.saturating_sub(from.offset) as usize;
        let target = Position { offset: last_missed, epoch: to.epoch };
        if wanted == 0 {
            return self.caught_up(Some((from, target, Ok(None))), ctx);
        }
        let read = self.broker.history(&self.name, from.offset, Some(last_missed), wanted.min(MAX_HISTORY_SIZE));
        self.generation += 1;
        let generation = self.generation;
        ctx.spawn(read.into_actor(self).map(move |page, act, ctx| {
            // Given up on meanwhile: the events went out without it.
            if act.generation == generation {
                act.caught_up(Some((from, target, page.map(Some))), ctx);
            }
        }));
    }

    /// History does not answer while events pile up behind a gap: members
    /// are told events are missing (`recovered: false`) and get what is
    /// held, from where it starts.
    fn give_up(&mut self, ctx: &mut Context<Self>) {
        log::warn!("channel '{}': gave up reading a gap in its events", self.name);
        let Some(held) = self.catching_up.take() else { return };
        // A read still under way finds itself stale.
        self.generation += 1;
        let start = held.iter().find_map(|p| p.position.clone());
        if let Some(start) = start {
            let position = Position { offset: start.offset.saturating_sub(1), epoch: start.epoch };
            self.flush();
            let notice = Batch::one(self.subscribed_frame(None, Some(&position), Recovery::Failed));
            for link in &self.members {
                self.deliver(link, &notice);
            }
            self.hold(&notice, None);
            self.position = Some(position);
            self.answers_known = false;
        }
        for publish in held {
            self.take(publish, ctx);
        }
    }

    /// After the node was cut off from Redis: events published meanwhile
    /// may not have reached it, and the channel's history may have started
    /// again. Where the channel stands is read, and what it missed caught
    /// up on, before the next event goes out.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        if self.retention.is_none() || self.catching_up.is_some() {
            return;
        }
        // Events that arrive meanwhile wait, so none overtakes the missed.
        self.catching_up = Some(Vec::new());
        let load = self.broker.load_state(&self.name);
        ctx.spawn(load.into_actor(self).map(|state, act, ctx| {
            let Some(held) = act.catching_up.take() else { return };
            let to = match state {
                Ok(state) => {
                    if act.position.as_ref() == Some(&state.position) {
                        // Where the channel is: what was streaming too.
                        act.answers = state.answers;
                        act.answers_known = true;
                    }
                    state.position
                }
                Err(e) => {
                    log::warn!("channel '{}': could not check its position after a reconnect: {e}", act.name);
                    act.catching_up = Some(held);
                    return act.caught_up(None, ctx);
                }
            };
            let Some(known) = &act.position else {
                // The channel never knew where it was: it takes Redis's
                // word, and members learn it (what came before is not
                // replayed as if new).
                act.flush();
                let notice = Batch::one(act.subscribed_frame(None, Some(&to), Recovery::Failed));
                for link in &act.members {
                    act.deliver(link, &notice);
                }
                act.position = Some(to);
                act.catching_up = Some(held);
                return act.caught_up(None, ctx);
            };
            // A lower offset in the same epoch (a Redis restored from an
            // older snapshot) is not detected here: docs/scaling.md.
            let from = if known.epoch != to.epoch {
                Some(Position { offset: 0, epoch: Arc::clone(&to.epoch) })
            } else if known.offset < to.offset {
                Some(known.clone())
            } else {
                None
            };
            act.catching_up = Some(held);
            match from {
                None => act.caught_up(None, ctx),
                Some(from) => act.catch_up(from, to, None, ctx),
            }
        }));
    }

    /// The missed events are read (or given up on): members get them, or
    /// a `channel.subscribed` without `reply_to` saying the channel moved
    /// on without them (`recovered: false`) or to a new epoch; then the
    /// events held meanwhile.
    fn caught_up(&mut self, read: Option<CaughtUp>, ctx: &mut Context<Self>) {
        let Some(held) = self.catching_up.take() else { return };
        if let Some((from, to, page)) = read {
            self.flush();
            let wanted = (to.offset - from.offset) as usize;
            let events = match page {
                Ok(None) => Some(Vec::new()),
                Ok(Some(page)) => page.exactly(from.offset, wanted, &to.epoch),
                Err(e) => {
                    log::warn!("channel '{}': reading missed events failed: {e}", self.name);
                    None
                }
            };
            let new_epoch = self.position.as_ref().is_some_and(|p| p.epoch != to.epoch);
            let mut frames = Vec::new();
            if new_epoch || events.is_none() {
                // Members hold positions of the old epoch, or missed
                // events: they learn where the channel is now.
                let recovery = match &events {
                    Some(events) => Recovery::Recovered(events.len()),
                    None => Recovery::Failed,
                };
                // As in a recovery's reply: the position once the events
                // that follow are counted.
                frames.push(self.subscribed_frame(None, Some(&to), recovery));
                if events.is_none() || new_epoch {
                    // What streamed before is no longer known whole.
                    self.answers = Answers::new();
                    self.answers_known = events.is_some() && from.offset == 0;
                }
            }
            for (offset, frame) in events.into_iter().flatten() {
                if let Some(piece) = answers::piece(frame.text()) {
                    self.answers.apply(&piece, offset, std::time::Instant::now());
                }
                frames.push(frame);
            }
            self.position = Some(to);
            if !frames.is_empty() {
                let batch = Batch::new(frames);
                for link in &self.members {
                    self.deliver(link, &batch);
                }
                self.hold(&batch, None);
            }
        }
        for publish in held {
            if self.catching_up.is_some() {
                // A new gap among the held events: the rest wait for it.
                if let Some(held) = &mut self.catching_up {
                    held.push(publish);
                }
                continue;
            }
            self.take(publish, ctx);
        }
    }
}

impl Handler<Describe> for Channel {
    type Result = ChannelView;

    fn handle(&mut self, _: Describe, _: &mut Self::Context) -> ChannelView {
        // Chosen before anything is copied: this actor also fans out.
        let recovering = self.recovering.values().map(|r| &r.link);
        let mut links: Vec<&Arc<Link>> = self.members.iter().chain(recovering).collect();
        let member_count = links.len();
        crate::keep_smallest(&mut links, MAX_PRESENCE_LIST, |l| l.id());
        let members = links.into_iter().map(|l| (l.id(), Arc::clone(l.user()))).collect();
        let position = self.position.clone();
        if !self.has_presence {
            return ChannelView {
                members,
                member_count,
                presence: Vec::new(),
                presence_count: 0,
                statuses: None,
                position,
            };
        }
        let mut present: Vec<&str> = self.present().collect();
        crate::keep_smallest(&mut present, MAX_PRESENCE_LIST, |u| *u);
        let presence: Vec<Arc<str>> = present.into_iter().map(Arc::from).collect();
        let statuses = self.statuses.as_ref().map(|statuses| {
            presence
                .iter()
                .map(|user| match statuses.get(user) {
                    Some((status, text)) => (Arc::clone(user), (*status, text.clone())),
                    None => (Arc::clone(user), (PresenceStatus::Online, None)),
                })
                .collect()
        });
        ChannelView { members, member_count, presence, presence_count: self.present_count(), statuses, position }
    }
}

impl Handler<Flush> for Channel {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush();
    }
}

impl Handler<Presence> for Channel {
    type Result = ();

    fn handle(&mut self, msg: Presence, _: &mut Self::Context) {
        let note = &msg.note;
        match note.order(self.seqs.get(&note.user).copied()) {
            SeqOrder::Unnumbered => {}
            SeqOrder::Next => {
                self.seqs.insert(Arc::clone(&note.user), note.seq);
            }
            SeqOrder::Stale => return,
            SeqOrder::Absurd => {
                // Taken, it would make every real change after it look
                // stale: a user who could never leave the list.
                log::warn!("channel '{}': ignored a presence change numbered {}", self.name, note.seq);
                return;
            }
        }
        self.cluster_change(&msg.note.user, msg.note.joined, Some(msg.frame));
    }
}

impl Handler<Refresh> for Channel {
    type Result = ();

    fn handle(&mut self, msg: Refresh, ctx: &mut Self::Context) {
        if !msg.gone {
            // A Redis that restarted empty numbers changes from 1 again.
            self.seqs.clear();
            self.resync(ctx);
        }
        let load = self.presence.load(&self.name);
        let announce_gone = msg.gone;
        ctx.spawn(load.into_actor(self).map(move |users, act, _| {
            // No answer: keep what the channel knows rather than announce
            // everyone gone.
            let Some(users) = users else { return };
            let mut now: HashSet<Arc<str>> = users.into_iter().map(Arc::from).collect();
            now.extend(act.users.keys().cloned());
            let gone: Vec<Arc<str>> =
                if announce_gone { act.cluster_users.difference(&now).cloned().collect() } else { Vec::new() };
            let came: Vec<Arc<str>> = now.difference(&act.cluster_users).cloned().collect();
            for user in gone {
                act.cluster_change(&user, false, None);
            }
            for user in came {
                act.cluster_change(&user, true, None);
            }
        }));
    }
}
