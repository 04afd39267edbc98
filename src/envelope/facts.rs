//! The envelope fields read for every spooled record without its payload: ids, message
//! metadata, the content type and trace context, for dispatch and the network sinks, the
//! dedupe index rebuilt at start, and replay's time range.
//!
//! They are read from the spooled envelope text without building its tree, and only from its
//! head: ccrelay writes every one of them before the payload fields (`form`, `cases`, ...),
//! which hold the bulk (the `Envelope` struct's field order, pinned by a test below), so
//! reading stops at the first payload field.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Fields are empty for text that is not an envelope (ccrelay never spools one), so a header
/// is missing rather than a delivery lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeFacts {
    pub id: String,
    pub kind: String,
    pub domain: Option<String>,
    pub source: String,
    pub dedupe_key: String,
    pub received_at: String,
    /// The Content-Type HQ sent, which a `send: raw` route passes on.
    pub content_type: Option<String>,
    /// W3C trace context, passed on so the consumer's work joins the same trace.
    pub traceparent: Option<String>,
}

/// The envelope's payload fields, all written after the facts.
const PAYLOAD_FIELDS: [&str; 7] = [
    "form", "cases", "ledgers", "case_ids", "app", "user", "location",
];

impl EnvelopeFacts {
    /// The facts of a spooled envelope.
    pub fn read(envelope: &str) -> EnvelopeFacts {
        let mut facts = EnvelopeFacts::default();
        let mut deserializer = serde_json::Deserializer::from_str(envelope);
        // Stopping at the payload leaves the object unfinished, which serde_json reports as an
        // error once the facts are already read: it is expected, and ignored.
        let _ = FactsReader(&mut facts).deserialize(&mut deserializer);
        facts
    }

    /// The standard metadata headers every network sink sends, in this order. `domain` and
    /// `traceparent` are left out when the envelope has none.
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut headers = vec![("kind", self.kind.as_str())];
        if let Some(domain) = &self.domain {
            headers.push(("domain", domain.as_str()));
        }
        headers.push(("source", self.source.as_str()));
        headers.push(("dedupe_key", self.dedupe_key.as_str()));
        if let Some(traceparent) = &self.traceparent {
            headers.push(("traceparent", traceparent.as_str()));
        }
        headers
    }

    /// `received_at` as Unix seconds, or now when it does not parse.
    pub fn received_at_seconds(&self) -> i64 {
        self.received_at
            .parse::<jiff::Timestamp>()
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .as_second()
    }
}

struct FactsReader<'a>(&'a mut EnvelopeFacts);

impl<'de> DeserializeSeed<'de> for FactsReader<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FactsReader<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let facts = self.0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "id" => facts.id = map.next_value::<Option<String>>()?.unwrap_or_default(),
                "kind" => facts.kind = map.next_value::<Option<String>>()?.unwrap_or_default(),
                "domain" => facts.domain = map.next_value()?,
                "source" => facts.source = map.next_value::<Option<String>>()?.unwrap_or_default(),
                "dedupe_key" => {
                    facts.dedupe_key = map.next_value::<Option<String>>()?.unwrap_or_default();
                }
                "received_at" => {
                    facts.received_at = map.next_value::<Option<String>>()?.unwrap_or_default();
                }
                "content_type" => facts.content_type = map.next_value()?,
                "traceparent" => facts.traceparent = map.next_value()?,
                payload if PAYLOAD_FIELDS.contains(&payload) => return Ok(()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::example;

    #[test]
    fn facts_are_read_from_a_spooled_envelope() {
        let text = serde_json::to_string(&example().into_value()).unwrap();
        assert_eq!(
            EnvelopeFacts::read(&text),
            EnvelopeFacts {
                id: "0192".into(),
                kind: "form".into(),
                domain: Some("demo".into()),
                source: "hq".into(),
                dedupe_key: "form:f1:2024".into(),
                received_at: "2024-05-02T06:14:09.482113Z".into(),
                content_type: Some("text/xml".into()),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            }
        );
    }

    #[test]
    fn every_fact_is_written_before_the_payload_fields() {
        let value = example().into_value();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let first_payload = keys
            .iter()
            .position(|key| PAYLOAD_FIELDS.contains(key))
            .expect("the envelope has payload fields");
        for fact in [
            "id",
            "kind",
            "domain",
            "source",
            "dedupe_key",
            "received_at",
            "content_type",
            "traceparent",
        ] {
            let at = keys.iter().position(|key| *key == fact).expect(fact);
            assert!(
                at < first_payload,
                "{fact} comes after the payload in {keys:?}"
            );
        }
    }

    #[test]
    fn the_payload_is_not_read() {
        let text = r#"{"id": "a", "kind": "case", "cases": [not json"#;
        let facts = EnvelopeFacts::read(text);
        assert_eq!((facts.id.as_str(), facts.kind.as_str()), ("a", "case"));
    }

    #[test]
    fn text_that_is_not_an_envelope_gives_empty_facts() {
        assert_eq!(EnvelopeFacts::read("[1, 2]"), EnvelopeFacts::default());
        assert_eq!(EnvelopeFacts::read("not json"), EnvelopeFacts::default());
        assert_eq!(EnvelopeFacts::read(r#"{"id": 7}"#).id, "");
    }
}
