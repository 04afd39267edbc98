//! Shapes (`send:`): what a rule's sinks receive: the envelope, the raw body, or a projection
//! of the envelope (docs/rules.md, "Shapes").
//!
//! A [`Shape`] travels with each route into the spool, so it is a serialised, versioned type:
//! records written before shapes existed read as [`Shape::Envelope`]. Applying a shape is pure
//! and happens at delivery time, on the envelope text the spool kept.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::path::Path;
use crate::yaml::{self, Errors, Node, Resolved};

pub const JSON_CONTENT_TYPE: &str = "application/json";
pub const DEFAULT_RAW_CONTENT_TYPE: &str = "application/octet-stream";

/// What a sink receives for one route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// The envelope JSON as spooled.
    #[default]
    Envelope,
    /// The request body exactly as HQ sent it, with its content type.
    Raw,
    /// The envelope with paths kept, dropped, renamed and set.
    Project(Projection),
}

/// A projection of the envelope, applied in field order: `keep`, then `drop`, `rename`, `set`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    /// When present, only these paths (and the objects and arrays around them) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Vec<String>>,
    /// Paths removed, in every element of arrays they pass through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    /// `(from, to)` pairs, applied in order; both paths go through objects only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rename: Vec<(String, String)>,
    /// `(path, value)` pairs, applied in order; missing objects on the way are created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, Value)>,
}

/// The bytes a sink sends, and how to label them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Bytes,
    pub content_type: String,
}

impl Shape {
    pub fn is_envelope(&self) -> bool {
        matches!(self, Shape::Envelope)
    }

    /// The payload for one delivery. `envelope_json` is the envelope as spooled, `body` and
    /// `content_type` the request as HQ sent it.
    ///
    /// A projection of text that is not a JSON object (ccrelay never spools one) passes the
    /// text through unchanged rather than lose it.
    pub fn apply(&self, envelope_json: &str, body: &[u8], content_type: Option<&str>) -> Payload {
        match self {
            Shape::Envelope => Payload {
                bytes: Bytes::copy_from_slice(envelope_json.as_bytes()),
                content_type: JSON_CONTENT_TYPE.to_owned(),
            },
            Shape::Raw => Payload {
                bytes: Bytes::copy_from_slice(body),
                content_type: content_type
                    .filter(|content_type| !content_type.trim().is_empty())
                    .unwrap_or(DEFAULT_RAW_CONTENT_TYPE)
                    .to_owned(),
            },
            Shape::Project(projection) => {
                let bytes = match serde_json::from_str::<Value>(envelope_json) {
                    Ok(envelope @ Value::Object(_)) => {
                        let projected = projection.project(&envelope);
                        Bytes::from(serde_json::to_vec(&projected).expect("JSON values serialise"))
                    }
                    _ => Bytes::copy_from_slice(envelope_json.as_bytes()),
                };
                Payload {
                    bytes,
                    content_type: JSON_CONTENT_TYPE.to_owned(),
                }
            }
        }
    }
}

impl Projection {
    /// The projected envelope.
    pub fn project(&self, envelope: &Value) -> Value {
        let mut out = match &self.keep {
            None => envelope.clone(),
            Some(paths) => {
                let mut kept = Value::Object(Map::new());
                for path in paths {
                    keep_into(envelope, &mut kept, &split(path));
                }
                kept
            }
        };
        for path in &self.drop {
            drop_path(&mut out, &split(path));
        }
        for (from, to) in &self.rename {
            if let Some(value) = take_path(&mut out, &split(from)) {
                set_path(&mut out, &split(to), value);
            }
        }
        for (path, value) in &self.set {
            set_path(&mut out, &split(path), value.clone());
        }
        out
    }
}

fn split(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

/// Copies what `segments` reaches in `source` into `target`, with the objects and arrays on
/// the way; returns whether anything was copied. An object is created only around something
/// kept; an array keeps its length, and its elements where nothing was kept become `{}`.
fn keep_into(source: &Value, target: &mut Value, segments: &[&str]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        *target = source.clone();
        return true;
    };
    match source {
        Value::Object(map) => {
            let Some(child) = map.get(*first) else {
                return false;
            };
            let existing = target
                .as_object_mut()
                .and_then(|kept| kept.get_mut(*first))
                .map(std::mem::take);
            let had_existing = existing.is_some();
            let mut slot = existing.unwrap_or(Value::Null);
            let copied = keep_into(child, &mut slot, rest);
            if copied || had_existing {
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                let kept = target.as_object_mut().expect("made an object above");
                kept.insert(first.to_string(), slot);
            }
            copied
        }
        Value::Array(items) => {
            let mut slots = match std::mem::take(target) {
                Value::Array(slots) if slots.len() == items.len() => slots,
                _ => vec![Value::Null; items.len()],
            };
            let mut copied = false;
            for (item, slot) in items.iter().zip(slots.iter_mut()) {
                copied |= keep_into(item, slot, segments);
            }
            if copied || slots.iter().any(|slot| !slot.is_null()) {
                for slot in slots.iter_mut().filter(|slot| slot.is_null()) {
                    *slot = Value::Object(Map::new());
                }
                *target = Value::Array(slots);
            }
            copied
        }
        _ => false,
    }
}

fn drop_path(value: &mut Value, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    match value {
        Value::Object(map) if rest.is_empty() => {
            map.shift_remove(*first);
        }
        Value::Object(map) => {
            if let Some(child) = map.get_mut(*first) {
                drop_path(child, rest);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| drop_path(item, segments)),
        _ => {}
    }
}

/// Removes and returns the value at `segments`, going through objects only.
fn take_path(value: &mut Value, segments: &[&str]) -> Option<Value> {
    let (last, parents) = segments.split_last()?;
    let mut current = value;
    for segment in parents {
        current = current.as_object_mut()?.get_mut(*segment)?;
    }
    current.as_object_mut()?.shift_remove(*last)
}

/// Sets the value at `segments`, creating missing objects; a non-object on the way (an array
/// or a scalar) leaves everything as it was.
fn set_path(value: &mut Value, segments: &[&str], new: Value) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut current = value;
    for segment in parents {
        let Some(map) = current.as_object_mut() else {
            return;
        };
        current = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = current.as_object_mut() {
        map.insert(last.to_string(), new);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

const SHAPE_NAMES: [&str; 2] = ["envelope", "raw"];

/// Reads `send:`: `envelope`, `raw`, or a map with `keep`, `drop`, `rename`, `set`.
pub fn read_shape(node: &Node, errors: &mut Errors) -> Option<Shape> {
    if let yaml::Value::Scalar(_) = &node.value {
        let raw = node.as_choice("shape", &[("envelope", false), ("raw", true)], errors)?;
        return Some(if raw { Shape::Raw } else { Shape::Envelope });
    }
    let mut map = node.as_map(errors)?;
    let keep = map.optional("keep").map(|node| read_paths(node, errors));
    let drop = map.optional("drop").map(|node| read_paths(node, errors));
    let rename = map
        .optional("rename")
        .map(|node| read_renames(node, errors));
    let set = map.optional("set").map(|node| read_sets(node, errors));
    let empty = map.entries().is_empty();
    map.finish(errors);
    if empty {
        errors.push(node.error(format!(
            "expected `{}` or a map with at least one of: keep, drop, rename, set",
            SHAPE_NAMES.join("` or `")
        )));
        return None;
    }
    Some(Shape::Project(Projection {
        keep: match keep {
            Some(paths) => Some(paths?),
            None => None,
        },
        drop: drop.unwrap_or(Some(Vec::new()))?,
        rename: rename.unwrap_or(Some(Vec::new()))?,
        set: set.unwrap_or(Some(Vec::new()))?,
    }))
}

fn read_path(node: &Node, errors: &mut Errors) -> Option<String> {
    node.parse_str(errors, |text| {
        Path::parse(text).map(|path| path.as_str().to_owned())
    })
}

fn read_paths(node: &Node, errors: &mut Errors) -> Option<Vec<String>> {
    let items = node.as_list(errors)?;
    let paths: Vec<Option<String>> = items.iter().map(|item| read_path(item, errors)).collect();
    paths.into_iter().collect()
}

fn check_key_path(node: &Node, entry: &yaml::Entry, errors: &mut Errors) -> Option<String> {
    match Path::parse(&entry.key) {
        Ok(path) => Some(path.as_str().to_owned()),
        Err(message) => {
            errors.push(yaml::Error {
                span: entry.key_span,
                path: yaml::join_key(&node.path, &entry.key),
                message,
            });
            None
        }
    }
}

fn read_renames(node: &Node, errors: &mut Errors) -> Option<Vec<(String, String)>> {
    let map = node.as_map(errors)?;
    let mut renames = Vec::new();
    let mut complete = true;
    for entry in map.entries() {
        let from = check_key_path(node, entry, errors);
        let to = read_path(&entry.value, errors);
        match (from, to) {
            (Some(from), Some(to)) => renames.push((from, to)),
            _ => complete = false,
        }
    }
    map.abandon();
    complete.then_some(renames)
}

fn read_sets(node: &Node, errors: &mut Errors) -> Option<Vec<(String, Value)>> {
    let map = node.as_map(errors)?;
    let mut sets = Vec::new();
    let mut complete = true;
    for entry in map.entries() {
        let path = check_key_path(node, entry, errors);
        let value = to_json(&entry.value, errors);
        match (path, value) {
            (Some(path), Some(value)) => sets.push((path, value)),
            _ => complete = false,
        }
    }
    map.abandon();
    complete.then_some(sets)
}

/// A YAML value as JSON, typed by the core schema.
pub fn to_json(node: &Node, errors: &mut Errors) -> Option<Value> {
    match &node.value {
        yaml::Value::Scalar(scalar) => match scalar.resolve() {
            Resolved::Null => Some(Value::Null),
            Resolved::Bool(flag) => Some(Value::Bool(flag)),
            Resolved::Int(number) => Some(Value::from(number)),
            Resolved::IntOutOfRange => node.as_i64(errors).map(Value::from),
            Resolved::Float(number) => match serde_json::Number::from_f64(number) {
                Some(number) => Some(Value::Number(number)),
                None => {
                    errors.push(node.error(format!("{} cannot be written in JSON", scalar.text)));
                    None
                }
            },
            Resolved::Str(text) => Some(Value::String(text.to_owned())),
        },
        yaml::Value::List(items) => {
            let values: Vec<Option<Value>> =
                items.iter().map(|item| to_json(item, errors)).collect();
            values
                .into_iter()
                .collect::<Option<Vec<Value>>>()
                .map(Value::Array)
        }
        yaml::Value::Map(entries) => {
            let mut object = Map::new();
            let mut complete = true;
            for entry in entries {
                match to_json(&entry.value, errors) {
                    Some(value) => {
                        object.insert(entry.key.clone(), value);
                    }
                    None => complete = false,
                }
            }
            complete.then_some(Value::Object(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn old_routes_without_a_shape_read_as_the_envelope() {
        let shape: Shape = serde_json::from_value(json!("raw")).unwrap();
        assert_eq!(shape, Shape::Raw);
        let projection = Shape::Project(Projection {
            keep: Some(vec!["id".into()]),
            set: vec![("x.y".into(), json!(1))],
            ..Projection::default()
        });
        let text = serde_json::to_string(&projection).unwrap();
        assert_eq!(text, r#"{"project":{"keep":["id"],"set":[["x.y",1]]}}"#);
        assert_eq!(serde_json::from_str::<Shape>(&text).unwrap(), projection);
    }
}
