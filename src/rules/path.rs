//! Dotted envelope paths (`cases.properties.risk`), split once at load and walked without
//! allocating.
//!
//! A path names every value it reaches, not one: an array on the way (or at the end) is
//! walked element by element, arrays inside arrays too, and an object where an array could be
//! counts as an array of one, because HQ writes a repeat group with one entry as an object and
//! with several as an array. Nulls are not values: a field that is `null` reads as missing.

use serde_json::Value;

/// A path split into its field names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    text: String,
    segments: Vec<String>,
}

impl Path {
    /// Splits `text` on `.`.
    ///
    /// # Errors
    ///
    /// When the text is empty or has an empty segment (`a..b`, `.a`, `a.`).
    pub fn parse(text: &str) -> Result<Path, String> {
        if text.is_empty() {
            return Err("a path cannot be empty".to_owned());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "path `{text}` has an empty segment; write field names separated by single dots"
            ));
        }
        Ok(Path {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Calls `visit` on every non-null value the path reaches, in document order, until
    /// `visit` returns `true`; returns whether it did. Arrays at the end are walked too, so a
    /// visited value is never an array.
    pub fn any(&self, root: &Value, visit: &mut dyn FnMut(&Value) -> bool) -> bool {
        walk(root, &self.segments, visit)
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn walk(value: &Value, segments: &[String], visit: &mut dyn FnMut(&Value) -> bool) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => items.iter().any(|item| walk(item, segments, visit)),
        _ => match segments.split_first() {
            None => visit(value),
            Some((first, rest)) => match value {
                Value::Object(map) => map
                    .get(first.as_str())
                    .is_some_and(|child| walk(child, rest, visit)),
                _ => false,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reached(path: &str, root: &Value) -> Vec<Value> {
        let mut values = Vec::new();
        Path::parse(path).unwrap().any(root, &mut |value| {
            values.push(value.clone());
            false
        });
        values
    }

    #[test]
    fn paths_reach_every_element_of_arrays_and_objects_as_arrays_of_one() {
        let root = json!({
            "kind": "form",
            "domain": null,
            "cases": [{"case_type": "a", "actions": ["create", "close"]}, {"case_type": "b"}],
            "form": {"data": {
                "one": {"member": {"age": "4"}},
                "many": {"member": [{"age": "5"}, [{"age": "6"}], {"age": null}]},
            }},
        });
        let cases: [(&str, Value); 9] = [
            ("kind", json!(["form"])),
            ("domain", json!([])),
            ("missing.deeper", json!([])),
            ("kind.deeper", json!([])),
            ("cases.case_type", json!(["a", "b"])),
            ("cases.actions", json!(["create", "close"])),
            ("form.data.one.member.age", json!(["4"])),
            ("form.data.many.member.age", json!(["5", "6"])),
            ("form.data.one.member", json!([{"age": "4"}])),
        ];
        for (path, expected) in cases {
            assert_eq!(Value::from(reached(path, &root)), expected, "{path}");
        }
    }

    #[test]
    fn empty_segments_are_refused() {
        for text in ["", "a..b", ".a", "a."] {
            assert!(Path::parse(text).is_err(), "{text:?}");
        }
    }
}
