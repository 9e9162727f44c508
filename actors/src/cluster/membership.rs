//! This node's side of cross-node presence: who is here, and what Redis has
//! not been told yet. Kept apart from the bus's I/O so the bookkeeping can
//! be tested without Redis.
//!
//! Redis counts each user once per node (`presence.rs`), so the node must
//! know at every moment exactly which pairs it holds: a burst of joins and
//! leaves is sent as its net result, a reconnect or a survivor's reaping is
//! repaired by syncing the whole set, and changes caught by an outage are
//! still announced to this node's own subscribers, who would otherwise hear
//! of them only when Redis comes back.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cluster::presence::{self, Transition};

/// The `channel\nuser` pairs present on this node, and those changed since
/// Redis last counted them.
#[derive(Debug, Default)]
pub struct Membership {
    present: HashSet<String>,
    touched: HashSet<String>,
    /// A count failed without losing the connection: sync at the next
    /// heartbeat.
    needs_sync: bool,
    /// The node is leaving: it holds nothing and stops beating.
    retired: bool,
}

/// A pair whose presence changed since the last count, as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The `channel\nuser` pair ([`presence::member`]).
    pub member: String,
    /// Whether the user is present in the channel on this node now.
    pub joined: bool,
}

impl Change {
    /// The change as the `apply` script takes it: `+pair` or `-pair`.
    pub fn arg(&self) -> String {
        format!("{}{}", if self.joined { '+' } else { '-' }, self.member)
    }

    /// The change as this node announces it when it decides alone (Redis
    /// did not count it); `None` for a pair that does not split.
    pub fn transition(&self) -> Option<Transition> {
        let (channel, user) = self.member.split_once('\n')?;
        Some(Transition::local(Arc::from(channel), Arc::from(user), self.joined))
    }
}

impl Membership {
    /// Nobody present.
    pub fn new() -> Self {
        Membership::default()
    }

    /// `user`'s first connection joined `channel` here (`joined`), or the
    /// last one left. With `counted` (Redis is up) the change waits for the
    /// next [`Membership::take_changes`]; without, the caller announces it
    /// itself and the sync after reconnecting tells Redis.
    pub fn change(&mut self, channel: &str, user: &str, joined: bool, counted: bool) {
        let member = presence::member(channel, user);
        if joined {
            self.present.insert(member.clone());
        } else {
            self.present.remove(&member);
        }
        if counted {
            self.touched.insert(member);
        }
    }

    /// The changes since the last count, each once with where it ended
    /// (a join and a leave in one burst is one leave); they are no longer
    /// pending. Sent to Redis when up; announced locally when the
    /// connection was lost before they were counted.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let present = &self.present;
        self.touched
            .drain()
            .map(|member| {
                let joined = present.contains(&member);
                Change { member, joined }
            })
            .collect()
    }

    /// Every pair present, for the `sync` script, which makes Redis hold
    /// exactly these: pending changes are part of it and no longer pending.
    pub fn sync(&mut self) -> impl Iterator<Item = &String> {
        self.touched.clear();
        self.present.iter()
    }

    /// A count failed while the connection held: the next heartbeat syncs.
    pub fn count_failed(&mut self) {
        self.needs_sync = true;
    }

    /// Whether a heartbeat's answer calls for a sync: the node was no
    /// longer `registered` (a survivor took its presence back), the caller
    /// `asked` (just connected), or a count failed since the last one that
    /// this rule was the reason for.
    pub fn sync_due(&mut self, registered: bool, asked: bool) -> bool {
        !registered || asked || std::mem::take(&mut self.needs_sync)
    }

    /// The node is leaving: it holds nobody from here on, and its
    /// heartbeat stops.
    pub fn retire(&mut self) {
        self.retired = true;
        self.present.clear();
    }

    /// Whether [`Membership::retire`] was called.
    pub fn retired(&self) -> bool {
        self.retired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
        changes.sort_by(|a, b| a.member.cmp(&b.member));
        changes
    }

    fn change(channel: &str, user: &str, joined: bool) -> Change {
        Change { member: presence::member(channel, user), joined }
    }

    fn synced(members: &mut Membership) -> Vec<String> {
        let mut all: Vec<String> = members.sync().cloned().collect();
        all.sort();
        all
    }

    #[test]
    fn a_burst_is_counted_as_where_it_ended() {
        let mut members = Membership::new();
        members.change("team:t1", "alice", true, true);
        members.change("team:t1", "bob", true, true);
        members.change("team:t1", "bob", false, true);
        members.change("team:t1", "carol", true, true);
        members.change("team:t1", "alice", false, true);
        members.change("team:t1", "alice", true, true);
        let changes = sorted(members.take_changes());
        assert_eq!(
            changes,
            vec![change("team:t1", "alice", true), change("team:t1", "bob", false), change("team:t1", "carol", true)]
        );
        let args: Vec<String> = changes.iter().map(Change::arg).collect();
        assert_eq!(args, vec!["+team:t1\nalice", "-team:t1\nbob", "+team:t1\ncarol"]);
        assert!(members.take_changes().is_empty(), "taken once");
        assert_eq!(synced(&mut members), vec!["team:t1\nalice", "team:t1\ncarol"]);
    }

    #[test]
    fn uncounted_changes_are_only_held() {
        let mut members = Membership::new();
        members.change("team:t1", "alice", true, false);
        members.change("team:t2", "alice", true, false);
        members.change("team:t2", "alice", false, false);
        assert!(members.take_changes().is_empty(), "Redis is down: nothing pending");
        assert_eq!(synced(&mut members), vec!["team:t1\nalice"], "the sync after reconnecting tells Redis");
    }

    #[test]
    fn changes_lost_with_the_connection_are_announced_as_they_stand() {
        let mut members = Membership::new();
        members.change("team:t1", "alice", true, true);
        members.change("chat:c1", "bob:smith", true, true);
        members.change("chat:c1", "bob:smith", false, true);
        let mut announced: Vec<Transition> = members.take_changes().iter().filter_map(Change::transition).collect();
        announced.sort_by(|a, b| a.channel.cmp(&b.channel));
        assert_eq!(
            announced,
            vec![
                Transition::local("chat:c1".into(), "bob:smith".into(), false),
                Transition::local("team:t1".into(), "alice".into(), true),
            ]
        );
    }

    #[test]
    fn a_sync_takes_the_pending_changes_with_it() {
        let mut members = Membership::new();
        members.change("team:t1", "alice", true, true);
        members.change("team:t1", "bob", true, true);
        members.change("team:t1", "bob", false, true);
        assert_eq!(synced(&mut members), vec!["team:t1\nalice"]);
        assert!(members.take_changes().is_empty());
    }

    #[test]
    fn a_failed_count_makes_one_later_heartbeat_sync() {
        let mut members = Membership::new();
        assert!(!members.sync_due(true, false));
        assert!(members.sync_due(false, false), "reaped by a survivor");
        assert!(members.sync_due(true, true), "just connected");
        members.count_failed();
        assert!(members.sync_due(true, true));
        // The sync just asked for was not on the failure's account: it is
        // still owed.
        assert!(members.sync_due(true, false));
        assert!(!members.sync_due(true, false), "owed once");
    }

    #[test]
    fn retiring_lets_everyone_go() {
        let mut members = Membership::new();
        members.change("team:t1", "alice", true, true);
        assert!(!members.retired());
        members.retire();
        assert!(members.retired());
        assert_eq!(synced(&mut members), Vec::<String>::new());
    }

    #[test]
    fn a_pair_that_does_not_split_is_not_announced() {
        let stray = Change { member: "no-newline".into(), joined: true };
        assert_eq!(stray.transition(), None);
        assert_eq!(stray.arg(), "+no-newline");
    }
}
