//! A JSON document as a template context, parsed only as deep as a template reads it.
//!
//! Destinations are rendered for every delivery, and most read two or three top-level fields
//! of an envelope whose bulk is `form.data`. Parsing the whole envelope, and copying it into
//! minijinja's values, for each render cost more than the write it served; this parses one
//! level at a time, on first access, and shares the document's text instead of copying it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One JSON object or array inside a shared document: `text[start..end]`.
#[derive(Debug)]
pub struct LazyJson {
    text: Arc<str>,
    start: usize,
    end: usize,
    parsed: OnceLock<Parsed>,
}

#[derive(Debug)]
enum Parsed {
    /// Fields by name, and the names in document order for iteration.
    Object(BTreeMap<String, Value>, Vec<Value>),
    Array(Vec<Value>),
    /// Not valid JSON after all; reads as undefined.
    Invalid,
}

impl LazyJson {
    /// The template value of a whole JSON document.
    pub fn document(text: Arc<str>) -> Value {
        let end = text.len();
        LazyJson::value(text, 0, end)
    }

    fn value(text: Arc<str>, start: usize, end: usize) -> Value {
        let trimmed = text[start..end].trim_start();
        match trimmed.as_bytes().first() {
            Some(b'{' | b'[') => Value::from_object(LazyJson {
                text,
                start,
                end,
                parsed: OnceLock::new(),
            }),
            _ => scalar(trimmed),
        }
    }

    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| self.parse())
    }

    fn parse(&self) -> Parsed {
        let slice = &self.text[self.start..self.end];
        let child = |raw: &RawValue| {
            let offset = raw.get().as_ptr() as usize - self.text.as_ptr() as usize;
            LazyJson::value(Arc::clone(&self.text), offset, offset + raw.get().len())
        };
        if let Ok(Members(members)) = serde_json::from_str::<Members<'_>>(slice) {
            let names = members
                .iter()
                .map(|(name, _)| Value::from(name.as_str()))
                .collect();
            let fields = members
                .into_iter()
                .map(|(name, raw)| (name, child(raw)))
                .collect();
            return Parsed::Object(fields, names);
        }
        match serde_json::from_str::<Vec<&RawValue>>(slice) {
            Ok(items) => Parsed::Array(items.into_iter().map(child).collect()),
            Err(_) => Parsed::Invalid,
        }
    }
}

fn scalar(text: &str) -> Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Null) | Err(_) => Value::from(()),
        Ok(value) => Value::from_serialize(&value),
    }
}

impl Object for LazyJson {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.parsed() {
            Parsed::Array(_) => ObjectRepr::Seq,
            Parsed::Object(..) | Parsed::Invalid => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.parsed() {
            Parsed::Object(fields, _) => key.as_str().and_then(|key| fields.get(key)).cloned(),
            Parsed::Array(items) => key.as_usize().and_then(|index| items.get(index)).cloned(),
            Parsed::Invalid => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.parsed() {
            Parsed::Object(_, names) => Enumerator::Values(names.clone()),
            Parsed::Array(items) => Enumerator::Seq(items.len()),
            Parsed::Invalid => Enumerator::Empty,
        }
    }
}

/// A JSON object's members in order, each value left as borrowed, unparsed text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}
