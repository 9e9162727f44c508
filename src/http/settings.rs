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
use nova_actors::gateway::{AgentView, ListAgents};
use nova_actors::settings::agents::Agent;
use nova_actors::settings::mcp::{ConfigError, McpServer};
use nova_actors::settings::store::{BackupInfo, SettingsFile, StoreError};
use nova_actors::settings::Health;
use nova_actors::settings::{agents, mcp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{body_error, ApiError};
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

/// `GET /api/mcp`.
#[derive(Serialize, ToSchema)]
pub struct McpList {
    /// The servers of the last good config, in file order.
    pub servers: Vec<McpServerView>,
    /// Whether `mcp_servers.yaml` on disk is valid (when not, the servers
    /// are the last good ones).
    pub valid: bool,
    /// What is wrong with the file on disk.
    pub errors: Vec<ConfigError>,
}

/// One MCP server with its live health.
#[derive(Serialize, ToSchema)]
pub struct McpServerView {
    /// The server as the file lists it.
    #[serde(flatten)]
    pub server: McpServer,
    /// Its health (`disabled` for a disabled server).
    pub health: Health,
}

/// `GET /api/agents`.
#[derive(Serialize, ToSchema)]
pub struct AgentList {
    /// The agents of the last good `agents.yaml`, in file order.
    pub agents: Vec<AgentView>,
    /// Whether `agents.yaml` on disk is valid.
    pub valid: bool,
    /// What is wrong with the file on disk.
    pub errors: Vec<ConfigError>,
}

/// The answer to a toggle.
#[derive(Serialize, ToSchema)]
pub struct Toggled {
    /// The server or agent.
    pub name: String,
    /// Its `enabled` now.
    pub enabled: bool,
    /// Whether the file changed (`false`: it already was so).
    pub changed: bool,
}

/// The answer to `POST /api/config/validate`.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    /// Whether the YAML is valid.
    pub valid: bool,
    /// When valid as `mcp_servers.yaml`: its servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<McpServer>>,
    /// When valid as `agents.yaml`: its agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<Agent>>,
    /// Each problem, with its line.
    pub errors: Vec<ConfigError>,
}

/// `GET /api/config/backups`.
#[derive(Serialize, ToSchema)]
pub struct Backups {
    /// Every backup, newest first.
    pub backups: Vec<BackupInfo>,
}

/// The answer to a restore.
#[derive(Serialize, ToSchema)]
pub struct Restored {
    /// The backup put back.
    pub restored: String,
    /// The file it replaced.
    pub file: SettingsFile,
}

/// `GET /api/prompt`.
#[derive(Serialize, ToSchema)]
pub struct PromptView {
    /// The file name.
    pub file: &'static str,
    /// The prompt's text.
    pub content: String,
    /// `sha256:` and the hex digest of the text.
    pub hash: String,
    /// Changes seen since start (1 for the text found at start).
    pub version: u64,
    /// The text's size.
    pub bytes: usize,
    /// When it was loaded, RFC 3339.
    pub updated_at: Option<String>,
}

/// The answer to `PUT /api/prompt`.
#[derive(Serialize, ToSchema)]
pub struct PromptSaved {
    /// `sha256:` and the hex digest of the text saved.
    pub hash: String,
    /// Its size.
    pub bytes: usize,
}

/// `GET /api/mcp`: the servers of the last good config, each with its live
/// health (`disabled` for disabled servers), and whether the file on disk
/// is valid.
#[utoipa::path(
    get,
    path = "/api/mcp",
    tag = "settings",
    responses((status = 200, description = "The MCP servers with their health", body = McpList)),
    security(("admin_token" = [])),
)]
pub async fn list_mcp(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let config = settings.mcp.read().map(|c| c.clone()).unwrap_or_default();
    let health = settings.health.read().map(|h| h.clone()).unwrap_or_default();
    let errors = settings.mcp_errors.read().map(|e| e.clone()).unwrap_or_default();
    let servers = config
        .servers
        .into_iter()
        .map(|server| {
            let health = match health.get(&server.name) {
                _ if !server.enabled => Health { status: "disabled", ..Health::default() },
                Some(h) => h.clone(),
                None => Health::default(),
            };
            McpServerView { server, health }
        })
        .collect();
    Ok(HttpResponse::Ok().json(McpList { servers, valid: errors.is_empty(), errors }))
}

/// `GET /api/agents`: the agents of the last good `agents.yaml`, each with
/// its live availability (and, for webhooks, its queue), and whether the
/// file on disk is valid. Secrets are never shown.
#[utoipa::path(
    get,
    path = "/api/agents",
    tag = "settings",
    responses(
        (status = 200, description = "The agents with their availability", body = AgentList),
        (status = 503, description = "The agent gateway did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn list_agents(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let agents = state.node.gateway.send(ListAgents).await.map_err(ApiError::unavailable)?;
    let errors = state.settings.agents_errors.read().map(|e| e.clone()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(AgentList { agents, valid: errors.is_empty(), errors }))
}

/// The optional body of a toggle.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToggleBody {
    /// The value to set; without a body, the toggle flips it.
    enabled: bool,
}

/// `PUT /api/mcp/{name}/toggle`: flips `enabled`, or sets it to the body's
/// `{"enabled": bool}`. Only that line of the file changes.
#[utoipa::path(
    put,
    path = "/api/mcp/{name}/toggle",
    tag = "settings",
    params(("name" = String, Path, description = "The MCP server's name")),
    request_body(content = Option<ToggleBody>, description = "`{\"enabled\": bool}` to set it; no body (or `null`) flips it"),
    responses(
        (status = 200, description = "Its `enabled` now", body = Toggled),
        (status = 400, description = "The body is not `{\"enabled\": bool}`", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = crate::http::error::ErrorBody),
        (status = 404, description = "No such MCP server", body = crate::http::error::ErrorBody),
        (status = 422, description = "The file on disk is invalid: fix it first", body = crate::http::error::ErrorBody),
        (status = 500, description = "The file could not be written", body = crate::http::error::ErrorBody),
        (status = 503, description = "The blocking pool did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn toggle_mcp(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(body_error)?;
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
#[utoipa::path(
    put,
    path = "/api/agents/{name}/toggle",
    tag = "settings",
    params(("name" = String, Path, description = "The agent's name")),
    request_body(content = Option<ToggleBody>, description = "`{\"enabled\": bool}` to set it; no body (or `null`) flips it"),
    responses(
        (status = 200, description = "Its `enabled` now", body = Toggled),
        (status = 400, description = "The body is not `{\"enabled\": bool}`", body = crate::http::error::ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = crate::http::error::ErrorBody),
        (status = 404, description = "No such agent", body = crate::http::error::ErrorBody),
        (status = 422, description = "The file on disk is invalid: fix it first", body = crate::http::error::ErrorBody),
        (status = 500, description = "The file could not be written", body = crate::http::error::ErrorBody),
        (status = 503, description = "The blocking pool did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn toggle_agent(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(body_error)?;
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
        // No body, or `null`, flips.
        let wanted = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let body: Option<ToggleBody> = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("expected {{\"enabled\": true|false}}: {e}"))
            })?;
            body.map(|b| b.enabled)
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
        Ok(HttpResponse::Ok().json(Toggled { name, enabled: target, changed }))
    }
}

/// `?file=` of `POST /api/config/validate`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ValidateQuery {
    /// `mcp_servers.yaml` (the default) or `agents.yaml`.
    #[serde(default)]
    #[param(pattern = r"^(mcp_servers\.yaml|agents\.yaml)$")]
    file: Option<String>,
}

/// `POST /api/config/validate[?file=agents.yaml]`: checks the posted YAML
/// (the body, as text) as `mcp_servers.yaml` or `agents.yaml`; saves
/// nothing. The check runs on the blocking pool: a megabyte of YAML is
/// milliseconds of work, and this worker's WebSockets must not wait for it.
#[utoipa::path(
    post,
    path = "/api/config/validate",
    tag = "settings",
    params(ValidateQuery),
    request_body(content = Option<String>, content_type = "text/plain", description = "The YAML, as text (UTF-8, at most 1 MiB); none is an empty file"),
    responses(
        (status = 200, description = "Whether it is valid, with each problem and its line", body = Validation),
        (status = 400, description = "An unknown `file`, or a body that is not UTF-8", body = crate::http::error::ErrorBody),
        (status = 413, description = "Over 1 MiB", body = crate::http::error::ErrorBody),
        (status = 503, description = "The blocking pool did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn validate(
    _: Admin,
    query: web::Query<ValidateQuery>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(body_error)?;
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
                Ok(config) => Validation { valid: true, servers: None, agents: Some(config.agents), errors: vec![] },
                Err(errors) => Validation { valid: false, servers: None, agents: None, errors },
            }
        } else {
            match mcp::parse(text) {
                Ok(config) => Validation { valid: true, servers: Some(config.servers), agents: None, errors: vec![] },
                Err(errors) => Validation { valid: false, servers: None, agents: None, errors },
            }
        })
    })
    .await
    .map_err(ApiError::unavailable)?
    .ok_or_else(|| ApiError::bad_request("invalid_text", "the body is not UTF-8"))?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /api/config/backups`: every backup, newest first.
#[utoipa::path(
    get,
    path = "/api/config/backups",
    tag = "settings",
    responses(
        (status = 200, description = "Every backup, newest first", body = Backups),
        (status = 500, description = "The backup folder could not be read", body = crate::http::error::ErrorBody),
        (status = 503, description = "The blocking pool did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn backups(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let list = blocking(move || store.backups().map_err(StoreError::Io)).await?;
    Ok(HttpResponse::Ok().json(Backups { backups: list }))
}

/// `POST /api/config/restore/{backup_id}`: puts a backup back (an MCP or
/// agents backup only if it still validates); the file it replaces is
/// backed up.
#[utoipa::path(
    post,
    path = "/api/config/restore/{backup_id}",
    tag = "settings",
    params(("backup_id" = String, Path, description = "An id from `GET /api/config/backups`",
        pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses(
        (status = 200, description = "Restored; the file it replaced was backed up", body = Restored),
        (status = 404, description = "No such backup", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not a backup id, or a backup that no longer validates", body = crate::http::error::ErrorBody),
        (status = 500, description = "The file could not be written", body = crate::http::error::ErrorBody),
        (status = 503, description = "The blocking pool did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
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
    Ok(HttpResponse::Ok().json(Restored { restored: id, file: restored }))
}

/// `GET /api/prompt`: the prompt in use.
#[utoipa::path(
    get,
    path = "/api/prompt",
    tag = "settings",
    responses((status = 200, description = "The system prompt in use", body = PromptView)),
    security(("admin_token" = [])),
)]
pub async fn get_prompt(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let prompt = state.settings.prompt.read().map(|p| p.clone()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(PromptView {
        file: nova_actors::settings::PROMPT_FILE,
        bytes: prompt.text.len(),
        content: prompt.text,
        hash: prompt.hash,
        version: prompt.version,
        updated_at: prompt.updated_at,
    }))
}

/// `PUT /api/prompt` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptBody {
    /// The new prompt, at most 1 MiB.
    content: String,
}

/// `PUT /api/prompt` `{"content": "…"}`: replaces the prompt.
#[utoipa::path(
    put,
    path = "/api/prompt",
    tag = "settings",
    request_body = PromptBody,
    responses(
        (status = 200, description = "Saved; the previous prompt was backed up", body = PromptSaved),
        (status = 400, description = "Bad JSON", body = crate::http::error::ErrorBody),
        (status = 413, description = "Over 1 MiB", body = crate::http::error::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::http::error::ErrorBody),
        (status = 500, description = "The file could not be written", body = crate::http::error::ErrorBody),
        (status = 503, description = "The blocking pool did not answer", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
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
    Ok(HttpResponse::Ok().json(PromptSaved { hash, bytes }))
}
