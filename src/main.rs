//! The `nova-realtime` binary: configuration, logging, then [`server`] until
//! SIGTERM or Ctrl-C starts a graceful drain.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nova_realtime::config::{Args, Config};
use nova_realtime::server;

/// jemalloc gives freed memory back to the system over time (a background
/// thread purges pages unused for a second); glibc's allocator kept the peak
/// of an attack resident for good (README, "Performance").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

fn main() -> ExitCode {
    nova_realtime::logging::init();
    let args = Args::parse();
    let health_check = args.health_check;
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            log::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if health_check {
        return probe_health(&config.bind);
    }
    config.announce();
    // Each connection is a descriptor; the soft limit is often far below
    // what the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("could not raise the open-file limit: {e}"),
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let listener = server::bind(&config.bind)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.bind)))?;
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

/// `GET /health` on the local server, for the container HEALTHCHECK: a
/// plain HTTP/1.0 request so the image needs no curl.
fn probe_health(bind: &str) -> ExitCode {
    let Ok(mut addr) = bind.parse::<SocketAddr>() else {
        eprintln!("health check: bind address '{bind}' is not IP:port");
        return ExitCode::FAILURE;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let answer = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(a) if a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(a) => {
            eprintln!("health check: {}", a.lines().next().unwrap_or("empty answer"));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("health check: {addr}: {e}");
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
