//! A rules file's own `tests:`: payloads with the sinks they must and must not reach, run by
//! `ccrelay rules test` (docs/rules.md, "Tests in the rules file").
//!
//! The runner is pure: files are read through the function the caller passes, each payload is
//! decoded by `crate::decode` as ingress would, completed with a fixed [`Arrival`], routed, and
//! compared. Nothing here knows how results are printed beyond `Display`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::RuleSet;
use crate::decode::{self, Arrival, Input};
use crate::yaml::{self, Errors, Node, Span, unknown_name_message};

/// The `received_at` every test envelope gets, so templates render the same on every run.
pub const TEST_RECEIVED_AT: &str = "2024-01-01T00:00:00.000000Z";
/// The `id` every test envelope gets.
pub const TEST_ENVELOPE_ID: &str = "00000000-0000-7000-8000-000000000000";
/// The `source` of a test that names none.
pub const TEST_SOURCE: &str = "test";

/// One test case as written in the rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct TestCase {
    pub name: String,
    /// Where the case is written, for reports.
    pub span: Span,
    pub payload: TestPayload,
    /// As sent by HQ; for a file without one, guessed from its extension.
    pub content_type: Option<String>,
    /// Request headers (`received-on`, `server-modified-on`), by lowercase name.
    pub headers: Map<String, Value>,
    pub source: String,
    pub query: Map<String, Value>,
    /// Sinks the payload must reach.
    pub reach: Vec<String>,
    /// Sinks the payload must not reach.
    pub not_reach: Vec<String>,
    /// When given, exactly the rules that must match, in order.
    pub matched_rules: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestPayload {
    /// A file, relative to the rules file's folder.
    File(PathBuf),
    /// The body written inline.
    Inline(String),
}

/// The outcome of every test of a rules file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub name: String,
    pub span: Span,
    /// Why the test failed; empty when it passed.
    pub failures: Vec<String>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl TestReport {
    /// Whether every test passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(TestResult::passed)
    }

    pub fn failed_count(&self) -> usize {
        self.results
            .iter()
            .filter(|result| !result.passed())
            .count()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for result in &self.results {
            if result.passed() {
                writeln!(f, "ok   {} ({})", result.name, result.span)?;
            } else {
                writeln!(f, "FAIL {} ({})", result.name, result.span)?;
                for failure in &result.failures {
                    writeln!(f, "     {failure}")?;
                }
            }
        }
        let failed = self.failed_count();
        write!(f, "{} passed, {failed} failed", self.results.len() - failed)
    }
}

/// Runs every test in `rules`. Payload files are read with `read_file`, relative to `base_dir`
/// (the rules file's folder).
pub fn run_tests(
    rules: &RuleSet,
    read_file: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    base_dir: &Path,
) -> TestReport {
    let results = rules
        .tests
        .iter()
        .map(|case| TestResult {
            name: case.name.clone(),
            span: case.span,
            failures: run_test(rules, case, read_file, base_dir),
        })
        .collect();
    TestReport { results }
}

fn run_test(
    rules: &RuleSet,
    case: &TestCase,
    read_file: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    base_dir: &Path,
) -> Vec<String> {
    let body = match &case.payload {
        TestPayload::Inline(text) => text.as_bytes().to_vec(),
        TestPayload::File(path) => match read_file(&base_dir.join(path)) {
            Ok(bytes) => bytes,
            Err(err) => return vec![format!("cannot read {}: {err}", path.display())],
        },
    };
    let envelope = match test_envelope(case, &body) {
        Ok(envelope) => envelope,
        Err(message) => return vec![message],
    };
    let routes = rules.route(&envelope);
    let reached: Vec<&str> = routes.iter().map(|route| route.sink.as_str()).collect();
    let mut failures = Vec::new();
    for sink in &case.reach {
        if !reached.contains(&sink.as_str()) {
            failures.push(format!(
                "expected to reach `{sink}`, but it reached {}",
                describe(&reached)
            ));
        }
    }
    for route in &routes {
        if case.not_reach.contains(&route.sink) {
            failures.push(format!(
                "expected not to reach `{}`, but rule `{}` sent it there",
                route.sink, route.rule
            ));
        }
    }
    if let Some(expected) = &case.matched_rules {
        let matched = rules.matched_rules(&envelope);
        if *expected != matched {
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            failures.push(format!(
                "expected rules {} to match, but {} matched",
                describe(&expected),
                describe(&matched)
            ));
        }
    }
    failures
}

fn describe(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The envelope ingress would build for the case's request, with the fixed test arrival.
///
/// # Errors
///
/// The decode error, when the payload is refused.
pub fn test_envelope(case: &TestCase, body: &[u8]) -> Result<Value, String> {
    let content_type = case.content_type.clone().or_else(|| match &case.payload {
        TestPayload::File(path) => content_type_for(path).map(str::to_owned),
        TestPayload::Inline(_) => None,
    });
    let header = |name: &str| case.headers.get(name).and_then(Value::as_str);
    let input = Input {
        body,
        content_type: content_type.as_deref(),
        received_on: header("received-on"),
        server_modified_on: header("server-modified-on"),
        ..Input::default()
    };
    let decoded = decode::decode(&input).map_err(|err| format!("the payload is refused: {err}"))?;
    let arrival = Arrival {
        id: TEST_ENVELOPE_ID.to_owned(),
        received_at: TEST_RECEIVED_AT.to_owned(),
        source: case.source.clone(),
        source_domain: None,
        method: "POST".to_owned(),
        content_type,
        query: case.query.clone(),
        headers: case.headers.clone(),
        body_bytes: body.len() as u64,
        traceparent: None,
    };
    Ok(decoded.into_envelope(arrival).into_value())
}

/// The content type HQ would label a payload file with, from its extension.
pub fn content_type_for(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "xml" => Some("text/xml"),
        "json" => Some("application/json"),
        "txt" => Some("text/plain"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

pub(super) fn read_tests(
    node: &Node,
    sink_names: &[&str],
    rule_names: &[&str],
    errors: &mut Errors,
) -> Option<Vec<TestCase>> {
    let items = node.as_list(errors)?;
    let cases: Vec<Option<TestCase>> = items
        .iter()
        .map(|item| read_test(item, sink_names, rule_names, errors))
        .collect();
    cases.into_iter().collect()
}

fn read_test(
    node: &Node,
    sink_names: &[&str],
    rule_names: &[&str],
    errors: &mut Errors,
) -> Option<TestCase> {
    let mut map = node.as_map(errors)?;
    let name = map
        .required("name", errors)
        .and_then(|node| node.as_str(errors));
    let file = map.optional("payload");
    let inline = map.optional("body");
    let payload = match (file, inline) {
        (Some(file), None) => file
            .as_str(errors)
            .map(|path| TestPayload::File(PathBuf::from(path))),
        (None, Some(body)) => body
            .as_text(errors)
            .map(|text| TestPayload::Inline(text.to_owned())),
        (Some(_), Some(body)) => {
            errors.push(body.error("give either `payload` (a file) or `body` (inline), not both"));
            None
        }
        (None, None) => {
            errors.push(node.error("missing field `payload` (a file) or `body` (inline)"));
            None
        }
    };
    let content_type = match map.optional("content_type") {
        Some(node) => node.as_str(errors).map(|text| Some(text.to_owned())),
        None => Some(None),
    };
    let headers = match map.optional("headers") {
        Some(node) => read_string_map(node, true, errors),
        None => Some(Map::new()),
    };
    let source = match map.optional("source") {
        Some(node) => node.as_str(errors).map(str::to_owned),
        None => Some(TEST_SOURCE.to_owned()),
    };
    let query = match map.optional("query") {
        Some(node) => read_string_map(node, false, errors),
        None => Some(Map::new()),
    };
    let reach_node = map.optional("reach");
    let not_reach_node = map.optional("not_reach");
    let reach = read_names(reach_node, "sink", sink_names, errors);
    let not_reach = read_names(not_reach_node, "sink", sink_names, errors);
    let matched_rules = match map.optional("matched_rules") {
        Some(node) => read_names(Some(node), "rule", rule_names, errors).map(Some),
        None => Some(None),
    };
    let nothing_asserted =
        reach_node.is_none() && not_reach_node.is_none() && matches!(matched_rules, Some(None));
    map.finish(errors);
    if nothing_asserted {
        errors.push(node.error("a test needs `reach`, `not_reach` or `matched_rules`"));
        return None;
    }
    Some(TestCase {
        name: name?.to_owned(),
        span: node.span,
        payload: payload?,
        content_type: content_type?,
        headers: headers?,
        source: source?,
        query: query?,
        reach: reach?,
        not_reach: not_reach?,
        matched_rules: matched_rules?,
    })
}

/// A list of names (one name alone is a list of one), each among `valid`.
fn read_names(
    node: Option<&Node>,
    what: &str,
    valid: &[&str],
    errors: &mut Errors,
) -> Option<Vec<String>> {
    let Some(node) = node else {
        return Some(Vec::new());
    };
    let items: Vec<&Node> = match &node.value {
        yaml::Value::List(items) => items.iter().collect(),
        _ => vec![node],
    };
    let mut names = Vec::new();
    let mut complete = true;
    for item in items {
        match item.as_str(errors) {
            Some(name) if valid.contains(&name) => names.push(name.to_owned()),
            Some(name) => {
                errors.push(item.error(unknown_name_message(what, name, valid)));
                complete = false;
            }
            None => complete = false,
        }
    }
    complete.then_some(names)
}

/// A map of names to scalar values kept as text; header names are lowercased as HTTP does.
fn read_string_map(
    node: &Node,
    lowercase_keys: bool,
    errors: &mut Errors,
) -> Option<Map<String, Value>> {
    let map = node.as_map(errors)?;
    let mut values = Map::new();
    let mut complete = true;
    for entry in map.entries() {
        let key = if lowercase_keys {
            entry.key.to_ascii_lowercase()
        } else {
            entry.key.clone()
        };
        match entry.value.as_text(errors) {
            Some(text) => {
                values.insert(key, Value::String(text.to_owned()));
            }
            None => complete = false,
        }
    }
    map.abandon();
    complete.then_some(values)
}
