//! A bounded, order-preserving document tree for JSON and YAML input.
//!
//! All metadata documents are first parsed into a [`Node`] through [`parse_json`],
//! [`parse_yaml`] or [`parse_yaml_or_json`]. The seed-based deserializer below counts nodes and
//! string bytes (so YAML aliases cannot inflate memory), bounds the nesting depth before the
//! parser recurses, and turns scalar mapping keys (`1:`, `true:`) into strings as PyYAML-based
//! tools would emit them. Typed models are then read from the tree with the lenient accessors
//! here, which is how unknown keys end up as warnings instead of errors.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use crate::yaml_sys::{Event, Parser, Style};
use crate::{Limits, MetadataError};

pub use crate::yaml_sys::YamlError;

/// One node of a parsed JSON/YAML document. Mappings keep their order; a repeated key keeps its
/// last value (the PyYAML and `json` module behaviour) at the position of its first occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null`, `~` or an empty YAML document.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A floating-point number (non-finite YAML floats are kept as strings).
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in document order.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value of `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The first present key among `keys` (for aliases such as `local-hostname`/`hostname`).
    pub fn get_any(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// The string, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar rendered as a string (`12` → `"12"`, `true` → `"true"`); `None` for null and
    /// collections.
    pub fn scalar_string(&self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s.clone()),
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::UInt(u) => Some(u.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Null | Node::Seq(_) | Node::Map(_) => None,
        }
    }

    /// A boolean, accepting YAML 1.1 spellings as cloud-init (PyYAML) does:
    /// `true/false/yes/no/on/off/y/n` in any case, and the integers 0 and 1.
    pub fn as_bool_loose(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            Node::UInt(0) => Some(false),
            Node::UInt(1) => Some(true),
            Node::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" | "1" => Some(true),
                "false" | "no" | "off" | "n" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A non-negative integer, from a number or a decimal string.
    pub fn as_u64_loose(&self) -> Option<u64> {
        match self {
            Node::UInt(u) => Some(*u),
            Node::Str(s) => s.trim().parse().ok(),
            Node::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19 => Some(*f as u64),
            _ => None,
        }
    }

    /// The items, when this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match self {
            Node::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, when this is a mapping.
    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match self {
            Node::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// A short name of the node's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Int(_) | Node::UInt(_) | Node::Float(_) => "number",
            Node::Str(_) => "string",
            Node::Seq(_) => "list",
            Node::Map(_) => "mapping",
        }
    }

    /// The tree as a `serde_json::Value` (mapping order is lost: serde_json sorts keys).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses JSON into a [`Node`] within `limits` (size `max_metadata_bytes`).
pub fn parse_json(
    input: &[u8],
    what: &'static str,
    limits: &Limits,
) -> Result<Node, MetadataError> {
    parse_json_capped(input, what, limits, limits.max_metadata_bytes)
}

pub(crate) fn parse_json_capped(
    input: &[u8],
    what: &'static str,
    limits: &Limits,
    cap: usize,
) -> Result<Node, MetadataError> {
    Limits::check_size(what, input, cap)?;
    let budget = Budget::new(limits);
    let mut de = serde_json::Deserializer::from_slice(input);
    let result = NodeSeed {
        budget: &budget,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|node| {
        de.end()?;
        Ok(node)
    });
    result.map_err(|source| {
        budget
            .error(what)
            .unwrap_or(MetadataError::Json { what, source })
    })
}

/// Parses one YAML document into a [`Node`] within `limits` (size `max_metadata_bytes`).
/// An empty document is [`Node::Null`]; several documents in one stream are an error.
pub fn parse_yaml(
    input: &[u8],
    what: &'static str,
    limits: &Limits,
) -> Result<Node, MetadataError> {
    parse_yaml_capped(input, what, limits, limits.max_metadata_bytes)
}

pub(crate) fn parse_yaml_capped(
    input: &[u8],
    what: &'static str,
    limits: &Limits,
    cap: usize,
) -> Result<Node, MetadataError> {
    Limits::check_size(what, input, cap)?;
    let Some(text) = yaml_text(input, what)? else {
        return Ok(Node::Null);
    };
    let budget = Budget::new(limits);
    YamlBuilder::new(&budget).run(text).map_err(|e| match e {
        BuildError::Limit => budget.error(what).unwrap_or(MetadataError::TooManyNodes {
            what,
            limit: limits.max_nodes,
        }),
        BuildError::Yaml(source) => MetadataError::Yaml { what, source },
    })
}

/// The YAML text of `input`: UTF-8, BOM removed; `None` for a blank document.
fn yaml_text<'a>(input: &'a [u8], what: &'static str) -> Result<Option<&'a str>, MetadataError> {
    let text = std::str::from_utf8(input).map_err(|_| MetadataError::NotUtf8 { what })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok((!text.trim().is_empty()).then_some(text))
}

/// Streams a YAML document looking for one top-level key of a mapping and returns its value
/// when that is a scalar (as a string), without building a tree: memory is libyaml's
/// look-ahead only. Used to read a cloud-config's `launch-index` while classifying parts.
/// Stops at the first problem (invalid YAML, depth or event limits) and returns `None`.
pub(crate) fn yaml_top_level_scalar(input: &[u8], key: &str, limits: &Limits) -> Option<String> {
    let text = std::str::from_utf8(input).ok()?;
    let mut parser = Parser::new(text).ok()?;
    let mut depth = 0usize;
    let mut events = 0usize;
    // At depth 1 inside the top-level mapping: whether the next scalar is a key, and whether
    // the previous key was the one asked for.
    let mut expect_key = true;
    let mut matched = false;
    loop {
        events += 1;
        if events > limits.max_nodes.saturating_mul(2) {
            return None;
        }
        let ev = parser.next().ok()?;
        match ev {
            Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
            Event::StreamEnd => return None,
            Event::MappingStart { .. } | Event::SequenceStart { .. } => {
                if depth == 0 && !matches!(ev, Event::MappingStart { .. }) {
                    return None;
                }
                if depth == 1 {
                    if matched {
                        return None;
                    }
                    expect_key = !expect_key;
                }
                depth += 1;
                if depth > limits.max_depth {
                    return None;
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return None;
                }
            }
            Event::Scalar { value, style, .. } if depth == 1 => {
                if expect_key {
                    matched = value == key.as_bytes();
                } else if matched {
                    let node = resolve_scalar(std::str::from_utf8(value).ok()?, style, None);
                    return node.scalar_string();
                }
                expect_key = !expect_key;
            }
            Event::Alias(_) if depth == 1 => {
                if matched && !expect_key {
                    return None;
                }
                expect_key = !expect_key;
            }
            Event::Scalar { .. } | Event::Alias(_) => {}
        }
    }
}

enum BuildError {
    /// A budget limit was hit (the budget says which).
    Limit,
    Yaml(YamlError),
}

impl BuildError {
    fn yaml(problem: &str) -> Self {
        BuildError::Yaml(YamlError {
            problem: problem.to_owned(),
            line: 0,
            column: 0,
        })
    }
}

/// A collection being built, with the budget use at its start (to know what an anchor on it
/// costs to copy).
struct Frame {
    kind: FrameKind,
    anchor: Option<Vec<u8>>,
    nodes_before: usize,
    bytes_before: usize,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>, Option<String>),
}

/// An anchored node and what one copy of it costs.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

/// Builds a [`Node`] from libyaml events. Every limit is checked before the allocation it
/// guards: depth before a collection is opened, the node count and string bytes before a
/// scalar is copied out of libyaml, and an alias's whole expanded size before it is cloned.
struct YamlBuilder<'b> {
    budget: &'b Budget,
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<Vec<u8>, Anchored>,
    root: Option<Node>,
    documents: usize,
}

impl<'b> YamlBuilder<'b> {
    fn new(budget: &'b Budget) -> Self {
        YamlBuilder {
            budget,
            stack: Vec::new(),
            anchors: std::collections::HashMap::new(),
            root: None,
            documents: 0,
        }
    }

    fn used(&self) -> (usize, usize) {
        (
            self.budget.max_nodes - self.budget.nodes_left.get(),
            self.budget.max_bytes - self.budget.bytes_left.get(),
        )
    }

    fn charge(&self, nodes: usize, bytes: usize) -> Result<(), BuildError> {
        if self.budget.take(nodes, bytes) {
            Ok(())
        } else {
            Err(BuildError::Limit)
        }
    }

    fn run(mut self, text: &str) -> Result<Node, BuildError> {
        let mut parser = Parser::new(text).map_err(BuildError::Yaml)?;
        loop {
            let ev = parser.next().map_err(BuildError::Yaml)?;
            match ev {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart => {
                    self.documents += 1;
                    if self.documents > 1 {
                        return Err(BuildError::yaml(
                            "more than one YAML document in the stream",
                        ));
                    }
                }
                Event::StreamEnd => return Ok(self.root.take().unwrap_or(Node::Null)),
                Event::Scalar {
                    anchor,
                    tag,
                    value,
                    style,
                } => {
                    if self.depth_exceeded() {
                        return Err(self.too_deep());
                    }
                    self.charge(1, value.len())?;
                    let text = std::str::from_utf8(value)
                        .map_err(|_| BuildError::yaml("scalar is not UTF-8"))?;
                    let node = if self.expects_key() {
                        Node::Str(key_string(resolve_scalar(text, style, tag)))
                    } else {
                        resolve_scalar(text, style, tag)
                    };
                    if let Some(a) = anchor {
                        let a = a.to_vec();
                        self.anchor(a, &node, 1, value.len())?;
                    }
                    self.attach(node)?;
                }
                Event::Alias(name) => {
                    let Some(a) = self.anchors.get(name) else {
                        return Err(BuildError::yaml("alias to an unknown anchor"));
                    };
                    let (nodes, bytes) = (a.nodes, a.bytes);
                    self.charge(nodes, bytes)?;
                    let node = match &self.anchors[name].node {
                        n @ Node::Str(_) => n.clone(),
                        n if self.expects_key() => Node::Str(
                            n.scalar_string()
                                .or_else(|| n.is_null().then(|| "null".to_owned()))
                                .ok_or_else(|| BuildError::yaml("mapping keys must be scalars"))?,
                        ),
                        n => n.clone(),
                    };
                    self.attach(node)?;
                }
                Event::SequenceStart { anchor } | Event::MappingStart { anchor } => {
                    if self.expects_key() {
                        return Err(BuildError::yaml("mapping keys must be scalars"));
                    }
                    if self.depth_exceeded() {
                        return Err(self.too_deep());
                    }
                    let (nodes_before, bytes_before) = self.used();
                    self.charge(1, 0)?;
                    let is_seq = matches!(ev, Event::SequenceStart { .. });
                    self.stack.push(Frame {
                        kind: if is_seq {
                            FrameKind::Seq(Vec::new())
                        } else {
                            FrameKind::Map(Vec::new(), None)
                        },
                        anchor: anchor.map(<[u8]>::to_vec),
                        nodes_before,
                        bytes_before,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let Some(frame) = self.stack.pop() else {
                        return Err(BuildError::yaml("unbalanced collection end"));
                    };
                    let node = match frame.kind {
                        FrameKind::Seq(mut items) => {
                            items.shrink_to_fit();
                            Node::Seq(items)
                        }
                        FrameKind::Map(entries, _) => {
                            let mut entries = dedup_keys(entries);
                            entries.shrink_to_fit();
                            Node::Map(entries)
                        }
                    };
                    if let Some(a) = frame.anchor {
                        let (n, b) = self.used();
                        self.anchor(a, &node, n - frame.nodes_before, b - frame.bytes_before)?;
                    }
                    self.attach(node)?;
                }
            }
        }
    }

    /// Whether the next node of the innermost mapping is a key.
    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                kind: FrameKind::Map(_, None),
                ..
            })
        )
    }

    /// Whether a node opened now would nest deeper than allowed (the root is at depth 0).
    fn depth_exceeded(&self) -> bool {
        self.stack.len() > self.budget.max_depth
    }

    fn too_deep(&self) -> BuildError {
        self.budget.exceeded.set(Some(Exceeded::Depth));
        BuildError::Limit
    }

    /// Keeps a copy of an anchored node, paid for like the alias expansions that will clone
    /// it, so the anchor table is inside the budget too.
    fn anchor(
        &mut self,
        name: Vec<u8>,
        node: &Node,
        nodes: usize,
        bytes: usize,
    ) -> Result<(), BuildError> {
        self.charge(nodes, bytes)?;
        self.anchors.insert(
            name,
            Anchored {
                node: node.clone(),
                nodes,
                bytes,
            },
        );
        Ok(())
    }

    fn attach(&mut self, node: Node) -> Result<(), BuildError> {
        match self.stack.last_mut() {
            None => {
                if self.root.is_some() {
                    return Err(BuildError::yaml("more than one root node"));
                }
                self.root = Some(node);
            }
            Some(Frame {
                kind: FrameKind::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                kind: FrameKind::Map(entries, pending),
                ..
            }) => match pending.take() {
                None => match node {
                    Node::Str(k) => *pending = Some(k),
                    _ => return Err(BuildError::yaml("mapping keys must be scalars")),
                },
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

/// A mapping key as PyYAML-based tools would write it: scalars rendered as strings, `null` for
/// an empty key.
fn key_string(node: Node) -> String {
    match node {
        Node::Str(s) => s,
        Node::Null => "null".to_owned(),
        other => other.scalar_string().unwrap_or_default(),
    }
}

/// Resolves a scalar as serde_norway (YAML 1.2 core schema) did: plain scalars may be null,
/// booleans, integers (decimal, `0x`, `0o`, `0b`; a leading zero keeps decimal digits a string)
/// or floats; quoted and block scalars, and `!!str`-tagged ones, are strings. Other tags are
/// dropped and the value kept.
fn resolve_scalar(v: &str, style: Style, tag: Option<&[u8]>) -> Node {
    if style != Style::Plain || tag == Some(b"tag:yaml.org,2002:str") || tag == Some(b"!") {
        return Node::Str(v.to_owned());
    }
    if v.is_empty() || matches!(v, "~" | "null" | "Null" | "NULL") {
        return Node::Null;
    }
    match v {
        "true" | "True" | "TRUE" => return Node::Bool(true),
        "false" | "False" | "FALSE" => return Node::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(v) {
        return n;
    }
    if !digits_but_not_number(v)
        && let Some(f) = parse_float(v)
    {
        return if f.is_finite() {
            Node::Float(f)
        } else {
            Node::Str(f.to_string())
        };
    }
    Node::Str(v.to_owned())
}

/// Decimal digits with a leading zero (`0644`): a string in YAML 1.2, not a number.
fn digits_but_not_number(v: &str) -> bool {
    let d = v.strip_prefix(['-', '+']).unwrap_or(v);
    d.len() > 1 && d.starts_with('0') && d[1..].bytes().all(|b| b.is_ascii_digit())
}

fn parse_int(v: &str) -> Option<Node> {
    let (negative, rest) = match v.as_bytes().first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    if rest.starts_with(['+', '-']) || rest.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = rest.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = rest.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = rest.strip_prefix("0b") {
        (2, d)
    } else {
        if digits_but_not_number(v) {
            return None;
        }
        (10, rest)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if negative {
        match i64::try_from(magnitude).map(|m| -m) {
            Ok(i) => Some(Node::Int(i)),
            Err(_) if magnitude == 1u128 << 63 => Some(Node::Int(i64::MIN)),
            Err(_) => Some(Node::Str(v.to_owned())),
        }
    } else {
        Some(u64::try_from(magnitude).map_or_else(|_| Node::Str(v.to_owned()), Node::UInt))
    }
}

fn parse_float(v: &str) -> Option<f64> {
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    if unsigned.starts_with(['+', '-']) && v.starts_with('+') {
        return None;
    }
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust accepts `inf`, `nan`, `infinity`: YAML does not.
    if unsigned
        .bytes()
        .any(|b| !(b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+')))
    {
        return None;
    }
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parses a document that may be JSON or YAML (NoCloud `meta-data`, `network-config`): JSON
/// when the first non-blank character is `{` or `[` and it parses as JSON, YAML otherwise.
pub fn parse_yaml_or_json(
    input: &[u8],
    what: &'static str,
    limits: &Limits,
) -> Result<Node, MetadataError> {
    Limits::check_size(what, input, limits.max_metadata_bytes)?;
    let first = input.iter().copied().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{' | b'[')) {
        match parse_json(input, what, limits) {
            Ok(node) => return Ok(node),
            Err(e @ (MetadataError::TooDeep { .. } | MetadataError::TooManyNodes { .. })) => {
                return Err(e);
            }
            Err(_) => {}
        }
    }
    parse_yaml(input, what, limits)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Depth,
    Nodes,
    Bytes,
}

struct Budget {
    nodes_left: Cell<usize>,
    bytes_left: Cell<usize>,
    max_depth: usize,
    max_nodes: usize,
    max_bytes: usize,
    exceeded: Cell<Option<Exceeded>>,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Budget {
            nodes_left: Cell::new(limits.max_nodes),
            bytes_left: Cell::new(limits.max_string_bytes),
            max_depth: limits.max_depth,
            max_nodes: limits.max_nodes,
            max_bytes: limits.max_string_bytes,
            exceeded: Cell::new(None),
        }
    }

    fn fail<E: de::Error>(&self, why: Exceeded) -> E {
        self.exceeded.set(Some(why));
        E::custom("document limits exceeded")
    }

    /// Takes `nodes` nodes and `bytes` string bytes from the budget; false (and the reason
    /// recorded) when either runs out.
    fn take(&self, nodes: usize, bytes: usize) -> bool {
        let Some(n) = self.nodes_left.get().checked_sub(nodes) else {
            self.exceeded.set(Some(Exceeded::Nodes));
            return false;
        };
        let Some(b) = self.bytes_left.get().checked_sub(bytes) else {
            self.exceeded.set(Some(Exceeded::Bytes));
            return false;
        };
        self.nodes_left.set(n);
        self.bytes_left.set(b);
        true
    }

    fn take_node<E: de::Error>(&self) -> Result<(), E> {
        match self.nodes_left.get().checked_sub(1) {
            Some(n) => {
                self.nodes_left.set(n);
                Ok(())
            }
            None => Err(self.fail(Exceeded::Nodes)),
        }
    }

    fn take_bytes<E: de::Error>(&self, len: usize) -> Result<(), E> {
        match self.bytes_left.get().checked_sub(len) {
            Some(n) => {
                self.bytes_left.set(n);
                Ok(())
            }
            None => Err(self.fail(Exceeded::Bytes)),
        }
    }

    fn error(&self, what: &'static str) -> Option<MetadataError> {
        Some(match self.exceeded.get()? {
            Exceeded::Depth => MetadataError::TooDeep {
                what,
                limit: self.max_depth,
            },
            Exceeded::Nodes => MetadataError::TooManyNodes {
                what,
                limit: self.max_nodes,
            },
            Exceeded::Bytes => MetadataError::TooManyNodes {
                what,
                limit: self.max_bytes,
            },
        })
    }
}

#[derive(Clone, Copy)]
struct NodeSeed<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        if self.depth > self.budget.max_depth {
            return Err(self.budget.fail(Exceeded::Depth));
        }
        self.budget.take_node()?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON/YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(if v >= 0 {
            Node::UInt(v as u64)
        } else {
            Node::Int(v)
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(match (u64::try_from(v), i64::try_from(v)) {
            (Ok(u), _) => Node::UInt(u),
            (_, Ok(i)) => Node::Int(i),
            _ => Node::Str(v.to_string()),
        })
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(u64::try_from(v).map_or_else(|_| Node::Str(v.to_string()), Node::UInt))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(if v.is_finite() {
            Node::Float(v)
        } else {
            Node::Str(v.to_string())
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.budget.take_bytes(v.len())?;
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.budget.take_bytes(v.len())?;
        Ok(Node::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        self.budget.take_bytes(v.len())?;
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let child = NodeSeed {
            budget: self.budget,
            depth: self.depth + 1,
        };
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let child = NodeSeed {
            budget: self.budget,
            depth: self.depth + 1,
        };
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            budget: self.budget,
        })? {
            let value = map.next_value_seed(child)?;
            entries.push((key, value));
        }
        Ok(Node::Map(dedup_keys(entries)))
    }

    // YAML values with a custom tag (`!foo bar`) arrive as enums: keep the value, drop the tag.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (_tag, variant): (String, _) = data.variant_seed(KeySeed {
            budget: self.budget,
        })?;
        variant.newtype_variant_seed(NodeSeed {
            budget: self.budget,
            depth: self.depth + 1,
        })
    }
}

/// Keeps the last value of each key, at the position of the key's first occurrence. In place:
/// beyond the entries themselves it needs 5 bytes per entry (a sorted index and a flag), never
/// a copy of the keys.
fn dedup_keys(mut entries: Vec<(String, Node)>) -> Vec<(String, Node)> {
    if entries.len() <= 16 {
        let mut out: Vec<(String, Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.iter_mut().find(|(ok, _)| *ok == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
        }
        return out;
    }
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        entries[a as usize]
            .0
            .cmp(&entries[b as usize].0)
            .then(a.cmp(&b))
    });
    let mut removed = vec![false; entries.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && entries[order[j] as usize].0 == entries[order[i] as usize].0 {
            j += 1;
        }
        if j - i > 1 {
            // Several entries share this key: the first position gets the last value.
            let (first, last) = (order[i] as usize, order[j - 1] as usize);
            let value = std::mem::replace(&mut entries[last].1, Node::Null);
            entries[first].1 = value;
            for &o in &order[i + 1..j] {
                removed[o as usize] = true;
            }
        }
        i = j;
    }
    drop(order);
    let mut index = 0;
    entries.retain(|_| {
        index += 1;
        !removed[index - 1]
    });
    entries
}

/// Deserializes a mapping key: any scalar, rendered as a string.
struct KeySeed<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        self.budget.take_node()?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.budget.take_bytes(v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.budget.take_bytes(v.len())?;
        Ok(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn yaml(s: &str) -> Result<Node, MetadataError> {
        parse_yaml(s.as_bytes(), "test", &Limits::default())
    }

    #[test]
    fn yaml_keeps_order_and_stringifies_keys() {
        let n = yaml("b: 1\na: [x, 2]\n3: yes\ntrue: ~\n").unwrap();
        let keys: Vec<&str> = n
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["b", "a", "3", "true"]);
        assert_eq!(n.get("b"), Some(&Node::UInt(1)));
        assert_eq!(
            n.get("a").unwrap().as_seq().unwrap()[0],
            Node::Str("x".into())
        );
        // YAML 1.2 parser: `yes` is a string, the loose accessor reads it as cloud-init does.
        assert_eq!(n.get("3").unwrap().as_bool_loose(), Some(true));
        assert!(n.get("true").unwrap().is_null());
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let n = yaml("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(n.as_map().unwrap().len(), 2);
        assert_eq!(n.get("a"), Some(&Node::UInt(3)));
        let many: String = (0..40).map(|i| format!("k{}: {i}\n", i % 20)).collect();
        let n = yaml(&many).unwrap();
        assert_eq!(n.as_map().unwrap().len(), 20);
        assert_eq!(n.get("k3"), Some(&Node::UInt(23)));
    }

    #[test]
    fn empty_yaml_is_null() {
        assert_eq!(yaml("").unwrap(), Node::Null);
        assert_eq!(yaml("  \n# only a comment\n").unwrap(), Node::Null);
    }

    #[test]
    fn json_and_yaml_agree_on_json_input() {
        let doc = br#"{"a": [1, -2, 2.5, "s", null, true], "b": {"c": {}}}"#;
        let j = parse_json(doc, "t", &Limits::default()).unwrap();
        let y = parse_yaml(doc, "t", &Limits::default()).unwrap();
        assert_eq!(j, y);
        assert_eq!(parse_yaml_or_json(doc, "t", &Limits::default()).unwrap(), j);
    }

    #[test]
    fn depth_is_bounded() {
        let limits = Limits {
            max_depth: 8,
            ..Limits::default()
        };
        let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert!(matches!(
            parse_json(deep.as_bytes(), "t", &limits),
            Err(MetadataError::TooDeep { limit: 8, .. })
        ));
        assert!(matches!(
            parse_yaml(deep.as_bytes(), "t", &limits),
            Err(MetadataError::TooDeep { .. })
        ));
        let ok = format!("{}{}", "[".repeat(8), "]".repeat(8));
        assert!(parse_json(ok.as_bytes(), "t", &limits).is_ok());
        // Far past serde_json's own recursion limit: still an error, not a crash.
        let very = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json(very.as_bytes(), "t", &Limits::default()).is_err());
        assert!(parse_yaml(very.as_bytes(), "t", &Limits::default()).is_err());
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n\
                    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
                    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
                    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        let limits = Limits {
            max_nodes: 10_000,
            ..Limits::default()
        };
        let err = yaml_with(bomb, &limits).unwrap_err();
        assert!(
            matches!(
                err,
                MetadataError::TooManyNodes { .. } | MetadataError::Yaml { .. }
            ),
            "{err:?}"
        );
    }

    fn yaml_with(s: &str, limits: &Limits) -> Result<Node, MetadataError> {
        parse_yaml(s.as_bytes(), "test", limits)
    }

    #[test]
    fn size_is_bounded() {
        let limits = Limits {
            max_metadata_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse_json(b"[1,2,3,4,5,6,7]", "t", &limits),
            Err(MetadataError::TooLarge {
                size: 15,
                limit: 10,
                ..
            })
        ));
    }

    #[test]
    fn multi_document_yaml_is_an_error() {
        assert!(yaml("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn custom_tags_keep_the_value() {
        let n = yaml("a: !foo bar\n").unwrap();
        assert_eq!(n.get("a"), Some(&Node::Str("bar".into())));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let l = Limits::default();
            let _ = parse_json(&bytes, "p", &l);
            let _ = parse_yaml(&bytes, "p", &l);
            let _ = parse_yaml_or_json(&bytes, "p", &l);
        }

        #[test]
        fn yaml_text_never_panics(s in "[-a-z:{}\\[\\],&*!|>'\" \n#0-9]{0,200}") {
            let _ = parse_yaml(s.as_bytes(), "p", &Limits::default());
        }

        #[test]
        fn alias_expansion_stays_in_the_budget(
            fanout in 1usize..12,
            levels in 1usize..8,
            max_nodes in 10usize..5_000,
        ) {
            let mut doc = format!("a0: &a0 [{}]\n", vec!["x"; fanout].join(", "));
            for i in 1..levels {
                doc.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); fanout].join(", ")));
            }
            let limits = Limits { max_nodes, ..Limits::default() };
            match parse_yaml(doc.as_bytes(), "p", &limits) {
                Ok(n) => {
                    fn count(n: &Node) -> usize {
                        match n {
                            Node::Seq(i) => 1 + i.iter().map(count).sum::<usize>(),
                            Node::Map(e) => 1 + e.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
                            _ => 1,
                        }
                    }
                    prop_assert!(count(&n) <= max_nodes);
                }
                Err(e) => prop_assert!(matches!(e, MetadataError::TooManyNodes { .. }), "{e}"),
            }
        }

        #[test]
        fn top_level_scan_agrees_with_the_tree(v in 0u64..1000, other in "[a-z]{1,8}", before in any::<bool>()) {
            let doc = if before {
                format!("launch-index: {v}\n{other}: [1, {{a: b}}]\n")
            } else {
                format!("{other}: {{launch-index: 5, x: [launch-index]}}\nlaunch-index: {v}\n")
            };
            let scanned = yaml_top_level_scalar(doc.as_bytes(), "launch-index", &Limits::default());
            let tree = parse_yaml(doc.as_bytes(), "p", &Limits::default()).unwrap();
            prop_assert_eq!(scanned, tree.get("launch-index").and_then(Node::scalar_string));
        }

        #[test]
        fn json_round_trips(v in arb_json()) {
            let text = serde_json::to_vec(&v).unwrap();
            let node = parse_json(&text, "p", &Limits::default()).unwrap();
            prop_assert_eq!(node.to_json(), v.clone());
            let node = parse_yaml(&text, "p", &Limits::default()).unwrap();
            prop_assert_eq!(node.to_json(), v);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9 _.:/-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_-]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
