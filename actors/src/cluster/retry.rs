//! The bus's connection to Redis as a state machine, kept apart from the
//! bus's I/O so the retry rules can be tested without Redis.
//!
//! Connections come and go, and the futures of an old one can report after
//! its replacement is up: numbering each connection (its epoch) lets the bus
//! ignore them. While Redis is down the bus retries with capped exponential
//! backoff, so a long outage costs Redis one attempt every few seconds per
//! node, and warns once per outage, not once per attempt, so the log says
//! when Redis went away and when it came back.

use std::time::Duration;

/// First retry after a failure; doubled after each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Retries are never further apart than this.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where the bus stands with Redis: the current connection's number, an
/// attempt under way or scheduled, the next delay, and whether this outage
/// was logged.
#[derive(Debug)]
pub struct Retry {
    epoch: u64,
    connecting: bool,
    scheduled: bool,
    delay: Duration,
    warned: bool,
}

/// What to do about a failure, from [`Retry::failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// The first failure of this outage: warn (later ones are debug).
    pub first: bool,
    /// The delay before the next attempt.
    pub next_try: Duration,
    /// Whether the caller schedules that attempt (after `next_try`); not
    /// when one is already scheduled or under way.
    pub schedule: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::new()
    }
}

impl Retry {
    /// Not connected yet, nothing tried.
    pub fn new() -> Self {
        Retry { epoch: 0, connecting: false, scheduled: false, delay: FIRST_RETRY, warned: false }
    }

    /// The current connection's number (0 before the first).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether something from the connection numbered `epoch` concerns the
    /// current one.
    pub fn is_current(&self, epoch: u64) -> bool {
        epoch == self.epoch
    }

    /// Starts an attempt to connect, unless one is under way (then
    /// `false`: the caller does nothing).
    pub fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.connecting, true)
    }

    /// The attempt started by [`Retry::begin`] ended, either way.
    pub fn ended(&mut self) {
        self.connecting = false;
    }

    /// A connection is up: it gets the next number, the backoff starts
    /// over, and the outage ends. Returns the number, and whether an outage
    /// was logged (so the reconnect is logged too).
    pub fn connected(&mut self) -> (u64, bool) {
        self.epoch += 1;
        self.delay = FIRST_RETRY;
        (self.epoch, std::mem::take(&mut self.warned))
    }

    /// The connection numbered `epoch` failed, or with `None` the attempt
    /// to make one. `None` back when it is an old connection's failure,
    /// which changes nothing; otherwise the outage, with the backoff moved
    /// on when a retry is to be scheduled.
    pub fn failed(&mut self, epoch: Option<u64>) -> Option<Outage> {
        if epoch.is_some_and(|e| !self.is_current(e)) {
            return None;
        }
        let first = !std::mem::replace(&mut self.warned, true);
        let next_try = self.delay;
        let schedule = !self.scheduled && !self.connecting;
        if schedule {
            self.scheduled = true;
            self.delay = (self.delay * 2).min(MAX_RETRY);
        }
        Some(Outage { first, next_try, schedule })
    }

    /// The scheduled retry is due; the caller connects.
    pub fn due(&mut self) {
        self.scheduled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed attempt and its retry coming due, as the bus goes through
    /// them; the delay it was scheduled with.
    fn fail_attempt(retry: &mut Retry) -> Duration {
        assert!(retry.begin());
        retry.ended();
        let outage = retry.failed(None).expect("an attempt's failure counts");
        assert!(outage.schedule);
        retry.due();
        outage.next_try
    }

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        let mut retry = Retry::new();
        let delays: Vec<Duration> = (0..10).map(|_| fail_attempt(&mut retry)).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
    }

    #[test]
    fn success_resets_the_backoff() {
        let mut retry = Retry::new();
        for _ in 0..4 {
            fail_attempt(&mut retry);
        }
        assert!(retry.begin());
        retry.ended();
        retry.connected();
        let outage = retry.failed(Some(retry.epoch()));
        assert_eq!(outage.map(|o| o.next_try), Some(FIRST_RETRY));
    }

    #[test]
    fn an_outage_is_warned_once() {
        let mut retry = Retry::new();
        let firsts: Vec<bool> = (0..3)
            .map(|_| {
                let first = retry.failed(None).is_some_and(|o| o.first);
                retry.due();
                first
            })
            .collect();
        assert_eq!(firsts, vec![true, false, false]);
        assert!(retry.connected().1, "the reconnect ends a logged outage");
        assert!(!retry.connected().1, "and the next connect has none");
        assert!(retry.failed(Some(retry.epoch())).is_some_and(|o| o.first), "a new outage warns again");
    }

    #[test]
    fn the_first_connect_ends_no_outage() {
        let mut retry = Retry::new();
        assert!(retry.begin());
        retry.ended();
        assert_eq!(retry.connected(), (1, false));
    }

    #[test]
    fn epochs_number_connections_and_old_ones_are_ignored() {
        let mut retry = Retry::new();
        assert_eq!(retry.epoch(), 0);
        let (first, _) = retry.connected();
        assert!(retry.failed(Some(first)).is_some());
        retry.due();
        let (second, _) = retry.connected();
        assert_eq!((first, second), (1, 2));
        assert!(retry.is_current(second) && !retry.is_current(first));
        assert_eq!(retry.failed(Some(first)), None, "an old connection's failure");
        // Nothing moved: the current connection's failure is the first of
        // its outage, retried after the first delay.
        assert_eq!(retry.failed(Some(second)), Some(Outage { first: true, next_try: FIRST_RETRY, schedule: true }));
    }

    #[test]
    fn one_retry_at_a_time() {
        let mut retry = Retry::new();
        let first = retry.failed(None);
        assert_eq!(first, Some(Outage { first: true, next_try: FIRST_RETRY, schedule: true }));
        // Another failure while the retry is scheduled: logged with the
        // delay now in force, not scheduled again, backoff unchanged.
        let again = retry.failed(None);
        assert_eq!(again, Some(Outage { first: false, next_try: FIRST_RETRY * 2, schedule: false }));
        retry.due();
        assert!(retry.begin());
        assert!(!retry.begin(), "an attempt is under way");
        // A failure during the attempt (an old connection's stream ending)
        // schedules nothing: the attempt's own result will.
        assert_eq!(retry.failed(None).map(|o| o.schedule), Some(false));
        retry.ended();
        assert_eq!(retry.failed(None), Some(Outage { first: false, next_try: FIRST_RETRY * 2, schedule: true }));
    }
}
