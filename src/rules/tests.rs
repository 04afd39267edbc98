//! The index must give exactly the answers of evaluating every rule: checked over generated
//! rule files and envelopes that share a small vocabulary, so that hits, misses, numbers
//! written as text, arrays, objects-as-arrays, negations and stops all occur often.

use serde_json::{Value, json};

use super::RuleSet;

const PATHS: [&str; 5] = [
    "kind",
    "form.xmlns",
    "cases.case_type",
    "cases.properties.risk",
    "form.data.size",
];
const WORDS: [&str; 6] = ["form", "case", "a", "b", "4", "true"];

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

/// A YAML literal: a word, a quoted word, or a number.
fn literal(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..3) {
        0 => pick(rng, &WORDS).to_owned(),
        1 => format!("\"{}\"", pick(rng, &WORDS)),
        _ => rng.u8(3..6).to_string(),
    }
}

fn condition(rng: &mut fastrand::Rng, depth: u8) -> String {
    let path = pick(rng, &PATHS);
    match rng.u8(..if depth > 1 { 4 } else { 7 }) {
        0 => format!("{{{path}: {}}}", literal(rng)),
        1 => format!("{{{path}: {{in: [{}, {}]}}}}", literal(rng), literal(rng)),
        2 => format!("{{{path}: {{ne: {}}}}}", literal(rng)),
        3 => {
            let other = PATHS
                .iter()
                .find(|other| **other != path)
                .expect("five paths");
            format!("{{{path}: {}, {other}: {}}}", literal(rng), literal(rng))
        }
        4 => format!("{{not: {}}}", condition(rng, depth + 1)),
        5 => format!(
            "{{any: [{}, {}]}}",
            condition(rng, depth + 1),
            condition(rng, depth + 1)
        ),
        _ => format!(
            "{{all: [{}, {}]}}",
            condition(rng, depth + 1),
            condition(rng, depth + 1)
        ),
    }
}

fn rules_file(rng: &mut fastrand::Rng, count: usize) -> String {
    let mut text = String::from("version: 1\nsinks: { s: { type: file, path: x } }\nrules:\n");
    for position in 0..count {
        let when = if rng.u8(..10) == 0 {
            "always".to_owned()
        } else {
            condition(rng, 0)
        };
        let stop = rng.u8(..8) == 0;
        text.push_str(&format!(
            "  - {{ name: r{position}, when: {when}, to: s, stop: {stop} }}\n"
        ));
    }
    text
}

fn scalar(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..4) {
        0 => json!(rng.u8(3..6)),
        1 => json!(true),
        2 => Value::Null,
        _ => json!(pick(rng, &WORDS)),
    }
}

fn envelope(rng: &mut fastrand::Rng) -> Value {
    let cases: Vec<Value> = (0..rng.usize(..3))
        .map(|_| json!({"case_type": scalar(rng), "properties": {"risk": scalar(rng)}}))
        .collect();
    let size = match rng.u8(..3) {
        0 => json!([scalar(rng), scalar(rng)]),
        1 => json!({"#text": scalar(rng)}),
        _ => scalar(rng),
    };
    json!({
        "kind": scalar(rng),
        "form": {"xmlns": scalar(rng), "data": {"size": size}},
        "cases": cases,
    })
}

#[test]
fn the_index_answers_as_evaluating_every_rule_does() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut indexed_rules = 0;
    for _ in 0..40 {
        let count = rng.usize(1..40);
        let text = rules_file(&mut rng, count);
        let rules = RuleSet::parse(&text, "generated.yaml")
            .unwrap_or_else(|errors| panic!("{errors}\n{text}"));
        indexed_rules += rules.index.indexed_paths().count();
        for _ in 0..100 {
            let envelope = envelope(&mut rng);
            assert_eq!(
                rules.matched_rules(&envelope),
                rules.matched_rules_without_index(&envelope),
                "envelope {envelope}\nrules:\n{text}"
            );
        }
    }
    assert!(indexed_rules > 40, "the generated rules exercise the index");
}
