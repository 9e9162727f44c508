//! The gateway's Redis half: the ordered writer of records and claims, and
//! the probe of a stream agent's consumer groups.
//!
//! Records are written by one task, in the order the gateway hands them
//! over, as pipelines of one script call each (up to [`MAX_PIPELINE`] per
//! round trip); the outcomes are reported back to the gateway actor in the
//! same order. The script ([`SUBMIT`]) makes the idempotency check and the
//! writes one atomic step: a request seen within the window gets the id it
//! was given the first time and writes nothing; otherwise the record is
//! added to every target stream (`XADD … MAXLEN ~`) and the request
//! remembered (`SET … PX`). A stream that refuses the `XADD` undoes the
//! ones before it and sets no claim: a request is written to all its
//! streams or to none.
//!
//! Each script's answer is read on its own (the pipeline ignores errors), so
//! one refused write does not fail the others of its round trip.
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
/// `KEYS[1]`: the request's claim; `KEYS[2..]`: the target streams. ARGV: the
/// record's id, the claim's lifetime (ms), the streams' MAXLEN, the record.
/// Returns `{1, id}` when written, `{0, first id}` for a repeat, an error
/// (and nothing written) when a stream refuses.
pub const SUBMIT: &str = r"
local first = redis.call('GET', KEYS[1])
if first then return {0, first} end
local added = {}
for i = 2, #KEYS do
  local id = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[4])
  if type(id) == 'table' and id.err then
    for _, done in ipairs(added) do redis.call('XDEL', done[1], done[2]) end
    return redis.error_reply('XADD ' .. KEYS[i] .. ': ' .. id.err)
  end
  added[#added + 1] = {KEYS[i], id}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
";

/// A stream agent's consumer groups, in one round trip. `KEYS[1]`: the
/// stream. Returns `{0, why}` when there is no group, else `{1, the least
/// idle time of any consumer in ms (-1: no consumer), the largest backlog
/// of any group: records not handed out plus handed out and not
/// acknowledged (-1: unknown), 1 when Redis refreshes idle times on every
/// read (7.2 and later: consumers have an 'inactive' field) else 0}`.
pub const PROBE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'no stream yet: no consumer group was created'} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, 'no consumer group on the stream'} end
local idle, backlog, every_read = -1, 0, 0
for _, g in ipairs(groups) do
  local name, lag, pending
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'lag' then lag = g[i + 1] end
    if g[i] == 'pending' then pending = g[i + 1] end
  end
  if type(lag) ~= 'number' or type(pending) ~= 'number' then
    backlog = -1
  elseif backlog >= 0 and lag + pending > backlog then
    backlog = lag + pending
  end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], name)) do
    for i = 1, #c, 2 do
      if c[i] == 'idle' and (idle < 0 or c[i + 1] < idle) then idle = c[i + 1] end
      if c[i] == 'inactive' then every_read = 1 end
    end
  end
end
return {1, idle, backlog, every_read}
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

/// What the claim of a written request found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new request: written.
    New,
    /// A repeat within the window: the id it got first; nothing written.
    Repeat(String),
}

/// Why a write did not happen, or may not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No connection: nothing was sent.
    #[error("redis is unavailable")]
    Down,
    /// Redis refused it (a stream of the wrong type, …): nothing was
    /// written.
    #[error("redis refused the write: {0}")]
    Refused(String),
    /// No answer in time, or the connection failed under it: it may have
    /// been written.
    #[error("redis did not confirm the write: {0}")]
    Unconfirmed(String),
}

impl WriteError {
    /// Whether the write may have happened all the same.
    pub fn uncertain(&self) -> bool {
        matches!(self, WriteError::Unconfirmed(_))
    }
}

/// An outcome, reported to the gateway in the order of the writes.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub enum Outcome {
    /// Of an [`Op::Submit`].
    Submitted {
        /// The write's number.
        seq: u64,
        /// What the claim found, or why it failed.
        result: Result<Claim, WriteError>,
    },
    /// Of an [`Op::Lookup`]: the agent that made the call, if Redis knows
    /// it, or why Redis could not say.
    Looked {
        /// The lookup's number.
        seq: u64,
        /// The agent, if any.
        agent: Result<Option<String>, WriteError>,
    },
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

/// The outcome of `op` when its round trip failed as a whole.
fn failed(op: &Op, error: &WriteError) -> Option<Outcome> {
    match op {
        Op::Submit { seq, .. } => Some(Outcome::Submitted { seq: *seq, result: Err(error.clone()) }),
        Op::Lookup { seq, .. } => Some(Outcome::Looked { seq: *seq, agent: Err(error.clone()) }),
        Op::Remember { .. } => None,
    }
}

/// One round trip for `ops`, the script by its hash (`EVALSHA`: its text
/// is half a kilobyte, and Redis would hash it again on every call).
fn pipeline(ops: &[Op], sha: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    // Each command's answer on its own: one refusal fails one write.
    pipe.ignore_errors();
    for op in ops {
        match op {
            Op::Submit { claim, id, streams, record, ttl, maxlen, .. } => {
                pipe.cmd("EVALSHA").arg(sha).arg(1 + streams.len()).arg(claim);
                for stream in streams {
                    pipe.arg(stream);
                }
                pipe.arg(&**id).arg(ttl.as_millis() as u64).arg(*maxlen).arg(&**record);
            }
            Op::Remember { key, agent, ttl } => {
                pipe.cmd("SET").arg(key).arg(agent).arg("PX").arg(ttl.as_millis() as u64);
            }
            Op::Lookup { key, .. } => {
                pipe.cmd("GET").arg(key);
            }
        }
    }
    pipe
}

async fn run(mut rx: mpsc::Receiver<Op>, conn: watch::Receiver<Conn>, report: Recipient<Outcome>) {
    let sha = redis::Script::new(SUBMIT).get_hash().to_owned();
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    // The connection the script was loaded on. A new connection (Redis may
    // have restarted, which forgets scripts) loads it before its first
    // write; a write Redis answers NOSCRIPT (a SCRIPT FLUSH) did not run and
    // is refused rather than sent again, which could put it after later
    // writes that did run; the script is loaded again before the next.
    let mut loaded_on = None;
    while rx.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let ops: Vec<Op> = std::mem::take(&mut batch);
        let current = conn.borrow().clone();
        let Some((epoch, mut conn)) = current else {
            ops.iter().filter_map(|op| failed(op, &WriteError::Down)).for_each(|o| report.do_send(o));
            continue;
        };
        if loaded_on != Some(epoch) {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(SUBMIT);
            if let Ok(Ok(_)) = tokio::time::timeout(WRITE_TIMEOUT, load.query_async::<String>(&mut conn)).await {
                loaded_on = Some(epoch);
            }
        }
        let outcome =
            tokio::time::timeout(WRITE_TIMEOUT, pipeline(&ops, &sha).query_async::<Vec<Value>>(&mut conn)).await;
        let values = match outcome {
            Ok(Ok(values)) if values.len() == ops.len() => values,
            Ok(Ok(values)) => {
                let error = WriteError::Unconfirmed(format!("{} answers to {} writes", values.len(), ops.len()));
                ops.iter().filter_map(|op| failed(op, &error)).for_each(|o| report.do_send(o));
                continue;
            }
            Ok(Err(e)) => {
                log::warn!("redis: writing {} gateway records failed: {e}", ops.len());
                let error = WriteError::Unconfirmed(e.to_string());
                ops.iter().filter_map(|op| failed(op, &error)).for_each(|o| report.do_send(o));
                continue;
            }
            Err(_) => {
                let error = WriteError::Unconfirmed(format!("no answer within {WRITE_TIMEOUT:?}"));
                ops.iter().filter_map(|op| failed(op, &error)).for_each(|o| report.do_send(o));
                continue;
            }
        };
        for (op, value) in ops.iter().zip(values) {
            let outcome = match op {
                Op::Submit { seq, .. } => {
                    let result = match value {
                        Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                            loaded_on = None;
                            Err(WriteError::Refused("redis had lost the gateway's script (it is loaded again)".into()))
                        }
                        Value::ServerError(e) => Err(WriteError::Refused(e.to_string())),
                        value => match redis::from_redis_value::<(i64, String)>(value) {
                            Ok((1, _)) => Ok(Claim::New),
                            Ok((_, first)) => Ok(Claim::Repeat(first)),
                            Err(e) => Err(WriteError::Unconfirmed(format!("unexpected answer: {e}"))),
                        },
                    };
                    Outcome::Submitted { seq: *seq, result }
                }
                Op::Lookup { seq, .. } => {
                    let agent = match value {
                        Value::ServerError(e) => Err(WriteError::Refused(e.to_string())),
                        value => Ok(redis::from_redis_value::<Option<String>>(value).ok().flatten()),
                    };
                    Outcome::Looked { seq: *seq, agent }
                }
                Op::Remember { key, .. } => {
                    if let Value::ServerError(e) = value {
                        log::warn!("redis: remembering tool call {key} failed: {e}");
                    }
                    continue;
                }
            };
            report.do_send(outcome);
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
        /// The most records a group has not acknowledged (not handed out,
        /// or handed out and pending); `None` when Redis cannot tell.
        backlog: Option<u64>,
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
    let Some((_, mut conn)) = conn else { return Err(WriteError::Down.to_string()) };
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
            let backlog = int(values.next()).and_then(|n| u64::try_from(n).ok());
            let every_read = int(values.next()) == Some(1);
            Ok(Probed::Group { idle_ms, backlog, every_read })
        }
        _ => {
            let why = values.next().and_then(|v| redis::from_redis_value::<String>(v).ok()).unwrap_or_default();
            Ok(Probed::Nobody(why))
        }
    }
}
