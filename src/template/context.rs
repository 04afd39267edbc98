//! A JSON document as a template context, read only as far as a template reads it.
//!
//! Destinations are rendered for every delivery, and most read two or three top-level fields
//! of an envelope whose bulk is `form.data`, written after those fields. Parsing the whole
//! envelope for each render cost more than the write it served. Here an object or array is
//! scanned one member at a time, on demand, up to the member asked for; members are shared
//! slices of the document's text, parsed in turn only when read.

use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use serde_json::value::RawValue;

/// One JSON object or array inside a shared document: `text[start..end]`.
#[derive(Debug)]
pub struct LazyJson {
    text: Arc<str>,
    repr: ObjectRepr,
    scan: Mutex<Scan>,
}

/// How far an object or array has been read.
#[derive(Debug)]
struct Scan {
    /// Members read so far, in document order (`None` as the name of array items).
    members: Vec<(Option<String>, Value)>,
    /// Where the next member starts (just after `{`, `[` or a `,`), or `None` once the closing
    /// bracket is read or the text turned out not to be valid JSON (the rest reads as absent).
    next: Option<usize>,
}

impl LazyJson {
    /// The template value of a whole JSON document.
    pub fn document(text: Arc<str>) -> Value {
        let end = text.len();
        LazyJson::value(text, 0, end)
    }

    fn value(text: Arc<str>, start: usize, end: usize) -> Value {
        let leading = text[start..end].len() - text[start..end].trim_start().len();
        let opening = start + leading;
        let repr = match text.as_bytes().get(opening) {
            Some(b'{') => ObjectRepr::Map,
            Some(b'[') => ObjectRepr::Seq,
            _ => return scalar(&text[opening..end]),
        };
        Value::from_object(LazyJson {
            text,
            repr,
            scan: Mutex::new(Scan {
                members: Vec::new(),
                next: Some(opening + 1),
            }),
        })
    }

    /// Reads members until `stop` says the last one read is the one wanted, or to the end.
    /// Returns the index of that member.
    fn scan_until(
        &self,
        scan: &mut Scan,
        stop: impl Fn(usize, Option<&str>) -> bool,
    ) -> Option<usize> {
        while let Some(position) = scan.next {
            match self.read_member(position) {
                Some((name, value, next)) => {
                    scan.members.push((name, value));
                    scan.next = next;
                    let index = scan.members.len() - 1;
                    if stop(index, scan.members[index].0.as_deref()) {
                        return Some(index);
                    }
                }
                None => scan.next = None,
            }
        }
        None
    }

    /// Reads the member at `position`: its name (objects), its value, and where the next one
    /// starts (`None` after the last). `None` at the closing bracket or on invalid JSON.
    fn read_member(&self, position: usize) -> Option<(Option<String>, Value, Option<usize>)> {
        let text = &*self.text;
        let mut at = skip_whitespace(text, position);
        let closing = if self.repr == ObjectRepr::Map {
            b'}'
        } else {
            b']'
        };
        if text.as_bytes().get(at) == Some(&closing) {
            return None;
        }
        let name = if self.repr == ObjectRepr::Map {
            let (raw, after) = raw_value_at(text, at)?;
            let name: String = serde_json::from_str(raw.get()).ok()?;
            at = skip_whitespace(text, after);
            if text.as_bytes().get(at) != Some(&b':') {
                return None;
            }
            Some(name)
        } else {
            None
        };
        if name.is_some() {
            at += 1;
        }
        let (raw, after) = raw_value_at(text, skip_whitespace(text, at))?;
        let value_start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let value = LazyJson::value(Arc::clone(&self.text), value_start, after);
        let separator = skip_whitespace(text, after);
        let next = match text.as_bytes().get(separator) {
            Some(b',') => Some(separator + 1),
            Some(&byte) if byte == closing => None,
            _ => return None,
        };
        Some((name, value, next))
    }

    fn scan(&self) -> std::sync::MutexGuard<'_, Scan> {
        // A panic while scanning leaves a consistent prefix; reading on is still correct.
        self.scan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The one JSON value starting at `at`, and the byte just after it.
fn raw_value_at(text: &str, at: usize) -> Option<(&RawValue, usize)> {
    let mut values = serde_json::Deserializer::from_str(text.get(at..)?).into_iter::<&RawValue>();
    let raw = values.next()?.ok()?;
    Some((raw, at + values.byte_offset()))
}

fn skip_whitespace(text: &str, at: usize) -> usize {
    let rest = text.as_bytes().get(at..).unwrap_or_default();
    at + rest
        .iter()
        .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

fn scalar(text: &str) -> Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Null) | Err(_) => Value::from(()),
        Ok(value) => Value::from_serialize(&value),
    }
}

impl Object for LazyJson {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        self.repr
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let mut scan = self.scan();
        let found = match self.repr {
            ObjectRepr::Seq => {
                let wanted = key.as_usize()?;
                if wanted < scan.members.len() {
                    Some(wanted)
                } else {
                    self.scan_until(&mut scan, |index, _| index == wanted)
                }
            }
            _ => {
                let wanted = key.as_str()?;
                let known = scan
                    .members
                    .iter()
                    .position(|(name, _)| name.as_deref() == Some(wanted));
                known.or_else(|| self.scan_until(&mut scan, |_, name| name == Some(wanted)))
            }
        };
        found.map(|index| scan.members[index].1.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut scan = self.scan();
        self.scan_until(&mut scan, |_, _| false);
        match self.repr {
            ObjectRepr::Seq => Enumerator::Seq(scan.members.len()),
            _ => Enumerator::Values(
                scan.members
                    .iter()
                    .filter_map(|(name, _)| name.as_deref().map(Value::from))
                    .collect(),
            ),
        }
    }
}
