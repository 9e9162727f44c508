//! Failed authentications per source address.
//!
//! Verifying a token or a key is cheap, but answering thousands of guesses a
//! second from one address is a free oracle for the guesser. So an address
//! with [`AuthThrottle::limit`] failures inside [`FAILURE_WINDOW`] is blocked
//! for [`BLOCK_FOR`]: its `connection.init` is answered with 4004 and the
//! connection closed, whatever it carries, without looking at the
//! credentials. IPv6 addresses count by their /64, the block a single host is
//! usually given.
//!
//! The table is bounded ([`MAX_TRACKED`]): expired entries are pruned when it
//! fills, and addresses beyond it are not tracked (the server keeps serving;
//! it does not block strangers to save memory). Blocks are logged at a
//! falling rate: at most one line per `LOG_EVERY`, with the count since the
//! last line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures are counted over this window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// How long a blocked address stays blocked.
pub const BLOCK_FOR: Duration = Duration::from_secs(60);

/// Addresses tracked at most.
pub const MAX_TRACKED: usize = 100_000;

/// At most one log line about blocks per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Failures {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
struct State {
    by_address: HashMap<IpAddr, Failures>,
    /// When a full table was last pruned: at most once a second, so a
    /// guesser with many addresses cannot make every failure a pass over
    /// the whole table under the lock.
    pruned_at: Option<Instant>,
    logged_at: Option<Instant>,
    blocks_unlogged: u64,
}

/// Failed authentications per address; shared by every session of a node.
#[derive(Debug)]
pub struct AuthThrottle {
    limit: u32,
    state: Mutex<State>,
}

/// The key an address counts under: IPv6 by its /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthThrottle {
    /// `limit` failures per [`FAILURE_WINDOW`] before an address is blocked;
    /// 0 turns throttling off.
    pub fn new(limit: u32) -> Self {
        let state = State { by_address: HashMap::new(), pruned_at: None, logged_at: None, blocks_unlogged: 0 };
        AuthThrottle { limit, state: Mutex::new(state) }
    }

    /// Failures allowed per window before a block.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// `Err(time left)` while `addr` is blocked.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        self.check_at(addr, Instant::now())
    }

    fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let Ok(state) = self.state.lock() else { return Ok(()) };
        match state.by_address.get(&key(addr)).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure from `addr`; true when this one blocked it.
    pub fn failed(&self, addr: IpAddr) -> bool {
        self.failed_at(addr, Instant::now())
    }

    fn failed_at(&self, addr: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let Ok(mut guard) = self.state.lock() else { return false };
        let state = &mut *guard;
        if state.by_address.len() >= MAX_TRACKED && !state.by_address.contains_key(&key(addr)) {
            if state.pruned_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                state.pruned_at = Some(now);
                state.by_address.retain(|_, f| {
                    f.blocked_until.is_some_and(|u| u > now) || now.duration_since(f.window_start) < FAILURE_WINDOW
                });
            }
            if state.by_address.len() >= MAX_TRACKED {
                return false;
            }
        }
        let failures =
            state.by_address.entry(key(addr)).or_insert(Failures { window_start: now, count: 0, blocked_until: None });
        if failures.blocked_until.is_some_and(|u| u > now) {
            return false;
        }
        if now.duration_since(failures.window_start) >= FAILURE_WINDOW || failures.blocked_until.is_some() {
            *failures = Failures { window_start: now, count: 0, blocked_until: None };
        }
        failures.count += 1;
        if failures.count < self.limit {
            return false;
        }
        failures.blocked_until = Some(now + BLOCK_FOR);
        state.blocks_unlogged += 1;
        if state.logged_at.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            log::warn!(
                "authentication: {} failures in {:?} from {addr}: its connections are refused (4004) for {:?} \
                 ({} address(es) blocked since the last such line)",
                self.limit,
                FAILURE_WINDOW,
                BLOCK_FOR,
                state.blocks_unlogged
            );
            state.logged_at = Some(now);
            state.blocks_unlogged = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_within_the_window_and_forgives_after() {
        let t = AuthThrottle::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(!t.failed_at(a, t0));
        assert!(!t.failed_at(a, t0));
        assert_eq!(t.check_at(a, t0), Ok(()));
        assert!(t.failed_at(a, t0), "the third failure blocks");
        assert!(t.check_at(a, t0 + Duration::from_secs(1)).is_err());
        assert_eq!(t.check_at(b, t0), Ok(()), "other addresses are not affected");
        assert_eq!(t.check_at(a, t0 + BLOCK_FOR), Ok(()), "the block ends");
        assert!(!t.failed_at(a, t0 + BLOCK_FOR), "and counting starts afresh");
    }

    #[test]
    fn failures_spread_beyond_the_window_never_block() {
        let t = AuthThrottle::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(!t.failed_at(a, t0 + FAILURE_WINDOW * i));
        }
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let t = AuthThrottle::new(2);
        let t0 = Instant::now();
        assert!(!t.failed_at("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(t.failed_at("2001:db8:1:2::ffff".parse().unwrap(), t0));
        assert!(t.check_at("2001:db8:1:2:3::9".parse().unwrap(), t0).is_err());
        assert_eq!(t.check_at("2001:db8:1:3::1".parse().unwrap(), t0), Ok(()));
    }

    #[test]
    fn zero_turns_it_off() {
        let t = AuthThrottle::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(!t.failed(a));
        }
        assert_eq!(t.check(a), Ok(()));
    }
}
