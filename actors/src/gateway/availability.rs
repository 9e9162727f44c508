//! Whether each agent can take requests now, how the gateway finds out, and
//! the `agent_availability` event when that changes.
//!
//! - A stream agent: its stream's consumer groups, probed every check
//!   interval (`redis.rs`, one script): see [`stream_availability`].
//! - A webhook agent with a `health_url`: its last successful delivery or
//!   health check is within the idle time.
//! - A webhook agent without one: available until a delivery fails, and
//!   again once one succeeds.
//!
//! Each node observes for itself and tells its own clients (like
//! `system_health`): every node sees the same Redis, so a flip is announced
//! once per client.

use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;

use super::redis::{probe, Probed, Writes};
use super::Gateway;
use crate::settings::agents::{Agent, Delivery};
use crate::settings::{self, kind};

/// A probe's or health check's outcome.
struct Checked {
    agent: String,
    result: Result<Probed, String>,
}

/// Whether a stream agent is available, and why, from its stream's consumer
/// groups: a consumer must exist and no group may have `limit` records
/// unacknowledged (trimming must only ever take acknowledged ones). Then,
/// where Redis refreshes a consumer's idle time on every read (7.2+), a
/// consumer must have read within `idle`; where it refreshes it only on
/// reads that return something (7.0), an agent waiting on an empty stream
/// looks idle, so having nothing unacknowledged counts as well.
pub fn stream_availability(
    idle_ms: Option<u64>,
    backlog: Option<u64>,
    every_read: bool,
    idle: Duration,
    limit: u64,
) -> (bool, String) {
    let Some(idle_ms) = idle_ms else {
        return (false, "its consumer group has no consumer (XGROUP CREATECONSUMER when the agent starts)".into());
    };
    if let Some(backlog) = backlog.filter(|b| *b >= limit) {
        return (false, format!("{backlog} records in its stream are not acknowledged yet (its limit is {limit})"));
    }
    if Duration::from_millis(idle_ms) <= idle {
        return (true, format!("a consumer read its stream {idle_ms} ms ago"));
    }
    if !every_read && backlog == Some(0) {
        return (true, "its consumer groups have acknowledged everything".into());
    }
    let waiting = match backlog {
        Some(backlog) if !every_read => format!("{backlog} records wait in its stream and "),
        _ => String::new(),
    };
    (false, format!("{waiting}no consumer has read its stream for {} s", idle_ms / 1000))
}

/// Whether an agent's new entry reaches it another way, so that what was
/// learnt of the old way says nothing (its queue and counts stay).
pub fn reached_otherwise(old: &Agent, new: &Agent) -> bool {
    match (&old.delivery, &new.delivery) {
        (Delivery::Stream, Delivery::Stream) => false,
        (Delivery::Webhook { url: a, health_url: ha, .. }, Delivery::Webhook { url: b, health_url: hb, .. }) => {
            a != b || ha != hb
        }
        _ => true,
    }
}

impl Gateway {
    /// Recomputes agent `i`'s availability from what is known and
    /// announces a change.
    pub(super) fn update(&mut self, i: usize) {
        let idle = self.config.idle;
        let slot = &mut self.slots[i];
        let available = slot.agent.enabled
            && match &slot.agent.delivery {
                // Set by the probe.
                Delivery::Stream => slot.available,
                Delivery::Webhook { health_url: Some(_), .. } => {
                    slot.seen_at.is_some_and(|(at, _)| at.elapsed() <= idle)
                }
                Delivery::Webhook { health_url: None, .. } => !slot.failing,
            };
        slot.available = available;
        if !slot.agent.enabled {
            slot.reason = "disabled".into();
        } else if available && slot.agent.health_url().is_none() && !slot.is_stream() {
            slot.reason = "its webhook has not failed".into();
        } else if !available && slot.agent.health_url().is_some() && slot.seen_at.is_some() {
            slot.reason = format!("nothing showed it alive for {} s", idle.as_secs());
        }
        if slot.announced == Some(available) {
            return;
        }
        // The first state of an agent is announced only when it is good
        // news: "unavailable" before the first check says nothing.
        let first = slot.announced.is_none();
        let previous = slot.announced.replace(available);
        if first && !available {
            return;
        }
        let status = if available { "available" } else { "unavailable" };
        log::info!(agent = slot.agent.name.as_str(); "gateway: agent '{}' is {status} ({})", slot.agent.name, slot.reason);
        let data = serde_json::json!({
            "name": slot.agent.name,
            "status": status,
            "previous": match previous { Some(true) => "available", Some(false) => "unavailable", None => "unknown" },
            "reason": slot.reason,
            "checked_at": crate::protocol::rfc3339(SystemTime::now()),
        });
        settings::publish_local(&self.registry, settings::frame(kind::AGENT_AVAILABILITY, &data));
    }

    /// Checks every enabled agent that can be checked.
    pub(super) fn check_all(&mut self, ctx: &mut Context<Self>) {
        for i in 0..self.slots.len() {
            self.check(i, ctx);
        }
        // A webhook whose last sign of life grows old is not checked: its
        // availability lapses with time.
        for i in 0..self.slots.len() {
            self.update(i);
        }
    }

    pub(super) fn check(&mut self, i: usize, ctx: &mut Context<Self>) {
        let stream = self.stream_key(&self.slots[i].agent.name);
        let conn = self.writes.as_ref().map(Writes::connection);
        let (client, timeout) = (self.client.clone(), self.config.timeout);
        let slot = &mut self.slots[i];
        if !slot.agent.enabled || slot.checking {
            return;
        }
        let agent = slot.agent.name.clone();
        let check: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Probed, String>>>> =
            match &slot.agent.delivery {
                Delivery::Stream => match conn {
                    Some(conn) => Box::pin(probe(conn, stream)),
                    None => Box::pin(async { Err("stream delivery needs redis (NOVA_REDIS_URL)".to_string()) }),
                },
                Delivery::Webhook { health_url: Some(url), .. } => {
                    let Some(client) = client else { return };
                    let request = client.get(url.as_str()).timeout(timeout);
                    Box::pin(async move {
                        match request.send().await {
                            Ok(r) if r.status().is_success() => Ok(Probed::Healthy),
                            Ok(r) => Err(format!("its health check answered HTTP {}", r.status())),
                            Err(e) => Err(format!("its health check failed: {e}")),
                        }
                    })
                }
                Delivery::Webhook { health_url: None, .. } => return,
            };
        slot.checking = true;
        slot.written_at_probe = slot.written;
        ctx.spawn(check.into_actor(self).map(move |result, act, _| act.checked(Checked { agent, result })));
    }

    fn checked(&mut self, msg: Checked) {
        let Some(i) = self.slot(&msg.agent) else { return };
        let (idle, limit) = (self.config.idle, self.backlog_limit());
        let slot = &mut self.slots[i];
        slot.checking = false;
        match msg.result {
            Ok(Probed::Healthy) => {
                slot.seen_at = Some((Instant::now(), SystemTime::now()));
                slot.reason = "its health check succeeded".into();
            }
            Ok(Probed::Group { idle_ms, backlog, every_read }) => {
                if let Some(since) = idle_ms.map(Duration::from_millis) {
                    let now = Instant::now();
                    let wall = SystemTime::now();
                    slot.seen_at =
                        Some((now.checked_sub(since).unwrap_or(now), wall.checked_sub(since).unwrap_or(wall)));
                }
                // What this node wrote before the probe began is in its
                // figure; what it wrote since still adds to it.
                slot.backlog = backlog.unwrap_or(0);
                slot.written = slot.written.saturating_sub(slot.written_at_probe);
                let (available, reason) = stream_availability(idle_ms, backlog, every_read, idle, limit);
                slot.available = available;
                slot.reason = reason;
            }
            Ok(Probed::Nobody(why)) | Err(why) => {
                if slot.is_stream() {
                    slot.available = false;
                }
                slot.reason = why;
            }
        }
        self.update(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_agent_needs_a_consumer_that_reads() {
        let idle = Duration::from_secs(30);
        let check = |idle_ms, backlog, every_read| stream_availability(idle_ms, backlog, every_read, idle, 100).0;
        assert!(!check(None, Some(0), true), "no consumer");
        assert!(!check(None, Some(0), false), "no consumer");
        assert!(check(Some(10), Some(5), true));
        assert!(check(Some(10), Some(5), false));
        assert!(!check(Some(10), Some(100), true), "a backlog trimming could eat into");
        // Idle for long: on 7.2+ that is a dead consumer ...
        assert!(!check(Some(60_000), Some(0), true));
        // ... on 7.0 maybe one waiting on an empty stream: fine while
        // nothing waits for it.
        assert!(check(Some(60_000), Some(0), false));
        assert!(!check(Some(60_000), Some(3), false));
        assert!(!check(Some(60_000), None, false), "Redis cannot tell the backlog");
        let (_, why) = stream_availability(Some(60_000), Some(3), false, idle, 100);
        assert_eq!(why, "3 records wait in its stream and no consumer has read its stream for 60 s");
    }

    #[test]
    fn only_another_address_resets_what_is_known() {
        let agent = |delivery| Agent {
            name: "a".into(),
            description: String::new(),
            receives: vec![],
            delivery,
            enabled: true,
        };
        let hook = |url: &str, secret: &str, queue| Delivery::Webhook {
            url: url.into(),
            health_url: None,
            secret: Some(secret.into()),
            queue,
        };
        assert!(!reached_otherwise(&agent(hook("http://a/", "s", None)), &agent(hook("http://a/", "t", Some(5)))));
        assert!(reached_otherwise(&agent(hook("http://a/", "s", None)), &agent(hook("http://b/", "s", None))));
        assert!(reached_otherwise(&agent(Delivery::Stream), &agent(hook("http://a/", "s", None))));
        assert!(!reached_otherwise(&agent(Delivery::Stream), &agent(Delivery::Stream)));
    }
}
