//! Logging: env_logger (`RUST_LOG`, default `info`), with the one noisy
//! source a client controls turned down, as text or, with
//! `NOVA_LOG_FORMAT=json`, one JSON object per line (`timestamp`, `level`,
//! `target`, `message`, and `request_id` for the work of a REST request:
//! [`request_id`] gives every request one, from its `X-Request-Id` or new,
//! and answers with it).
//!
//! actix-http logs every malformed request it is sent at ERROR
//! (`actix_http::h1::dispatcher`: "stream error: …"), so anyone able to open
//! a socket could write a line to the log per request, thousands a second.
//! Those records are demoted to DEBUG: a malformed request is the client's
//! fault, answered with a 400, and not news to the operator. `RUST_LOG=
//! actix_http=debug` still shows them.

use std::io::Write;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use log::{Level, Log, Metadata, Record};

/// The header a request id comes in and goes out with.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one (or one with
/// other characters than `A–Z a–z 0–9 - _ . :`) is replaced by a new one,
/// so what a client sends never forges or floods a log line.
pub const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    /// The id of the REST request whose work is running.
    static CURRENT_REQUEST: String;
}

/// Whether `id`, as a client sent it, is kept.
fn valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: the request's id (its `X-Request-Id` when valid, else a new
/// UUID) is in every log line of its work and in the answer's
/// `X-Request-Id`.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let given = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|id| valid_request_id(id));
    let id = given.map_or_else(nova_actors::protocol::new_id, str::to_owned);
    // Copied only when the line is written: REST publishing runs through
    // here at thousands of requests a second.
    let line = log::log_enabled!(log::Level::Debug).then(|| (req.method().clone(), req.path().to_owned()));
    let mut response = CURRENT_REQUEST
        .scope(id.clone(), async move {
            let response = next.call(req).await;
            if let (Some((method, path)), Ok(r)) = (line, &response) {
                log::debug!("{method} {path} → {}", r.status().as_u16());
            }
            response
        })
        .await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// Targets whose errors and warnings are about what a client sent.
const CLIENT_NOISE: &[&str] = &["actix_http::h1"];

/// env_logger, with client noise demoted.
struct Quiet(env_logger::Logger);

fn is_noise(target: &str) -> bool {
    CLIENT_NOISE.iter().any(|t| target.starts_with(t))
}

impl Log for Quiet {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if is_noise(metadata.target()) {
            return self.0.enabled(&Metadata::builder().level(Level::Debug).target(metadata.target()).build());
        }
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !is_noise(record.target()) || record.level() >= Level::Debug {
            return self.0.log(record);
        }
        let demoted = Record::builder()
            .args(*record.args())
            .level(Level::Debug)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.0.enabled(demoted.metadata()) {
            self.0.log(&demoted);
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// The values `NOVA_LOG_FORMAT` takes.
const FORMATS: &[&str] = &["text", "json"];

/// One JSON object per record.
fn json_line(buf: &mut env_logger::fmt::Formatter, record: &Record<'_>) -> std::io::Result<()> {
    let mut line = serde_json::json!({
        "timestamp": nova_actors::protocol::rfc3339(std::time::SystemTime::now()),
        "level": record.level().as_str(),
        "target": record.target(),
        "message": record.args().to_string(),
    });
    if let Ok(id) = CURRENT_REQUEST.try_with(Clone::clone) {
        line["request_id"] = serde_json::Value::String(id);
    }
    // The work's own fields (`connection_id`, `agent`), as the log line's
    // call named them.
    if let Some(object) = line.as_object_mut() {
        let _ = record.key_values().visit(&mut Fields(object));
    }
    writeln!(buf, "{line}")
}

/// Copies a record's key-values into the JSON line, as strings; a key
/// the line has already (`message`, …) is not overwritten.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.entry(key.as_str()).or_insert_with(|| serde_json::Value::String(value.to_string()));
        Ok(())
    }
}

/// Installs the logger; call once, first thing. The format comes from
/// `NOVA_LOG_FORMAT` (`text`, the default, or `json`), read here because
/// logging starts before the configuration is read.
pub fn init() {
    let format = std::env::var("NOVA_LOG_FORMAT").unwrap_or_default();
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == "json" {
        builder.format(json_line);
    }
    let logger = builder.build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Quiet(logger))).is_ok() {
        log::set_max_level(max);
    }
    if !format.is_empty() && !FORMATS.contains(&format.as_str()) {
        log::warn!("NOVA_LOG_FORMAT='{}' is not one of {}: logging as text", format.escape_debug(), FORMATS.join(", "));
    }
}
