//! `GET /metrics`: the node's counters in the Prometheus text format,
//! encoded by `prometheus-client` from the same atomics `GET /ws/metrics`
//! reads (a registry made per scrape: the counters live in the actors,
//! not in the exporter).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use nova_actors::auth::constant_time_eq;
use nova_actors::gateway::AgentCounters;
use nova_actors::metrics::AuthFailure;
use nova_actors::registry::GetStats;
use nova_actors::settings::Reloads;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::{Admin, AppState};

/// A counter's labels.
type Labels = Vec<(&'static str, String)>;

/// One of an agent's counters.
type AgentCounter = fn(&AgentCounters) -> &AtomicU64;

/// The latency histogram's bucket bounds, µs (0.5 ms to 10 s).
const LATENCY_BOUNDS_US: &[u64] =
    &[500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000];

/// A histogram read from the node's own (`metrics.rs`), as Prometheus
/// wants it: seconds, each bucket's own count, the total and the sum.
#[derive(Debug)]
struct Latency {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A counter by label set, from values read off the node's atomics.
fn labelled(values: impl Iterator<Item = (Labels, u64)>) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (labels, n) in values {
        family.get_or_create(&labels).inc_by(n);
    }
    family
}

/// `GET /metrics`: with the admin token, or the metrics token
/// (`--metrics-token`) when one is set, so a scraper need not hold the
/// admin token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    operation_id = "prometheus_metrics",
    responses(
        (status = 200, description = "The counters, gauges and the publish→write histogram", body = String,
            content_type = "application/openmetrics-text"),
        (status = 503, description = "The registry did not answer: retry shortly", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = []), ("metrics_token" = [])),
)]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let bearer =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let by_metrics_token = match (&state.metrics_token, bearer) {
        (Some(token), Some(given)) => constant_time_eq(token.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if !by_metrics_token {
        // The admin token then, with its throttle.
        <Admin as actix_web::FromRequest>::extract(&req).await?;
    }
    let stats = state.node.registry.send(GetStats).await.map_err(ApiError::unavailable)?;
    let (m, g) = (&state.node.metrics, &state.gateway);
    let mut registry = Registry::with_prefix("nova");
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let mut gauges: Vec<(&str, &str, i64)> = vec![
        ("connections", "Authenticated WebSocket connections", n(stats.connections)),
        ("users", "Distinct users connected", n(stats.users)),
        ("channels", "Channels with a subscriber on this node", n(stats.channels)),
        ("sockets", "Open WebSocket connections, authenticated or not", m.sockets.load(Ordering::Relaxed) as i64),
    ];
    let mut counters: Vec<(&str, &str, &AtomicU64)> = vec![
        ("bytes_out", "Bytes of the frames written to clients", &m.bytes_out),
        ("published", "Events accepted for publishing", &m.published),
        ("slow_consumers", "Connections closed for exceeding their outbound budget", &m.slow_consumers),
        ("dropped_deliveries", "Deliveries skipped for a session already over budget", &m.dropped_deliveries),
        ("auth_throttled", "Authentications refused for an address that failed too often", &m.auth_throttled),
        ("flood_closes", "Connections closed for flooding", &m.flood_closes),
        ("recoveries", "Subscriptions that asked to recover missed events", &m.recoveries),
        ("recoveries_failed", "Recoveries that could not be made", &m.recoveries_failed),
        ("gateway_accepted", "Client requests accepted for agents", &g.accepted),
        ("gateway_refused", "Client requests refused for agents (4007)", &g.refused),
        ("gateway_delivered", "Webhook deliveries that succeeded", &g.delivered),
        ("gateway_failed_attempts", "Webhook attempts that failed and will be retried", &g.failed_attempts),
        ("gateway_rejected", "Records webhook agents refused", &g.rejected),
    ];
    if let Some(bus) = &state.bus {
        gauges.push(("redis_up", "Whether the node is connected to Redis", i64::from(bus.is_up())));
        counters.extend([
            ("redis_connects", "Connections made to Redis", &bus.connects),
            ("redis_published", "Events written to Redis", &bus.published),
            ("redis_received", "Events from other nodes delivered here", &bus.received),
            ("redis_dropped", "Events not written to Redis", &bus.dropped),
            ("history_lost", "Events of channels with history that never reached Redis", &bus.history_lost),
            ("epochs_bumped", "New epochs started after such losses", &bus.epochs_bumped),
        ]);
    }
    let by_family = |counts: &nova_actors::metrics::ByFamily| {
        labelled(counts.counts().map(|(family, n)| (vec![("family", family.to_owned())], n)))
    };
    registry.register(
        "messages_in",
        "Client frames received, by the family of their type",
        by_family(&m.messages_in_by_family),
    );
    registry.register(
        "messages_out",
        "Frames written to clients, by the family of their type",
        by_family(&m.messages_out_by_family),
    );
    let limits = [("user", &m.user_rate_limited), ("event", &m.event_rate_limited)];
    registry.register(
        "rate_limited",
        "Requests refused by a user's limit: overall (user) or for their type (event)",
        labelled(limits.iter().map(|(limit, n)| (vec![("limit", (*limit).to_owned())], n.load(Ordering::Relaxed)))),
    );
    let reasons = AuthFailure::ALL.iter().zip(&m.auth_failures);
    registry.register(
        "auth_failures",
        "Failed WebSocket authentications and refreshes, by reason",
        labelled(reasons.map(|(why, n)| (vec![("reason", why.label().to_owned())], n.load(Ordering::Relaxed)))),
    );
    let reloads = &state.settings.reloads;
    let files = Reloads::FILES.iter().enumerate().flat_map(|(i, file)| {
        [("applied", &reloads.applied[i]), ("invalid", &reloads.invalid[i])].map(|(result, n)| {
            (vec![("file", file.name().to_owned()), ("result", result.to_owned())], n.load(Ordering::Relaxed))
        })
    });
    registry.register("settings_reloads", "Changes to the settings files taken or refused as invalid", labelled(files));
    let agents = g.agents.lock().map(|a| a.clone()).unwrap_or_default();
    let per_agent: [(&str, &str, AgentCounter); 4] = [
        ("gateway_agent_records", "Records routed to an agent", |c| &c.records),
        ("gateway_agent_delivered", "Webhook deliveries to an agent that succeeded", |c| &c.delivered),
        ("gateway_agent_failed_attempts", "Webhook attempts to an agent that failed", |c| &c.failed_attempts),
        ("gateway_agent_rejected", "Records an agent refused for good", |c| &c.rejected),
    ];
    for (name, help, counter) in per_agent {
        let values =
            agents.iter().map(|(agent, c)| (vec![("agent", agent.clone())], counter(c).load(Ordering::Relaxed)));
        registry.register(name, help, labelled(values));
    }
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(value));
    }
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value.load(Ordering::Relaxed)));
    }
    // The encoder adds the buckets up itself: each bucket's own count,
    // and the rest above the last bound under +Inf.
    let count = m.latency.count();
    let cumulative = m.latency.cumulative(LATENCY_BOUNDS_US);
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(LATENCY_BOUNDS_US.len() + 1);
    for (us, upto) in LATENCY_BOUNDS_US.iter().zip(cumulative) {
        buckets.push((*us as f64 / 1e6, upto.saturating_sub(below)));
        below = below.max(upto);
    }
    buckets.push((f64::INFINITY, count.saturating_sub(below)));
    let latency = Latency { sum: m.latency.sum() as f64 / 1e6, count, buckets };
    registry.register("publish_write_seconds", "Time from publishing an event to writing it to a client", latency);
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry).map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(body))
}
