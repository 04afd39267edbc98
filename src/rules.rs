//! Rules: which sinks each envelope goes to, and in what shape. Pure: no IO, no axum.
//!
//! A rules file (docs/rules.md) is parsed once into a [`RuleSet`], reporting every problem at
//! once with its line and column, and is then only read: a request is routed by one
//! consistent set. Every rule that matches fires, in file order, until one with `stop: true`
//! matches; an envelope that no rule matches goes to the `unmatched` sinks, or, when there are
//! none, is kept in the spool with no route and counted, never silently gone.
//!
//! Parts, each with one reason to change:
//!
//! - `path`: dotted paths, split once and walked without allocating (any-element semantics).
//! - `condition`: `when:` read into a tree and evaluated; the one place operators are defined.
//! - `index`: the equality index that keeps 10,000 rules about as cheap as 10.
//! - `shape`: `send:`, the serialised [`Shape`] each route carries into the spool.
//! - `read`: the file's sections read and cross-checked (sink names, rule names).
//! - `testing`: the file's own `tests:` and their runner; `explain`: one envelope's routing.

mod condition;
mod explain;
mod index;
mod path;
mod read;
mod shape;
mod subscription;
mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::retry::RetryPolicy;
use crate::sinks::SinkConfig;
use crate::spool::Route;
use crate::yaml;
use condition::Condition;
use index::Index;

pub use condition::OPERATORS;
pub use explain::{Explanation, RouteExplanation, explain, explain_with_body};
pub use path::Path;
pub use shape::{DEFAULT_RAW_CONTENT_TYPE, JSON_CONTENT_TYPE, Payload, Projection, Shape};
pub use subscription::Subscription;
pub use testing::{
    TEST_ENVELOPE_ID, TEST_RECEIVED_AT, TEST_SOURCE, TestCase, TestPayload, TestReport, TestResult,
    content_type_for, run_tests, test_envelope,
};

/// The name of the rule that sends unmatched envelopes to the `unmatched` sinks.
pub const UNMATCHED_RULE: &str = "unmatched";

/// The only rules file version this build reads.
pub const VERSION: u64 = 1;

/// The embedded default rules: everything to the `archive` file sink.
pub const DEFAULT_RULES_YAML: &str = include_str!("../config/default-rules.yaml");

/// The default file sink's path, relative to the data dir.
pub const DEFAULT_ARCHIVE_PATH: &str = "out/{{ kind }}/{{ received_at | date }}.jsonl";
/// A file sink's `max_file_bytes` when the file does not say: 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// A sink's `max_backlog` when the file does not say. With 2 KB forms that is a few GB of
/// spool: far more than a short outage needs, well before the disk fills.
pub const DEFAULT_MAX_BACKLOG: u64 = 1_000_000;

/// How many hex digits of the file's SHA-256 make its version.
const VERSION_HEX_DIGITS: usize = 12;

/// A compiled rules file.
#[derive(Clone, Debug)]
pub struct RuleSet {
    /// The sinks the file defines, by name; the app builds one sink from each.
    pub sinks: BTreeMap<String, SinkSpec>,
    /// Shared, not copied, by the sets `with_subscriptions` derives: only sinks change there.
    rules: Arc<[Rule]>,
    unmatched: Vec<String>,
    index: Arc<Index>,
    tests: Vec<TestCase>,
    origin: String,
    version: String,
    /// Routes from outside the file (`subscription.rs`); their sinks are in `sinks` too.
    subscriptions: Vec<Subscription>,
}

/// A sink as the rules file defines it: where it sends, and how dispatch treats its failures
/// and its backlog.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    pub config: SinkConfig,
    pub retry: RetryPolicy,
    /// Records routed to the sink and not yet settled, past which ingress answers 503 to
    /// what would be routed to it.
    pub max_backlog: u64,
}

impl SinkSpec {
    /// A sink with the default `retry` and `max_backlog`.
    pub fn with_defaults(config: SinkConfig) -> SinkSpec {
        SinkSpec {
            config,
            retry: RetryPolicy::default(),
            max_backlog: DEFAULT_MAX_BACKLOG,
        }
    }
}

#[derive(Debug)]
struct Rule {
    name: String,
    condition: Condition,
    /// Sink names, each defined and listed once.
    to: Vec<String>,
    stop: bool,
    shape: Shape,
}

/// Why a rules file was refused. Displays one problem per line as
/// `ORIGIN:LINE:COL: PATH: MESSAGE`, in text order.
#[derive(Debug, thiserror::Error)]
#[error("{}", yaml::render_errors(origin, errors))]
pub struct RulesErrors {
    pub origin: String,
    /// In text order.
    pub errors: Vec<yaml::Error>,
}

impl RuleSet {
    /// Parses and compiles a rules file. `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// Every problem in the file, each with its line:column, path and what was expected.
    pub fn parse(text: &str, origin: &str) -> Result<RuleSet, RulesErrors> {
        RuleSet::parse_with_vars(text, origin, &|_| None)
    }

    /// Parses a rules file whose values may name `${VAR}`s (secrets of sinks: passwords,
    /// tokens, signing keys), substituted from `vars` as in the config file, so they can live
    /// in a Kubernetes Secret rather than in the rules' ConfigMap.
    ///
    /// # Errors
    ///
    /// Every problem in the file, unset variables included.
    pub fn parse_with_vars(
        text: &str,
        origin: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RuleSet, RulesErrors> {
        let invalid = |errors: yaml::Errors| RulesErrors {
            origin: origin.to_owned(),
            errors: errors.into_sorted_vec(),
        };
        let mut root = yaml::parse(text).map_err(invalid)?;
        let mut errors = yaml::Errors::default();
        crate::config::interpolate(&mut root, vars, &mut errors);
        let draft = read::read_rules_file(&root, &mut errors);
        let draft = match draft {
            Some(draft) if errors.is_empty() => draft,
            _ => return Err(invalid(errors)),
        };
        let index = Index::build(draft.rules.iter().map(|rule| &rule.condition));
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        Ok(RuleSet {
            sinks: draft.sinks,
            rules: draft.rules.into(),
            unmatched: draft.unmatched,
            index: Arc::new(index),
            tests: draft.tests,
            origin: origin.to_owned(),
            version: digest[..VERSION_HEX_DIGITS].to_owned(),
            subscriptions: Vec::new(),
        })
    }

    /// This file's rules plus `subscriptions`, replacing any it had. The version becomes the
    /// file's version followed by `+` and a digest of the subscriptions, so a change to either
    /// is a new version; without subscriptions it is the file's version alone.
    ///
    /// # Errors
    ///
    /// When a subscription's sink name is already a sink of the rules file (or of another
    /// subscription); the names in the message say which.
    pub fn with_subscriptions(
        mut self,
        subscriptions: Vec<Subscription>,
    ) -> Result<RuleSet, String> {
        for old in std::mem::take(&mut self.subscriptions) {
            self.sinks.remove(&old.sink);
        }
        let file_version = self
            .version
            .split('+')
            .next()
            .unwrap_or_default()
            .to_owned();
        for subscription in &subscriptions {
            if self.sinks.contains_key(&subscription.sink) {
                return Err(format!(
                    "sink `{}` of a subscription is already defined in {}; rename that sink",
                    subscription.sink, self.origin
                ));
            }
            // Retry and backlog limits are the defaults: the API has no field for them.
            let spec = SinkSpec::with_defaults(subscription.config.clone());
            self.sinks.insert(subscription.sink.clone(), spec);
        }
        self.version = if subscriptions.is_empty() {
            file_version
        } else {
            let digest = subscription::digest(&subscriptions);
            format!("{file_version}+{}", &digest[..VERSION_HEX_DIGITS])
        };
        self.subscriptions = subscriptions;
        Ok(self)
    }

    /// The embedded default (config/default-rules.yaml): every envelope to one file sink,
    /// `archive`, at `out/{{ kind }}/{{ received_at | date }}.jsonl` under the data dir.
    ///
    /// # Panics
    ///
    /// Never: a test parses the embedded file.
    pub fn embedded_default() -> RuleSet {
        RuleSet::parse(DEFAULT_RULES_YAML, "<embedded default rules>")
            .expect("the embedded default rules are valid")
    }

    /// The embedded default; kept for callers written before it was a file.
    pub fn default_archive() -> RuleSet {
        RuleSet::embedded_default()
    }

    /// The sinks `envelope` goes to, each once, with the first rule that chose it and that
    /// rule's shape. Empty when nothing matched and there are no `unmatched` sinks.
    pub fn route(&self, envelope: &Value) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        let mut add = |sink: &str, rule: &str, shape: &Shape| {
            if !routes.iter().any(|route| route.sink == sink) {
                routes.push(Route {
                    sink: sink.to_owned(),
                    rule: rule.to_owned(),
                    shape: shape.clone(),
                });
            }
        };
        let mut matched = false;
        self.for_each_match(envelope, &mut |rule| {
            matched = true;
            for sink in &rule.to {
                add(sink, &rule.name, &rule.shape);
            }
        });
        if !matched {
            for sink in &self.unmatched {
                add(sink, UNMATCHED_RULE, &Shape::Envelope);
            }
        }
        for subscription in &self.subscriptions {
            if subscription.matches(envelope) {
                add(&subscription.sink, &subscription.sink, &Shape::Raw);
            }
        }
        routes
    }

    /// The names of the rules that match `envelope`, in file order, up to the first matching
    /// rule with `stop: true`.
    pub fn matched_rules(&self, envelope: &Value) -> Vec<&str> {
        let mut names = Vec::new();
        self.for_each_match(envelope, &mut |rule| names.push(rule.name.as_str()));
        names
    }

    /// Calls `visit` on each matching rule in file order, through the index.
    fn for_each_match<'a>(&'a self, envelope: &Value, visit: &mut dyn FnMut(&'a Rule)) {
        self.index.for_each_candidate(envelope, &mut |position| {
            let rule = &self.rules[position as usize];
            if !rule.condition.matches(envelope) {
                return true;
            }
            visit(rule);
            !rule.stop
        });
    }

    /// As [`RuleSet::matched_rules`], evaluating every rule without the index: the reference
    /// the index is tested against.
    #[doc(hidden)]
    pub fn matched_rules_without_index(&self, envelope: &Value) -> Vec<&str> {
        let mut names = Vec::new();
        for rule in self.rules.iter() {
            if rule.condition.matches(envelope) {
                names.push(rule.name.as_str());
                if rule.stop {
                    break;
                }
            }
        }
        names
    }

    /// A short hex digest of the file text: equal versions mean the same rules.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The name the file was parsed under.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Rule names in file order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.name.as_str())
    }

    /// Sink names in name order.
    pub fn sink_names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    /// The sinks envelopes that match no rule go to; empty means they stay unrouted.
    pub fn unmatched_sinks(&self) -> &[String] {
        &self.unmatched
    }

    /// The file's own `tests:`.
    pub fn tests(&self) -> &[TestCase] {
        &self.tests
    }

    /// The paths the index looks up (for benchmarks and `explain` output).
    pub fn indexed_paths(&self) -> impl Iterator<Item = &str> {
        self.index.indexed_paths()
    }
}

impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (version {}): {} rules, sinks: {}",
            self.origin,
            self.version,
            self.rules.len(),
            self.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests;
