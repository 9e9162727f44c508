//! The agent gateway: what a browser sends for an agent reaches that agent,
//! at least once and in order per channel, and the browser gets a receipt
//! only once the record is safely on its way.
//!
//! One gateway actor per node, on a thread of its own. Sessions hand it a
//! [`Submit`] (a validated client request, its record serialized once) and
//! get an [`Answer`] back: the receipt's id, or the refusal to send (4007
//! when no agent takes the request, an agent is disabled or unavailable, or
//! its queue is full). The agents come from `configs/agents.yaml`
//! (`settings/agents.rs`), handed over by the config watcher as
//! [`Configure`] on every valid reload.
//!
//! The parts:
//! - this file: the actor, its messages, and the routing of requests;
//! - [`webhook`]: posting records to webhook agents, with retries;
//! - [`availability`]: whether each agent can take requests now;
//! - [`record`]: the record's shape, the webhook signature, the retry
//!   schedule, the request fingerprint;
//! - [`lanes`]: a webhook agent's bounded queue, one lane per channel;
//! - [`window`]: the memory of requests seen (idempotency), of tool calls
//!   made (routing `tool.call.response`) and of writes Redis did not
//!   confirm;
//! - [`redis`]: the ordered writer of stream records and claims, and the
//!   probe of a stream agent's consumer groups.
//!
//! Order: the records of a lane (a channel, in its tenant) reach the
//! streams and the webhook queues in the order the client sent them,
//! whatever Redis does meanwhile. Writes go to Redis in order through one
//! queue and come back in order, so a lane's writes may be many at once;
//! what would overtake them waits in the gateway, in order, until they are
//! answered: a request behind the lookup of a tool call's agent (its write
//! is not queued yet), and a request that would be accepted without Redis
//! (Redis went down, or nothing to write) behind writes still out.
//!
//! docs/gateway.md is the contract.

pub mod availability;
pub mod lanes;
pub mod record;
pub mod redis;
pub mod webhook;
pub mod window;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use self::lanes::{Lanes, Queued};
use self::record::digest;
use self::redis::{Claim, Op, Outcome, WriteError, Writes};
use self::window::Window;
use crate::cluster::outbox::Conn;
use crate::codes::ErrorCode;
use crate::protocol::{kind as wire, Frame};
use crate::registry::{Publish, Registry};
use crate::settings::agents::{Agent, AgentsConfig, Delivery};

/// Requests remembered for idempotency at most, in memory (about 150 bytes
/// each); past it the oldest are forgotten early (Redis, when there is one,
/// still remembers them).
pub const MAX_REMEMBERED: usize = 200_000;

/// How long the agent of a tool call is remembered.
pub const CALL_TTL: Duration = Duration::from_secs(3600);

/// Bytes of records waiting for Redis at most; past it requests are refused
/// (4007) rather than buffered.
pub const MAX_REDIS_BYTES: usize = 64 * 1024 * 1024;

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The Redis key prefix (`nova:`).
    pub prefix: String,
    /// Approximate MAXLEN of each agent's stream; a stream agent with half
    /// as many records unacknowledged takes no more.
    pub stream_maxlen: usize,
    /// How long a request is remembered.
    pub idempotency: Duration,
    /// How recently an agent must have shown life to be available.
    pub idle: Duration,
    /// How often availability is checked.
    pub check_interval: Duration,
    /// A webhook agent's queue, unless its entry sets `queue`.
    pub queue: usize,
    /// How long one webhook POST may take.
    pub timeout: Duration,
}

/// Counters, and what the sessions read of the gateway's state.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Requests accepted (receipts given for new records).
    pub accepted: AtomicU64,
    /// Repeats of accepted requests, answered with the first receipt.
    pub repeats: AtomicU64,
    /// Requests refused (4007).
    pub refused: AtomicU64,
    /// Webhook deliveries that succeeded.
    pub delivered: AtomicU64,
    /// Webhook attempts that failed (each is retried).
    pub failed_attempts: AtomicU64,
    /// Records a webhook agent refused for good (400, 413, 415, 422).
    pub rejected: AtomicU64,
    /// Records dropped because their agent was removed from the file.
    pub dropped: AtomicU64,
    /// Whether some agent takes `chat.message`: without one, sessions relay
    /// chat messages themselves and the gateway is not in their way.
    pub chat_agents: AtomicBool,
    /// Each agent of agents.yaml with its own counters, as `/metrics`
    /// reads them by agent (the file bounds the label set). Replaced when
    /// the file changes; an agent kept keeps its counters.
    pub agents: std::sync::Mutex<Vec<(String, Arc<AgentCounters>)>>,
}

/// One agent's gateway counters.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Records routed to it (written to its stream, or queued for its
    /// webhook).
    pub records: AtomicU64,
    /// Webhook deliveries that succeeded.
    pub delivered: AtomicU64,
    /// Webhook attempts that failed and will be retried.
    pub failed_attempts: AtomicU64,
    /// Records it refused for good.
    pub rejected: AtomicU64,
}

/// Which agents a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One agent by name: `agent.invoke` on `agent:{name}`.
    Named(String),
    /// The agents whose `receives` lists the type; for a
    /// `tool.call.response`, the agent that made the call when it is
    /// known.
    ByType,
}

/// A frame to relay to a channel once the request is accepted (a
/// `chat.message` goes to its channel and to its agents).
#[derive(Debug, Clone)]
pub struct Relay {
    /// The channel's key.
    pub key: Arc<str>,
    /// The frame.
    pub frame: Frame,
}

/// A client's request for agents.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    /// The event type.
    pub kind: &'static str,
    /// The client's request id: the receipt's `reply_to`.
    pub request_id: String,
    /// What makes a resend the same request: a digest of the request id,
    /// the type, the channel and the client's `data` (see
    /// [`record::fingerprint`]). With `user`, the idempotency key.
    pub fingerprint: String,
    /// The user, qualified by tenant (`names.rs`), for the idempotency key.
    pub user: String,
    /// The channel as the client named it.
    pub channel: Option<Arc<str>>,
    /// The channel's key (or, without a channel, the user's): records of
    /// one lane are delivered in order.
    pub lane: Arc<str>,
    /// Which agents.
    pub target: Target,
    /// For `tool.call.response`: the call answered.
    pub call_id: Option<String>,
    /// The record's id, the receipt's `message_id`.
    pub id: Arc<str>,
    /// The record, serialized once.
    pub record: Arc<str>,
    /// Relayed to the channel on acceptance; with a relay, a request no
    /// agent takes is accepted all the same.
    pub relay: Option<Relay>,
    /// Where the answer goes.
    pub reply: Recipient<Answer>,
}

/// Why the gateway refused a request: the text of the client's 4007.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No configured agent receives the type.
    #[error("no agent takes '{0}' on this server")]
    NoAgent(&'static str),
    /// `agent.invoke` named an agent that is not in the file.
    #[error("no agent '{0}' is configured")]
    NotConfigured(String),
    /// The named agent does not list the type in `receives`.
    #[error("agent '{name}' does not take '{kind}'")]
    DoesNotTake {
        /// The agent.
        name: String,
        /// The type.
        kind: &'static str,
    },
    /// The agent is disabled in the file.
    #[error("agent '{0}' is disabled")]
    Disabled(String),
    /// The agent showed no life lately.
    #[error("agent '{name}' is not available: {reason}")]
    Unavailable {
        /// The agent.
        name: String,
        /// What is missing.
        reason: String,
    },
    /// The agent's queue (webhook) or backlog (stream) is full.
    #[error("agent '{name}' has {waiting} records waiting, its limit: try again later")]
    Full {
        /// The agent.
        name: String,
        /// How many.
        waiting: u64,
    },
    /// Redis did not take the write.
    #[error("agents are not available: {0}")]
    Redis(#[from] WriteError),
    /// Too much is waiting for Redis already.
    #[error("agents are not available: too many records waiting for redis")]
    Backpressure,
}

/// Why the client gets no receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The error code (4007).
    pub code: ErrorCode,
    /// What to tell the client.
    pub message: String,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Refused { code: ErrorCode::AgentUnavailable, message: refusal.to_string() }
    }
}

/// The gateway's answer to a [`Submit`].
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Answer {
    /// The request's id.
    pub reply_to: String,
    /// The channel as the client named it.
    pub channel: Option<Arc<str>>,
    /// The receipt's `message_id` (the first one, for a repeat), or why not.
    pub result: Result<Arc<str>, Refused>,
}

/// The agents of a valid `agents.yaml`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Configure(pub AgentsConfig);

/// A backend published `tool.call.start` naming the agent that made the
/// call: a `tool.call.response` to it goes to that agent. Call ids are the
/// agents' own (unique per call), so they are not scoped by tenant: the
/// record carries the user and tenant for the agent to check.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RememberCall {
    /// The call.
    pub call_id: String,
    /// The agent.
    pub agent: String,
}

/// The agents with their live state, for `GET /api/agents`.
#[derive(Message)]
#[rtype(result = "Vec<AgentView>")]
pub struct ListAgents;

/// One agent as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    /// The agent's entry (never its secret).
    #[serde(flatten)]
    pub agent: Agent,
    /// Whether requests for it are accepted now.
    pub available: bool,
    /// Why not, or what showed it alive.
    pub reason: String,
    /// Records waiting for it (webhook).
    pub queued: usize,
    /// Records delivered to it (webhook).
    pub delivered: u64,
    /// Failed attempts (webhook).
    pub failed_attempts: u64,
    /// Records it refused for good (webhook).
    pub rejected: u64,
    /// When it last showed life, RFC 3339.
    pub last_seen_at: Option<String>,
}

/// One configured agent and what the gateway knows of it.
struct Slot {
    agent: Agent,
    available: bool,
    reason: String,
    /// Whether `available` was announced (`agent_availability`) as it is now.
    announced: Option<bool>,
    /// Webhook: the queue.
    lanes: Lanes,
    /// Webhook: records accepted, waiting for Redis's claim, not queued yet.
    reserved: usize,
    reserved_bytes: usize,
    /// The last sign of life: a delivery, a health check, a consumer's read.
    seen_at: Option<(Instant, SystemTime)>,
    /// Webhook: the last attempt failed.
    failing: bool,
    /// A probe or health check is running.
    checking: bool,
    /// Stream: records unacknowledged at the last probe, written since it
    /// began, and what `written` was when the probe running now began.
    backlog: u64,
    written: u64,
    written_at_probe: u64,
    delivered: u64,
    failed_attempts: u64,
    rejected: u64,
    /// The same counts, shared with `/metrics`.
    counters: Arc<AgentCounters>,
}

impl Slot {
    fn new(agent: Agent, default_queue: usize) -> Self {
        let capacity = queue_of(&agent, default_queue);
        Slot {
            agent,
            available: false,
            reason: "not checked yet".into(),
            announced: None,
            lanes: Lanes::new(capacity),
            reserved: 0,
            reserved_bytes: 0,
            seen_at: None,
            failing: false,
            checking: false,
            backlog: 0,
            written: 0,
            written_at_probe: 0,
            delivered: 0,
            failed_attempts: 0,
            rejected: 0,
            counters: Arc::default(),
        }
    }

    fn is_stream(&self) -> bool {
        matches!(self.agent.delivery, Delivery::Stream)
    }
}

fn queue_of(agent: &Agent, default: usize) -> usize {
    match &agent.delivery {
        Delivery::Webhook { queue: Some(q), .. } => *q,
        _ => default,
    }
}

/// A write to Redis waiting for its outcome.
enum Pending {
    /// The record's write (or claim); then the webhooks, by name.
    Write { submit: Submit, claim: String, webhooks: Vec<String> },
    /// The lookup of a tool call's agent; then the routing.
    Lookup(Submit),
}

/// A write Redis did not confirm, kept so that a resend which finds it was
/// written after all still queues its webhooks.
struct Unconfirmed {
    /// The id the unconfirmed write carried: only a claim holding it means
    /// that write landed.
    id: Arc<str>,
    webhooks: Vec<String>,
    record: Arc<str>,
    lane: Arc<str>,
}

/// A lane with requests out to Redis, and the requests waiting behind them.
#[derive(Default)]
struct Held {
    /// Writes out.
    writes: usize,
    /// A lookup of a tool call's agent is out.
    lookup: bool,
    /// In order; the first waits for what is out.
    queue: VecDeque<Submit>,
}

/// The gateway actor.
pub struct Gateway {
    config: GatewayConfig,
    registry: Addr<Registry>,
    stats: Arc<GatewayStats>,
    slots: Vec<Slot>,
    seen: Window<Arc<str>>,
    unconfirmed: Window<Unconfirmed>,
    calls: Window<String>,
    /// Redis, when the node has it; `conn` feeds the writer task.
    conn: Option<tokio::sync::watch::Receiver<Conn>>,
    writes: Option<Writes>,
    pending: HashMap<u64, Pending>,
    held: HashMap<Arc<str>, Held>,
    redis_bytes: usize,
    seq: u64,
    client: Option<awc::Client>,
}

impl Gateway {
    /// A gateway; with `conn` (the bus's connection), stream delivery and
    /// idempotency across nodes.
    pub fn new(
        config: GatewayConfig,
        registry: Addr<Registry>,
        stats: Arc<GatewayStats>,
        conn: Option<tokio::sync::watch::Receiver<Conn>>,
    ) -> Self {
        Gateway {
            seen: Window::new(config.idempotency, MAX_REMEMBERED),
            unconfirmed: Window::new(config.idempotency, MAX_REMEMBERED),
            calls: Window::new(CALL_TTL, MAX_REMEMBERED),
            config,
            registry,
            stats,
            slots: Vec::new(),
            conn,
            writes: None,
            pending: HashMap::new(),
            held: HashMap::new(),
            redis_bytes: 0,
            seq: 0,
            client: None,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn stream_key(&self, agent: &str) -> String {
        format!("{}inbound:{agent}", self.config.prefix)
    }

    fn claim_key(&self, user: &str, fingerprint: &str) -> String {
        format!("{}seen:{}", self.config.prefix, digest(&[user, fingerprint]))
    }

    fn call_key(&self, call_id: &str) -> String {
        format!("{}call:{}", self.config.prefix, digest(&[call_id]))
    }

    fn slot(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.agent.name == name)
    }

    fn redis_up(&self) -> bool {
        self.writes.as_ref().is_some_and(Writes::is_up)
    }

    fn answer(&self, submit: &Submit, result: Result<Arc<str>, Refused>) {
        match &result {
            Ok(id) if *id == submit.id => self.stats.accepted.fetch_add(1, Relaxed),
            Ok(_) => self.stats.repeats.fetch_add(1, Relaxed),
            Err(_) => self.stats.refused.fetch_add(1, Relaxed),
        };
        submit.reply.do_send(Answer { reply_to: submit.request_id.clone(), channel: submit.channel.clone(), result });
    }

    fn refuse(&self, submit: &Submit, refusal: Refusal) {
        self.answer(submit, Err(refusal.into()));
    }

    /// A request's turn: answered from memory if it is a repeat, else
    /// routed (after looking up its tool call's agent, when Redis may know
    /// it and this node does not). Returns the request when it must wait
    /// for what its lane has out.
    fn take(&mut self, submit: Submit, ctx: &mut Context<Self>) -> Option<Submit> {
        let claim = self.claim_key(&submit.user, &submit.fingerprint);
        if let Some(first) = self.seen.get(&claim) {
            let first = Arc::clone(first);
            self.answer(&submit, Ok(first));
            return None;
        }
        let Some(call_id) = submit.call_id.as_deref() else { return self.route(submit, None, ctx) };
        let key = self.call_key(call_id);
        if let Some(agent) = self.calls.get(&key) {
            let agent = agent.clone();
            return self.route(submit, Some(agent), ctx);
        }
        // Without Redis this node's memory is all there is; with Redis but
        // no answer from it, routing by type could hand the response to
        // another agent than the one that made the call.
        let Some(writes) = &self.writes else { return self.route(submit, None, ctx) };
        if !writes.is_up() {
            self.refuse(&submit, Refusal::Redis(WriteError::Down));
            return None;
        }
        let seq = self.next_seq();
        if !self.writes.as_ref().is_some_and(|w| w.send(Op::Lookup { seq, key })) {
            self.refuse(&submit, Refusal::Backpressure);
            return None;
        }
        self.held.entry(Arc::clone(&submit.lane)).or_default().lookup = true;
        self.pending.insert(seq, Pending::Lookup(submit));
        None
    }

    /// Something the lane had out came back: the requests waiting take
    /// their turn, in order, until one of them has to wait again.
    fn release_lane(&mut self, lane: &Arc<str>, ctx: &mut Context<Self>) {
        loop {
            let Some(held) = self.held.get_mut(lane) else { return };
            if held.lookup {
                return;
            }
            let Some(next) = held.queue.pop_front() else {
                if held.writes == 0 {
                    self.held.remove(lane);
                }
                return;
            };
            if let Some(waits) = self.take(next, ctx) {
                self.held.entry(Arc::clone(lane)).or_default().queue.push_front(waits);
                return;
            }
        }
    }

    /// The agents a request goes to, checked: each must be enabled,
    /// available and have room. Empty when no agent takes it.
    fn targets(&self, submit: &Submit, known_agent: Option<&str>, redis_up: bool) -> Result<Vec<usize>, Refusal> {
        let kind = submit.kind;
        let chosen: Vec<usize> = match (&submit.target, known_agent) {
            (Target::Named(name), _) => match self.slot(name) {
                Some(i) if self.slots[i].agent.receives(kind) => vec![i],
                Some(_) => return Err(Refusal::DoesNotTake { name: name.clone(), kind }),
                None => return Err(Refusal::NotConfigured(name.clone())),
            },
            (Target::ByType, Some(name)) => match self.slot(name) {
                Some(i) => vec![i],
                None => return Err(Refusal::NotConfigured(name.to_owned())),
            },
            (Target::ByType, None) => {
                self.slots.iter().enumerate().filter(|(_, s)| s.agent.receives(kind)).map(|(i, _)| i).collect()
            }
        };
        let bytes = submit.record.len();
        for &i in &chosen {
            let slot = &self.slots[i];
            let name = || slot.agent.name.clone();
            if !slot.agent.enabled {
                return Err(Refusal::Disabled(name()));
            }
            if !slot.available {
                return Err(Refusal::Unavailable { name: name(), reason: slot.reason.clone() });
            }
            if slot.is_stream() {
                if !redis_up {
                    return Err(Refusal::Unavailable { name: name(), reason: WriteError::Down.to_string() });
                }
                let waiting = slot.backlog + slot.written;
                if waiting >= self.backlog_limit() {
                    return Err(Refusal::Full { name: name(), waiting });
                }
            } else if !slot.lanes.has_room(slot.reserved, slot.reserved_bytes, bytes) {
                let waiting = (slot.lanes.len() + slot.reserved) as u64;
                return Err(Refusal::Full { name: name(), waiting });
            }
        }
        Ok(chosen)
    }

    /// Records unacknowledged by a stream agent past which it takes no
    /// more: half the stream's length, so that trimming (`MAXLEN ~`) takes
    /// only records every group has acknowledged.
    fn backlog_limit(&self) -> u64 {
        (self.config.stream_maxlen as u64 / 2).max(1)
    }

    /// Routes a request whose tool-call agent (if any) is settled; returns
    /// it when it must wait for writes its lane has out.
    fn route(&mut self, submit: Submit, known_agent: Option<String>, ctx: &mut Context<Self>) -> Option<Submit> {
        // Read once: the bus's thread changes it, and the check of the
        // agents and the choice of path must agree.
        let redis_up = self.redis_up();
        let chosen = match self.targets(&submit, known_agent.as_deref(), redis_up) {
            Ok(chosen) => chosen,
            Err(refusal) => {
                self.refuse(&submit, refusal);
                return None;
            }
        };
        if chosen.is_empty() && submit.relay.is_none() {
            self.refuse(&submit, Refusal::NoAgent(submit.kind));
            return None;
        }
        let claim = self.claim_key(&submit.user, &submit.fingerprint);
        let (streams, webhooks): (Vec<usize>, Vec<usize>) =
            chosen.into_iter().partition(|&i| self.slots[i].is_stream());
        let webhooks: Vec<String> = webhooks.into_iter().map(|i| self.slots[i].agent.name.clone()).collect();
        // With Redis up, the claim is made there even when only webhooks
        // are targeted, so a resend to another node is recognised; a relay
        // nobody else receives needs no round trip.
        if !redis_up || (streams.is_empty() && webhooks.is_empty()) {
            // Accepted now: not before the lane's writes still out.
            if self.held.get(&submit.lane).is_some_and(|h| h.writes > 0) {
                return Some(submit);
            }
            self.accepted(submit, claim, &webhooks, ctx);
            return None;
        }
        let bytes = submit.record.len();
        if self.redis_bytes + bytes > MAX_REDIS_BYTES {
            self.refuse(&submit, Refusal::Backpressure);
            return None;
        }
        let seq = self.next_seq();
        let op = Op::Submit {
            seq,
            claim: claim.clone(),
            id: Arc::clone(&submit.id),
            streams: streams.iter().map(|&i| self.stream_key(&self.slots[i].agent.name)).collect(),
            record: Arc::clone(&submit.record),
            ttl: self.config.idempotency,
            maxlen: self.config.stream_maxlen,
        };
        if !self.writes.as_ref().is_some_and(|w| w.send(op)) {
            self.refuse(&submit, Refusal::Backpressure);
            return None;
        }
        self.redis_bytes += bytes;
        let limit = self.backlog_limit();
        for &i in &streams {
            let slot = &mut self.slots[i];
            slot.written += 1;
            slot.counters.records.fetch_add(1, Relaxed);
            // Half way to the limit on this node's count alone: look again
            // now rather than at the next tick, so a fast agent is not held
            // to the limit per check interval.
            if slot.written * 2 >= limit.saturating_sub(slot.backlog) {
                self.check(i, ctx);
            }
        }
        for name in &webhooks {
            if let Some(i) = self.slot(name) {
                self.slots[i].reserved += 1;
                self.slots[i].reserved_bytes += bytes;
            }
        }
        self.held.entry(Arc::clone(&submit.lane)).or_default().writes += 1;
        self.pending.insert(seq, Pending::Write { submit, claim, webhooks });
        None
    }

    /// Gives back what a write waiting for Redis held.
    fn unreserve(&mut self, webhooks: &[String], bytes: usize) {
        self.redis_bytes = self.redis_bytes.saturating_sub(bytes);
        for name in webhooks {
            if let Some(i) = self.slot(name) {
                let slot = &mut self.slots[i];
                slot.reserved = slot.reserved.saturating_sub(1);
                slot.reserved_bytes = slot.reserved_bytes.saturating_sub(bytes);
            }
        }
    }

    /// The record is safe (written, or for webhooks, about to be queued):
    /// answer, queue it, relay.
    fn accepted(&mut self, submit: Submit, claim: String, webhooks: &[String], ctx: &mut Context<Self>) {
        self.seen.insert(claim, Arc::clone(&submit.id));
        // The receipt first: it is in the sender's mailbox before the relay
        // even reaches the registry, so a subscribed sender gets its receipt
        // before its own message, as without agents.
        self.answer(&submit, Ok(Arc::clone(&submit.id)));
        if let Some(relay) = &submit.relay {
            self.registry.do_send(Publish { channel: Arc::clone(&relay.key), frame: relay.frame.clone() });
        }
        self.queue(webhooks, &submit.id, &submit.record, &submit.lane, ctx);
    }

    /// Queues a record for webhook agents (by name: one removed meanwhile
    /// is skipped, and counted) and starts what can go.
    fn queue(
        &mut self,
        webhooks: &[String],
        id: &Arc<str>,
        record: &Arc<str>,
        lane: &Arc<str>,
        ctx: &mut Context<Self>,
    ) {
        let body = bytes::Bytes::copy_from_slice(record.as_bytes());
        for name in webhooks {
            match self.slot(name).filter(|&i| !self.slots[i].is_stream()) {
                Some(i) => {
                    let item = Queued { seq: self.next_seq(), id: Arc::clone(id), body: body.clone(), failures: 0 };
                    self.slots[i].lanes.push(Arc::clone(lane), item);
                    self.slots[i].counters.records.fetch_add(1, Relaxed);
                    self.pump(i, ctx);
                }
                None => {
                    self.stats.dropped.fetch_add(1, Relaxed);
                    log::warn!(agent = name.as_str(); "gateway: agent '{name}' left agents.yaml before record {id} was queued; dropped");
                }
            }
        }
    }

    fn written(&mut self, pending: Pending, result: Result<Claim, WriteError>, ctx: &mut Context<Self>) {
        let Pending::Write { submit, claim, webhooks } = pending else { return };
        self.unreserve(&webhooks, submit.record.len());
        let lane = Arc::clone(&submit.lane);
        if let Some(held) = self.held.get_mut(&lane) {
            held.writes = held.writes.saturating_sub(1);
        }
        match result {
            Ok(Claim::New) => {
                // An unconfirmed earlier write of it did not land after all.
                self.unconfirmed.take(&claim);
                self.accepted(submit, claim, &webhooks, ctx)
            }
            Ok(Claim::Repeat(first)) => {
                let first: Arc<str> = Arc::from(first);
                // A write of this node that timed out, found written after
                // all: its webhooks were never queued. (A claim with another
                // id is a resend's that landed, whose webhooks were.)
                if let Some(lost) = self.unconfirmed.take(&claim).filter(|lost| lost.id == first) {
                    self.queue(&lost.webhooks, &first, &lost.record, &lost.lane, ctx);
                }
                self.seen.insert(claim, Arc::clone(&first));
                self.answer(&submit, Ok(first));
            }
            Err(error) => {
                if error.uncertain() && !webhooks.is_empty() {
                    let kept = Unconfirmed {
                        id: Arc::clone(&submit.id),
                        webhooks,
                        record: Arc::clone(&submit.record),
                        lane: Arc::clone(&lane),
                    };
                    self.unconfirmed.insert(claim, kept);
                }
                self.refuse(&submit, Refusal::Redis(error));
            }
        }
        self.release_lane(&lane, ctx);
    }

    fn settle_chat_agents(&self) {
        let any = self.slots.iter().any(|s| s.agent.receives(wire::CHAT_MESSAGE));
        self.stats.chat_agents.store(any, Relaxed);
    }
}

impl Actor for Gateway {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A redirect would turn the POST into a GET without the record,
        // whose 2xx would count as delivered.
        self.client = Some(awc::Client::builder().timeout(self.config.timeout).disable_redirects().finish());
        if let Some(conn) = self.conn.take() {
            let (writes, task) = Writes::new(conn, ctx.address().recipient());
            self.writes = Some(writes);
            ctx.spawn(actix::fut::wrap_future(task));
        }
        ctx.run_interval(self.config.check_interval, |act, ctx| act.check_all(ctx));
        // Entries expire on their own; this returns their memory.
        ctx.run_interval(Duration::from_secs(10), |act, _| {
            let now = Instant::now();
            act.seen.prune(now);
            act.unconfirmed.prune(now);
            act.calls.prune(now);
        });
    }
}

impl Handler<Submit> for Gateway {
    type Result = ();

    fn handle(&mut self, submit: Submit, ctx: &mut Self::Context) {
        // Behind a lookup, or behind requests already waiting: in order.
        if let Some(held) = self.held.get_mut(&submit.lane).filter(|h| h.lookup || !h.queue.is_empty()) {
            held.queue.push_back(submit);
            return;
        }
        let lane = Arc::clone(&submit.lane);
        if let Some(waits) = self.take(submit, ctx) {
            self.held.entry(lane).or_default().queue.push_back(waits);
        }
    }
}

impl Handler<Outcome> for Gateway {
    type Result = ();

    fn handle(&mut self, outcome: Outcome, ctx: &mut Self::Context) {
        match outcome {
            Outcome::Submitted { seq, result } => {
                if let Some(pending) = self.pending.remove(&seq) {
                    self.written(pending, result, ctx);
                }
            }
            Outcome::Looked { seq, agent } => {
                let Some(Pending::Lookup(submit)) = self.pending.remove(&seq) else { return };
                let lane = Arc::clone(&submit.lane);
                if let Some(held) = self.held.get_mut(&lane) {
                    held.lookup = false;
                }
                match agent {
                    // Redis could not say whose call it is: routing it by
                    // type could hand it to the wrong agent.
                    Err(error) => self.refuse(&submit, Refusal::Redis(error)),
                    Ok(agent) => {
                        if let (Some(agent), Some(call)) = (&agent, &submit.call_id) {
                            let key = self.call_key(call);
                            self.calls.insert(key, agent.clone());
                        }
                        if let Some(waits) = self.route(submit, agent, ctx) {
                            self.held.entry(Arc::clone(&lane)).or_default().queue.push_front(waits);
                        }
                    }
                }
                self.release_lane(&lane, ctx);
            }
        }
    }
}

impl Handler<Configure> for Gateway {
    type Result = ();

    fn handle(&mut self, Configure(config): Configure, ctx: &mut Self::Context) {
        let mut old: HashMap<String, Slot> = self.slots.drain(..).map(|s| (s.agent.name.clone(), s)).collect();
        for agent in config.agents {
            let slot = match old.remove(&agent.name) {
                Some(mut slot) => {
                    if matches!(agent.delivery, Delivery::Stream) && !slot.lanes.is_empty() {
                        // From webhook to stream: the queue has no way out.
                        let dropped = slot.lanes.clear();
                        self.stats.dropped.fetch_add(dropped as u64, Relaxed);
                        log::warn!(
                            agent = agent.name.as_str();
                            "gateway: agent '{}' now takes a stream; {dropped} records queued for its webhook dropped",
                            agent.name
                        );
                    }
                    if availability::reached_otherwise(&slot.agent, &agent) {
                        // Another way of reaching it: what was learnt of the
                        // old one says nothing.
                        slot.seen_at = None;
                        slot.failing = false;
                        slot.available = false;
                        slot.reason = "not checked yet".into();
                    }
                    slot.lanes.set_capacity(queue_of(&agent, self.config.queue));
                    slot.agent = agent;
                    slot
                }
                None => Slot::new(agent, self.config.queue),
            };
            self.slots.push(slot);
        }
        for (name, mut slot) in old {
            let dropped = slot.lanes.clear();
            if dropped > 0 {
                self.stats.dropped.fetch_add(dropped as u64, Relaxed);
                log::warn!(agent = name.as_str(); "gateway: agent '{name}' was removed from agents.yaml; {dropped} records for it dropped");
            }
        }
        if let Ok(mut agents) = self.stats.agents.lock() {
            *agents = self.slots.iter().map(|s| (s.agent.name.clone(), Arc::clone(&s.counters))).collect();
        }
        self.settle_chat_agents();
        for i in 0..self.slots.len() {
            self.update(i);
            self.check(i, ctx);
            self.pump(i, ctx);
        }
    }
}

impl Handler<RememberCall> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: RememberCall, _: &mut Self::Context) {
        let key = self.call_key(&msg.call_id);
        self.calls.insert(key.clone(), msg.agent.clone());
        if let Some(writes) = &self.writes {
            writes.send(Op::Remember { key, agent: msg.agent, ttl: CALL_TTL });
        }
    }
}

impl Handler<ListAgents> for Gateway {
    type Result = MessageResult<ListAgents>;

    fn handle(&mut self, _: ListAgents, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.slots
                .iter()
                .map(|slot| AgentView {
                    agent: slot.agent.clone(),
                    available: slot.available,
                    reason: slot.reason.clone(),
                    queued: slot.lanes.len(),
                    delivered: slot.delivered,
                    failed_attempts: slot.failed_attempts,
                    rejected: slot.rejected,
                    last_seen_at: slot.seen_at.and_then(|(_, at)| crate::protocol::rfc3339(at)),
                })
                .collect(),
        )
    }
}
