//! Which Redis channels this node listens to, kept apart from the bus's
//! I/O so the rules can be tested without Redis.
//!
//! The registry reports interest one connection at a time, and a burst of
//! joins and leaves can name one channel many times. Subscribing per report
//! would cost Redis a command per connection, so the bus only records what
//! it needs and, once its mailbox is drained, sends the difference between
//! that and what Redis has: a churn that nets out costs nothing. A new
//! pub/sub connection has no subscriptions, so after a reconnect the
//! difference is everything still needed.

use std::collections::HashSet;

/// The Redis channels the node needs and those its pub/sub connection is
/// subscribed to.
#[derive(Debug, Default)]
pub struct Subscriptions {
    wanted: HashSet<String>,
    subscribed: HashSet<String>,
    /// How many changes [`Subscriptions::take_changes`] has handed out.
    sent: u64,
}

/// One net change of subscriptions, to send as one `SUBSCRIBE` and one
/// `UNSUBSCRIBE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Channels to subscribe to.
    pub add: Vec<String>,
    /// Channels to unsubscribe from.
    pub remove: Vec<String>,
    /// The change's number, counting from 1: once Redis has answered it,
    /// every subscription wanted when it was taken is in place.
    pub number: u64,
}

impl Subscriptions {
    /// Nothing subscribed yet, and `always` wanted from the start (the
    /// broadcast channel, which no registry report names).
    pub fn new(always: impl IntoIterator<Item = String>) -> Self {
        Subscriptions { wanted: always.into_iter().collect(), ..Subscriptions::default() }
    }

    /// Records that the node needs the Redis channel `name` (`on`) or no
    /// longer does; nothing is sent until [`Subscriptions::take_changes`].
    pub fn want(&mut self, name: String, on: bool) {
        if on {
            self.wanted.insert(name);
        } else {
            self.wanted.remove(&name);
        }
    }

    /// The difference between what is wanted and what is subscribed, taken
    /// as sent: from here on the channels added count as subscribed and
    /// those removed as not. `None` when there is nothing to send.
    pub fn take_changes(&mut self) -> Option<Changes> {
        let add: Vec<String> = self.wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<String> = self.subscribed.difference(&self.wanted).cloned().collect();
        if add.is_empty() && remove.is_empty() {
            return None;
        }
        for name in &add {
            self.subscribed.insert(name.clone());
        }
        for name in &remove {
            self.subscribed.remove(name);
        }
        self.sent += 1;
        Some(Changes { add, remove, number: self.sent })
    }

    /// The number of the last change handed out (0 before the first).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The pub/sub connection was replaced or lost, and its subscriptions
    /// with it: the next change subscribes to everything wanted.
    pub fn reset(&mut self) {
        self.subscribed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[test]
    fn what_is_always_wanted_is_the_first_change() {
        let mut subs = Subscriptions::new(["nova:broadcast".to_owned()]);
        assert_eq!(subs.sent(), 0);
        let changes = subs.take_changes();
        assert_eq!(changes, Some(Changes { add: vec!["nova:broadcast".into()], remove: vec![], number: 1 }));
        assert_eq!(subs.take_changes(), None, "nothing new to send");
        assert_eq!(subs.sent(), 1);
    }

    #[test]
    fn churn_within_a_burst_nets_out() {
        let mut subs = Subscriptions::new([]);
        subs.want("a".into(), true);
        subs.take_changes();
        // Within one burst: a goes and comes back, b comes and goes.
        subs.want("a".into(), false);
        subs.want("b".into(), true);
        subs.want("a".into(), true);
        subs.want("b".into(), false);
        assert_eq!(subs.take_changes(), None);
        assert_eq!(subs.sent(), 1, "no change was counted");
    }

    #[test]
    fn a_burst_is_one_change_with_both_directions() {
        let mut subs = Subscriptions::new([]);
        subs.want("a".into(), true);
        subs.want("b".into(), true);
        subs.take_changes();
        subs.want("a".into(), false);
        subs.want("c".into(), true);
        subs.want("d".into(), true);
        let Some(changes) = subs.take_changes() else { panic!("a change was due") };
        assert_eq!(sorted(changes.add), vec!["c", "d"]);
        assert_eq!(changes.remove, vec!["a"]);
        assert_eq!(changes.number, 2);
    }

    #[test]
    fn the_same_report_twice_is_one_subscription() {
        let mut subs = Subscriptions::new([]);
        subs.want("a".into(), true);
        subs.want("a".into(), true);
        assert_eq!(subs.take_changes().map(|c| c.add), Some(vec!["a".to_owned()]));
        subs.want("a".into(), false);
        subs.want("a".into(), false);
        assert_eq!(subs.take_changes().map(|c| c.remove), Some(vec!["a".to_owned()]));
        assert_eq!(subs.take_changes(), None);
    }

    #[test]
    fn a_reconnect_resubscribes_everything_wanted() {
        let mut subs = Subscriptions::new(["nova:broadcast".to_owned()]);
        subs.want("a".into(), true);
        subs.want("gone".into(), true);
        subs.take_changes();
        subs.want("gone".into(), false);
        // Lost before the change went out; then more interest while down.
        subs.reset();
        subs.want("b".into(), true);
        let Some(changes) = subs.take_changes() else { panic!("a change was due") };
        assert_eq!(sorted(changes.add), vec!["a", "b", "nova:broadcast"]);
        assert!(changes.remove.is_empty(), "a new connection has nothing to unsubscribe");
        assert_eq!(changes.number, 2);
    }

    #[test]
    fn nothing_wanted_after_a_reset_sends_nothing() {
        let mut subs = Subscriptions::new([]);
        subs.want("a".into(), true);
        subs.take_changes();
        subs.want("a".into(), false);
        subs.reset();
        assert_eq!(subs.take_changes(), None);
    }
}
