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
//! deployment's prefix, are hash-tagged by channel so a script's keys
//! share a slot on Redis Cluster:
//!
//! - `history:{<channel>}`, a stream: entry `<offset>-1` holds field `p`,
//!   the node's sealed message (`wire.rs`), trimmed to the retention's
//!   size and expiring after its age of silence;
//! - `meta:{<channel>}`, a hash: `top` (the last offset given) and `epoch`,
//!   kept [`META_TTL`] after the last event;
//! - `answers:{<channel>}`, a hash: the answers streaming in the channel
//!   (`broker/answers.rs`), stream id → `first,last,final,ended_ms,
//!   too_long,len,key`: the offsets of its first and last tokens, whether
//!   it ended and when (ms, Redis's clock), whether its text went over
//!   [`MAX_ANSWER_BYTES`], the text's length, and `key`, 32 hex digits;
//! - `answer:{<channel>}:<key>`, a string: that answer's text so far, each
//!   token `APPEND`ed. `key` is a digest of the stream id, so a stream id
//!   (a publisher's word) never makes a key name of its own. Answers with
//!   ids over [`MAX_STREAM_ID_BYTES`] are not kept.
//!
//! The publish script keeps the answers in the step that gives the event
//! its offset, and the open script reads them with the position, so a
//! channel that starts on any node gets the answers exactly as of its
//! position. They follow the memory broker's rules: [`MAX_ANSWERS`] per
//! channel (the oldest goes), [`MAX_ANSWER_BYTES`] of text, [`KEEP_ENDED`]
//! after an answer's end; they expire with the channel's events (but never
//! sooner than [`KEEP_ENDED`]), and go when its history starts again or
//! gets a new epoch: their offsets belong to the old numbering.
//!
//! Every key of a channel carries `{<channel>}`, a Redis Cluster hash tag:
//! the scripts' keys share a slot. The text keys of answers other than the
//! event's own are not known to the caller (only Redis knows which answers
//! a channel has), so the scripts name them from the text key they are
//! given, keeping its tag and so its slot.
//!
//! Redis is not trusted, so every entry read back is checked as a message
//! from Redis is (its seal, the rules of events) before a client sees it,
//! and answers read back are bounded and checked (their format, their
//! offsets against the position, their text's length) before a channel
//! snapshots them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult, Script, Value};

use crate::broker::answers::{self, Piece, KEEP_ENDED, MAX_ANSWERS, MAX_ANSWER_BYTES};
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

/// Lua shared by the scripts that keep answers: `answer(v)` parses an
/// entry of the answers hash (`nil` when it is not one the scripts wrote),
/// `encode(a)` writes one, `drop_answers(hash, base)` deletes a channel's
/// answers and their texts (`base .. key`), `clock()` is Redis's time in
/// ms. A `key` is 32 hex digits, so `base .. key` keeps `base`'s hash tag
/// whatever the hash holds.
macro_rules! answers_lua {
    () => {
        r"
local function answer(v)
  if type(v) ~= 'string' then return nil end
  local f, l, fin, en, long, len, k = string.match(v, '^(%d+),(%d+),([01]),(%d+),([01]),(%d+),(%x+)$')
  if not f or #k ~= 32 or #f > 15 or #l > 15 or #en > 15 or #len > 15 then return nil end
  return {first = tonumber(f), last = tonumber(l), fin = fin, ended = tonumber(en), long = long,
    len = tonumber(len), key = k}
end
local function encode(a)
  return string.format('%d,%d,%s,%d,%s,%d,%s', a.first, a.last, a.fin, a.ended, a.long, a.len, a.key)
end
local function drop_answers(hash, base)
  local all = redis.call('HGETALL', hash)
  for i = 2, #all, 2 do
    local k = string.match(all[i], ',(%x+)$')
    if k and #k == 32 then redis.call('DEL', base .. k) end
  end
  redis.call('DEL', hash)
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"
    };
}

/// Numbers, stores and publishes one event, atomically, and keeps the
/// channel's answers with it.
///
/// `KEYS[1]`: the channel's stream, `KEYS[2]`: its meta hash, `KEYS[3]`:
/// its answers hash, `KEYS[4]`: the text key of the event's answer, or for
/// an event that is no answer's the text keys' common start
/// (`…answer:{<channel>}:`). ARGV: the sealed message, the stream's MAXLEN,
/// its TTL (ms), the meta's TTL (ms), the Redis channel to publish on, an
/// epoch candidate (random, used only when the history starts again), then
/// what the event does to an answer: `token`, `end` or nothing, and for an
/// answer's event its stream id, the chunk, `1` when the token is the last,
/// [`MAX_ANSWER_BYTES`], [`MAX_ANSWERS`], [`KEEP_ENDED`] (ms) and the
/// answers' TTL (ms). Publishes `@<offset>,<epoch>|<message>` and returns
/// `{offset, epoch}`.
///
/// History starts again (the stream deleted, a new epoch, offset 1) when
/// the meta has no valid epoch (a new channel, or its meta expired), when
/// its `top` is not a number, or when the stream refuses the id: it holds a
/// larger one, so offsets were given that the meta no longer remembers.
/// The channel's answers go then.
///
/// The meta is checked by reading it, so that on a Redis out of memory the
/// script's first write, `HINCRBY`, is refused and the script fails having
/// changed nothing (Redis refuses only a script's first write then).
///
/// An answer is what `Answers::apply` makes of its events: a token of an
/// answer not kept starts one at this offset (making room: answers ended
/// more than [`KEEP_ENDED`] ago go, then the oldest past [`MAX_ANSWERS`]);
/// a token of a kept answer moves its `last` here and appends its chunk,
/// unless the answer ended (the token is ignored) or its text is over
/// [`MAX_ANSWER_BYTES`] (dropped, the answer marked too long); a last token,
/// `assistant.complete` or `assistant.error` ends it. Appending checks the
/// text's length against the entry's, so a text that expired on its own is
/// not continued as if whole: its answer is marked too long.
pub const PUBLISH: &str = concat!(
    answers_lua!(),
    r"
local function valid(e)
  return type(e) == 'string' and #e >= 1 and #e <= 32 and not string.find(e, '[^%w_%-]')
end
local base = string.match(KEYS[4], '^(.*:)%x*$')
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
  if base then drop_answers(KEYS[3], base) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local kind = ARGV[7]
local key = base and string.sub(KEYS[4], #base + 1)
if (kind == 'token' or kind == 'end') and key and #key == 32 then
  local sid, maxb, maxn = ARGV[8], tonumber(ARGV[11]), tonumber(ARGV[12])
  local keep, ttl = tonumber(ARGV[13]), ARGV[14]
  local now = clock()
  local function gone(a) return a.ended > 0 and now - a.ended >= keep end
  local a = answer(redis.call('HGET', KEYS[3], sid))
  if a and (gone(a) or a.key ~= key) then
    redis.call('HDEL', KEYS[3], sid)
    redis.call('DEL', base .. a.key)
    a = nil
  end
  if kind == 'token' and not a then
    local all = redis.call('HGETALL', KEYS[3])
    local live = {}
    for i = 1, #all, 2 do
      local b = answer(all[i + 1])
      if b and not gone(b) then
        live[#live + 1] = {all[i], b}
      else
        redis.call('HDEL', KEYS[3], all[i])
        if b then redis.call('DEL', base .. b.key) end
      end
    end
    table.sort(live, function(x, y) return x[2].first < y[2].first end)
    for i = 1, #live - maxn + 1 do
      redis.call('HDEL', KEYS[3], live[i][1])
      redis.call('DEL', base .. live[i][2].key)
    end
    a = {first = top, last = top, fin = '0', ended = 0, long = '0', len = 0, key = key}
    redis.call('DEL', KEYS[4])
  end
  if a and a.ended == 0 then
    if kind == 'token' then
      a.last = top
      local chunk = ARGV[9]
      if a.long == '0' then
        local n = -1
        if a.len + #chunk <= maxb then n = redis.call('APPEND', KEYS[4], chunk) end
        if n == a.len + #chunk then
          a.len = n
        else
          a.long, a.len = '1', 0
          redis.call('DEL', KEYS[4])
        end
      end
    end
    if kind == 'end' or ARGV[10] == '1' then
      a.fin, a.ended = '1', now
      redis.call('PEXPIRE', KEYS[4], keep + 1000)
    elseif a.long == '0' then
      redis.call('PEXPIRE', KEYS[4], ttl)
    end
    redis.call('HSET', KEYS[3], sid, encode(a))
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
redis.call('PUBLISH', ARGV[5], '@' .. string.format('%d', top) .. ',' .. epoch .. '|' .. ARGV[1])
return {top, epoch}
"
);

/// Starts a new epoch for a channel whose events were lost on the way to
/// Redis: the stream goes (it no longer tells the whole story) and so do
/// the answers (tokens of theirs may be among the lost), the offset stays.
/// `KEYS[1]`: the stream, `KEYS[2]`: the meta, `KEYS[3]`: the answers
/// hash, `KEYS[4]`: the text keys' common start. ARGV: the new epoch, the
/// meta's TTL (ms). Returns the epoch.
pub const BUMP: &str = concat!(
    answers_lua!(),
    r"
redis.call('DEL', KEYS[1])
local set = redis.pcall('HSET', KEYS[2], 'epoch', ARGV[1])
if type(set) == 'table' and set.err then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
drop_answers(KEYS[3], KEYS[4])
return ARGV[1]
"
);

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
/// first event continues (the publish script keeps a valid epoch), and the
/// answers streaming in it as of that position, in the same step.
/// `KEYS[1]`: the meta, `KEYS[2]`: the answers hash, `KEYS[3]`: the text
/// keys' common start. ARGV: an epoch candidate, the meta's TTL (ms),
/// [`KEEP_ENDED`] (ms), [`MAX_ANSWER_BYTES`], the most entries the answers
/// hash may hold to be read. Returns `{top, epoch, now (ms), answers}`,
/// `answers` flat: stream id, entry, text (empty when not read: too long,
/// or not the length its entry says) for each answer not ended more than
/// [`KEEP_ENDED`] ago. A meta given a new epoch or top here has answers of
/// another numbering: they go.
const OPEN: &str = concat!(
    answers_lua!(),
    r"
local meta = redis.call('HMGET', KEYS[1], 'top', 'epoch')
local fresh = false
local e = meta[2]
if type(e) ~= 'string' or #e < 1 or #e > 32 or string.find(e, '[^%w_%-]') then
  e = ARGV[1]
  fresh = true
  redis.call('HSET', KEYS[1], 'epoch', e)
end
local t = meta[1]
if not t or not (#t <= 15 and (t == '0' or string.find(t, '^[1-9]%d*$'))) then
  t = '0'
  fresh = true
  redis.call('HSET', KEYS[1], 'top', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local now = clock()
local out = {}
if fresh then
  drop_answers(KEYS[2], KEYS[3])
elseif redis.call('HLEN', KEYS[2]) <= tonumber(ARGV[5]) then
  local keep, maxb = tonumber(ARGV[3]), tonumber(ARGV[4])
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local a = answer(all[i + 1])
    if a and not (a.ended > 0 and now - a.ended >= keep) then
      local text = ''
      local k = KEYS[3] .. a.key
      if a.long == '0' and a.len <= maxb and redis.call('STRLEN', k) == a.len then
        text = redis.call('GET', k) or ''
      end
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
      out[#out + 1] = text
    end
  end
end
return {t, e, now, out}
"
);

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

/// The longest stream id whose answer Redis keeps (an answer with a
/// longer one is streamed, never snapshotted, on Redis): ids are a
/// publisher's choice, and each is stored in the answers hash.
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// The most entries the answers hash may hold to be read: a few times
/// [`MAX_ANSWERS`], which the scripts keep it to; a larger one was not
/// written by them and is not read.
const MAX_ANSWER_ENTRIES: usize = 4 * MAX_ANSWERS;

/// The hash of `channel`'s answers: `{prefix}answers:{<channel>}`, in the
/// slot of [`Keys::history`].
pub fn answers_key(keys: &Keys, channel: &str) -> String {
    format!("{}answers:{{{channel}}}", keys.prefix())
}

/// The common start of the text keys of `channel`'s answers:
/// `{prefix}answer:{<channel>}:`, in the slot of [`Keys::history`].
pub fn answer_base(keys: &Keys, channel: &str) -> String {
    format!("{}answer:{{{channel}}}:", keys.prefix())
}

/// The key holding the text of answer `stream_id` of `channel`:
/// [`answer_base`] and 32 hex digits of the id's SHA-256, so whatever the
/// id holds (braces, colons, another channel's name), the key stays one of
/// this channel's, of a bounded length.
pub fn answer_key(keys: &Keys, channel: &str, stream_id: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut key = answer_base(keys, channel);
    for b in &Sha256::digest(stream_id.as_bytes())[..16] {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// The answers' TTL: the events', but at least [`KEEP_ENDED`], so an
/// answer just ended is kept its while whatever the retention.
fn answers_ttl(retention: Retention) -> u64 {
    millis(retention.ttl.max(KEEP_ENDED))
}

/// The [`PUBLISH`] keys and arguments an event adds for its answer:
/// `(KEYS[4], ARGV[7..])`. An event that is no answer's (or whose stream
/// id is over [`MAX_STREAM_ID_BYTES`]) passes the text keys' common start
/// and no piece.
fn answer_args(keys: &Keys, channel: &str, piece: Option<&Piece>, retention: Retention) -> (String, Vec<Vec<u8>>) {
    let Some(piece) = piece.filter(|p| p.stream_id().len() <= MAX_STREAM_ID_BYTES) else {
        return (answer_base(keys, channel), vec![Vec::new()]);
    };
    let (kind, chunk, last) = match piece {
        Piece::Token { chunk, is_final, .. } => ("token", chunk.as_str(), *is_final),
        Piece::End { .. } => ("end", "", false),
    };
    let args = vec![
        kind.as_bytes().to_vec(),
        piece.stream_id().as_bytes().to_vec(),
        chunk.as_bytes().to_vec(),
        if last { b"1".to_vec() } else { b"0".to_vec() },
        MAX_ANSWER_BYTES.to_string().into_bytes(),
        MAX_ANSWERS.to_string().into_bytes(),
        millis(KEEP_ENDED).to_string().into_bytes(),
        answers_ttl(retention).to_string().into_bytes(),
    ];
    (answer_key(keys, channel, piece.stream_id()), args)
}

/// Adds to `pipe` the [`PUBLISH`] call, by hash, for `payload` (a sealed
/// message of `channel`, published on `redis_channel`) and `piece`, what
/// the event does to the channel's answers (`answers::piece` of its
/// frame). The caller makes sure the script is loaded on the connection.
#[allow(clippy::too_many_arguments)]
pub fn publish_cmd(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    channel: &str,
    redis_channel: &str,
    payload: &[u8],
    retention: Retention,
    candidate: &str,
    piece: Option<&Piece>,
) {
    let (text_key, answer) = answer_args(keys, channel, piece, retention);
    pipe.cmd("EVALSHA")
        .arg(SCRIPTS.publish.get_hash())
        .arg(4)
        .arg(keys.history(channel))
        .arg(keys.meta(channel))
        .arg(answers_key(keys, channel))
        .arg(text_key)
        .arg(payload)
        .arg(retention.size)
        .arg(millis(retention.ttl))
        .arg(meta_ttl(retention))
        .arg(redis_channel)
        .arg(candidate);
    for arg in answer {
        pipe.arg(arg);
    }
}

/// Adds to `pipe` the [`BUMP`] call, by hash, giving `channel` epoch
/// `candidate`.
pub fn bump_cmd(pipe: &mut redis::Pipeline, keys: &Keys, channel: &str, candidate: &str) {
    pipe.cmd("EVALSHA")
        .arg(SCRIPTS.bump.get_hash())
        .arg(4)
        .arg(keys.history(channel))
        .arg(keys.meta(channel))
        .arg(answers_key(keys, channel))
        .arg(answer_base(keys, channel))
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
/// outbox's order, keeping its answers: returns its offset and the
/// channel's epoch.
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
    let piece = answers::piece(frame.text());
    let (text_key, answer) = answer_args(keys, channel, piece.as_ref(), retention);
    let mut call = SCRIPTS.publish.prepare_invoke();
    call.key(keys.history(channel))
        .key(keys.meta(channel))
        .key(answers_key(keys, channel))
        .key(text_key)
        .arg(payload)
        .arg(retention.size)
        .arg(millis(retention.ttl))
        .arg(meta_ttl(retention))
        .arg(name)
        .arg(new_epoch());
    for arg in answer {
        call.arg(arg);
    }
    timed(call.invoke_async(conn)).await
}

/// Starts a new epoch for `channel` (its events were lost, or its history
/// is otherwise not to be trusted): its stream and answers are deleted,
/// its offset kept. Returns the epoch, `candidate`.
pub async fn bump_epoch(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    channel: &str,
    candidate: &str,
) -> Result<String, HistoryError> {
    let mut call = SCRIPTS.bump.prepare_invoke();
    call.key(keys.history(channel))
        .key(keys.meta(channel))
        .key(answers_key(keys, channel))
        .key(answer_base(keys, channel))
        .arg(candidate)
        .arg(millis(META_TTL));
    timed(call.invoke_async(conn)).await
}

/// An answer as Redis keeps it, checked: what a channel starting from the
/// position read with it needs to snapshot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The answer's `stream_id`.
    pub stream_id: String,
    /// Its chunks so far; empty when `too_long`.
    pub text: String,
    /// The offset of its first token.
    pub first: u64,
    /// The offset of its last token.
    pub last: u64,
    /// Whether it has ended.
    pub is_final: bool,
    /// How long ago it ended, by Redis's clock (less than [`KEEP_ENDED`]);
    /// `None` while it streams.
    pub ended_ago: Option<Duration>,
    /// Its text is not kept (over [`MAX_ANSWER_BYTES`], or lost): it is
    /// not snapshotted, and its later tokens are not appended to anything.
    pub too_long: bool,
}

/// Where a channel stands and its answers, read together.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The channel's last offset; 0 before its first event.
    pub top: u64,
    /// Its epoch (given now if it had none).
    pub epoch: String,
    /// The answers streaming (or just ended) as of `top`, oldest first,
    /// [`MAX_ANSWERS`] at most.
    pub answers: Vec<StoredAnswer>,
}

/// Where `channel` stands, as the open script makes sure it has an epoch: its
/// last offset, its epoch and its answers as of that offset.
pub async fn open(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    channel: &str,
    retention: Retention,
) -> Result<Opened, HistoryError> {
    let mut call = SCRIPTS.open.prepare_invoke();
    call.key(keys.meta(channel))
        .key(answers_key(keys, channel))
        .key(answer_base(keys, channel))
        .arg(new_epoch())
        .arg(meta_ttl(retention))
        .arg(millis(KEEP_ENDED))
        .arg(MAX_ANSWER_BYTES)
        .arg(MAX_ANSWER_ENTRIES);
    let answer: Value = timed(call.invoke_async(conn)).await?;
    let (top, epoch, now, entries): (u64, String, Value, Value) =
        redis::from_redis_value(answer).map_err(RedisError::from)?;
    // The position is the script's own; the answers are Redis's word, read
    // with care: one not understood is left out, not the position.
    let answers = match (now, entries) {
        (Value::Int(now), Value::Array(entries)) => stored_answers(top, now, entries),
        _ => Vec::new(),
    };
    Ok(Opened { top, epoch, answers })
}

/// The answers [`OPEN`] read, checked (an entry the scripts would not
/// have written is left out, an answer whose text is not the length its
/// entry says is marked too long), oldest first, the newest
/// [`MAX_ANSWERS`].
fn stored_answers(top: u64, now: i64, entries: Vec<Value>) -> Vec<StoredAnswer> {
    let mut answers = Vec::new();
    let mut bad = 0usize;
    let mut entries = entries.into_iter();
    while let (Some(id), Some(entry), Some(text)) = (entries.next(), entries.next(), entries.next()) {
        match stored_answer(top, now, id, entry, text) {
            Some(Some(answer)) => answers.push(answer),
            Some(None) => {}
            None => bad += 1,
        }
        if answers.len() + bad > MAX_ANSWER_ENTRIES {
            break;
        }
    }
    if bad > 0 {
        log::warn!("redis: left out {bad} answer entries of a channel at offset {top} that were not understood");
    }
    answers.sort_by_key(|a| a.first);
    let extra = answers.len().saturating_sub(MAX_ANSWERS);
    answers.drain(..extra);
    answers
}

/// One answer [`OPEN`] read: `None` when not understood, `Some(None)` when
/// ended too long ago.
fn stored_answer(top: u64, now: i64, id: Value, entry: Value, text: Value) -> Option<Option<StoredAnswer>> {
    let (Value::BulkString(id), Value::BulkString(entry), Value::BulkString(text)) = (id, entry, text) else {
        return None;
    };
    if id.is_empty() || id.len() > MAX_STREAM_ID_BYTES || entry.len() > 160 {
        return None;
    }
    let stream_id = String::from_utf8(id).ok()?;
    let entry = std::str::from_utf8(&entry).ok()?;
    let mut fields = entry.split(',');
    let mut number = || -> Option<u64> {
        let field = fields.next()?;
        if field.is_empty() || field.len() > 15 || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        field.parse().ok()
    };
    let (first, last, fin, ended, long, len) = (number()?, number()?, number()?, number()?, number()?, number()?);
    let key = fields.next()?;
    if fields.next().is_some() || key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if first == 0 || first > last || last > top || fin > 1 || long > 1 {
        return None;
    }
    // Ended when it says so, by either mark.
    let ended_ago = if ended > 0 {
        Some(Duration::from_millis(u64::try_from(now).unwrap_or(0).saturating_sub(ended)))
    } else {
        (fin == 1).then_some(Duration::ZERO)
    };
    if ended_ago.is_some_and(|ago| ago >= KEEP_ENDED) {
        return Some(None);
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let text =
        if long == 0 && len <= MAX_ANSWER_BYTES && text.len() == len { String::from_utf8(text).ok() } else { None };
    let too_long = text.is_none();
    Some(Some(StoredAnswer {
        stream_id,
        text: text.unwrap_or_default(),
        first,
        last,
        is_final: ended_ago.is_some(),
        ended_ago,
        too_long,
    }))
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

    // Answers.

    use crate::protocol::kind;

    fn token(channel: &str, stream: &str, chunk: &str, last: bool) -> Frame {
        let data = json!({"stream_id": stream, "chunk": chunk, "is_final": last});
        crate::protocol::encode(kind::ASSISTANT_TOKEN, Some(channel), &data, None)
    }

    fn ended(kind: &str, stream: &str) -> Frame {
        crate::protocol::encode(kind, Some(CH), &json!({"stream_id": stream}), None)
    }

    async fn send_to(conn: &mut MultiplexedConnection, keys: &Keys, channel: &str, frame: Frame) -> u64 {
        publish(conn, keys, &wire("node-a"), channel, &frame, KEEP).await.unwrap().0
    }

    async fn send(conn: &mut MultiplexedConnection, keys: &Keys, frame: Frame) -> u64 {
        send_to(conn, keys, CH, frame).await
    }

    /// Each answer as `(stream_id, text, first, last, is_final, too_long)`.
    fn summary(opened: &Opened) -> Vec<(&str, &str, u64, u64, bool, bool)> {
        opened
            .answers
            .iter()
            .map(|a| (a.stream_id.as_str(), a.text.as_str(), a.first, a.last, a.is_final, a.too_long))
            .collect()
    }

    async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
        redis::cmd("EXISTS").arg(key).query_async::<i64>(conn).await.unwrap() == 1
    }

    async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
    }

    #[actix::test]
    async fn tokens_make_answers_in_order_across_publishes() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        let first = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!((first.top, first.answers.len()), (0, 0));
        send(&mut conn, &keys, frame(1)).await;
        for (stream, chunk, last) in [("s1", "Hel", false), ("s2", "A", false), ("s1", "lo", false), ("s2", "B", false)]
        {
            send(&mut conn, &keys, token(CH, stream, chunk, last)).await;
        }
        assert_eq!(send(&mut conn, &keys, token(CH, "s1", "!", true)).await, 6);
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!((opened.top, opened.epoch.as_str()), (6, first.epoch.as_str()));
        assert_eq!(summary(&opened), [("s1", "Hello!", 2, 6, true, false), ("s2", "AB", 3, 5, false, false)]);
        assert!(opened.answers[0].ended_ago.is_some_and(|ago| ago < Duration::from_secs(5)));
        assert_eq!(opened.answers[1].ended_ago, None);
        // Each text is a key of its own, appended to; all expire.
        let text: String = redis::cmd("GET").arg(answer_key(&keys, CH, "s2")).query_async(&mut conn).await.unwrap();
        assert_eq!(text, "AB");
        let streaming = pttl(&mut conn, &answer_key(&keys, CH, "s2")).await;
        assert!(streaming > 50_000 && streaming <= 60_000, "{streaming}");
        let done = pttl(&mut conn, &answer_key(&keys, CH, "s1")).await;
        assert!(done > 25_000 && done <= 31_000, "kept a while after its end: {done}");
        let hash = pttl(&mut conn, &answers_key(&keys, CH)).await;
        assert!(hash > 50_000 && hash <= 60_000, "{hash}");
        // The outbox's way (a pipeline, by hash) keeps them the same.
        let mut pipe = redis::pipe();
        let name = keys.channel(CH);
        let piece = answers::piece(token(CH, "s2", "C", false).text());
        let payload = wire("node-a").event(&name, &token(CH, "s2", "C", false));
        pipe.cmd("SCRIPT").arg("LOAD").arg(PUBLISH).ignore();
        publish_cmd(&mut pipe, &keys, CH, &name, &payload, KEEP, &new_epoch(), piece.as_ref());
        let answers: Vec<(u64, String)> = pipe.query_async(&mut conn).await.unwrap();
        let offset = answers[0].0;
        assert_eq!(offset, 7);
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened)[1], ("s2", "ABC", 3, 7, false, false));
    }

    #[actix::test]
    async fn an_ended_answer_is_kept_a_while_and_nothing_is_added_to_it() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        send(&mut conn, &keys, token(CH, "a", "one", false)).await;
        send(&mut conn, &keys, token(CH, "b", "two", false)).await;
        send(&mut conn, &keys, ended(kind::ASSISTANT_COMPLETE, "a")).await;
        send(&mut conn, &keys, ended(kind::ASSISTANT_ERROR, "b")).await;
        send(&mut conn, &keys, ended(kind::ASSISTANT_COMPLETE, "never-began")).await;
        // After the end: ignored.
        send(&mut conn, &keys, token(CH, "a", "more", false)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(opened.top, 6);
        assert_eq!(summary(&opened), [("a", "one", 1, 1, true, false), ("b", "two", 2, 2, true, false)]);
        // KEEP_ENDED later (its end moved back on Redis's clock): gone.
        let hash = answers_key(&keys, CH);
        let entry: String = redis::cmd("HGET").arg(&hash).arg("a").query_async(&mut conn).await.unwrap();
        let mut fields: Vec<String> = entry.split(',').map(str::to_owned).collect();
        let ended_ms: u64 = fields[3].parse().unwrap();
        fields[3] = (ended_ms - KEEP_ENDED.as_millis() as u64 - 1).to_string();
        redis::cmd("HSET").arg(&hash).arg("a").arg(fields.join(",")).query_async::<i64>(&mut conn).await.unwrap();
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened), [("b", "two", 2, 2, true, false)]);
        // Its id may begin a new answer then, from nothing.
        send(&mut conn, &keys, token(CH, "a", "new", false)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened), [("b", "two", 2, 2, true, false), ("a", "new", 7, 7, false, false)]);
    }

    #[actix::test]
    async fn an_answer_too_long_keeps_no_text() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        let big = "y".repeat(MAX_ANSWER_BYTES - 1);
        send(&mut conn, &keys, token(CH, "l", &big, false)).await;
        send(&mut conn, &keys, token(CH, "l", "z", false)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(opened.answers[0].text.len(), MAX_ANSWER_BYTES, "at the bound: kept");
        send(&mut conn, &keys, token(CH, "l", "!", false)).await;
        send(&mut conn, &keys, token(CH, "l", "?", false)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened), [("l", "", 1, 4, false, true)]);
        assert!(!exists(&mut conn, &answer_key(&keys, CH, "l")).await, "its text went");
        send(&mut conn, &keys, token(CH, "l", "", true)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened), [("l", "", 1, 5, true, true)]);
        // A text lost on its own (expired) is not continued as if whole.
        send(&mut conn, &keys, token(CH, "m", "abc", false)).await;
        redis::cmd("DEL").arg(answer_key(&keys, CH, "m")).query_async::<i64>(&mut conn).await.unwrap();
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened)[1], ("m", "", 6, 6, false, true));
        send(&mut conn, &keys, token(CH, "m", "d", false)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened)[1], ("m", "", 6, 7, false, true));
    }

    #[actix::test]
    async fn past_the_most_answers_the_oldest_goes() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        for i in 0..MAX_ANSWERS + 2 {
            send(&mut conn, &keys, token(CH, &format!("s{i}"), &format!("t{i}"), false)).await;
        }
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        let ids: Vec<&str> = opened.answers.iter().map(|a| a.stream_id.as_str()).collect();
        let expected: Vec<String> = (2..MAX_ANSWERS + 2).map(|i| format!("s{i}")).collect();
        assert_eq!(ids, expected);
        assert!(opened.answers.iter().all(|a| a.text == format!("t{}", &a.stream_id[1..])));
        for gone in ["s0", "s1"] {
            assert!(!exists(&mut conn, &answer_key(&keys, CH, gone)).await, "{gone}'s text went with it");
        }
        let hlen: usize = redis::cmd("HLEN").arg(answers_key(&keys, CH)).query_async(&mut conn).await.unwrap();
        assert_eq!(hlen, MAX_ANSWERS);
    }

    #[actix::test]
    async fn answers_go_when_history_starts_again_or_changes_epoch() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        send(&mut conn, &keys, token(CH, "s1", "old", false)).await;
        // The meta lost: history starts again, at 1, without the answers.
        redis::cmd("DEL").arg(keys.meta(CH)).query_async::<i64>(&mut conn).await.unwrap();
        assert_eq!(send(&mut conn, &keys, frame(1)).await, 1);
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!((opened.top, opened.answers.len()), (1, 0));
        assert!(!exists(&mut conn, &answers_key(&keys, CH)).await);
        assert!(!exists(&mut conn, &answer_key(&keys, CH, "s1")).await);
        // A token that starts history again starts its answer there.
        send(&mut conn, &keys, token(CH, "s1", "x", false)).await;
        redis::cmd("DEL").arg(keys.meta(CH)).query_async::<i64>(&mut conn).await.unwrap();
        assert_eq!(send(&mut conn, &keys, token(CH, "s1", "y", false)).await, 1);
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(summary(&opened), [("s1", "y", 1, 1, false, false)]);
        // A new epoch: the offsets go on, the answers go.
        bump_epoch(&mut conn, &keys, CH, "bumped").await.unwrap();
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!((opened.top, opened.epoch.as_str(), opened.answers.len()), (1, "bumped", 0));
        assert!(!exists(&mut conn, &answer_key(&keys, CH, "s1")).await);
        // A channel opened without a meta: answers left over go too.
        send(&mut conn, &keys, token(CH, "s2", "z", false)).await;
        redis::cmd("DEL").arg(keys.meta(CH)).query_async::<i64>(&mut conn).await.unwrap();
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!((opened.top, opened.answers.len()), (0, 0));
        assert!(!exists(&mut conn, &answer_key(&keys, CH, "s2")).await);
    }

    #[actix::test]
    async fn a_stream_id_cannot_reach_beyond_its_channel() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let mut conn = redis.connection().await;
        const OTHER: &str = "conversation:c2";
        send_to(&mut conn, &keys, OTHER, token(OTHER, "s", "theirs", false)).await;
        let long = "x".repeat(MAX_STREAM_ID_BYTES);
        let hostile = [
            "}",
            "{conversation:c2}",
            "s}:{conversation:c2}:",
            "../../nova:meta:{conversation:c2}",
            "a\nb\0c",
            "é*?[",
            "1,2,0,0,0,3,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            long.as_str(),
        ];
        for (i, id) in hostile.iter().enumerate() {
            send(&mut conn, &keys, token(CH, id, &format!("<{i}>"), false)).await;
        }
        let too_long = "x".repeat(MAX_STREAM_ID_BYTES + 1);
        send(&mut conn, &keys, token(CH, &too_long, "not kept", false)).await;
        let opened = open(&mut conn, &keys, CH, KEEP).await.unwrap();
        assert_eq!(opened.answers.len(), hostile.len());
        for (i, id) in hostile.iter().enumerate() {
            let a = &opened.answers[i];
            assert_eq!((a.stream_id.as_str(), a.text.clone()), (*id, format!("<{i}>")));
        }
        // Every key is the channel's (its hash tag) or the other's, as before.
        let all: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            key[open + 1..close].to_owned()
        };
        for key in &all {
            assert!(tag(key) == CH || tag(key) == OTHER, "{key}");
            if let Some(rest) = key.strip_prefix(&answer_base(&keys, CH)) {
                assert!(rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
            }
        }
        let texts = all.iter().filter(|k| k.starts_with(&answer_base(&keys, CH))).count();
        assert_eq!(texts, hostile.len());
        let theirs = open(&mut conn, &keys, OTHER, KEEP).await.unwrap();
        assert_eq!(summary(&theirs), [("s", "theirs", 1, 1, false, false)]);
        let mut other_keys: Vec<&String> = all.iter().filter(|k| tag(k) == OTHER).collect();
        other_keys.sort();
        let mut expected =
            [keys.history(OTHER), keys.meta(OTHER), answers_key(&keys, OTHER), answer_key(&keys, OTHER, "s")];
        expected.sort();
        assert_eq!(other_keys, expected.iter().collect::<Vec<_>>());
    }

    #[actix::test]
    async fn answers_are_read_with_the_position_they_belong_to() {
        let redis = RedisServer::start();
        let keys = Keys::new("nova:");
        let (mut writer, mut reader) = (redis.connection().await, redis.connection().await);
        const N: u64 = 300;
        let write = {
            let keys = keys.clone();
            async move {
                for i in 1..=N {
                    send(&mut writer, &keys, token(CH, "s1", &format!("t{i},"), false)).await;
                }
            }
        };
        let read = async {
            let mut reads = 0;
            loop {
                let opened = open(&mut reader, &keys, CH, KEEP).await.unwrap();
                reads += 1;
                let text: String = (1..=opened.top).map(|i| format!("t{i},")).collect();
                match summary(&opened).as_slice() {
                    [] => assert_eq!(opened.top, 0),
                    [(id, got, first, last, false, false)] => {
                        assert_eq!((*id, *first, *last), ("s1", 1, opened.top));
                        assert_eq!(*got, text);
                    }
                    other => panic!("{other:?}"),
                }
                if opened.top == N {
                    return reads;
                }
                tokio::task::yield_now().await;
            }
        };
        let ((), reads) = futures_util::future::join(write, read).await;
        assert!(reads > 1);
    }

    #[test]
    fn answers_read_back_are_checked() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let entry = |e: String| Value::BulkString(e.into_bytes());
        let key = "0a".repeat(16);
        let now = 1_000_000;
        let entries = vec![
            bulk(b"s1"),
            entry(format!("2,4,0,0,0,3,{key}")),
            bulk(b"abc"),
            // Ended a second ago.
            bulk(b"s2"),
            entry(format!("1,3,1,999000,0,2,{key}")),
            bulk(b"hi"),
            // Ended KEEP_ENDED ago: left out.
            bulk(b"s3"),
            entry(format!("1,1,1,{},0,0,{key}", now - 30_000)),
            bulk(b""),
            // A text not the length its entry says, or not UTF-8: too long.
            bulk(b"s4"),
            entry(format!("3,3,0,0,0,5,{key}")),
            bulk(b"abc"),
            bulk(b"s5"),
            entry(format!("4,4,0,0,0,2,{key}")),
            bulk(b"\xff\xfe"),
            // Not understood: left out.
            bulk(b"b1"),
            entry(format!("3,9,0,0,0,0,{key}")),
            bulk(b""),
            bulk(b"b2"),
            entry(format!("4,3,0,0,0,0,{key}")),
            bulk(b""),
            bulk(b"b3"),
            entry("1,1,0,0,0,0,zz".to_owned()),
            bulk(b""),
            bulk(b"b4"),
            entry(format!("1,1,0,0,0,0,{key},x")),
            bulk(b""),
            bulk(b"b5"),
            entry(format!("-1,1,0,0,0,0,{key}")),
            bulk(b""),
            bulk(b"b6"),
            entry(format!("1,1,2,0,0,0,{key}")),
            bulk(b""),
            bulk(b"\xff"),
            entry(format!("1,1,0,0,0,0,{key}")),
            bulk(b""),
            Value::Int(3),
            entry(format!("1,1,0,0,0,0,{key}")),
            bulk(b""),
            // A stray end.
            bulk(b"s9"),
        ];
        let answers = stored_answers(8, now, entries);
        let got: Vec<_> =
            answers.iter().map(|a| (a.stream_id.as_str(), a.text.as_str(), a.first, a.last, a.too_long)).collect();
        assert_eq!(
            got,
            [("s2", "hi", 1, 3, false), ("s1", "abc", 2, 4, false), ("s4", "", 3, 3, true), ("s5", "", 4, 4, true)]
        );
        assert_eq!(answers[0].ended_ago, Some(Duration::from_secs(1)));
        assert!(answers[0].is_final && !answers[1].is_final && answers[1].ended_ago.is_none());
        // More than the scripts keep: the newest.
        let many = (1..=40u64)
            .flat_map(|i| [bulk(format!("s{i}").as_bytes()), entry(format!("{i},{i},0,0,0,1,{key}")), bulk(b"x")])
            .collect();
        let answers = stored_answers(40, now, many);
        assert_eq!(answers.len(), MAX_ANSWERS);
        assert_eq!(answers[0].first, 40 - MAX_ANSWERS as u64 + 1);
    }
}
