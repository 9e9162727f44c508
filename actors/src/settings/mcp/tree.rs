//! The YAML tree [`parse`](super::parse) reads the file into.
//!
//! Deserializing into this tree rather than `serde_yaml::Value` keeps
//! mapping entries in file order and keeps duplicate keys, so validation can
//! report each duplicate on its own line instead of stopping at the first.

use std::fmt;

use serde::de::{
    self, Deserialize, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::quote;

/// A YAML value that keeps mapping entries in order and keeps duplicate keys.
///
/// `serde_yaml::Value` refuses a duplicate key outright, which would hide
/// every other problem in the file behind it; this keeps them so each can be
/// reported with its own line.
pub(in crate::settings) enum Node {
    Null,
    Bool(bool),
    /// The number as written back by serde_yaml; only ever shown, never used.
    Number(String),
    Str(String),
    /// A list, with its items.
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// A value with a custom tag (`!name value`), which this file never needs.
    Tagged(String),
}

impl Node {
    /// For messages: what kind of value this is, with the value when short.
    pub(in crate::settings) fn describe(&self) -> String {
        match self {
            Node::Null => "an empty value".to_string(),
            Node::Bool(flag) => format!("a boolean ({flag})"),
            Node::Number(number) => format!("a number ({number})"),
            Node::Str(text) => format!("a string ({})", quote(text)),
            Node::Seq(_) => "a list".to_string(),
            Node::Map(_) => "a mapping".to_string(),
            Node::Tagged(tag) => format!("a value tagged !{tag}"),
        }
    }

    /// The key as it reads in the file, so a non-string key (`123:`) can still
    /// be named in a message and found on its line.
    pub(in crate::settings) fn key_text(&self) -> String {
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

/// Builds a [`Node`] from whatever serde_yaml hands over.
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

    /// Lists are kept (the agents file has them); their size is bounded by
    /// the pre-scan of `limits`, which counts list items as entries.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
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
