//! JSON bodies: parsed with serde_json under ccrelay's nesting limit, and required to be one
//! object. Knows nothing of CommCare payload shapes (`commcare` classifies the object).
//!
//! The nesting limit is checked by a linear scan before parsing, so a deep body is refused
//! with its position and serde_json never recurses past it.

use serde_json::{Map, Value};

use super::{DecodeError, Result, line_column};

/// Parses `text` as one JSON object.
///
/// # Errors
///
/// `TooDeep` past `max_depth` levels of objects and arrays (the top level is 1),
/// `MalformedJson` for invalid JSON, `JsonNotObject` for any other top-level value.
pub(crate) fn parse_object(text: &str, max_depth: usize) -> Result<Map<String, Value>> {
    check_depth(text, max_depth)?;
    let value: Value =
        serde_json::from_str(text).map_err(|source| DecodeError::MalformedJson { source })?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(DecodeError::JsonNotObject {
            found: describe(&other),
        }),
    }
}

/// What a JSON value is, with an article, for messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fails at the first `{` or `[` that opens level `max_depth + 1`. Brackets inside strings
/// do not count; malformed input is left for serde_json to report.
fn check_depth(text: &str, max_depth: usize) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (byte, &character) in text.as_bytes().iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if character == b'\\' {
                escaped = true;
            } else if character == b'"' {
                in_string = false;
            }
            continue;
        }
        match character {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    let (line, column) = line_column(text, byte);
                    return Err(DecodeError::TooDeep {
                        format: "JSON",
                        limit: max_depth,
                        line,
                        column,
                    });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(input: &str, max_depth: usize, expected: std::result::Result<Value, &str>) {
        let actual = parse_object(input, max_depth)
            .map(Value::Object)
            .map_err(|err| err.to_string());
        assert_eq!(actual, expected.map_err(str::to_owned), "parsing {input}");
    }

    #[test]
    fn an_object_is_read_with_its_key_order() {
        let object = parse_object(r#"{"b": 1, "a": [true, null], "c": {"d": "é"}}"#, 8).unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>(), ["b", "a", "c"]);
        check(r#"{"a": {"b": [1]}}"#, 3, Ok(json!({"a": {"b": [1]}})));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_where_it_starts() {
        check(
            r#"{"a": {"b": [1]}}"#,
            2,
            Err("JSON nesting is deeper than 2 levels at line 1, column 13"),
        );
        check(
            "{\n  \"a\": [[[]]]\n}",
            3,
            Err("JSON nesting is deeper than 3 levels at line 2, column 10"),
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        check(
            r#"{"a": "[[[{{{\"]]]", "b": "\\"}"#,
            1,
            Ok(json!({"a": "[[[{{{\"]]]", "b": "\\"})),
        );
    }

    #[test]
    fn serde_json_is_never_asked_to_recurse_past_our_limit() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        check(
            &deep,
            64,
            Err("JSON nesting is deeper than 64 levels at line 1, column 65"),
        );
    }

    #[test]
    fn malformed_json_names_its_position() {
        check(
            "{\"a\": }",
            8,
            Err("malformed JSON: expected value at line 1 column 7"),
        );
        check(
            "{\"a\": 1} x",
            8,
            Err("malformed JSON: trailing characters at line 1 column 10"),
        );
    }

    #[test]
    fn other_top_level_values_are_refused() {
        check("[1, 2]", 8, Err("JSON body is an array, not an object"));
        check("{} ", 8, Ok(json!({})));
    }
}
