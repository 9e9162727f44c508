//! `file.upload.*` and `file.chunk`: uploads, authorized by the backend,
//! either straight to storage (a presigned URL) or in chunks over the socket.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{event, from, Event};

/// `file.upload.request`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct RequestData {
    /// The file's name, without a path.
    #[schemars(length(min = 1, max = 255))]
    filename: String,
    /// Its size in bytes.
    size: u64,
    /// Its media type.
    content_type: String,
    /// `sha256:<hex>` of the content, checked when the upload completes.
    #[serde(default)]
    checksum: Option<String>,
}

/// `file.upload.authorized`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct AuthorizedData {
    /// The upload: every later `file.*` of it carries it.
    upload_id: String,
    /// How to send the content.
    method: UploadMethod,
    /// Where to `PUT`/`POST` it (not for `chunked`).
    #[serde(default)]
    url: Option<String>,
    /// Headers the request must carry.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// For `chunked`: the size of each `file.chunk`.
    #[serde(default)]
    chunk_size: Option<u64>,
    /// When the authorization lapses, RFC 3339.
    #[serde(default)]
    expires_at: Option<String>,
}

/// How an authorized upload is sent.
#[derive(Serialize, Deserialize, JsonSchema)]
enum UploadMethod {
    /// An HTTP PUT to `url` (a presigned URL).
    #[serde(rename = "PUT")]
    Put,
    /// An HTTP POST to `url`.
    #[serde(rename = "POST")]
    Post,
    /// `file.chunk` frames over the socket.
    #[serde(rename = "chunked")]
    Chunked,
}

/// `file.chunk`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ChunkData {
    /// The upload.
    upload_id: String,
    /// The chunk's position (0, 1, 2, …).
    index: u64,
    /// The bytes, base64.
    data: String,
    /// True on the last chunk.
    #[serde(default)]
    last: Option<bool>,
}

/// `file.upload.progress`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct ProgressData {
    /// The upload.
    upload_id: String,
    /// Bytes stored so far.
    bytes_received: u64,
    /// The file's size.
    total_bytes: u64,
}

/// `file.upload.complete`.
#[derive(Serialize, Deserialize, JsonSchema)]
struct CompleteData {
    /// The upload.
    upload_id: String,
    /// The stored file's id, for messages that refer to it.
    file_id: String,
    /// Its size in bytes.
    #[serde(default)]
    size: Option<u64>,
    /// `sha256:<hex>` of what was stored.
    #[serde(default)]
    checksum: Option<String>,
    /// Where to fetch it.
    #[serde(default)]
    url: Option<String>,
}

/// The events of this family.
pub(super) const EVENTS: &[Event] = &[
    event!("file.upload.request", from::CLIENT, Agent, Optional, RequestData,
        "Ask to upload a file.", {"filename": "plan.pdf", "size": 482133, "content_type": "application/pdf"}),
    event!("file.upload.authorized", from::BACKEND, Delivered, Optional, AuthorizedData,
        "How and where to send an upload's content.",
        {"upload_id": "up-1", "method": "PUT", "url": "https://files.example/up-1?sig=…", "expires_at": "2026-12-06T10:00:00.000Z"}),
    event!("file.chunk", from::CLIENT, Agent, Optional, ChunkData,
        "One chunk of a chunked upload.", {"upload_id": "up-1", "index": 0, "data": "JVBERi0xLjQK"}),
    event!("file.upload.progress", from::BACKEND, Delivered, Optional, ProgressData,
        "How much of an upload has been stored.", {"upload_id": "up-1", "bytes_received": 262144, "total_bytes": 482133}),
    event!("file.upload.complete", from::BACKEND, Delivered, Optional, CompleteData,
        "An upload is stored.", {"upload_id": "up-1", "file_id": "f-9", "size": 482133}),
];
