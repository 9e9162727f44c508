//! The health monitor actor: polls each enabled MCP server's `health_url`
//! on an interval, with a timeout, and keeps status, latency and last
//! error for `GET /api/mcp`. It publishes `system_health` only when a
//! server's status changes (the first check of a server counts as a change
//! from `unknown`), never for a poll that finds nothing new.
//!
//! Every node runs its own monitor and tells its own clients, so with
//! several nodes a client hears each change once, from its node.
//!
//! A 2xx answer is `up`; anything else, a timeout or a refused connection
//! is `down` with the reason. Checks of one server never overlap: a server
//! slower than the interval is checked again only after its answer.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use super::mcp::McpServer;
use super::{frame, kind, publish_local, Health, Shared};
use crate::registry::Registry;

/// The servers to watch, after every valid reload: the enabled ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Servers(pub Vec<McpServer>);

/// One check's outcome.
#[derive(Message)]
#[rtype(result = "()")]
struct Checked {
    name: String,
    url: String,
    result: Result<Duration, String>,
}

#[derive(Serialize)]
struct HealthEvent<'a> {
    name: &'a str,
    status: &'a str,
    previous: &'a str,
    latency_ms: Option<u64>,
    error: Option<&'a str>,
    checked_at: Option<&'a str>,
}

/// Polls health URLs and reports changes.
pub struct HealthMonitor {
    registry: Addr<Registry>,
    state: Shared,
    interval: Duration,
    timeout: Duration,
    servers: Vec<McpServer>,
    in_flight: HashSet<String>,
    client: Option<awc::Client>,
}

impl HealthMonitor {
    /// A monitor publishing through `registry` and keeping `state`.
    pub fn new(registry: Addr<Registry>, state: Shared, interval: Duration, timeout: Duration) -> Self {
        HealthMonitor {
            registry,
            state,
            interval,
            timeout,
            servers: Vec::new(),
            in_flight: HashSet::new(),
            client: None,
        }
    }

    fn check_all(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = &self.client else { return };
        for server in &self.servers {
            if !self.in_flight.insert(server.name.clone()) {
                continue;
            }
            let (name, url, client, timeout) =
                (server.name.clone(), server.health_url.clone(), client.clone(), self.timeout);
            let check = async move {
                let started = Instant::now();
                let result = match client.get(url.as_str()).timeout(timeout).send().await {
                    Ok(res) if res.status().is_success() => Ok(started.elapsed()),
                    Ok(res) => Err(format!("HTTP {}", res.status())),
                    Err(e) => Err(e.to_string()),
                };
                Checked { name, url, result }
            };
            ctx.spawn(check.into_actor(self).map(|checked, act, ctx| {
                act.in_flight.remove(&checked.name);
                <Self as Handler<Checked>>::handle(act, checked, ctx);
            }));
        }
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.client = Some(awc::Client::builder().timeout(self.timeout).finish());
        ctx.run_interval(self.interval, |act, ctx| act.check_all(ctx));
    }
}

impl Handler<Servers> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, msg: Servers, ctx: &mut Self::Context) {
        self.servers = msg.0;
        if let Ok(mut health) = self.state.health.write() {
            health.retain(|name, _| self.servers.iter().any(|s| s.name == *name));
        }
        // New or changed servers need not wait a whole interval.
        self.check_all(ctx);
    }
}

impl Handler<Checked> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, msg: Checked, _: &mut Self::Context) {
        // A server removed, disabled or given another URL meanwhile: the
        // answer is about something no longer watched.
        if !self.servers.iter().any(|s| s.name == msg.name && s.health_url == msg.url) {
            return;
        }
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let health = match &msg.result {
            Ok(latency) => Health {
                status: "up",
                latency_ms: Some(latency.as_millis() as u64),
                last_error: None,
                checked_at: Some(now),
            },
            Err(e) => Health { status: "down", latency_ms: None, last_error: Some(e.clone()), checked_at: Some(now) },
        };
        let previous = match self.state.health.write() {
            Ok(mut map) => map.insert(msg.name.clone(), health.clone()).map_or("unknown", |h| h.status),
            Err(_) => return,
        };
        if previous != health.status {
            match &msg.result {
                Ok(_) => log::info!("mcp server '{}' is up (was {previous})", msg.name),
                // Usual in development (the example servers are not running):
                // said once per change, with what to do about it.
                Err(e) => log::warn!(
                    "mcp server '{}' is down (was {previous}): {} gave {e}; it is checked again every {:?} \
                     (disable it in mcp_servers.yaml if it is not meant to run)",
                    msg.name,
                    msg.url,
                    self.interval
                ),
            }
            let event = HealthEvent {
                name: &msg.name,
                status: health.status,
                previous,
                latency_ms: health.latency_ms,
                error: health.last_error.as_deref(),
                checked_at: health.checked_at.as_deref(),
            };
            publish_local(&self.registry, frame(kind::SYSTEM_HEALTH, &event));
        }
    }
}
