//! The JavaScript client served by the server: `GET /client/nova-realtime.js`
//! and `.d.ts` are the committed files byte for byte, without a token, with
//! the headers a cross-origin `<script type="module">` and a cache need.

use crate::common::{TestServer, DEADLINE};

/// `GET path` without a token, with extra headers: status, headers, body.
async fn fetch(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let mut req = awc::Client::default().get(server.url(path)).timeout(DEADLINE);
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let mut res = req.send().await.expect("GET");
    let body = res.body().limit(4 * 1024 * 1024).await.expect("body").to_vec();
    (res.status().as_u16(), res.headers().clone(), body)
}

fn header<'a>(headers: &'a awc::http::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
}

fn committed(file: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js").join(file)).unwrap()
}

#[actix_rt::test]
async fn the_client_module_is_served_as_committed_to_any_origin_without_a_token() {
    let server = TestServer::start();
    let (status, headers, body) =
        fetch(&server, "/client/nova-realtime.js", &[("Origin", "https://app.example.com")]).await;
    assert_eq!(status, 200);
    assert!(body == committed("nova-realtime.js"), "the served module differs from clients/js/nova-realtime.js");
    assert_eq!(header(&headers, "content-type"), "text/javascript; charset=utf-8");
    // A module script from another origin is fetched in CORS mode.
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert_eq!(header(&headers, "x-typescript-types"), "./nova-realtime.d.ts");

    let (status, headers, body) = fetch(&server, "/client/nova-realtime.d.ts", &[]).await;
    assert_eq!(status, 200);
    assert!(body == committed("nova-realtime.d.ts"), "the served types differ from clients/js/nova-realtime.d.ts");
    assert_eq!(header(&headers, "content-type"), "application/typescript; charset=utf-8");
}

#[actix_rt::test]
async fn a_cached_copy_is_revalidated_with_its_etag() {
    let server = TestServer::start();
    let (_, headers, _) = fetch(&server, "/client/nova-realtime.js", &[]).await;
    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let (status, headers, body) = fetch(&server, "/client/nova-realtime.js", &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), etag);
    let (status, _, body) = fetch(&server, "/client/nova-realtime.js", &[("If-None-Match", "\"stale\"")]).await;
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let (_, dts, _) = fetch(&server, "/client/nova-realtime.d.ts", &[]).await;
    assert_ne!(header(&dts, "etag"), etag, "each file has its own tag");
}
