//! Configuration: every setting declared once in [`Args`] (a command-line
//! flag, its environment variable, and a key of the optional YAML file);
//! flags and variables over the file, the file over built-in defaults.
//!
//! Three modes, announced at start:
//! - **development**, when no credential is configured (or `--development`
//!   asks for it): the admin token is [`DEV_ADMIN_TOKEN`] unless set, the API
//!   key `development` is accepted, and browsers on localhost are allowed;
//! - **configured**, when some credential is set without `--production`: an
//!   admin token is required and no development default applies;
//! - **production** (`--production`): as configured, and real secrets are
//!   required (a JWT secret of 32+ bytes, an admin token of 16+ characters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use nova_actors::auth::{check_user_id, ApiKey, JwtConfig, DEFAULT_MAX_TOKEN_LIFETIME, DEVELOPMENT_KEY};
use nova_actors::broker::HistoryConfig;
use nova_actors::gateway::GatewayConfig;
use nova_actors::names::{check_node_id, check_tenant, parse_patterns};
use nova_actors::node::Limits;
use nova_actors::quota::{check_limited_type, Per, QuotaConfig, Rate, DEFAULT_USER_RATE};
use serde::{Deserialize, Serialize};

use crate::origins::Origins;
use crate::peer::TrustedProxies;

/// The admin token in development mode when none is set.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";

/// The cluster secret in development mode when none is set. It is in the
/// source, so it authenticates nothing: development only.
pub const DEV_CLUSTER_SECRET: &str = "nova-development-cluster-secret";

/// Where the YAML file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "configs/server.yaml";

/// Connections that are not authenticated WebSockets, at most, by default.
pub const DEFAULT_MAX_PENDING: usize = 10_000;

/// The user id of a static API key given without one (`NOVA_API_KEYS=key`).
pub const DEFAULT_API_KEY_USER: &str = "api-key";

const MIN_JWT_SECRET_BYTES: usize = 32;
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Every setting, declared once: a command-line flag, the environment
/// variable named beside it, and the same name in snake case as a key of the
/// YAML file. The help text is the documentation: README's settings table
/// and `configs/server.example.yaml` are checked against it (and the
/// `[default: …]` it states against the code) by the tests below.
#[derive(Parser, Debug, Default, Clone, Serialize, Deserialize)]
#[command(name = "nova-realtime", version, about = "Real-time event server for the Nova application")]
#[serde(default, deny_unknown_fields)]
pub struct Args {
    /// YAML configuration file [default: configs/server.yaml, if present]
    #[arg(long, env = "NOVA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8000]
    #[arg(long, env = "NOVA_BIND")]
    pub bind: Option<String>,
    /// Refuse to start without real secrets; disable development defaults (the variable takes true/false, 1/0, yes/no, on/off) [default: off; on in the Docker image]
    #[arg(long, env = "NOVA_PRODUCTION", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub production: bool,
    /// Development defaults even with credentials set (never with --production) [default: off]
    #[arg(long, env = "NOVA_DEVELOPMENT", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub development: bool,
    /// HS256 secret for client JWTs (at least 32 bytes in production) [default: none, JWTs are refused]
    #[arg(long, env = "NOVA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Required `aud` of client JWTs [default: not checked]
    #[arg(long, env = "NOVA_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` of client JWTs [default: not checked]
    #[arg(long, env = "NOVA_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Longest a client JWT may still be valid for (its `exp` from now), seconds; 0: no limit [default: 86400]
    #[arg(long, env = "NOVA_JWT_MAX_LIFETIME_SECS")]
    pub jwt_max_lifetime_secs: Option<u64>,
    /// Time before a client JWT's `exp` when its connection is sent `connection.expiring`, ms; 0: no warning [default: 60000]
    #[arg(long, env = "NOVA_TOKEN_EXPIRY_WARNING_MS")]
    pub token_expiry_warning_ms: Option<u64>,
    /// Bearer token for the admin REST API (at least 16 characters in production) [default: dev-admin-token in development]
    #[arg(long, env = "NOVA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Static API keys, comma-separated, each `key` or `user_id:key` (in the file also `{key, user_id, channels, tenant}`) [default: none]
    #[arg(long, env = "NOVA_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Option<Vec<ApiKeyEntry>>,
    /// Channel patterns granted to the static API keys, comma-separated [default: none]
    #[arg(long, env = "NOVA_API_KEY_CHANNELS", value_delimiter = ',')]
    pub api_key_channels: Option<Vec<String>>,
    /// Browser origins allowed for WebSocket and CORS, comma-separated, or `*` [default: none; localhost too in development]
    #[arg(long, env = "NOVA_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// This node's id, the prefix of connection ids [default: 8 random hex digits]
    #[arg(long, env = "NOVA_NODE_ID")]
    pub node_id: Option<String>,
    /// Authenticated WebSocket connections at most; one more is closed with 1013 [default: 100000]
    #[arg(long, env = "NOVA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Other connections at most (HTTP, WebSockets before connection.init); the oldest idle one makes room for a new one [default: 10000]
    #[arg(long, env = "NOVA_MAX_PENDING_CONNECTIONS")]
    pub max_pending_connections: Option<usize>,
    /// Time an HTTP connection may sit idle, and a request may take to arrive (head and body), ms [default: 5000]
    #[arg(long, env = "NOVA_HTTP_TIMEOUT_MS")]
    pub http_timeout_ms: Option<u64>,
    /// HTTP worker threads [default: one per CPU]
    #[arg(long, env = "NOVA_WORKERS")]
    pub workers: Option<usize>,
    /// Server ping interval; two missed drop the connection [default: 30000]
    #[arg(long, env = "NOVA_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Time allowed for `connection.init` [default: 10000]
    #[arg(long, env = "NOVA_AUTH_TIMEOUT_MS")]
    pub auth_timeout_ms: Option<u64>,
    /// Largest client frame and published event, bytes [default: 1048576]
    #[arg(long, env = "NOVA_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest client frame before connection.init is accepted, bytes [default: 16384]
    #[arg(long, env = "NOVA_MAX_INIT_FRAME_BYTES")]
    pub max_init_frame_bytes: Option<usize>,
    /// Failed authentications from one address in 10 s before it is refused for 60 s; 0: off [default: 20]
    #[arg(long, env = "NOVA_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<u32>,
    /// Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the client [default: none]
    #[arg(long, env = "NOVA_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Bytes queued for one client before it is dropped as slow [default: 2097152]
    #[arg(long, env = "NOVA_MAX_OUTBOUND_BYTES")]
    pub max_outbound_bytes: Option<usize>,
    /// Channels per connection [default: 100]
    #[arg(long, env = "NOVA_MAX_CHANNELS")]
    pub max_channels_per_connection: Option<usize>,
    /// Client frames per second, sustained [default: 50]
    #[arg(long, env = "NOVA_RATE_LIMIT")]
    pub messages_per_second: Option<u32>,
    /// Client frames in a burst [default: 100]
    #[arg(long, env = "NOVA_RATE_BURST")]
    pub message_burst: Option<u32>,
    /// Requests per second one user may make over all its connections on this node (every request but connection.init and connection.heartbeat); 0: no limit [default: 100]
    #[arg(long, env = "NOVA_USER_RATE_LIMIT")]
    pub user_requests_per_second: Option<u32>,
    /// Requests one user may make in a burst over all its connections on this node [default: 200]
    #[arg(long, env = "NOVA_USER_RATE_BURST")]
    pub user_request_burst: Option<u32>,
    /// Limits per user on request types, comma-separated `type=RATE`; RATE is `5/s`, `10/min` or `100/h`, optionally followed by `burst N` (else the burst is the count), or `off`; each replaces the default for its type (in the file: a map from type to RATE) [default: agent.invoke=10/min,chat.message=5/s,chat.typing=2/s,file.upload.request=10/min]
    #[arg(long, env = "NOVA_EVENT_RATE_LIMITS")]
    pub event_rate_limits: Option<EventRateLimits>,
    /// Time a slow consumer gets to close before its socket is shut [default: 5000]
    #[arg(long, env = "NOVA_SLOW_CONSUMER_GRACE_MS")]
    pub slow_consumer_grace_ms: Option<u64>,
    /// Refuse published events (REST and Redis) whose type is not in the event catalog (the variable takes true/false, 1/0, yes/no, on/off) [default: off]
    #[arg(long, env = "NOVA_STRICT_EVENTS", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub strict_events: bool,
    /// Seconds to wait for connections to close on shutdown [default: 10]
    #[arg(long, env = "NOVA_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Redis URL: several nodes act as one server through it [default: none, this node on its own]
    #[arg(long, env = "NOVA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel [default: nova:]
    #[arg(long, env = "NOVA_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// How long a node's presence outlives its last heartbeat in Redis, ms [default: 15000]
    #[arg(long, env = "NOVA_REDIS_PRESENCE_TTL_MS")]
    pub redis_presence_ttl_ms: Option<u64>,
    /// Secret the nodes sharing a Redis seal their messages with, the same on every node
    /// (at least 32 bytes; required with Redis unless in development) [default: a public one in development]
    #[arg(long, env = "NOVA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Directory of mcp_servers.yaml, agents.yaml and their backups [default: configs]
    #[arg(long, env = "NOVA_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Directory of NOVA_SYSTEM_PROMPT.md [default: prompts]
    #[arg(long, env = "NOVA_PROMPTS_DIR")]
    pub prompts_dir: Option<PathBuf>,
    /// Quiet time after a settings file changes before it is reloaded, ms [default: 200]
    #[arg(long, env = "NOVA_SETTINGS_DEBOUNCE_MS")]
    pub settings_debounce_ms: Option<u64>,
    /// How often each enabled MCP server's health_url is polled, ms [default: 10000]
    #[arg(long, env = "NOVA_MCP_HEALTH_INTERVAL_MS")]
    pub mcp_health_interval_ms: Option<u64>,
    /// Timeout of one health check, ms [default: 2000]
    #[arg(long, env = "NOVA_MCP_HEALTH_TIMEOUT_MS")]
    pub mcp_health_timeout_ms: Option<u64>,
    /// Approximate length each agent's Redis stream ({prefix}inbound:{agent}) is trimmed to (XADD MAXLEN ~); with half as many records unacknowledged, a stream agent takes no more [default: 10000]
    #[arg(long, env = "NOVA_AGENT_STREAM_MAXLEN")]
    pub agent_stream_maxlen: Option<usize>,
    /// How long a client request id is remembered, so a resend gets the first receipt and the agent sees the record once, ms [default: 300000]
    #[arg(long, env = "NOVA_AGENT_IDEMPOTENCY_MS")]
    pub agent_idempotency_ms: Option<u64>,
    /// How recently an agent must have shown life (a stream consumer read, a webhook delivery or health check succeeded) to be available, ms [default: 30000]
    #[arg(long, env = "NOVA_AGENT_IDLE_MS")]
    pub agent_idle_ms: Option<u64>,
    /// How often agents' availability is checked (stream consumers, webhook health_url), ms [default: 1000]
    #[arg(long, env = "NOVA_AGENT_CHECK_INTERVAL_MS")]
    pub agent_check_interval_ms: Option<u64>,
    /// Records a webhook agent's queue holds, unless its entry sets queue [default: 1000]
    #[arg(long, env = "NOVA_AGENT_QUEUE")]
    pub agent_queue: Option<usize>,
    /// Time one webhook POST (or health check) may take, ms [default: 5000]
    #[arg(long, env = "NOVA_AGENT_TIMEOUT_MS")]
    pub agent_timeout_ms: Option<u64>,
    /// A bearer token that reads GET /metrics (Prometheus) and nothing else; the admin token reads it too [default: none]
    #[arg(long, env = "NOVA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Event history per namespace, kept for recovery after a reconnect: ns=size/ttl pairs, comma-separated; ns=off keeps none; namespaces not named keep none [default: conversation=300/10m,agent=300/10m]
    #[arg(long, env = "NOVA_HISTORY")]
    pub history: Option<String>,
    /// Memory the history of all channels may take on a node without Redis, MiB; past it whole channels are dropped, least recently published first (their epoch changes) [default: 256]
    #[arg(long, env = "NOVA_HISTORY_MEMORY_MB")]
    pub history_memory_mb: Option<usize>,
    /// Backups kept per settings file [default: 20]
    #[arg(long, env = "NOVA_CONFIG_BACKUPS")]
    pub config_backups: Option<usize>,
    /// Services POST /api/admin/restart/{service} may restart, comma-separated [default: none, endpoint disabled]
    #[arg(long, env = "NOVA_RESTART_SERVICES", value_delimiter = ',')]
    pub restart_services: Option<Vec<String>>,
    /// Restart command, run without a shell; {service} is replaced [default: docker compose restart {service}]
    #[arg(long, env = "NOVA_RESTART_COMMAND")]
    pub restart_command: Option<String>,
    /// Time a restart command may take, seconds [default: 60]
    #[arg(long, env = "NOVA_RESTART_TIMEOUT_SECS")]
    pub restart_timeout_secs: Option<u64>,
    /// Check `GET /health` of the server at the bind address and exit 0 if it
    /// answers 200 (the container HEALTHCHECK)
    #[arg(long)]
    #[serde(skip)]
    pub health_check: bool,
}

/// One setting as `--help` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDoc {
    /// The flag without dashes, e.g. `max-frame-bytes`.
    pub flag: String,
    /// The key in the YAML file, e.g. `max_frame_bytes`; `None` for flags
    /// that are not settings (`--config`, `--health-check`).
    pub key: Option<String>,
    /// The environment variable.
    pub env: Option<String>,
    /// What the help says, less its default.
    pub help: String,
    /// The `[default: …]` of the help, if it states one.
    pub default: Option<String>,
    /// Whether the flag takes a value (`--production` does not).
    pub takes_value: bool,
}

/// Every flag, from the one declaration (`--help`).
pub fn setting_docs() -> Vec<SettingDoc> {
    use clap::CommandFactory;
    let command = Args::command();
    command
        .get_arguments()
        .filter_map(|arg| {
            let flag = arg.get_long()?.to_owned();
            let text = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let (help, default) = match text.split_once(" [default: ") {
                Some((help, rest)) => (help.to_owned(), rest.strip_suffix(']').map(str::to_owned)),
                None => (text.clone(), None),
            };
            let key = (!matches!(flag.as_str(), "config" | "health-check" | "help" | "version"))
                .then(|| flag.replace('-', "_"));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let takes_value = arg.get_action().takes_values();
            Some(SettingDoc { flag, key, env, help, default, takes_value })
        })
        .filter(|d| !matches!(d.flag.as_str(), "help" | "version"))
        .collect()
}

/// README's settings table, made from [`setting_docs`].
pub fn settings_table() -> String {
    let mut table = String::from("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n");
    for d in setting_docs() {
        let env = d.env.map_or("—".to_owned(), |e| format!("`{e}`"));
        let default = match d.default {
            Some(v) if !v.contains(' ') && v != "none" => format!("`{v}`"),
            Some(v) => v,
            None => "—".to_owned(),
        };
        let help = d.help.replace('|', "\\|");
        table.push_str(&format!("| `--{}` | {env} | {default} | {help} |\n", d.flag));
    }
    table
}

impl Args {
    /// These settings (flags and environment) over `file`'s: a setting given
    /// here replaces the file's, lists included; a map (`event_rate_limits`)
    /// replaces the file's entry by entry; a flag that is off leaves the
    /// file's value.
    pub fn over(self, file: Args) -> Result<Args, String> {
        let (config, health_check) = (self.config.clone(), self.health_check);
        let flags = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let mut merged = serde_json::to_value(file).map_err(|e| e.to_string())?;
        if let (Some(flags), Some(merged)) = (flags.as_object(), merged.as_object_mut()) {
            for (key, value) in flags {
                match (merged.get_mut(key), value) {
                    (_, serde_json::Value::Null | serde_json::Value::Bool(false)) => {}
                    (Some(serde_json::Value::Object(file)), serde_json::Value::Object(entries)) => {
                        file.extend(entries.clone())
                    }
                    _ => {
                        merged.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        let mut args: Args = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        args.config = config;
        args.health_check = health_check;
        Ok(args)
    }
}

/// The limits per request type as configured: request type → rate as
/// written (`5/s`, `10/min burst 3`, `off`), checked when the configuration
/// is resolved. In a flag or variable `type=RATE,type=RATE`; in the file a
/// map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventRateLimits(
    /// Request type → rate as written.
    pub BTreeMap<String, String>,
);

impl std::str::FromStr for EventRateLimits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut limits = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, rate) =
                entry.split_once('=').ok_or_else(|| format!("'{entry}' is not TYPE=RATE (e.g. chat.message=5/s)"))?;
            limits.insert(kind.trim().to_owned(), rate.trim().to_owned());
        }
        Ok(EventRateLimits(limits))
    }
}

/// The per-user limits: the defaults of `quota.rs` with what is configured
/// over them.
fn quota_config(
    per_second: Option<u32>,
    burst: Option<u32>,
    events: Option<EventRateLimits>,
) -> Result<QuotaConfig, String> {
    let user = match per_second.unwrap_or(DEFAULT_USER_RATE.count()) {
        0 => None,
        n => Some(
            Rate::new(n, Per::Second, burst.unwrap_or(DEFAULT_USER_RATE.burst()))
                .map_err(|why| format!("user_request_burst (NOVA_USER_RATE_BURST): {why}"))?,
        ),
    };
    let mut quotas = QuotaConfig { user, ..QuotaConfig::default() };
    for (kind, rate) in events.unwrap_or_default().0 {
        let context = |why: String| format!("event_rate_limits (NOVA_EVENT_RATE_LIMITS): {why}");
        check_limited_type(&kind).map_err(context)?;
        if rate.trim() == "off" {
            quotas.events.remove(&kind);
        } else {
            let rate: Rate = rate.parse().map_err(|why| context(format!("'{kind}': {why}")))?;
            quotas.events.insert(kind, rate);
        }
    }
    Ok(quotas)
}

/// A static API key as configured: `user_id:key` (or a bare key) in a flag
/// or variable, that or a mapping in the YAML file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiKeyEntry {
    /// `key` or `user_id:key`; grants `api_key_channels`.
    Short(String),
    /// A key with its own user and channel patterns.
    Full {
        /// The key.
        key: String,
        /// The user id it acts as.
        user_id: String,
        /// Channel patterns it grants.
        #[serde(default)]
        channels: Vec<String>,
        /// The tenant its connections belong to (default: the default one).
        #[serde(default)]
        tenant: Option<String>,
    },
}

impl From<&str> for ApiKeyEntry {
    fn from(s: &str) -> Self {
        ApiKeyEntry::Short(s.to_owned())
    }
}

impl std::str::FromStr for ApiKeyEntry {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ApiKeyEntry::Short(s.to_owned()))
    }
}

/// How much the server trusts its defaults, announced at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing configured (or `--development`): development defaults, loudly.
    Development,
    /// Credentials configured, no development defaults.
    Configured,
    /// `--production`: real secrets required.
    Production,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: String,
    /// Development or production.
    pub mode: Mode,
    /// This node's id.
    pub node_id: String,
    /// How JWTs are verified; JWTs are refused without it.
    pub jwt: Option<JwtConfig>,
    /// Admin bearer token.
    pub admin_token: String,
    /// Static API keys.
    pub api_keys: Vec<ApiKey>,
    /// Whether the `development` key is accepted.
    pub development_key: bool,
    /// Allowed browser origins.
    pub origins: Origins,
    /// HTTP workers; `None` for one per CPU.
    pub workers: Option<usize>,
    /// Connections that are not authenticated WebSockets at most (the
    /// authenticated ones are `limits.max_clients`).
    pub max_pending_connections: usize,
    /// Idle time of an HTTP connection, and the time each request has to
    /// arrive.
    pub http_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Per-connection limits.
    pub limits: Limits,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Whether published events must be of a catalog type.
    pub strict_events: bool,
    /// The Redis bus; `None` for a node on its own.
    pub redis: Option<RedisConfig>,
    /// Live settings.
    pub settings: SettingsConfig,
    /// The agent gateway (its Redis prefix is the bus's).
    pub gateway: GatewayConfig,
    /// What channels keep for recovery.
    pub history: HistoryConfig,
    /// The token of `GET /metrics`, besides the admin token.
    pub metrics_token: Option<String>,
}

/// Where the settings files are and how they are watched and checked.
#[derive(Debug, Clone)]
pub struct SettingsConfig {
    /// Directory of `mcp_servers.yaml` and `backups/`.
    pub config_dir: PathBuf,
    /// Directory of `NOVA_SYSTEM_PROMPT.md`.
    pub prompts_dir: PathBuf,
    /// Debounce window of file changes.
    pub debounce: Duration,
    /// Health poll interval.
    pub health_interval: Duration,
    /// Health check timeout.
    pub health_timeout: Duration,
    /// Backups kept per file.
    pub backups: usize,
    /// Services the restart endpoint may restart; empty: disabled.
    pub restart_services: Vec<String>,
    /// The restart command's words; `{service}` is replaced.
    pub restart_command: Vec<String>,
    /// How long a restart command may run.
    pub restart_timeout: Duration,
}

/// The restart command when none is configured.
pub const DEFAULT_RESTART_COMMAND: &str = "docker compose restart {service}";

/// How a node reaches the others.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// How long a node's presence outlives its last heartbeat.
    pub presence_ttl: Duration,
    /// The secret nodes seal their messages to each other with.
    pub cluster_secret: String,
}

/// The default Redis key prefix.
pub const DEFAULT_REDIS_PREFIX: &str = "nova:";

fn redis_config(
    url: Option<String>,
    prefix: Option<String>,
    presence_ttl_ms: Option<u64>,
    cluster_secret: Option<String>,
    mode: Mode,
) -> Result<Option<RedisConfig>, String> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else { return Ok(None) };
    if !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| url.starts_with(s)) {
        return Err("redis URL must start with redis://, rediss:// or unix://".into());
    }
    let prefix = prefix.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.into());
    if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("redis prefix '{prefix}' must be 1 to 64 characters without spaces"));
    }
    let ttl = presence_ttl_ms.unwrap_or(15_000);
    if ttl < 300 {
        return Err("redis presence TTL must be at least 300 ms".into());
    }
    // Whoever can publish to Redis could otherwise pose as a node.
    let cluster_secret = match (mode, cluster_secret.filter(|s| !s.is_empty())) {
        (Mode::Development, None) => DEV_CLUSTER_SECRET.to_owned(),
        (_, None) => {
            return Err("NOVA_CLUSTER_SECRET is required with NOVA_REDIS_URL once credentials are configured \
                        (or start with --development)"
                .into())
        }
        (Mode::Development, Some(s)) => s,
        (_, Some(s)) if s == DEV_CLUSTER_SECRET => {
            return Err("that is the development cluster secret; set a real NOVA_CLUSTER_SECRET".into())
        }
        (Mode::Production, Some(s)) if s.len() < MIN_JWT_SECRET_BYTES => {
            return Err(format!("--production needs a NOVA_CLUSTER_SECRET of at least {MIN_JWT_SECRET_BYTES} bytes"))
        }
        (_, Some(s)) => s,
    };
    Ok(Some(RedisConfig { url, prefix, presence_ttl: Duration::from_millis(ttl), cluster_secret }))
}

impl Config {
    /// Resolves parsed flags against the YAML file and defaults.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => read_file(Path::new(DEFAULT_CONFIG_FILE))?,
            None => Args::default(),
        };
        Config::resolve(args, file)
    }

    /// Flags win over the file, the file over defaults.
    pub fn resolve(args: Args, file: Args) -> Result<Config, String> {
        let args = args.over(file)?;
        let (production, development) = (args.production, args.development);
        let jwt_secret = args.jwt_secret.filter(|s| !s.is_empty());
        let admin_token = args.admin_token.filter(|s| !s.is_empty());

        let channels = args.api_key_channels.unwrap_or_default();
        let channels = parse_patterns(&channels).map_err(|e| format!("NOVA_API_KEY_CHANNELS: {e}"))?;
        let mut api_keys = Vec::new();
        for entry in args.api_keys.unwrap_or_default() {
            match entry {
                ApiKeyEntry::Short(entry) => {
                    let entry = entry.trim();
                    if entry.is_empty() {
                        continue;
                    }
                    let (user_id, key) = entry.split_once(':').unwrap_or((DEFAULT_API_KEY_USER, entry));
                    let channels = channels.clone();
                    api_keys.push(ApiKey { key: key.to_owned(), user_id: user_id.to_owned(), channels, tenant: None });
                }
                ApiKeyEntry::Full { key, user_id, channels, tenant } => {
                    let patterns = parse_patterns(&channels).map_err(|e| format!("api_keys ({user_id}): {e}"))?;
                    if let Some(tenant) = &tenant {
                        check_tenant(tenant).map_err(|why| format!("api_keys ({user_id}): tenant '{tenant}' {why}"))?;
                    }
                    api_keys.push(ApiKey { key, user_id, channels: patterns, tenant });
                }
            }
        }
        for k in &api_keys {
            check_user_id(&k.user_id).map_err(|why| format!("API key user id '{}': {why}", k.user_id))?;
            if k.key.is_empty() {
                return Err(format!("API key of '{}' is empty", k.user_id));
            }
        }

        let credentials = jwt_secret.is_some() || admin_token.is_some() || !api_keys.is_empty();
        let mode = match (production, development) {
            (true, true) => return Err("--production and --development exclude each other".into()),
            (true, false) => Mode::Production,
            (false, true) => Mode::Development,
            (false, false) if credentials => Mode::Configured,
            (false, false) => Mode::Development,
        };
        if mode == Mode::Production {
            let mut missing = Vec::new();
            match &admin_token {
                None => missing.push("NOVA_ADMIN_TOKEN".to_owned()),
                Some(t) if t == DEV_ADMIN_TOKEN || t.chars().count() < MIN_ADMIN_TOKEN_CHARS => {
                    missing.push(format!("a real NOVA_ADMIN_TOKEN of at least {MIN_ADMIN_TOKEN_CHARS} characters"))
                }
                Some(_) => {}
            }
            match &jwt_secret {
                None => missing.push("NOVA_JWT_SECRET".to_owned()),
                Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
                    missing.push(format!("a NOVA_JWT_SECRET of at least {MIN_JWT_SECRET_BYTES} bytes"))
                }
                Some(_) => {}
            }
            let redis = args.redis_url.as_deref().is_some_and(|u| !u.trim().is_empty());
            if redis && args.cluster_secret.as_deref().is_none_or(str::is_empty) {
                missing.push("NOVA_CLUSTER_SECRET (with NOVA_REDIS_URL)".to_owned());
            }
            if !missing.is_empty() {
                return Err(format!("--production needs {}", missing.join(", and ")));
            }
        }
        // Production's secrets were checked above, all at once.
        let admin_token = match (mode, admin_token) {
            (Mode::Development, None) => DEV_ADMIN_TOKEN.to_owned(),
            (_, None) => {
                return Err("NOVA_ADMIN_TOKEN is required once credentials are configured \
                            (or start with --development)"
                    .into());
            }
            (Mode::Configured, Some(t)) if t == DEV_ADMIN_TOKEN => {
                return Err(format!("'{DEV_ADMIN_TOKEN}' is the development token; set a real NOVA_ADMIN_TOKEN"));
            }
            (_, Some(t)) => t,
        };
        if mode != Mode::Development && api_keys.iter().any(|k| k.key == DEVELOPMENT_KEY) {
            return Err(format!("the API key '{DEVELOPMENT_KEY}' is for development mode only"));
        }
        let jwt = jwt_secret.map(|secret| JwtConfig {
            secret: secret.into_bytes(),
            audience: args.jwt_audience.filter(|s| !s.is_empty()),
            issuer: args.jwt_issuer.filter(|s| !s.is_empty()),
            max_lifetime: match args.jwt_max_lifetime_secs {
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
                None => Some(DEFAULT_MAX_TOKEN_LIFETIME),
            },
        });

        let d = Limits::default();
        let ms = |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
        let limits = Limits {
            heartbeat_interval: ms(args.heartbeat_interval_ms, d.heartbeat_interval),
            auth_timeout: ms(args.auth_timeout_ms, d.auth_timeout),
            max_frame_bytes: args.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            max_outbound_bytes: args.max_outbound_bytes.unwrap_or(d.max_outbound_bytes),
            max_channels_per_connection: args.max_channels_per_connection.unwrap_or(d.max_channels_per_connection),
            messages_per_second: args.messages_per_second.unwrap_or(d.messages_per_second),
            message_burst: args.message_burst.unwrap_or(d.message_burst),
            slow_consumer_grace: ms(args.slow_consumer_grace_ms, d.slow_consumer_grace),
            // Never above the frame limit unless asked for (and then refused).
            max_init_frame_bytes: args
                .max_init_frame_bytes
                .unwrap_or_else(|| d.max_init_frame_bytes.min(args.max_frame_bytes.unwrap_or(d.max_frame_bytes))),
            max_clients: args.max_connections.unwrap_or(d.max_clients).max(1),
            auth_failure_limit: args.auth_failure_limit.unwrap_or(d.auth_failure_limit),
            quotas: quota_config(args.user_requests_per_second, args.user_request_burst, args.event_rate_limits)?,
            expiry_warning: ms(args.token_expiry_warning_ms, d.expiry_warning),
        };
        check_limits(&limits)?;

        let bind = args.bind.unwrap_or_else(|| "127.0.0.1:8000".into());
        if bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("bind address '{bind}' is not IP:port (e.g. 127.0.0.1:8000 or [::]:8000)"));
        }
        let node_id = args.node_id.unwrap_or_else(random_node_id);
        check_node_id(&node_id).map_err(|why| format!("node id '{node_id}' {why} (1 to 32 letters, digits or '-')"))?;
        let origin_list = args.allowed_origins.unwrap_or_default();
        let redis =
            redis_config(args.redis_url, args.redis_prefix, args.redis_presence_ttl_ms, args.cluster_secret, mode)?;
        let restart_command: Vec<String> = args
            .restart_command
            .unwrap_or_else(|| DEFAULT_RESTART_COMMAND.into())
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if restart_command.is_empty() {
            return Err("the restart command is empty".into());
        }
        let restart_services: Vec<String> = args
            .restart_services
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = restart_services
            .iter()
            .find(|s| s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
        {
            return Err(format!("restart service '{bad}' must be 1 to 64 letters, digits, '_', '.' or '-'"));
        }
        let settings = SettingsConfig {
            config_dir: args.config_dir.unwrap_or_else(|| "configs".into()),
            prompts_dir: args.prompts_dir.unwrap_or_else(|| "prompts".into()),
            debounce: Duration::from_millis(args.settings_debounce_ms.unwrap_or(200).max(10)),
            health_interval: Duration::from_millis(args.mcp_health_interval_ms.unwrap_or(10_000).max(50)),
            health_timeout: Duration::from_millis(args.mcp_health_timeout_ms.unwrap_or(2_000).max(10)),
            backups: args.config_backups.unwrap_or(20).max(1),
            restart_services,
            restart_command,
            restart_timeout: Duration::from_secs(args.restart_timeout_secs.unwrap_or(60).max(1)),
        };
        Ok(Config {
            bind,
            mode,
            node_id,
            jwt,
            admin_token,
            api_keys,
            development_key: mode == Mode::Development,
            origins: Origins::new(&origin_list, mode == Mode::Development),
            workers: args.workers.filter(|w| *w > 0),
            max_pending_connections: args.max_pending_connections.unwrap_or(DEFAULT_MAX_PENDING).max(1),
            http_timeout: Duration::from_millis(args.http_timeout_ms.unwrap_or(5_000).max(100)),
            trusted_proxies: TrustedProxies::parse(&args.trusted_proxies.unwrap_or_default())
                .map_err(|e| format!("trusted proxies: {e}"))?,
            limits,
            drain_timeout: Duration::from_secs(args.drain_timeout_secs.unwrap_or(10)),
            strict_events: args.strict_events,
            settings,
            gateway: GatewayConfig {
                prefix: redis.as_ref().map_or(DEFAULT_REDIS_PREFIX, |r| r.prefix.as_str()).to_owned(),
                stream_maxlen: args.agent_stream_maxlen.unwrap_or(10_000).max(1),
                idempotency: Duration::from_millis(args.agent_idempotency_ms.unwrap_or(300_000).max(1)),
                idle: Duration::from_millis(args.agent_idle_ms.unwrap_or(30_000).max(1)),
                check_interval: Duration::from_millis(args.agent_check_interval_ms.unwrap_or(1_000).max(10)),
                queue: args.agent_queue.unwrap_or(1_000).clamp(1, nova_actors::settings::agents::MAX_QUEUE),
                timeout: Duration::from_millis(args.agent_timeout_ms.unwrap_or(5_000).max(10)),
            },
            metrics_token: args.metrics_token.filter(|t| !t.is_empty()),
            history: HistoryConfig {
                namespaces: match &args.history {
                    None => HistoryConfig::default().namespaces,
                    Some(spec) => HistoryConfig::parse_namespaces(spec).map_err(|e| format!("history: {e}"))?,
                },
                memory_cap: args.history_memory_mb.unwrap_or(256).max(1).saturating_mul(1024 * 1024),
            },
            redis,
        })
    }

    /// Logs what a person starting the server must know: the mode and, in
    /// development, the credentials anyone can use.
    pub fn announce(&self) {
        match self.mode {
            Mode::Production => log::info!("production mode, node '{}'", self.node_id),
            Mode::Configured => {
                log::info!("node '{}' with configured credentials (not --production)", self.node_id)
            }
            Mode::Development => {
                let bar = "=".repeat(72);
                log::warn!("{bar}");
                log::warn!("DEVELOPMENT MODE: not for production (start with --production)");
                if self.admin_token == DEV_ADMIN_TOKEN {
                    log::warn!("  admin token: {DEV_ADMIN_TOKEN}  (set NOVA_ADMIN_TOKEN)");
                }
                log::warn!("  API key '{DEVELOPMENT_KEY}' is accepted and may use every channel");
                if self.jwt.is_none() {
                    log::warn!("  JWTs are refused: NOVA_JWT_SECRET is not set");
                }
                log::warn!("  browser origins on localhost are allowed");
                if !is_loopback(&self.bind) {
                    log::warn!("  LISTENING ON {}: anyone who can reach it is admin", self.bind);
                }
                log::warn!("{bar}");
            }
        }
        log::info!("allowed browser origins: {}", self.origins.describe());
        match &self.redis {
            Some(r) => {
                log::info!("scaling out through Redis (prefix '{}')", r.prefix);
                if r.cluster_secret == DEV_CLUSTER_SECRET {
                    log::warn!(
                        "cluster secret: the development default, which is not secret: anyone who can publish \
                         to Redis can pose as a node (set NOVA_CLUSTER_SECRET)"
                    );
                }
            }
            None => log::info!("no Redis configured: this node serves on its own"),
        }
        if !self.api_keys.is_empty() && self.api_keys.iter().all(|k| k.channels.is_empty()) {
            log::warn!("static API keys grant no channels: set NOVA_API_KEY_CHANNELS");
        }
    }
}

fn check_limits(l: &Limits) -> Result<(), String> {
    let checks = [
        (l.heartbeat_interval >= Duration::from_millis(10), "heartbeat interval must be at least 10 ms"),
        (l.auth_timeout >= Duration::from_millis(10), "auth timeout must be at least 10 ms"),
        (l.max_frame_bytes >= 1024, "max frame bytes must be at least 1024"),
        (
            l.max_init_frame_bytes >= 1024 && l.max_init_frame_bytes <= l.max_frame_bytes,
            "max init frame bytes must be at least 1024 and at most max frame bytes",
        ),
        (
            l.max_outbound_bytes >= 2 * l.max_frame_bytes,
            "max outbound bytes must be at least twice max frame bytes, so one full event always fits a client \
             that is keeping up",
        ),
        (l.max_channels_per_connection >= 1, "max channels must be at least 1"),
        (l.messages_per_second >= 1 && l.message_burst >= 1, "rate limit and burst must be at least 1"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, why)) => Err((*why).to_owned()),
        None => Ok(()),
    }
}

fn is_loopback(bind: &str) -> bool {
    bind.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

fn read_file(path: &Path) -> Result<Args, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.trim().is_empty() || serde_yaml::from_str::<serde_yaml::Value>(&text).is_ok_and(|v| v.is_null()) {
        return Ok(Args::default());
    }
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Eight hex digits: the first group of a random UUID.
fn random_node_id() -> String {
    nova_actors::protocol::new_id()[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> actix_web::http::header::HeaderValue {
        actix_web::http::header::HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn redis_is_off_without_a_url_and_checked_with_one() {
        let c = Config::resolve(Args::default(), Args::default()).unwrap();
        assert!(c.redis.is_none());
        let with = |url: &str, prefix: Option<&str>, ttl: Option<u64>| {
            let args = Args {
                redis_url: Some(url.into()),
                redis_prefix: prefix.map(str::to_owned),
                redis_presence_ttl_ms: ttl,
                ..Args::default()
            };
            Config::resolve(args, Args::default())
        };
        let r = with("redis://127.0.0.1:6380", None, None).unwrap().redis.unwrap();
        assert_eq!(r.prefix, DEFAULT_REDIS_PREFIX);
        assert_eq!(r.presence_ttl, Duration::from_secs(15));
        assert!(with("http://127.0.0.1", None, None).unwrap_err().contains("redis://"));
        assert!(with("redis://h", Some("has space:"), None).is_err());
        assert!(with("redis://h", Some(""), None).is_err());
        assert!(with("redis://h", None, Some(10)).unwrap_err().contains("TTL"));
        assert_eq!(r.cluster_secret, DEV_CLUSTER_SECRET, "development mode: the public default");
        let file: Args = serde_yaml::from_str("redis_url: redis://h:1\nredis_prefix: \"staging:\"\n").unwrap();
        let r = Config::resolve(Args::default(), file).unwrap().redis.unwrap();
        assert_eq!((r.url.as_str(), r.prefix.as_str()), ("redis://h:1", "staging:"));
    }

    #[test]
    fn the_cluster_secret_is_required_outside_development() {
        let strong = "0123456789abcdef0123456789abcdef";
        let with = |production: bool, secret: Option<&str>| {
            let args = Args {
                production,
                jwt_secret: Some(strong.into()),
                admin_token: Some("a-real-admin-token".into()),
                redis_url: Some("redis://h:1".into()),
                cluster_secret: secret.map(str::to_owned),
                ..Args::default()
            };
            Config::resolve(args, Args::default())
        };
        for production in [true, false] {
            assert!(with(production, None).unwrap_err().contains("NOVA_CLUSTER_SECRET"));
            assert!(with(production, Some(DEV_CLUSTER_SECRET)).is_err());
        }
        assert!(with(true, Some("short")).unwrap_err().contains("32 bytes"));
        assert_eq!(with(true, Some(strong)).unwrap().redis.unwrap().cluster_secret, strong);
        assert_eq!(with(false, Some("short")).unwrap().redis.unwrap().cluster_secret, "short");
        // Without Redis there is nothing to seal.
        let args = Args {
            production: true,
            jwt_secret: Some(strong.into()),
            admin_token: Some("a-real-admin-token".into()),
            ..Args::default()
        };
        assert!(Config::resolve(args, Args::default()).is_ok());
        let file: Args = serde_yaml::from_str("redis_url: redis://h:1\ncluster_secret: from-file\n").unwrap();
        assert_eq!(Config::resolve(Args::default(), file).unwrap().redis.unwrap().cluster_secret, "from-file");
    }

    #[test]
    fn no_secrets_means_development_mode() {
        let c = Config::resolve(Args::default(), Args::default()).unwrap();
        assert_eq!(c.mode, Mode::Development);
        assert_eq!(c.admin_token, DEV_ADMIN_TOKEN);
        assert!(c.development_key);
        assert_eq!(c.bind, "127.0.0.1:8000");
    }

    #[test]
    fn production_refuses_missing_or_weak_secrets() {
        let prod = |jwt: Option<&str>, admin: Option<&str>| {
            let args = Args {
                production: true,
                jwt_secret: jwt.map(str::to_owned),
                admin_token: admin.map(str::to_owned),
                ..Args::default()
            };
            Config::resolve(args, Args::default())
        };
        let strong_jwt = "0123456789abcdef0123456789abcdef";
        let all = prod(None, None).unwrap_err();
        assert!(
            all.contains("NOVA_ADMIN_TOKEN") && all.contains("NOVA_JWT_SECRET"),
            "every missing secret at once: {all}"
        );
        assert!(prod(None, Some("a-real-admin-token")).unwrap_err().contains("NOVA_JWT_SECRET"));
        assert!(prod(Some("short"), Some("a-real-admin-token")).unwrap_err().contains("32 bytes"));
        assert!(prod(Some(strong_jwt), Some(DEV_ADMIN_TOKEN)).is_err());
        assert!(prod(Some(strong_jwt), Some("short")).is_err());
        let c = prod(Some(strong_jwt), Some("a-real-admin-token")).unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert!(!c.development_key);
    }

    #[test]
    fn credentials_without_production_mean_configured_mode() {
        let args = Args { jwt_secret: Some("s".repeat(40)), admin_token: Some("t".repeat(20)), ..Args::default() };
        let c = Config::resolve(args, Args::default()).unwrap();
        assert_eq!(c.mode, Mode::Configured);
        assert!(!c.development_key, "no development key once credentials are set");
        assert!(!c.origins.allows(&header("http://localhost:5173")), "no localhost default either");
        let no_admin = Args { jwt_secret: Some("s".repeat(40)), ..Args::default() };
        assert!(Config::resolve(no_admin, Args::default()).unwrap_err().contains("NOVA_ADMIN_TOKEN"));
        let dev_token =
            Args { api_keys: Some(vec!["k".into()]), admin_token: Some(DEV_ADMIN_TOKEN.into()), ..Args::default() };
        assert!(Config::resolve(dev_token, Args::default()).is_err());
    }

    #[test]
    fn development_can_be_asked_for_explicitly() {
        let args = Args { jwt_secret: Some("s".repeat(40)), development: true, ..Args::default() };
        let c = Config::resolve(args, Args::default()).unwrap();
        assert_eq!(c.mode, Mode::Development);
        assert!(c.development_key && c.jwt.is_some());
        let both = Args { production: true, development: true, ..Args::default() };
        assert!(Config::resolve(both, Args::default()).is_err());
    }

    #[test]
    fn the_development_key_cannot_be_configured_outside_development() {
        let args =
            Args { api_keys: Some(vec![DEVELOPMENT_KEY.into()]), admin_token: Some("t".repeat(20)), ..Args::default() };
        assert!(Config::resolve(args, Args::default()).unwrap_err().contains("development mode only"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: Args =
            serde_yaml::from_str("bind: 0.0.0.0:9000\nheartbeat_interval_ms: 5000\nnode_id: filenode\n").unwrap();
        let args = Args { bind: Some("127.0.0.1:1".into()), ..Args::default() };
        let c = Config::resolve(args, file).unwrap();
        assert_eq!(c.bind, "127.0.0.1:1");
        assert_eq!(c.limits.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.node_id, "filenode");
    }

    /// The repository's copy of a file.
    fn repo_file(path: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    /// The resolved configuration for `flags`, shown in full (node id
    /// fixed: it is random otherwise).
    fn resolved(flags: &[&str]) -> Result<String, String> {
        let mut argv = vec!["nova-realtime", "--node-id", "fixed"];
        argv.extend_from_slice(flags);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::resolve(args, Args::default()).map(|c| format!("{c:?}"))
    }

    #[test]
    fn every_default_the_help_states_is_the_one_the_code_uses() {
        let baseline = resolved(&[]).unwrap();
        let mut checked = 0;
        for d in setting_docs() {
            let Some(default) = d.default.as_deref() else { continue };
            // Descriptions ("one per CPU", "none, …") are not values.
            if !d.takes_value || default.contains(' ') || default == "none" || d.flag == "config" || d.flag == "node-id"
            {
                continue;
            }
            let flag = format!("--{}", d.flag);
            match resolved(&[&flag, default]) {
                Ok(with) => assert_eq!(with, baseline, "{flag} {default}: the help's default is not the code's"),
                Err(e) => panic!("{flag} {default}: the help's default is not accepted: {e}"),
            }
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} defaults checked");
    }

    #[test]
    fn the_readme_settings_table_is_the_help() {
        let readme = repo_file("README.md");
        let (start, end) = ("<!-- settings: made from --help by config::tests -->\n", "<!-- /settings -->");
        let from = readme.find(start).expect("README has the settings markers") + start.len();
        let to = readme[from..].find(end).expect("and their end") + from;
        let table = settings_table();
        if readme[from..to] != table {
            if std::env::var_os("NOVA_UPDATE_DOCS").is_some() {
                let updated = format!("{}{table}{}", &readme[..from], &readme[to..]);
                std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"), updated).unwrap();
            } else {
                panic!("README's settings table differs from --help; run NOVA_UPDATE_DOCS=1 cargo test -p nova-realtime --lib readme");
            }
        }
    }

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let example = repo_file("configs/server.example.yaml");
        // Uncommented, every example line must be a valid file.
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                let key = l.split(':').next().unwrap_or_default();
                l.starts_with("  ")
                    || (l.contains(':') && !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed: Args = serde_yaml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}:\n{uncommented}"));
        let keys = serde_yaml::from_str::<serde_yaml::Mapping>(&uncommented).unwrap();
        let _ = parsed;
        for d in setting_docs() {
            let Some(key) = d.key else { continue };
            let value = keys.get(key.as_str()).unwrap_or_else(|| panic!("configs/server.example.yaml lacks '{key}'"));
            if let (Some(default), Some(shown)) = (
                d.default.as_deref(),
                value.as_str().map(str::to_owned).or_else(|| {
                    value.as_u64().map(|n| n.to_string()).or_else(|| value.as_bool().map(|b| b.to_string()))
                }),
            ) {
                if d.takes_value && !default.contains(' ') && default != "none" {
                    assert_eq!(shown, default, "'{key}' in the example is not the default the help states");
                }
            }
        }
    }

    #[test]
    fn the_local_config_file_and_settings_state_stay_out_of_git_and_images() {
        // configs/server.yaml may hold admin_token or jwt_secret.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for path in ["configs/server.yaml", "configs/backups/x.yaml", "configs/.settings.lock"] {
            let ignored = std::process::Command::new("git")
                .args(["check-ignore", "-q", path])
                .current_dir(root)
                .status()
                .expect("run git");
            assert!(ignored.success(), ".gitignore must ignore {path}");
        }
        let docker = repo_file(".dockerignore");
        let lines: Vec<&str> = docker.lines().map(str::trim).collect();
        for path in ["configs/server.yaml", "configs/backups", "configs/.settings.lock"] {
            assert!(lines.contains(&path), ".dockerignore must keep {path} out of the image");
        }
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let err = serde_yaml::from_str::<Args>("bindd: x\n").unwrap_err().to_string();
        assert!(err.contains("bindd"), "{err}");
    }

    #[test]
    fn api_keys_from_the_environment_form() {
        let args = Args {
            api_keys: Some(vec!["agent:s3cret".into(), "bare".into()]),
            api_key_channels: Some(vec!["agent:*".into()]),
            admin_token: Some("a-real-admin-token".into()),
            ..Args::default()
        };
        let c = Config::resolve(args, Args::default()).unwrap();
        assert_eq!(c.api_keys[0].user_id, "agent");
        assert_eq!(c.api_keys[0].key, "s3cret");
        assert_eq!(c.api_keys[1].user_id, DEFAULT_API_KEY_USER);
        assert!(c.api_keys[1].channels[0].matches("agent:a1"));
        let bad = Args { api_key_channels: Some(vec!["nope:*".into()]), ..Args::default() };
        assert!(Config::resolve(bad, Args::default()).is_err());
    }

    #[test]
    fn rate_limits_per_user_and_type_default_and_take_what_is_configured() {
        let c = Config::resolve(Args::default(), Args::default()).unwrap();
        assert_eq!(c.limits.quotas, QuotaConfig::default());
        let rate = |s: &str| s.parse::<Rate>().unwrap();
        let file: Args = serde_yaml::from_str(
            "user_requests_per_second: 10\n\
             event_rate_limits:\n  chat.message: 20/s\n  agent.invoke: 3/min burst 1\n  chat.typing: off\n  \
             custom.thing: 1/h\n",
        )
        .unwrap();
        let flags = Args::try_parse_from([
            "nova-realtime",
            "--user-request-burst",
            "15",
            "--event-rate-limits",
            "chat.message=7/s, file.upload.request=off",
        ])
        .unwrap();
        let q = Config::resolve(flags, file).unwrap().limits.quotas;
        assert_eq!(q.user, Some(rate("10/s burst 15")));
        let events: Vec<(&str, Rate)> = q.events.iter().map(|(k, r)| (k.as_str(), *r)).collect();
        assert_eq!(
            events,
            [("agent.invoke", rate("3/min burst 1")), ("chat.message", rate("7/s")), ("custom.thing", rate("1/h"))],
            "the flag's entries over the file's, the file's over the defaults; 'off' removes one"
        );
        let off = Args { user_requests_per_second: Some(0), ..Args::default() };
        assert_eq!(Config::resolve(off, Args::default()).unwrap().limits.quotas.user, None);
    }

    #[test]
    fn bad_rate_limits_are_refused_saying_what_is_wrong() {
        let with = |events: &str| {
            let args = Args { event_rate_limits: Some(events.parse().unwrap()), ..Args::default() };
            Config::resolve(args, Args::default())
        };
        for (events, needles) in [
            ("chat.message=5/x", &["event_rate_limits", "'chat.message'", "'5/x'", "unit"][..]),
            ("chat.message=fast", &["'chat.message'", "'fast' is not a rate"]),
            ("agent.invoke=0/min", &["'agent.invoke'", "at least 1"]),
            ("chat.typing=2/s burst", &["'chat.typing'", "not a rate"]),
            ("connection.heartbeat=1/s", &["'connection.heartbeat' is exempt"]),
            ("bad type=1/s", &["'bad type' is not a request type"]),
        ] {
            let err = with(events).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{events}: '{err}' lacks {needle}");
            }
        }
        let err = Args::try_parse_from(["nova-realtime", "--event-rate-limits", "chat.message"]).unwrap_err();
        assert!(err.to_string().contains("TYPE=RATE"), "{err}");
        let file: Args = serde_yaml::from_str("event_rate_limits:\n  chat.message: 5\n").unwrap_or_default();
        assert!(Config::resolve(Args::default(), file).is_err_and(|e| e.contains("'5' is not a rate")));
        let args = Args { user_request_burst: Some(0), ..Args::default() };
        let err = Config::resolve(args, Args::default()).unwrap_err();
        assert!(err.contains("NOVA_USER_RATE_BURST") && err.contains("at least 1"), "{err}");
    }

    #[test]
    fn the_expiry_warning_is_a_setting() {
        let c = Config::resolve(Args::default(), Args::default()).unwrap();
        assert_eq!(c.limits.expiry_warning, Duration::from_secs(60));
        let args = Args { token_expiry_warning_ms: Some(1500), ..Args::default() };
        assert_eq!(Config::resolve(args, Args::default()).unwrap().limits.expiry_warning, Duration::from_millis(1500));
        let file: Args = serde_yaml::from_str("token_expiry_warning_ms: 0\n").unwrap();
        assert_eq!(Config::resolve(Args::default(), file).unwrap().limits.expiry_warning, Duration::ZERO);
    }

    #[test]
    fn limits_are_checked() {
        let args = Args { max_frame_bytes: Some(10), ..Args::default() };
        assert!(Config::resolve(args, Args::default()).unwrap_err().contains("frame"));
        let args = Args { max_frame_bytes: Some(1 << 20), max_outbound_bytes: Some(1 << 20), ..Args::default() };
        assert!(Config::resolve(args, Args::default()).unwrap_err().contains("twice"));
    }
}
