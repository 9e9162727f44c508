//! The config watcher actor: watches the config and prompts directories and
//! turns file changes into one reload per burst and events for clients.
//!
//! It watches the directories, not the files, because editors save in
//! several ways: writing in place, writing a temporary file and renaming
//! it over the old one, or deleting and recreating it. All of them end as
//! events naming the file in its directory, and a deleted file that comes
//! back is seen like any other change. Events for other names (editor swap
//! files, our own temporary files) are ignored.
//!
//! A burst of events is debounced: each event restarts a timer of one
//! window (200 ms by default), and the reload runs when the files have been
//! quiet for that long (or at the latest after ten windows of a continuous
//! stream). A file that looks mid-save (missing, empty, or not valid YAML)
//! gets one more window before it is believed, so an editor's truncate and
//! write is not announced as a broken config.
//!
//! Reading, hashing and checking the files runs on tokio's blocking pool,
//! never on the actor's thread: a file can be a megabyte of YAML, and the
//! health monitor shares this thread. One reload is in flight at a time;
//! changes seen meanwhile are reloaded after it, one window later.
//!
//! `agents.yaml` is handled as the MCP config is (its valid agents go to the
//! agent gateway, its flips are `agent_toggled`).
//!
//! An invalid MCP config never replaces the last good one: the server keeps
//! serving the last good config and publishes `config_validated` with
//! `valid: false` and the errors; a valid change publishes
//! `config_validated` with `valid: true` and the changes, an `mcp_toggled`
//! per server whose `enabled` flipped, and hands the enabled servers to the
//! health monitor. A changed prompt publishes `prompt_updated`. Content
//! that did not change (a save without edits) publishes nothing.
//!
//! With several nodes on one Redis, every node may watch the same files (a
//! shared volume): each change is announced by one node only, the first to
//! claim it in Redis, and reaches every node's clients over the bus. A
//! change is named by its file, size, modification time and content hash,
//! which are the same on every node that sees the same write.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use notify::{RecursiveMode, Watcher as _};
use serde_json::json;

use super::agents::{self, AgentsConfig};
use super::health::{HealthMonitor, Servers};
use super::mcp::{self, Change, ConfigError, McpConfig};
use super::prompt::hash;
use super::store::{SettingsFile, Store};
use super::{frame, kind, publish, Shared, AGENTS_FILE, MCP_FILE, PROMPT_FILE};
use crate::broker::Broker;
use crate::gateway::Configure;
use crate::protocol::Frame;
use crate::registry::Registry;

/// How long a node's claim to announce a change holds.
const CLAIM_TTL: Duration = Duration::from_secs(60);

/// File system events, from notify's thread.
#[derive(Message)]
#[rtype(result = "()")]
struct FsEvent {
    paths: Vec<PathBuf>,
}

/// A YAML config (MCP servers, agents) as a reload found it, read and
/// checked off the actor.
struct YamlRead<C> {
    /// The text's hash; `None` when the file is missing.
    hash: Option<String>,
    /// The config, or everything wrong with it.
    parsed: Result<C, Vec<ConfigError>>,
    /// Missing, empty or invalid: maybe caught mid-save.
    suspicious: bool,
    /// Taken just after the read.
    stamp: Option<Stamp>,
}

/// The prompt as a reload found it, read and hashed off the actor.
struct PromptRead {
    /// The text and its hash; `None` when the file is missing.
    text: Option<(String, String)>,
    /// Empty or whitespace: maybe caught mid-save.
    blank: bool,
    /// Taken just after the read.
    stamp: Option<Stamp>,
}

/// A file's size and modification time (ns since the epoch), which name a
/// change the same way on every node sharing the file.
type Stamp = (u64, u128);

/// What one read of the files found, for those that were asked for.
struct Found {
    mcp: Option<io::Result<YamlRead<McpConfig>>>,
    agents: Option<io::Result<YamlRead<AgentsConfig>>>,
    prompt: Option<io::Result<PromptRead>>,
}

/// What to do with what a read found.
type Then = fn(&mut ConfigWatcher, Found, &mut Context<ConfigWatcher>);

/// Watches the settings files.
pub struct ConfigWatcher {
    store: Arc<Store>,
    state: Shared,
    registry: Addr<Registry>,
    health: Addr<HealthMonitor>,
    gateway: Recipient<Configure>,
    broker: Arc<dyn Broker>,
    config_dir: PathBuf,
    prompts_dir: PathBuf,
    window: Duration,
    watcher: Option<notify::RecommendedWatcher>,
    dirty: Dirty,
    timer: Option<SpawnHandle>,
    /// Hashes of the files' text at the last reload, valid or not.
    mcp_seen: Option<String>,
    agents_seen: Option<String>,
    prompt_seen: Option<String>,
    /// Told once the files are watched and loaded.
    ready: Option<std::sync::mpsc::Sender<()>>,
    /// A read of the files is running on the blocking pool.
    in_flight: bool,
    /// A reload fell due while a read was in flight.
    again: bool,
}

#[derive(Default)]
struct Dirty {
    mcp: bool,
    agents: bool,
    prompt: bool,
    since: Option<Instant>,
    /// The files already given one more window for looking mid-save.
    mcp_waited: bool,
    agents_waited: bool,
    prompt_waited: bool,
}

impl ConfigWatcher {
    /// A watcher of `store`'s files, debouncing with `window`, handing
    /// valid agents to `gateway`, claiming changes through `broker` (with
    /// several nodes sharing the files, one announces each).
    pub fn new(
        store: Arc<Store>,
        state: Shared,
        registry: Addr<Registry>,
        health: Addr<HealthMonitor>,
        gateway: Recipient<Configure>,
        broker: Arc<dyn Broker>,
        window: Duration,
    ) -> Self {
        let config_dir = store.path(SettingsFile::Mcp).parent().map(Path::to_path_buf).unwrap_or_default();
        let prompts_dir = store.path(SettingsFile::Prompt).parent().map(Path::to_path_buf).unwrap_or_default();
        ConfigWatcher {
            store,
            state,
            registry,
            health,
            gateway,
            broker,
            config_dir,
            prompts_dir,
            window,
            watcher: None,
            dirty: Dirty::default(),
            timer: None,
            mcp_seen: None,
            agents_seen: None,
            prompt_seen: None,
            ready: None,
            in_flight: false,
            again: false,
        }
    }

    /// Sends `()` on `ready` once the directories are watched and the files'
    /// current state is loaded, so the server can wait for that before it
    /// serves anyone.
    pub fn on_ready(mut self, ready: std::sync::mpsc::Sender<()>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Reads the files asked for on the blocking pool, then hands what
    /// was found to `then` on the actor.
    fn read_off_thread(&mut self, mcp: bool, agents: bool, prompt: bool, then: Then, ctx: &mut Context<Self>) {
        self.in_flight = true;
        let mcp_path = self.store.path(SettingsFile::Mcp);
        let agents_path = self.store.path(SettingsFile::Agents);
        let prompt_path = self.store.path(SettingsFile::Prompt);
        let task = tokio::task::spawn_blocking(move || Found {
            mcp: mcp.then(|| read_yaml(&mcp_path, MCP_FILE, mcp::parse)),
            agents: agents.then(|| read_yaml(&agents_path, AGENTS_FILE, agents::parse)),
            prompt: prompt.then(|| read_prompt(&prompt_path)),
        });
        ctx.spawn(task.into_actor(self).map(move |found, act, ctx| {
            act.in_flight = false;
            match found {
                Ok(found) => then(act, found, ctx),
                Err(e) => log::error!("reading the settings files failed: {e}"),
            }
            // After the first read, whatever it found: start-up waits for it.
            if let Some(ready) = act.ready.take() {
                let _ = ready.send(());
            }
            if std::mem::take(&mut act.again) {
                act.schedule(ctx);
            }
        }));
    }

    /// The state at start, without events: nobody is connected yet.
    fn load(&mut self, found: Found, _: &mut Context<Self>) {
        match self.first_read(SettingsFile::Mcp, found.mcp) {
            Some(Ok(config)) => self.use_config(config),
            Some(Err(errors)) => {
                log::warn!("{MCP_FILE} is invalid, no MCP servers in use: {}", summary(&errors));
                self.set_errors(errors);
            }
            None => {}
        }
        match self.first_read(SettingsFile::Agents, found.agents) {
            Some(Ok(config)) => self.use_agents(config),
            Some(Err(errors)) => {
                log::warn!("{AGENTS_FILE} is invalid, no agents in use: {}", summary(&errors));
                self.set_agent_errors(errors);
            }
            None => {}
        }
        match found.prompt {
            Some(Ok(PromptRead { text: Some((text, seen)), .. })) => {
                self.prompt_seen = Some(seen);
                self.set_prompt(text);
            }
            Some(Ok(PromptRead { text: None, .. })) => {
                log::info!("no {} yet", self.store.path(SettingsFile::Prompt).display())
            }
            Some(Err(e)) => log::warn!("cannot read {PROMPT_FILE}: {e}"),
            None => {}
        }
    }

    /// What the first read found of a YAML file: its config, or what is
    /// wrong with it; `None` when it is missing or could not be read (said
    /// in the log).
    fn first_read<C>(
        &mut self,
        file: SettingsFile,
        read: Option<io::Result<YamlRead<C>>>,
    ) -> Option<Result<C, Vec<ConfigError>>> {
        match read? {
            Ok(YamlRead { hash: Some(seen), parsed, .. }) => {
                match file {
                    SettingsFile::Mcp => self.mcp_seen = Some(seen),
                    SettingsFile::Agents => self.agents_seen = Some(seen),
                    SettingsFile::Prompt => self.prompt_seen = Some(seen),
                }
                Some(parsed)
            }
            Ok(YamlRead { hash: None, .. }) => {
                log::info!("no {} yet", self.store.path(file).display());
                None
            }
            Err(e) => {
                log::warn!("cannot read {}: {e}", file.name());
                None
            }
        }
    }

    fn use_config(&self, config: McpConfig) {
        let enabled = config.servers.iter().filter(|s| s.enabled).cloned().collect();
        if let Ok(mut current) = self.state.mcp.write() {
            *current = config;
        }
        self.set_errors(Vec::new());
        self.health.do_send(Servers(enabled));
    }

    fn use_agents(&self, config: AgentsConfig) {
        if let Ok(mut current) = self.state.agents.write() {
            *current = config.clone();
        }
        self.set_agent_errors(Vec::new());
        self.gateway.do_send(Configure(config));
    }

    fn set_agent_errors(&self, errors: Vec<ConfigError>) {
        if let Ok(mut current) = self.state.agents_errors.write() {
            *current = errors;
        }
    }

    fn set_errors(&self, errors: Vec<ConfigError>) {
        if let Ok(mut current) = self.state.mcp_errors.write() {
            *current = errors;
        }
    }

    fn set_prompt(&self, text: String) {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Ok(mut prompt) = self.state.prompt.write() {
            *prompt = prompt.changed(text, now);
        }
    }

    fn start_watching(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => addr.do_send(FsEvent { paths: event.paths }),
            Err(e) => log::warn!("watching settings files: {e}"),
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => return log::error!("cannot watch settings files, changes will not be seen: {e}"),
        };
        for dir in [&self.config_dir, &self.prompts_dir] {
            if let Err(e) = std::fs::create_dir_all(dir) {
                log::warn!("cannot create {}: {e}", dir.display());
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => log::info!("watching {} for settings changes", dir.display()),
                Err(e) => log::error!("cannot watch {}: {e}", dir.display()),
            }
        }
        self.watcher = Some(watcher);
    }

    /// (Re)starts the debounce timer, unless the burst has already gone on
    /// for ten windows.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let since = *self.dirty.since.get_or_insert_with(Instant::now);
        if self.timer.is_some() && since.elapsed() >= self.window * 10 {
            return;
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.timer = Some(ctx.run_later(self.window, |act, ctx| {
            act.timer = None;
            act.reload(ctx);
        }));
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            // Its dirty flags stay set for the reload after this read.
            self.again = true;
            return;
        }
        self.dirty.since = None;
        let mcp = std::mem::take(&mut self.dirty.mcp);
        let agents = std::mem::take(&mut self.dirty.agents);
        let prompt = std::mem::take(&mut self.dirty.prompt);
        if mcp || agents || prompt {
            self.read_off_thread(mcp, agents, prompt, Self::apply, ctx);
        }
    }

    /// What a reload found becomes the state and events.
    fn apply(&mut self, found: Found, ctx: &mut Context<Self>) {
        match found.mcp {
            Some(Ok(read)) => self.apply_mcp(read, ctx),
            Some(Err(e)) => log::warn!("cannot read {MCP_FILE}: {e}"),
            None => {}
        }
        match found.agents {
            Some(Ok(read)) => self.apply_agents(read, ctx),
            Some(Err(e)) => log::warn!("cannot read {AGENTS_FILE}: {e}"),
            None => {}
        }
        match found.prompt {
            Some(Ok(read)) => self.apply_prompt(read, ctx),
            Some(Err(e)) => log::warn!("cannot read {PROMPT_FILE}: {e}"),
            None => {}
        }
    }

    /// Gives a file that looks mid-save one more window; returns whether
    /// it did.
    fn wait_once(&mut self, which: SettingsFile, ctx: &mut Context<Self>) -> bool {
        let (waited, dirty) = match which {
            SettingsFile::Mcp => (&mut self.dirty.mcp_waited, &mut self.dirty.mcp),
            SettingsFile::Agents => (&mut self.dirty.agents_waited, &mut self.dirty.agents),
            SettingsFile::Prompt => (&mut self.dirty.prompt_waited, &mut self.dirty.prompt),
        };
        if std::mem::replace(waited, true) {
            *waited = false;
            return false;
        }
        *dirty = true;
        self.schedule(ctx);
        true
    }

    /// Publishes the events of one change; with several nodes, only if
    /// this node is the first to claim the change.
    fn announce(
        &self,
        file: SettingsFile,
        stamp: Option<Stamp>,
        text_hash: Option<&str>,
        frames: Vec<Frame>,
        ctx: &mut Context<Self>,
    ) {
        let key = match stamp {
            Some((len, mtime)) => format!("{}:{len}:{mtime}:{}", file.name(), text_hash.unwrap_or("-")),
            None => format!("{}:missing:{}", file.name(), text_hash.unwrap_or("-")),
        };
        let mut claim = self.broker.claim(key, CLAIM_TTL);
        // On one node the answer is there at once: published now, in order.
        if let Some(claimed) = crate::broker::ready_now(&mut claim) {
            if claimed {
                frames.into_iter().for_each(|f| publish(&self.registry, f));
            }
            return;
        }
        let registry = self.registry.clone();
        ctx.spawn(
            async move {
                if claim.await {
                    frames.into_iter().for_each(|f| publish(&registry, f));
                }
            }
            .into_actor(self),
        );
    }

    /// Whether what a read found of `which` is news: not a file that looks
    /// mid-save (given one more window first), not the content seen last.
    /// Returns the hash seen before, which names a deletion.
    fn news(
        &mut self,
        which: SettingsFile,
        suspicious: bool,
        hash: &Option<String>,
        ctx: &mut Context<Self>,
    ) -> Option<Option<String>> {
        if suspicious && self.wait_once(which, ctx) {
            return None;
        }
        let (waited, seen) = match which {
            SettingsFile::Mcp => (&mut self.dirty.mcp_waited, &mut self.mcp_seen),
            SettingsFile::Agents => (&mut self.dirty.agents_waited, &mut self.agents_seen),
            SettingsFile::Prompt => (&mut self.dirty.prompt_waited, &mut self.prompt_seen),
        };
        *waited = false;
        if hash.is_some() && hash == seen {
            return None;
        }
        Some(std::mem::replace(seen, hash.clone()))
    }

    fn apply_mcp(&mut self, read: YamlRead<McpConfig>, ctx: &mut Context<Self>) {
        let Some(previous) = self.news(SettingsFile::Mcp, read.suspicious, &read.hash, ctx) else { return };
        let old = self.state.mcp.read().map(|c| c.clone()).unwrap_or_default();
        let frames = reload_frames(&old, &read.parsed);
        self.state.reloads.count(SettingsFile::Mcp, read.parsed.is_ok());
        match read.parsed {
            Ok(config) => self.use_config(config),
            Err(errors) => self.set_errors(errors),
        }
        // A deletion is named by the content that went away.
        let named = read.hash.or(previous);
        self.announce(SettingsFile::Mcp, read.stamp, named.as_deref(), frames, ctx);
    }

    /// Like [`Self::apply_mcp`], for `agents.yaml`; the gateway gets the
    /// agents.
    fn apply_agents(&mut self, read: YamlRead<AgentsConfig>, ctx: &mut Context<Self>) {
        let Some(previous) = self.news(SettingsFile::Agents, read.suspicious, &read.hash, ctx) else { return };
        let old = self.state.agents.read().map(|c| c.clone()).unwrap_or_default();
        let frames = reload_frames(&old, &read.parsed);
        self.state.reloads.count(SettingsFile::Agents, read.parsed.is_ok());
        match read.parsed {
            Ok(config) => self.use_agents(config),
            Err(errors) => self.set_agent_errors(errors),
        }
        let named = read.hash.or(previous);
        self.announce(SettingsFile::Agents, read.stamp, named.as_deref(), frames, ctx);
    }

    fn apply_prompt(&mut self, read: PromptRead, ctx: &mut Context<Self>) {
        let Some((text, seen)) = read.text else {
            if !self.wait_once(SettingsFile::Prompt, ctx) {
                log::warn!("{PROMPT_FILE} is missing; the last prompt stays in use");
            }
            return;
        };
        if self.news(SettingsFile::Prompt, read.blank, &Some(seen.clone()), ctx).is_none() {
            return;
        }
        self.set_prompt(text);
        self.state.reloads.count(SettingsFile::Prompt, true);
        let event = match self.state.prompt.read() {
            Ok(prompt) => {
                log::info!("{PROMPT_FILE} reloaded: version {}, {} bytes", prompt.version, prompt.text.len());
                frame(kind::PROMPT_UPDATED, &prompt.event())
            }
            Err(_) => return,
        };
        self.announce(SettingsFile::Prompt, read.stamp, Some(&seen), vec![event], ctx);
    }
}

/// A settings file of named entries that can be turned off
/// (`mcp_servers.yaml`, `agents.yaml`): what a reload of it announces.
trait Entries {
    /// The file's name.
    const FILE: &'static str;
    /// The key of `config_validated` that counts the entries.
    const COUNT: &'static str;
    /// The event of an entry whose `enabled` flipped.
    const TOGGLED: &'static str;
    /// How many entries.
    fn len(&self) -> usize;
    /// What changed from `old`.
    fn changes(&self, old: &Self) -> Vec<Change>;
    /// Each entry's name and `enabled`.
    fn enabled(&self) -> Vec<(&str, bool)>;
}

impl Entries for McpConfig {
    const FILE: &'static str = MCP_FILE;
    const COUNT: &'static str = "servers";
    const TOGGLED: &'static str = kind::MCP_TOGGLED;
    fn len(&self) -> usize {
        self.servers.len()
    }
    fn changes(&self, old: &Self) -> Vec<Change> {
        mcp::diff(old, self)
    }
    fn enabled(&self) -> Vec<(&str, bool)> {
        self.servers.iter().map(|s| (s.name.as_str(), s.enabled)).collect()
    }
}

impl Entries for AgentsConfig {
    const FILE: &'static str = AGENTS_FILE;
    const COUNT: &'static str = "agents";
    const TOGGLED: &'static str = kind::AGENT_TOGGLED;
    fn len(&self) -> usize {
        self.agents.len()
    }
    fn changes(&self, old: &Self) -> Vec<Change> {
        agents::diff(old, self)
    }
    fn enabled(&self) -> Vec<(&str, bool)> {
        self.agents.iter().map(|a| (a.name.as_str(), a.enabled)).collect()
    }
}

/// The events of a reload of an entries file that changed: a valid one
/// publishes `config_validated` with its changes and an event per entry
/// whose `enabled` flipped; an invalid one, `config_validated` with the
/// errors (the last good config, `old`, stays in force).
fn reload_frames<C: Entries>(old: &C, parsed: &Result<C, Vec<ConfigError>>) -> Vec<Frame> {
    let (file, count) = (C::FILE, C::COUNT);
    let config = match parsed {
        Ok(config) => config,
        Err(errors) => {
            log::warn!("{file} is invalid, keeping the last good config: {}", summary(errors));
            let data = json!({ "file": file, "valid": false, count: old.len(), "errors": errors });
            return vec![frame(kind::CONFIG_VALIDATED, &data)];
        }
    };
    let changes = config.changes(old);
    log::info!("{file} reloaded: {} {count}, {} changed", config.len(), changes.len());
    let data = json!({ "file": file, "valid": true, count: config.len(), "changes": changes });
    let mut frames = vec![frame(kind::CONFIG_VALIDATED, &data)];
    // The diff has found the flips already; a set, so that thousands of
    // entries are not a search each.
    let flipped: HashSet<&str> =
        changes.iter().filter(|c| c.fields.iter().any(|f| f == "enabled")).map(|c| c.server.as_str()).collect();
    for (name, enabled) in config.enabled().into_iter().filter(|(name, _)| flipped.contains(name)) {
        frames.push(frame(C::TOGGLED, &json!({ "name": name, "enabled": enabled })));
    }
    frames
}

/// Reads a file; `None` when it does not exist.
fn read(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()))
}

/// Reads at most `cap + 1` bytes of a file, so a runaway file is never
/// loaded whole: over `cap`, what was read is returned (lossily decoded) for
/// the size check to refuse. `None` when the file does not exist.
fn read_capped(path: &Path, cap: usize) -> io::Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > cap {
        return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
    }
    String::from_utf8(bytes).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads, hashes and checks a YAML config with `parse`; blocking work.
fn read_yaml<C>(path: &Path, name: &str, parse: fn(&str) -> Result<C, Vec<ConfigError>>) -> io::Result<YamlRead<C>> {
    let text = read_capped(path, crate::settings::mcp::MAX_BYTES)?;
    let stamp = stamp(path);
    Ok(match text {
        None => YamlRead {
            hash: None,
            parsed: Err(vec![ConfigError {
                server: None,
                field: None,
                line: None,
                message: format!("{name} is missing; the last good config stays in use"),
            }]),
            suspicious: true,
            stamp,
        },
        Some(text) => {
            let parsed = parse(&text);
            let suspicious = parsed.is_err() || text.trim().is_empty();
            YamlRead { hash: Some(hash(&text)), parsed, suspicious, stamp }
        }
    })
}

/// Reads and hashes the prompt; blocking work.
fn read_prompt(path: &Path) -> io::Result<PromptRead> {
    let text = read(path)?;
    let stamp = stamp(path);
    Ok(match text {
        None => PromptRead { text: None, blank: false, stamp },
        Some(text) => {
            let seen = hash(&text);
            PromptRead { blank: text.trim().is_empty(), text: Some((text, seen)), stamp }
        }
    })
}

fn summary(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Actor for ConfigWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Watching starts first: an edit made while the files are loaded
        // is then seen as a change, where the other order could miss it.
        self.start_watching(ctx);
        self.read_off_thread(true, true, true, Self::load, ctx);
    }
}

impl Handler<FsEvent> for ConfigWatcher {
    type Result = ();

    fn handle(&mut self, msg: FsEvent, ctx: &mut Self::Context) {
        let mut touched = false;
        for path in &msg.paths {
            match path.file_name().and_then(|n| n.to_str()) {
                Some(MCP_FILE) => self.dirty.mcp = true,
                Some(AGENTS_FILE) => self.dirty.agents = true,
                Some(PROMPT_FILE) => self.dirty.prompt = true,
                _ => continue,
            }
            touched = true;
        }
        if touched {
            self.schedule(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runaway_file_is_read_only_up_to_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        assert_eq!(read_capped(&path, 1000).unwrap().unwrap().len(), 1001, "one byte past the cap, no more");
        assert_eq!(read_capped(&path, 5000).unwrap().unwrap().len(), 5000);
        assert!(read_capped(&dir.path().join("missing.yaml"), 10).unwrap().is_none());
        std::fs::write(&path, [0xffu8, 0xfe]).unwrap();
        assert!(read_capped(&path, 10).is_err(), "not UTF-8 within the cap is an error");
    }
}
