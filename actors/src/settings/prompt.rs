//! The system prompt as clients learn of it: a content hash, a version that
//! counts changes since this node started, and the text itself.
//!
//! `prompt_updated` carries the whole text up to [`MAX_INLINE_BYTES`]; a
//! larger prompt is announced by hash, size and a preview of its start, and
//! a client fetches it with `GET /api/prompt`. A diff would save bytes on
//! small edits, but every client would then need the previous text right,
//! and one missed event would corrupt its copy; the hash lets a client tell
//! whether what it holds is current.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Largest prompt sent inside its event.
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// Bytes of a large prompt shown as its preview.
pub const PREVIEW_BYTES: usize = 1024;

/// The prompt as last loaded.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// The text.
    pub text: String,
    /// `sha256:` and the hex digest of the text.
    pub hash: String,
    /// Changes seen since start (1 for the text found at start).
    pub version: u64,
    /// When it was loaded, RFC 3339.
    pub updated_at: Option<String>,
}

/// The `data` of `prompt_updated`.
#[derive(Debug, Serialize)]
pub struct PromptEvent<'a> {
    /// The file name.
    pub file: &'a str,
    /// Content hash.
    pub hash: &'a str,
    /// Change counter.
    pub version: u64,
    /// Size of the text in bytes.
    pub bytes: usize,
    /// The text, unless larger than [`MAX_INLINE_BYTES`].
    pub content: Option<&'a str>,
    /// Whether `content` was left out for size.
    pub truncated: bool,
    /// The start of a text too large to send whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<&'a str>,
}

/// `sha256:<hex>` of `text`.
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

impl Prompt {
    /// The prompt after a change to `text`.
    pub fn changed(&self, text: String, now: String) -> Prompt {
        Prompt { hash: hash(&text), text, version: self.version + 1, updated_at: Some(now) }
    }

    /// What `prompt_updated` says of it.
    pub fn event(&self) -> PromptEvent<'_> {
        let truncated = self.text.len() > MAX_INLINE_BYTES;
        PromptEvent {
            file: super::PROMPT_FILE,
            hash: &self.hash,
            version: self.version,
            bytes: self.text.len(),
            content: (!truncated).then_some(self.text.as_str()),
            truncated,
            preview: truncated.then(|| prefix(&self.text, PREVIEW_BYTES)),
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_of_the_text() {
        assert_eq!(hash(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_ne!(hash("a"), hash("b"));
    }

    #[test]
    fn a_large_prompt_is_announced_by_hash_and_preview() {
        let small = Prompt::default().changed("You are Nova.".into(), "t".into());
        let event = small.event();
        assert_eq!((event.content, event.truncated, event.version), (Some("You are Nova."), false, 1));
        let big = small.changed("é".repeat(MAX_INLINE_BYTES), "t".into());
        let event = big.event();
        assert!(event.truncated && event.content.is_none());
        assert_eq!(event.version, 2);
        let preview = event.preview.unwrap();
        assert!(preview.len() <= PREVIEW_BYTES && preview.chars().all(|c| c == 'é'));
    }
}
