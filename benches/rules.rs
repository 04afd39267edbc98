//! Routing cost: one envelope against 10 typical rules, and against 10,000 rules that each
//! test equality on a common field (`form.xmlns`, `cases.case_type`). The equality index
//! should keep the second within 3x of the first; the ratio is printed before criterion's
//! own measurements.

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;

use ccrelay::decode;
use ccrelay::rules::RuleSet;

const VISIT_XML: &[u8] = include_bytes!("../tests/fixtures/form_xml/visit.xml");

/// The household visit form, decoded as ingress would.
fn envelope() -> Value {
    let decoded = decode::decode(&common::form_input(VISIT_XML)).expect("the fixture decodes");
    decoded
        .into_envelope(common::arrival(VISIT_XML.len()))
        .into_value()
}

const SINKS: &str = "version: 1
sinks:
  archive: { type: file, path: \"out/{{ kind }}/{{ received_at | date }}.jsonl\" }
  alerts: { type: file, path: alerts.jsonl }
  partner: { type: file, path: partner.jsonl }
";

/// Ten rules of the kinds operators write: by kind, form type, case type, answers, dates.
fn typical_rules() -> RuleSet {
    let text = format!(
        "{SINKS}rules:
  - name: visits
    when: {{ form.xmlns: \"http://openrosa.org/formdesigner/5B3C1E0A-7D41-4F8E-9A2B-6C0D1E2F3A4B\" }}
    to: partner
  - name: large households
    when: {{ kind: form, form.data.household_size: {{ gte: 6 }} }}
    to: alerts
  - name: pregnancies
    when: {{ cases.case_type: pregnancy, cases.properties.risk: {{ in: [high, very_high] }} }}
    to: alerts
  - name: households in Kisumu
    when: {{ cases.case_type: household, cases.properties.village: Kisumu }}
    to: partner
  - name: children
    when: {{ form.data.members.member.age: {{ lt: 5 }} }}
    to: alerts
  - name: not from the test app
    when: {{ not: {{ query.app_id: {{ in: [test1, test2] }} }} }}
    to: archive
  - name: closed cases
    when: {{ kind: case, cases.closed: true }}
    to: archive
  - name: recent
    when: {{ received_at: {{ gte: 2024-01-01 }} }}
    to: archive
  - name: named chws
    when: {{ form.username: {{ matches: \"^chw\\\\.\" }} }}
    to: partner
  - name: users or locations
    when: {{ any: [{{ kind: user }}, {{ kind: location }}] }}
    to: archive
"
    );
    RuleSet::parse(&text, "typical.yaml").unwrap_or_else(|errors| panic!("{errors}"))
}

/// 10,000 rules, half on `form.xmlns` and half on `cases.case_type`, one of each matching.
fn many_equality_rules() -> RuleSet {
    let mut text = format!("{SINKS}rules:\n");
    for position in 0..10_000 {
        let when = if position % 2 == 0 {
            format!("{{ form.xmlns: \"http://openrosa.org/formdesigner/FORM-{position}\" }}")
        } else {
            format!("{{ kind: form, cases.case_type: type-{position} }}")
        };
        text.push_str(&format!(
            "  - {{ name: r{position}, when: {when}, to: archive }}\n"
        ));
    }
    text.push_str(
        "  - { name: visits, when: { form.xmlns: \"http://openrosa.org/formdesigner/5B3C1E0A-7D41-4F8E-9A2B-6C0D1E2F3A4B\" }, to: partner }\n\
         \x20 - { name: households, when: { cases.case_type: household }, to: alerts }\n",
    );
    RuleSet::parse(&text, "many.yaml").unwrap_or_else(|errors| panic!("{errors}"))
}

/// Mean nanoseconds per `route` call, over enough calls to take about half a second.
fn mean_route_nanos(rules: &RuleSet, envelope: &Value) -> f64 {
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(rules.route(black_box(envelope)));
    }
    started.elapsed().as_nanos() as f64 / rounds as f64
}

fn routing(c: &mut Criterion) {
    let envelope = envelope();
    let typical = typical_rules();
    let many = many_equality_rules();
    assert_eq!(
        typical.matched_rules(&envelope),
        [
            "visits",
            "households in Kisumu",
            "not from the test app",
            "recent",
            "named chws"
        ]
    );
    assert_eq!(many.matched_rules(&envelope), ["visits", "households"]);

    let typical_nanos = mean_route_nanos(&typical, &envelope);
    let many_nanos = mean_route_nanos(&many, &envelope);
    println!(
        "route: 10 typical rules {:.2} µs, 10,000 equality rules {:.2} µs, ratio {:.2}",
        typical_nanos / 1000.0,
        many_nanos / 1000.0,
        many_nanos / typical_nanos
    );

    c.bench_function("route/10 typical rules", |b| {
        b.iter(|| typical.route(black_box(&envelope)))
    });
    c.bench_function("route/10,000 equality rules", |b| {
        b.iter(|| many.route(black_box(&envelope)))
    });
    c.bench_function("route/10,000 equality rules, every rule evaluated", |b| {
        b.iter(|| many.matched_rules_without_index(black_box(&envelope)).len())
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);
