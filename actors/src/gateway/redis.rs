//! The gateway's Redis half: the ordered writer of records and claims, and
//! the probe of a stream agent's consumers.
//!
//! Records are written by one task, in the order the gateway hands them
//! over, as pipelines of one script call each (up to [`MAX_PIPELINE`] per
//! round trip); the outcomes are reported back to the gateway actor in the
//! same order, so the records of a channel reach their streams, and the
//! webhook queues, in the order the clients sent them. The script
//! ([`SUBMIT`]) makes the idempotency check and the writes one atomic step:
//! a request seen within the window gets the id it was given the first
//! time and writes nothing; otherwise the record is added to every target
//! stream (`XADD … MAXLEN ~`) and the request remembered (`SET … PX`).
//!
//! It uses the bus's connection (`cluster/bus.rs`): while the bus has none,
//! every write fails at once, and the gateway answers 4007 rather than a
//! receipt it could not keep.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use redis::Value;
use tokio::sync::{mpsc, watch};

use crate::cluster::outbox::Conn;

/// Writes in one round trip at most.
pub const MAX_PIPELINE: usize = 256;

/// Writes waiting for Redis at most; past it the gateway refuses (4007).
pub const QUEUE_CAPACITY: usize = 16 * 1024;

/// How long one round trip may take before its writes are refused.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The idempotency check and the writes of one record, atomically.
/// KEYS[1]: the request's claim; KEYS[2..]: the target streams. ARGV: the
/// record's id, the claim's lifetime (ms), the streams' MAXLEN, the record.
/// Returns `{1, id}` when written, `{0, first id}` for a repeat.
pub const SUBMIT: &str = r"
local first = redis.call('GET', KEYS[1])
if first then return {0, first} end
for i = 2, #KEYS do
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
";

/// A stream agent's consumer groups, in one round trip. KEYS[1]: the
/// stream. Returns `{0, why}` when there is no group, else `{1, the least
/// idle time of any consumer in ms (-1: no consumer), the largest lag of any
/// group (-1: unknown), 1 when Redis refreshes idle times on every read
/// (7.2 and later: consumers have an 'inactive' field) else 0}`.
pub const PROBE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'no stream yet: no consumer group was created'} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, 'no consumer group on the stream'} end
local idle, lag, every_read = -1, 0, 0
for _, g in ipairs(groups) do
  local name, group_lag
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'lag' then group_lag = g[i + 1] end
  end
  if type(group_lag) ~= 'number' then lag = -1 elseif lag >= 0 and group_lag > lag then lag = group_lag end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], name)) do
    for i = 1, #c, 2 do
      if c[i] == 'idle' and (idle < 0 or c[i + 1] < idle) then idle = c[i + 1] end
      if c[i] == 'inactive' then every_read = 1 end
    end
  end
end
return {1, idle, lag, every_read}
";

/// One write for the task.
pub enum Op {
    /// A record (or, with no streams, only the claim of a request whose
    /// agents are webhooks).
    Submit {
        /// The gateway's number for it, echoed in the outcome.
        seq: u64,
        /// The request's claim key.
        claim: String,
        /// The record's id.
        id: Arc<str>,
        /// The target stream keys.
        streams: Vec<String>,
        /// The record.
        record: Arc<str>,
        /// The claim's lifetime.
        ttl: Duration,
        /// The streams' approximate MAXLEN.
        maxlen: usize,
    },
    /// Remembers which agent made a tool call; no outcome.
    Remember {
        /// The call's key.
        key: String,
        /// The agent.
        agent: String,
        /// How long.
        ttl: Duration,
    },
    /// Looks up which agent made a tool call.
    Lookup {
        /// The gateway's number for it.
        seq: u64,
        /// The call's key.
        key: String,
    },
}

/// What a [`Op::Submit`] or [`Op::Lookup`] came to.
#[derive(Debug)]
pub enum Written {
    /// Written; the record's id.
    Accepted,
    /// A repeat of a request within the window: the id it got first.
    Repeat(String),
    /// The agent that made the call, if Redis knows it.
    Found(Option<String>),
}

/// An outcome, reported to the gateway in the order of the writes.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct Outcome {
    /// The write's number.
    pub seq: u64,
    /// What happened; an error says why Redis could not take it.
    pub result: Result<Written, String>,
}

/// The sending end, owned by the gateway.
pub struct Writes {
    tx: mpsc::Sender<Op>,
    conn: watch::Receiver<Conn>,
}

impl Writes {
    /// The writer's queue and the task to run beside it, on the bus's
    /// connection `conn`, reporting to `report`.
    pub fn new(
        conn: watch::Receiver<Conn>,
        report: Recipient<Outcome>,
    ) -> (Writes, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = run(rx, conn.clone(), report);
        (Writes { tx, conn }, task)
    }

    /// Whether Redis is connected now.
    pub fn is_up(&self) -> bool {
        self.conn.borrow().is_some()
    }

    /// Queues a write; `false` when the queue is full or the task is gone.
    pub fn send(&self, op: Op) -> bool {
        self.tx.try_send(op).is_ok()
    }

    /// The current connection, for probes.
    pub fn connection(&self) -> Conn {
        self.conn.borrow().clone()
    }
}

async fn run(mut rx: mpsc::Receiver<Op>, conn: watch::Receiver<Conn>, report: Recipient<Outcome>) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    while rx.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let ops: Vec<Op> = std::mem::take(&mut batch);
        let answered: Vec<u64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Submit { seq, .. } | Op::Lookup { seq, .. } => Some(*seq),
                Op::Remember { .. } => None,
            })
            .collect();
        let current = conn.borrow().clone();
        let Some((_, mut conn)) = current else {
            for seq in answered {
                report.do_send(Outcome { seq, result: Err("redis is unavailable".into()) });
            }
            continue;
        };
        let mut pipe = redis::pipe();
        for op in &ops {
            match op {
                Op::Submit { claim, id, streams, record, ttl, maxlen, .. } => {
                    // EVALSHA would save the script's bytes but fail after a
                    // Redis restart; EVAL is cached by Redis all the same.
                    pipe.cmd("EVAL").arg(SUBMIT).arg(1 + streams.len()).arg(claim);
                    for stream in streams {
                        pipe.arg(stream);
                    }
                    pipe.arg(&**id).arg(ttl.as_millis() as u64).arg(*maxlen).arg(&**record);
                }
                Op::Remember { key, agent, ttl } => {
                    pipe.cmd("SET").arg(key).arg(agent).arg("PX").arg(ttl.as_millis() as u64).ignore();
                }
                Op::Lookup { key, .. } => {
                    pipe.cmd("GET").arg(key);
                }
            }
        }
        let outcome = tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<Vec<Value>>(&mut conn)).await;
        let values = match outcome {
            Ok(Ok(values)) if values.len() == answered.len() => values,
            Ok(Ok(values)) => {
                let why = format!("redis answered {} of {} writes", values.len(), answered.len());
                answered.into_iter().for_each(|seq| report.do_send(Outcome { seq, result: Err(why.clone()) }));
                continue;
            }
            Ok(Err(e)) => {
                log::warn!("redis: writing {} gateway records failed: {e}", answered.len());
                let why = format!("redis refused the write: {e}");
                answered.into_iter().for_each(|seq| report.do_send(Outcome { seq, result: Err(why.clone()) }));
                continue;
            }
            Err(_) => {
                let why = format!("redis did not answer within {WRITE_TIMEOUT:?}");
                answered.into_iter().for_each(|seq| report.do_send(Outcome { seq, result: Err(why.clone()) }));
                continue;
            }
        };
        let kinds = ops.iter().filter(|op| !matches!(op, Op::Remember { .. }));
        for ((op, value), seq) in kinds.zip(values).zip(answered) {
            let result = match op {
                Op::Submit { .. } => match redis::from_redis_value::<(i64, String)>(value) {
                    Ok((1, _)) => Ok(Written::Accepted),
                    Ok((_, first)) => Ok(Written::Repeat(first)),
                    Err(e) => Err(format!("unexpected answer from redis: {e}")),
                },
                _ => match redis::from_redis_value::<Option<String>>(value) {
                    Ok(agent) => Ok(Written::Found(agent)),
                    Err(e) => Err(format!("unexpected answer from redis: {e}")),
                },
            };
            report.do_send(Outcome { seq, result });
        }
    }
}

/// What [`probe`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probed {
    /// The stream has a consumer group.
    Group {
        /// The least idle time of any consumer; `None` when no group has a
        /// consumer (Redis makes one on `XGROUP CREATECONSUMER`, or on the
        /// first read that returns something).
        idle_ms: Option<u64>,
        /// The most records a group has not been handed yet; `None` when
        /// Redis cannot tell.
        lag: Option<u64>,
        /// Whether every read refreshes a consumer's idle time (Redis 7.2
        /// and later); before, only a read that returns something does.
        every_read: bool,
    },
    /// A webhook agent's health check succeeded.
    Healthy,
    /// No group, and why.
    Nobody(String),
}

/// Looks at a stream's consumer groups.
pub async fn probe(conn: Conn, stream: String) -> Result<Probed, String> {
    let Some((_, mut conn)) = conn else { return Err("redis is unavailable".into()) };
    let mut call = redis::cmd("EVAL");
    call.arg(PROBE).arg(1).arg(stream);
    let answer = tokio::time::timeout(WRITE_TIMEOUT, call.query_async::<Vec<Value>>(&mut conn)).await;
    let values = match answer {
        Ok(Ok(values)) => values,
        Ok(Err(e)) => return Err(format!("redis: {e}")),
        Err(_) => return Err(format!("redis did not answer within {WRITE_TIMEOUT:?}")),
    };
    let mut values = values.into_iter();
    let int = |v: Option<Value>| v.and_then(|v| redis::from_redis_value::<i64>(v).ok());
    match int(values.next()) {
        Some(1) => {
            let idle_ms = int(values.next()).and_then(|n| u64::try_from(n).ok());
            let lag = int(values.next()).and_then(|n| u64::try_from(n).ok());
            let every_read = int(values.next()) == Some(1);
            Ok(Probed::Group { idle_ms, lag, every_read })
        }
        _ => {
            let why = values.next().and_then(|v| redis::from_redis_value::<String>(v).ok()).unwrap_or_default();
            Ok(Probed::Nobody(why))
        }
    }
}
