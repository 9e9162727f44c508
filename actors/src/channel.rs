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
//! With several nodes (a bus), presence is the cluster's: a new channel
//! first loads who is present on every node (and handles nothing else until
//! it has), reports its users' first and last local connection to the bus,
//! and announces joins and leaves only when the bus says they are news for
//! the whole cluster.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::catalog::PresenceStatus;
use crate::catalog::TeamPresenceUpdate;
use crate::cluster::bus::{Bus, LoadPresence, LoadStatuses, PresenceChange};
use crate::cluster::wire::{PresenceNote, SeqOrder};
use crate::link::{Batch, ConnId, Delivery, Link};
use crate::metrics::Metrics;
use crate::names;
use crate::protocol::{self, kind, Frame};
use crate::registry::{Registry, SlowConsumer};

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
type Status = (PresenceStatus, Option<String>);

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
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
    /// The bus, when the node is one of several.
    bus: Option<Addr<Bus>>,
    /// Users present in the channel on any node, as the bus last said
    /// (with a bus only).
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

impl Channel {
    /// An empty channel; `bus` makes its presence the cluster's.
    pub fn new(name: Arc<str>, registry: Addr<Registry>, metrics: Arc<Metrics>, bus: Option<Addr<Bus>>) -> Self {
        Channel {
            has_presence: !names::visible(&name).starts_with("system:"),
            statuses: names::visible(&name).starts_with("team:").then(HashMap::new),
            name,
            members: Vec::new(),
            index: HashMap::new(),
            users: HashMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            flush_scheduled: false,
            registry,
            metrics,
            bus,
            cluster_users: HashSet::new(),
            local_only: 0,
            seqs: HashMap::new(),
        }
    }

    fn deliver(&self, link: &Arc<Link>, batch: &Arc<Batch>) {
        match link.deliver(batch) {
            Delivery::Queued => {}
            Delivery::Overflowed => self.registry.do_send(SlowConsumer { link: Arc::clone(link) }),
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
        let batch = Batch::new(std::mem::take(&mut self.pending));
        for link in &self.members {
            self.deliver(link, &batch);
        }
    }

    fn to_others(&self, except: ConnId, frame: Frame) {
        let batch = Batch::one(frame);
        for link in self.members.iter().filter(|l| l.id() != except) {
            self.deliver(link, &batch);
        }
    }

    /// A user's first connection here joined (`true`) or the last left:
    /// announced here on a single node, reported to the bus with several.
    ///
    /// With several nodes a join is told to this node's members at once, as
    /// the channel sees it (a user it did not know of), and to the others
    /// through the bus; a leave is told only once Redis says the user is
    /// gone from every node.
    fn local_presence(&mut self, user: &Arc<str>, joined: bool, except: ConnId) {
        if !self.has_presence {
            return;
        }
        let Some(bus) = &self.bus else {
            if let (false, Some(statuses)) = (joined, &mut self.statuses) {
                // Without a connection, the user is `offline`: `left` says so.
                statuses.remove(user);
            }
            if self.users.len() <= MAX_PRESENCE_LIST {
                self.to_others(except, presence_frame(&self.name, user, joined));
            }
            return;
        };
        bus.do_send(PresenceChange { channel: Arc::clone(&self.name), user: Arc::clone(user), joined });
        if joined && !self.cluster_users.contains(user) {
            // Known from now on: the bus's echo of this join is not news.
            self.cluster_change(user, true, None);
        }
    }

    /// Users here and on other nodes, each once.
    fn present(&self) -> impl Iterator<Item = &str> {
        let remote = self.cluster_users.iter().filter(|u| !self.users.contains_key(*u));
        self.users.keys().chain(remote).map(|u| &**u)
    }

    fn present_count(&self) -> usize {
        if self.bus.is_none() {
            self.users.len()
        } else {
            self.cluster_users.len() + self.local_only
        }
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
    }

    fn subscribed(&self, link: &Arc<Link>, reply_to: &str) {
        let data = if !self.has_presence {
            SubscribedData { presence: Vec::new(), presence_count: 0, statuses: None }
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
            SubscribedData { presence, presence_count: self.present_count(), statuses }
        };
        self.deliver(
            link,
            &Batch::one(protocol::encode(kind::SUBSCRIBED, Some(names::visible(&self.name)), &data, Some(reply_to))),
        );
    }
}

impl Actor for Channel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(bus) = &self.bus else { return };
        // Nothing else is handled until the cluster's presence is known, so
        // the first `channel.subscribed` lists users on every node.
        let load = bus.send(LoadPresence { channel: Arc::clone(&self.name) });
        ctx.wait(load.into_actor(self).map(|users, act, _| {
            let users = users.ok().flatten().unwrap_or_default();
            act.set_cluster_users(users.into_iter().map(Arc::from).collect());
        }));
        if self.statuses.is_some() {
            // Statuses set before this node opened the channel.
            let load = bus.send(LoadStatuses { channel: Arc::clone(&self.name) });
            ctx.wait(load.into_actor(self).map(|statuses, act, _| {
                let Some(map) = &mut act.statuses else { return };
                for (user, json) in statuses.ok().flatten().unwrap_or_default() {
                    // Written by a node, but Redis is not trusted: a value
                    // that is not a status is skipped.
                    if let Ok(update) = serde_json::from_str::<TeamPresenceUpdate>(&json) {
                        map.insert(Arc::from(user), (update.status, update.text));
                    }
                }
            }));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        log::debug!("channel '{}' closed", self.name);
    }
}

impl Handler<Join> for Channel {
    type Result = ();

    fn handle(&mut self, join: Join, _: &mut Self::Context) {
        self.flush();
        let conn = join.link.id();
        if !self.index.contains_key(&conn) {
            self.index.insert(conn, self.members.len());
            self.members.push(Arc::clone(&join.link));
            let count = self.users.entry(Arc::clone(join.link.user())).or_insert(0);
            *count += 1;
            if *count == 1 {
                if !self.cluster_users.contains(join.link.user()) {
                    self.local_only += 1;
                }
                self.local_presence(join.link.user(), true, conn);
            }
        }
        self.subscribed(&join.link, &join.reply_to);
    }
}

impl Handler<Leave> for Channel {
    type Result = ();

    fn handle(&mut self, leave: Leave, _: &mut Self::Context) {
        self.flush();
        if let Some(i) = self.index.remove(&leave.conn) {
            let link = self.members.swap_remove(i);
            if let Some(moved) = self.members.get(i) {
                self.index.insert(moved.id(), i);
            }
            if let Some(count) = self.users.get_mut(link.user()) {
                *count -= 1;
                if *count == 0 {
                    // Announced while the leaving user still counts, so the
                    // size limit applies the same way to its join and leave.
                    self.local_presence(link.user(), false, leave.conn);
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
        let Some(bus) = &self.bus else { return };
        if !msg.gone {
            // A Redis that restarted empty numbers changes from 1 again.
            self.seqs.clear();
        }
        let load = bus.send(LoadPresence { channel: Arc::clone(&self.name) });
        let announce_gone = msg.gone;
        ctx.spawn(load.into_actor(self).map(move |users, act, _| {
            // No answer: keep what the channel knows rather than announce
            // everyone gone.
            let Some(users) = users.ok().flatten() else { return };
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
