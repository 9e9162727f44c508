//! The JavaScript client, served from the binary so a page can import it
//! without a bundler or a CDN: `GET /client/nova-realtime.js` and its types,
//! `GET /client/nova-realtime.d.ts`. No authentication: the module is public
//! code and holds no secret.
//!
//! Both carry `Access-Control-Allow-Origin: *`, because a `<script
//! type="module">` from another origin (a frontend on its own port) is
//! fetched in CORS mode and fails without it; whether that page may then
//! open a WebSocket is still decided by the allowed origins. An `ETag` made
//! from the content at compile time, with `Cache-Control: no-cache`, lets
//! browsers keep the file and revalidate it with a `304` after an upgrade.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

/// The client module, as committed in clients/js.
pub const CLIENT_JS: &str = include_str!("../../clients/js/nova-realtime.js");
/// Its TypeScript declarations.
pub const CLIENT_DTS: &str = include_str!("../../clients/js/nova-realtime.d.ts");

/// A file served from the binary.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

const JS: Asset = Asset { body: CLIENT_JS, content_type: "text/javascript; charset=utf-8", etag: JS_ETAG };
const DTS: Asset = Asset { body: CLIENT_DTS, content_type: "application/typescript; charset=utf-8", etag: DTS_ETAG };

const JS_ETAG_BYTES: [u8; 18] = etag(CLIENT_JS.as_bytes());
const DTS_ETAG_BYTES: [u8; 18] = etag(CLIENT_DTS.as_bytes());
const JS_ETAG: &str = ascii(&JS_ETAG_BYTES);
const DTS_ETAG: &str = ascii(&DTS_ETAG_BYTES);

/// `GET /client/nova-realtime.js`. Deno finds the types through
/// `X-TypeScript-Types`.
#[utoipa::path(
    get,
    path = "/client/nova-realtime.js",
    tag = "client",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 when it is current")),
    responses(
        (status = 200, description = "The client module (ES module, no dependencies)", content_type = "text/javascript", body = String),
        (status = 304, description = "The copy the client has is current"),
    ),
    security(()),
)]
pub async fn client_js(req: HttpRequest) -> HttpResponse {
    let mut response = serve(&req, &JS);
    response.headers_mut().insert(
        header::HeaderName::from_static("x-typescript-types"),
        HeaderValue::from_static("./nova-realtime.d.ts"),
    );
    response
}

/// `GET /client/nova-realtime.d.ts`.
#[utoipa::path(
    get,
    path = "/client/nova-realtime.d.ts",
    tag = "client",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 when it is current")),
    responses(
        (status = 200, description = "The client's TypeScript declarations", content_type = "application/typescript", body = String),
        (status = 304, description = "The copy the client has is current"),
    ),
    security(()),
)]
pub async fn client_dts(req: HttpRequest) -> HttpResponse {
    serve(&req, &DTS)
}

fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let mut response = if matches_etag(req, asset.etag) {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok().content_type(asset.content_type).body(asset.body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Whether `If-None-Match` names `etag` (or is `*`); the dashboard's files
/// are tagged the same way.
pub(super) fn matches_etag(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `"<16 hex digits>"`: FNV-1a of the content, computed by the compiler so
/// serving costs nothing.
pub(super) const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut j = 0;
    while j < 16 {
        out[1 + j] = digits[((hash >> (60 - 4 * j)) & 0xf) as usize];
        j += 1;
    }
    out
}

/// The tag as text; it is ASCII by construction.
pub(super) const fn ascii(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => "\"0\"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ_by_content() {
        assert_eq!(JS_ETAG.len(), 18);
        assert!(JS_ETAG.starts_with('"') && JS_ETAG.ends_with('"'));
        assert!(JS_ETAG[1..17].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(JS_ETAG, DTS_ETAG);
        assert_eq!(ascii(&etag(b"")), "\"cbf29ce484222325\"", "FNV-1a's offset basis for no bytes");
    }
}
