//! Spanned YAML for operator-edited files: the config file and the rules file.
//!
//! [`parse`] turns text into a tree of [`Node`]s, each knowing its line and column and its path
//! from the root (`sources.hq.auth.type`, `rules[2].when`). Readers then take typed values out
//! of the tree while *collecting* problems in [`Errors`] instead of stopping at the first, so an
//! operator sees every mistake in one run, each as `LINE:COL: PATH: MESSAGE`.
//!
//! The accepted language is deliberately small: one document, string keys, no duplicate keys,
//! no anchors or aliases, no tags. Plain scalars are typed by the YAML 1.2 core schema when a
//! reader asks for a type (`1` is an integer, `true` a boolean, `~` null); quoted and block
//! scalars are always strings.
//!
//! This module knows nothing about ccrelay's config or rules and must stay that way.

mod error;
mod load;
mod scalar;
mod suggest;
#[cfg(test)]
mod tests;

use std::fmt;

pub use error::{Error, Errors};
pub use load::parse;
pub use scalar::Resolved;
pub use suggest::closest;

/// A position in the text, both 1-based; columns count characters, not bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One value in the tree, with where it was written and how to name it in an error.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// Path from the root: `sources.hq.auth`, `rules[2].when`, `sources["*"]`; empty at the root.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    List(Vec<Node>),
    Map(Vec<Entry>),
}

/// A scalar as written. Its type is decided when read (see [`Scalar::resolve`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Written without quotes or block indicators, so subject to core-schema typing.
    pub plain: bool,
}

/// One `key: value` pair of a mapping. Keys are always scalars, kept as their text.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    /// An error located at this node.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error {
            span: self.span,
            path: self.path.clone(),
            message: message.into(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(scalar) if scalar.resolve() == Resolved::Null)
    }

    /// What the node is, for messages: "a string", "a list", "null", ...
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
            Value::Scalar(scalar) => match scalar.resolve() {
                Resolved::Null => "null",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) | Resolved::IntOutOfRange => "an integer",
                Resolved::Float(_) => "a number",
                Resolved::Str(_) => "a string",
            },
        }
    }

    /// Records "expected {what}, found {what this is}" and returns `None`, for use in `?` chains.
    pub fn mismatch<T>(&self, expected: &str, errors: &mut Errors) -> Option<T> {
        let mut message = format!("expected {expected}, found {}", self.describe());
        if expected == "a string"
            && matches!(self.describe(), "a boolean" | "an integer" | "a number")
        {
            message.push_str(" (quote it to use it as a string)");
        }
        errors.push(self.error(message));
        None
    }

    /// A string: a quoted or block scalar, or a plain one the core schema leaves a string.
    pub fn as_str(&self, errors: &mut Errors) -> Option<&str> {
        match &self.value {
            Value::Scalar(scalar) => match scalar.resolve() {
                Resolved::Str(text) => Some(text),
                _ => self.mismatch("a string", errors),
            },
            _ => self.mismatch("a string", errors),
        }
    }

    /// Any scalar's text exactly as written (`0123` stays `0123`), for values such as secrets
    /// where a number-looking string must not be refused. Null counts as the empty text.
    pub fn as_text(&self, errors: &mut Errors) -> Option<&str> {
        match &self.value {
            Value::Scalar(scalar) if scalar.resolve() == Resolved::Null => Some(""),
            Value::Scalar(scalar) => Some(&scalar.text),
            _ => self.mismatch("a string", errors),
        }
    }

    pub fn as_bool(&self, errors: &mut Errors) -> Option<bool> {
        match &self.value {
            Value::Scalar(scalar) => match scalar.resolve() {
                Resolved::Bool(value) => Some(value),
                _ => self.mismatch("a boolean (true or false)", errors),
            },
            _ => self.mismatch("a boolean (true or false)", errors),
        }
    }

    pub fn as_i64(&self, errors: &mut Errors) -> Option<i64> {
        match &self.value {
            Value::Scalar(scalar) => match scalar.resolve() {
                Resolved::IntOutOfRange => {
                    errors.push(self.error(format!("integer {} is out of range", scalar.text)));
                    None
                }
                Resolved::Int(value) => Some(value),
                _ => self.mismatch("an integer", errors),
            },
            _ => self.mismatch("an integer", errors),
        }
    }

    pub fn as_u64(&self, errors: &mut Errors) -> Option<u64> {
        let value = self.as_i64(errors)?;
        match u64::try_from(value) {
            Ok(value) => Some(value),
            Err(_) => {
                errors.push(self.error(format!("expected a non-negative integer, found {value}")));
                None
            }
        }
    }

    pub fn as_list(&self, errors: &mut Errors) -> Option<&[Node]> {
        match &self.value {
            Value::List(items) => Some(items),
            _ => self.mismatch("a list", errors),
        }
    }

    /// A map, to be read field by field; see [`MapReader`].
    pub fn as_map(&self, errors: &mut Errors) -> Option<MapReader<'_>> {
        match &self.value {
            Value::Map(entries) => Some(MapReader {
                node: self,
                entries,
                asked: Vec::new(),
                taken: vec![false; entries.len()],
            }),
            _ => self.mismatch("a map", errors),
        }
    }

    /// A string that must be one of a closed set of names. An unknown name is reported with
    /// the valid ones and, when it looks like a typo, the closest: `what` names the set in the
    /// message ("unknown auth type `hamc` ...").
    pub fn as_choice<T: Copy>(
        &self,
        what: &str,
        choices: &[(&str, T)],
        errors: &mut Errors,
    ) -> Option<T> {
        let name = self.as_str(errors)?;
        if let Some((_, value)) = choices.iter().find(|(choice, _)| *choice == name) {
            return Some(*value);
        }
        let names: Vec<&str> = choices.iter().map(|(choice, _)| *choice).collect();
        errors.push(self.error(unknown_name_message(what, name, &names)));
        None
    }

    /// A string turned into a value by `parse`, whose error text becomes the message.
    pub fn parse_str<T>(
        &self,
        errors: &mut Errors,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.as_str(errors)?;
        match parse(text) {
            Ok(value) => Some(value),
            Err(message) => {
                errors.push(self.error(message));
                None
            }
        }
    }

    /// A positive duration written the way operators write them: `500ms`, `30s`, `5m`,
    /// `2h`, `7d`, or combined (`1h 30m`); ISO 8601 (`PT5M`) is read too.
    pub fn as_duration(&self, errors: &mut Errors) -> Option<std::time::Duration> {
        if self.describe() == "an integer" {
            // A bare number could mean seconds or milliseconds; make the unit explicit.
            return self.mismatch("a duration with a unit such as `10s` or `500ms`", errors);
        }
        self.parse_str(errors, |text| {
            let wrong = || {
                format!(
                    "expected a duration such as `500ms`, `30s`, `5m`, `2h` or `7d`, found `{text}`"
                )
            };
            // A span, not a SignedDuration, so that days are allowed (counted as 24 hours).
            let span: jiff::Span = text.trim().parse().map_err(|_| wrong())?;
            let parsed = span
                .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                .map_err(|_| wrong())?;
            std::time::Duration::try_from(parsed)
                .ok()
                .filter(|duration| !duration.is_zero())
                .ok_or_else(|| format!("expected a positive duration, found `{text}`"))
        })
    }

    /// Calls `visit` on every scalar that is a value (not a key), depth first in text order.
    /// The config uses it for `${VAR}` substitution, which must keep positions right.
    pub fn visit_scalars_mut(&mut self, visit: &mut dyn FnMut(&mut Scalar, Span, &str)) {
        match &mut self.value {
            Value::Scalar(scalar) => visit(scalar, self.span, &self.path),
            Value::List(items) => {
                for item in items {
                    item.visit_scalars_mut(visit);
                }
            }
            Value::Map(entries) => {
                for entry in entries {
                    entry.value.visit_scalars_mut(visit);
                }
            }
        }
    }
}

/// "unknown {what} `name` (did you mean `x`?), expected one of: a, b, c"
pub fn unknown_name_message(what: &str, name: &str, valid: &[&str]) -> String {
    let mut message = format!("unknown {what} `{name}`");
    if let Some(suggestion) = closest(name, valid) {
        message.push_str(&format!(" (did you mean `{suggestion}`?)"));
    }
    if valid.is_empty() {
        message.push_str(", expected none here");
    } else {
        message.push_str(&format!(", expected one of: {}", valid.join(", ")));
    }
    message
}

/// Reads a map field by field. Every name asked for, found or not, becomes a valid name;
/// [`MapReader::finish`] then reports each key nobody asked for, listing the valid names.
#[must_use = "call finish() to report unknown fields"]
pub struct MapReader<'a> {
    node: &'a Node,
    entries: &'a [Entry],
    asked: Vec<&'static str>,
    taken: Vec<bool>,
}

impl<'a> MapReader<'a> {
    /// The map itself, for errors about the whole map.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// Every entry, for maps whose keys are names chosen by the user (sources, sinks).
    pub fn entries(&self) -> &'a [Entry] {
        self.entries
    }

    /// The field's value, or `None` when it is absent or null (`rules:` or `rules: ~`).
    pub fn optional(&mut self, name: &'static str) -> Option<&'a Node> {
        if !self.asked.contains(&name) {
            self.asked.push(name);
        }
        let index = self.entries.iter().position(|entry| entry.key == name)?;
        self.taken[index] = true;
        let value = &self.entries[index].value;
        (!value.is_null()).then_some(value)
    }

    /// The field's value; absent or null is reported ("missing field `name`", "missing value").
    pub fn required(&mut self, name: &'static str, errors: &mut Errors) -> Option<&'a Node> {
        let value = self.optional(name);
        if value.is_none() {
            match self.entries.iter().find(|entry| entry.key == name) {
                Some(entry) => errors.push(entry.value.error("missing value")),
                None => errors.push(self.node.error(format!("missing field `{name}`"))),
            }
        }
        value
    }

    /// Reports every key that was not asked for, at the key's position.
    pub fn finish(self, errors: &mut Errors) {
        for (entry, taken) in self.entries.iter().zip(&self.taken) {
            if !taken {
                errors.push(Error {
                    span: entry.key_span,
                    path: join_key(&self.node.path, &entry.key),
                    message: unknown_name_message("field", &entry.key, &self.asked),
                });
            }
        }
    }

    /// Drops the reader without reporting unknown fields, for when the valid fields are not
    /// known (the map's `type` was itself wrong, and one error about that is enough).
    pub fn abandon(self) {}
}

/// The path of `key` inside the map at `parent`: `a.b`, or `a["*"]` when the key is not a
/// plain name.
/// Errors as an operator reads them: one per line, `ORIGIN:LINE:COL: PATH: MESSAGE`.
pub fn render_errors(origin: &str, errors: &[Error]) -> String {
    let lines: Vec<String> = errors
        .iter()
        .map(|error| format!("{origin}:{error}"))
        .collect();
    lines.join("\n")
}

pub fn join_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}
