//! Validation of one server entry: its name, its fields and their values.
//!
//! Every check adds to a list of errors instead of stopping at the first, so
//! [`parse`](super::parse) can report everything wrong with a file in one go.
//! Each error is placed on the line of the server or field it concerns, found
//! through the [`Layout`], since the YAML tree itself carries no positions.

use std::collections::HashMap;

use super::layout::Layout;
use super::tree::Node;
use super::{quote, ConfigError, McpServer, FIELDS};

const MAX_NAME_LEN: usize = 64;

/// Where a server is in the text, so its errors can carry lines.
pub(in crate::settings) struct Site<'a> {
    layout: &'a Layout<'a>,
    name: String,
    /// Which occurrence of `name` this is; duplicates are told apart by it.
    occurrence: usize,
    /// 0-based index of the server's key line.
    line: Option<usize>,
    /// The lines of the server's fields by name, found once: a scan of the
    /// block per error would make a flood of duplicate fields quadratic.
    fields: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Site<'a> {
    /// Finds the `occurrence`-th entry called `name` in the layout.
    pub(super) fn new(layout: &'a Layout<'a>, name: String, occurrence: usize) -> Self {
        let line = layout.server_line(&name, occurrence);
        let fields = line.map(|line| layout.fields(layout.block(line))).unwrap_or_default();
        Site { layout, name, occurrence, line, fields }
    }

    fn field_line(&self, field: &str, occurrence: usize) -> Option<usize> {
        self.fields.get(field).and_then(|lines| lines.get(occurrence)).copied().or(self.line)
    }

    /// An error at this entry, or at one of its fields.
    pub(in crate::settings) fn error(&self, field: Option<(&str, usize)>, message: String) -> ConfigError {
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
pub(in crate::settings) fn check_server(
    site: &Site,
    key: &Node,
    value: Node,
    errors: &mut Vec<ConfigError>,
) -> Option<McpServer> {
    let mut fields = Fields::default();
    let seen = check_entry(site, key, value, "server", errors, |key, field, value| {
        take_field(&mut fields, key, field, value)
    })?;

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

/// Checks the parts every entry of such a file has: its name (which must
/// be unique), a mapping of fields, each field once; `take` checks and
/// keeps each field (a known name, a good value). `what` names the entry
/// in messages (`server`, `agent`). Returns how often each field occurs,
/// or `None` when the entry is not a mapping at all.
pub(in crate::settings) fn check_entry(
    site: &Site,
    key: &Node,
    value: Node,
    what: &str,
    errors: &mut Vec<ConfigError>,
    mut take: impl FnMut(&Node, &str, Node) -> Result<(), String>,
) -> Option<HashMap<String, usize>> {
    if let Err(why) = check_name(key, what) {
        errors.push(site.error(None, why));
    }
    if site.occurrence > 0 {
        let first =
            site.layout.server_line(&site.name, 0).map_or(String::new(), |i| format!(" (first on line {})", i + 1));
        errors.push(site.error(None, format!("duplicate {what} name{first}")));
    }
    let entries = match value {
        Node::Map(entries) => entries,
        other => {
            let message = format!("a {what} must be a mapping of fields, found {}", other.describe());
            errors.push(site.error(None, message));
            return None;
        }
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, value) in entries {
        let field = key.key_text();
        let occurrence = *seen.entry(field.clone()).and_modify(|n| *n += 1).or_insert(0);
        let at = (field.as_str(), occurrence);
        if occurrence > 0 {
            errors.push(site.error(Some(at), "duplicate field".to_string()));
        } else if let Err(why) = take(&key, &field, value) {
            errors.push(site.error(Some(at), why));
        }
    }
    Some(seen)
}

/// A field that is present but invalid has been reported already, so only
/// a field that is absent altogether is reported as missing.
pub(in crate::settings) fn required(
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

pub(in crate::settings) fn url_value(value: Node) -> Result<String, String> {
    match value {
        Node::Str(url) => check_url(&url).map(|()| url),
        other => Err(format!("expected a URL string, found {}", other.describe())),
    }
}

/// An empty value (`description:`) counts as absent: people leave fields
/// blank meaning "nothing to say".
pub(in crate::settings) fn optional_string(value: Node) -> Result<Option<String>, String> {
    match value {
        Node::Str(text) => Ok(Some(text)),
        Node::Null => Ok(None),
        other => Err(format!("expected a string, found {}", other.describe())),
    }
}

pub(in crate::settings) fn optional_bool(value: Node) -> Result<Option<bool>, String> {
    match value {
        Node::Bool(flag) => Ok(Some(flag)),
        Node::Null => Ok(None),
        other => Err(format!("expected true or false, found {}", other.describe())),
    }
}

/// Server names end up in logs, metrics and URLs, so they are kept to a
/// small, unambiguous alphabet.
pub(in crate::settings) fn check_name(key: &Node, what: &str) -> Result<(), String> {
    let Node::Str(name) = key else {
        return Err(format!("a {what} name must be a string, found {} (quote it)", key.describe()));
    };
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_LEN {
        return Err(format!("a {what} name must be 1 to {MAX_NAME_LEN} characters long, this one has {count}"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!(
            "invalid character {} in {what} name (allowed: letters, digits, '_', '-', '.')",
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
