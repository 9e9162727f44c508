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
//!
//! The parts:
//!
//! - `tree`: the YAML tree [`parse`] reads, which keeps duplicate keys so
//!   each can be reported.
//! - `validate`: the checks on each server and its fields, and the errors
//!   they produce.
//! - `layout`: the line scanner that finds servers and fields in the text.
//! - `limits`: the linear pre-scan that refuses a file too large, too deep
//!   or with too many entries before the YAML parser, which can take
//!   seconds on such input, is given it.
//! - `edit`: the one-line rewrite behind [`set_enabled`].
//!
//! This file holds the public types and the three entry points.

mod edit;
mod layout;
mod limits;
pub(in crate::settings) mod tree;
pub(in crate::settings) mod validate;

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use edit::edit_enabled;
use layout::Layout;
use tree::Node;
use validate::{check_server, Site};

pub use limits::{MAX_BYTES, MAX_DEPTH, MAX_NODES};

/// One MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// Long values are cut in messages so one bad line cannot flood a log.
const MAX_QUOTED_CHARS: usize = 120;

/// Most errors listed; past it, one last entry says how many more there
/// are, so a file of thousands of mistakes makes a small answer and event.
pub const MAX_ERRORS: usize = 100;

/// Parses and validates; every problem found is reported (not just the first) when possible.
///
/// A YAML syntax error stops everything, since nothing after it can be
/// trusted; it comes back alone with the line the YAML parser gives. So
/// does a file over the limits ([`MAX_BYTES`], [`MAX_DEPTH`] levels of
/// nesting, [`MAX_NODES`] entries), which is refused before the YAML
/// parser sees it, because that parser can take seconds on such input. At
/// most [`MAX_ERRORS`] errors are listed, then one saying how many more.
///
/// The work is linear in the text, but still up to a megabyte of it: call
/// it off event loops.
pub fn parse(text: &str) -> Result<McpConfig, Vec<ConfigError>> {
    parse_entries(text, "server", check_server).map(|servers| McpConfig { servers })
}

/// [`parse`] for any file of this layout: top-level names, each checked by
/// `check` (which adds its problems to the list and returns the entry when
/// it has what an entry needs). `what` names an entry in messages. The
/// agents file shares it.
pub(in crate::settings) fn parse_entries<T>(
    text: &str,
    what: &str,
    mut check: impl FnMut(&Site, &Node, Node, &mut Vec<ConfigError>) -> Option<T>,
) -> Result<Vec<T>, Vec<ConfigError>> {
    limits::check(text).map_err(|e| vec![e])?;
    let root = serde_yaml::from_str::<Node>(text).map_err(|e| vec![syntax_error(&e)])?;
    let layout = Layout::scan(text);
    let entries = match root {
        Node::Null => return Ok(Vec::new()),
        Node::Map(entries) => entries,
        other => {
            return Err(vec![ConfigError {
                server: None,
                field: None,
                line: layout.first_content_line().map(|i| i + 1),
                message: format!("the file must map {what} names to {what}s, found {}", other.describe()),
            }])
        }
    };

    let mut errors = Vec::new();
    let mut found = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, value) in entries {
        let name = key.key_text();
        let occurrence = *seen.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
        let site = Site::new(&layout, name, occurrence);
        if let Some(entry) = check(&site, &key, value, &mut errors) {
            found.push(entry);
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(cap(errors))
    }
}

/// Keeps the first [`MAX_ERRORS`] errors and counts the rest in one more.
fn cap(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(ConfigError {
            server: None,
            field: None,
            line: None,
            message: format!("…and {more} more problems"),
        });
    }
    errors
}

/// What changed between two valid configs, for the `config_validated` event.
///
/// Added and modified servers come in the new file's order, then removed ones
/// in the old file's order; unchanged servers are left out.
pub fn diff(old: &McpConfig, new: &McpConfig) -> Vec<Change> {
    diff_entries(&old.servers, &new.servers, |server| &server.name, changed_fields)
}

/// [`diff`] for any list of named entries; `fields` names the fields of an
/// entry that differ between its two versions. The agents file shares it.
pub(in crate::settings) fn diff_entries<T>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    fields: impl Fn(&T, &T) -> Vec<String>,
) -> Vec<Change> {
    // Indexed by name: thousands of entries must not cost a scan each.
    let old_by_name: HashMap<&str, &T> = old.iter().map(|entry| (name(entry).as_str(), entry)).collect();
    let new_by_name: HashMap<&str, &T> = new.iter().map(|entry| (name(entry).as_str(), entry)).collect();
    let change = |entry: &T, change, fields| Change { server: name(entry).clone(), change, fields };
    let mut changes: Vec<Change> = new
        .iter()
        .filter_map(|entry| match old_by_name.get(name(entry).as_str()) {
            None => Some(change(entry, ChangeKind::Added, Vec::new())),
            Some(before) => {
                let fields = fields(before, entry);
                (!fields.is_empty()).then(|| change(entry, ChangeKind::Modified, fields))
            }
        })
        .collect();
    changes.extend(
        old.iter()
            .filter(|entry| !new_by_name.contains_key(name(entry).as_str()))
            .map(|entry| change(entry, ChangeKind::Removed, Vec::new())),
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
    set_entry_enabled(text, name, enabled, parse, |config: &mut McpConfig, name| {
        config.servers.iter_mut().find(|server| server.name == name).map(|server| &mut server.enabled)
    })
}

/// [`set_enabled`] for any file of this layout (top-level names, each a
/// block of fields with an `enabled` flag): `parse` reads the file and
/// `flag` finds an entry's `enabled` in what it read. The agents file
/// shares it.
pub(in crate::settings) fn set_entry_enabled<C: Clone + PartialEq>(
    text: &str,
    name: &str,
    enabled: bool,
    parse: impl Fn(&str) -> Result<C, Vec<ConfigError>>,
    flag: impl for<'c> Fn(&'c mut C, &str) -> Option<&'c mut bool>,
) -> Result<String, ConfigError> {
    let config = parse(text).map_err(refuse_invalid)?;
    let mut expected = config.clone();
    let current = flag(&mut expected, name).ok_or_else(|| ConfigError {
        server: Some(name.to_string()),
        field: None,
        line: None,
        message: "no such entry".to_string(),
    })?;
    if *current == enabled {
        return Ok(text.to_string());
    }
    *current = enabled;
    let layout = Layout::scan(text);
    let edited = edit_enabled(text, &layout, name, enabled)?;
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
pub(in crate::settings) fn quote(value: &str) -> String {
    let mut shown: String = value.chars().take(MAX_QUOTED_CHARS).flat_map(char::escape_debug).collect();
    if value.chars().count() > MAX_QUOTED_CHARS {
        shown.push('…');
    }
    format!("'{shown}'")
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
    fn a_flood_of_duplicates_is_capped() {
        let all = errors(&"dup: 1\n".repeat(5000));
        assert_eq!(all.len(), MAX_ERRORS + 1);
        // One error for the first, two for each duplicate.
        assert_eq!(all[MAX_ERRORS].message, format!("…and {} more problems", 1 + 2 * 4999 - MAX_ERRORS));
        assert_eq!(at(&all[1]), (Some("dup"), None, Some(2)));
        assert_eq!(all[1].message, "duplicate server name (first on line 1)");
        assert_eq!(at(&all[MAX_ERRORS - 1]), (Some("dup"), None, Some(51)));
    }

    #[test]
    fn deep_nesting_is_refused_before_the_yaml_parser() {
        let text = format!("gmail:\n  url: {}x{}\n", "[".repeat(60_000), "]".repeat(60_000));
        let error = only_error(&text);
        assert_eq!(at(&error), (None, None, Some(2)));
        assert!(error.message.contains("nested more than 64 levels"), "{error}");
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
