//! The one edit the server makes to the file: setting a server's `enabled`.
//!
//! It splices a single value token (or inserts a single line) into the text
//! rather than re-serializing the YAML, because the file is written by people
//! and its comments, order and quoting must survive. Nothing here checks the
//! result; [`set_enabled`](super::set_enabled) re-parses it and refuses an
//! edit that changed anything else.

use std::ops::Range;

use super::layout::{line_key, Layout, Line};
use super::ConfigError;

/// Rewrites or inserts the `enabled:` line of server `name`; the caller
/// checks the result by re-parsing it.
pub(super) fn edit_enabled(text: &str, layout: &Layout, name: &str, enabled: bool) -> Result<String, ConfigError> {
    let refuse = |line: Option<usize>, message: &str| ConfigError {
        server: Some(name.to_string()),
        field: Some("enabled".to_string()),
        line: line.map(|i| i + 1),
        message: message.to_string(),
    };
    let key_line = layout.server_line(name, 0).ok_or_else(|| refuse(None, "could not find the server in the text"))?;
    if !is_block_start(&layout.lines[key_line]) {
        return Err(refuse(
            Some(key_line),
            "the server is not an indented block of its own (flow style or an alias); edit it by hand",
        ));
    }
    let block = layout.block(key_line);
    let value = if enabled { "true" } else { "false" };
    match layout.field_line(block.clone(), "enabled", 0) {
        Some(line) => Ok(replace_value(text, &layout.lines[line], value)),
        None => {
            let indent = layout.field_indent(block.clone()).unwrap_or(2);
            Ok(insert_line(text, layout, key_line, block, &format!("{}enabled: {value}", " ".repeat(indent))))
        }
    }
}

/// Whether the server's value starts on the next line: nothing after the
/// `:` but perhaps an anchor and a comment.
fn is_block_start(key_line: &Line) -> bool {
    let Some(found) = line_key(key_line.content) else {
        return false;
    };
    let rest = key_line.content[found.value_at..].trim_start();
    let rest = match rest.strip_prefix('&') {
        Some(anchored) => anchored.trim_start_matches(|c: char| !c.is_whitespace()).trim_start(),
        None => rest,
    };
    rest.is_empty() || rest.starts_with('#')
}

/// Replaces the value token after `enabled:`, keeping the spacing and any
/// trailing comment; an empty value gets one space before the new one.
fn replace_value(text: &str, line: &Line, value: &str) -> String {
    let indent = line.indent();
    let value_at = line_key(&line.content[indent..]).map_or(line.content.len(), |found| indent + found.value_at);
    let after = &line.content[value_at..];
    let token_at = value_at + (after.len() - after.trim_start_matches([' ', '\t']).len());
    let token = &line.content[token_at..];
    let (from, to, replacement) = if token.is_empty() || token.starts_with('#') {
        (value_at, value_at, format!(" {value}"))
    } else {
        let token_len = token.find([' ', '\t']).unwrap_or(token.len());
        (token_at, token_at + token_len, value.to_string())
    };
    let mut edited = String::with_capacity(text.len() + replacement.len());
    edited.push_str(&text[..line.start + from]);
    edited.push_str(&replacement);
    edited.push_str(&text[line.start + to..]);
    edited
}

/// Inserts `new_line` after the block's last line with data, so comments and
/// blank lines that trail the block stay after it. Lines deeper than the
/// fields count as data even when they start with `#`: they may be part of a
/// block scalar.
fn insert_line(text: &str, layout: &Layout, key_line: usize, block: Range<usize>, new_line: &str) -> String {
    let field_indent = layout.field_indent(block.clone()).unwrap_or(2);
    let after = block
        .rev()
        .find(|&i| {
            let line = &layout.lines[i];
            !line.is_blank() && line.indent() > 0 && (!line.is_comment() || line.indent() > field_indent)
        })
        .unwrap_or(key_line);
    let line = &layout.lines[after];
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let line_end = line.start + line.content.len();
    let mut edited = String::with_capacity(text.len() + new_line.len() + 2);
    if line.has_newline {
        // The new line borrows the ending of the line it follows, so a CRLF
        // file does not end up with mixed endings.
        let next = text[line_end..].find('\n').map_or(text.len(), |i| line_end + i + 1);
        let own_newline = &text[line_end..next];
        edited.push_str(&text[..next]);
        edited.push_str(new_line);
        edited.push_str(own_newline);
        edited.push_str(&text[next..]);
    } else {
        edited.push_str(text);
        edited.push_str(newline);
        edited.push_str(new_line);
    }
    edited
}
