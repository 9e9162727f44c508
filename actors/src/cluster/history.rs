//! A channel's history in Redis: its recent events, numbered.
//!
//! Each event of a channel whose namespace keeps history gets an offset,
//! one more than the channel's previous event, and the channel has an
//! epoch, a random word that changes whenever its history cannot be
//! trusted (the numbering started again, or events were lost on the way
//! to Redis). A client that knows the `(offset, epoch)` of the last event
//! it saw can ask for what came after; the same epoch and an offset still
//! kept mean nothing was missed.
//!
//! Redis assigns the offsets, so every node agrees on them: one script per
//! event ([`PUBLISH`]) numbers it, appends it to the channel's stream and
//! publishes it with its position, as one atomic step. The keys, under the
//! deployment's prefix, are hash-tagged by channel so the script's two
//! keys share a slot on Redis Cluster:
//!
//! - `history:{<channel>}`, a stream: entry `<offset>-1` holds field `p`,
//!   the node's sealed message (`wire.rs`), trimmed to the retention's
//!   size and expiring after its age of silence;
//! - `meta:{<channel>}`, a hash: `top` (the last offset given) and `epoch`,
//!   kept [`META_TTL`] after the last event.
//!
//! Redis is not trusted, so every entry read back is checked as a message
//! from Redis is (its seal, the rules of events) before a client sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult, Script, Value};

use crate::cluster::bus::REDIS_TIMEOUT;
use crate::cluster::wire::Wire;
use crate::cluster::{Keys, Topic};
use crate::protocol::Frame;

/// The longest epoch: what the nodes' format accepts, so one set by hand in
/// Redis cannot make every event of its channel unreadable.
pub const MAX_EPOCH_LEN: usize = 32;

/// How long a channel's offset and epoch outlive its last event. Longer
/// than its events are kept, so a client back after the stream expired
/// learns that its position is still current (same epoch, same top:
/// nothing missed) instead of being sent to start over, and the numbering
/// goes on across quiet hours; short enough that a channel gone quiet
/// costs Redis its small hash for a day only. A retention longer than this
/// keeps the hash as long as its events.
pub const META_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How much of a channel's history is kept: the namespace's setting,
/// carried with each event so the script trims and expires its stream.
pub use crate::broker::Retention;

/// Numbers, stores and publishes one event, atomically.
///
/// `KEYS[1]`: the channel's stream, `KEYS[2]`: its meta hash. ARGV: the
/// sealed message, the stream's MAXLEN, its TTL (ms), the meta's TTL (ms),
/// the Redis channel to publish on, an epoch candidate (random, used only
/// when the history starts again). Publishes `@<offset>,<epoch>|<message>`
/// and returns `{offset, epoch}`.
///
/// History starts again (the stream deleted, a new epoch, offset 1) when
/// the meta has no valid epoch (a new channel, or its meta expired), when
/// its `top` is not a number, or when the stream refuses the id: it holds a
/// larger one, so offsets were given that the meta no longer remembers.
///
/// The meta is checked by reading it, so that on a Redis out of memory the
/// script's first write, `HINCRBY`, is refused and the script fails having
/// changed nothing (Redis refuses only a script's first write then).
pub const PUBLISH: &str = r"
local function valid(e)
  return type(e) == 'string' and #e >= 1 and #e <= 32 and not string.find(e, '[^%w_%-]')
end
local meta = redis.pcall('HMGET', KEYS[2], 'top', 'epoch')
local epoch, top = false, false
if type(meta) == 'table' and not meta.err and valid(meta[2]) then
  local t = meta[1]
  if not t or (#t <= 15 and (t == '0' or string.find(t, '^[1-9]%d*$'))) then
    epoch = meta[2]
    top = redis.call('HINCRBY', KEYS[2], 'top', 1)
    local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', ARGV[2], string.format('%d-1', top), 'p', ARGV[1])
    if type(added) == 'table' and added.err then top = false end
  end
end
if not top then
  epoch = ARGV[6]
  top = 1
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], 'top', 1, 'epoch', epoch)
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '1-1', 'p', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], '@' .. string.format('%d', top) .. ',' .. epoch .. '|' .. ARGV[1])
return {top, epoch}
";

/// Starts a new epoch for a channel whose events were lost on the way to
/// Redis: the stream goes (it no longer tells the whole story), the offset
/// stays. `KEYS[1]`: the stream, `KEYS[2]`: the meta. ARGV: the new epoch,
/// the meta's TTL (ms). Returns the epoch.
pub const BUMP: &str = r"
redis.call('DEL', KEYS[1])
local set = redis.pcall('HSET', KEYS[2], 'epoch', ARGV[1])
if type(set) == 'table' and set.err then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ARGV[1]
";

/// Reads a channel's position and a run of its events in one atomic step,
/// so the events and the position belong together. `KEYS[1]`: the stream,
/// `KEYS[2]`: the meta. ARGV: the first id, the last id (or `+`), the most
/// entries (0: none). Returns `{top, epoch, first id kept, entries}`.
const RANGE: &str = r"
local meta = redis.call('HMGET', KEYS[2], 'top', 'epoch')
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local kept = false
if first[1] then kept = first[1][1] end
return {meta[1], meta[2], kept, entries}
";

/// Where a channel stands, giving it an epoch if it has none yet, so a
/// client that subscribes before its first event holds a position its
/// first event continues (the publish script keeps a valid epoch).
/// `KEYS[1]`: the meta. ARGV: an epoch candidate, the meta's TTL (ms).
/// Returns `{top, epoch}`.
const OPEN: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'top', 'epoch')
local e = meta[2]
if type(e) ~= 'string' or #e < 1 or #e > 32 or string.find(e, '[^%w_%-]') then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', e)
end
local t = meta[1]
if not t or not (#t <= 15 and (t == '0' or string.find(t, '^[1-9]%d*$'))) then
  t = '0'
  redis.call('HSET', KEYS[1], 'top', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {t, e}
";

/// The scripts, built (and hashed) once per process.
pub struct Scripts {
    /// [`PUBLISH`].
    pub publish: Script,
    /// [`BUMP`].
    pub bump: Script,
    range: Script,
    open: Script,
}

/// The history scripts; the outbox's writer calls them by hash.
pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    publish: Script::new(PUBLISH),
    bump: Script::new(BUMP),
    range: Script::new(RANGE),
    open: Script::new(OPEN),
});

/// Why history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Redis answered with an error, or with something not understood.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis did not answer in time; a write may have happened.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection to Redis: nothing was sent. For callers holding the
    /// bus's connection, which is `None` while Redis is down.
    #[error("redis is unavailable")]
    Down,
}

/// A run of a channel's history and where the channel stands, read
/// together.
#[derive(Debug)]
pub struct Range {
    /// The events asked for that Redis still holds and that checked out,
    /// in order: their offsets and the frames clients get (with
    /// `"offset"`).
    pub events: Vec<(u64, Frame)>,
    /// The channel's last offset; 0 when it has none.
    pub top: u64,
    /// The channel's epoch; `None` when it has none (no event in
    /// [`META_TTL`], or never).
    pub epoch: Option<String>,
    /// The first offset the stream still holds; `None` when it holds none.
    pub first_kept: Option<u64>,
    /// Entries read but refused (not a valid sealed event of the channel):
    /// holes in `events`.
    pub refused: usize,
}

impl Range {
    /// Whether nothing after `since` is missing from this epoch's history:
    /// the offset after `since` is still kept (or not given yet) and no
    /// entry was refused, so a client at `since` can catch up without
    /// starting over. `events` may still stop short at the limit asked
    /// for; whether `since` belongs to this epoch is for the caller to
    /// know.
    pub fn complete_after(&self, since: u64) -> bool {
        self.refused == 0 && (since >= self.top || self.first_kept.is_some_and(|first| first <= since + 1))
    }
}

/// Whether `epoch` is one the nodes' format carries: 1 to
/// [`MAX_EPOCH_LEN`] characters of `A-Z a-z 0-9 _ -`.
pub fn is_epoch(epoch: &str) -> bool {
    (1..=MAX_EPOCH_LEN).contains(&epoch.len())
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh epoch candidate (`broker::new_epoch`), as the scripts take it.
pub fn new_epoch() -> String {
    crate::broker::new_epoch().to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).clamp(1, i64::MAX as u64)
}

/// The meta's TTL for a retention: [`META_TTL`], or the events' own when
/// longer, so the offset never expires before the events it numbers.
fn meta_ttl(retention: Retention) -> u64 {
    millis(META_TTL.max(retention.ttl))
}

/// Adds to `pipe` the [`PUBLISH`] call, by hash, for `payload` (a sealed
/// message of `channel`, published on `redis_channel`). The caller makes
/// sure the script is loaded on the connection.
pub fn publish_cmd(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    channel: &str,
    redis_channel: &str,
    payload: &[u8],
    retention: Retention,
    candidate: &str,
) {
    pipe.cmd("EVALSHA")
        .arg(SCRIPTS.publish.get_hash())
        .arg(2)
        .arg(keys.history(channel))
        .arg(keys.meta(channel))
        .arg(payload)
        .arg(retention.size)
        .arg(millis(retention.ttl))
        .arg(meta_ttl(retention))
        .arg(redis_channel)
        .arg(candidate);
}

/// Adds to `pipe` the [`BUMP`] call, by hash, giving `channel` epoch
/// `candidate`.
pub fn bump_cmd(pipe: &mut redis::Pipeline, keys: &Keys, channel: &str, candidate: &str) {
    pipe.cmd("EVALSHA")
        .arg(SCRIPTS.bump.get_hash())
        .arg(2)
        .arg(keys.history(channel))
        .arg(keys.meta(channel))
        .arg(candidate)
        .arg(millis(META_TTL));
}

async fn timed<T>(call: impl std::future::Future<Output = RedisResult<T>>) -> Result<T, HistoryError> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(HistoryError::Timeout(REDIS_TIMEOUT)),
    }
}

/// Numbers, stores and publishes one event of `channel` now, outside the
/// outbox's order: returns its offset and the channel's epoch.
pub async fn publish(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    wire: &Wire,
    channel: &str,
    frame: &Frame,
    retention: Retention,
) -> Result<(u64, String), HistoryError> {
    let name = keys.channel(channel);
    let payload = wire.event(&name, frame);
    let mut call = SCRIPTS.publish.prepare_invoke();
    call.key(keys.history(channel))
        .key(keys.meta(channel))
        .arg(payload)
        .arg(retention.size)
        .arg(millis(retention.ttl))
        .arg(meta_ttl(retention))
        .arg(name)
        .arg(new_epoch());
    timed(call.invoke_async(conn)).await
}

/// Starts a new epoch for `channel` (its events were lost, or its history
/// is otherwise not to be trusted): its stream is deleted, its offset
/// kept. Returns the epoch, `candidate`.
pub async fn bump_epoch(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    channel: &str,
    candidate: &str,
) -> Result<String, HistoryError> {
    let mut call = SCRIPTS.bump.prepare_invoke();
    call.key(keys.history(channel)).key(keys.meta(channel)).arg(candidate).arg(millis(META_TTL));
    timed(call.invoke_async(conn)).await
}

/// Where `channel` stands, as [`OPEN`] makes sure it has an epoch: its
/// last offset and its epoch.
pub async fn open(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    channel: &str,
    retention: Retention,
) -> Result<(u64, String), HistoryError> {
    let mut call = SCRIPTS.open.prepare_invoke();
    call.key(keys.meta(channel)).arg(new_epoch()).arg(meta_ttl(retention));
    let (top, epoch): (u64, String) = timed(call.invoke_async(conn)).await?;
    Ok((top, epoch))
}

/// Where `channel` stands: its last offset (0 when none) and its epoch
/// (`None` when none).
pub async fn position(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    channel: &str,
) -> RedisResult<(u64, Option<String>)> {
    let mut hmget = redis::cmd("HMGET");
    hmget.arg(keys.meta(channel)).arg("top").arg("epoch");
    let answer = tokio::time::timeout(REDIS_TIMEOUT, hmget.query_async::<(Option<u64>, Option<String>)>(conn))
        .await
        .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    let (top, epoch) = answer;
    Ok((top.unwrap_or(0), epoch.filter(|e| is_epoch(e))))
}

/// The range script's answer: top, epoch, first id kept, entries (id,
/// fields).
type RangeAnswer = (Option<u64>, Option<String>, Option<String>, Vec<(String, Vec<Vec<u8>>)>);

/// Entries refused so far, for logging at a falling rate.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The events of `channel` after offset `since` up to `until` (inclusive;
/// `None`: the latest), `limit` at most, each checked and given its
/// offset, with the channel's position read in the same step.
pub async fn range(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    wire: &Wire,
    channel: &str,
    since: u64,
    until: Option<u64>,
    limit: usize,
) -> Result<Range, HistoryError> {
    let first = since.checked_add(1);
    let empty = first.is_none() || until.is_some_and(|until| until <= since);
    let count = if empty { 0 } else { limit };
    let mut call = SCRIPTS.range.prepare_invoke();
    call.key(keys.history(channel))
        .key(keys.meta(channel))
        .arg(format!("{}-1", first.unwrap_or(u64::MAX)))
        .arg(until.map_or_else(|| "+".to_owned(), |until| format!("{until}-1")))
        .arg(count);
    let answer: Value = timed(call.invoke_async(conn)).await?;
    let (top, epoch, kept, entries): RangeAnswer = redis::from_redis_value(answer).map_err(RedisError::from)?;
    let topic = Topic::Channel(channel.into());
    let name = keys.channel(channel);
    let mut events = Vec::with_capacity(entries.len());
    let mut refused = 0;
    for (id, fields) in entries {
        let checked = match (offset_of(&id), fields.as_slice()) {
            (Some(offset), [field, payload]) if field.as_slice() == b"p" => wire
                .history_entry(&topic, &name, offset, payload)
                .map(|frame| (offset, frame))
                .map_err(|e| e.to_string()),
            (None, _) => Err(format!("entry id '{}' is not '<offset>-1'", id.chars().take(48).collect::<String>())),
            _ => Err("the entry is not one field 'p'".to_owned()),
        };
        match checked {
            Ok(event) => events.push(event),
            Err(why) => {
                refused += 1;
                let n = REFUSED.fetch_add(1, Ordering::Relaxed);
                if n == 0 || n.is_power_of_two() {
                    log::warn!("redis: refused an entry of the history of '{channel}' ({} so far): {why}", n + 1);
                }
            }
        }
    }
    Ok(Range {
        events,
        top: top.unwrap_or(0),
        epoch: epoch.filter(|e| is_epoch(e)),
        first_kept: kept.as_deref().and_then(offset_of),
        refused,
    })
}

/// The offset of a stream id the script wrote, `<offset>-1`.
fn offset_of(id: &str) -> Option<u64> {
    let (offset, seq) = id.split_once('-')?;
    let offset: u64 = offset.parse().ok()?;
    (seq == "1" && offset > 0).then_some(offset)
}

/// A `redis-server` of a test's own, on a free port, killed when dropped.
#[cfg(test)]
pub(crate) mod test_redis {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running server.
    pub struct RedisServer {
        /// The port it listens on.
        pub port: u16,
        child: Option<Child>,
        dir: tempfile::TempDir,
    }

    impl RedisServer {
        /// Starts one and waits until it answers `PING`.
        pub fn start() -> RedisServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = RedisServer { port, child: None, dir: tempfile::tempdir().unwrap() };
            server.restart();
            server
        }

        /// Starts it (again) on the same port, empty.
        pub fn restart(&mut self) {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (apt-get install redis-server)");
            self.child = Some(child);
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                let ping = self
                    .client()
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
                if ping.is_ok() {
                    return;
                }
                assert!(Instant::now() < until, "redis-server did not start on port {}", self.port);
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Sends it a signal (`-STOP`, `-CONT`).
        pub fn signal(&self, signal: &str) {
            let pid = self.child.as_ref().unwrap().id().to_string();
            assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
        }

        /// A client of it.
        pub fn client(&self) -> redis::Client {
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap()
        }

        /// A new multiplexed connection.
        pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
            self.client().get_multiplexed_async_connection().await.unwrap()
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_redis::RedisServer;
    use super::*;
    use crate::cluster::seal::ClusterKey;
    use crate::cluster::wire::Decoded;
    use futures_util::StreamExt;
    use serde_json::{json, Value as Json};

    const CH: &str = "conversation:c1";

    fn wire(node: &str) -> Wire {
        Wire::new(node, ClusterKey::new(b"test-secret").unwrap(), 1 << 20)
    }

    fn frame(n: u64) -> Frame {
        crate::protocol::encode("task_updated", Some(CH), &json!({ "n": n }), None)
    }

    const KEEP: Retention = Retention { size: 100, ttl: Duration::from_secs(60) };

    async fn publish_n(conn: &mut MultiplexedConnection, keys: &Keys, n: u64, retention: Retention) -> String {
        let mut epoch = String::new();
        for i in 1..=n {
            let (offset, e) = publish(conn, keys, &wire("node-a"), CH, &frame(i), retention).await.unwrap();
            assert_eq!(offset, i);
            epoch = e;
        }
        epoch
    }

    fn n_of(frame: &Frame) -> (u64, u64) {
        let v: Json = serde_json::from_str(frame.text()).unwrap();
        (v["data"]["n"].as_u64().unwrap(), v["offset"].as_u64().unwrap())
    }

    #[test]
    fn the_offset_is_spliced_before_the_closing_brace() {
        assert_eq!(crate::protocol::splice_offset(r#"{"a":1}"#, 7), r#"{"a":1,"offset":7}"#);
        assert_eq!(
            crate::protocol::splice_offset(r#"{"a":{"b":2}}"#, 18446744073709551615),
            r#"{"a":{"b":2},"offset":18446744073709551615}"#
        );
        assert_eq!(crate::protocol::splice_offset("{}", 1), r#"{"offset":1}"#);
        let event = frame(3);
        let v: Json = serde_json::from_str(&crate::protocol::splice_offset(event.text(), 42)).unwrap();
        assert_eq!(v["offset"], 42);
        assert_eq!(v["data"]["n"], 3);
    }

    #[test]
    fn epochs_are_short_words() {
        let epoch = new_epoch();
        assert!(is_epoch(&epoch), "{epoch}");
        assert_ne!(epoch, new_epoch());
        assert!(is_epoch("a") && is_epoch("A-b_9") && is_epoch(&"x".repeat(32)));
        assert!(!is_epoch("") && !is_epoch(&"x".repeat(33)) && !is_epoch("a|b") && !is_epoch("a,b") && !is_epoch("é"));
    }

    #[test]
    fn stream_ids_are_offsets() {
        assert_eq!(offset_of("1-1"), Some(1));
        assert_eq!(offset_of("18446744073709551615-1"), Some(u64::MAX));
        for bad in ["0-1", "1-0", "1-2", "1", "x-1", "-1", "1-1-1"] {
            assert_eq!(offset_of(bad), None, "{bad}");
        }
    }

    #[actix::test]
    async fn the_script_numbers_events_one_by_one_and_publishes_them_with_their_position() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
        pubsub.subscribe(keys.channel(CH)).await.unwrap();
        assert_eq!(position(&mut conn, &keys, CH).await.unwrap(), (0, None));
        let epoch = publish_n(&mut conn, &keys, 3, KEEP).await;
        assert!(is_epoch(&epoch));
        assert_eq!(position(&mut conn, &keys, CH).await.unwrap(), (3, Some(epoch.clone())));
        let topic = Topic::Channel(CH.into());
        let mut messages = pubsub.on_message();
        for i in 1..=3 {
            let msg = messages.next().await.unwrap();
            let payload = msg.get_payload_bytes();
            assert!(payload.starts_with(format!("@{i},{epoch}|").as_bytes()));
            // The publishing node's own echo is delivered too.
            for node in ["node-a", "node-b"] {
                let Ok(Decoded::Event(inbound)) = wire(node).decode(&topic, &keys.channel(CH), payload) else {
                    panic!("refused");
                };
                assert_eq!(inbound.position, Some((i, epoch.as_str().into())));
                assert_eq!(n_of(&inbound.frame), (i, i));
            }
        }
        // Both keys expire: the stream after the retention, the meta after a day.
        let mut c = redis.client().get_connection().unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(keys.history(CH)).query(&mut c).unwrap();
        assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
        let ttl: i64 = redis::cmd("PTTL").arg(keys.meta(CH)).query(&mut c).unwrap();
        assert!(ttl > 86_000_000, "{ttl}");
    }

    #[actix::test]
    async fn concurrent_publishers_get_distinct_increasing_offsets() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let (mut a, mut b) = (redis.connection().await, redis.connection().await);
        let run = |conn: &mut MultiplexedConnection, node: &'static str| {
            let mut conn = conn.clone();
            let keys = keys.clone();
            async move {
                let mut offsets = Vec::new();
                for i in 0..100 {
                    let (offset, _) = publish(&mut conn, &keys, &wire(node), CH, &frame(i), KEEP).await.unwrap();
                    offsets.push(offset);
                }
                offsets
            }
        };
        let (from_a, from_b) = futures_util::future::join(run(&mut a, "node-a"), run(&mut b, "node-b")).await;
        assert!(from_a.windows(2).all(|w| w[0] < w[1]) && from_b.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<u64> = from_a.into_iter().chain(from_b).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<_>>());
    }

    #[actix::test]
    async fn a_range_is_exactly_the_offsets_asked_for() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        let epoch = publish_n(&mut conn, &keys, 10, Retention { size: 5, ttl: Duration::from_secs(60) }).await;
        let w = wire("node-b");
        let offsets = |r: &Range| r.events.iter().map(|(o, f)| (*o, n_of(f))).collect::<Vec<_>>();
        let r = range(&mut conn, &keys, &w, CH, 7, Some(9), 100).await.unwrap();
        assert_eq!(offsets(&r), [(8, (8, 8)), (9, (9, 9))]);
        assert_eq!((r.top, r.epoch.as_deref(), r.first_kept, r.refused), (10, Some(epoch.as_str()), Some(6), 0));
        assert!(r.complete_after(7));
        // Trimmed to the last 5: what came before is gone, and it says so.
        let r = range(&mut conn, &keys, &w, CH, 0, None, 100).await.unwrap();
        assert_eq!(r.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
        assert!(!r.complete_after(0) && !r.complete_after(4) && r.complete_after(5));
        let r = range(&mut conn, &keys, &w, CH, 5, None, 2).await.unwrap();
        assert_eq!(r.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [6, 7]);
        for (since, until) in [(10, None), (9, Some(9)), (9, Some(3)), (u64::MAX, None)] {
            let r = range(&mut conn, &keys, &w, CH, since, until, 100).await.unwrap();
            assert!(r.events.is_empty(), "{since} {until:?}");
            assert_eq!((r.top, r.first_kept), (10, Some(6)));
        }
        assert!(range(&mut conn, &keys, &w, CH, 0, None, 0).await.unwrap().events.is_empty());
        // A channel without history.
        let r = range(&mut conn, &keys, &w, "team:none", 0, None, 10).await.unwrap();
        assert_eq!((r.events.len(), r.top, r.epoch.as_deref(), r.first_kept), (0, 0, None, None));
        assert!(r.complete_after(0));
    }

    #[actix::test]
    async fn expired_events_leave_the_position() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        let epoch = publish_n(&mut conn, &keys, 2, Retention { size: 10, ttl: Duration::from_millis(30) }).await;
        // Expiry is Redis's clock: watched, not slept on.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while redis::cmd("EXISTS").arg(keys.history(CH)).query_async::<i64>(&mut conn).await.unwrap() == 1 {
            assert!(std::time::Instant::now() < until, "the stream did not expire");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(position(&mut conn, &keys, CH).await.unwrap(), (2, Some(epoch.clone())));
        let r = range(&mut conn, &keys, &wire("b"), CH, 0, None, 10).await.unwrap();
        assert_eq!((r.events.len(), r.top, r.epoch.as_deref(), r.first_kept), (0, 2, Some(epoch.as_str()), None));
        assert!(!r.complete_after(0) && r.complete_after(2));
        // The numbering goes on in the same epoch.
        let (offset, again) = publish(&mut conn, &keys, &wire("a"), CH, &frame(3), KEEP).await.unwrap();
        assert_eq!((offset, again), (3, epoch));
    }

    #[actix::test]
    async fn a_lost_meta_starts_a_new_epoch() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        let old = publish_n(&mut conn, &keys, 3, KEEP).await;
        redis::cmd("DEL").arg(keys.meta(CH)).query_async::<i64>(&mut conn).await.unwrap();
        let (offset, epoch) = publish(&mut conn, &keys, &wire("a"), CH, &frame(1), KEEP).await.unwrap();
        assert_eq!(offset, 1);
        assert_ne!(epoch, old);
        let r = range(&mut conn, &keys, &wire("b"), CH, 0, None, 10).await.unwrap();
        assert_eq!(r.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [1]);
        assert_eq!((r.top, r.epoch, r.first_kept), (1, Some(epoch.clone()), Some(1)));
        // A stream ahead of its meta (offsets given that the meta no
        // longer counts): the id is refused, history starts again.
        publish(&mut conn, &keys, &wire("a"), CH, &frame(2), KEEP).await.unwrap();
        redis::cmd("HSET").arg(keys.meta(CH)).arg("top").arg(0).query_async::<i64>(&mut conn).await.unwrap();
        let (offset, ahead) = publish(&mut conn, &keys, &wire("a"), CH, &frame(1), KEEP).await.unwrap();
        assert!(offset == 1 && ahead != epoch);
        let r = range(&mut conn, &keys, &wire("b"), CH, 0, None, 10).await.unwrap();
        assert_eq!((r.events.len(), r.epoch.as_deref(), r.first_kept), (1, Some(ahead.as_str()), Some(1)));
        let epoch = ahead;
        // A broken meta (a top that is no number, an epoch the format
        // refuses) starts one too.
        redis::cmd("HSET").arg(keys.meta(CH)).arg("top").arg("x").query_async::<i64>(&mut conn).await.unwrap();
        let (offset, third) = publish(&mut conn, &keys, &wire("a"), CH, &frame(1), KEEP).await.unwrap();
        assert!(offset == 1 && third != epoch);
        redis::cmd("HSET").arg(keys.meta(CH)).arg("epoch").arg("a|b").query_async::<i64>(&mut conn).await.unwrap();
        let (offset, fourth) = publish(&mut conn, &keys, &wire("a"), CH, &frame(1), KEEP).await.unwrap();
        assert!(offset == 1 && fourth != third && is_epoch(&fourth));
        // A bump keeps the offset and drops the events.
        bump_epoch(&mut conn, &keys, CH, "bumped").await.unwrap();
        assert_eq!(position(&mut conn, &keys, CH).await.unwrap(), (1, Some("bumped".into())));
        let (offset, epoch) = publish(&mut conn, &keys, &wire("a"), CH, &frame(2), KEEP).await.unwrap();
        assert_eq!((offset, epoch.as_str()), (2, "bumped"));
        let r = range(&mut conn, &keys, &wire("b"), CH, 0, None, 10).await.unwrap();
        assert_eq!(r.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [2]);
    }

    #[actix::test]
    async fn forged_entries_are_refused() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        publish_n(&mut conn, &keys, 1, KEEP).await;
        let other = wire("node-a").event(&keys.channel("conversation:c2"), &frame(3));
        let sealed = wire("node-a").event(&keys.channel(CH), &frame(4));
        let forged: [(&str, &[&[u8]]); 5] = [
            ("2-1", &[b"p", br#"{"type":"task_updated","data":{"n":2}}"#]),
            ("3-1", &[b"p", &other]),
            ("4-1", &[b"q", &sealed]),
            ("5-2", &[b"p", &sealed]),
            ("6-1", &[b"p", &sealed]),
        ];
        for (id, fields) in forged {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(keys.history(CH)).arg(id);
            for field in fields {
                xadd.arg(*field);
            }
            xadd.query_async::<String>(&mut conn).await.unwrap();
        }
        let r = range(&mut conn, &keys, &wire("node-b"), CH, 0, None, 10).await.unwrap();
        // The unsealed event, the one sealed for another channel, the one
        // with another field and the one with another id are refused; a
        // sealed event of this channel is believed wherever it stands.
        assert_eq!(r.events.iter().map(|(o, f)| (*o, n_of(f))).collect::<Vec<_>>(), [(1, (1, 1)), (6, (4, 6))]);
        assert_eq!(r.refused, 4);
        assert!(!r.complete_after(0));
    }
}
