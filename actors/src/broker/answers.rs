//! Streamed answers assembled so far, so a client that arrives mid-answer
//! gets one `assistant.snapshot` instead of every token since the start.
//!
//! An answer is the `assistant.token` events of one `stream_id`: their
//! chunks in order make its text. It ends with a token marked `is_final`,
//! an `assistant.complete` or an `assistant.error`, and is kept
//! [`KEEP_ENDED`] after that, so a client that returns just after the end
//! still gets it whole. Each channel with history keeps its answers beside
//! its events (the memory broker, Redis), and each channel actor keeps the
//! same, updated from the events it fans out, so a snapshot always matches
//! the channel's position: its `offset` is the last token in its text, and
//! the live tokens after it follow.
//!
//! Bounds: [`MAX_ANSWER_BYTES`] of text per answer (a longer one is no
//! longer snapshotted: clients get its tokens), [`MAX_ANSWERS`] per channel
//! (the oldest goes first).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::names;
use crate::protocol::{self, kind, Frame};

/// Text kept per answer at most.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Answers kept per channel at most.
pub const MAX_ANSWERS: usize = 16;

/// How long an answer is kept after its end.
pub const KEEP_ENDED: Duration = Duration::from_secs(30);

/// What an event does to a channel's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The next chunk of an answer.
    Token {
        /// The answer.
        stream_id: Arc<str>,
        /// Its text.
        chunk: String,
        /// Whether it is the last.
        is_final: bool,
    },
    /// The answer ended (`assistant.complete`, `assistant.error`).
    End {
        /// The answer.
        stream_id: Arc<str>,
    },
}

impl Piece {
    /// The answer it belongs to.
    pub fn stream_id(&self) -> &Arc<str> {
        match self {
            Piece::Token { stream_id, .. } | Piece::End { stream_id } => stream_id,
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    data: TokenData,
}

#[derive(Deserialize)]
struct TokenData {
    stream_id: String,
    #[serde(default)]
    chunk: String,
    #[serde(default)]
    is_final: Option<bool>,
}

/// The piece an encoded event is, if any. Only `assistant.*` events are
/// parsed; for any other the cost is finding its type, near the front.
pub fn piece(text: &str) -> Option<Piece> {
    // Every envelope is written `{"id":…,"type":…`: a quick look first, at
    // bytes (a cut inside a character must not hide the type).
    let head = &text.as_bytes()[..text.len().min(160)];
    if !head.windows(11).any(|w| w == b"\"assistant.") {
        return None;
    }
    let Head { kind } = serde_json::from_str(text).ok()?;
    if !matches!(kind, kind::ASSISTANT_TOKEN | kind::ASSISTANT_COMPLETE | kind::ASSISTANT_ERROR) {
        return None;
    }
    let event: Event<'_> = serde_json::from_str(text).ok()?;
    let stream_id: Arc<str> = Arc::from(event.data.stream_id);
    match event.kind {
        kind::ASSISTANT_TOKEN => {
            Some(Piece::Token { stream_id, chunk: event.data.chunk, is_final: event.data.is_final.unwrap_or(false) })
        }
        _ => Some(Piece::End { stream_id }),
    }
}

/// One answer so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    /// The chunks so far.
    pub text: String,
    /// The offset of its first token.
    pub first: u64,
    /// The offset of its last token.
    pub last: u64,
    /// Whether it has ended.
    pub is_final: bool,
    /// When it ended, for [`KEEP_ENDED`].
    pub ended: Option<Instant>,
    /// Over [`MAX_ANSWER_BYTES`]: no longer snapshotted.
    pub too_long: bool,
    /// Arrival order, to drop the oldest past [`MAX_ANSWERS`].
    seq: u64,
}

impl Assembly {
    /// An answer as a store kept it (Redis); [`Answers::from_assemblies`]
    /// orders it among the others.
    pub fn stored(text: String, first: u64, last: u64, is_final: bool, ended: Option<Instant>, too_long: bool) -> Self {
        Assembly { text, first, last, is_final, ended, too_long, seq: 0 }
    }
}

/// A channel's answers, by `stream_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    by_id: HashMap<Arc<str>, Assembly>,
    next_seq: u64,
}

impl Answers {
    /// No answers.
    pub fn new() -> Answers {
        Answers::default()
    }

    /// Answers as a store read them (Redis), trusted no further than
    /// their bounds.
    pub fn from_assemblies(items: impl IntoIterator<Item = (Arc<str>, Assembly)>) -> Answers {
        let mut answers = Answers::new();
        for (id, mut assembly) in items {
            if answers.by_id.len() >= MAX_ANSWERS {
                break;
            }
            assembly.seq = answers.next_seq;
            answers.next_seq += 1;
            assembly.too_long |= assembly.text.len() > MAX_ANSWER_BYTES;
            if assembly.too_long {
                assembly.text = String::new();
            }
            answers.by_id.insert(id, assembly);
        }
        answers
    }

    /// Takes event `piece` at `offset`.
    pub fn apply(&mut self, piece: &Piece, offset: u64, now: Instant) {
        self.expire(now);
        match piece {
            Piece::Token { stream_id, chunk, is_final } => {
                if !self.by_id.contains_key(stream_id) {
                    if self.by_id.len() >= MAX_ANSWERS {
                        self.drop_oldest();
                    }
                    let assembly = Assembly {
                        text: String::new(),
                        first: offset,
                        last: offset,
                        is_final: false,
                        ended: None,
                        too_long: false,
                        seq: self.next_seq,
                    };
                    self.next_seq += 1;
                    self.by_id.insert(Arc::clone(stream_id), assembly);
                }
                let Some(a) = self.by_id.get_mut(stream_id) else { return };
                if a.ended.is_some() {
                    // A token after the end starts nothing new: ignored.
                    return;
                }
                a.last = offset;
                if !a.too_long {
                    if a.text.len() + chunk.len() > MAX_ANSWER_BYTES {
                        a.too_long = true;
                        a.text = String::new();
                    } else {
                        a.text.push_str(chunk);
                    }
                }
                if *is_final {
                    a.is_final = true;
                    a.ended = Some(now);
                }
            }
            Piece::End { stream_id } => {
                if let Some(a) = self.by_id.get_mut(stream_id) {
                    a.is_final = true;
                    a.ended.get_or_insert(now);
                }
            }
        }
    }

    fn drop_oldest(&mut self) {
        let oldest = self.by_id.iter().min_by_key(|(_, a)| a.seq).map(|(id, _)| Arc::clone(id));
        if let Some(id) = oldest {
            self.by_id.remove(&id);
        }
    }

    /// Forgets answers ended more than [`KEEP_ENDED`] ago.
    pub fn expire(&mut self, now: Instant) {
        self.by_id.retain(|_, a| a.ended.is_none_or(|at| now.duration_since(at) < KEEP_ENDED));
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The answers that can be snapshotted, oldest first.
    pub fn snapshottable(&self) -> Vec<(&Arc<str>, &Assembly)> {
        let mut list: Vec<_> = self.by_id.iter().filter(|(_, a)| !a.too_long).collect();
        list.sort_by_key(|(_, a)| a.seq);
        list
    }

    /// Every answer with its state (for a store to keep).
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Assembly)> {
        self.by_id.iter()
    }
}

#[derive(Serialize)]
struct SnapshotData<'a> {
    stream_id: &'a str,
    text: &'a str,
    offset: u64,
    is_final: bool,
}

/// The `assistant.snapshot` of answer `stream_id` in channel `key`.
pub fn snapshot_frame(key: &str, stream_id: &str, assembly: &Assembly) -> Frame {
    let data = SnapshotData { stream_id, text: &assembly.text, offset: assembly.last, is_final: assembly.is_final };
    protocol::encode(kind::ASSISTANT_SNAPSHOT, Some(names::visible(key)), &data, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(stream: &str, chunk: &str, last: bool) -> Frame {
        let data = serde_json::json!({"stream_id": stream, "chunk": chunk, "is_final": last});
        protocol::encode(kind::ASSISTANT_TOKEN, Some("conversation:c1"), &data, None)
    }

    #[test]
    fn pieces_are_found_in_assistant_events_only() {
        let p = piece(token("s1", "Hel", false).text()).unwrap();
        assert_eq!(p, Piece::Token { stream_id: "s1".into(), chunk: "Hel".into(), is_final: false });
        let done = protocol::encode(kind::ASSISTANT_COMPLETE, None, &serde_json::json!({"stream_id": "s1"}), None);
        assert_eq!(piece(done.text()), Some(Piece::End { stream_id: "s1".into() }));
        let start = protocol::encode(kind::ASSISTANT_START, None, &serde_json::json!({"stream_id": "s1"}), None);
        assert_eq!(piece(start.text()), None);
        let other = protocol::encode("demo.tick", None, &serde_json::json!({"stream_id": "s1", "chunk": "x"}), None);
        assert_eq!(piece(other.text()), None);
        assert_eq!(piece("{\"type\":\"assistant.token\",\"data\":{}}"), None, "no stream_id");
        assert_eq!(piece("not json \"assistant.token\""), None);
        // Byte 160 inside a character: still found.
        let channel = format!("conversation:{}", "c".repeat(31));
        let data = serde_json::json!({"stream_id": "s1", "chunk": "こんにちは🙂"});
        let frame = protocol::encode(kind::ASSISTANT_TOKEN, Some(&channel), &data, None);
        assert!(!frame.text().is_char_boundary(160), "the case under test: {}", frame.text());
        assert!(matches!(piece(frame.text()), Some(Piece::Token { chunk, .. }) if chunk == "こんにちは🙂"));
    }

    #[test]
    fn an_answer_is_its_chunks_in_order_until_its_end() {
        let now = Instant::now();
        let mut answers = Answers::new();
        for (offset, chunk) in [(3, "Hel"), (5, "lo"), (6, "!")] {
            let p = Piece::Token { stream_id: "s1".into(), chunk: chunk.into(), is_final: offset == 6 };
            answers.apply(&p, offset, now);
        }
        let list = answers.snapshottable();
        let (_, a) = list[0];
        assert_eq!((a.text.as_str(), a.first, a.last, a.is_final), ("Hello!", 3, 6, true));
        let late = Piece::Token { stream_id: "s1".into(), chunk: "?".into(), is_final: false };
        answers.apply(&late, 7, now);
        assert_eq!(answers.snapshottable()[0].1.text, "Hello!");
        answers.expire(now + KEEP_ENDED);
        assert!(answers.is_empty(), "ended answers go after a while");
    }

    #[test]
    fn answers_are_bounded() {
        let now = Instant::now();
        let mut answers = Answers::new();
        for i in 0..(MAX_ANSWERS as u64 + 3) {
            let p = Piece::Token { stream_id: format!("s{i}").into(), chunk: "x".into(), is_final: false };
            answers.apply(&p, i + 1, now);
        }
        let ids: Vec<String> = answers.snapshottable().iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids.len(), MAX_ANSWERS);
        assert_eq!(ids[0], "s3", "the oldest went first");
        let big = "y".repeat(MAX_ANSWER_BYTES);
        let mut long = Answers::new();
        long.apply(&Piece::Token { stream_id: "l".into(), chunk: big, is_final: false }, 1, now);
        long.apply(&Piece::Token { stream_id: "l".into(), chunk: "z".into(), is_final: false }, 2, now);
        assert!(long.snapshottable().is_empty(), "too long to snapshot");
    }

    #[test]
    fn a_snapshot_says_where_it_ends() {
        let mut answers = Answers::new();
        let p = Piece::Token { stream_id: "s1".into(), chunk: "Hi \"you\"".into(), is_final: false };
        answers.apply(&p, 9, Instant::now());
        let (id, a) = answers.snapshottable()[0];
        let frame = snapshot_frame("acme/conversation:c1", id, a);
        let v: serde_json::Value = serde_json::from_str(frame.text()).unwrap();
        assert_eq!(v["type"], "assistant.snapshot");
        assert_eq!(v["channel"], "conversation:c1");
        assert_eq!(
            v["data"],
            serde_json::json!({"stream_id": "s1", "text": "Hi \"you\"", "offset": 9, "is_final": false})
        );
    }
}
