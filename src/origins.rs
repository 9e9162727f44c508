//! Browser origins: which may open a WebSocket or call the REST API.
//!
//! Requests without an `Origin` header (servers, CLI tools) are not browser
//! requests and are always allowed, and neither list nor mode is needed for
//! a page this server served itself (the dashboard): a WebSocket whose
//! `Origin` names the host it was sent to ([`Origins::allows_for`]). A refused origin is logged once, with
//! the allowed list, so a misconfigured frontend is easy to diagnose and a
//! page retrying in a loop does not fill the log.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use actix_web::http::header::HeaderValue;

/// Browser origins allowed to open WebSockets and call the REST API.
/// Requests without an `Origin` header (servers, CLI tools) are not browser
/// requests and are always allowed.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    any: bool,
    localhost: bool,
    exact: Vec<String>,
    /// Origins already logged as refused: each is logged once, so a page
    /// retrying in a loop does not fill the log.
    refused: Arc<Mutex<HashSet<String>>>,
}

/// Refused origins remembered for logging at most; past it, no more are
/// logged (a scan of made-up origins cannot grow memory).
const MAX_LOGGED_ORIGINS: usize = 1000;

impl Origins {
    /// From the configured list; `*` allows any origin.
    pub fn new(list: &[String], localhost: bool) -> Self {
        let any = list.iter().any(|o| o.trim() == "*");
        let exact = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty() && o != "*")
            .collect();
        Origins { any, localhost, exact, refused: Arc::default() }
    }

    /// Whether a request with this `Origin` header is allowed. The first
    /// refusal of each origin is logged with the allowed list.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        let origin = origin.to_ascii_lowercase();
        let allowed = self.any || self.exact.contains(&origin) || (self.localhost && is_localhost(&origin));
        if !allowed {
            self.log_refusal(&origin);
        }
        allowed
    }

    /// Whether a WebSocket upgrade with this `Origin`, sent to `host` (its
    /// `Host` header), is allowed: an origin on the same host and port is
    /// (the page came from this server, e.g. the dashboard), any other as
    /// [`Origins::allows`] says. The scheme is not compared: behind a
    /// TLS-terminating proxy the page is `https://` while the proxy's
    /// request to this server is plain. No cookie authenticates a
    /// WebSocket here (credentials come in `connection.init`), so a page
    /// that names this host cannot borrow a browser's credentials.
    ///
    /// Not in development mode, where localhost pages are allowed anyway:
    /// there the public `development` key reads every channel, and a page
    /// of any site could rebind its own name to this machine's address
    /// (DNS rebinding) and so be "on the same host".
    pub fn allows_for(&self, origin: &HeaderValue, host: Option<&[u8]>) -> bool {
        let same_host = !self.localhost
            && host.is_some_and(|host| {
                let origin = origin.as_bytes();
                let rest = strip_prefix_ignore_case(origin, b"https://")
                    .or_else(|| strip_prefix_ignore_case(origin, b"http://"));
                rest.is_some_and(|rest| !rest.is_empty() && rest.eq_ignore_ascii_case(host))
            });
        same_host || self.allows(origin)
    }

    fn log_refusal(&self, origin: &str) {
        let Ok(mut refused) = self.refused.lock() else { return };
        let shown: String = origin.chars().take(200).collect();
        if refused.len() >= MAX_LOGGED_ORIGINS || !refused.insert(shown.clone()) {
            return;
        }
        log::warn!("refused browser origin '{shown}' (logged once): allowed are {}", self.describe());
    }

    /// The allowed origins, for people.
    pub fn describe(&self) -> String {
        if self.any {
            return "any origin (*)".into();
        }
        let mut list: Vec<String> = self.exact.clone();
        if self.localhost {
            list.push("localhost, 127.0.0.1 and [::1] on any port".into());
        }
        if list.is_empty() {
            return "none (set NOVA_ALLOWED_ORIGINS); requests without an Origin header are not browsers and are allowed"
                .into();
        }
        list.join(", ")
    }
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = bytes.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &bytes[prefix.len()..])
}

fn is_localhost(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default(),
        None => rest.split(':').next().unwrap_or_default().to_owned(),
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn origins() {
        let dev = Origins::new(&["https://app.example.com".into()], true);
        assert!(dev.allows(&header("https://app.example.com")));
        assert!(dev.allows(&header("HTTPS://APP.EXAMPLE.COM")));
        assert!(dev.allows(&header("http://localhost:5173")));
        assert!(dev.allows(&header("http://127.0.0.1:3000")));
        assert!(dev.allows(&header("http://[::1]:3000")));
        assert!(!dev.allows(&header("http://localhost.evil.com")));
        assert!(!dev.allows(&header("https://evil.example.com")));
        let prod = Origins::new(&[], false);
        assert!(!prod.allows(&header("http://localhost:5173")));
        assert!(Origins::new(&["*".into()], false).allows(&header("https://anything.io")));
    }

    #[test]
    fn a_page_of_the_host_itself_is_allowed() {
        let none = Origins::new(&[], false);
        let host = Some(&b"nova.example.com:8080"[..]);
        assert!(none.allows_for(&header("http://nova.example.com:8080"), host));
        assert!(none.allows_for(&header("HTTPS://Nova.Example.com:8080"), host));
        assert!(!none.allows_for(&header("http://nova.example.com:8081"), host));
        assert!(!none.allows_for(&header("http://nova.example.com"), host));
        assert!(!none.allows_for(&header("http://evil.com/nova.example.com:8080"), host));
        assert!(!none.allows_for(&header("null"), Some(b"null")));
        assert!(!none.allows_for(&header("http://"), Some(b"")));
        assert!(!none.allows_for(&header("http://nova.example.com:8080"), None));
        let listed = Origins::new(&["https://app.example.com".into()], false);
        assert!(listed.allows_for(&header("https://app.example.com"), host), "the list still counts");
        // In development mode only localhost pages: a rebound name is not.
        let dev = Origins::new(&[], true);
        assert!(!dev.allows_for(&header("http://rebound.evil.com:8000"), Some(b"rebound.evil.com:8000")));
        assert!(dev.allows_for(&header("http://127.0.0.1:8000"), Some(b"127.0.0.1:8000")));
    }
}
