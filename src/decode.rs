//! Decode: turns one request body into the parts of an envelope. Pure: no IO, no axum.
//!
//! The façade owns the request-level checks (Content-Type, empty body, UTF-8), the body hash,
//! the one error type of the module, and `Decoded::into_envelope`. The work is split by reason
//! to change:
//!
//! - `xml`: XML to JSON by HQ's conventions, one streaming pass; knows nothing of CommCare.
//! - `json`: JSON bodies parsed under our nesting limit; knows nothing of CommCare.
//! - `commcare`: what kind of payload a body is, and its dedupe key (commcare-forwarding.md §3,
//!   §6.4).
//! - `form`: form meta, form JSON and form stubs; `case`: case blocks (CaseXML 1.0 and 2.0)
//!   and case payloads.
//!
//! Invariants: decoding never panics on any input, never reads a DTD or expands an entity other
//! than XML's five predefined ones and character references, and builds nothing larger than
//! a tree proportional to the body. The body's format is found by reading it, never from the label alone: HQ
//! labels a bare app id `text/xml`.

mod case;
mod commcare;
mod form;
mod json;
mod xml;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::envelope::{App, CaseOperation, Envelope, Form, Format, Kind};
use crate::error::ErrorKind;

pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Bounds on what one body may make the decoder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest element (XML, root = 1) or object/array (JSON, top level = 1) nesting accepted.
    /// serde_json stops at 128 levels on its own, so a larger value acts as 128 for JSON.
    pub max_depth: usize,
}

impl Limits {
    pub const DEFAULT_MAX_DEPTH: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: Limits::DEFAULT_MAX_DEPTH,
        }
    }
}

/// One request body and what ingress knows about it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Input<'a> {
    pub body: &'a [u8],
    /// The raw Content-Type header value, parameters included (`text/xml; charset=utf-8`).
    pub content_type: Option<&'a str>,
    /// The `received-on` header (form and form stub forwarders).
    pub received_on: Option<&'a str>,
    /// The `server-modified-on` header (case forwarders).
    pub server_modified_on: Option<&'a str>,
    /// The kind the source is configured to receive; `None` classifies by content.
    pub expected_kind: Option<Kind>,
    pub limits: Limits,
}

/// Everything of the envelope that comes from the payload (docs/envelope.md).
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub kind: Kind,
    pub format: Format,
    /// The payload's `domain` (JSON bodies only).
    pub domain: Option<String>,
    pub dedupe_key: String,
    pub body_sha256: String,
    pub form: Option<Form>,
    pub cases: Vec<CaseOperation>,
    pub ledgers: Vec<Value>,
    pub case_ids: Option<Vec<String>>,
    pub app: Option<App>,
    pub user: Option<Value>,
    pub location: Option<Value>,
}

/// What ingress knows of the request, to complete an envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    pub id: String,
    pub received_at: String,
    pub source: String,
    /// The domain named in the source's config, used when the payload names none.
    pub source_domain: Option<String>,
    pub method: String,
    pub content_type: Option<String>,
    pub query: Map<String, Value>,
    pub headers: Map<String, Value>,
    pub body_bytes: u64,
    pub traceparent: Option<String>,
}

impl Decoded {
    /// Completes the envelope with what ingress knows. The payload's domain wins over the
    /// source's: a JSON body says which project it really came from.
    pub fn into_envelope(self, arrival: Arrival) -> Envelope {
        Envelope {
            id: arrival.id,
            received_at: arrival.received_at,
            source: arrival.source,
            domain: self.domain.or(arrival.source_domain),
            kind: self.kind,
            format: self.format,
            method: arrival.method,
            content_type: arrival.content_type,
            dedupe_key: self.dedupe_key,
            query: arrival.query,
            headers: arrival.headers,
            body_bytes: arrival.body_bytes,
            body_sha256: self.body_sha256,
            traceparent: arrival.traceparent,
            form: self.form,
            cases: self.cases,
            ledgers: self.ledgers,
            case_ids: self.case_ids,
            app: self.app,
            user: self.user,
            location: self.location,
        }
    }
}

/// Why a body cannot be decoded. Each message is one lowercase line that says what is wrong
/// and where: HQ shows it to operators in its repeat record report.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "content type {content_type:?} is not read: expected text/xml, application/xml, \
         application/json or text/plain"
    )]
    UnsupportedContentType { content_type: String },
    #[error("charset {charset:?} is not read: bodies must be UTF-8")]
    UnsupportedCharset { charset: String },
    #[error("body is empty")]
    EmptyBody,
    #[error("body is not valid UTF-8 at byte {byte}")]
    InvalidUtf8 {
        byte: usize,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("malformed XML at line {line}, column {column}: {source}")]
    MalformedXml {
        line: usize,
        column: usize,
        #[source]
        source: quick_xml::Error,
    },
    #[error("malformed XML at line {line}, column {column}: {problem}")]
    InvalidXml {
        line: usize,
        column: usize,
        problem: String,
    },
    #[error(
        "XML DOCTYPE at line {line}, column {column} is refused: DTDs and entity declarations \
         are never read"
    )]
    XmlDoctype { line: usize, column: usize },
    #[error(
        "XML entity &{name}; at line {line}, column {column} is not defined: only &lt; &gt; \
         &amp; &apos; &quot; and character references are read"
    )]
    XmlUndefinedEntity {
        name: String,
        line: usize,
        column: usize,
    },
    #[error("XML declares encoding {encoding:?}: only UTF-8 is read")]
    XmlEncoding { encoding: String },
    #[error("{format} nesting is deeper than {limit} levels at line {line}, column {column}")]
    TooDeep {
        format: &'static str,
        limit: usize,
        line: usize,
        column: usize,
    },
    #[error("malformed JSON: {source}")]
    MalformedJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("JSON body is {found}, not an object")]
    JsonNotObject { found: &'static str },
    #[error(
        "JSON object is not a form, case, form stub, user or location payload: expected keys \
         id+form, case_id+properties, form_id+case_ids, username+id or \
         location_id+location_type; found keys: {found}"
    )]
    UnknownJsonShape { found: String },
    #[error("body is not XML, not JSON and not an app id (32 hexadecimal digits)")]
    UnknownText,
    #[error(
        "body is not an app id: expected one token of letters, digits, '-', '_' or '.', at \
         most 128 characters"
    )]
    NotAnAppId,
    #[error("expected {} payload, found {found}", commcare::kind_with_article(*.expected))]
    KindMismatch { expected: Kind, found: &'static str },
    #[error("expected {} payload: JSON object has no {missing}", commcare::kind_with_article(*.expected))]
    MissingKeys { expected: Kind, missing: String },
    #[error("field {field} must be {expected}")]
    WrongFieldType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("case block {block} has no case_id")]
    MissingCaseId { block: usize },
    #[error("case block {block} has an empty case_id")]
    EmptyCaseId { block: usize },
}

impl DecodeError {
    /// The class of the error: 415 for a content type ccrelay does not read, 422 for anything
    /// about the body itself.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::UnsupportedContentType { .. } | DecodeError::UnsupportedCharset { .. } => {
                ErrorKind::UnsupportedMediaType
            }
            _ => ErrorKind::Unprocessable,
        }
    }
}

/// Decodes one body into the parts of an envelope.
///
/// # Errors
///
/// `UnsupportedContentType`/`UnsupportedCharset` when the label names something other than
/// XML, JSON or plain text in UTF-8; every other variant when the body cannot be read as the
/// payload it claims or is expected to be. Never panics.
pub fn decode(input: &Input<'_>) -> Result<Decoded> {
    if let Some(content_type) = input.content_type {
        check_content_type(content_type)?;
    }
    if input.body.is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    let text = std::str::from_utf8(input.body).map_err(|source| DecodeError::InvalidUtf8 {
        byte: source.valid_up_to(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body_sha256 = hex::encode(Sha256::digest(input.body));
    let context = commcare::Context {
        received_on: input.received_on,
        server_modified_on: input.server_modified_on,
        expected_kind: input.expected_kind,
        max_depth: input.limits.max_depth,
        body_sha256,
    };
    match text.trim_start().as_bytes().first() {
        None => Err(DecodeError::EmptyBody),
        Some(b'<') => commcare::decode_xml(text, context),
        Some(b'{' | b'[') => commcare::decode_json(text, context),
        Some(_) => commcare::decode_text(text, context),
    }
}

/// Accepts the four media types HQ may use, in any case, with parameters ignored except a
/// charset, which must be UTF-8 (or its ASCII subset).
fn check_content_type(content_type: &str) -> Result<()> {
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if media_type.is_empty() {
        // A header sent empty says nothing: classify by content, as when it is missing.
        return Ok(());
    }
    let known = [
        "text/xml",
        "application/xml",
        "application/json",
        "text/plain",
    ]
    .iter()
    .any(|known| media_type.eq_ignore_ascii_case(known));
    if !known {
        return Err(DecodeError::UnsupportedContentType {
            content_type: content_type.to_owned(),
        });
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let charset = value.trim().trim_matches('"');
        let utf8 = ["utf-8", "utf8", "us-ascii"]
            .iter()
            .any(|known| charset.eq_ignore_ascii_case(known));
        if !utf8 {
            return Err(DecodeError::UnsupportedCharset {
                charset: charset.to_owned(),
            });
        }
    }
    Ok(())
}

/// Line and column (both from 1, column in characters) of a byte offset, for error messages.
fn line_column(text: &str, byte: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..byte.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count();
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_content_type_kind(content_type: &str, expected: Option<ErrorKind>) {
        let actual = check_content_type(content_type).err().map(|err| err.kind());
        assert_eq!(actual, expected, "content type {content_type:?}");
    }

    #[test]
    fn content_types_hq_sends_are_read_in_any_case_with_utf8_charset() {
        for content_type in [
            "text/xml",
            "application/xml",
            "application/json",
            "text/plain",
            "TEXT/XML; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
            "text/xml; boundary=x; charset=us-ascii",
            "",
        ] {
            check_content_type_kind(content_type, None);
        }
    }

    #[test]
    fn other_media_types_and_charsets_are_unsupported_media() {
        for content_type in [
            "image/png",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/xml; charset=iso-8859-1",
            "application/json; charset=utf-16",
        ] {
            check_content_type_kind(content_type, Some(ErrorKind::UnsupportedMediaType));
        }
    }

    #[test]
    fn line_column_counts_characters_not_bytes() {
        let text = "ab\nсд<x";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, text.find('<').unwrap()), (2, 3));
        assert_eq!(line_column(text, 999), (2, 5));
    }
}
