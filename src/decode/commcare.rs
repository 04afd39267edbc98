//! CommCare payload kinds: what a body is (commcare-forwarding.md §3), whether it is what the
//! source expects, and its dedupe key (§6.4).
//!
//! Classification by content, in this order:
//!
//! - XML: root `case` in the CaseXML 2.0 namespace → case; root `case` without namespace
//!   holding a `case_id` child → case (CaseXML 1.0); any other root → form.
//! - JSON object: `id`+`form` → form; `case_id`+`properties` → case; `form_id`+`case_ids` →
//!   form stub; `username`+(`id`|`user_id`) → user; `location_id`+(`location_type`|
//!   `location_type_name`|`site_code`) → location. The version keys (`received_on`,
//!   `server_date_modified`) are not required: headers stand in for them.
//! - Text: 32 hexadecimal digits → app; with the source expecting `app`, any id-like token.
//!
//! Dedupe keys: `form:<id>:<edited_on or received_on>` for form JSON,
//! `form:<id>:<received_on>:<first 16 hex digits of the body's SHA-256>` for form XML (an edit
//! may keep `received-on`), `form_stub:<id>:<received_on>` for stubs (their own prefix, so a
//! stub never shadows the full form of the same id), `case:<case_id>:<server_modified_on>`
//! for cases. Anything else, and any of these lacking its id or version: `sha256:<hex>`.

use serde_json::{Map, Value};

use super::case::{self, CASE_V2_NAMESPACE, CaseVersion};
use super::form::{self, BlockCollector, Blocks};
use super::{DecodeError, Decoded, Result, json, xml};
use crate::envelope::{App, Format, Kind};

/// What the façade passes down besides the body text.
pub(crate) struct Context<'a> {
    pub received_on: Option<&'a str>,
    pub server_modified_on: Option<&'a str>,
    pub expected_kind: Option<Kind>,
    pub max_depth: usize,
    pub body_sha256: String,
}

/// `"a case"`, `"an app"`, `"a form stub"`: for messages.
pub(crate) fn kind_with_article(kind: Kind) -> &'static str {
    match kind {
        Kind::Form => "a form",
        Kind::Case => "a case",
        Kind::FormStub => "a form stub",
        Kind::App => "an app",
        Kind::User => "a user",
        Kind::Location => "a location",
    }
}

/// A scalar as text: strings as they are, numbers and booleans printed, the `#text` of an
/// object (an element with attributes), the first of an array. Null and absent read as `None`.
pub(crate) fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Object(object) => object
            .get("#text")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Value::Array(items) => text_of(items.first()),
        Value::Null => None,
    }
}

/// `text_of`, with blank text read as absent.
pub(crate) fn non_blank(value: Option<&Value>) -> Option<String> {
    text_of(value).filter(|text| !text.trim().is_empty())
}

pub(crate) fn decode_xml(text: &str, context: Context<'_>) -> Result<Decoded> {
    let mut collector = BlockCollector::default();
    let document = xml::to_json(text, context.max_depth, &mut collector)?;
    let is_case_root = document.root_name == "case";
    let version = match document.root_namespace.as_deref() {
        Some(CASE_V2_NAMESPACE) if is_case_root => Some(CaseVersion::V2),
        None if is_case_root && document.data.contains_key("case_id") => Some(CaseVersion::V1),
        _ => None,
    };
    match version {
        Some(version) => {
            expect(&context, Kind::Case, "case XML")?;
            let root = Value::Object(document.data);
            let operation = case::from_case_xml(&root, version, context.server_modified_on)?;
            let dedupe_key = case_key(&operation.case_id, operation.server_modified_on.as_deref())
                .unwrap_or_else(|| body_key(&context));
            Ok(Decoded {
                cases: vec![operation],
                ..decoded(Kind::Case, Format::Xml, dedupe_key, context)
            })
        }
        None => {
            expect(&context, Kind::Form, "form XML")?;
            let form = form::from_xml(document.data, context.received_on);
            let dedupe_key = match (&form.id, &form.received_on) {
                (Some(id), Some(received_on)) => {
                    format!("form:{id}:{received_on}:{}", &context.body_sha256[..16])
                }
                _ => body_key(&context),
            };
            let Blocks { cases, ledgers } = collector.blocks;
            Ok(Decoded {
                form: Some(form),
                cases,
                ledgers,
                ..decoded(Kind::Form, Format::Xml, dedupe_key, context)
            })
        }
    }
}

pub(crate) fn decode_json(text: &str, context: Context<'_>) -> Result<Decoded> {
    let payload = json::parse_object(text, context.max_depth)?;
    let detected = classify_json(&payload);
    let kind = match (context.expected_kind, detected) {
        (Some(expected), Some(found)) if expected != found => {
            return Err(DecodeError::KindMismatch {
                expected,
                found: json_label(found),
            });
        }
        (_, Some(found)) => found,
        (Some(expected), None) => {
            return Err(DecodeError::MissingKeys {
                expected,
                missing: missing_keys(&payload, expected),
            });
        }
        (None, None) => {
            return Err(DecodeError::UnknownJsonShape {
                found: key_list(&payload),
            });
        }
    };
    let domain = text_of(payload.get("domain"));
    let decoded = match kind {
        Kind::Form => {
            let (form, blocks) = form::from_json(payload, context.received_on)?;
            let version = form.edited_on.as_ref().or(form.received_on.as_ref());
            let dedupe_key = match (&form.id, version) {
                (Some(id), Some(version)) => format!("form:{id}:{version}"),
                _ => body_key(&context),
            };
            Decoded {
                form: Some(form),
                cases: blocks.cases,
                ledgers: blocks.ledgers,
                ..decoded(kind, Format::Json, dedupe_key, context)
            }
        }
        Kind::Case => {
            let operation = case::from_case_json(&payload, context.server_modified_on)?;
            let dedupe_key = case_key(&operation.case_id, operation.server_modified_on.as_deref())
                .unwrap_or_else(|| body_key(&context));
            Decoded {
                cases: vec![operation],
                ..decoded(kind, Format::Json, dedupe_key, context)
            }
        }
        Kind::FormStub => {
            let (form, case_ids) = form::from_stub(&payload, context.received_on)?;
            let dedupe_key = match (&form.id, &form.received_on) {
                (Some(id), Some(received_on)) => format!("form_stub:{id}:{received_on}"),
                _ => body_key(&context),
            };
            Decoded {
                form: Some(form),
                case_ids: Some(case_ids),
                ..decoded(kind, Format::Json, dedupe_key, context)
            }
        }
        Kind::User => {
            let dedupe_key = body_key(&context);
            Decoded {
                user: Some(Value::Object(payload)),
                ..decoded(kind, Format::Json, dedupe_key, context)
            }
        }
        Kind::Location => {
            let dedupe_key = body_key(&context);
            Decoded {
                location: Some(Value::Object(payload)),
                ..decoded(kind, Format::Json, dedupe_key, context)
            }
        }
        Kind::App => unreachable!("classify_json never finds an app in JSON"),
    };
    Ok(Decoded { domain, ..decoded })
}

pub(crate) fn decode_text(text: &str, context: Context<'_>) -> Result<Decoded> {
    let token = text.trim();
    let is_app_id = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
    match context.expected_kind {
        None | Some(Kind::App) if is_app_id => {}
        Some(Kind::App) => {
            let id_like = (1..=128).contains(&token.len())
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !id_like {
                return Err(DecodeError::NotAnAppId);
            }
        }
        None => return Err(DecodeError::UnknownText),
        Some(expected) => {
            return Err(DecodeError::KindMismatch {
                expected,
                found: if is_app_id {
                    "an app id"
                } else {
                    "text that is neither XML nor JSON"
                },
            });
        }
    }
    let dedupe_key = body_key(&context);
    Ok(Decoded {
        app: Some(App {
            id: token.to_owned(),
        }),
        ..decoded(Kind::App, Format::Text, dedupe_key, context)
    })
}

fn classify_json(payload: &Map<String, Value>) -> Option<Kind> {
    let has = |key: &str| payload.contains_key(key);
    if has("id") && has("form") {
        Some(Kind::Form)
    } else if has("case_id") && has("properties") {
        Some(Kind::Case)
    } else if has("form_id") && has("case_ids") {
        Some(Kind::FormStub)
    } else if has("username") && (has("id") || has("user_id")) {
        Some(Kind::User)
    } else if has("location_id")
        && (has("location_type") || has("location_type_name") || has("site_code"))
    {
        Some(Kind::Location)
    } else {
        None
    }
}

/// The keys an object lacks to be `expected`, as `a, b` (alternatives as `a/b`).
fn missing_keys(payload: &Map<String, Value>, expected: Kind) -> String {
    let required: &[&[&str]] = match expected {
        Kind::Form => &[&["id"], &["form"]],
        Kind::Case => &[&["case_id"], &["properties"]],
        Kind::FormStub => &[&["form_id"], &["case_ids"]],
        Kind::User => &[&["username"], &["id", "user_id"]],
        Kind::Location => &[
            &["location_id"],
            &["location_type", "location_type_name", "site_code"],
        ],
        Kind::App => &[],
    };
    required
        .iter()
        .filter(|any_of| !any_of.iter().any(|key| payload.contains_key(*key)))
        .map(|any_of| any_of.join("/"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_list(payload: &Map<String, Value>) -> String {
    const SHOWN: usize = 10;
    if payload.is_empty() {
        return "none".to_owned();
    }
    let mut keys: Vec<&str> = payload.keys().take(SHOWN).map(String::as_str).collect();
    if payload.len() > SHOWN {
        keys.push("...");
    }
    keys.join(", ")
}

fn json_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Form => "form JSON",
        Kind::Case => "case JSON",
        Kind::FormStub => "form stub JSON",
        Kind::User => "user JSON",
        Kind::Location => "location JSON",
        Kind::App => "an app id",
    }
}

fn expect(context: &Context<'_>, found_kind: Kind, found: &'static str) -> Result<()> {
    match context.expected_kind {
        Some(expected) if expected != found_kind => {
            Err(DecodeError::KindMismatch { expected, found })
        }
        _ => Ok(()),
    }
}

fn case_key(case_id: &str, server_modified_on: Option<&str>) -> Option<String> {
    server_modified_on.map(|version| format!("case:{case_id}:{version}"))
}

fn body_key(context: &Context<'_>) -> String {
    format!("sha256:{}", context.body_sha256)
}

fn decoded(kind: Kind, format: Format, dedupe_key: String, context: Context<'_>) -> Decoded {
    Decoded {
        kind,
        format,
        domain: None,
        dedupe_key,
        body_sha256: context.body_sha256,
        form: None,
        cases: Vec::new(),
        ledgers: Vec::new(),
        case_ids: None,
        app: None,
        user: None,
        location: None,
    }
}
