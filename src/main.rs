//! The `nova-realtime` binary: configuration, logging, then [`server`] until
//! SIGTERM or Ctrl-C starts a graceful drain.

use std::net::TcpListener;
use std::process::ExitCode;

use nova_realtime::config::Config;
use nova_realtime::server;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            log::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    config.announce();
    // Each connection is a descriptor; the soft limit is often far below
    // what the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("could not raise the open-file limit: {e}"),
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind(&config.bind)?;
        let running = server::build(listener, config)?;
        log::info!("listening on http://{} (WebSocket ws://{}/ws)", running.addr, running.addr);
        let control = running.control();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            control.shutdown().await;
        });
        running.run().await
    });
    match result {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => log::info!("interrupt received"),
            }
        }
        Err(e) => {
            log::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
