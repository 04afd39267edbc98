//! The rules file's tree read into rules and sinks, every problem collected.
//!
//! Sections are read in an order that lets later ones check names against earlier ones (sinks
//! before rules, rules before tests), whatever order the file writes them in. A section with a
//! problem still lets the others be read, so one run reports everything.

mod sinks;

use std::collections::BTreeMap;

use super::condition::{Condition, read_condition};
use super::shape::{Shape, read_shape};
use super::testing::{TestCase, read_tests};
use super::{DEFAULT_MAX_BACKLOG, DEFAULT_MAX_FILE_BYTES, Rule, SinkSpec, VERSION};
use crate::retry::RetryPolicy;
use crate::sinks::{FileSinkConfig, SinkConfig};
use crate::template::Template;
use crate::yaml::{self, Errors, Node, Span, join_key, unknown_name_message};

/// Sink types this build has.
const SINK_TYPES: [&str; 4] = ["file", "amqp", "kafka", "http"];

pub(super) struct Draft {
    pub sinks: BTreeMap<String, SinkSpec>,
    pub rules: Vec<Rule>,
    pub unmatched: Vec<String>,
    pub tests: Vec<TestCase>,
}

pub(super) fn read_rules_file(root: &Node, errors: &mut Errors) -> Option<Draft> {
    if root.is_null() {
        errors.push(
            root.error("the rules file is empty; it needs at least `version`, `sinks` and `rules`"),
        );
        return None;
    }
    let mut map = root.as_map(errors)?;
    if let Some(version_node) = map.required("version", errors) {
        if let Some(version) = version_node.as_u64(errors) {
            if version != VERSION {
                errors.push(version_node.error(format!(
                    "unsupported rules version {version}, this build reads version {VERSION}"
                )));
                map.abandon();
                return None;
            }
        }
    }
    let sinks_node = map.required("sinks", errors);
    let rules_node = map.required("rules", errors);
    let unmatched_node = map.optional("unmatched");
    let tests_node = map.optional("tests");
    map.finish(errors);

    // Names are known even when a sink's settings are wrong, so `to:` is checked regardless.
    let sink_names: Vec<&str> = sinks_node
        .and_then(|node| match &node.value {
            yaml::Value::Map(entries) => Some(entries.iter().map(|e| e.key.as_str()).collect()),
            _ => None,
        })
        .unwrap_or_default();
    let sinks = sinks_node.and_then(|node| read_sinks(node, errors));
    let rules = rules_node.and_then(|node| read_rules(node, &sink_names, errors));
    let unmatched = match unmatched_node {
        Some(node) => read_sink_refs(node, &sink_names, errors),
        None => Some(Vec::new()),
    };
    let rule_names: Vec<&str> = rules
        .as_ref()
        .map(|rules| rules.iter().map(|rule| rule.name.as_str()).collect())
        .unwrap_or_default();
    let tests = match tests_node {
        Some(node) => read_tests(node, &sink_names, &rule_names, errors),
        None => Some(Vec::new()),
    };
    Some(Draft {
        sinks: sinks?,
        rules: rules?,
        unmatched: unmatched?,
        tests: tests?,
    })
}

fn read_sinks(node: &Node, errors: &mut Errors) -> Option<BTreeMap<String, SinkSpec>> {
    let map = node.as_map(errors)?;
    if map.entries().is_empty() {
        errors.push(node.error("expected at least one sink"));
        return None;
    }
    let mut sinks = BTreeMap::new();
    let mut complete = true;
    for entry in map.entries() {
        let name_ok = crate::sinks::is_plain_name(&entry.key);
        if !name_ok {
            errors.push(yaml::Error {
                span: entry.key_span,
                path: join_key(&node.path, &entry.key),
                message: format!(
                    "sink name `{}` must use only letters, digits, `.`, `_` and `-`",
                    entry.key
                ),
            });
        }
        match read_sink(&entry.value, errors) {
            Some(sink) if name_ok => {
                sinks.insert(entry.key.clone(), sink);
            }
            _ => complete = false,
        }
    }
    map.abandon();
    complete.then_some(sinks)
}

fn read_sink(node: &Node, errors: &mut Errors) -> Option<SinkSpec> {
    let mut map = node.as_map(errors)?;
    let type_node = map.required("type", errors);
    let Some(type_name) = type_node.and_then(|node| node.as_str(errors)) else {
        map.abandon();
        return None;
    };
    // What every type has; read before the type's own fields, which end with `finish`.
    let retry = map
        .optional("retry")
        .map_or(Some(RetryPolicy::default()), |node| {
            read_retry(node, errors)
        });
    let max_backlog = map
        .optional("max_backlog")
        .map_or(Some(DEFAULT_MAX_BACKLOG), |node| {
            node.as_u64(errors).filter(|&records| {
                if records == 0 {
                    errors.push(node.error("expected a positive number of records, found 0"));
                }
                records > 0
            })
        });
    let config = match type_name {
        "file" => {
            let path = map
                .required("path", errors)
                .and_then(|node| read_template(node, errors));
            let max_file_bytes = match map.optional("max_file_bytes") {
                Some(node) => node.as_u64(errors).and_then(|bytes| {
                    if bytes == 0 {
                        errors.push(node.error("expected a positive number of bytes, found 0"));
                        None
                    } else {
                        Some(bytes)
                    }
                }),
                None => Some(DEFAULT_MAX_FILE_BYTES),
            };
            map.finish(errors);
            Some(SinkConfig::File(FileSinkConfig {
                path: path?,
                max_file_bytes: max_file_bytes?,
            }))
        }
        "amqp" => sinks::read_amqp(map, errors).map(SinkConfig::Amqp),
        "kafka" => sinks::read_kafka(map, errors).map(SinkConfig::Kafka),
        "http" => sinks::read_http(map, errors).map(SinkConfig::Http),
        other => {
            let type_node = type_node.expect("read above");
            let message = unknown_name_message("sink type", other, &SINK_TYPES);
            errors.push(type_node.error(message));
            // The fields of an unknown type cannot be judged; one error is enough.
            map.abandon();
            None
        }
    };
    Some(SinkSpec {
        config: config?,
        retry: retry?,
        max_backlog: max_backlog?,
    })
}

/// `retry: { initial_delay, max_delay, max_attempts, max_age }`, each optional.
fn read_retry(node: &Node, errors: &mut Errors) -> Option<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let mut map = node.as_map(errors)?;
    let mut duration = |name, default| {
        map.optional(name)
            .map_or(Some(default), |node| node.as_duration(errors))
    };
    let initial_delay = duration("initial_delay", defaults.initial_delay);
    let max_delay = duration("max_delay", defaults.max_delay);
    // `max_age: none` and `max_attempts: none` lift the limit.
    let max_age = match map.optional("max_age") {
        None => Some(defaults.max_age),
        Some(node) if is_none_word(node) => Some(None),
        Some(node) => node.as_duration(errors).map(Some),
    };
    let max_attempts = match map.optional("max_attempts") {
        None => Some(defaults.max_attempts),
        Some(node) if is_none_word(node) => Some(None),
        Some(node) => node
            .as_u64(errors)
            .and_then(|count| match u32::try_from(count) {
                Ok(count) if count > 0 => Some(Some(count)),
                _ => {
                    errors.push(node.error(format!(
                        "expected between 1 and {} attempts, or `none`, found {count}",
                        u32::MAX
                    )));
                    None
                }
            }),
    };
    map.finish(errors);
    let policy = RetryPolicy {
        initial_delay: initial_delay?,
        max_delay: max_delay?,
        max_attempts: max_attempts?,
        max_age: max_age?,
    };
    if policy.initial_delay > policy.max_delay {
        errors.push(node.error(format!(
            "initial_delay ({:?}) is longer than max_delay ({:?})",
            policy.initial_delay, policy.max_delay
        )));
        return None;
    }
    Some(policy)
}

fn is_none_word(node: &Node) -> bool {
    matches!(&node.value, yaml::Value::Scalar(scalar) if scalar.text == "none")
}

/// A template compiled now, so a bad one is a load error at its line.
pub(super) fn read_template(node: &Node, errors: &mut Errors) -> Option<Template> {
    node.parse_str(errors, |text| {
        Template::compile(text).map_err(|err| err.to_string())
    })
}

fn read_rules(node: &Node, sink_names: &[&str], errors: &mut Errors) -> Option<Vec<Rule>> {
    let items = node.as_list(errors)?;
    let mut rules = Vec::with_capacity(items.len());
    let mut seen: Vec<(&str, Span)> = Vec::new();
    let mut complete = true;
    for item in items {
        match read_rule(item, sink_names, &mut seen, errors) {
            Some(rule) => rules.push(rule),
            None => complete = false,
        }
    }
    complete.then_some(rules)
}

fn read_rule<'a>(
    node: &'a Node,
    sink_names: &[&str],
    seen: &mut Vec<(&'a str, Span)>,
    errors: &mut Errors,
) -> Option<Rule> {
    let mut map = node.as_map(errors)?;
    let name = map.required("name", errors).and_then(|name_node| {
        let name = name_node.as_str(errors)?;
        if name.trim().is_empty() {
            errors.push(name_node.error("a rule name cannot be empty"));
            return None;
        }
        if let Some((_, first)) = seen.iter().find(|(known, _)| *known == name) {
            errors.push(name_node.error(format!(
                "duplicate rule name `{name}` (first at {first}); rule names must be unique"
            )));
            return None;
        }
        seen.push((name, name_node.span));
        Some(name.to_owned())
    });
    let condition = match map.optional("when") {
        Some(when) => read_condition(when, errors),
        None => Some(Condition::Always),
    };
    let to = map.required("to", errors).and_then(|to_node| {
        let to = read_sink_refs(to_node, sink_names, errors)?;
        if to.is_empty() {
            errors.push(to_node.error("expected at least one sink"));
            return None;
        }
        Some(to)
    });
    let stop = match map.optional("stop") {
        Some(node) => node.as_bool(errors),
        None => Some(false),
    };
    let shape = match map.optional("send") {
        Some(node) => read_shape(node, errors),
        None => Some(Shape::Envelope),
    };
    map.finish(errors);
    Some(Rule {
        name: name?,
        condition: condition?,
        to: to?,
        stop: stop?,
        shape: shape?,
    })
}

/// One sink name or a list of them, each defined under `sinks`.
pub(super) fn read_sink_refs(
    node: &Node,
    sink_names: &[&str],
    errors: &mut Errors,
) -> Option<Vec<String>> {
    let items: Vec<&Node> = match &node.value {
        yaml::Value::List(items) => items.iter().collect(),
        yaml::Value::Scalar(_) => vec![node],
        yaml::Value::Map(_) => return node.mismatch("a sink name or a list of sink names", errors),
    };
    let mut names = Vec::new();
    let mut complete = true;
    for item in items {
        let Some(name) = item.as_str(errors) else {
            complete = false;
            continue;
        };
        if sink_names.contains(&name) {
            if !names.iter().any(|known| known == name) {
                names.push(name.to_owned());
            }
        } else {
            let mut message = unknown_name_message("sink", name, sink_names);
            if sink_names.is_empty() {
                message = format!("unknown sink `{name}`: no sinks are defined under `sinks`");
            } else {
                message.push_str(" (the sinks defined under `sinks`)");
            }
            errors.push(item.error(message));
            complete = false;
        }
    }
    complete.then_some(names)
}
