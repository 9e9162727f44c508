//! Rate limits per user: one over all of a user's requests on this node,
//! whichever of its connections they come from, and one per request type
//! (`chat.message`, `agent.invoke`, …), also per user.
//!
//! They come on top of the per-connection token bucket of `session.rs`,
//! which every frame passes first: a request is checked here only once it
//! has passed that bucket and parsed, so malformed frames never count. The
//! user's limit is checked first; a request it admits is then checked
//! against its type's limit, if the type has one. A request refused by its
//! type's limit has still counted toward the user's limit (it reached the
//! server and was answered), as a refused frame counts toward the
//! connection's bucket.
//!
//! `connection.init` and `connection.heartbeat` are exempt from both:
//! `connection.init` after authentication is only answered with an error,
//! and a heartbeat is the keep-alive a client must be able to send while it
//! waits out a refusal. It costs one small reply, and the per-connection
//! bucket still bounds it.
//!
//! The arithmetic is governor's GCRA, one keyed limiter per limit, keyed by
//! user id. **Memory**: nothing is held for a connection, and nothing for a
//! user until its first counted request; each limit a user has used then
//! holds one entry (the user id, shared with the connection's identity, and
//! one 64-bit word) until one interval after the limit has refilled, when
//! the entry no longer differs from a fresh one. [`Quotas::prune`] drops such entries; the
//! server runs it every [`PRUNE_EVERY`] off the threads that serve clients.
//! A pass visits every entry once, holding one shard of a limiter's map at
//! a time, so it costs time in proportion to the users active within the
//! longest refill time (burst × interval, a minute for `10/min`) and never
//! stops the whole node.
//!
//! Limits are per node: with several nodes, a user with connections on two
//! of them has each node's allowance.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::RateLimiter;
use serde::Serialize;

use crate::codes::ErrorCode;
use crate::metrics::Metrics;
use crate::protocol::{self, kind, Frame};

/// How often the server drops the state of users whose limits have refilled.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Request types no limit of this module applies to.
pub const EXEMPT: [&str; 2] = [kind::INIT, kind::HEARTBEAT];

/// The default limit per user: two browser tabs each at the default
/// per-connection limit (50 frames/s, bursts of 100) still fit, a third
/// at full speed does not.
pub const DEFAULT_USER_RATE: Rate = Rate { count: nz(100), per: Per::Second, burst: nz(200) };

/// The default limits per request type, per user.
pub const DEFAULT_EVENT_RATES: [(&str, Rate); 4] = [
    ("agent.invoke", Rate::new_const(10, Per::Minute)),
    ("chat.message", Rate::new_const(5, Per::Second)),
    ("chat.typing", Rate::new_const(2, Per::Second)),
    ("file.upload.request", Rate::new_const(10, Per::Minute)),
];

/// `n` as a `NonZeroU32`, 1 for 0: for constants.
const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// The period a rate counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// `/s`.
    Second,
    /// `/min`.
    Minute,
    /// `/h`.
    Hour,
}

impl Per {
    /// How it is written in a rate.
    pub fn unit(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
            Per::Hour => "h",
        }
    }

    /// Its length.
    pub fn duration(self) -> Duration {
        match self {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
            Per::Hour => Duration::from_secs(3600),
        }
    }
}

/// A rate: `count` requests per period, sustained, and at most `burst` at
/// once. Written `5/s`, `10/min` or `100/h`, with an optional ` burst N`
/// (without it the burst is the count: a whole period's requests may come
/// at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Per,
    burst: NonZeroU32,
}

impl Rate {
    /// `count` per period in bursts of `burst`; both at least 1.
    pub fn new(count: u32, per: Per, burst: u32) -> Result<Rate, String> {
        let count = NonZeroU32::new(count).ok_or("the count must be at least 1")?;
        let burst = NonZeroU32::new(burst).ok_or("the burst must be at least 1")?;
        Ok(Rate { count, per, burst })
    }

    /// `count` per period, in bursts of `count`, for constants (0 is 1).
    const fn new_const(count: u32, per: Per) -> Rate {
        Rate { count: nz(count), per, burst: nz(count) }
    }

    /// Requests per period.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period.
    pub fn per(&self) -> Per {
        self.per
    }

    /// Requests at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// The rate without its burst: `5/s`.
    pub fn rate_text(&self) -> String {
        format!("{}/{}", self.count, self.per.unit())
    }

    fn quota(&self) -> governor::Quota {
        let quota = match self.per {
            Per::Second => governor::Quota::per_second(self.count),
            Per::Minute => governor::Quota::per_minute(self.count),
            Per::Hour => governor::Quota::per_hour(self.count),
        };
        quota.allow_burst(self.burst)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.unit())?;
        if self.burst != self.count {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let shown: String = text.chars().take(64).filter(|c| !c.is_control()).collect();
        let syntax = || {
            format!("'{shown}' is not a rate: write COUNT/UNIT (5/s, 10/min, 100/h), optionally followed by 'burst N'")
        };
        let mut words = text.split_whitespace();
        let (count, unit) = words.next().and_then(|w| w.split_once('/')).ok_or_else(syntax)?;
        let count: u32 = count.parse().map_err(|_| format!("'{shown}': the count must be a whole number"))?;
        let per = match unit {
            "s" | "sec" | "second" => Per::Second,
            "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            _ => return Err(format!("'{shown}': the unit must be s, min or h")),
        };
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => count,
            (Some("burst"), Some(n), None) => {
                n.parse().map_err(|_| format!("'{shown}': the burst must be a whole number"))?
            }
            _ => return Err(syntax()),
        };
        Rate::new(count, per, burst).map_err(|why| format!("'{shown}': {why}"))
    }
}

/// The limits of a node, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// The limit over all of a user's requests; `None`: none.
    pub user: Option<Rate>,
    /// The limit per request type (its wire `type`), per user.
    pub events: BTreeMap<String, Rate>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            user: Some(DEFAULT_USER_RATE),
            events: DEFAULT_EVENT_RATES.iter().map(|(k, r)| ((*k).to_owned(), *r)).collect(),
        }
    }
}

/// Checks a request type that is to have a limit of its own: a request type
/// as the protocol writes it (1–64 letters, digits, `_ . -`), and not one of
/// [`EXEMPT`].
pub fn check_limited_type(kind: &str) -> Result<(), String> {
    if kind.is_empty() || kind.len() > 64 || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        let shown: String = kind.chars().take(64).filter(|c| !c.is_control()).collect();
        return Err(format!("'{shown}' is not a request type (1 to 64 letters, digits, '_', '.' or '-')"));
    }
    if EXEMPT.contains(&kind) {
        return Err(format!("'{kind}' is exempt from the limits per type"));
    }
    Ok(())
}

type Keyed<C> = RateLimiter<Arc<str>, DashMapStateStore<Arc<str>>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One limit: its rate and the state of each user that used it lately.
struct Limit<C: Clock> {
    rate: Rate,
    limiter: Keyed<C>,
    refused: AtomicU64,
    /// The most entries seen at a prune since the map was last shrunk.
    peak: AtomicUsize,
}

impl<C: Clock> Limit<C> {
    fn new(rate: Rate, clock: C) -> Self {
        Limit {
            rate,
            limiter: RateLimiter::dashmap_with_clock(rate.quota(), clock),
            refused: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Takes one cell for `user`, or says how long until one is free.
    fn take(&self, user: &Arc<str>) -> Result<(), Duration> {
        self.limiter.check_key(user).map_err(|not_until| {
            self.refused.fetch_add(1, Relaxed);
            not_until.wait_time_from(self.limiter.clock().now())
        })
    }

    fn prune(&self) -> usize {
        self.limiter.retain_recent();
        let len = self.limiter.len();
        // Shrinking after every pass would make the next new user's insert
        // regrow the map on a request path: only once it is mostly empty.
        let peak = self.peak.fetch_max(len, Relaxed).max(len);
        if len < peak / 4 {
            self.limiter.shrink_to_fit();
            self.peak.store(len, Relaxed);
        }
        len
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The user's limit over all of its requests on this node.
    User,
    /// The user's limit for this request type.
    Event(&'a str),
}

/// A refused request: which limit, and when the same request would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// The limit that refused it.
    pub scope: Scope<'a>,
    /// That limit's rate.
    pub rate: Rate,
    /// How long until the limit admits one more request.
    pub retry_after: Duration,
}

#[derive(Serialize)]
struct LimitData<'a> {
    scope: &'static str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    rate: String,
    burst: u32,
}

#[derive(Serialize)]
struct RefusalData<'a> {
    retry_after_ms: u64,
    limit: LimitData<'a>,
}

impl Refusal<'_> {
    /// [`Self::retry_after`] in whole milliseconds, rounded up (so waiting
    /// that long is always enough), at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        let ms = self.retry_after.as_nanos().div_ceil(1_000_000);
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }

    /// What the `error` frame says.
    pub fn message(&self) -> String {
        let (count, unit, burst) = (self.rate.count(), self.rate.per.unit(), self.rate.burst());
        let retry = self.retry_after_ms();
        match self.scope {
            Scope::User => format!(
                "rate limit exceeded: at most {count} requests/{unit} (bursts of {burst}) per user, over all of \
                 the user's connections; retry in {retry} ms"
            ),
            Scope::Event(kind) => format!(
                "rate limit exceeded for '{kind}': at most {count}/{unit} (bursts of {burst}) per user; retry in \
                 {retry} ms"
            ),
        }
    }

    /// The `error` frame answering request `reply_to`: code 4004, the
    /// message, `retry_after_ms`, and `limit` naming the limit.
    pub fn frame(&self, reply_to: &str) -> Frame {
        let (scope, kind) = match self.scope {
            Scope::User => ("user", None),
            Scope::Event(kind) => ("event", Some(kind)),
        };
        let data = RefusalData {
            retry_after_ms: self.retry_after_ms(),
            limit: LimitData { scope, kind, rate: self.rate.rate_text(), burst: self.rate.burst() },
        };
        protocol::error_frame_with(ErrorCode::RateLimited, &self.message(), None, Some(reply_to), &data)
    }
}

/// The limits of one node, shared by all its sessions (see the module's
/// documentation).
pub struct Quotas<C: Clock = MonotonicClock> {
    user: Option<Limit<C>>,
    events: HashMap<Box<str>, Limit<C>>,
    metrics: Arc<Metrics>,
}

impl Quotas {
    /// The limits of `config`; refusals are counted in `metrics`.
    pub fn new(config: &QuotaConfig, metrics: Arc<Metrics>) -> Self {
        Quotas::with_clock(config, metrics, MonotonicClock)
    }
}

impl<C: Clock + Clone> Quotas<C> {
    /// The limits of `config` on `clock` (tests use a clock of their own).
    pub fn with_clock(config: &QuotaConfig, metrics: Arc<Metrics>, clock: C) -> Self {
        Quotas {
            user: config.user.map(|rate| Limit::new(rate, clock.clone())),
            events: config
                .events
                .iter()
                .filter(|(kind, _)| !EXEMPT.contains(&kind.as_str()))
                .map(|(kind, rate)| (kind.as_str().into(), Limit::new(*rate, clock.clone())))
                .collect(),
            metrics,
        }
    }

    /// Counts a request of type `request` from `user` against the user's
    /// limit and then its type's, or says which refused it. Requests of
    /// [`EXEMPT`] types pass without counting.
    pub fn check(&self, user: &Arc<str>, request: &str) -> Result<(), Refusal<'_>> {
        if EXEMPT.contains(&request) {
            return Ok(());
        }
        if let Some(limit) = &self.user {
            if let Err(retry_after) = limit.take(user) {
                self.metrics.user_rate_limited.fetch_add(1, Relaxed);
                return Err(Refusal { scope: Scope::User, rate: limit.rate, retry_after });
            }
        }
        if let Some((kind, limit)) = self.events.get_key_value(request) {
            if let Err(retry_after) = limit.take(user) {
                self.metrics.event_rate_limited.fetch_add(1, Relaxed);
                return Err(Refusal { scope: Scope::Event(kind), rate: limit.rate, retry_after });
            }
        }
        Ok(())
    }

    fn limits(&self) -> impl Iterator<Item = &Limit<C>> {
        self.user.iter().chain(self.events.values())
    }

    /// Drops the state of users whose limits have refilled (a user that
    /// comes back starts afresh, exactly as if it had been kept); returns
    /// the entries kept. Visits every entry: run it every [`PRUNE_EVERY`],
    /// off the threads that serve clients.
    pub fn prune(&self) -> usize {
        self.limits().map(Limit::prune).sum()
    }

    /// Entries held now, over all limits (one per user per limit it used
    /// lately).
    pub fn tracked(&self) -> usize {
        self.limits().map(|l| l.limiter.len()).sum()
    }

    /// Requests refused by each type's limit since start.
    pub fn refused_by_type(&self) -> BTreeMap<&str, u64> {
        self.events.iter().map(|(kind, limit)| (&**kind, limit.refused.load(Relaxed))).collect()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;
    use serde_json::Value;

    use super::*;

    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    fn quotas(user: Option<&str>, events: &[(&str, &str)]) -> (Quotas<FakeRelativeClock>, FakeRelativeClock) {
        let config = QuotaConfig {
            user: user.map(rate),
            events: events.iter().map(|(k, r)| ((*k).to_owned(), rate(r))).collect(),
        };
        let clock = FakeRelativeClock::default();
        (Quotas::with_clock(&config, Arc::new(Metrics::default()), clock.clone()), clock)
    }

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(rate("5/s"), Rate::new(5, Per::Second, 5).unwrap());
        assert_eq!(rate("10/min"), Rate::new(10, Per::Minute, 10).unwrap());
        assert_eq!(rate(" 100/h burst 3 "), Rate::new(100, Per::Hour, 3).unwrap());
        assert_eq!(rate("2/second"), rate("2/sec"));
        assert_eq!(rate("2/minute"), rate("2/min"));
        assert_eq!(rate("2/hour"), rate("2/h"));
        assert_eq!(rate("5/s").to_string(), "5/s");
        assert_eq!(rate("5/s burst 10").to_string(), "5/s burst 10");
        assert_eq!(rate("5/s burst 5").to_string(), "5/s", "a burst equal to the count is the default");
        assert_eq!(rate("5/s burst 10").rate_text(), "5/s");
        for (_, r) in DEFAULT_EVENT_RATES {
            assert_eq!(rate(&r.to_string()), r, "{r} reads back");
        }
    }

    #[test]
    fn bad_rates_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "not a rate"),
            ("5", "not a rate"),
            ("5 per second", "not a rate"),
            ("x/s", "count"),
            ("-1/s", "count"),
            ("0/s", "at least 1"),
            ("5/x", "unit"),
            ("5/ms", "unit"),
            ("5/s burst", "not a rate"),
            ("5/s burst x", "burst"),
            ("5/s burst 0", "at least 1"),
            ("5/s burst 2 more", "not a rate"),
            ("5/s bursts 2", "not a rate"),
        ] {
            let err = text.parse::<Rate>().unwrap_err();
            assert!(err.contains(why), "'{text}': {err}");
        }
    }

    #[test]
    fn limited_types_are_request_types_and_not_exempt() {
        assert!(check_limited_type("agent.invoke").is_ok());
        assert!(check_limited_type("file.upload.request").is_ok());
        for bad in ["", "a b", "x=y", &"x".repeat(65), "connection.heartbeat", "connection.init"] {
            assert!(check_limited_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let d = QuotaConfig::default();
        assert_eq!(d.user, Some(rate("100/s burst 200")));
        let events: Vec<(String, String)> = d.events.iter().map(|(k, r)| (k.clone(), r.to_string())).collect();
        let expected = [
            ("agent.invoke", "10/min"),
            ("chat.message", "5/s"),
            ("chat.typing", "2/s"),
            ("file.upload.request", "10/min"),
        ];
        assert_eq!(events, expected.map(|(k, r)| (k.to_owned(), r.to_owned())));
    }

    #[test]
    fn the_user_limit_spans_every_request_type_and_each_user_has_its_own() {
        let (q, clock) = quotas(Some("2/s burst 3"), &[]);
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(q.check(&alice, "channel.subscribe").is_ok());
        assert!(q.check(&alice, "chat.message").is_ok());
        assert!(q.check(&alice, "channel.unsubscribe").is_ok());
        let refusal = q.check(&alice, "chat.typing").unwrap_err();
        assert_eq!(refusal.scope, Scope::User);
        assert_eq!(refusal.retry_after, Duration::from_millis(500), "one cell at 2/s");
        assert!(q.check(&bob, "chat.typing").is_ok(), "another user is not affected");
        clock.advance(Duration::from_millis(499));
        assert!(q.check(&alice, "chat.typing").is_err());
        clock.advance(Duration::from_millis(1));
        assert!(q.check(&alice, "chat.typing").is_ok(), "passes once retry_after has passed");
        assert_eq!(q.metrics.user_rate_limited.load(Relaxed), 2);
    }

    #[test]
    fn exempt_types_neither_count_nor_make_state() {
        let (q, _) = quotas(Some("1/min"), &[("chat.message", "1/min")]);
        let alice = user("alice");
        for _ in 0..10 {
            assert!(q.check(&alice, kind::HEARTBEAT).is_ok());
            assert!(q.check(&alice, kind::INIT).is_ok());
        }
        assert_eq!(q.tracked(), 0, "no state before a counted request");
        assert!(q.check(&alice, "chat.message").is_ok());
        assert_eq!(q.tracked(), 2, "one entry in the user's limit, one in chat.message's");
    }

    #[test]
    fn exempt_types_cannot_be_given_a_limit() {
        let (q, _) = quotas(None, &[(kind::HEARTBEAT, "1/min")]);
        let alice = user("alice");
        assert!(q.check(&alice, kind::HEARTBEAT).is_ok());
        assert!(q.check(&alice, kind::HEARTBEAT).is_ok());
    }

    #[test]
    fn each_type_has_its_own_limit_per_user() {
        let (q, clock) = quotas(None, &[("chat.message", "5/s"), ("agent.invoke", "10/min")]);
        let (alice, bob) = (user("alice"), user("bob"));
        for _ in 0..5 {
            assert!(q.check(&alice, "chat.message").is_ok());
        }
        let refusal = q.check(&alice, "chat.message").unwrap_err();
        assert_eq!(refusal.scope, Scope::Event("chat.message"));
        assert_eq!(refusal.retry_after, Duration::from_millis(200));
        assert!(q.check(&alice, "chat.typing").is_ok(), "a type without a limit");
        assert!(q.check(&bob, "chat.message").is_ok());
        for _ in 0..10 {
            assert!(q.check(&alice, "agent.invoke").is_ok());
        }
        let refusal = q.check(&alice, "agent.invoke").unwrap_err();
        assert_eq!(refusal.retry_after, Duration::from_secs(6), "10/min: one every 6 s");
        clock.advance(Duration::from_secs(6));
        assert!(q.check(&alice, "agent.invoke").is_ok());
        assert!(q.check(&alice, "agent.invoke").is_err());
        assert_eq!(q.refused_by_type(), BTreeMap::from([("agent.invoke", 2), ("chat.message", 1)]));
        assert_eq!(q.metrics.event_rate_limited.load(Relaxed), 3);
    }

    #[test]
    fn the_user_limit_is_checked_first_and_a_type_refusal_still_counts_toward_it() {
        let (q, _) = quotas(Some("3/min"), &[("chat.message", "1/min")]);
        let alice = user("alice");
        assert!(q.check(&alice, "chat.message").is_ok());
        assert_eq!(q.check(&alice, "chat.message").unwrap_err().scope, Scope::Event("chat.message"));
        assert!(q.check(&alice, "channel.subscribe").is_ok());
        assert_eq!(q.check(&alice, "channel.subscribe").unwrap_err().scope, Scope::User);
        assert_eq!(q.check(&alice, "chat.message").unwrap_err().scope, Scope::User);
    }

    #[test]
    fn pruning_drops_users_whose_limits_have_refilled_and_keeps_the_others() {
        let (q, clock) = quotas(Some("10/s"), &[("chat.message", "1/min")]);
        for i in 0..100 {
            assert!(q.check(&user(&format!("u{i}")), "channel.subscribe").is_ok());
        }
        assert!(q.check(&user("talker"), "chat.message").is_ok());
        assert_eq!(q.tracked(), 102);
        clock.advance(Duration::from_secs(1));
        assert_eq!(q.prune(), 1, "only chat.message's entry has not refilled");
        assert!(q.check(&user("talker"), "chat.message").is_err(), "kept state still limits");
        // An entry goes one interval after its limit has refilled.
        clock.advance(Duration::from_secs(120));
        assert_eq!(q.prune(), 0);
        assert!(q.check(&user("talker"), "chat.message").is_ok(), "a pruned user starts afresh");
    }

    #[test]
    fn a_pruned_user_is_limited_exactly_as_a_kept_one() {
        let (q, clock) = quotas(Some("2/s burst 2"), &[]);
        let alice = user("alice");
        assert!(q.check(&alice, "x").is_ok());
        assert!(q.check(&alice, "x").is_ok());
        clock.advance(Duration::from_secs(5));
        q.prune();
        assert_eq!(q.tracked(), 0);
        assert!(q.check(&alice, "x").is_ok());
        assert!(q.check(&alice, "x").is_ok());
        assert!(q.check(&alice, "x").is_err(), "the burst, no more");
    }

    #[test]
    fn the_refusal_frame_says_which_limit_and_when_to_retry() {
        let (q, _) = quotas(None, &[("chat.message", "5/s burst 1")]);
        let alice = user("alice");
        assert!(q.check(&alice, "chat.message").is_ok());
        let frame = q.check(&alice, "chat.message").unwrap_err().frame("r1");
        let v: Value = serde_json::from_str(frame.text()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["reply_to"], "r1");
        assert_eq!(v["data"]["code"], 4004);
        assert_eq!(v["data"]["retry_after_ms"], 200);
        assert_eq!(
            v["data"]["limit"],
            serde_json::json!({"scope": "event", "type": "chat.message", "rate": "5/s", "burst": 1})
        );
        let message = v["data"]["message"].as_str().unwrap();
        assert!(message.contains("'chat.message'") && message.contains("200 ms"), "{message}");

        let (q, _) = quotas(Some("1/min"), &[]);
        assert!(q.check(&alice, "chat.typing").is_ok());
        let frame = q.check(&alice, "chat.typing").unwrap_err().frame("r2");
        let v: Value = serde_json::from_str(frame.text()).unwrap();
        assert_eq!(v["data"]["limit"], serde_json::json!({"scope": "user", "rate": "1/min", "burst": 1}));
        assert_eq!(v["data"]["retry_after_ms"], 60_000);
        assert!(v["data"]["message"].as_str().unwrap().contains("per user"), "{v}");
    }

    #[test]
    fn retry_after_rounds_up_to_a_whole_millisecond() {
        let refusal =
            |nanos| Refusal { scope: Scope::User, rate: rate("1/s"), retry_after: Duration::from_nanos(nanos) };
        assert_eq!(refusal(1).retry_after_ms(), 1);
        assert_eq!(refusal(0).retry_after_ms(), 1);
        assert_eq!(refusal(1_000_000).retry_after_ms(), 1);
        assert_eq!(refusal(1_000_001).retry_after_ms(), 2);
    }

    #[test]
    fn no_limits_means_no_state() {
        let (q, _) = quotas(None, &[]);
        let alice = user("alice");
        for _ in 0..1000 {
            assert!(q.check(&alice, "chat.message").is_ok());
        }
        assert_eq!(q.tracked(), 0);
    }
}
