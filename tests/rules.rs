//! The rules engine as a specification (docs/rules.md): what each operator and combinator
//! means on array paths, numbers written as strings, dates and missing fields; how routing
//! fans out, stops and dedupes; what each shape sends; how every refused file reads; and the
//! runner for a rules file's own `tests:`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use ccrelay::rules::{
    self, Payload, Projection, RuleSet, Shape, TEST_RECEIVED_AT, UNMATCHED_RULE, explain,
    explain_with_body, run_tests,
};
use ccrelay::sinks::SinkConfig;
use ccrelay::spool::Route;

/// A form envelope with repeats (an array, and an object for a repeat of one), two case
/// operations, numbers written as strings, dates, an element with `#text`, and a null.
fn envelope() -> Value {
    json!({
        "id": "0190a000-0000-7000-8000-000000000001",
        "received_at": "2024-05-02T06:14:10.120431Z",
        "source": "kisumu",
        "domain": null,
        "kind": "form",
        "format": "xml",
        "method": "POST",
        "content_type": "text/xml",
        "query": {"app_id": "c0ffee"},
        "headers": {"received-on": "2024-05-02T06:14:09.482113Z"},
        "body_bytes": 1636,
        "form": {
            "xmlns": "http://openrosa.org/formdesigner/visit",
            "name": "Household Visit",
            "time_end": "2024-05-02T06:14:07.120000",
            "data": {
                "household_size": "4",
                "notes": "",
                "visit_date": "2024-05-01",
                "members": {"member": [{"name": "Achieng", "age": "34"}, {"name": "Baraka", "age": "7"}]},
                "single": {"member": {"name": "Solo", "age": "52"}},
                "nested": [[{"x": "deep"}], {"x": "shallow"}],
                "meta": {"appVersion": {"@xmlns": "http://commcarehq.org/xforms", "#text": "CommCare Android 2.53"}},
            },
        },
        "cases": [
            {
                "case_id": "c1",
                "case_type": "household",
                "actions": ["create", "update", "index"],
                "properties": {"risk": "low", "size": "4"},
                "indices": {"parent": {"case_id": "v1", "case_type": "village"}},
            },
            {
                "case_id": "c2",
                "case_type": "pregnancy",
                "actions": ["create", "close"],
                "properties": {"risk": "high", "edd": "2024-09-01"},
                "indices": {},
                "closed": true,
            },
        ],
        "case_ids": [],
    })
}

fn parse(text: &str) -> RuleSet {
    RuleSet::parse(text, "rules.yaml").unwrap_or_else(|errors| panic!("{errors}"))
}

/// A rules file with one rule `r`, `when: {when}`, to sink `a`.
fn one_rule(when: &str) -> RuleSet {
    parse(&format!(
        "version: 1\nsinks:\n  a: {{ type: file, path: a.jsonl }}\nrules:\n  - name: r\n    when: {when}\n    to: a\n"
    ))
}

/// Each `(when, matches)` against `envelope`.
fn check_when(cases: &[(&str, bool)], envelope: &Value) {
    for (when, expected) in cases {
        let rules = one_rule(when);
        let matched = !rules.route(envelope).is_empty();
        assert_eq!(matched, *expected, "when: {when}");
        assert_eq!(
            rules.matched_rules_without_index(envelope).is_empty(),
            !expected,
            "when: {when} (without the index)"
        );
    }
}

#[test]
fn equality_compares_text_exactly_and_numbers_as_numbers() {
    check_when(
        &[
            ("{kind: form}", true),
            ("{kind: case}", false),
            ("{kind: {eq: form}}", true),
            ("{kind: Form}", false),
            ("{query.app_id: c0ffee}", true),
            (
                "{headers.received-on: \"2024-05-02T06:14:09.482113Z\"}",
                true,
            ),
            // HQ sends answers as strings: a number in the rule compares as a number.
            ("{form.data.household_size: 4}", true),
            ("{form.data.household_size: 4.0}", true),
            ("{form.data.household_size: 5}", false),
            // A quoted value is text: it equals the same text, or a JSON number it spells.
            ("{form.data.household_size: \"4\"}", true),
            ("{form.data.household_size: \"4.0\"}", false),
            ("{body_bytes: 1636}", true),
            ("{body_bytes: \"1636\"}", true),
            ("{form.data.notes: \"\"}", true),
            ("{cases.closed: true}", true),
            ("{cases.closed: false}", false),
            // An element with attributes is compared by its #text.
            ("{form.data.meta.appVersion: CommCare Android 2.53}", true),
        ],
        &envelope(),
    );
}

#[test]
fn paths_through_arrays_match_when_any_element_does() {
    check_when(
        &[
            ("{cases.case_type: pregnancy}", true),
            ("{cases.case_type: household}", true),
            ("{cases.case_type: school}", false),
            ("{cases.actions: close}", true),
            ("{cases.indices.parent.case_type: village}", true),
            ("{form.data.members.member.name: Baraka}", true),
            // A repeat of one is an object; it reads as an array of one.
            ("{form.data.single.member.name: Solo}", true),
            // Arrays inside arrays are walked too, and objects beside them.
            ("{form.data.nested.x: deep}", true),
            ("{form.data.nested.x: shallow}", true),
            // Separate paths are separate conditions: each may hold in a different case.
            (
                "{cases.case_type: household, cases.properties.risk: high}",
                true,
            ),
            // Operators on one path must hold for the same value (34 is not both > 30 and < 10).
            ("{form.data.members.member.age: {gt: 30, lt: 10}}", false),
            ("{form.data.members.member.age: {gte: 18, lt: 50}}", true),
            ("{form.data.members.member.age: {gte: 35, lt: 50}}", false),
        ],
        &envelope(),
    );
}

#[test]
fn negations_hold_when_no_value_matches_including_a_missing_field() {
    check_when(
        &[
            ("{kind: {ne: case}}", true),
            ("{kind: {ne: form}}", false),
            // Some case is a pregnancy, so "case_type ne pregnancy" does not hold.
            ("{cases.case_type: {ne: pregnancy}}", false),
            ("{cases.case_type: {ne: school}}", true),
            ("{missing.field: {ne: x}}", true),
            ("{domain: {ne: x}}", true),
            ("{form.data.household_size: {ne: 4}}", false),
            (
                "{cases.properties.risk: {not_in: [medium, very_high]}}",
                true,
            ),
            ("{cases.properties.risk: {not_in: [high]}}", false),
            ("{missing: {not_in: [a]}}", true),
            // To require the field, say so.
            ("{missing: {ne: x, exists: true}}", false),
            ("{not: {cases.case_type: pregnancy}}", false),
            ("{not: {missing: x}}", true),
        ],
        &envelope(),
    );
}

#[test]
fn membership_existence_and_text_operators() {
    check_when(
        &[
            ("{cases.properties.risk: {in: [high, very_high]}}", true),
            ("{cases.properties.risk: {in: [medium]}}", false),
            ("{form.data.household_size: {in: [3, 4]}}", true),
            ("{missing: {in: [a]}}", false),
            // exists: some non-null value is reached; "" exists, null and [] do not.
            ("{form.data.notes: {exists: true}}", true),
            ("{domain: {exists: true}}", false),
            ("{domain: {exists: false}}", true),
            ("{ledgers: {exists: true}}", false),
            ("{case_ids: {exists: true}}", false),
            ("{cases.indices.parent.case_id: {exists: true}}", true),
            ("{form.data.members: {exists: true}}", true),
            (
                "{form.xmlns: {starts_with: \"http://openrosa.org/\"}}",
                true,
            ),
            ("{form.xmlns: {ends_with: /visit}}", true),
            ("{form.xmlns: {ends_with: /other}}", false),
            ("{form.name: {contains: Visit}}", true),
            ("{form.name: {contains: visit}}", false),
            ("{cases.actions: {contains: clo}}", true),
            ("{body_bytes: {starts_with: 16}}", true),
            ("{form.data.meta.appVersion: {contains: Android}}", true),
            ("{form.xmlns: {matches: \"visit$\"}}", true),
            ("{form.name: {matches: \"^household\"}}", false),
            ("{form.name: {matches: \"(?i)^household\"}}", true),
            ("{cases.case_id: {matches: \"^c[0-9]$\"}}", true),
            ("{missing: {matches: \".\"}}", false),
        ],
        &envelope(),
    );
}

#[test]
fn comparisons_read_numbers_and_iso_dates() {
    check_when(
        &[
            ("{form.data.household_size: {gt: 3}}", true),
            ("{form.data.household_size: {gt: 4}}", false),
            ("{form.data.household_size: {gte: 4}}", true),
            ("{form.data.household_size: {lt: 4}}", false),
            ("{form.data.household_size: {lte: 4}}", true),
            ("{form.data.household_size: {gt: \"3.5\"}}", true),
            ("{form.data.members.member.age: {gt: 30}}", true),
            ("{form.data.members.member.age: {lt: 5}}", false),
            ("{body_bytes: {gte: 1000}}", true),
            // Text that is not a number is never greater or smaller than one.
            ("{form.data.notes: {gt: -1}}", false),
            ("{form.name: {lt: 100}}", false),
            ("{missing: {gt: 1}}", false),
            // A date bound compares the date part of date-times.
            ("{received_at: {gte: 2024-05-02}}", true),
            ("{received_at: {gt: 2024-05-02}}", false),
            ("{received_at: {lte: 2024-05-02}}", true),
            ("{form.data.visit_date: {lt: 2024-05-02}}", true),
            ("{cases.properties.edd: {gt: 2024-08-31}}", true),
            // A date-time bound compares instants; no offset means UTC, on either side.
            ("{received_at: {gt: \"2024-05-02T06:00:00Z\"}}", true),
            ("{received_at: {lt: \"2024-05-02T06:14:10Z\"}}", false),
            ("{received_at: {gt: \"2024-05-02T09:00:00+03:00\"}}", true),
            ("{form.time_end: {lt: \"2024-05-02T06:14:08\"}}", true),
            (
                "{form.data.visit_date: {gte: \"2024-05-01T00:00:00Z\"}}",
                true,
            ),
            ("{form.name: {gt: 2024-01-01}}", false),
        ],
        &envelope(),
    );
}

#[test]
fn combinators_nest() {
    check_when(
        &[
            ("always", true),
            ("{all: [{kind: form}, {cases.case_type: pregnancy}]}", true),
            ("{all: [{kind: form}, {kind: case}]}", false),
            ("{any: [{kind: case}, {form.name: Household Visit}]}", true),
            ("{any: [{kind: case}, {kind: app}]}", false),
            ("{not: {kind: case}}", true),
            ("{kind: form, not: {cases.closed: true}}", false),
            (
                "{any: [{all: [{kind: case}, {cases.closed: true}]}, {not: {form.data.household_size: {lt: 2}}}]}",
                true,
            ),
            ("{missing: x}", false),
            ("{kind.deeper: x}", false),
        ],
        &envelope(),
    );
}

const ROUTING: &str = "\
version: 1
sinks:
  archive: { type: file, path: archive.jsonl }
  alerts: { type: file, path: alerts.jsonl }
  audit: { type: file, path: audit.jsonl }
  lost: { type: file, path: lost.jsonl }
rules:
  - name: pregnancies
    when: { cases.case_type: pregnancy }
    to: [alerts, audit]
    send: { keep: [id] }
  - name: forms
    when: { kind: form }
    to: [archive, alerts]
  - name: stop on household
    when: { cases.case_type: household }
    to: audit
    stop: true
  - name: after the stop
    to: archive
unmatched: [lost]
";

fn route(rules: &RuleSet, envelope: &Value) -> Vec<(String, String)> {
    rules
        .route(envelope)
        .into_iter()
        .map(|route| (route.sink, route.rule))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(sink, rule)| (sink.to_string(), rule.to_string()))
        .collect()
}

#[test]
fn every_matching_rule_fires_in_file_order_until_a_stop() {
    let rules = parse(ROUTING);
    let both = envelope();
    assert_eq!(
        rules.matched_rules(&both),
        ["pregnancies", "forms", "stop on household"]
    );
    // Each sink once, named by the first rule that chose it.
    assert_eq!(
        route(&rules, &both),
        pairs(&[
            ("alerts", "pregnancies"),
            ("audit", "pregnancies"),
            ("archive", "forms"),
        ])
    );
    let shapes: Vec<Shape> = rules.route(&both).into_iter().map(|r| r.shape).collect();
    let keep_id = Shape::Project(Projection {
        keep: Some(vec!["id".into()]),
        ..Projection::default()
    });
    assert_eq!(shapes, [keep_id.clone(), keep_id, Shape::Envelope]);

    // Without the stop, the catch-all after it fires.
    let app = json!({"kind": "app", "cases": []});
    assert_eq!(rules.matched_rules(&app), ["after the stop"]);
    assert_eq!(route(&rules, &app), pairs(&[("archive", "after the stop")]));
}

#[test]
fn unmatched_envelopes_go_to_the_unmatched_sinks_or_nowhere() {
    let rules = parse(&ROUTING.replace("  - name: after the stop\n    to: archive\n", ""));
    let app = json!({"kind": "app", "cases": []});
    assert!(rules.matched_rules(&app).is_empty());
    assert_eq!(route(&rules, &app), pairs(&[("lost", UNMATCHED_RULE)]));

    let without_unmatched = parse(
        &ROUTING
            .replace("  - name: after the stop\n    to: archive\n", "")
            .replace("unmatched: [lost]\n", ""),
    );
    assert_eq!(without_unmatched.route(&app), Vec::<Route>::new());
}

#[test]
fn a_rule_without_when_matches_everything() {
    let rules = parse(
        "version: 1\nsinks: { a: { type: file, path: a } }\nrules:\n  - { name: all, to: a }\n  - { name: also, when: always, to: a }\n",
    );
    assert_eq!(rules.matched_rules(&json!({})), ["all", "also"]);
    assert_eq!(route(&rules, &json!({})), pairs(&[("a", "all")]));
}

#[test]
fn shapes_send_the_envelope_the_raw_body_or_a_projection() {
    let envelope_json = r#"{"id":"e1","kind":"form","cases":[{"case_id":"c1","properties":{"risk":"high","name":"A"}},{"case_id":"c2","properties":{"name":"B"}}],"form":{"data":{"secret":"x","keep":"y"}}}"#;
    let body = b"<data>raw</data>";
    let check = |shape: Shape, content_type: Option<&str>, expected: Payload| {
        assert_eq!(
            shape.apply(envelope_json, body, content_type),
            expected,
            "{shape:?}"
        );
    };
    let json_payload = |value: Value| Payload {
        bytes: serde_json::to_vec(&value).unwrap().into(),
        content_type: "application/json".into(),
    };
    check(
        Shape::Envelope,
        Some("text/xml"),
        Payload {
            bytes: envelope_json.as_bytes().to_vec().into(),
            content_type: "application/json".into(),
        },
    );
    check(
        Shape::Raw,
        Some("text/xml; charset=utf-8"),
        Payload {
            bytes: body.to_vec().into(),
            content_type: "text/xml; charset=utf-8".into(),
        },
    );
    check(
        Shape::Raw,
        None,
        Payload {
            bytes: body.to_vec().into(),
            content_type: "application/octet-stream".into(),
        },
    );
    // keep: only these paths, through every element of arrays; nothing is made up around
    // what an element lacks.
    check(
        Shape::Project(Projection {
            keep: Some(vec![
                "id".into(),
                "cases.case_id".into(),
                "cases.properties.risk".into(),
            ]),
            ..Projection::default()
        }),
        None,
        json_payload(json!({"id": "e1", "cases": [
            {"case_id": "c1", "properties": {"risk": "high"}},
            {"case_id": "c2"},
        ]})),
    );
    // drop, then rename, then set (creating objects on the way).
    check(
        Shape::Project(Projection {
            keep: None,
            drop: vec!["form.data.secret".into(), "cases.properties".into()],
            rename: vec![
                ("form.data".into(), "answers".into()),
                ("missing".into(), "x".into()),
            ],
            set: vec![
                ("meta.routed_by".into(), json!("ccrelay")),
                ("kind".into(), json!({"was": "form"})),
            ],
        }),
        None,
        json_payload(json!({
            "id": "e1",
            "kind": {"was": "form"},
            "cases": [{"case_id": "c1"}, {"case_id": "c2"}],
            "form": {},
            "answers": {"keep": "y"},
            "meta": {"routed_by": "ccrelay"},
        })),
    );
}

#[test]
fn send_is_read_from_the_rules_file() {
    let rules = parse(
        "version: 1
sinks: { a: { type: file, path: a }, b: { type: file, path: b }, c: { type: file, path: c } }
rules:
  - { name: raw, to: a, send: raw }
  - { name: envelope, to: b, send: envelope }
  - name: projected
    to: c
    send:
      keep: [id, form.data]
      drop: [form.data.meta]
      rename: { form.data: answers }
      set: { source_system: commcare, version: 2, tags: [a, b] }
",
    );
    let shapes: Vec<Shape> = rules
        .route(&json!({}))
        .into_iter()
        .map(|r| r.shape)
        .collect();
    assert_eq!(
        shapes,
        [
            Shape::Raw,
            Shape::Envelope,
            Shape::Project(Projection {
                keep: Some(vec!["id".into(), "form.data".into()]),
                drop: vec!["form.data.meta".into()],
                rename: vec![("form.data".into(), "answers".into())],
                set: vec![
                    ("source_system".into(), json!("commcare")),
                    ("version".into(), json!(2)),
                    ("tags".into(), json!(["a", "b"])),
                ],
            }),
        ]
    );
}

#[test]
fn routes_serialise_without_the_default_shape_and_old_records_read() {
    let route = Route {
        sink: "a".into(),
        rule: "r".into(),
        shape: Shape::Envelope,
    };
    assert_eq!(
        serde_json::to_string(&route).unwrap(),
        r#"{"sink":"a","rule":"r"}"#
    );
    let old: Route = serde_json::from_str(r#"{"sink":"a","rule":"r"}"#).unwrap();
    assert_eq!(old, route);
    let raw = Route {
        shape: Shape::Raw,
        ..route
    };
    let text = serde_json::to_string(&raw).unwrap();
    assert_eq!(text, r#"{"sink":"a","rule":"r","shape":"raw"}"#);
    assert_eq!(serde_json::from_str::<Route>(&text).unwrap(), raw);
}

#[test]
fn explain_lists_matched_rules_destinations_and_payloads() {
    let rules = parse(
        "version: 1
sinks:
  archive: { type: file, path: \"out/{{ kind }}/{{ received_at | date }}.jsonl\" }
  by_app: { type: file, path: \"apps/{{ query.app_id }}.jsonl\" }
  raw: { type: file, path: \"raw/{{ form.xmlns | default('none') }}.jsonl\" }
rules:
  - { name: everything, to: [archive, by_app] }
  - { name: forms raw, when: { kind: form }, to: raw, send: raw }
",
    );
    let form = envelope();
    let explained = explain_with_body(&rules, &form, b"<data/>");
    assert_eq!(explained.matched_rules, ["everything", "forms raw"]);
    let destinations: Vec<Result<String, String>> = explained
        .routes
        .iter()
        .map(|route| route.destination.clone())
        .collect();
    assert_eq!(
        destinations,
        [
            Ok("out/form/2024-05-02.jsonl".to_owned()),
            Ok("apps/c0ffee.jsonl".to_owned()),
            Ok("raw/http://openrosa.org/formdesigner/visit.jsonl".to_owned()),
        ]
    );
    assert_eq!(explained.routes[2].payload.bytes.as_ref(), b"<data/>");
    assert_eq!(explained.routes[2].payload.content_type, "text/xml");

    // A template that names a missing field fails that destination, not the explanation.
    let app =
        json!({"kind": "app", "received_at": "2024-05-02T06:14:10Z", "cases": [], "query": {}});
    let explained = explain(&rules, &app);
    assert_eq!(
        explained.routes[0].destination,
        Ok("out/app/2024-05-02.jsonl".to_owned())
    );
    let error = explained.routes[1].destination.clone().unwrap_err();
    assert!(error.contains("apps/{{ query.app_id }}.jsonl"), "{error}");
    assert!(error.contains("undefined"), "{error}");
    let printed = explained.to_string();
    assert!(printed.starts_with("matched rules: everything\nroutes:\n  archive (file) by rule `everything`\n    destination: out/app/2024-05-02.jsonl\n"), "{printed}");
    assert!(
        printed.contains("destination: cannot render: template"),
        "{printed}"
    );
}

#[test]
fn the_embedded_default_archives_everything() {
    let rules = RuleSet::embedded_default();
    assert_eq!(rules.rule_count(), 1);
    assert_eq!(rules.sink_names().collect::<Vec<_>>(), ["archive"]);
    let Some(SinkConfig::File(archive)) = rules.sinks.get("archive").map(|spec| &spec.config)
    else {
        panic!("archive is a file sink");
    };
    assert_eq!(archive.path.source(), rules::DEFAULT_ARCHIVE_PATH);
    assert_eq!(archive.max_file_bytes, 256 * 1024 * 1024);
    assert_eq!(
        route(&rules, &envelope()),
        pairs(&[("archive", "everything")])
    );
    assert_eq!(
        RuleSet::default_archive().version(),
        RuleSet::embedded_default().version()
    );
    assert_eq!(rules.version().len(), 12);
    assert_ne!(rules.version(), one_rule("always").version());
}

/// Expects `text` to be refused with exactly `expected`, one error per line.
fn check_refused(text: &str, expected: &str) {
    match RuleSet::parse(text, "rules.yaml") {
        Ok(rules) => panic!("expected errors, parsed {rules}"),
        Err(errors) => assert_eq!(errors.to_string(), expected.trim(), "for:\n{text}"),
    }
}

#[test]
fn every_problem_in_a_file_is_reported_at_once_with_its_position() {
    check_refused(
        r#"version: 1
sinks:
  archive: { type: file, path: "out/{{ kind }.jsonl" }
  queue: { type: amqpp, exchange: x }
  files: { type: file, paht: x, max_file_bytes: many }
rules:
  - name: first
    when: { kind: form, form.xmlns: { equals: x } }
    to: [archive, archiv]
  - name: first
    when:
      form.name: { matches: "(unclosed" }
      form.data.age: { gt: soon }
      cases.case_type: [a, b]
      cases.closed: ~
      cases..x: 1
    to: nowhere
    stop: maybe
  - when: { any: [] }
    to: []
    send: { keep: id }
  - name: shapes
    to: archive
    send: xml
  - name: extra
    to: archive
    stpo: true
unmatched: [lost]
"#,
        r#"
rules.yaml:3:32: sinks.archive.path: template `out/{{ kind }.jsonl`: syntax error: unexpected `}`, expected end of variable block
rules.yaml:4:18: sinks.queue.type: unknown sink type `amqpp` (did you mean `amqp`?), expected one of: file, amqp, kafka, http
rules.yaml:5:10: sinks.files: missing field `path`
rules.yaml:5:24: sinks.files.paht: unknown field `paht` (did you mean `path`?), expected one of: type, retry, max_backlog, path, max_file_bytes
rules.yaml:5:49: sinks.files.max_file_bytes: expected an integer, found a string
rules.yaml:8:39: rules[0].when["form.xmlns"].equals: unknown operator `equals`, expected one of: eq, ne, in, not_in, exists, starts_with, ends_with, contains, matches, gt, gte, lt, lte
rules.yaml:9:19: rules[0].to[1]: unknown sink `archiv` (did you mean `archive`?), expected one of: archive, queue, files (the sinks defined under `sinks`)
rules.yaml:10:11: rules[1].name: duplicate rule name `first` (first at 7:11); rule names must be unique
rules.yaml:12:29: rules[1].when["form.name"].matches: invalid regex `(unclosed`: unclosed group
rules.yaml:13:28: rules[1].when["form.data.age"].gt: expected a number or an ISO 8601 date or date-time, found `soon`
rules.yaml:14:24: rules[1].when["cases.case_type"]: expected a value or a map of operators, found a list (use `in: [...]` to match any of several values)
rules.yaml:15:21: rules[1].when["cases.closed"]: expected a string, number or boolean, found null (use `exists: false` for a missing or null field)
rules.yaml:16:7: rules[1].when["cases..x"]: path `cases..x` has an empty segment; write field names separated by single dots
rules.yaml:17:9: rules[1].to: unknown sink `nowhere`, expected one of: archive, queue, files (the sinks defined under `sinks`)
rules.yaml:18:11: rules[1].stop: expected a boolean (true or false), found a string
rules.yaml:19:5: rules[2]: missing field `name`
rules.yaml:19:18: rules[2].when.any: expected at least one condition
rules.yaml:20:9: rules[2].to: expected at least one sink
rules.yaml:21:19: rules[2].send.keep: expected a list, found a string
rules.yaml:24:11: rules[3].send: unknown shape `xml`, expected one of: envelope, raw
rules.yaml:27:5: rules[4].stpo: unknown field `stpo` (did you mean `stop`?), expected one of: name, when, to, stop, send
rules.yaml:28:13: unmatched[0]: unknown sink `lost`, expected one of: archive, queue, files (the sinks defined under `sinks`)
"#,
    );
}

#[test]
fn file_level_problems_are_reported() {
    check_refused(
        "",
        "rules.yaml:1:1: the rules file is empty; it needs at least `version`, `sinks` and `rules`",
    );
    check_refused(
        "version: 2\nsinks: {}\nrules: []\n",
        "rules.yaml:1:10: version: unsupported rules version 2, this build reads version 1",
    );
    check_refused(
        "sinks: {}\nrule: []\n",
        "rules.yaml:1:1: missing field `version`\n\
         rules.yaml:1:1: missing field `rules`\n\
         rules.yaml:1:8: sinks: expected at least one sink\n\
         rules.yaml:2:1: rule: unknown field `rule` (did you mean `rules`?), expected one of: version, sinks, rules, unmatched, tests",
    );
    check_refused(
        "version: 1\nsinks: { a: { type: file, path: a }, \"b c\": { type: file, path: b } }\nrules: { name: x }\n",
        "rules.yaml:2:38: sinks[\"b c\"]: sink name `b c` must use only letters, digits, `.`, `_` and `-`\n\
         rules.yaml:3:8: rules: expected a list, found a map",
    );
    check_refused(
        "version: 1\nsinks: { a: { type: file, path: a } }\nrules:\n  - { name: x, to: a, when: [kind] }\n  - { name: y, to: a, when: {} }\n  - { name: z, to: a, when: { kind: { } } }\n",
        "rules.yaml:4:29: rules[0].when: expected a map of conditions or `always`, found a list (combine conditions with `all: [...]` or `any: [...]`)\n\
         rules.yaml:5:29: rules[1].when: expected at least one condition; write `always` to match everything\n\
         rules.yaml:6:37: rules[2].when.kind: expected at least one operator, one of: eq, ne, in, not_in, exists, starts_with, ends_with, contains, matches, gt, gte, lt, lte",
    );
}

#[test]
fn tests_in_the_file_are_checked_against_sinks_and_rules() {
    check_refused(
        "version: 1
sinks: { a: { type: file, path: a } }
rules: [{ name: r, to: a }]
tests:
  - { name: both, payload: x.xml, body: '<x/>', reach: a }
  - { name: neither, reach: [a] }
  - { name: unknown, body: x, reach: [b], matched_rules: [s] }
  - { name: nothing asserted, body: x }
",
        "rules.yaml:5:41: tests[0].body: give either `payload` (a file) or `body` (inline), not both\n\
         rules.yaml:6:5: tests[1]: missing field `payload` (a file) or `body` (inline)\n\
         rules.yaml:7:39: tests[2].reach[0]: unknown sink `b` (did you mean `a`?), expected one of: a\n\
         rules.yaml:7:59: tests[2].matched_rules[0]: unknown rule `s` (did you mean `r`?), expected one of: r\n\
         rules.yaml:8:5: tests[3]: a test needs `reach`, `not_reach` or `matched_rules`",
    );
}

#[test]
fn the_example_rules_file_passes_its_own_tests() {
    let path = Path::new("tests/rules/example.yaml");
    let text = std::fs::read_to_string(path).expect("the example rules file");
    let rules = RuleSet::parse(&text, &path.display().to_string())
        .unwrap_or_else(|errors| panic!("{errors}"));
    let report = run_tests(
        &rules,
        &|path| std::fs::read(path),
        Path::new("tests/rules"),
    );
    assert!(report.passed(), "{report}");
    assert_eq!(report.results.len(), rules.tests().len());
    assert!(report.results.len() >= 5);
}

#[test]
fn the_test_runner_says_why_a_test_failed() {
    let rules = parse(
        "version: 1
sinks: { archive: { type: file, path: a }, alerts: { type: file, path: b } }
rules:
  - { name: forms, when: { kind: form }, to: archive }
tests:
  - name: passes
    body: '<data xmlns=\"x\"><a>1</a></data>'
    reach: archive
    not_reach: alerts
    matched_rules: [forms]
  - name: fails three ways
    body: '<data xmlns=\"x\"><a>1</a></data>'
    reach: alerts
    not_reach: archive
    matched_rules: []
  - name: refused payload
    body: 'not an id, not xml'
    reach: archive
  - name: missing file
    payload: nowhere.xml
    reach: archive
",
    );
    let report = run_tests(
        &rules,
        &|path| {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                path.display().to_string(),
            ))
        },
        Path::new("base"),
    );
    assert!(!report.passed());
    assert_eq!(report.failed_count(), 3);
    assert_eq!(
        report.to_string(),
        "ok   passes (6:5)
FAIL fails three ways (11:5)
     expected to reach `alerts`, but it reached `archive`
     expected not to reach `archive`, but rule `forms` sent it there
     expected rules none to match, but `forms` matched
FAIL refused payload (16:5)
     the payload is refused: body is not XML, not JSON and not an app id (32 hexadecimal digits)
FAIL missing file (19:5)
     cannot read nowhere.xml: base/nowhere.xml
1 passed, 3 failed"
    );
}

#[test]
fn test_envelopes_have_a_fixed_arrival() {
    let rules = parse(
        "version: 1
sinks: { a: { type: file, path: \"{{ received_at | date }}/{{ source }}/{{ query.app_id }}\" } }
rules: [{ name: r, to: a }]
tests:
  - name: t
    body: c0ffee00c0ffee00c0ffee00c0ffee00
    source: apps
    query: { app_id: x1 }
    reach: a
",
    );
    let case = &rules.tests()[0];
    let envelope = rules::test_envelope(case, b"c0ffee00c0ffee00c0ffee00c0ffee00").unwrap();
    assert_eq!(envelope["received_at"], TEST_RECEIVED_AT);
    assert_eq!(envelope["kind"], "app");
    let explained = explain(&rules, &envelope);
    assert_eq!(
        explained.routes[0].destination,
        Ok("2024-01-01/apps/x1".to_owned())
    );
}

#[test]
fn each_sink_has_retry_limits_and_a_max_backlog_with_defaults() {
    let rules = parse(
        "version: 1
sinks:
  patient: { type: file, path: a.jsonl, max_backlog: 5000, retry: { initial_delay: 2s, max_delay: 10m, max_attempts: 8, max_age: none } }
  plain: { type: file, path: b.jsonl }
rules:
  - { name: all, to: [patient, plain] }
",
    );
    let patient = &rules.sinks["patient"];
    assert_eq!(patient.max_backlog, 5000);
    assert_eq!(
        patient.retry,
        ccrelay::retry::RetryPolicy {
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
            max_attempts: Some(8),
            max_age: None,
        }
    );
    let plain = &rules.sinks["plain"];
    assert_eq!(plain.max_backlog, rules::DEFAULT_MAX_BACKLOG);
    assert_eq!(plain.retry, ccrelay::retry::RetryPolicy::default());
}

#[test]
fn bad_retry_and_backlog_settings_are_reported_at_their_position() {
    check_refused(
        "version: 1
sinks:
  a: { type: file, path: a.jsonl, max_backlog: 0 }
  b: { type: file, path: b.jsonl, retry: { initial_delay: 5, max_attempts: 0, max_age: forever, jitter: 1 } }
  c: { type: file, path: c.jsonl, retry: { initial_delay: 10m, max_delay: 1m } }
rules:
  - { name: all, to: [a, b, c] }
",
        "rules.yaml:3:48: sinks.a.max_backlog: expected a positive number of records, found 0
rules.yaml:4:59: sinks.b.retry.initial_delay: expected a duration with a unit such as `10s` or `500ms`, found an integer
rules.yaml:4:76: sinks.b.retry.max_attempts: expected between 1 and 4294967295 attempts, or `none`, found 0
rules.yaml:4:88: sinks.b.retry.max_age: expected a duration such as `500ms`, `30s`, `5m`, `2h` or `7d`, found `forever`
rules.yaml:4:97: sinks.b.retry.jitter: unknown field `jitter`, expected one of: initial_delay, max_delay, max_age, max_attempts
rules.yaml:5:42: sinks.c.retry: initial_delay (600s) is longer than max_delay (60s)",
    );
}

#[test]
fn sink_secrets_come_from_variables_so_the_rules_file_holds_none() {
    let text = "version: 1
sinks:
  hook:
    type: http
    url: https://example.org/in
    signing_secret: ${HOOK_SECRET}
    auth: { type: bearer, token: \"${HOOK_TOKEN}\" }
rules:
  - { name: all, to: [hook] }
";
    let vars = |name: &str| match name {
        "HOOK_SECRET" => Some("whsec_aGVsbG8=".to_string()),
        "HOOK_TOKEN" => Some("t0ken".to_string()),
        _ => None,
    };
    let rules = RuleSet::parse_with_vars(text, "rules.yaml", &vars).expect("valid");
    let SinkConfig::Http(hook) = &rules.sinks["hook"].config else {
        panic!("an http sink");
    };
    let debug = format!("{hook:?}");
    assert!(!debug.contains("${"), "substituted: {debug}");

    let unset = RuleSet::parse_with_vars(text, "rules.yaml", &|_| None).unwrap_err();
    assert_eq!(
        unset.to_string(),
        "rules.yaml:6:21: sinks.hook.signing_secret: environment variable `HOOK_SECRET` is not set\n\
         rules.yaml:6:21: sinks.hook.signing_secret: expected a Standard Webhooks secret, `whsec_` followed by base64\n\
         rules.yaml:7:34: sinks.hook.auth.token: environment variable `HOOK_TOKEN` is not set"
    );
}
