//! The admin dashboard: `GET /dashboard` and its files under
//! `/dashboard/{file}`, embedded in the binary (the machines it runs on may
//! have no internet, so no CDN and no build step: plain ES modules, charts
//! drawn on a `<canvas>`).
//!
//! The page holds no data and needs no authentication; every call it makes
//! carries the admin token, which the operator enters once and the page
//! keeps in `sessionStorage` (never in a URL). Its live parts use the
//! JavaScript client (`/client/nova-realtime.js`) with the admin token as
//! the API key.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles
//! and images from this server only (no inline script or style), and
//! connections to this server and the WebSocket of the host the page was
//! asked from; the page cannot be framed.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::assets::{ascii, etag, matches_etag};
use super::error::ApiError;

/// A file of the dashboard.
struct File {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

/// Builds a [`File`] whose ETag the compiler computes from its content.
macro_rules! embedded {
    ($name:literal, $content_type:literal) => {{
        const BODY: &str = include_str!(concat!("dashboard/", $name));
        const TAG: [u8; 18] = etag(BODY.as_bytes());
        File { name: $name, body: BODY, content_type: $content_type, etag: ascii(&TAG) }
    }};
}

/// The page and its modules.
const FILES: &[File] = &[
    embedded!("index.html", "text/html; charset=utf-8"),
    embedded!("dashboard.css", "text/css; charset=utf-8"),
    embedded!("dashboard.js", "text/javascript; charset=utf-8"),
    embedded!("dom.js", "text/javascript; charset=utf-8"),
    embedded!("chart.js", "text/javascript; charset=utf-8"),
    embedded!("overview.js", "text/javascript; charset=utf-8"),
    embedded!("connections.js", "text/javascript; charset=utf-8"),
    embedded!("channels.js", "text/javascript; charset=utf-8"),
    embedded!("settings.js", "text/javascript; charset=utf-8"),
];

/// `GET /dashboard`: the page.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 when it is current")),
    responses(
        (status = 200, description = "The dashboard's page (it holds no data; it asks for the admin token)", content_type = "text/html", body = String),
        (status = 304, description = "The copy the browser has is current"),
    ),
    security(()),
)]
pub async fn index(req: HttpRequest) -> HttpResponse {
    match FILES.iter().find(|f| f.name == "index.html") {
        Some(page) => serve(&req, page),
        None => not_found(&req),
    }
}

/// `GET /dashboard/{file}`: one of the page's files.
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "dashboard",
    params(
        ("file" = String, Path, description = "A file of the page: `dashboard.js`, `dashboard.css`, …"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 when it is current"),
    ),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "text/html"),
        )),
        (status = 304, description = "The copy the browser has is current"),
        (status = 404, description = "No such file", body = crate::http::error::ErrorBody),
    ),
    security(()),
)]
pub async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    match FILES.iter().find(|f| f.name == name.as_str()) {
        Some(file) => serve(&req, file),
        None => not_found(&req),
    }
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    let message = format!("no such dashboard file: {}", req.path());
    let mut response = ApiError::new(StatusCode::NOT_FOUND, "not_found", message).error_response();
    secure(&mut response, req);
    response
}

fn serve(req: &HttpRequest, file: &File) -> HttpResponse {
    let mut response = if matches_etag(req, file.etag) {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok().content_type(file.content_type).body(file.body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(file.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(&mut response, req);
    response
}

/// The headers that keep the page to itself.
fn secure(response: &mut HttpResponse, req: &HttpRequest) {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(host)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The policy for a page asked from `host` (its `Host` header): this
/// server's scripts, styles and images only, and connections to it and to
/// its WebSocket (`ws:` or `wss:` behind a TLS proxy; `'self'` covers them
/// only in newer browsers). A host that is not a plain host name or address
/// with a port is left out rather than written into the header.
pub fn content_security_policy(host: Option<&str>) -> String {
    let valid = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    };
    let sockets = host.filter(valid).map(|h| format!(" ws://{h} wss://{h}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_websocket_of_a_plain_host_only() {
        let policy = content_security_policy(Some("nova.example.com:8080"));
        assert!(policy.contains("connect-src 'self' ws://nova.example.com:8080 wss://nova.example.com:8080;"));
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe"));
        for hostile in [Some("evil.com; script-src *"), Some("a b"), Some(""), None] {
            assert!(content_security_policy(hostile).contains("connect-src 'self'; "), "{hostile:?}");
        }
        assert!(content_security_policy(Some("[::1]:80")).contains("ws://[::1]:80"));
    }

    #[test]
    fn every_file_has_its_own_tag() {
        let mut tags: Vec<&str> = FILES.iter().map(|f| f.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), FILES.len());
        assert!(FILES.iter().all(|f| !f.body.is_empty()));
    }
}
