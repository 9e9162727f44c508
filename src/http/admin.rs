//! `POST /api/admin/restart/{service}`: restarts a backend service from the
//! settings page, for development. Disabled unless services are configured
//! (`NOVA_RESTART_SERVICES`), and always in production mode (403). Only a
//! service on the allow-list is restarted (404 otherwise); the configured
//! command (default `docker compose restart {service}`) runs without a
//! shell, so a service name can never become shell syntax, and within a
//! timeout. The answer carries its exit code, stdout and stderr.

use std::process::Stdio;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::{Admin, AppState};
use crate::config::{Config, Mode};

/// Output kept from a command, per stream.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The restart endpoint's configuration.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Why it is disabled, when it is.
    disabled: Option<&'static str>,
    services: Vec<String>,
    command: Vec<String>,
    timeout: Duration,
}

impl Restart {
    /// From the node's configuration.
    pub fn new(config: &Config) -> Restart {
        let s = &config.settings;
        let disabled = if config.mode == Mode::Production {
            Some("the restart endpoint is for development and is disabled in production mode")
        } else if s.restart_services.is_empty() {
            Some("the restart endpoint is disabled: set NOVA_RESTART_SERVICES to enable it")
        } else {
            None
        };
        Restart {
            disabled,
            services: s.restart_services.clone(),
            command: s.restart_command.clone(),
            timeout: s.restart_timeout,
        }
    }
}

/// What a restart did.
#[derive(Serialize, ToSchema)]
pub struct Restarted {
    /// The service.
    pub service: String,
    /// The command run, word by word.
    pub command: Vec<String>,
    /// Its exit code; `null` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Whether it exited with 0.
    pub success: bool,
    /// Its standard output (the first 64 KiB).
    pub stdout: String,
    /// Its standard error (the first 64 KiB).
    pub stderr: String,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
}

fn capped(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT_BYTES)]);
    text.into_owned()
}

/// `POST /api/admin/restart/{service}`.
#[utoipa::path(
    post,
    path = "/api/admin/restart/{service}",
    tag = "admin",
    params(("service" = String, Path, description = "A service of `NOVA_RESTART_SERVICES`")),
    responses(
        (status = 200, description = "The command ran (see `success` and `exit_code`)", body = Restarted),
        (status = 403, description = "Disabled: production mode, or no services configured", body = crate::http::error::ErrorBody),
        (status = 404, description = "Not a service this server may restart", body = crate::http::error::ErrorBody),
        (status = 500, description = "The restart command is empty", body = crate::http::error::ErrorBody),
        (status = 502, description = "The command could not be run", body = crate::http::error::ErrorBody),
        (status = 504, description = "The command did not finish in time and was killed", body = crate::http::error::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn restart(
    _: Admin,
    state: web::Data<AppState>,
    service: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let restart = &state.restart;
    if let Some(why) = restart.disabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "restart_disabled", why));
    }
    let service = service.into_inner();
    if !restart.services.contains(&service) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("'{}' is not a service this server may restart", service.escape_default()),
        ));
    }
    let argv: Vec<String> = restart.command.iter().map(|w| w.replace("{service}", &service)).collect();
    let (program, args) = argv.split_first().ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "restart_failed", "the restart command is empty")
    })?;
    log::info!("restarting '{service}': {}", argv.join(" "));
    let started = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ApiError::new(StatusCode::BAD_GATEWAY, "restart_failed", format!("cannot run '{program}': {e}"))
        })?;
    let output = match tokio::time::timeout(restart.timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, "restart_failed", format!("'{program}' failed: {e}")))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "restart_timeout",
                format!("the restart command did not finish within {:?} and was killed", restart.timeout),
            ))
        }
    };
    Ok(HttpResponse::Ok().json(Restarted {
        service,
        command: argv,
        exit_code: output.status.code(),
        success: output.status.success(),
        stdout: capped(&output.stdout),
        stderr: capped(&output.stderr),
        duration_ms: started.elapsed().as_millis() as u64,
    }))
}
