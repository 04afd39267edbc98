//! Conditions (`when:`): read from the rules file once into a tree, then evaluated against
//! envelopes without allocating (docs/rules.md, "Conditions").
//!
//! Semantics in one place, because the index (`index.rs`) relies on them:
//!
//! - A path reaches zero or more values (`path.rs`); the positive operators hold when *some*
//!   value satisfies them, and several positive operators on one path must hold for the *same*
//!   value.
//! - `ne` and `not_in` are the exact negations of `eq` and `in`: no reached value may be
//!   equal, so they hold on a missing path. `not` negates a whole condition the same way.
//! - Equality compares text with text exactly; when either side is a number, both are read as
//!   numbers (HQ sends answers as strings, so `"4"` equals `4`). An object with `#text` (an XML
//!   element with attributes) is compared by its text.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::Value;

use super::path::Path;
use crate::yaml::{self, Errors, Node, Resolved, join_key, unknown_name_message};

/// Every operator, in the order error messages list them.
pub const OPERATORS: [&str; 13] = [
    "eq",
    "ne",
    "in",
    "not_in",
    "exists",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "gt",
    "gte",
    "lt",
    "lte",
];

#[derive(Debug)]
pub enum Condition {
    Always,
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Field(FieldTest),
}

/// The operators applied to one path.
#[derive(Debug)]
pub struct FieldTest {
    pub path: Path,
    /// Must all hold for one and the same reached value.
    pub same_value: Vec<Op>,
    /// `ne`/`not_in`, stored as the `eq`/`in` they negate: no reached value may satisfy them.
    pub none_of: Vec<Op>,
    /// `exists`: whether the path must reach some value.
    pub exists: Option<bool>,
}

#[derive(Debug)]
pub enum Op {
    Eq(Literal),
    In(Vec<Literal>),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    Matches(Regex),
    Compare(Comparison, Bound),
}

/// A value written in a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Number(f64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The right-hand side of `gt`/`gte`/`lt`/`lte`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    Number(f64),
    /// Compared with the date part of date-times.
    Date(jiff::civil::Date),
    /// Compared as instants; date-times without an offset are read as UTC.
    Instant(jiff::Timestamp),
}

impl Condition {
    pub fn matches(&self, envelope: &Value) -> bool {
        match self {
            Condition::Always => true,
            Condition::All(children) => children.iter().all(|child| child.matches(envelope)),
            Condition::Any(children) => children.iter().any(|child| child.matches(envelope)),
            Condition::Not(child) => !child.matches(envelope),
            Condition::Field(test) => test.matches(envelope),
        }
    }

    /// The field tests every match requires: this one, or the children of an `all`, flattened.
    pub fn conjuncts(&self) -> Vec<&FieldTest> {
        match self {
            Condition::Field(test) => vec![test],
            Condition::All(children) => children.iter().flat_map(Condition::conjuncts).collect(),
            _ => Vec::new(),
        }
    }
}

impl FieldTest {
    fn matches(&self, envelope: &Value) -> bool {
        if let Some(wanted) = self.exists {
            if self.path.any(envelope, &mut |_| true) != wanted {
                return false;
            }
        }
        for op in &self.none_of {
            if self.path.any(envelope, &mut |value| op.holds(value)) {
                return false;
            }
        }
        self.same_value.is_empty()
            || self.path.any(envelope, &mut |value| {
                self.same_value.iter().all(|op| op.holds(value))
            })
    }
}

impl Op {
    pub fn holds(&self, value: &Value) -> bool {
        match self {
            Op::Eq(literal) => literal.equals(value),
            Op::In(literals) => literals.iter().any(|literal| literal.equals(value)),
            Op::StartsWith(prefix) => with_text(value, |text| text.starts_with(prefix.as_str())),
            Op::EndsWith(suffix) => with_text(value, |text| text.ends_with(suffix.as_str())),
            Op::Contains(part) => with_text(value, |text| text.contains(part.as_str())),
            Op::Matches(regex) => with_text(value, |text| regex.is_match(text)),
            Op::Compare(comparison, bound) => bound
                .compare(value)
                .is_some_and(|ordering| comparison.accepts(ordering)),
        }
    }
}

impl Literal {
    fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Literal::Number(number), _) => number_of(value) == Some(*number),
            (Literal::Str(text), Value::Number(number)) => {
                parse_number(text).is_some_and(|parsed| Some(parsed) == number.as_f64())
            }
            (Literal::Str(text), _) => text_of(value) == Some(text.as_str()),
            (Literal::Bool(wanted), Value::Bool(found)) => wanted == found,
            (Literal::Bool(wanted), _) => {
                text_of(value) == Some(if *wanted { "true" } else { "false" })
            }
        }
    }

    /// The text an equal value must have, when only a string can equal this literal; such
    /// literals can be looked up in an index keyed by text (`index.rs`).
    pub fn index_key(&self) -> Option<&str> {
        match self {
            Literal::Str(text)
                if parse_number(text).is_none() && !matches!(text.as_str(), "true" | "false") =>
            {
                Some(text)
            }
            _ => None,
        }
    }
}

impl Comparison {
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Gte => ordering != Ordering::Less,
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Lte => ordering != Ordering::Greater,
        }
    }
}

impl Bound {
    /// How `value` compares with this bound; `None` when it is not a number or date.
    fn compare(&self, value: &Value) -> Option<Ordering> {
        match self {
            Bound::Number(bound) => number_of(value)?.partial_cmp(bound),
            Bound::Date(bound) => {
                let date = match parse_moment(text_of(value)?)? {
                    Moment::Date(date) => date,
                    Moment::Instant(instant) => instant.to_zoned(jiff::tz::TimeZone::UTC).date(),
                };
                Some(date.cmp(bound))
            }
            Bound::Instant(bound) => {
                let instant = match parse_moment(text_of(value)?)? {
                    Moment::Instant(instant) => instant,
                    Moment::Date(date) => {
                        utc_instant(date.to_datetime(jiff::civil::Time::midnight()))?
                    }
                };
                Some(instant.cmp(bound))
            }
        }
    }
}

/// A string value's text, or the `#text` of an element with attributes.
pub fn text_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(text),
        Value::Object(map) => map.get("#text").and_then(Value::as_str),
        _ => None,
    }
}

/// Runs `test` on the value's text; numbers and booleans are tested as they are written in JSON.
fn with_text(value: &Value, test: impl Fn(&str) -> bool) -> bool {
    match value {
        Value::Number(number) => test(&number.to_string()),
        Value::Bool(flag) => test(if *flag { "true" } else { "false" }),
        _ => text_of(value).is_some_and(test),
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        _ => parse_number(text_of(value)?),
    }
}

/// A decimal number as HQ writes answers: `4`, `-0.5`, `1e3`, spaces around allowed; never
/// `inf`, `NaN` or hexadecimal.
pub fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let digits_ok = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            !(whole.is_empty() && fraction.is_empty()) && digits_ok(whole) && digits_ok(fraction)
        }
        None => !mantissa.is_empty() && digits_ok(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|exponent| {
        let digits = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
        !digits.is_empty() && digits_ok(digits)
    });
    if mantissa_ok && exponent_ok {
        text.parse().ok()
    } else {
        None
    }
}

enum Moment {
    Date(jiff::civil::Date),
    Instant(jiff::Timestamp),
}

/// An ISO 8601 date (`2024-05-02`), date-time (`2024-05-02T06:14:09.48`, read as UTC) or
/// date-time with offset (`...Z`, `...+03:00`).
fn parse_moment(text: &str) -> Option<Moment> {
    if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        return Some(Moment::Instant(instant));
    }
    if text.len() == 10 {
        return text.parse::<jiff::civil::Date>().ok().map(Moment::Date);
    }
    let datetime = text.parse::<jiff::civil::DateTime>().ok()?;
    utc_instant(datetime).map(Moment::Instant)
}

fn utc_instant(datetime: jiff::civil::DateTime) -> Option<jiff::Timestamp> {
    datetime
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Reads a `when:` value: `always`, or a map of paths and combinators.
pub fn read_condition(node: &Node, errors: &mut Errors) -> Option<Condition> {
    match &node.value {
        yaml::Value::Scalar(scalar) if scalar.resolve() == Resolved::Str("always") => {
            Some(Condition::Always)
        }
        yaml::Value::Map(entries) => {
            if entries.is_empty() {
                errors.push(
                    node.error(
                        "expected at least one condition; write `always` to match everything",
                    ),
                );
                return None;
            }
            let mut children = Vec::new();
            let mut complete = true;
            for entry in entries {
                let child = match entry.key.as_str() {
                    "all" => read_list(&entry.value, errors).map(Condition::All),
                    "any" => read_list(&entry.value, errors).map(Condition::Any),
                    "not" => read_condition(&entry.value, errors)
                        .map(|child| Condition::Not(Box::new(child))),
                    key => match Path::parse(key) {
                        Ok(path) => read_field(path, &entry.value, errors).map(Condition::Field),
                        Err(message) => {
                            errors.push(yaml::Error {
                                span: entry.key_span,
                                path: join_key(&node.path, key),
                                message,
                            });
                            None
                        }
                    },
                };
                match child {
                    Some(child) => children.push(child),
                    None => complete = false,
                }
            }
            if !complete {
                return None;
            }
            if children.len() == 1 {
                children.pop()
            } else {
                Some(Condition::All(children))
            }
        }
        yaml::Value::List(_) => {
            errors.push(node.error(
                "expected a map of conditions or `always`, found a list \
                 (combine conditions with `all: [...]` or `any: [...]`)",
            ));
            None
        }
        yaml::Value::Scalar(_) => node.mismatch("a map of conditions or `always`", errors),
    }
}

fn read_list(node: &Node, errors: &mut Errors) -> Option<Vec<Condition>> {
    let items = node.as_list(errors)?;
    if items.is_empty() {
        errors.push(node.error("expected at least one condition"));
        return None;
    }
    let children: Vec<Option<Condition>> = items
        .iter()
        .map(|item| read_condition(item, errors))
        .collect();
    children.into_iter().collect()
}

/// Reads what follows a path: a value (equality) or a map of operators.
fn read_field(path: Path, node: &Node, errors: &mut Errors) -> Option<FieldTest> {
    let mut test = FieldTest {
        path,
        same_value: Vec::new(),
        none_of: Vec::new(),
        exists: None,
    };
    match &node.value {
        yaml::Value::Scalar(_) => {
            test.same_value.push(Op::Eq(read_literal(node, errors)?));
            Some(test)
        }
        yaml::Value::List(_) => {
            errors.push(node.error(
                "expected a value or a map of operators, found a list \
                 (use `in: [...]` to match any of several values)",
            ));
            None
        }
        yaml::Value::Map(entries) => {
            if entries.is_empty() {
                errors.push(node.error(format!(
                    "expected at least one operator, one of: {}",
                    OPERATORS.join(", ")
                )));
                return None;
            }
            let mut complete = true;
            for entry in entries {
                let value = &entry.value;
                let read = match entry.key.as_str() {
                    "eq" => read_literal(value, errors)
                        .map(|literal| test.same_value.push(Op::Eq(literal))),
                    "ne" => read_literal(value, errors)
                        .map(|literal| test.none_of.push(Op::Eq(literal))),
                    "in" => read_literals(value, errors)
                        .map(|literals| test.same_value.push(Op::In(literals))),
                    "not_in" => read_literals(value, errors)
                        .map(|literals| test.none_of.push(Op::In(literals))),
                    "exists" => value
                        .as_bool(errors)
                        .map(|wanted| test.exists = Some(wanted)),
                    "starts_with" => read_text(value, errors)
                        .map(|text| test.same_value.push(Op::StartsWith(text))),
                    "ends_with" => read_text(value, errors)
                        .map(|text| test.same_value.push(Op::EndsWith(text))),
                    "contains" => read_text(value, errors)
                        .map(|text| test.same_value.push(Op::Contains(text))),
                    "matches" => read_regex(value, errors)
                        .map(|regex| test.same_value.push(Op::Matches(regex))),
                    "gt" => read_bound(value, errors)
                        .map(|bound| test.same_value.push(Op::Compare(Comparison::Gt, bound))),
                    "gte" => read_bound(value, errors)
                        .map(|bound| test.same_value.push(Op::Compare(Comparison::Gte, bound))),
                    "lt" => read_bound(value, errors)
                        .map(|bound| test.same_value.push(Op::Compare(Comparison::Lt, bound))),
                    "lte" => read_bound(value, errors)
                        .map(|bound| test.same_value.push(Op::Compare(Comparison::Lte, bound))),
                    other => {
                        errors.push(yaml::Error {
                            span: entry.key_span,
                            path: join_key(&node.path, other),
                            message: unknown_name_message("operator", other, &OPERATORS),
                        });
                        None
                    }
                };
                complete &= read.is_some();
            }
            complete.then_some(test)
        }
    }
}

fn read_literal(node: &Node, errors: &mut Errors) -> Option<Literal> {
    let yaml::Value::Scalar(scalar) = &node.value else {
        return node.mismatch("a string, number or boolean", errors);
    };
    match scalar.resolve() {
        Resolved::Str(text) => Some(Literal::Str(text.to_owned())),
        Resolved::Int(number) => Some(Literal::Number(number as f64)),
        Resolved::Float(number) => Some(Literal::Number(number)),
        Resolved::Bool(flag) => Some(Literal::Bool(flag)),
        Resolved::IntOutOfRange => {
            // Reports "integer ... is out of range".
            node.as_i64(errors);
            None
        }
        Resolved::Null => {
            errors.push(node.error(
                "expected a string, number or boolean, found null \
                 (use `exists: false` for a missing or null field)",
            ));
            None
        }
    }
}

fn read_literals(node: &Node, errors: &mut Errors) -> Option<Vec<Literal>> {
    let items = node.as_list(errors)?;
    if items.is_empty() {
        errors.push(node.error("expected at least one value"));
        return None;
    }
    let literals: Vec<Option<Literal>> = items
        .iter()
        .map(|item| read_literal(item, errors))
        .collect();
    literals.into_iter().collect()
}

/// Text for the string operators; a number is taken as written (`starts_with: 07`).
fn read_text(node: &Node, errors: &mut Errors) -> Option<String> {
    if node.is_null() {
        return node.mismatch("a string", errors);
    }
    node.as_text(errors).map(str::to_owned)
}

fn read_regex(node: &Node, errors: &mut Errors) -> Option<Regex> {
    node.parse_str(errors, |pattern| {
        Regex::new(pattern)
            .map_err(|err| format!("invalid regex `{pattern}`: {}", regex_reason(&err)))
    })
}

/// The one line of a regex error that says what is wrong (its display draws a caret diagram).
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .find_map(|line| line.strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn read_bound(node: &Node, errors: &mut Errors) -> Option<Bound> {
    const EXPECTED: &str = "a number or an ISO 8601 date or date-time";
    let yaml::Value::Scalar(scalar) = &node.value else {
        return node.mismatch(EXPECTED, errors);
    };
    match scalar.resolve() {
        Resolved::Int(number) => Some(Bound::Number(number as f64)),
        Resolved::Float(number) if number.is_finite() => Some(Bound::Number(number)),
        Resolved::Str(text) => {
            if let Some(number) = parse_number(text) {
                return Some(Bound::Number(number));
            }
            match parse_moment(text) {
                Some(Moment::Date(date)) => Some(Bound::Date(date)),
                Some(Moment::Instant(instant)) => Some(Bound::Instant(instant)),
                None => {
                    errors.push(node.error(format!("expected {EXPECTED}, found `{text}`")));
                    None
                }
            }
        }
        _ => node.mismatch(EXPECTED, errors),
    }
}
