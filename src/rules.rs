//! Rules: which sinks each envelope goes to. Pure: no IO, no axum.
//!
//! A rule set is compiled once and then only read; a request is routed by one consistent
//! set. An envelope that no rule matches goes to the `unmatched` sinks, or, when there are
//! none, is kept in the spool with no route and counted, never silently gone.

use std::collections::BTreeMap;

use crate::sinks::{FileSinkConfig, SinkConfig};
use crate::spool::Route;
use crate::template::Template;

/// The name of the rule that sends unmatched envelopes to the `unmatched` sinks.
pub const UNMATCHED_RULE: &str = "unmatched";

/// The default file sink's path, relative to the data dir.
pub const DEFAULT_ARCHIVE_PATH: &str = "out/{{ kind }}/{{ received_at | date }}.jsonl";
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// A compiled rules file.
#[derive(Debug)]
pub struct RuleSet {
    pub sinks: BTreeMap<String, SinkConfig>,
    rules: Vec<Rule>,
    unmatched: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    name: String,
    to: Vec<String>,
    stop: bool,
}

impl RuleSet {
    /// The embedded default: every envelope to one file sink, `archive`, under the data dir.
    pub fn default_archive() -> RuleSet {
        let path =
            Template::compile(DEFAULT_ARCHIVE_PATH).expect("the default path template is valid");
        let archive = SinkConfig::File(FileSinkConfig {
            path,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        });
        RuleSet {
            sinks: BTreeMap::from([("archive".to_string(), archive)]),
            rules: vec![Rule {
                name: "everything".into(),
                to: vec!["archive".into()],
                stop: false,
            }],
            unmatched: Vec::new(),
        }
    }

    /// The sinks `envelope` goes to, each once, with the first rule that chose it. Empty when
    /// nothing matched and there are no `unmatched` sinks.
    pub fn route(&self, _envelope: &serde_json::Value) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        let mut add = |sink: &str, rule: &str| {
            if !routes.iter().any(|route| route.sink == sink) {
                routes.push(Route {
                    sink: sink.to_string(),
                    rule: rule.to_string(),
                });
            }
        };
        let mut matched = false;
        for rule in &self.rules {
            matched = true;
            for sink in &rule.to {
                add(sink, &rule.name);
            }
            if rule.stop {
                break;
            }
        }
        if !matched {
            for sink in &self.unmatched {
                add(sink, UNMATCHED_RULE);
            }
        }
        routes
    }
}
