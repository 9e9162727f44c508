//! `GET /metrics`: the node's counters in the Prometheus text format,
//! encoded by `prometheus-client` from the same atomics `GET /ws/metrics`
//! reads (a registry made per scrape: the counters live in the actors,
//! not in the exporter).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use nova_actors::auth::constant_time_eq;
use nova_actors::registry::GetStats;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::{Admin, AppState};

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
        ("messages_in", "Client frames received", &m.messages_in),
        ("messages_out", "Frames written to clients", &m.messages_out),
        ("published", "Events accepted for publishing", &m.published),
        ("slow_consumers", "Connections closed for exceeding their outbound budget", &m.slow_consumers),
        ("dropped_deliveries", "Deliveries skipped for a session already over budget", &m.dropped_deliveries),
        ("user_rate_limited", "Requests refused by a user's overall limit", &m.user_rate_limited),
        ("event_rate_limited", "Requests refused by a user's limit for their type", &m.event_rate_limited),
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
