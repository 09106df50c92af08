//! Decoding YAML into raw config structs while collecting every problem.
//!
//! serde stops at the first error, and no maintained YAML crate reports all
//! of a file's problems with their places at once, so the raw structs are
//! decoded by this small walker over saphyr's span-annotated tree instead.
//! Every decoder returns a value (a default where the input was wrong) and
//! records what was wrong in [`Problems`], so that decoding goes on and the
//! user sees the whole list.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use saphyr::{MarkedYamlOwned, ScalarStyle, YamlDataOwned, YamlLoader};
use saphyr_parser::Parser;

use crate::error::{Problems, Span};

/// A node of the document with its path from the root.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    yaml: &'a MarkedYamlOwned,
    path: &'a str,
}

/// Parses YAML text into its first document. A syntax error is reported with
/// its place and gives `None`.
pub fn parse_document(text: &str, problems: &mut Problems) -> Option<MarkedYamlOwned> {
    let mut parser = Parser::new_from_str(text);
    let mut loader: YamlLoader<'_, MarkedYamlOwned> = YamlLoader::default();
    // Keep scalars as written so that e.g. a version named `1.10` stays
    // "1.10" and the decoder, not the YAML resolver, decides each type.
    loader.early_parse(false);
    let result = parser.load(&mut loader, true);
    let err = match (result, loader.error()) {
        (Err(e), _) => Some(e),
        (Ok(()), Some(e)) => Some(e.clone()),
        (Ok(()), None) => None,
    };
    if let Some(e) = err {
        let m = e.marker();
        problems.report(
            Span::new(m.line(), m.col() + 1),
            "",
            format!("YAML syntax: {}", e.info()),
        );
        return None;
    }
    let mut docs = loader.into_documents();
    if docs.is_empty() {
        problems.report(Span::new(1, 1), "", "the file is empty");
        return None;
    }
    if docs.len() > 1 {
        problems.report(
            Span::new(1, 1),
            "",
            "the file holds more than one YAML document; put everything in one",
        );
    }
    Some(docs.swap_remove(0))
}

pub fn span_of(yaml: &MarkedYamlOwned) -> Span {
    Span::new(yaml.span.start.line(), yaml.span.start.col() + 1)
}

/// The scalar text of a node as written, or `None` for collections.
pub(crate) fn scalar_text(yaml: &MarkedYamlOwned) -> Option<(&str, bool)> {
    match &yaml.data {
        YamlDataOwned::Representation(s, style, _) => {
            Some((s.as_str(), !matches!(style, ScalarStyle::Plain)))
        }
        YamlDataOwned::Tagged(_, inner) => scalar_text(inner),
        _ => None,
    }
}

fn is_null(yaml: &MarkedYamlOwned) -> bool {
    match scalar_text(yaml) {
        Some((s, quoted)) => !quoted && matches!(s, "" | "~" | "null" | "Null" | "NULL"),
        None => matches!(yaml.data, YamlDataOwned::BadValue),
    }
}

fn kind(yaml: &MarkedYamlOwned) -> &'static str {
    match &yaml.data {
        YamlDataOwned::Sequence(_) => "a list",
        YamlDataOwned::Mapping(_) => "a mapping",
        _ if is_null(yaml) => "nothing (null)",
        YamlDataOwned::Alias(_) => "an alias",
        _ => "a scalar",
    }
}

impl<'a> Node<'a> {
    pub fn root(yaml: &'a MarkedYamlOwned) -> Self {
        Self { yaml, path: "" }
    }

    pub fn span(&self) -> Span {
        span_of(self.yaml)
    }

    pub fn path(&self) -> &str {
        self.path
    }

    pub fn is_null(&self) -> bool {
        is_null(self.yaml)
    }

    pub fn is_sequence(&self) -> bool {
        matches!(self.yaml.data, YamlDataOwned::Sequence(_))
    }

    pub fn is_mapping(&self) -> bool {
        matches!(self.yaml.data, YamlDataOwned::Mapping(_))
    }

    pub fn report(&self, problems: &mut Problems, message: impl Into<String>) {
        problems.report(self.span(), self.path, message);
    }

    fn expected(&self, problems: &mut Problems, what: &str) {
        self.report(
            problems,
            format!("expected {what}, found {}", kind(self.yaml)),
        );
    }

    /// The text of a scalar node; reports and gives `None` for anything else.
    pub fn text(&self, problems: &mut Problems, what: &str) -> Option<&'a str> {
        match scalar_text(self.yaml) {
            Some((s, _)) if !self.is_null() => Some(s),
            _ => {
                self.expected(problems, what);
                None
            }
        }
    }

    /// Runs `f` on each item of a list with its path.
    pub fn each_item(&self, problems: &mut Problems, mut f: impl FnMut(Node<'_>, &mut Problems)) {
        match &self.yaml.data {
            YamlDataOwned::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", self.path);
                    f(
                        Node {
                            yaml: item,
                            path: &path,
                        },
                        problems,
                    );
                }
            }
            _ if self.is_null() => {}
            _ => self.expected(problems, "a list"),
        }
    }

    /// Runs `f` on each key and value of a mapping.
    pub fn each_entry(
        &self,
        problems: &mut Problems,
        mut f: impl FnMut(&str, Span, Node<'_>, &mut Problems),
    ) {
        match &self.yaml.data {
            YamlDataOwned::Mapping(map) => {
                for (k, v) in map.iter() {
                    let Some((key, _)) = scalar_text(k) else {
                        problems.report(span_of(k), self.path, "a key must be a plain string");
                        continue;
                    };
                    let path = join(self.path, key);
                    f(
                        key,
                        span_of(k),
                        Node {
                            yaml: v,
                            path: &path,
                        },
                        problems,
                    );
                }
            }
            _ if self.is_null() => {}
            _ => self.expected(problems, "a mapping"),
        }
    }

    /// Treats this node as a struct with the given field names: reports
    /// unknown fields (with a suggestion) and returns a handle to read fields.
    pub fn fields(&self, problems: &mut Problems, known: &'static [&'static str]) -> Fields<'a> {
        let mut entries = Vec::new();
        match &self.yaml.data {
            YamlDataOwned::Mapping(map) => {
                for (k, v) in map.iter() {
                    let Some((key, _)) = scalar_text(k) else {
                        problems.report(span_of(k), self.path, "a key must be a plain string");
                        continue;
                    };
                    if key.is_empty() {
                        problems.report(span_of(k), self.path, "a key must not be empty");
                        continue;
                    }
                    if !known.contains(&key) {
                        let mut msg = format!("unknown field `{key}`");
                        if let Some(s) = suggest(key, known) {
                            msg.push_str(&format!(", did you mean `{s}`?"));
                        } else {
                            msg.push_str(&format!(", expected one of: {}", known.join(", ")));
                        }
                        problems.report(span_of(k), join(self.path, key), msg);
                        continue;
                    }
                    entries.push((key, v));
                }
            }
            _ if self.is_null() => {}
            _ => self.expected(problems, "a mapping"),
        }
        Fields {
            span: self.span(),
            path: self.path,
            entries,
        }
    }
}

/// The path of field `key` of the mapping at `path`.
#[doc(hidden)]
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The closest known name within a small edit distance.
///
/// `given` comes from the file, so it may hold any characters: it is cut
/// and counted in characters, never in bytes (a byte index inside `€`
/// would panic).
pub fn suggest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = given.to_ascii_lowercase();
    let length = lower.chars().count();
    // An abbreviation (`Regex` for `RegularExpression`) or a prefix.
    if length >= 3 {
        let head = char_prefix(&lower, 3);
        let starting = |prefix: &str| {
            known
                .iter()
                .find(|k| k.to_ascii_lowercase().starts_with(prefix))
        };
        // The whole name given first: `ReplacePrefix` is
        // `ReplacePrefixMatch`, not `ReplaceFullPath`.
        if let Some(k) = starting(&lower).or_else(|| starting(head).filter(|_| length >= 4)) {
            return Some(k);
        }
    }
    known
        .iter()
        .filter_map(|k| {
            let bound = 2.max(k.chars().count() / 4);
            // The distance is at least the difference in length: skip the
            // quadratic count for names that cannot be close.
            if length.abs_diff(k.chars().count()) > bound {
                return None;
            }
            let d = edit_distance(&lower, &k.to_ascii_lowercase());
            (d <= bound).then_some((d, *k))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The first `n` characters of `s` (all of it when it is shorter).
fn char_prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(end, _)| &s[..end])
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The fields of one mapping, read by name.
pub struct Fields<'a> {
    pub span: Span,
    path: &'a str,
    entries: Vec<(&'a str, &'a MarkedYamlOwned)>,
}

impl<'a> Fields<'a> {
    fn find(&self, key: &str) -> Option<&'a MarkedYamlOwned> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.find(key).is_some_and(|v| !is_null(v))
    }

    /// Decodes an optional field; absent or null gives the default.
    pub fn get<T: Decode + Default>(&self, problems: &mut Problems, key: &str) -> T {
        self.get_opt(problems, key).unwrap_or_default()
    }

    /// Decodes an optional field; absent or null gives `None`, and so does
    /// a value that cannot be read (reported, and its path settled).
    pub fn get_opt<T: Decode>(&self, problems: &mut Problems, key: &str) -> Option<T> {
        let v = self.find(key)?;
        if is_null(v) {
            return None;
        }
        let path = join(self.path, key);
        let value = T::decode(
            Node {
                yaml: v,
                path: &path,
            },
            problems,
        );
        if value.is_none() {
            problems.settle(path);
        }
        value
    }

    /// Decodes a required field; reports when it is absent. Absent or
    /// unreadable, it gives a placeholder that carries the place of the
    /// field (or of its mapping), and its path is settled: see
    /// [`Problems::settle`].
    pub fn required<T: Decode + Default>(&self, problems: &mut Problems, key: &str) -> T {
        let path = join(self.path, key);
        match self.find(key) {
            Some(v) if !is_null(v) => {
                let node = Node {
                    yaml: v,
                    path: &path,
                };
                T::decode(node, problems).unwrap_or_else(|| {
                    problems.settle(path.as_str());
                    T::placeholder(node.span(), &path)
                })
            }
            _ => {
                problems.report(
                    self.span,
                    self.path,
                    format!("missing required field `{key}`"),
                );
                problems.settle(path.as_str());
                T::placeholder(self.span, &path)
            }
        }
    }

    /// Decodes the field that says which kind of section this mapping is
    /// (its `type`): which other fields mean something, and what they mean,
    /// depends on it. When it is wrong (or `required` and missing), that is
    /// the one problem reported about the section: the others it had or
    /// would have are dropped (see [`Problems::settle_section`]).
    pub fn tag<T: Decode + Default>(
        &self,
        problems: &mut Problems,
        key: &str,
        required: bool,
    ) -> T {
        let path = join(self.path, key);
        match self.find(key) {
            Some(v) if !is_null(v) => {
                let node = Node {
                    yaml: v,
                    path: &path,
                };
                T::decode(node, problems).unwrap_or_else(|| {
                    problems.settle_section(self.path, &path);
                    T::placeholder(node.span(), &path)
                })
            }
            _ if required => {
                problems.report(
                    self.span,
                    self.path,
                    format!("missing required field `{key}`"),
                );
                problems.settle_section(self.path, self.path);
                T::placeholder(self.span, &path)
            }
            _ => T::default(),
        }
    }

    /// The raw node of a field, to decode by hand.
    pub fn node(&self, key: &str) -> Option<Node<'a>> {
        // The path must outlive the node; fields read by hand are rare, so
        // leak-free ownership is kept by handing out a node whose path is the
        // parent's (callers add the key in their messages).
        self.find(key).map(|v| Node {
            yaml: v,
            path: self.path,
        })
    }
}

/// Something that can be read from a YAML node. Problems are recorded, and
/// `None` is returned when the node gave nothing usable.
pub trait Decode: Sized {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self>;

    /// What a required field holds when it is missing or unreadable (that
    /// is reported already): the default, with `span` and `path` (the
    /// field's place, or its mapping's when it is missing) in the types that
    /// keep a place, so that nothing checked on it later points nowhere.
    fn placeholder(span: Span, path: &str) -> Self
    where
        Self: Default,
    {
        let _ = (span, path);
        Self::default()
    }
}

impl Decode for String {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        node.text(problems, "a string").map(str::to_string)
    }
}

impl Decode for bool {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        match node.text(problems, "true or false")? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            other => {
                node.report(problems, format!("expected true or false, found `{other}`"));
                None
            }
        }
    }
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
                let s = node.text(problems, "a whole number")?;
                match s.replace('_', "").parse::<$t>() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        node.report(problems, format!(
                            "expected a whole number from {} to {}, found `{s}`",
                            <$t>::MIN, <$t>::MAX));
                        None
                    }
                }
            }
        }
    )*};
}
decode_int!(u8, u16, u32, u64, usize, i64);

impl Decode for f64 {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        let s = node.text(problems, "a number")?;
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                node.report(problems, format!("expected a number, found `{s}`"));
                None
            }
        }
    }
}

/// A duration written like `250ms`, `5s`, `1m` or `1h 30m`.
impl Decode for Duration {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        let s = node.text(problems, "a duration such as 250ms, 5s or 1m")?;
        parse_duration(s).map_or_else(
            |msg| {
                node.report(problems, msg);
                None
            },
            Some,
        )
    }
}

/// Parses a config duration; the error says what was wrong.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad duration `{s}` ({e}); write it like 250ms, 5s, 1m or 1h30m"))
}

impl Decode for SocketAddr {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        let s = node.text(problems, "an address such as 127.0.0.1:8080")?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                node.report(
                    problems,
                    format!(
                        "bad address `{s}`: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080"
                    ),
                );
                None
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        if node.is_null() {
            return Some(None);
        }
        T::decode(node, problems).map(Some)
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        if !node.is_sequence() && !node.is_null() {
            node.expected(problems, "a list");
            return None;
        }
        let mut out = Vec::new();
        node.each_item(problems, |item, p| {
            if let Some(v) = T::decode(item, p) {
                out.push(v);
            }
        });
        Some(out)
    }
}

impl<T: Decode> Decode for BTreeMap<String, T> {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        if !node.is_mapping() && !node.is_null() {
            node.expected(problems, "a mapping");
            return None;
        }
        let mut out = BTreeMap::new();
        node.each_entry(problems, |k, _, v, p| {
            if let Some(v) = T::decode(v, p) {
                out.insert(k.to_string(), v);
            }
        });
        Some(out)
    }
}

/// A value with the place and path it was read from, for checks made after
/// decoding (unknown names, sums) that must still point at the right line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
    pub path: String,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Decode> Decode for Spanned<T> {
    fn decode(node: Node<'_>, problems: &mut Problems) -> Option<Self> {
        T::decode(node, problems).map(|value| Spanned {
            value,
            span: node.span(),
            path: node.path().to_string(),
        })
    }

    fn placeholder(span: Span, path: &str) -> Self
    where
        Self: Default,
    {
        Spanned {
            span,
            path: path.to_string(),
            ..Self::default()
        }
    }
}

impl<T> Spanned<T> {
    pub fn report(&self, problems: &mut Problems, message: impl Into<String>) {
        problems.report(self.span, self.path.clone(), message);
    }
}

/// Declares a raw config struct and its decoder: fields are listed with the
/// YAML key they are read from; `[required]` ones are reported when absent;
/// a `[tag]` (or `[required tag]`) says which kind of section the mapping
/// is (see [`Fields::tag`]). Every struct also keeps the place (`span`) and
/// `node_path` of its mapping.
#[macro_export]
macro_rules! config_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $key:literal $([$($flag:ident)+])? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            pub span: $crate::error::Span,
            pub node_path: String,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// The keys this mapping may hold.
            pub const FIELDS: &'static [&'static str] = &[$($key),*];
        }

        impl $crate::decode::Decode for $name {
            fn decode(
                node: $crate::decode::Node<'_>,
                problems: &mut $crate::error::Problems,
            ) -> Option<Self> {
                let fields = node.fields(problems, Self::FIELDS);
                Some(Self {
                    span: node.span(),
                    node_path: node.path().to_string(),
                    $( $field: $crate::config_struct!(@read fields, problems, $key $(, $($flag)+)?), )*
                })
            }

            fn placeholder(span: $crate::error::Span, path: &str) -> Self {
                Self {
                    span,
                    node_path: path.to_string(),
                    $( $field: <$ty as $crate::decode::Decode>::placeholder(
                        span,
                        &$crate::decode::join(path, $key),
                    ), )*
                }
            }
        }
    };
    (@read $fields:ident, $problems:ident, $key:literal, required) => {
        $fields.required($problems, $key)
    };
    (@read $fields:ident, $problems:ident, $key:literal, tag) => {
        $fields.tag($problems, $key, false)
    };
    (@read $fields:ident, $problems:ident, $key:literal, required tag) => {
        $fields.tag($problems, $key, true)
    };
    (@read $fields:ident, $problems:ident, $key:literal) => {
        $fields.get($problems, $key)
    };
}

/// Declares a string enum read from YAML by its exact names.
#[macro_export]
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),* $(,)? }
        default = $default:ident
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name { $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )* }

        impl Default for $name {
            fn default() -> Self {
                Self::$default
            }
        }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),*];

            pub fn as_str(&self) -> &'static str {
                match self { $( Self::$variant => $text, )* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::decode::Decode for $name {
            fn decode(
                node: $crate::decode::Node<'_>,
                problems: &mut $crate::error::Problems,
            ) -> Option<Self> {
                let s = node.text(problems, "a name")?;
                match s {
                    $( $text => Some(Self::$variant), )*
                    _ => {
                        let mut msg = format!("unknown value `{s}`");
                        match $crate::decode::suggest(s, Self::NAMES) {
                            Some(g) => msg.push_str(&format!(", did you mean `{g}`?")),
                            None => msg.push_str(&format!(", expected one of: {}", Self::NAMES.join(", "))),
                        }
                        node.report(problems, msg);
                        None
                    }
                }
            }
        }
    };
}

#[cfg(test)]
#[allow(dead_code)]
mod tests {
    use super::*;

    config_struct! {
        pub struct Inner {
            name: String = "name" [required],
            weight: u32 = "weight",
        }
    }

    config_struct! {
        pub struct Outer {
            timeout: Option<Duration> = "timeout",
            items: Vec<Inner> = "items",
        }
    }

    fn decode(text: &str) -> (Outer, Vec<String>) {
        let mut p = Problems::new("t.yaml");
        let doc = parse_document(text, &mut p).unwrap_or_else(|| panic!("parse"));
        let v = Outer::decode(Node::root(&doc), &mut p).unwrap_or_default();
        let errs = p
            .finish(())
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        (v, errs)
    }

    #[test]
    fn reports_every_problem_with_place_and_path() {
        let (_, errs) =
            decode("timeout: 5 parsecs\nitems:\n  - name: a\n    wieght: 3\n  - weight: x\n");
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with("t.yaml:1:10: timeout: bad duration"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains(
                "t.yaml:4:5: items[0].wieght: unknown field `wieght`, did you mean `weight`?"
            ),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].contains("t.yaml:5:5: items[1]: missing required field `name`"),
            "{}",
            errs[2]
        );
        assert!(
            errs[3].contains("t.yaml:5:13: items[1].weight: expected a whole number"),
            "{}",
            errs[3]
        );
    }

    #[test]
    fn decodes_good_input() {
        let (v, errs) = decode("timeout: 250ms\nitems: [{name: '1.10', weight: 7}]\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(v.timeout, Some(Duration::from_millis(250)));
        assert_eq!(v.items[0].name, "1.10");
        assert_eq!(v.items[0].weight, 7);
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let mut p = Problems::new("t.yaml");
        assert!(parse_document("a: [1, 2\nb: 3\n", &mut p).is_none());
        let e = p
            .finish(())
            .err()
            .unwrap_or_else(|| panic!("error expected"));
        assert!(e.0[0].to_string().contains("YAML syntax"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let mut p = Problems::new("t.yaml");
        assert!(parse_document("a: 1\na: 2\n", &mut p).is_none());
    }

    #[test]
    fn an_empty_key_is_reported_where_it_is() {
        let (_, errs) = decode(": 1\nitems: [{name: a, '': 2}]\n");
        assert_eq!(
            errs,
            [
                "t.yaml:1:1: a key must not be empty",
                "t.yaml:2:19: items[0]: a key must not be empty"
            ]
        );
    }

    #[test]
    fn suggestions_take_any_characters() {
        let known = ["LeastRequest", "RoundRobin", "Random", "RingHash"];
        // Each cuts or counts inside a multi-byte character when done in bytes.
        for given in [
            "ab€cd",
            "€",
            "€€€€",
            "ñam",
            "Ro€",
            "日本語のキー",
            "a\u{301}bc",
            "",
        ] {
            let _ = suggest(given, &known);
        }
        assert_eq!(suggest("Rou€", &known), Some("RoundRobin"));
        assert_eq!(suggest("Randöm", &known), Some("Random"));
        assert_eq!(suggest("ab€cd", &known), None);
        assert_eq!(
            suggest("Regex", &["Exact", "RegularExpression"]),
            Some("RegularExpression")
        );
        assert_eq!(suggest("wieght", &["weight", "name"]), Some("weight"));
    }

    #[test]
    fn an_unknown_key_or_value_with_any_characters_is_reported() {
        let (_, errs) = decode("ab€cd: 1\nitems: [{name: a, wéight: 1}]\n");
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].starts_with("t.yaml:1:1: ab€cd: unknown field `ab€cd`, expected one of"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with(
                "t.yaml:2:19: items[0].wéight: unknown field `wéight`, did you mean `weight`?"
            ),
            "{}",
            errs[1]
        );
    }
}
