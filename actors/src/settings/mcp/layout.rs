//! The text layout: where servers and fields are in the file, by line.
//!
//! YAML values carry no positions, so this small scanner recovers them from
//! the text, understanding only the layout this file uses: server names as
//! keys at column 0, fields indented one level below them. Errors use it to
//! name a line; the editor uses it to find the bytes to change.

use std::collections::HashMap;
use std::ops::Range;

/// One line of the text, located by byte offsets so edits can splice it.
pub(super) struct Line<'a> {
    /// Byte offset of `content` in the text.
    pub(super) start: usize,
    /// The line without its line ending (and without a leading BOM).
    pub(super) content: &'a str,
    /// Whether a `\n` follows; false only for a last line without one.
    pub(super) has_newline: bool,
}

impl Line<'_> {
    /// How many spaces the line starts with.
    pub(super) fn indent(&self) -> usize {
        self.content.len() - self.content.trim_start_matches(' ').len()
    }

    /// Whether the line is empty or only whitespace.
    pub(super) fn is_blank(&self) -> bool {
        self.content.trim().is_empty()
    }

    /// Whether the line holds only a comment.
    pub(super) fn is_comment(&self) -> bool {
        self.content.trim_start().starts_with('#')
    }

    /// Something YAML reads as data rather than layout.
    fn is_content(&self) -> bool {
        !self.is_blank() && !self.is_comment()
    }
}

/// A `key:` found at the start of a line.
pub(super) struct LineKey<'a> {
    /// The key with its quotes removed; escapes are left as written, which
    /// is enough for the names and fields this file allows.
    key: &'a str,
    /// Byte offset in the line just past the `:`.
    pub(super) value_at: usize,
}

/// The lines of a file and where its top-level keys are.
pub(super) struct Layout<'a> {
    /// Every line of the text, in order.
    pub(super) lines: Vec<Line<'a>>,
    /// The line indexes of each top-level key, in order; a map, so that
    /// finding the n-th of thousands of duplicates is not a scan each time.
    servers: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Layout<'a> {
    /// Splits `text` into lines and finds its top-level keys.
    pub(super) fn scan(text: &'a str) -> Self {
        let mut lines = Vec::new();
        let mut start = 0;
        for raw in text.split_inclusive('\n') {
            let has_newline = raw.ends_with('\n');
            let body = raw.strip_suffix('\n').unwrap_or(raw);
            let body = body.strip_suffix('\r').unwrap_or(body);
            let bom = if start == 0 && body.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
            lines.push(Line { start: start + bom, content: &body[bom..], has_newline });
            start += raw.len();
        }
        let mut servers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, line) in lines.iter().enumerate().filter(|(_, line)| line.indent() == 0) {
            if let Some(found) = line_key(line.content) {
                servers.entry(found.key).or_default().push(i);
            }
        }
        Layout { lines, servers }
    }

    /// Index of the line of the `occurrence`-th top-level key `name`.
    pub(super) fn server_line(&self, name: &str, occurrence: usize) -> Option<usize> {
        self.servers.get(name)?.get(occurrence).copied()
    }

    /// The lines after a server's key line that belong to it: everything up
    /// to the next line with data at column 0. Comments and blank lines in
    /// between belong to the block, so an insertion lands before them.
    pub(super) fn block(&self, key_line: usize) -> Range<usize> {
        let start = key_line + 1;
        let end = (start..self.lines.len())
            .find(|&i| self.lines[i].indent() == 0 && self.lines[i].is_content())
            .unwrap_or(self.lines.len());
        start..end
    }

    /// The indentation of a block's fields: that of its first line with data.
    pub(super) fn field_indent(&self, block: Range<usize>) -> Option<usize> {
        self.lines[block].iter().find(|line| line.is_content()).map(Line::indent)
    }

    /// Index of the line of the `occurrence`-th `field:` at the block's field
    /// indentation; deeper lines are values, not fields.
    pub(super) fn field_line(&self, block: Range<usize>, field: &str, occurrence: usize) -> Option<usize> {
        let indent = self.field_indent(block.clone())?;
        block
            .filter(|&i| self.lines[i].indent() == indent)
            .filter(|&i| line_key(&self.lines[i].content[indent..]).is_some_and(|found| found.key == field))
            .nth(occurrence)
    }

    /// The lines of every `field:` at the block's field indentation, by
    /// field name in order: what [`field_line`](Self::field_line) finds,
    /// for all fields in one pass over the block.
    pub(super) fn fields(&self, block: Range<usize>) -> HashMap<&'a str, Vec<usize>> {
        let mut fields: HashMap<&'a str, Vec<usize>> = HashMap::new();
        let Some(indent) = self.field_indent(block.clone()) else { return fields };
        for i in block {
            let content: &'a str = self.lines[i].content;
            if self.lines[i].indent() == indent {
                if let Some(found) = line_key(&content[indent..]) {
                    fields.entry(found.key).or_default().push(i);
                }
            }
        }
        fields
    }

    /// Index of the first line with data, past `---` and `%` directives.
    pub(super) fn first_content_line(&self) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| line.is_content() && !line.content.starts_with("---") && !line.content.starts_with('%'))
    }
}

/// Reads `key:` at the start of `content` (which starts at the key): plain,
/// single- or double-quoted. `None` for comments and lines that are not a
/// key.
pub(super) fn line_key(content: &str) -> Option<LineKey<'_>> {
    let (key, rest) = match content.as_bytes().first()? {
        b'"' => quoted_key(content, b'"')?,
        b'\'' => quoted_key(content, b'\'')?,
        b'#' => return None,
        _ => plain_key(content)?,
    };
    let after = rest.trim_start_matches([' ', '\t']).strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    Some(LineKey { key, value_at: content.len() - after.len() })
}

/// Splits a quoted key from the rest of the line; a doubled quote inside
/// single quotes and a backslash inside double quotes do not end it.
fn quoted_key(content: &str, quote: u8) -> Option<(&str, &str)> {
    let bytes = content.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some((&content[1..i], &content[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// A plain key runs up to the first `:` followed by a blank or the end of
/// the line, since YAML lets `:` appear inside a plain scalar otherwise.
fn plain_key(content: &str) -> Option<(&str, &str)> {
    let bytes = content.as_bytes();
    let colon =
        (0..bytes.len()).find(|&i| bytes[i] == b':' && matches!(bytes.get(i + 1), None | Some(b' ' | b'\t')))?;
    let key = content[..colon].trim_end();
    // "# a: b" is handled by the caller; " #" starts a comment mid-line.
    if key.is_empty() || key.contains(" #") {
        return None;
    }
    Some((key, &content[colon..]))
}
