//! Live settings: the MCP server list (`configs/mcp_servers.yaml`), the
//! agents (`configs/agents.yaml`) and the system prompt (`prompts/NOVA_SYSTEM_PROMPT.md`), watched on disk, checked,
//! written safely, and announced to every client the moment they change.
//!
//! - [`watcher`]: the config watcher actor. Watches both directories,
//!   debounces a burst of file events into one reload, keeps the last good
//!   config when a file is invalid, and publishes what changed.
//! - [`health`]: the health monitor actor. Polls each enabled server's
//!   `health_url` and publishes `system_health` when a status changes.
//! - [`mcp`]: the YAML model, its validation and the one-line toggle edit.
//! - [`agents`]: the agents file, read with the MCP file's machinery.
//! - [`prompt`]: the prompt's hash, version and what its event carries.
//! - [`store`]: atomic writes, timestamped backups and restores.
//!
//! Every settings event is published on [`SETTINGS_CHANNEL`], which every
//! authenticated client may subscribe to, with the envelope the settings
//! page expects (`id`, `type`, `timestamp`, `data`, `source`). File changes
//! cross nodes on the Redis bus like any other event (announced by one
//! node, see `watcher.rs`); health is each node's own observation and goes
//! to that node's clients. docs/settings.md is the contract.

pub mod agents;
pub mod health;
pub mod mcp;
pub mod prompt;
pub mod store;
pub mod watcher;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::Addr;
use serde::Serialize;

use crate::cluster::wire::Inbound;
use crate::cluster::Topic;
use crate::protocol::{self, Frame};
use crate::registry::{Deliver, Publish, Registry};

/// The channel settings events are published on.
pub const SETTINGS_CHANNEL: &str = "system:settings";

/// The `source` of every settings event.
pub const SOURCE: &str = "nova-realtime";

/// The MCP config's file name, in the config directory.
pub const MCP_FILE: &str = "mcp_servers.yaml";

/// The agents' file name, in the config directory.
pub const AGENTS_FILE: &str = "agents.yaml";

/// The system prompt's file name, in the prompts directory.
pub const PROMPT_FILE: &str = "NOVA_SYSTEM_PROMPT.md";

/// Event types, named once.
pub mod kind {
    /// The MCP config was reloaded (valid or not).
    pub const CONFIG_VALIDATED: &str = "config_validated";
    /// A server's `enabled` changed.
    pub const MCP_TOGGLED: &str = "mcp_toggled";
    /// The system prompt changed.
    pub const PROMPT_UPDATED: &str = "prompt_updated";
    /// A server's health status changed.
    pub const SYSTEM_HEALTH: &str = "system_health";
    /// An agent's `enabled` changed.
    pub const AGENT_TOGGLED: &str = "agent_toggled";
    /// An agent became available or unavailable.
    pub const AGENT_AVAILABILITY: &str = "agent_availability";
}

/// One server's health as the monitor last saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Health {
    /// `up`, `down`, or `unknown` before the first check (and for disabled
    /// servers).
    pub status: &'static str,
    /// How long the last check took, milliseconds.
    pub latency_ms: Option<u64>,
    /// Why the last check failed.
    pub last_error: Option<String>,
    /// When the last check finished, RFC 3339.
    pub checked_at: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health { status: "unknown", latency_ms: None, last_error: None, checked_at: None }
    }
}

/// What the REST API reads: the last good config, the prompt, health.
#[derive(Debug, Default)]
pub struct SettingsState {
    /// The last valid MCP config.
    pub mcp: RwLock<mcp::McpConfig>,
    /// The errors of the file on disk when it is invalid (the config above
    /// is then the last good one).
    pub mcp_errors: RwLock<Vec<mcp::ConfigError>>,
    /// The last valid agents config.
    pub agents: RwLock<agents::AgentsConfig>,
    /// The errors of `agents.yaml` on disk when it is invalid.
    pub agents_errors: RwLock<Vec<mcp::ConfigError>>,
    /// The current prompt.
    pub prompt: RwLock<prompt::Prompt>,
    /// Health by server name.
    pub health: RwLock<HashMap<String, Health>>,
    /// Reloads of the files since start, as `/metrics` counts them.
    pub reloads: Reloads,
}

/// Reloads of the settings files since start: taken (`applied`) or
/// refused as invalid (the last good config stays), per file, indexed by
/// [`Reloads::FILES`].
#[derive(Debug, Default)]
pub struct Reloads {
    /// Changes taken, per file.
    pub applied: [std::sync::atomic::AtomicU64; 3],
    /// Changes refused as invalid, per file.
    pub invalid: [std::sync::atomic::AtomicU64; 3],
}

impl Reloads {
    /// The files, in the counters' order.
    pub const FILES: [store::SettingsFile; 3] =
        [store::SettingsFile::Mcp, store::SettingsFile::Agents, store::SettingsFile::Prompt];

    /// Counts a reload of `file`.
    pub fn count(&self, file: store::SettingsFile, valid: bool) {
        let i = Self::FILES.iter().position(|f| *f == file).unwrap_or(0);
        let counters = if valid { &self.applied } else { &self.invalid };
        counters[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A shared handle on [`SettingsState`].
pub type Shared = Arc<SettingsState>;

/// A settings event, encoded once.
pub fn frame<D: Serialize>(kind: &str, data: &D) -> Frame {
    protocol::encode_sourced(kind, Some(SETTINGS_CHANNEL), data, SOURCE)
}

/// Publishes a settings event to every subscriber of [`SETTINGS_CHANNEL`]
/// on every node.
pub fn publish(registry: &Addr<Registry>, frame: Frame) {
    registry.do_send(Publish { channel: Arc::from(SETTINGS_CHANNEL), frame });
}

/// Publishes a settings event to this node's subscribers only: what each
/// node observes for itself (health), which every node reports anyway.
pub fn publish_local(registry: &Addr<Registry>, frame: Frame) {
    let inbound = Inbound { frame, presence: None, status: None, everyone: false, position: None };
    registry.do_send(Deliver { topic: Topic::Channel(Arc::from(SETTINGS_CHANNEL)), inbound });
}
