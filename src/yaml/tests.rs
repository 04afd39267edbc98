use super::{Errors, Node, Resolved, Scalar, Span, parse};

/// Parses `text`, expecting it to be refused with exactly `expected` (one error per line).
fn check_refused(text: &str, expected: &str) {
    match parse(text) {
        Ok(node) => panic!("expected errors, parsed {node:?}"),
        Err(errors) => assert_eq!(errors.to_string(), expected, "for {text:?}"),
    }
}

/// Parses `text` and runs `read` over it, expecting exactly `expected` errors.
fn check_read(text: &str, read: impl FnOnce(&Node, &mut Errors), expected: &str) {
    let root = parse(text).unwrap_or_else(|errors| panic!("{errors}"));
    let mut errors = Errors::default();
    read(&root, &mut errors);
    let rendered = match errors.into_result(()) {
        Ok(()) => String::new(),
        Err(errors) => errors.to_string(),
    };
    assert_eq!(rendered, expected, "for {text:?}");
}

#[test]
fn nodes_know_their_position_and_path() {
    let text = "a:\n  b: [1, {c: x}]\n  \"odd key\":\n    - y\n";
    let root = parse(text).expect("valid yaml");
    let mut errors = Errors::default();
    let mut a_map = root.as_map(&mut errors).unwrap();
    let a = a_map.required("a", &mut errors).unwrap();
    a_map.finish(&mut errors);
    assert_eq!(
        (a.path.as_str(), a.span),
        ("a", Span { line: 2, column: 3 })
    );
    let mut inner = a.as_map(&mut errors).unwrap();
    let b = inner.required("b", &mut errors).unwrap();
    let list = b.as_list(&mut errors).unwrap();
    assert_eq!(
        (list[1].path.as_str(), list[1].span),
        (
            "a.b[1]",
            Span {
                line: 2,
                column: 10
            }
        )
    );
    let odd = inner.required("odd key", &mut errors).unwrap();
    let item = &odd.as_list(&mut errors).unwrap()[0];
    assert_eq!(
        (item.path.as_str(), item.span),
        ("a[\"odd key\"][0]", Span { line: 4, column: 7 })
    );
    inner.finish(&mut errors);
    assert!(errors.is_empty(), "{errors}");
}

#[test]
fn refuses_what_the_language_leaves_out() {
    let cases = [
        (
            "a: 1\nb: [1, 2\nc: 3\n",
            "3:2: illegal placement of ':' indicator",
        ),
        (
            "a: 1\na: 2\nb: 1\nb: 2\n",
            "2:1: a: duplicate key `a` (first at 1:1)\n4:1: b: duplicate key `b` (first at 3:1)",
        ),
        (
            "a: &x 1\nb: *x\n",
            "1:7: a: anchors (`&name`) are not supported\n2:4: b: aliases (`*name`) are not supported",
        ),
        (
            "a: !!str 1\n",
            "1:10: a: tags (`!!str`) are not supported; quote the value to make it a string",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "2:1: only one YAML document is allowed",
        ),
        (
            "? [x]\n: 1\n",
            "1:3: keys must be strings, not lists or maps",
        ),
        (
            "list:\n  - {a: 1, a: 2}\n",
            "2:12: list[0].a: duplicate key `a` (first at 2:6)",
        ),
    ];
    for (text, expected) in cases {
        check_refused(text, expected);
    }
}

#[test]
fn plain_scalars_follow_the_core_schema() {
    let cases = [
        ("~", Resolved::Null),
        ("", Resolved::Null),
        ("true", Resolved::Bool(true)),
        ("False", Resolved::Bool(false)),
        ("yes", Resolved::Str("yes")),
        ("42", Resolved::Int(42)),
        ("-7", Resolved::Int(-7)),
        ("0x1f", Resolved::Int(31)),
        ("0o17", Resolved::Int(15)),
        ("99999999999999999999", Resolved::IntOutOfRange),
        ("1.5", Resolved::Float(1.5)),
        ("1e3", Resolved::Float(1000.0)),
        ("1_000", Resolved::Str("1_000")),
        ("127.0.0.1:8080", Resolved::Str("127.0.0.1:8080")),
        ("1.2.3", Resolved::Str("1.2.3")),
    ];
    for (text, expected) in cases {
        let scalar = Scalar {
            text: text.to_owned(),
            plain: true,
        };
        assert_eq!(scalar.resolve(), expected, "for {text:?}");
    }
    let quoted = Scalar {
        text: "42".to_owned(),
        plain: false,
    };
    assert_eq!(quoted.resolve(), Resolved::Str("42"));
}

#[test]
fn readers_report_type_mismatches_and_keep_going() {
    let text =
        "name: [a]\ncount: \"3\"\nport: 80\nflag: yes\nsize: -1\nbig: 99999999999999999999\n";
    check_read(
        text,
        |root, errors| {
            let mut map = root.as_map(errors).unwrap();
            map.required("name", errors)
                .and_then(|node| node.as_str(errors));
            map.required("count", errors)
                .and_then(|node| node.as_u64(errors));
            map.required("port", errors)
                .and_then(|node| node.as_str(errors));
            map.required("flag", errors)
                .and_then(|node| node.as_bool(errors));
            map.required("size", errors)
                .and_then(|node| node.as_u64(errors));
            map.required("big", errors)
                .and_then(|node| node.as_i64(errors));
            map.finish(errors);
        },
        "1:7: name: expected a string, found a list\n\
         2:8: count: expected an integer, found a string\n\
         3:7: port: expected a string, found an integer (quote it to use it as a string)\n\
         4:7: flag: expected a boolean (true or false), found a string\n\
         5:7: size: expected a non-negative integer, found -1\n\
         6:6: big: integer 99999999999999999999 is out of range",
    );
}

#[test]
fn map_reader_reports_missing_and_unknown_fields() {
    check_read(
        "outer:\n  lisen: x\n  tyep: y\n  zzz: 1\n  rules:\n",
        |root, errors| {
            let mut map = root.as_map(errors).unwrap();
            let outer = map.required("outer", errors).unwrap();
            map.finish(errors);
            let mut outer = outer.as_map(errors).unwrap();
            outer.optional("listen");
            outer.optional("type");
            assert!(outer.optional("rules").is_none(), "null reads as absent");
            outer.required("version", errors);
            outer.finish(errors);
        },
        "2:3: outer: missing field `version`\n\
         2:3: outer.lisen: unknown field `lisen` (did you mean `listen`?), expected one of: listen, type, rules, version\n\
         3:3: outer.tyep: unknown field `tyep` (did you mean `type`?), expected one of: listen, type, rules, version\n\
         4:3: outer.zzz: unknown field `zzz`, expected one of: listen, type, rules, version",
    );
}

#[test]
fn choices_list_the_valid_names() {
    check_read(
        "a: hamc\nb: hmac\nc: 3\n",
        |root, errors| {
            let choices = [("none", 0), ("basic", 1), ("hmac", 2)];
            let mut map = root.as_map(errors).unwrap();
            let a = map.required("a", errors).unwrap();
            assert_eq!(a.as_choice("auth type", &choices, errors), None);
            let b = map.required("b", errors).unwrap();
            assert_eq!(b.as_choice("auth type", &choices, errors), Some(2));
            let c = map.required("c", errors).unwrap();
            assert_eq!(c.as_choice("auth type", &choices, errors), None);
            map.finish(errors);
        },
        "1:4: a: unknown auth type `hamc` (did you mean `hmac`?), expected one of: none, basic, hmac\n\
         3:4: c: expected a string, found an integer (quote it to use it as a string)",
    );
}

#[test]
fn empty_values_are_placed_at_their_key() {
    check_read(
        "a:\nb: 1\n",
        |root, errors| {
            let mut map = root.as_map(errors).unwrap();
            let a = map.optional("a");
            assert!(a.is_none());
            map.required("a", errors);
            map.optional("b");
            map.finish(errors);
        },
        "1:1: a: missing value",
    );
}

#[test]
fn an_empty_document_is_null() {
    let root = parse("# only a comment\n").expect("valid yaml");
    assert!(root.is_null());
    assert_eq!(root.span, Span { line: 1, column: 1 });
}

#[test]
fn as_text_keeps_scalars_as_written() {
    check_read(
        "a: 0123\nb: \"x\"\nc: [1]\n",
        |root, errors| {
            let mut map = root.as_map(errors).unwrap();
            let a = map.required("a", errors).unwrap();
            assert_eq!(a.as_text(errors), Some("0123"));
            let b = map.required("b", errors).unwrap();
            assert_eq!(b.as_text(errors), Some("x"));
            let c = map.required("c", errors).unwrap();
            assert_eq!(c.as_text(errors), None);
            map.finish(errors);
        },
        "3:4: c: expected a string, found a list",
    );
}

#[test]
fn durations_are_written_with_units_and_must_be_positive() {
    use std::time::Duration;
    check_read(
        "a: 500ms\nb: 1h 30m\nc: 7d\nd: PT5M\ne: 10\nf: 0s\ng: soon\n",
        |root, errors| {
            let mut map = root.as_map(errors).unwrap();
            let mut read = |name| {
                map.required(name, errors)
                    .and_then(|n| n.as_duration(errors))
            };
            assert_eq!(read("a"), Some(Duration::from_millis(500)));
            assert_eq!(read("b"), Some(Duration::from_secs(5400)));
            assert_eq!(read("c"), Some(Duration::from_secs(7 * 86_400)));
            assert_eq!(read("d"), Some(Duration::from_secs(300)));
            assert_eq!(read("e"), None);
            assert_eq!(read("f"), None);
            assert_eq!(read("g"), None);
        },
        "5:4: e: expected a duration with a unit such as `10s` or `500ms`, found an integer\n\
         6:4: f: expected a positive duration, found `0s`\n\
         7:4: g: expected a duration such as `500ms`, `30s`, `5m`, `2h` or `7d`, found `soon`",
    );
}
