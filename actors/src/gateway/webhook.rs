//! Posting records to webhook agents: one attempt per lane at a time,
//! signed, retried with jittered exponential backoff until the agent
//! answers 2xx.
//!
//! What the agent's answer means:
//! - 2xx: delivered; the lane's next record goes.
//! - 400, 413, 415, 422: the agent refuses this record for good (it is
//!   malformed, too large, of a type it cannot take): retrying would block
//!   the lane forever, so the record is dropped, logged and counted
//!   (`rejected`), and the lane goes on.
//! - anything else (5xx, 401/403 until a secret is fixed, 404 until a
//!   route is deployed, 408, 429, a refused connection, a timeout): retried.
//!
//! Every outcome and retry timer names the record it is about (its number):
//! see `lanes.rs` for why a stale one changes nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;

use super::record::{backoff, jitter, signature};
use super::Gateway;
use crate::settings::agents::Delivery;

/// One attempt's outcome.
pub(super) struct Posted {
    agent: String,
    lane: Arc<str>,
    seq: u64,
    id: Arc<str>,
    result: Result<(), Failure>,
}

/// Why an attempt did not deliver.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Worth another try.
    #[error("{0}")]
    Retry(String),
    /// The agent refuses this record for good.
    #[error("HTTP {0}: the agent refuses this record")]
    Rejected(u16),
}

/// Statuses by which an agent refuses a record itself rather than fails to
/// take it now.
fn rejects(status: u16) -> bool {
    matches!(status, 400 | 413 | 415 | 422)
}

impl Gateway {
    /// Posts the oldest record of every idle lane of webhook agent `i`.
    pub(super) fn pump(&mut self, i: usize, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else { return };
        let timeout = self.config.timeout;
        let slot = &mut self.slots[i];
        let Delivery::Webhook { url, secret, .. } = &slot.agent.delivery else { return };
        let mut posts = Vec::new();
        for (lane, item) in slot.lanes.take_ready() {
            let mut request = client
                .post(url.as_str())
                .timeout(timeout)
                .insert_header(("content-type", "application/json"))
                .insert_header(("x-nova-event-id", &*item.id))
                .insert_header(("x-nova-attempt", (item.failures + 1).to_string()));
            if let Some(secret) = secret {
                request = request.insert_header(("x-nova-signature", signature(secret.as_bytes(), &item.body)));
            }
            let (agent, id, seq, body) = (slot.agent.name.clone(), item.id, item.seq, item.body);
            posts.push(async move {
                let result = match request.send_body(body).await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) if rejects(response.status().as_u16()) => {
                        Err(Failure::Rejected(response.status().as_u16()))
                    }
                    Ok(response) => Err(Failure::Retry(format!("HTTP {}", response.status()))),
                    Err(e) => Err(Failure::Retry(e.to_string())),
                };
                Posted { agent, lane, seq, id, result }
            });
        }
        for post in posts {
            ctx.spawn(post.into_actor(self).map(|posted, act, ctx| act.posted(posted, ctx)));
        }
    }

    fn posted(&mut self, posted: Posted, ctx: &mut Context<Self>) {
        let Some(i) = self.slot(&posted.agent) else { return };
        let Posted { agent, lane, seq, id, result } = posted;
        match result {
            Ok(()) => {
                let slot = &mut self.slots[i];
                if !slot.lanes.delivered(&lane, seq) {
                    return;
                }
                slot.delivered += 1;
                slot.failing = false;
                slot.seen_at = Some((Instant::now(), SystemTime::now()));
                self.stats.delivered.fetch_add(1, Relaxed);
                slot.counters.delivered.fetch_add(1, Relaxed);
                self.update(i);
                self.pump(i, ctx);
            }
            Err(Failure::Rejected(status)) => {
                let slot = &mut self.slots[i];
                if !slot.lanes.rejected(&lane, seq) {
                    return;
                }
                slot.rejected += 1;
                // It answered: it is alive.
                slot.seen_at = Some((Instant::now(), SystemTime::now()));
                self.stats.rejected.fetch_add(1, Relaxed);
                slot.counters.rejected.fetch_add(1, Relaxed);
                log::warn!(agent = agent.as_str(); "gateway: agent '{agent}' refused record {id} for good (HTTP {status}); dropped");
                self.update(i);
                self.pump(i, ctx);
            }
            Err(Failure::Retry(why)) => {
                let slot = &mut self.slots[i];
                let Some(failures) = slot.lanes.failed(&lane, seq) else { return };
                slot.failed_attempts += 1;
                slot.failing = true;
                self.stats.failed_attempts.fetch_add(1, Relaxed);
                slot.counters.failed_attempts.fetch_add(1, Relaxed);
                let wait = backoff(failures, jitter());
                // Said on a record's first failure, then at a falling rate.
                if failures.is_power_of_two() {
                    log::warn!(
                        agent = agent.as_str();
                        "gateway: delivering {id} to agent '{agent}' failed ({failures} times): {why}; next try in {wait:?}"
                    );
                }
                if slot.agent.health_url().is_none() {
                    slot.reason = format!("its last delivery failed: {why}");
                }
                self.update(i);
                ctx.run_later(wait, move |act, ctx| {
                    if let Some(i) = act.slot(&agent) {
                        act.slots[i].lanes.retry(&lane, seq);
                        act.pump(i, ctx);
                    }
                });
            }
        }
    }
}
