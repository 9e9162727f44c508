//! Counters and the publish→write latency histogram behind `GET /ws/metrics`.
//!
//! Everything is an atomic so sessions on every worker thread record without
//! a lock or a message. Rates are sampled once a second by the registry.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Sub-buckets per power of two: 8 gives ±12.5 % precision.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped to 2^36 µs (about 19 hours).
const MAX_EXP: u32 = 36;
const BUCKETS: usize = (SUB + (MAX_EXP as u64 - SUB_BITS as u64 + 1) * SUB) as usize;

/// A lock-free log-linear histogram of microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
    /// Of every value recorded, for Prometheus's `_sum`.
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + (exp - SUB_BITS) as u64 * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`: percentiles err on the high
/// side.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + SUB_BITS as u64;
    let sub = (i - SUB) % SUB;
    let width = 1u64 << (exp - SUB_BITS as u64);
    ((SUB + sub) << (exp - SUB_BITS as u64)) + width - 1
}

impl Histogram {
    /// Records one value.
    pub fn record(&self, micros: u64) {
        self.record_n(micros, 1);
    }

    /// Records `n` occurrences of one value.
    pub fn record_n(&self, micros: u64, n: u64) {
        self.buckets[bucket_of(micros)].fetch_add(n, Relaxed);
        self.max.fetch_max(micros, Relaxed);
        self.sum.fetch_add(micros.saturating_mul(n), Relaxed);
    }

    /// The number of values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The value below which a fraction `q` of the recorded values fall
    /// (upper bound of its bucket), or 0 when empty.
    pub fn percentile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let target = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return upper_bound(i).min(self.max.load(Relaxed));
            }
        }
        self.max.load(Relaxed)
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The sum of the values recorded, µs.
    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// For each bound (µs, ascending), how many values fell at or below it,
    /// as far as the buckets tell (a bucket counts under the first bound
    /// at or above its upper end): a Prometheus histogram's buckets.
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; bounds.len()];
        for (i, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.load(Relaxed);
            if n == 0 {
                continue;
            }
            let top = upper_bound(i);
            if let Some(first) = bounds.iter().position(|b| *b >= top) {
                for slot in &mut out[first..] {
                    *slot += n;
                }
            }
        }
        out
    }
}

struct RateSample {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
    in_per_sec: f64,
    out_per_sec: f64,
    /// `published` at each of the last samples (one a second), oldest
    /// first: events per minute without a timer of its own.
    published: std::collections::VecDeque<u64>,
}

/// Samples kept for the events published over the last minute.
const MINUTE_SAMPLES: usize = 61;

/// Events published over the last minute (or since start, when younger).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Events accepted for publishing in the window.
    pub published: u64,
    /// The window's length, seconds (60 once the node has run a minute).
    pub window_secs: u64,
}

/// A counter per type family, indexed as [`crate::catalog::FAMILY_LABELS`].
#[derive(Default)]
pub struct ByFamily([AtomicU64; crate::catalog::FAMILY_LABELS.len()]);

impl ByFamily {
    /// Counts `n` frames of family `family` (an index from
    /// [`crate::catalog::family_of`]; anything past the table is `other`).
    pub fn add(&self, family: u8, n: u64) {
        let last = self.0.len() - 1;
        self.0[usize::from(family).min(last)].fetch_add(n, Relaxed);
    }

    /// Each family's label and count.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        crate::catalog::FAMILY_LABELS.iter().zip(&self.0).map(|(label, n)| (*label, n.load(Relaxed)))
    }
}

/// Why an authentication failed, as `nova_auth_failures_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// A bad signature, malformed token, unknown key or bad claims.
    Invalid,
    /// A token past its `exp`.
    Expired,
    /// A genuine token the server will not take (lives too long).
    Refused,
    /// Refused unread: the address failed too often.
    Throttled,
    /// No `connection.init` in time.
    Timeout,
    /// A `connection.refresh` that was refused.
    Refresh,
    /// A first frame that was no valid `connection.init` (another request,
    /// one that does not parse, a binary frame, an unsupported protocol
    /// version).
    Protocol,
}

impl AuthFailure {
    /// Every reason, in the order of [`Metrics::auth_failures`].
    pub const ALL: [AuthFailure; 7] = [
        AuthFailure::Invalid,
        AuthFailure::Expired,
        AuthFailure::Refused,
        AuthFailure::Throttled,
        AuthFailure::Timeout,
        AuthFailure::Refresh,
        AuthFailure::Protocol,
    ];

    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::Refused => "refused",
            AuthFailure::Throttled => "throttled",
            AuthFailure::Timeout => "timeout",
            AuthFailure::Refresh => "refresh",
            AuthFailure::Protocol => "protocol",
        }
    }
}

/// The node's counters, shared by every actor.
pub struct Metrics {
    /// Open WebSocket connections, authenticated or not.
    pub sockets: AtomicU64,
    /// Authenticated connections: what `max_connections` bounds.
    pub clients: AtomicU64,
    /// Connections closed for flooding (1008) since start.
    pub flood_closes: AtomicU64,
    /// Authentication attempts refused because their address failed too
    /// often since start.
    pub auth_throttled: AtomicU64,
    /// Requests refused by their user's limit over all its requests since
    /// start (`quota.rs`).
    pub user_rate_limited: AtomicU64,
    /// Requests refused by their user's limit for their type since start.
    pub event_rate_limited: AtomicU64,
    /// Connections that were not yet clients, closed to make room for new
    /// ones since start.
    pub shed_connections: AtomicU64,
    /// Client frames received.
    pub messages_in: AtomicU64,
    /// Client frames received, by the family of their type
    /// ([`crate::catalog::FAMILY_LABELS`]; a frame that does not parse is
    /// `other`).
    pub messages_in_by_family: ByFamily,
    /// Frames written to clients, by family.
    pub messages_out_by_family: ByFamily,
    /// Bytes of the frames written to clients (WebSocket payloads).
    pub bytes_out: AtomicU64,
    /// Failed authentications, by why ([`AuthFailure`]).
    pub auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    /// Events accepted for publishing (REST and client publishes).
    pub published: AtomicU64,
    /// Sessions disconnected for exceeding their outbound budget.
    pub slow_consumers: AtomicU64,
    /// Deliveries skipped because their session was already over budget.
    pub dropped_deliveries: AtomicU64,
    /// Subscriptions that asked to recover missed events since start.
    pub recoveries: AtomicU64,
    /// Of those, the ones that could not (events gone, epoch changed).
    pub recoveries_failed: AtomicU64,
    /// Publish→write latency, µs, per frame (each batch counted at its
    /// oldest frame).
    pub latency: Histogram,
    rates: Mutex<RateSample>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sockets: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            flood_closes: AtomicU64::new(0),
            auth_throttled: AtomicU64::new(0),
            user_rate_limited: AtomicU64::new(0),
            event_rate_limited: AtomicU64::new(0),
            shed_connections: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_in_by_family: ByFamily::default(),
            messages_out_by_family: ByFamily::default(),
            bytes_out: AtomicU64::new(0),
            auth_failures: Default::default(),
            published: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            dropped_deliveries: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            recoveries_failed: AtomicU64::new(0),
            latency: Histogram::default(),
            rates: Mutex::new(RateSample {
                at: Instant::now(),
                messages_in: 0,
                messages_out: 0,
                in_per_sec: 0.0,
                out_per_sec: 0.0,
                // Nothing published at start: the window opens there.
                published: std::collections::VecDeque::from([0]),
            }),
            started: Instant::now(),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LatencySnapshot {
    /// Frames measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// The counters at one moment, as `GET /ws/metrics` shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MetricsSnapshot {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Open WebSocket connections.
    pub sockets: u64,
    /// Authenticated connections.
    pub clients: u64,
    /// Connections closed for flooding (1008) since start.
    pub flood_closes: u64,
    /// Authentication attempts refused for an address that failed too often.
    pub auth_throttled: u64,
    /// Requests refused by the per-user limit since start.
    pub user_rate_limited: u64,
    /// Requests refused by a per-user limit of their type since start.
    pub event_rate_limited: u64,
    /// Not-yet-client connections closed to make room since start.
    pub shed_connections: u64,
    /// Client frames received since start.
    pub messages_in: u64,
    /// Frames written since start.
    pub messages_out: u64,
    /// Client frames per second over the last second.
    pub messages_in_per_sec: f64,
    /// Frames written per second over the last second.
    pub messages_out_per_sec: f64,
    /// Events published since start.
    pub published: u64,
    /// Sessions dropped as slow consumers since start.
    pub dropped_slow_consumers: u64,
    /// Deliveries skipped for sessions already over budget.
    pub dropped_deliveries: u64,
    /// Subscriptions that asked to recover missed events since start.
    pub recoveries: u64,
    /// Of those, the ones that could not.
    pub recoveries_failed: u64,
    /// Publish→write latency since start.
    pub latency: LatencySnapshot,
}

impl Metrics {
    /// Frames written to clients: the families' counts added up (the
    /// session keeps no separate total, one counter update less per batch).
    pub fn messages_out(&self) -> u64 {
        self.messages_out_by_family.counts().map(|(_, n)| n).sum()
    }

    /// Counts a failed authentication.
    pub fn auth_failed(&self, why: AuthFailure) {
        self.auth_failures[why as usize].fetch_add(1, Relaxed);
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Updates the per-second rates; the registry calls it every second.
    pub fn sample_rates(&self) {
        let now = Instant::now();
        let messages_in = self.messages_in.load(Relaxed);
        let messages_out = self.messages_out();
        let Ok(mut r) = self.rates.lock() else { return };
        let secs = now.duration_since(r.at).as_secs_f64();
        if secs > 0.0 {
            r.in_per_sec = (messages_in - r.messages_in) as f64 / secs;
            r.out_per_sec = (messages_out - r.messages_out) as f64 / secs;
        }
        r.at = now;
        r.messages_in = messages_in;
        r.messages_out = messages_out;
        if r.published.len() == MINUTE_SAMPLES {
            r.published.pop_front();
        }
        r.published.push_back(self.published.load(Relaxed));
    }

    /// Events published over the last minute, from the per-second samples.
    pub fn last_minute(&self) -> Throughput {
        let Ok(r) = self.rates.lock() else { return Throughput { published: 0, window_secs: 0 } };
        let now = self.published.load(Relaxed);
        let oldest = r.published.front().copied().unwrap_or(now);
        Throughput { published: now.saturating_sub(oldest), window_secs: r.published.len() as u64 }
    }

    /// All counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let (in_per_sec, out_per_sec) = self.rates.lock().map(|r| (r.in_per_sec, r.out_per_sec)).unwrap_or_default();
        MetricsSnapshot {
            uptime_secs: self.uptime().as_secs(),
            sockets: self.sockets.load(Relaxed),
            clients: self.clients.load(Relaxed),
            flood_closes: self.flood_closes.load(Relaxed),
            auth_throttled: self.auth_throttled.load(Relaxed),
            user_rate_limited: self.user_rate_limited.load(Relaxed),
            event_rate_limited: self.event_rate_limited.load(Relaxed),
            shed_connections: self.shed_connections.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out(),
            messages_in_per_sec: in_per_sec,
            messages_out_per_sec: out_per_sec,
            published: self.published.load(Relaxed),
            dropped_slow_consumers: self.slow_consumers.load(Relaxed),
            dropped_deliveries: self.dropped_deliveries.load(Relaxed),
            recoveries: self.recoveries.load(Relaxed),
            recoveries_failed: self.recoveries_failed.load(Relaxed),
            latency: LatencySnapshot {
                count: self.latency.count(),
                p50_us: self.latency.percentile(0.50),
                p90_us: self.latency.percentile(0.90),
                p99_us: self.latency.percentile(0.99),
                max_us: self.latency.max(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_and_the_sum_match_what_was_recorded() {
        let h = Histogram::default();
        for v in [100, 900, 1_000, 40_000, 3_000_000] {
            h.record(v);
        }
        h.record_n(7, 2);
        assert_eq!(h.sum(), 100 + 900 + 1_000 + 40_000 + 3_000_000 + 14);
        // A bucket counts under the first bound at or above its top: 900's
        // bucket ends above 1,000 only if the buckets say so.
        let c = h.cumulative(&[10, 1_100, 50_000, 10_000_000]);
        assert_eq!(c, vec![2, 5, 6, 7]);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn every_value_lands_in_a_bucket_whose_bound_covers_it() {
        let mut prev = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 36) - 1, 1 << 36, u64::MAX]) {
            let i = bucket_of(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            assert!(i >= prev || v > 5000, "buckets are monotonic");
            prev = i;
            if v < 1 << 36 {
                assert!(upper_bound(i) >= v, "{v}: bound {}", upper_bound(i));
                assert!(upper_bound(i) as f64 <= v as f64 * 1.125 + 1.0, "{v}: bound {}", upper_bound(i));
            }
        }
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.percentile(0.5);
        assert!((500..=563).contains(&p50), "p50 {p50}");
        let p99 = h.percentile(0.99);
        assert!((990..=1000).contains(&p99), "p99 {p99}");
        assert_eq!(h.max(), 1000);
        assert_eq!(h.percentile(1.0), 1000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        assert_eq!(Histogram::default().percentile(0.99), 0);
    }

    #[test]
    fn rates_follow_the_counters() {
        let m = Metrics::default();
        m.messages_out_by_family.add(0, 500);
        m.sample_rates();
        let s = m.snapshot();
        assert!(s.messages_out_per_sec > 0.0);
        assert_eq!(s.messages_out, 500);
    }
}
