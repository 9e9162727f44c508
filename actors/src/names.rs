//! Channel names and the patterns that grant access to them.
//!
//! A channel name is `namespace:id`: exactly two segments, the namespace one
//! of [`NAMESPACES`], the id 1–128 characters of `A–Z a–z 0–9 _ . @ -`. The
//! grammar is strict on purpose: names reach logs, metrics and (later) Redis
//! keys, so nothing that could be a path, a glob or a control character gets
//! in.
//!
//! A pattern has the same two segments, where a segment may be `*` to match
//! any one segment: `conversation:*` grants every conversation, `*:*` grants
//! everything. Access is denied unless some pattern matches.
//!
//! Tenants. Inside the server a channel is known by its key: the name in the
//! default tenant, `{tenant}/{name}` in another (a name holds no `/`, a
//! tenant id neither, so a key reads back one way only). Every actor routes
//! by key; clients only ever see the name. `system:settings` carries the
//! server's own events and is shared by every tenant; other `system:`
//! channels (a backend's alerts) are each tenant's own.
//!
//! Node and connection ids. A connection id is `{node}-{number}`
//! (`node::connection_id`); it comes back from outside in
//! `POST /api/connections/{connection_id}/send` and in Redis channel names,
//! so both parts are checked here, by the rule the configuration applies to
//! node ids.

use std::fmt;
use std::sync::Arc;

use crate::link::ConnId;

/// The channel namespaces this server routes.
pub const NAMESPACES: &[&str] = &["conversation", "team", "document", "agent", "system"];

const MAX_ID_LEN: usize = 128;

/// Longest tenant id.
pub const MAX_TENANT_LEN: usize = 64;

/// Between a tenant and a channel name in a channel's key.
const TENANT_SEPARATOR: char = '/';

/// Why a channel name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

/// Checks a channel name against the grammar and returns it shared, the form
/// every actor keeps it in.
pub fn parse_channel(name: &str) -> Result<Arc<str>, NameError> {
    let (ns, id) = name
        .split_once(':')
        .ok_or_else(|| NameError(format!("channel '{}' is not 'namespace:id'", printable(name))))?;
    if !NAMESPACES.contains(&ns) {
        return Err(NameError(format!(
            "channel '{}': unknown namespace '{}' (known: {})",
            printable(name),
            printable(ns),
            NAMESPACES.join(", ")
        )));
    }
    check_id(id).map_err(|why| NameError(format!("channel '{}': {why}", printable(name))))?;
    Ok(Arc::from(name))
}

/// A tenant id is 1–64 characters of `A–Z a–z 0–9 _ . -`: it becomes part of
/// channel keys and Redis channel names.
pub fn check_tenant(tenant: &str) -> Result<(), &'static str> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
        return Err("must be 1 to 64 characters");
    }
    if !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err("may hold only letters, digits and _ . -");
    }
    Ok(())
}

/// Longest node id.
pub const MAX_NODE_ID_LEN: usize = 32;

/// A node id is 1–32 letters, digits or `-` (the rule `--node-id` is held
/// to): it begins every connection id and is part of Redis channel names,
/// so it holds no `:`, `/` or glob character.
pub fn check_node_id(node: &str) -> Result<(), &'static str> {
    if node.is_empty() || node.len() > MAX_NODE_ID_LEN {
        return Err("must be 1 to 32 characters");
    }
    if !node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("may hold only letters, digits and -");
    }
    Ok(())
}

/// A connection's number as its id writes it: decimal digits without a
/// leading zero, so every number has one spelling and an id reads back to
/// the connection it was made from, and nothing else.
pub fn parse_conn_number(number: &str) -> Option<ConnId> {
    if number.is_empty() || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Splits a connection id, `{node}-{number}`, into its node and number. A
/// node id may hold `-` and the number never does, so the id splits at its
/// last `-`.
pub fn parse_connection_id(id: &str) -> Result<(&str, ConnId), NameError> {
    let bad = |why: &str| NameError(format!("connection id '{}' {why}", printable(id)));
    let (node, number) = id.rsplit_once('-').ok_or_else(|| bad("is not '{node}-{number}'"))?;
    check_node_id(node).map_err(|why| bad(&format!("names a node id that {why}")))?;
    let conn = parse_conn_number(number).ok_or_else(|| bad("does not end in a connection number"))?;
    Ok((node, conn))
}

/// The one channel every tenant shares: the server's settings events.
pub const SHARED_CHANNEL: &str = "system:settings";

/// The key of channel `name` (valid) in `tenant` (`None`: the default one).
pub fn channel_key(tenant: Option<&str>, name: &Arc<str>) -> Arc<str> {
    match tenant {
        Some(tenant) if &**name != SHARED_CHANNEL => Arc::from(format!("{tenant}{TENANT_SEPARATOR}{name}")),
        _ => Arc::clone(name),
    }
}

/// The name clients see of a channel key.
pub fn visible(key: &str) -> &str {
    key.split_once(TENANT_SEPARATOR).map_or(key, |(_, name)| name)
}

/// The tenant of a channel key, `None` for the default one.
pub fn tenant_of(key: &str) -> Option<&str> {
    key.split_once(TENANT_SEPARATOR).map(|(tenant, _)| tenant)
}

/// Checks a channel key (as a Redis channel carries it): a valid name,
/// after a valid tenant when there is one.
pub fn parse_key(key: &str) -> Result<Arc<str>, NameError> {
    if let Some((tenant, name)) = key.split_once(TENANT_SEPARATOR) {
        check_tenant(tenant).map_err(|why| NameError(format!("tenant '{}' {why}", printable(tenant))))?;
        if &*parse_channel(name)? == SHARED_CHANNEL {
            return Err(NameError(format!("'{SHARED_CHANNEL}' belongs to no tenant")));
        }
        return Ok(Arc::from(key));
    }
    parse_channel(key)
}

fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty id");
    }
    if id.len() > MAX_ID_LEN {
        return Err("id longer than 128 characters");
    }
    if !id.bytes().all(is_id_byte) {
        return Err("id may hold only letters, digits and _ . @ -");
    }
    Ok(())
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-')
}

/// Error messages quote what the client sent; keep them short and printable.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Exact(Box<str>),
}

impl Segment {
    fn matches(&self, s: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Exact(e) => **e == *s,
        }
    }
}

/// A grant such as `conversation:*`, from a JWT's `channels` claim or an API
/// key's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    namespace: Segment,
    id: Segment,
}

impl ChannelPattern {
    /// Parses `namespace:id` where either segment may be `*`.
    pub fn parse(pattern: &str) -> Result<Self, NameError> {
        let bad = |why: &str| NameError(format!("channel pattern '{}': {why}", printable(pattern)));
        let (ns, id) = pattern.split_once(':').ok_or_else(|| bad("not 'namespace:id'"))?;
        let namespace = if ns == "*" {
            Segment::Any
        } else if NAMESPACES.contains(&ns) {
            Segment::Exact(ns.into())
        } else {
            return Err(bad("unknown namespace"));
        };
        let id = if id == "*" {
            Segment::Any
        } else {
            check_id(id).map_err(bad)?;
            Segment::Exact(id.into())
        };
        Ok(ChannelPattern { namespace, id })
    }

    /// Whether this pattern grants `channel` (a name that passed
    /// [`parse_channel`]).
    pub fn matches(&self, channel: &str) -> bool {
        match channel.split_once(':') {
            Some((ns, id)) => self.namespace.matches(ns) && self.id.matches(id),
            None => false,
        }
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seg = |s: &Segment| match s {
            Segment::Any => "*".to_owned(),
            Segment::Exact(e) => e.to_string(),
        };
        write!(f, "{}:{}", seg(&self.namespace), seg(&self.id))
    }
}

/// Parses a list of patterns, failing on the first bad one.
pub fn parse_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Vec<ChannelPattern>, NameError> {
    patterns.iter().map(|p| ChannelPattern::parse(p.as_ref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_keys_carry_the_tenant_and_read_back_one_way() {
        let name: Arc<str> = Arc::from("conversation:c1");
        assert_eq!(&*channel_key(None, &name), "conversation:c1");
        let key = channel_key(Some("acme"), &name);
        assert_eq!(&*key, "acme/conversation:c1");
        assert_eq!((visible(&key), tenant_of(&key)), ("conversation:c1", Some("acme")));
        assert_eq!((visible(&name), tenant_of(&name)), ("conversation:c1", None));
        assert_eq!(parse_key(&key).as_deref(), Ok("acme/conversation:c1"));
        let settings: Arc<str> = Arc::from("system:settings");
        assert_eq!(&*channel_key(Some("acme"), &settings), "system:settings", "shared by every tenant");
        let alerts: Arc<str> = Arc::from("system:alerts");
        assert_eq!(&*channel_key(Some("acme"), &alerts), "acme/system:alerts", "the tenant's own");
        for bad in ["acme/system:settings", "a b/team:t1", "/team:t1", "acme/team:../x", "acme/x/team:t1"] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
        assert!(check_tenant(&"t".repeat(65)).is_err());
        assert!(check_tenant("acme-eu.1").is_ok());
    }

    #[test]
    fn connection_ids_split_at_their_last_dash() {
        assert_eq!(parse_connection_id("node-a-12"), Ok(("node-a", 12)));
        assert_eq!(parse_connection_id("a1b2c3d4-1"), Ok(("a1b2c3d4", 1)));
        assert_eq!(
            parse_connection_id(&format!("{}-{}", "n".repeat(32), u64::MAX)),
            Ok(("n".repeat(32).as_str(), u64::MAX))
        );
        for bad in [
            "",
            "node",
            "-1",
            "node-",
            "node-0",
            "node-01",
            "node-+1",
            "node-1a",
            "no:de-1",
            "no/de-1",
            "no*de-1",
            "node-18446744073709551616",
            &format!("{}-1", "n".repeat(33)),
        ] {
            assert!(parse_connection_id(bad).is_err(), "{bad}");
        }
        // A node id may end in '-' itself.
        assert_eq!(parse_connection_id("node--1"), Ok(("node-", 1)));
        assert!(check_node_id("node-a").is_ok());
        assert!(check_node_id("node_a").is_err());
    }

    #[test]
    fn accepts_well_formed_names() {
        for name in ["conversation:c1", "team:t-9", "document:a.b_c", "agent:x@y", "system:settings"] {
            assert_eq!(&*parse_channel(name).unwrap(), name);
        }
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        let cases = [
            ("conversation", "namespace:id"),
            ("chat:c1", "unknown namespace"),
            ("conversation:", "empty id"),
            ("conversation:a:b", "letters, digits"),
            ("conversation:../etc", "letters, digits"),
            ("conversation:a b", "letters, digits"),
            ("conversation:a\u{0}b", "letters, digits"),
            ("conversation:é", "letters, digits"),
            ("*:c1", "unknown namespace"),
            ("conversation:*", "letters, digits"),
        ];
        for (name, why) in cases {
            let err = parse_channel(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        let long = format!("team:{}", "a".repeat(129));
        assert!(parse_channel(&long).unwrap_err().to_string().contains("longer"));
        assert!(parse_channel(&format!("team:{}", "a".repeat(128))).is_ok());
    }

    #[test]
    fn error_messages_do_not_echo_control_characters() {
        let err = parse_channel("bad\u{7}name").unwrap_err().to_string();
        assert!(!err.contains('\u{7}'));
    }

    #[test]
    fn wildcard_matches_one_segment() {
        let p = ChannelPattern::parse("conversation:*").unwrap();
        assert!(p.matches("conversation:c1"));
        assert!(!p.matches("team:c1"));
        assert!(!p.matches("conversationx:c1"));
    }

    #[test]
    fn exact_pattern_matches_only_itself() {
        let p = ChannelPattern::parse("team:t1").unwrap();
        assert!(p.matches("team:t1"));
        assert!(!p.matches("team:t10"));
        assert!(!p.matches("team:t"));
    }

    #[test]
    fn star_star_matches_everything() {
        let p = ChannelPattern::parse("*:*").unwrap();
        for name in ["conversation:c1", "system:settings", "agent:a"] {
            assert!(p.matches(name));
        }
        let p = ChannelPattern::parse("*:shared").unwrap();
        assert!(p.matches("team:shared"));
        assert!(!p.matches("team:other"));
    }

    #[test]
    fn refuses_bad_patterns() {
        for p in ["conversation", "conv*:*", "conversation:c*", "nope:*", "team:a/b", ""] {
            assert!(ChannelPattern::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn patterns_print_as_parsed() {
        for p in ["conversation:*", "*:*", "team:t1"] {
            assert_eq!(ChannelPattern::parse(p).unwrap().to_string(), p);
        }
    }
}
