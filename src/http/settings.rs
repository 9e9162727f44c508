//! The settings page's REST API: the MCP servers with live health, the
//! agents with live availability, toggles,
//! validation without saving, backups and restores, and the system prompt.
//!
//! Writes go through the store (atomic, backed up first, one at a time) and
//! change only the file: the config watcher sees the change like any other
//! edit and publishes the events (`config_validated`, `mcp_toggled`,
//! `prompt_updated`), so a hand edit and an API call reach clients the same
//! way. File work runs on actix-web's blocking pool.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use nova_actors::gateway::ListAgents;
use nova_actors::settings::store::{SettingsFile, StoreError};
use nova_actors::settings::Health;
use nova_actors::settings::{agents, mcp};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{Admin, AppState};

/// Largest prompt accepted.
pub const MAX_PROMPT_BYTES: usize = 1024 * 1024;

/// Largest YAML accepted for validation: the largest file the validator
/// accepts at all.
pub const MAX_YAML_BYTES: usize = mcp::MAX_BYTES;

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
        StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        StoreError::Io(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", e.to_string()),
    }
}

/// Runs file work off the event loop.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(work).await.map_err(ApiError::unavailable)?.map_err(store_error)
}

/// `GET /api/mcp`: the servers of the last good config, each with its live
/// health (`disabled` for disabled servers), and whether the file on disk
/// is valid.
pub async fn list_mcp(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let config = settings.mcp.read().map(|c| c.clone()).unwrap_or_default();
    let health = settings.health.read().map(|h| h.clone()).unwrap_or_default();
    let errors = settings.mcp_errors.read().map(|e| e.clone()).unwrap_or_default();
    let servers: Vec<Value> = config
        .servers
        .iter()
        .map(|s| {
            let health = match health.get(&s.name) {
                _ if !s.enabled => Health { status: "disabled", ..Health::default() },
                Some(h) => h.clone(),
                None => Health::default(),
            };
            json!({
                "name": s.name,
                "url": s.url,
                "health_url": s.health_url,
                "description": s.description,
                "enabled": s.enabled,
                "health": health,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "servers": servers, "valid": errors.is_empty(), "errors": errors })))
}

/// `GET /api/agents`: the agents of the last good `agents.yaml`, each with
/// its live availability (and, for webhooks, its queue), and whether the
/// file on disk is valid. Secrets are never shown.
pub async fn list_agents(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let agents = state.node.gateway.send(ListAgents).await.map_err(ApiError::unavailable)?;
    let errors = state.settings.agents_errors.read().map(|e| e.clone()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({ "agents": agents, "valid": errors.is_empty(), "errors": errors })))
}

/// The optional body of a toggle.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToggleBody {
    enabled: bool,
}

/// `PUT /api/mcp/{name}/toggle`: flips `enabled`, or sets it to the body's
/// `{"enabled": bool}`. Only that line of the file changes.
pub async fn toggle_mcp(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let toggle = Toggle {
        file: SettingsFile::Mcp,
        what: "MCP server",
        enabled: |text, name| {
            let config = mcp::parse(text).map_err(|errors| invalid_file(SettingsFile::Mcp, &errors))?;
            Ok(config.get(name).map(|server| server.enabled))
        },
        edit: mcp::set_enabled,
    };
    toggle.run(&state, name.into_inner(), &body).await
}

/// `PUT /api/agents/{name}/toggle`: as the MCP toggle, for `agents.yaml`.
pub async fn toggle_agent(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let toggle = Toggle {
        file: SettingsFile::Agents,
        what: "agent",
        enabled: |text, name| {
            let config = agents::parse(text).map_err(|errors| invalid_file(SettingsFile::Agents, &errors))?;
            Ok(config.get(name).map(|agent| agent.enabled))
        },
        edit: agents::set_enabled,
    };
    toggle.run(&state, name.into_inner(), &body).await
}

fn invalid_file(file: SettingsFile, errors: &[mcp::ConfigError]) -> StoreError {
    let first = errors.first().map(ToString::to_string).unwrap_or_default();
    StoreError::Invalid(format!("{} is invalid, fix it first: {first}", file.name()))
}

/// The one toggle of the settings files: an entry's `enabled`, flipped or
/// set, by editing its one line.
struct Toggle {
    file: SettingsFile,
    what: &'static str,
    /// The entry's `enabled` in the file's text; `None` when there is no
    /// such entry.
    enabled: fn(&str, &str) -> Result<Option<bool>, StoreError>,
    edit: fn(&str, &str, bool) -> Result<String, mcp::ConfigError>,
}

impl Toggle {
    async fn run(self, state: &AppState, name: String, body: &[u8]) -> Result<HttpResponse, ApiError> {
        let wanted = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let body: ToggleBody = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("expected {{\"enabled\": true|false}}: {e}"))
            })?;
            Some(body.enabled)
        };
        let store = state.store.clone();
        let (target, changed) = {
            let name = name.clone();
            blocking(move || {
                let mut outcome = (false, false);
                store.update(self.file, |text| {
                    let current = (self.enabled)(text, &name)?
                        .ok_or_else(|| StoreError::NotFound(format!("no {} '{name}'", self.what)))?;
                    let enabled = wanted.unwrap_or(!current);
                    outcome = (enabled, enabled != current);
                    if !outcome.1 {
                        return Ok(text.to_owned());
                    }
                    (self.edit)(text, &name, enabled).map_err(|e| StoreError::Invalid(e.to_string()))
                })?;
                Ok(outcome)
            })
            .await?
        };
        Ok(HttpResponse::Ok().json(json!({ "name": name, "enabled": target, "changed": changed })))
    }
}

/// `?file=` of `POST /api/config/validate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateQuery {
    /// `mcp_servers.yaml` (the default) or `agents.yaml`.
    #[serde(default)]
    file: Option<String>,
}

/// `POST /api/config/validate[?file=agents.yaml]`: checks the posted YAML
/// (the body, as text) as `mcp_servers.yaml` or `agents.yaml`; saves
/// nothing. The check runs on the blocking pool: a megabyte of YAML is
/// milliseconds of work, and this worker's WebSockets must not wait for it.
pub async fn validate(_: Admin, query: web::Query<ValidateQuery>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    if body.len() > MAX_YAML_BYTES {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "at most 1 MiB of YAML"));
    }
    let agents_file = match query.into_inner().file.as_deref() {
        None | Some(nova_actors::settings::MCP_FILE) => false,
        Some(nova_actors::settings::AGENTS_FILE) => true,
        Some(other) => {
            let message = format!(
                "'{}' is not a file this server validates: mcp_servers.yaml or agents.yaml",
                other.escape_default()
            );
            return Err(ApiError::bad_request("invalid_file", message));
        }
    };
    let answer = web::block(move || {
        let text = std::str::from_utf8(&body).ok()?;
        Some(if agents_file {
            match agents::parse(text) {
                Ok(config) => json!({ "valid": true, "agents": config.agents, "errors": [] }),
                Err(errors) => json!({ "valid": false, "errors": errors }),
            }
        } else {
            match mcp::parse(text) {
                Ok(config) => json!({ "valid": true, "servers": config.servers, "errors": [] }),
                Err(errors) => json!({ "valid": false, "errors": errors }),
            }
        })
    })
    .await
    .map_err(ApiError::unavailable)?
    .ok_or_else(|| ApiError::bad_request("invalid_text", "the body is not UTF-8"))?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /api/config/backups`: every backup, newest first.
pub async fn backups(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let list = blocking(move || store.backups().map_err(StoreError::Io)).await?;
    Ok(HttpResponse::Ok().json(json!({ "backups": list })))
}

/// `POST /api/config/restore/{backup_id}`: puts a backup back (an MCP or
/// agents backup only if it still validates); the file it replaces is
/// backed up.
pub async fn restore(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let store = state.store.clone();
    let restored = {
        let id = id.clone();
        blocking(move || {
            store.restore(&id, |file, text| {
                let errors = match file {
                    SettingsFile::Mcp => mcp::parse(text).err(),
                    SettingsFile::Agents => agents::parse(text).err(),
                    SettingsFile::Prompt => None,
                };
                match errors {
                    None => Ok(()),
                    Some(errors) => {
                        let first = errors.first().map(ToString::to_string).unwrap_or_default();
                        Err(StoreError::Invalid(format!("the backup does not validate: {first}")))
                    }
                }
            })
        })
        .await?
    };
    Ok(HttpResponse::Ok().json(json!({ "restored": id, "file": restored })))
}

/// `GET /api/prompt`: the prompt in use.
pub async fn get_prompt(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let prompt = state.settings.prompt.read().map(|p| p.clone()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({
        "file": nova_actors::settings::PROMPT_FILE,
        "content": prompt.text,
        "hash": prompt.hash,
        "version": prompt.version,
        "bytes": prompt.text.len(),
        "updated_at": prompt.updated_at,
    })))
}

/// `PUT /api/prompt` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptBody {
    content: String,
}

/// `PUT /api/prompt` `{"content": "…"}`: replaces the prompt.
pub async fn put_prompt(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<PromptBody>,
) -> Result<HttpResponse, ApiError> {
    let content = body.into_inner().content;
    if content.len() > MAX_PROMPT_BYTES {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "a prompt may have at most 1 MiB"));
    }
    let store = state.store.clone();
    let hash = nova_actors::settings::prompt::hash(&content);
    let bytes = content.len();
    blocking(move || store.update(SettingsFile::Prompt, |_| Ok(content))).await?;
    Ok(HttpResponse::Ok().json(json!({ "hash": hash, "bytes": bytes })))
}
