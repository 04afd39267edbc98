//! The envelope: the one documented shape every accepted payload takes (docs/envelope.md,
//! schema/envelope.schema.json).
//!
//! Rules, sinks and users rely on these field names; changing one is a breaking change of the
//! contract, so the JSON shape is pinned by tests. The envelope never holds the raw body: the
//! spool keeps that beside it, byte for byte, so a sink can forward exactly what HQ sent.

mod facts;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use facts::EnvelopeFacts;

/// What kind of CommCare payload an envelope carries (commcare-forwarding.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Form,
    Case,
    FormStub,
    App,
    User,
    Location,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Form,
        Kind::Case,
        Kind::FormStub,
        Kind::App,
        Kind::User,
        Kind::Location,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Form => "form",
            Kind::Case => "case",
            Kind::FormStub => "form_stub",
            Kind::App => "app",
            Kind::User => "user",
            Kind::Location => "location",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The syntax the body was written in, as found by reading it (not from the Content-Type label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Xml,
    Json,
    Text,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Xml => "xml",
            Format::Json => "json",
            Format::Text => "text",
        }
    }
}

/// One accepted payload, as rules see it and sinks receive it by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Assigned by ccrelay: a UUIDv7, unique and sortable by arrival time.
    pub id: String,
    /// When ccrelay received the request, RFC 3339 in UTC with microseconds.
    pub received_at: String,
    /// The `{source}` path segment of `/ingest/{source}`.
    pub source: String,
    /// CommCare project space: from the payload (JSON bodies), else from the source's config.
    pub domain: Option<String>,
    pub kind: Kind,
    pub format: Format,
    /// HTTP method HQ used: `POST`, `PUT` or `DELETE` (same body for all three).
    pub method: String,
    /// The Content-Type header as sent, if any.
    pub content_type: Option<String>,
    /// Identity and version of the payload (commcare-forwarding.md §6.4); equal keys mean a resend.
    pub dedupe_key: String,
    /// Query string parameters (HQ appends `app_id` to form forwards); the last value wins.
    pub query: Map<String, Value>,
    /// HQ's payload headers that carry meaning: `received-on`, `server-modified-on`.
    pub headers: Map<String, Value>,
    /// Body size in bytes and its SHA-256 (hex), so consumers can match it to the raw body.
    pub body_bytes: u64,
    pub body_sha256: String,
    /// The W3C trace context of the ingest: the sender's trace continued, or a new one.
    /// Sinks pass it on as `traceparent`, so a consumer can continue the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Kind `form`: the form and its metadata. Kind `form_stub`: only `id` and `received_on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<Form>,
    /// Every case operation in the payload: each case block of a form, or the one case of a
    /// case payload. Always present, empty when there is none, so `cases.*` paths never fail.
    #[serde(default)]
    pub cases: Vec<CaseOperation>,
    /// Kind `form`: ledger blocks (`balance`, `transfer`), each in HQ's JSON conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ledgers: Vec<Value>,
    /// Kind `form_stub`: the cases the form touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_ids: Option<Vec<String>>,
    /// Kind `app`: the application or build id HQ forwards on an app change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    /// Kind `user`: the user object as HQ sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
    /// Kind `location`: the location object as HQ sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Value>,
}

impl Envelope {
    /// The envelope as a JSON value, the form in rules and templates see.
    ///
    /// Equal to `serde_json::to_value(&self)`, but moves `form.data`, the bulk of a form,
    /// instead of copying it: this runs once per request on the ingress path.
    pub fn into_value(mut self) -> Value {
        let data = self
            .form
            .as_mut()
            .map(|form| std::mem::take(&mut form.data));
        let mut value = serde_json::to_value(&self).expect("envelopes always serialise");
        if let Some(data) = data.filter(|data| !data.is_null()) {
            value["form"]["data"] = data;
        }
        value
    }
}

/// A form (kind `form`), or the little a form stub says of one (kind `form_stub`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Form {
    /// `meta/instanceID` (legacy `uid`); null when the form has none.
    pub id: Option<String>,
    /// The form type: the root element's default namespace.
    pub xmlns: Option<String>,
    /// The root's `name` attribute (the form's display name), when present.
    pub name: Option<String>,
    pub app_id: Option<String>,
    pub build_id: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub device_id: Option<String>,
    pub time_start: Option<String>,
    pub time_end: Option<String>,
    /// From the payload, else the `received-on` header.
    pub received_on: Option<String>,
    pub edited_on: Option<String>,
    /// The form instance in HQ's JSON conventions (`#type`, `@attr`, `#text`, repeats as
    /// arrays, prefixes dropped): the same for one form sent as XML or as JSON.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// One case operation: a case block in a form, or a whole case payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseOperation {
    pub case_id: String,
    pub case_type: Option<String>,
    pub case_name: Option<String>,
    pub owner_id: Option<String>,
    pub user_id: Option<String>,
    pub date_modified: Option<String>,
    /// Which of `create`, `update`, `index`, `attachment`, `close` the block holds, in that order.
    pub actions: Vec<CaseAction>,
    /// Properties set by the operation (custom ones, plus `case_name`, `case_type`,
    /// `owner_id`, `external_id`, `date_opened` where given). Values as sent: strings mostly.
    pub properties: Map<String, Value>,
    /// `{identifier: {case_type, case_id, relationship}}`.
    pub indices: Map<String, Value>,
    /// Kind `case` only: the server's version of the case (JSON `server_date_modified`, else
    /// the `server-modified-on` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_modified_on: Option<String>,
    /// Kind `case` only: whether the case is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
    /// `1` for CaseXML 1.0 blocks, `2` for CaseXML 2.0 and JSON.
    pub version: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseAction {
    Create,
    Update,
    Index,
    Attachment,
    Close,
}

/// Kind `app`: HQ's AppStructureRepeater posts a bare application or build id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
}

/// A small form envelope with every fact set, for tests across the crate.
#[cfg(test)]
pub(crate) fn example() -> Envelope {
    Envelope {
        id: "0192".into(),
        received_at: "2024-05-02T06:14:09.482113Z".into(),
        source: "hq".into(),
        domain: Some("demo".into()),
        kind: Kind::Form,
        format: Format::Xml,
        method: "POST".into(),
        content_type: Some("text/xml".into()),
        dedupe_key: "form:f1:2024".into(),
        query: Map::new(),
        headers: Map::new(),
        body_bytes: 10,
        body_sha256: "ab".into(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        form: Some(Form {
            id: Some("f1".into()),
            data: serde_json::json!({"#type": "data", "answer": "yes"}),
            ..Form::default()
        }),
        cases: Vec::new(),
        ledgers: Vec::new(),
        case_ids: None,
        app: None,
        user: None,
        location: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_value_is_the_serialised_envelope() {
        let mut envelope = example();
        assert_eq!(
            envelope.clone().into_value(),
            serde_json::to_value(&envelope).unwrap()
        );
        envelope.form.as_mut().unwrap().data = Value::Null;
        assert_eq!(
            envelope.clone().into_value(),
            serde_json::to_value(&envelope).unwrap()
        );
    }
}
