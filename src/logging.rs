//! Logging: env_logger (`RUST_LOG`, default `info`), with the one noisy
//! source a client controls turned down.
//!
//! actix-http logs every malformed request it is sent at ERROR
//! (`actix_http::h1::dispatcher`: "stream error: …"), so anyone able to open
//! a socket could write a line to the log per request, thousands a second.
//! Those records are demoted to DEBUG: a malformed request is the client's
//! fault, answered with a 400, and not news to the operator. `RUST_LOG=
//! actix_http=debug` still shows them.

use log::{Level, Log, Metadata, Record};

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

/// Installs the logger; call once, first thing.
pub fn init() {
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Quiet(logger))).is_ok() {
        log::set_max_level(max);
    }
}
