//! The MCP server list, `configs/mcp_servers.yaml`: parsing, validation,
//! diffing and the one edit the server makes to it.
//!
//! The file maps a server name to its fields:
//!
//! ```yaml
//! gmail:
//!   url: http://localhost:8002/mcp
//!   health_url: http://localhost:8002/health
//!   description: Gmail MCP Server for email operations
//!   enabled: true
//! ```
//!
//! [`parse`] reports every problem it finds, each with the server, field and
//! line it concerns, so one round of fixing is enough. [`diff`] says what
//! changed between two valid versions. [`set_enabled`] flips one server on or
//! off by rewriting a single value token, because the file is written by
//! people: comments, order and quoting must survive the edit.
//!
//! Everything here is pure: text in, values out. Reading, writing and
//! watching the file belong to the callers.
//!
//! YAML values carry no positions, so lines are recovered from the text by a
//! small scanner that understands the one layout this file uses: server names
//! as keys at column 0, fields indented one level below them. Anything the
//! scanner cannot place gets the server's line, or no line at all; it never
//! turns into a wrong answer, because [`set_enabled`] re-parses its own output
//! and refuses to return an edit that changed anything but the one value.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::de::{
    self, Deserialize, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Serialize;

/// One MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpServer {
    /// The key it is listed under: 1–64 characters of `A–Z a–z 0–9 _ - .`.
    pub name: String,
    /// Where its MCP endpoint is: an absolute `http://` or `https://` URL.
    pub url: String,
    /// Where its health check is: an absolute `http://` or `https://` URL.
    pub health_url: String,
    /// What it is for, for people; empty when the file gives none.
    pub description: String,
    /// Whether agents may use it; `true` when the file does not say.
    pub enabled: bool,
}

/// The whole file, servers in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct McpConfig {
    /// The servers, in the order the file lists them; names are unique.
    pub servers: Vec<McpServer>,
}

impl McpConfig {
    /// The server listed under `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&McpServer> {
        self.servers.iter().find(|server| server.name == name)
    }
}

/// One problem in a file: which server, which field, which line (1-based), and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The server the problem is in, when it is in one.
    pub server: Option<String>,
    /// The field the problem is in, when it is in one.
    pub field: Option<String>,
    /// The 1-based line of the problem, when it could be found.
    pub line: Option<usize>,
    /// What is wrong, quoting the offending value where there is one.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if let Some(line) = self.line {
            place.push(format!("line {line}"));
        }
        if let Some(server) = &self.server {
            place.push(format!("server {}", quote(server)));
        }
        if let Some(field) = &self.field {
            place.push(format!("field {}", quote(field)));
        }
        if place.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", place.join(", "), self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// What happened to one server between two valid configs, for the
/// `config_validated` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The server's name.
    pub server: String,
    /// Whether it appeared, disappeared or changed.
    pub change: ChangeKind,
    /// For [`ChangeKind::Modified`], the names of the fields that differ, in
    /// declaration order (`url`, `health_url`, `description`, `enabled`);
    /// empty for the other kinds.
    pub fields: Vec<String>,
}

/// The kind of a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the new config.
    Added,
    /// Only in the old config.
    Removed,
    /// In both, with some field different.
    Modified,
}

/// The fields a server may have, in the order errors and diffs list them.
const FIELDS: &[&str] = &["url", "health_url", "description", "enabled"];

const MAX_NAME_LEN: usize = 64;

/// Long values are cut in messages so one bad line cannot flood a log.
const MAX_QUOTED_CHARS: usize = 120;

/// Parses and validates; every problem found is reported (not just the first) when possible.
///
/// A YAML syntax error stops everything, since nothing after it can be
/// trusted; it comes back alone with the line the YAML parser gives.
pub fn parse(text: &str) -> Result<McpConfig, Vec<ConfigError>> {
    let root = serde_yaml::from_str::<Node>(text).map_err(|e| vec![syntax_error(&e)])?;
    let layout = Layout::scan(text);
    let entries = match root {
        Node::Null => return Ok(McpConfig::default()),
        Node::Map(entries) => entries,
        other => {
            return Err(vec![ConfigError {
                server: None,
                field: None,
                line: layout.first_content_line().map(|i| i + 1),
                message: format!("the file must map server names to servers, found {}", other.describe()),
            }])
        }
    };

    let mut errors = Vec::new();
    let mut servers = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, value) in entries {
        let name = key.key_text();
        let occurrence = *seen.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
        let site = Site::new(&layout, name, occurrence);
        if let Some(server) = check_server(&site, &key, value, &mut errors) {
            servers.push(server);
        }
    }
    if errors.is_empty() {
        Ok(McpConfig { servers })
    } else {
        Err(errors)
    }
}

/// What changed between two valid configs, for the `config_validated` event.
///
/// Added and modified servers come in the new file's order, then removed ones
/// in the old file's order; unchanged servers are left out.
pub fn diff(old: &McpConfig, new: &McpConfig) -> Vec<Change> {
    let mut changes: Vec<Change> = new
        .servers
        .iter()
        .filter_map(|server| match old.get(&server.name) {
            None => Some(change(server, ChangeKind::Added, Vec::new())),
            Some(before) => {
                let fields = changed_fields(before, server);
                (!fields.is_empty()).then(|| change(server, ChangeKind::Modified, fields))
            }
        })
        .collect();
    changes.extend(
        old.servers
            .iter()
            .filter(|server| new.get(&server.name).is_none())
            .map(|server| change(server, ChangeKind::Removed, Vec::new())),
    );
    changes
}

/// Flips one server's `enabled` by editing that one line, so comments, order,
/// quoting and everything else stay byte-for-byte as they were.
///
/// The file must be valid to begin with, and the result is re-parsed: an
/// edit that would change anything besides that one value is refused rather
/// than returned. Setting the value the server already has returns the text
/// unchanged. A missing `enabled:` line is added as the server's last field.
/// Servers written in flow style (`name: {url: …}`) or as an alias are
/// refused.
pub fn set_enabled(text: &str, name: &str, enabled: bool) -> Result<String, ConfigError> {
    let config = parse(text).map_err(refuse_invalid)?;
    let current = config.get(name).ok_or_else(|| ConfigError {
        server: Some(name.to_string()),
        field: None,
        line: None,
        message: "no such server".to_string(),
    })?;
    if current.enabled == enabled {
        return Ok(text.to_string());
    }

    let layout = Layout::scan(text);
    let edited = edit_enabled(text, &layout, name, enabled)?;

    let mut expected = config.clone();
    expected.servers.iter_mut().filter(|server| server.name == name).for_each(|server| server.enabled = enabled);
    match parse(&edited) {
        Ok(result) if result == expected => Ok(edited),
        _ => Err(ConfigError {
            server: Some(name.to_string()),
            field: Some("enabled".to_string()),
            line: layout.server_line(name, 0).map(|i| i + 1),
            message: "could not edit this layout safely; change the file by hand".to_string(),
        }),
    }
}

// ---------------------------------------------------------------------------
// Validation

/// Where a server is in the text, so its errors can carry lines.
struct Site<'a> {
    layout: &'a Layout<'a>,
    name: String,
    /// Which occurrence of `name` this is; duplicates are told apart by it.
    occurrence: usize,
    /// 0-based index of the server's key line.
    line: Option<usize>,
}

impl<'a> Site<'a> {
    fn new(layout: &'a Layout<'a>, name: String, occurrence: usize) -> Self {
        let line = layout.server_line(&name, occurrence);
        Site { layout, name, occurrence, line }
    }

    fn field_line(&self, field: &str, occurrence: usize) -> Option<usize> {
        let block = self.line.map(|line| self.layout.block(line))?;
        self.layout.field_line(block, field, occurrence).or(self.line)
    }

    fn error(&self, field: Option<(&str, usize)>, message: String) -> ConfigError {
        let line = match field {
            Some((field, occurrence)) => self.field_line(field, occurrence),
            None => self.line,
        };
        ConfigError {
            server: Some(self.name.clone()),
            field: field.map(|(field, _)| field.to_string()),
            line: line.map(|i| i + 1),
            message,
        }
    }
}

/// The fields found so far in one server.
#[derive(Default)]
struct Fields {
    url: Option<String>,
    health_url: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// Checks one `name: server` entry, adding its problems to `errors`. Returns
/// the server whenever it has both URLs; whether the file as a whole is
/// valid is decided by `errors` alone.
fn check_server(site: &Site, key: &Node, value: Node, errors: &mut Vec<ConfigError>) -> Option<McpServer> {
    if let Err(why) = check_name(key) {
        errors.push(site.error(None, why));
    }
    if site.occurrence > 0 {
        let first =
            site.layout.server_line(&site.name, 0).map_or(String::new(), |i| format!(" (first on line {})", i + 1));
        errors.push(site.error(None, format!("duplicate server name{first}")));
    }
    let entries = match value {
        Node::Map(entries) => entries,
        other => {
            errors.push(site.error(None, format!("a server must be a mapping of fields, found {}", other.describe())));
            return None;
        }
    };

    let mut fields = Fields::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, value) in entries {
        let field = key.key_text();
        let occurrence = *seen.entry(field.clone()).and_modify(|n| *n += 1).or_insert(0);
        let at = (field.as_str(), occurrence);
        if occurrence > 0 {
            errors.push(site.error(Some(at), "duplicate field".to_string()));
        } else if let Err(why) = take_field(&mut fields, &key, &field, value) {
            errors.push(site.error(Some(at), why));
        }
    }

    let url = required(site, fields.url, seen.contains_key("url"), "url", errors);
    let health_url = required(site, fields.health_url, seen.contains_key("health_url"), "health_url", errors);
    Some(McpServer {
        name: site.name.clone(),
        url: url?,
        health_url: health_url?,
        description: fields.description.unwrap_or_default(),
        enabled: fields.enabled.unwrap_or(true),
    })
}

/// A field that is present but invalid has been reported already, so only
/// a field that is absent altogether is reported as missing.
fn required(
    site: &Site,
    value: Option<String>,
    present: bool,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    if !present {
        let mut error = site.error(None, format!("missing required field {}", quote(field)));
        error.field = Some(field.to_string());
        errors.push(error);
    }
    value
}

/// Checks one field and stores it; a bad value is not stored.
fn take_field(fields: &mut Fields, key: &Node, field: &str, value: Node) -> Result<(), String> {
    if !matches!(key, Node::Str(_)) || !FIELDS.contains(&field) {
        return Err(format!("unknown field (known: {})", FIELDS.join(", ")));
    }
    match field {
        "url" => fields.url = Some(url_value(value)?),
        "health_url" => fields.health_url = Some(url_value(value)?),
        "description" => fields.description = optional_string(value)?,
        _ => fields.enabled = optional_bool(value)?,
    }
    Ok(())
}

fn url_value(value: Node) -> Result<String, String> {
    match value {
        Node::Str(url) => check_url(&url).map(|()| url),
        other => Err(format!("expected a URL string, found {}", other.describe())),
    }
}

/// An empty value (`description:`) counts as absent: people leave fields
/// blank meaning "nothing to say".
fn optional_string(value: Node) -> Result<Option<String>, String> {
    match value {
        Node::Str(text) => Ok(Some(text)),
        Node::Null => Ok(None),
        other => Err(format!("expected a string, found {}", other.describe())),
    }
}

fn optional_bool(value: Node) -> Result<Option<bool>, String> {
    match value {
        Node::Bool(flag) => Ok(Some(flag)),
        Node::Null => Ok(None),
        other => Err(format!("expected true or false, found {}", other.describe())),
    }
}

/// Server names end up in logs, metrics and URLs, so they are kept to a
/// small, unambiguous alphabet.
fn check_name(key: &Node) -> Result<(), String> {
    let Node::Str(name) = key else {
        return Err(format!("a server name must be a string, found {} (quote it)", key.describe()));
    };
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_LEN {
        return Err(format!("a server name must be 1 to {MAX_NAME_LEN} characters long, this one has {count}"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!(
            "invalid character {} in server name (allowed: letters, digits, '_', '-', '.')",
            quote(&bad.to_string())
        ));
    }
    Ok(())
}

/// Accepts absolute `http(s)://` URLs with a host. Deliberately not a full
/// URL parser: it catches the mistakes people make in this file (wrong
/// scheme, missing host, stray spaces, a bad port) and leaves the rest to
/// the HTTP client.
fn check_url(url: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("a URL must not contain whitespace or control characters: {}", quote(url)));
    }
    let rest = strip_prefix_ignore_case(url, "http://")
        .or_else(|| strip_prefix_ignore_case(url, "https://"))
        .ok_or_else(|| format!("not an http(s) URL: {}", quote(url)))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
    let (host, port) = split_host_port(host_port).ok_or_else(|| format!("malformed host in URL: {}", quote(url)))?;
    if host.is_empty() {
        return Err(format!("URL has no host: {}", quote(url)));
    }
    if let Some(port) = port.filter(|port| !port.is_empty()) {
        if port.parse::<u16>().is_err() {
            return Err(format!("URL has an invalid port: {}", quote(url)));
        }
    }
    Ok(())
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 address; `None`
/// when a bracket is left open or followed by something other than a port.
fn split_host_port(host_port: &str) -> Option<(&str, Option<&str>)> {
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    })
}

fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// serde_yaml puts the position in its message as well; it is dropped there
/// since the error carries the line on its own. Other positions in the
/// message (libyaml's "while parsing … at line N") stay: they add context.
fn syntax_error(error: &serde_yaml::Error) -> ConfigError {
    let mut message = error.to_string();
    let line = error.location().map(|location| {
        let position = format!(" at line {} column {}", location.line(), location.column());
        message = message.replacen(&position, "", 1);
        location.line()
    });
    ConfigError { server: None, field: None, line, message: format!("invalid YAML: {message}") }
}

fn refuse_invalid(errors: Vec<ConfigError>) -> ConfigError {
    let count = errors.len();
    let mut first = errors.into_iter().next().unwrap_or(ConfigError {
        server: None,
        field: None,
        line: None,
        message: String::new(),
    });
    first.message = format!("the file has {count} problem(s), not editing it; first: {}", first.message);
    first
}

fn change(server: &McpServer, kind: ChangeKind, fields: Vec<String>) -> Change {
    Change { server: server.name.clone(), change: kind, fields }
}

fn changed_fields(old: &McpServer, new: &McpServer) -> Vec<String> {
    let differs = [
        old.url != new.url,
        old.health_url != new.health_url,
        old.description != new.description,
        old.enabled != new.enabled,
    ];
    FIELDS.iter().zip(differs).filter(|(_, differs)| *differs).map(|(field, _)| field.to_string()).collect()
}

/// Quotes a value from the file for a message: escaped, so control
/// characters cannot forge log lines, and cut when long.
fn quote(value: &str) -> String {
    let mut shown: String = value.chars().take(MAX_QUOTED_CHARS).flat_map(char::escape_debug).collect();
    if value.chars().count() > MAX_QUOTED_CHARS {
        shown.push('…');
    }
    format!("'{shown}'")
}

// ---------------------------------------------------------------------------
// The YAML tree

/// A YAML value that keeps mapping entries in order and keeps duplicate keys.
///
/// `serde_yaml::Value` refuses a duplicate key outright, which would hide
/// every other problem in the file behind it; this keeps them so each can be
/// reported with its own line.
enum Node {
    Null,
    Bool(bool),
    /// The number as written back by serde_yaml; only ever shown, never used.
    Number(String),
    Str(String),
    Seq,
    Map(Vec<(Node, Node)>),
    /// A value with a custom tag (`!name value`), which this file never needs.
    Tagged(String),
}

impl Node {
    /// For messages: what kind of value this is, with the value when short.
    fn describe(&self) -> String {
        match self {
            Node::Null => "an empty value".to_string(),
            Node::Bool(flag) => format!("a boolean ({flag})"),
            Node::Number(number) => format!("a number ({number})"),
            Node::Str(text) => format!("a string ({})", quote(text)),
            Node::Seq => "a list".to_string(),
            Node::Map(_) => "a mapping".to_string(),
            Node::Tagged(tag) => format!("a value tagged !{tag}"),
        }
    }

    /// The key as it reads in the file, so a non-string key (`123:`) can still
    /// be named in a message and found on its line.
    fn key_text(&self) -> String {
        match self {
            Node::Str(text) | Node::Number(text) => text.clone(),
            Node::Bool(flag) => flag.to_string(),
            other => other.describe(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    /// An empty document arrives as `none`.
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    /// No list is ever valid here, so its items are only skipped.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::Seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }

    /// serde_yaml hands custom-tagged values over as enums.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (tag, variant) = data.variant::<String>()?;
        variant.newtype_variant::<IgnoredAny>()?;
        Ok(Node::Tagged(tag))
    }
}

// ---------------------------------------------------------------------------
// The text layout

/// One line of the text, located by byte offsets so edits can splice it.
struct Line<'a> {
    /// Byte offset of `content` in the text.
    start: usize,
    /// The line without its line ending (and without a leading BOM).
    content: &'a str,
    /// Whether a `\n` follows; false only for a last line without one.
    has_newline: bool,
}

impl Line<'_> {
    fn indent(&self) -> usize {
        self.content.len() - self.content.trim_start_matches(' ').len()
    }

    fn is_blank(&self) -> bool {
        self.content.trim().is_empty()
    }

    fn is_comment(&self) -> bool {
        self.content.trim_start().starts_with('#')
    }

    /// Something YAML reads as data rather than layout.
    fn is_content(&self) -> bool {
        !self.is_blank() && !self.is_comment()
    }
}

/// A `key:` found at the start of a line.
struct LineKey<'a> {
    /// The key with its quotes removed; escapes are left as written, which
    /// is enough for the names and fields this file allows.
    key: &'a str,
    /// Byte offset in the line just past the `:`.
    value_at: usize,
}

/// The lines of a file and where its top-level keys are.
struct Layout<'a> {
    lines: Vec<Line<'a>>,
    /// Top-level keys in order: (key, line index).
    servers: Vec<(&'a str, usize)>,
}

impl<'a> Layout<'a> {
    fn scan(text: &'a str) -> Self {
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
        let servers = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.indent() == 0)
            .filter_map(|(i, line)| line_key(line.content).map(|found| (found.key, i)))
            .collect();
        Layout { lines, servers }
    }

    /// Index of the line of the `occurrence`-th top-level key `name`.
    fn server_line(&self, name: &str, occurrence: usize) -> Option<usize> {
        self.servers.iter().filter(|(key, _)| *key == name).nth(occurrence).map(|&(_, line)| line)
    }

    /// The lines after a server's key line that belong to it: everything up
    /// to the next line with data at column 0. Comments and blank lines in
    /// between belong to the block, so an insertion lands before them.
    fn block(&self, key_line: usize) -> Range<usize> {
        let start = key_line + 1;
        let end = (start..self.lines.len())
            .find(|&i| self.lines[i].indent() == 0 && self.lines[i].is_content())
            .unwrap_or(self.lines.len());
        start..end
    }

    /// The indentation of a block's fields: that of its first line with data.
    fn field_indent(&self, block: Range<usize>) -> Option<usize> {
        self.lines[block].iter().find(|line| line.is_content()).map(Line::indent)
    }

    /// Index of the line of the `occurrence`-th `field:` at the block's field
    /// indentation; deeper lines are values, not fields.
    fn field_line(&self, block: Range<usize>, field: &str, occurrence: usize) -> Option<usize> {
        let indent = self.field_indent(block.clone())?;
        block
            .filter(|&i| self.lines[i].indent() == indent)
            .filter(|&i| line_key(&self.lines[i].content[indent..]).is_some_and(|found| found.key == field))
            .nth(occurrence)
    }

    /// Index of the first line with data, past `---` and `%` directives.
    fn first_content_line(&self) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| line.is_content() && !line.content.starts_with("---") && !line.content.starts_with('%'))
    }
}

/// Reads `key:` at the start of `content` (which starts at the key): plain,
/// single- or double-quoted. `None` for comments and lines that are not a
/// key.
fn line_key(content: &str) -> Option<LineKey<'_>> {
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

// ---------------------------------------------------------------------------
// Editing

/// Rewrites or inserts the `enabled:` line of server `name`; the caller
/// checks the result by re-parsing it.
fn edit_enabled(text: &str, layout: &Layout, name: &str, enabled: bool) -> Result<String, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# MCP servers the agents may use
gmail:
  url: http://localhost:8002/mcp
  health_url: http://localhost:8002/health
  description: Gmail MCP Server for email operations
  enabled: true
github:
  url: \"https://mcp.example.com/github\"   # quoted values and trailing comments occur
  health_url: https://mcp.example.com/github/health
  description: GitHub tools
  enabled: false
";

    fn server(name: &str, enabled: bool) -> McpServer {
        McpServer {
            name: name.to_string(),
            url: format!("http://{name}.local/mcp"),
            health_url: format!("http://{name}.local/health"),
            description: String::new(),
            enabled,
        }
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match parse(text) {
            Ok(config) => panic!("expected errors, parsed {config:?}"),
            Err(errors) => errors,
        }
    }

    fn only_error(text: &str) -> ConfigError {
        let mut all = errors(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all.remove(0)
    }

    fn at(error: &ConfigError) -> (Option<&str>, Option<&str>, Option<usize>) {
        (error.server.as_deref(), error.field.as_deref(), error.line)
    }

    #[test]
    fn parses_the_example() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.servers.len(), 2);
        assert_eq!(
            config.servers[0],
            McpServer {
                name: "gmail".into(),
                url: "http://localhost:8002/mcp".into(),
                health_url: "http://localhost:8002/health".into(),
                description: "Gmail MCP Server for email operations".into(),
                enabled: true,
            }
        );
        let github = config.get("github").unwrap();
        assert_eq!(github.url, "https://mcp.example.com/github");
        assert!(!github.enabled);
        assert!(config.get("slack").is_none());
    }

    #[test]
    fn empty_and_comment_only_files_have_no_servers() {
        for text in ["", "   \n\n", "# nothing yet\n  # really\n", "---\n"] {
            assert_eq!(parse(text).unwrap(), McpConfig::default(), "{text:?}");
        }
    }

    #[test]
    fn optional_fields_default() {
        let config = parse("s:\n  url: http://a/\n  health_url: http://a/h\n  description:\n").unwrap();
        assert_eq!(config.servers[0].description, "");
        assert!(config.servers[0].enabled);
    }

    #[test]
    fn unknown_field_names_it_and_lists_the_known_ones() {
        let error = only_error("gmail:\n  url: http://a/\n  health_url: http://a/h\n  enabeld: true\n");
        assert_eq!(at(&error), (Some("gmail"), Some("enabeld"), Some(4)));
        assert!(error.message.contains("url, health_url, description, enabled"), "{}", error.message);
    }

    #[test]
    fn missing_url_points_at_the_server() {
        let error = only_error("# c\n\ngmail:\n  health_url: http://a/h\n");
        assert_eq!(at(&error), (Some("gmail"), Some("url"), Some(3)));
        assert!(error.message.contains("missing"), "{}", error.message);
    }

    #[test]
    fn bad_urls_are_quoted() {
        let error = only_error("gmail:\n  url: ftp://x\n  health_url: http://a/h\n");
        assert_eq!(at(&error), (Some("gmail"), Some("url"), Some(2)));
        assert_eq!(error.to_string(), "line 2, server 'gmail', field 'url': not an http(s) URL: 'ftp://x'");

        for bad in
            ["http://", "https:///path", "http://:80/", "'http://a b/'", "http://a:port/", "localhost:8002", "''"]
        {
            let error = only_error(&format!("s:\n  url: http://a/\n  health_url: {bad}\n"));
            assert_eq!(at(&error), (Some("s"), Some("health_url"), Some(3)), "{bad}");
        }
        for good in ["http://a", "HTTPS://a.b:443/x?y#z", "http://user@[::1]:8080/", "http://localhost:/"] {
            assert!(parse(&format!("s:\n  url: {good}\n  health_url: {good}\n")).is_ok(), "{good}");
        }
    }

    #[test]
    fn wrong_types_name_server_and_field() {
        let error = only_error("gmail:\n  url: http://a/\n  health_url: http://a/h\n  enabled: \"yes\"\n");
        assert_eq!(at(&error), (Some("gmail"), Some("enabled"), Some(4)));
        assert!(error.message.contains("'yes'"), "{}", error.message);

        let error = only_error("gmail:\n  url: 5\n  health_url: http://a/h\n");
        assert_eq!(at(&error), (Some("gmail"), Some("url"), Some(2)));

        let error = only_error("a:\n  url: http://a/\n  health_url: http://a/h\ngmail:\n  - url\n");
        assert_eq!(at(&error), (Some("gmail"), None, Some(4)));
        assert!(error.message.contains("a list"), "{}", error.message);

        let error = only_error("gmail: just a string\n");
        assert_eq!(at(&error), (Some("gmail"), None, Some(1)));
    }

    #[test]
    fn duplicate_servers_name_the_second_line() {
        let text = "gmail:\n  url: http://a/\n  health_url: http://a/h\n\"gmail\":\n  url: http://b/\n  health_url: http://b/h\n";
        let error = only_error(text);
        assert_eq!(at(&error), (Some("gmail"), None, Some(4)));
        assert!(error.message.contains("first on line 1"), "{}", error.message);
    }

    #[test]
    fn problems_inside_a_duplicate_point_into_its_own_block() {
        let text =
            "gmail:\n  url: http://a/\n  health_url: http://a/h\ngmail:\n  url: nope\n  health_url: http://b/h\n";
        let all = errors(text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(at(&all[1]), (Some("gmail"), Some("url"), Some(5)));
    }

    #[test]
    fn duplicate_fields_are_reported() {
        let error = only_error("s:\n  url: http://a/\n  health_url: http://a/h\n  url: http://b/\n");
        assert_eq!(at(&error), (Some("s"), Some("url"), Some(4)));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let error = only_error("gmail:\n  url: http://a/\n  health_url: [unclosed\n  enabled: true\nx: y\n");
        assert_eq!((error.server.as_deref(), error.field.as_deref()), (None, None));
        let line = error.line.unwrap();
        assert!(line >= 3, "{error:?}");
        assert!(error.message.starts_with("invalid YAML"), "{}", error.message);
        assert!(!error.message.contains(&format!("at line {line} column")), "{}", error.message);

        let error = only_error("gmail:\n  url: \"unterminated\n");
        assert!(error.line.is_some(), "{error:?}");
    }

    #[test]
    fn the_top_level_must_be_a_mapping() {
        let error = only_error("# servers\n- gmail\n- github\n");
        assert_eq!(at(&error), (None, None, Some(2)));
        assert!(error.message.contains("a list"), "{}", error.message);
        assert!(parse("just text\n").is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["\"has space\"", "\"\"", "123", &"x".repeat(65), "\"a/b\""] {
            let error = only_error(&format!("{name}:\n  url: http://a/\n  health_url: http://a/h\n"));
            assert_eq!(error.line, Some(1), "{name}: {error:?}");
            assert_eq!(error.field, None, "{name}");
        }
        assert!(parse(&format!("{}:\n  url: http://a/\n  health_url: http://a/h\n", "a.b-c_9".repeat(9))).is_ok());
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = "\
gmail:
  url: ftp://x
  health_url: http://a/h
  colour: blue
github:
  health_url: http://b/h
  enabled: 1
";
        let all = errors(text);
        let places: Vec<_> = all.iter().map(at).collect();
        assert_eq!(
            places,
            [
                (Some("gmail"), Some("url"), Some(2)),
                (Some("gmail"), Some("colour"), Some(4)),
                (Some("github"), Some("enabled"), Some(7)),
                (Some("github"), Some("url"), Some(5)),
            ]
        );
    }

    #[test]
    fn display_leaves_out_what_is_unknown() {
        let error = ConfigError { server: None, field: None, line: None, message: "boom".into() };
        assert_eq!(error.to_string(), "boom");
        let error = ConfigError { server: None, field: None, line: Some(3), message: "boom".into() };
        assert_eq!(error.to_string(), "line 3: boom");
    }

    #[test]
    fn diff_reports_added_removed_and_modified() {
        let old = McpConfig { servers: vec![server("a", true), server("b", true), server("c", true)] };
        let mut changed_b = server("b", false);
        changed_b.description = "now described".into();
        let new = McpConfig { servers: vec![server("d", true), changed_b, server("a", true)] };
        assert_eq!(
            diff(&old, &new),
            [
                Change { server: "d".into(), change: ChangeKind::Added, fields: vec![] },
                Change {
                    server: "b".into(),
                    change: ChangeKind::Modified,
                    fields: vec!["description".into(), "enabled".into()]
                },
                Change { server: "c".into(), change: ChangeKind::Removed, fields: vec![] },
            ]
        );
        assert!(diff(&new, &new).is_empty());
        let json = serde_json::to_value(&diff(&old, &new)[0]).unwrap();
        assert_eq!(json, serde_json::json!({"server": "d", "change": "added", "fields": []}));
    }

    /// `set_enabled` must change exactly that server's flag and nothing else.
    fn assert_flipped(before: &str, after: &str, name: &str, enabled: bool) {
        let mut expected = parse(before).unwrap();
        expected.servers.iter_mut().filter(|s| s.name == name).for_each(|s| s.enabled = enabled);
        assert_eq!(parse(after).unwrap(), expected);
    }

    #[test]
    fn set_enabled_edits_only_the_value() {
        let off = set_enabled(EXAMPLE, "gmail", false).unwrap();
        assert_eq!(off, EXAMPLE.replacen("  enabled: true\n", "  enabled: false\n", 1));
        assert_flipped(EXAMPLE, &off, "gmail", false);

        let on = set_enabled(&off, "gmail", true).unwrap();
        assert_eq!(on, EXAMPLE);
    }

    #[test]
    fn set_enabled_keeps_comments_quotes_and_crlf() {
        let text = "# top\r\n\"github\":\r\n  url: \"https://g/\"  # q\r\n  health_url: 'https://g/h'\r\n  enabled: false   # off for now\r\n\r\n# tail\r\nz:\r\n  url: http://z/\r\n  health_url: http://z/h\r\n";
        let on = set_enabled(text, "github", true).unwrap();
        assert_eq!(on, text.replace("enabled: false   # off", "enabled: true   # off"));
        assert_flipped(text, &on, "github", true);
    }

    #[test]
    fn set_enabled_inserts_a_missing_line() {
        let text = "a:\n    url: http://a/\n    health_url: http://a/h\n    # trailing note\n\n# about b\nb:\n  url: http://b/\n  health_url: http://b/h";
        let off = set_enabled(text, "a", false).unwrap();
        assert_eq!(off, text.replacen("/h\n    # trailing", "/h\n    enabled: false\n    # trailing", 1));
        assert_flipped(text, &off, "a", false);

        // Last line of the file, without a final newline.
        let off = set_enabled(text, "b", false).unwrap();
        assert_eq!(off, format!("{text}\n  enabled: false"));
        assert_flipped(text, &off, "b", false);

        let crlf = "a:\r\n  url: http://a/\r\n  health_url: http://a/h\r\n";
        assert_eq!(set_enabled(crlf, "a", false).unwrap(), format!("{crlf}  enabled: false\r\n"));
    }

    #[test]
    fn set_enabled_after_a_block_scalar() {
        let text =
            "a:\n  url: http://a/\n  health_url: http://a/h\n  description: |\n    line one\n    # not a comment\n";
        let off = set_enabled(text, "a", false).unwrap();
        assert_eq!(off, format!("{text}  enabled: false\n"));
        assert_flipped(text, &off, "a", false);
    }

    #[test]
    fn set_enabled_fills_an_empty_value() {
        let text = "a:\n  url: http://a/\n  enabled:  # unset\n  health_url: http://a/h\n";
        let off = set_enabled(text, "a", false).unwrap();
        assert_eq!(off, text.replace("enabled:  # unset", "enabled: false  # unset"));
    }

    #[test]
    fn set_enabled_to_the_current_value_changes_nothing() {
        assert_eq!(set_enabled(EXAMPLE, "github", false).unwrap(), EXAMPLE);
    }

    #[test]
    fn set_enabled_refuses_what_it_cannot_do() {
        let error = set_enabled(EXAMPLE, "slack", true).unwrap_err();
        assert_eq!(error.server.as_deref(), Some("slack"));
        assert!(error.to_string().contains("'slack'"), "{error}");

        let flow = "gmail: {url: http://a/, health_url: http://a/h}\n";
        let error = set_enabled(flow, "gmail", false).unwrap_err();
        assert_eq!(error.line, Some(1));
        assert!(error.message.contains("flow"), "{}", error.message);

        let invalid = "gmail:\n  url: ftp://x\n  health_url: http://a/h\n";
        let error = set_enabled(invalid, "gmail", false).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("url"));
    }
}
