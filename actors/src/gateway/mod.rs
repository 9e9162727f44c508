//! The agent gateway: what a browser sends for an agent reaches that agent,
//! at least once and in order per channel, and the browser gets a receipt
//! only once the record is safely on its way.
//!
//! One gateway actor per node, on a thread of its own. Sessions hand it a
//! [`Submit`] (a validated client request, its record serialized once) and
//! get an [`Answer`] back: the receipt's id, or the error to send (4007
//! when no agent takes the request, an agent is disabled or unavailable, or
//! its queue is full). The agents come from `configs/agents.yaml`
//! (`settings/agents.rs`), handed over by the config watcher as
//! [`Configure`] on every valid reload.
//!
//! The parts:
//! - [`record`]: the record's shape, the webhook signature, the retry
//!   schedule.
//! - [`lanes`]: a webhook agent's bounded queue, one lane per channel.
//! - [`window`]: the memory of requests seen (idempotency) and of tool
//!   calls made (routing `tool.call.response`).
//! - [`redis`]: the ordered writer of stream records and claims, and the
//!   probe of a stream agent's consumers.
//!
//! Two deliveries: `stream` agents get `XADD {prefix}inbound:{agent}` and
//! read with consumer groups (any node writes, the agent's workers share
//! the stream); `webhook` agents get an HTTP POST, retried with jittered
//! exponential backoff until a 2xx. Idempotency is kept in memory and, with
//! Redis, in Redis too (the claim is made by the same script that writes
//! the record), so a request resent to another node is recognised.
//!
//! docs/gateway.md is the contract.

pub mod lanes;
pub mod record;
pub mod redis;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use serde::Serialize;

use self::lanes::{Lanes, Queued};
use self::record::{backoff, digest, jitter, signature};
use self::redis::{Op, Outcome, Probed, Writes, Written};
use self::window::Window;
use crate::cluster::outbox::Conn;
use crate::codes::ErrorCode;
use crate::protocol::Frame;
use crate::registry::{Publish, Registry};
use crate::settings::agents::{Agent, AgentsConfig, Delivery};
use crate::settings::{self, kind};

/// Requests remembered for idempotency at most, in memory.
pub const MAX_REMEMBERED: usize = 1_000_000;

/// How long the agent of a tool call is remembered.
pub const CALL_TTL: Duration = Duration::from_secs(3600);

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This node's id, in every record.
    pub node: Arc<str>,
    /// The Redis key prefix (`nova:`).
    pub prefix: String,
    /// Approximate MAXLEN of each agent's stream.
    pub stream_maxlen: usize,
    /// How long a request id is remembered.
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

/// Counters, shared with the metrics endpoint.
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
    /// Records dropped because their agent was removed from the file.
    pub dropped: AtomicU64,
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
    /// The channel's key: records of one key are delivered in order.
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

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The error code (4007).
    pub code: ErrorCode,
    /// What to tell the client.
    pub message: String,
}

impl Refused {
    fn unavailable(message: String) -> Self {
        Refused { code: ErrorCode::AgentUnavailable, message }
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
#[derive(Debug, Clone, Serialize)]
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
    /// When it last showed life, RFC 3339.
    pub last_seen_at: Option<String>,
}

/// Whether a stream agent is available, and why, from its stream's consumer
/// groups: a consumer must exist and no group may lag as far as the stream
/// keeps. Then, where Redis refreshes a consumer's idle time on every read
/// (7.2+), a consumer must have read within `idle`; where it refreshes it
/// only on reads that return something (7.0), an agent waiting on an empty
/// stream looks idle, so having nothing waiting counts as well.
pub fn stream_availability(
    idle_ms: Option<u64>,
    lag: Option<u64>,
    every_read: bool,
    idle: Duration,
    maxlen: usize,
) -> (bool, String) {
    let Some(idle_ms) = idle_ms else {
        return (false, "its consumer group has no consumer (XGROUP CREATECONSUMER when the agent starts)".into());
    };
    if let Some(lag) = lag.filter(|lag| *lag >= maxlen as u64) {
        return (false, format!("{lag} records in its stream were not read yet (the stream keeps about {maxlen})"));
    }
    let recent = Duration::from_millis(idle_ms) <= idle;
    if recent {
        return (true, format!("a consumer read its stream {idle_ms} ms ago"));
    }
    if !every_read && lag == Some(0) {
        return (true, "its consumer group has read everything".into());
    }
    let waiting = match lag {
        Some(lag) if !every_read => format!("{lag} records wait in its stream and "),
        _ => String::new(),
    };
    (false, format!("{waiting}no consumer has read its stream for {} s", idle_ms / 1000))
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
    /// The last sign of life: a delivery, a health check, a consumer.
    seen_at: Option<(Instant, SystemTime)>,
    /// Webhook: the last attempt failed.
    failing: bool,
    /// A probe or health check is running.
    checking: bool,
    delivered: u64,
    failed_attempts: u64,
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
            seen_at: None,
            failing: false,
            checking: false,
            delivered: 0,
            failed_attempts: 0,
        }
    }

    fn alive_within(&self, idle: Duration) -> bool {
        self.seen_at.is_some_and(|(at, _)| at.elapsed() <= idle)
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
    /// The record's write (or claim); then the webhooks.
    Write { submit: Submit, claim: String, webhooks: Vec<usize> },
    /// The lookup of a tool call's agent; then the routing.
    Lookup(Submit),
}

/// One webhook attempt's outcome.
struct Posted {
    agent: String,
    lane: Arc<str>,
    id: Arc<str>,
    result: Result<(), String>,
}

/// A stream probe's or health check's outcome.
struct Checked {
    agent: String,
    result: Result<Probed, String>,
}

/// The gateway actor.
pub struct Gateway {
    config: GatewayConfig,
    registry: Addr<Registry>,
    stats: Arc<GatewayStats>,
    slots: Vec<Slot>,
    seen: Window<Arc<str>>,
    calls: Window<String>,
    /// Redis, when the node has it; `conn` feeds the writer task.
    conn: Option<tokio::sync::watch::Receiver<Conn>>,
    writes: Option<Writes>,
    pending: HashMap<u64, Pending>,
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
        let seen = Window::new(config.idempotency, MAX_REMEMBERED);
        Gateway {
            seen,
            calls: Window::new(CALL_TTL, MAX_REMEMBERED),
            config,
            registry,
            stats,
            slots: Vec::new(),
            conn,
            writes: None,
            pending: HashMap::new(),
            seq: 0,
            client: None,
        }
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

    fn answer(&self, submit: &Submit, result: Result<Arc<str>, Refused>) {
        match &result {
            Ok(id) if *id == submit.id => self.stats.accepted.fetch_add(1, Relaxed),
            Ok(_) => self.stats.repeats.fetch_add(1, Relaxed),
            Err(_) => self.stats.refused.fetch_add(1, Relaxed),
        };
        submit.reply.do_send(Answer { reply_to: submit.request_id.clone(), channel: submit.channel.clone(), result });
    }

    fn refuse(&self, submit: &Submit, message: String) {
        self.answer(submit, Err(Refused::unavailable(message)));
    }

    /// The agents a request goes to, checked: each must be enabled,
    /// available and (webhook) have room. `Ok(vec![])` when no agent takes
    /// it.
    fn targets(&self, submit: &Submit, known_agent: Option<&str>) -> Result<Vec<usize>, String> {
        let kind = submit.kind;
        let chosen: Vec<usize> = match (&submit.target, known_agent) {
            (Target::Named(name), _) => match self.slot(name) {
                Some(i) if self.slots[i].agent.receives(kind) => vec![i],
                Some(_) => return Err(format!("agent '{name}' does not take '{kind}'")),
                None => return Err(format!("no agent '{name}' is configured")),
            },
            (Target::ByType, Some(name)) => match self.slot(name) {
                Some(i) => vec![i],
                None => return Err(format!("agent '{name}', which made this tool call, is not configured")),
            },
            (Target::ByType, None) => {
                self.slots.iter().enumerate().filter(|(_, s)| s.agent.receives(kind)).map(|(i, _)| i).collect()
            }
        };
        for &i in &chosen {
            let slot = &self.slots[i];
            let name = &slot.agent.name;
            if !slot.agent.enabled {
                return Err(format!("agent '{name}' is disabled"));
            }
            if !slot.available {
                return Err(format!("agent '{name}' is not available: {}", slot.reason));
            }
            if matches!(slot.agent.delivery, Delivery::Webhook { .. }) && !slot.lanes.has_room() {
                return Err(format!(
                    "agent '{name}' has {} records waiting, its limit: try again later",
                    slot.lanes.len()
                ));
            }
            if matches!(slot.agent.delivery, Delivery::Stream) && !self.writes.as_ref().is_some_and(Writes::is_up) {
                return Err(format!("agent '{name}' is not available: redis is unavailable"));
            }
        }
        Ok(chosen)
    }

    /// Routes a request whose tool-call agent (if any) is settled.
    fn route(&mut self, submit: Submit, known_agent: Option<String>, ctx: &mut Context<Self>) {
        let chosen = match self.targets(&submit, known_agent.as_deref()) {
            Ok(chosen) => chosen,
            Err(why) => return self.refuse(&submit, why),
        };
        if chosen.is_empty() && submit.relay.is_none() {
            let message = format!("no agent takes '{}' on this server", submit.kind);
            return self.refuse(&submit, message);
        }
        let claim = self.claim_key(&submit.user, &submit.fingerprint);
        let (streams, webhooks): (Vec<usize>, Vec<usize>) =
            chosen.into_iter().partition(|&i| matches!(self.slots[i].agent.delivery, Delivery::Stream));
        // With Redis up, the claim is made there even when only webhooks
        // are targeted, so a resend to another node is recognised; a relay
        // nobody else receives needs no round trip.
        let redis_up = self.writes.as_ref().is_some_and(Writes::is_up);
        if redis_up && !(streams.is_empty() && webhooks.is_empty()) {
            self.seq += 1;
            let seq = self.seq;
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
                return self.refuse(&submit, "agents are not available: too many records waiting for redis".into());
            }
            self.pending.insert(seq, Pending::Write { submit, claim, webhooks });
            return;
        }
        self.accepted(submit, claim, webhooks, ctx);
    }

    /// The record is safe (written, or for webhooks, about to be queued):
    /// queue it, relay, answer.
    fn accepted(&mut self, submit: Submit, claim: String, webhooks: Vec<usize>, ctx: &mut Context<Self>) {
        self.seen.insert(claim, Arc::clone(&submit.id));
        let body = Bytes::copy_from_slice(submit.record.as_bytes());
        for i in webhooks {
            let item = Queued { id: Arc::clone(&submit.id), body: body.clone(), failures: 0 };
            // Room was checked when the request was routed; a record
            // written to a stream meanwhile is not refused for a queue that
            // filled since.
            self.slots[i].lanes.force_push(Arc::clone(&submit.lane), item);
            self.pump(i, ctx);
        }
        // The receipt first: it is in the sender's mailbox before the relay
        // even reaches the registry, so a subscribed sender gets its receipt
        // before its own message, as without agents.
        self.answer(&submit, Ok(Arc::clone(&submit.id)));
        if let Some(relay) = &submit.relay {
            self.registry.do_send(Publish { channel: Arc::clone(&relay.key), frame: relay.frame.clone() });
        }
    }

    /// Posts the oldest record of every idle lane of webhook agent `i`.
    fn pump(&mut self, i: usize, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else { return };
        let slot = &mut self.slots[i];
        let Delivery::Webhook { url, secret, .. } = &slot.agent.delivery else { return };
        let mut posts = Vec::new();
        for (lane, item) in slot.lanes.take_ready() {
            let mut request = client
                .post(url.as_str())
                .timeout(self.config.timeout)
                .insert_header(("content-type", "application/json"))
                .insert_header(("x-nova-event-id", &*item.id))
                .insert_header(("x-nova-attempt", (item.failures + 1).to_string()));
            if let Some(secret) = secret {
                request = request.insert_header(("x-nova-signature", signature(secret.as_bytes(), &item.body)));
            }
            let (agent, id, body) = (slot.agent.name.clone(), item.id, item.body);
            posts.push(async move {
                let result = match request.send_body(body).await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(e) => Err(e.to_string()),
                };
                Posted { agent, lane, id, result }
            });
        }
        for post in posts {
            ctx.spawn(post.into_actor(self).map(|posted, act, ctx| act.posted(posted, ctx)));
        }
    }

    fn posted(&mut self, posted: Posted, ctx: &mut Context<Self>) {
        let Some(i) = self.slot(&posted.agent) else { return };
        match posted.result {
            Ok(()) => {
                let slot = &mut self.slots[i];
                slot.lanes.delivered(&posted.lane);
                slot.delivered += 1;
                slot.failing = false;
                slot.seen_at = Some((Instant::now(), SystemTime::now()));
                self.stats.delivered.fetch_add(1, Relaxed);
                self.update(i);
                self.pump(i, ctx);
            }
            Err(why) => {
                let slot = &mut self.slots[i];
                let failures = slot.lanes.failed(&posted.lane);
                slot.failed_attempts += 1;
                slot.failing = true;
                self.stats.failed_attempts.fetch_add(1, Relaxed);
                let wait = backoff(failures, jitter());
                // Said once per record's first failure and then at a falling rate.
                if failures.is_power_of_two() {
                    log::warn!(
                        "gateway: delivering {} to agent '{}' failed ({failures} times): {why}; next try in {wait:?}",
                        posted.id,
                        posted.agent
                    );
                }
                if slot.agent.health_url().is_none() {
                    slot.reason = format!("its last delivery failed: {why}");
                }
                self.update(i);
                let (agent, lane) = (posted.agent, posted.lane);
                ctx.run_later(wait, move |act, ctx| {
                    if let Some(i) = act.slot(&agent) {
                        act.slots[i].lanes.retry(&lane);
                        act.pump(i, ctx);
                    }
                });
            }
        }
    }

    /// Recomputes agent `i`'s availability from what is known and
    /// announces a change.
    fn update(&mut self, i: usize) {
        let idle = self.config.idle;
        let slot = &mut self.slots[i];
        let available = slot.agent.enabled
            && match &slot.agent.delivery {
                // Set by the probe.
                Delivery::Stream => slot.available,
                Delivery::Webhook { health_url: Some(_), .. } => slot.alive_within(idle),
                // Without a health check, a webhook is taken as available
                // until a delivery fails.
                Delivery::Webhook { health_url: None, .. } => !slot.failing,
            };
        slot.available = available;
        if !slot.agent.enabled {
            slot.reason = "disabled".into();
        } else if available && !matches!(slot.agent.delivery, Delivery::Stream) {
            slot.reason = "ready".into();
        }
        if slot.announced == Some(available) {
            return;
        }
        // The first state of an agent is announced only when it is good
        // news: "unavailable" before the first check says nothing.
        let first = slot.announced.is_none();
        let previous = slot.announced.replace(available);
        if first && !available {
            return;
        }
        log::info!(
            "gateway: agent '{}' is {} ({})",
            slot.agent.name,
            if available { "available" } else { "unavailable" },
            slot.reason
        );
        let data = serde_json::json!({
            "name": slot.agent.name,
            "status": if available { "available" } else { "unavailable" },
            "previous": match previous { Some(true) => "available", Some(false) => "unavailable", None => "unknown" },
            "reason": slot.reason,
            "checked_at": crate::session::rfc3339(SystemTime::now()),
        });
        settings::publish_local(&self.registry, settings::frame(kind::AGENT_AVAILABILITY, &data));
    }

    /// Checks every enabled agent that can be checked: a stream agent's
    /// consumers, a webhook agent's `health_url`.
    fn check_all(&mut self, ctx: &mut Context<Self>) {
        for i in 0..self.slots.len() {
            self.check(i, ctx);
        }
    }

    fn check(&mut self, i: usize, ctx: &mut Context<Self>) {
        let stream = self.stream_key(&self.slots[i].agent.name);
        let conn = self.writes.as_ref().map(Writes::connection);
        let (client, timeout) = (self.client.clone(), self.config.timeout);
        let slot = &mut self.slots[i];
        if !slot.agent.enabled || slot.checking {
            return;
        }
        let agent = slot.agent.name.clone();
        let check: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Probed, String>>>> =
            match &slot.agent.delivery {
                Delivery::Stream => match conn {
                    Some(conn) => Box::pin(redis::probe(conn, stream)),
                    None => Box::pin(async { Err("stream delivery needs redis (NOVA_REDIS_URL)".to_string()) }),
                },
                Delivery::Webhook { health_url: Some(url), .. } => {
                    let Some(client) = client else { return };
                    let request = client.get(url.as_str()).timeout(timeout);
                    Box::pin(async move {
                        match request.send().await {
                            Ok(r) if r.status().is_success() => Ok(Probed::Healthy),
                            Ok(r) => Err(format!("its health check answered HTTP {}", r.status())),
                            Err(e) => Err(format!("its health check failed: {e}")),
                        }
                    })
                }
                Delivery::Webhook { health_url: None, .. } => return,
            };
        slot.checking = true;
        ctx.spawn(check.into_actor(self).map(move |result, act, _| act.checked(Checked { agent, result })));
    }

    fn checked(&mut self, msg: Checked) {
        let Some(i) = self.slot(&msg.agent) else { return };
        let (idle, maxlen) = (self.config.idle, self.config.stream_maxlen);
        let slot = &mut self.slots[i];
        slot.checking = false;
        let stream = matches!(slot.agent.delivery, Delivery::Stream);
        match msg.result {
            Ok(Probed::Healthy) => {
                slot.seen_at = Some((Instant::now(), SystemTime::now()));
                slot.reason = "its health check succeeded".into();
            }
            Ok(Probed::Group { idle_ms, lag, every_read }) => {
                let since = idle_ms.map(Duration::from_millis);
                if let Some(since) = since {
                    let now = Instant::now();
                    let at = now.checked_sub(since).unwrap_or(now);
                    let wall = SystemTime::now().checked_sub(since).unwrap_or(SystemTime::now());
                    slot.seen_at = Some((at, wall));
                }
                let (available, reason) = stream_availability(idle_ms, lag, every_read, idle, maxlen);
                slot.available = available;
                slot.reason = reason;
            }
            Ok(Probed::Nobody(why)) | Err(why) => {
                if stream {
                    slot.available = false;
                }
                slot.reason = why;
            }
        }
        self.update(i);
    }
}

impl Actor for Gateway {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.client = Some(awc::Client::builder().timeout(self.config.timeout).finish());
        if let Some(conn) = self.conn.take() {
            let (writes, task) = Writes::new(conn, ctx.address().recipient());
            self.writes = Some(writes);
            ctx.spawn(actix::fut::wrap_future(task));
        }
        ctx.run_interval(self.config.check_interval, |act, ctx| act.check_all(ctx));
        // Idempotency entries expire on their own; this returns their memory.
        ctx.run_interval(Duration::from_secs(10), |act, _| {
            let now = Instant::now();
            act.seen.prune(now);
            act.calls.prune(now);
        });
    }
}

impl Handler<Submit> for Gateway {
    type Result = ();

    fn handle(&mut self, submit: Submit, ctx: &mut Self::Context) {
        let claim = self.claim_key(&submit.user, &submit.fingerprint);
        if let Some(first) = self.seen.get(&claim) {
            let first = Arc::clone(first);
            return self.answer(&submit, Ok(first));
        }
        let Some(call_id) = submit.call_id.as_deref() else { return self.route(submit, None, ctx) };
        let key = self.call_key(call_id);
        if let Some(agent) = self.calls.get(&key) {
            let agent = agent.clone();
            return self.route(submit, Some(agent), ctx);
        }
        if !self.writes.as_ref().is_some_and(Writes::is_up) {
            return self.route(submit, None, ctx);
        }
        self.seq += 1;
        let seq = self.seq;
        if self.writes.as_ref().is_some_and(|w| w.send(Op::Lookup { seq, key })) {
            self.pending.insert(seq, Pending::Lookup(submit));
        } else {
            self.route(submit, None, ctx);
        }
    }
}

impl Handler<Outcome> for Gateway {
    type Result = ();

    fn handle(&mut self, outcome: Outcome, ctx: &mut Self::Context) {
        let Some(pending) = self.pending.remove(&outcome.seq) else { return };
        match (pending, outcome.result) {
            (Pending::Write { submit, claim, webhooks }, Ok(Written::Accepted)) => {
                self.accepted(submit, claim, webhooks, ctx)
            }
            (Pending::Write { submit, claim, .. }, Ok(Written::Repeat(first))) => {
                let first: Arc<str> = Arc::from(first);
                self.seen.insert(claim, Arc::clone(&first));
                self.answer(&submit, Ok(first));
            }
            (Pending::Write { submit, .. }, Ok(Written::Found(_))) => {
                self.refuse(&submit, "agents are not available: unexpected answer from redis".into())
            }
            (Pending::Write { submit, .. }, Err(why)) => {
                self.refuse(&submit, format!("agents are not available: {why}"))
            }
            (Pending::Lookup(submit), Ok(Written::Found(agent))) => {
                if let (Some(agent), Some(call)) = (&agent, &submit.call_id) {
                    let key = self.call_key(call);
                    self.calls.insert(key, agent.clone());
                }
                self.route(submit, agent, ctx)
            }
            (Pending::Lookup(submit), _) => self.route(submit, None, ctx),
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
                            "gateway: agent '{}' now takes a stream; {dropped} records queued for its webhook dropped",
                            agent.name
                        );
                    }
                    if slot.agent.delivery != agent.delivery {
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
                log::warn!("gateway: agent '{name}' was removed from agents.yaml; {dropped} records for it dropped");
            }
        }
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
                    last_seen_at: slot.seen_at.and_then(|(_, at)| crate::session::rfc3339(at)),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_agent_needs_a_consumer_that_reads() {
        let idle = Duration::from_secs(30);
        let check = |idle_ms, lag, every_read| stream_availability(idle_ms, lag, every_read, idle, 100).0;
        assert!(!check(None, Some(0), true), "no consumer");
        assert!(!check(None, Some(0), false), "no consumer");
        assert!(check(Some(10), Some(5), true));
        assert!(check(Some(10), Some(5), false));
        assert!(!check(Some(10), Some(100), true), "a backlog the stream cannot keep");
        // Idle for long: on 7.2+ that is a dead consumer ...
        assert!(!check(Some(60_000), Some(0), true));
        // ... on 7.0 maybe one waiting on an empty stream: fine while
        // nothing waits for it.
        assert!(check(Some(60_000), Some(0), false));
        assert!(!check(Some(60_000), Some(3), false));
        assert!(!check(Some(60_000), None, false), "Redis cannot tell the lag");
        let (_, why) = stream_availability(Some(60_000), Some(3), false, idle, 100);
        assert_eq!(why, "3 records wait in its stream and no consumer has read its stream for 60 s");
    }
}
