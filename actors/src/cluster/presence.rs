//! Presence across nodes, kept in Redis by Lua scripts so that every change
//! is atomic however many nodes make it at once.
//!
//! The keys (under the deployment's prefix):
//!
//! - `presence:{channel}`, a hash: user → the number of nodes where the user
//!   has a connection in the channel. A user is present while the count is
//!   above zero; `HKEYS` lists the channel's users.
//! - `node:{id}:presence`, a set: the `channel\nuser` pairs node `id` has
//!   counted. It makes every change idempotent (a node counts a pair once)
//!   and tells a survivor what to take back when the node dies.
//! - `nodes`, a sorted set: node id → when its heartbeat expires, in
//!   milliseconds of the Redis clock (so node clocks do not matter).
//!
//! - `status:{channel}`, a hash: user → the status they set on a team
//!   channel (`{"status","text"?}`), written by the node that took it and
//!   deleted here with the user's presence, so a status lasts exactly as
//!   long as its user is present anywhere.
//! - `presence_seq:{channel}`, a hash: user → how many joins and leaves of
//!   theirs have been decided. Each announcement carries its number, so a
//!   node that receives two about one user out of order (each node
//!   publishes through its own queue) keeps the later one.
//!
//! Each script returns the pairs whose count went from 0 to 1 (`+pair`: the
//! user joined the channel) or to 0 (`-pair`: the user left), with their
//! sequence numbers, which the node then announces to every node.

use std::sync::Arc;

use redis::Script;

use crate::cluster::wire::PresenceNote;

/// The member of a node's presence set for `user` in `channel`. Channel
/// names cannot hold a newline, so the first one splits the pair.
pub fn member(channel: &str, user: &str) -> String {
    format!("{channel}\n{user}")
}

/// A change a script reported: the channel, and who joined or left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The channel.
    pub channel: Arc<str>,
    /// The user, the direction and the change's sequence number.
    pub note: PresenceNote,
}

impl Transition {
    /// A change this node decided on its own (no sequence number).
    pub fn local(channel: Arc<str>, user: Arc<str>, joined: bool) -> Transition {
        Transition { channel, note: PresenceNote { user, joined, seq: 0 } }
    }
}

/// Reads a script's answer: `+<seq> channel\nuser` (joined) or `-<seq> …`
/// (left).
pub fn transitions(answer: Vec<String>) -> Vec<Transition> {
    answer
        .iter()
        .filter_map(|t| {
            let joined = t.starts_with('+');
            let (seq, member) = t.get(1..)?.split_once(' ')?;
            let (channel, user) = member.split_once('\n')?;
            let note = PresenceNote { user: Arc::from(user), joined, seq: seq.parse().ok()? };
            Some(Transition { channel: Arc::from(channel), note })
        })
        .collect()
}

/// Shared by the scripts: count a pair in or out for the node whose set is
/// `set`, recording transitions in `out`.
const PRELUDE: &str = r#"
local function count(set, prefix, member, add, out)
  local nl = string.find(member, "\n", 1, true)
  if not nl then return end
  local channel = string.sub(member, 1, nl - 1)
  local hash = prefix .. "presence:" .. channel
  local user = string.sub(member, nl + 1)
  local op = nil
  if add then
    if redis.call("SADD", set, member) == 1 and redis.call("HINCRBY", hash, user, 1) == 1 then op = "+" end
  elseif redis.call("SREM", set, member) == 1 then
    if redis.call("HINCRBY", hash, user, -1) <= 0 then
      redis.call("HDEL", hash, user)
      redis.call("HDEL", prefix .. "status:" .. channel, user)
      op = "-"
    end
  end
  if op then
    local seq = redis.call("HINCRBY", prefix .. "presence_seq:" .. channel, user, 1)
    table.insert(out, op .. seq .. " " .. member)
  end
end
local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Applies changes. `KEYS[1]` the node's set; `ARGV[1]` the prefix; then
/// `+pair` or `-pair` for each change.
pub fn apply() -> Script {
    Script::new(&format!(
        "{PRELUDE}
local out = {{}}
for i = 2, #ARGV do
  count(KEYS[1], ARGV[1], string.sub(ARGV[i], 2), string.sub(ARGV[i], 1, 1) == \"+\", out)
end
return out"
    ))
}

/// Makes the node's set exactly the given pairs (after a reconnect, or
/// empty on shutdown). `KEYS[1]` the node's set; `ARGV[1]` the prefix; then
/// every pair the node has.
pub fn sync() -> Script {
    Script::new(&format!(
        "{PRELUDE}
local out = {{}}
local want = {{}}
for i = 2, #ARGV do want[ARGV[i]] = true end
for _, m in ipairs(redis.call(\"SMEMBERS\", KEYS[1])) do
  if not want[m] then count(KEYS[1], ARGV[1], m, false, out) end
end
for i = 2, #ARGV do count(KEYS[1], ARGV[1], ARGV[i], true, out) end
return out"
    ))
}

/// Refreshes the node's heartbeat. `KEYS[1]` the nodes set; `ARGV[1]` the
/// node id; `ARGV[2]` the TTL in milliseconds. Returns 1 or 0 (whether the
/// node was still registered: 0 means a survivor took its presence back and
/// it must sync again), then the ids of nodes whose heartbeat expired.
pub fn heartbeat() -> Script {
    Script::new(&format!(
        "{PRELUDE}
local now = now_ms()
local was = redis.call(\"ZSCORE\", KEYS[1], ARGV[1])
redis.call(\"ZADD\", KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local out = {{ was and \"1\" or \"0\" }}
for _, n in ipairs(redis.call(\"ZRANGEBYSCORE\", KEYS[1], \"-inf\", \"(\" .. now)) do table.insert(out, n) end
return out"
    ))
}

/// Takes a dead node's presence back, once: the first survivor to run it
/// removes the node; the others (or a node that came back in time) find
/// nothing to do. `KEYS[1]` the nodes set; `KEYS[2]` the dead node's set;
/// `ARGV[1]` the prefix; `ARGV[2]` the dead node's id.
pub fn reap() -> Script {
    Script::new(&format!(
        "{PRELUDE}
local score = redis.call(\"ZSCORE\", KEYS[1], ARGV[2])
if score and tonumber(score) >= now_ms() then return {{}} end
redis.call(\"ZREM\", KEYS[1], ARGV[2])
local out = {{}}
for _, m in ipairs(redis.call(\"SMEMBERS\", KEYS[2])) do count(KEYS[2], ARGV[1], m, false, out) end
redis.call(\"DEL\", KEYS[2])
return out"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_read_from_script_answers() {
        let got = transitions(vec!["+3 team:t1\nalice".into(), "-12 team:t1\nbob:smith".into(), "garbage".into()]);
        let note = |user: &str, joined, seq| PresenceNote { user: Arc::from(user), joined, seq };
        assert_eq!(
            got,
            vec![
                Transition { channel: Arc::from("team:t1"), note: note("alice", true, 3) },
                Transition { channel: Arc::from("team:t1"), note: note("bob:smith", false, 12) },
            ]
        );
    }
}
