//! A source's `auth` block: the credentials a request must carry (commcare-forwarding.md §2.4).
//!
//! Every list of secrets allows rotation: a request matching any entry is accepted. The check
//! itself lives in `ingress::auth`; this file only reads and validates.

use std::time::Duration;

use super::read::{Context, positive_u64};
use super::secret::{Secret, read_secret};
use crate::yaml::{Errors, MapReader, Node};

/// How requests to a source authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may send. Refused unless `listen` is loopback or the source opts in.
    None,
    /// `Authorization: Basic base64(username:password)`, HQ's "HTTP Basic".
    Basic(Vec<BasicCredential>),
    /// `Authorization: Bearer <token>`.
    Bearer(Vec<Secret>),
    /// The whole `Authorization` value, as HQ's "API key" auth sends it (no scheme word).
    Authorization(Vec<Secret>),
    /// An HMAC-SHA256 signature of the body in a header. HQ does not sign (§2.5); this is for
    /// other senders and proxies.
    Hmac(HmacAuth),
}

impl Auth {
    /// The `type` name used in the config file.
    pub fn type_name(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Basic(_) => "basic",
            Auth::Bearer(_) => "bearer",
            Auth::Authorization(_) => "authorization",
            Auth::Hmac(_) => "hmac",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicCredential {
    pub username: String,
    pub password: Secret,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HmacAuth {
    /// Keys are the secrets' UTF-8 bytes; any one of them may have signed.
    pub secrets: Vec<Secret>,
    /// Lower-case header name carrying the signature.
    pub header: String,
    pub encoding: SignatureEncoding,
    /// Text before the encoded signature in the header, such as `sha256=`.
    pub prefix: Option<String>,
    /// When set, the MAC covers `"{timestamp}.{body}"` and the timestamp must be recent.
    pub timestamp: Option<TimestampCheck>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimestampCheck {
    /// Lower-case header name carrying Unix seconds.
    pub header: String,
    /// How far the timestamp may be from now, either way.
    pub tolerance: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AuthType {
    None,
    Basic,
    Bearer,
    Authorization,
    Hmac,
}

const AUTH_TYPES: [(&str, AuthType); 5] = [
    ("none", AuthType::None),
    ("basic", AuthType::Basic),
    ("bearer", AuthType::Bearer),
    ("authorization", AuthType::Authorization),
    ("hmac", AuthType::Hmac),
];

const DEFAULT_SIGNATURE_HEADER: &str = "x-signature";
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

pub(super) fn read_auth(node: &Node, context: &Context, errors: &mut Errors) -> Option<Auth> {
    let mut map = node.as_map(errors)?;
    let auth_type = map
        .required("type", errors)
        .and_then(|type_node| type_node.as_choice("auth type", &AUTH_TYPES, errors));
    let Some(auth_type) = auth_type else {
        // Which fields are valid depends on the type; one error about the type is enough.
        map.abandon();
        return None;
    };
    let auth = match auth_type {
        AuthType::None => Some(Auth::None),
        AuthType::Basic => read_list(&mut map, "credentials", errors, |item, errors| {
            read_basic_credential(item, context, errors)
        })
        .map(Auth::Basic),
        AuthType::Bearer => read_list(&mut map, "tokens", errors, |item, errors| {
            read_header_secret(item, context, errors)
        })
        .map(Auth::Bearer),
        AuthType::Authorization => read_list(&mut map, "values", errors, |item, errors| {
            read_header_secret(item, context, errors)
        })
        .map(Auth::Authorization),
        AuthType::Hmac => read_hmac(&mut map, context, errors).map(Auth::Hmac),
    };
    map.finish(errors);
    auth
}

/// A required, non-empty list, every item read even after a bad one.
fn read_list<T>(
    map: &mut MapReader<'_>,
    name: &'static str,
    errors: &mut Errors,
    mut read_item: impl FnMut(&Node, &mut Errors) -> Option<T>,
) -> Option<Vec<T>> {
    let node = map.required(name, errors)?;
    let items = node.as_list(errors)?;
    if items.is_empty() {
        errors.push(node.error(format!("`{name}` needs at least one entry")));
        return None;
    }
    let read: Vec<Option<T>> = items.iter().map(|item| read_item(item, errors)).collect();
    read.into_iter().collect()
}

fn read_basic_credential(
    node: &Node,
    context: &Context,
    errors: &mut Errors,
) -> Option<BasicCredential> {
    let mut map = node.as_map(errors)?;
    let username = map.required("username", errors).and_then(|username_node| {
        let username = username_node.as_text(errors)?;
        if username.is_empty() || username.contains(':') {
            errors.push(username_node.error("username must be non-empty and without `:`"));
            return None;
        }
        Some(username.to_owned())
    });
    let password = map
        .required("password", errors)
        .and_then(|password_node| read_secret(password_node, context, errors));
    map.finish(errors);
    Some(BasicCredential {
        username: username?,
        password: password?,
    })
}

/// A secret that travels in a header, so must be printable ASCII (a stray newline or
/// non-ASCII character would make it impossible to send).
fn read_header_secret(node: &Node, context: &Context, errors: &mut Errors) -> Option<Secret> {
    let secret = read_secret(node, context, errors)?;
    let printable = secret
        .expose()
        .bytes()
        .all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte));
    if !printable {
        errors.push(node.error("secret must be printable ASCII to fit in an HTTP header"));
        return None;
    }
    Some(secret)
}

fn read_hmac(map: &mut MapReader<'_>, context: &Context, errors: &mut Errors) -> Option<HmacAuth> {
    let secrets = read_list(map, "secrets", errors, |item, errors| {
        read_secret(item, context, errors)
    });
    let header = match map.optional("header") {
        Some(header_node) => read_header_name(header_node, errors),
        None => Some(DEFAULT_SIGNATURE_HEADER.to_owned()),
    };
    let encoding = match map.optional("encoding") {
        Some(encoding_node) => encoding_node.as_choice(
            "signature encoding",
            &[
                ("hex", SignatureEncoding::Hex),
                ("base64", SignatureEncoding::Base64),
            ],
            errors,
        ),
        None => Some(SignatureEncoding::Hex),
    };
    let prefix = match map.optional("prefix") {
        Some(prefix_node) => prefix_node
            .as_str(errors)
            .map(|prefix| Some(prefix.to_owned())),
        None => Some(None),
    };
    let timestamp_header = map
        .optional("timestamp_header")
        .map(|header_node| read_header_name(header_node, errors));
    let tolerance = match map.optional("tolerance_seconds") {
        Some(tolerance_node) => {
            if timestamp_header.is_none() {
                errors.push(
                    tolerance_node.error("`tolerance_seconds` needs `timestamp_header` to be set"),
                );
            }
            positive_u64(tolerance_node, errors).map(|seconds| Duration::from_secs(seconds.get()))
        }
        None => Some(DEFAULT_TOLERANCE),
    };
    let timestamp = match timestamp_header {
        Some(header) => Some(TimestampCheck {
            header: header?,
            tolerance: tolerance?,
        }),
        None => None,
    };
    Some(HmacAuth {
        secrets: secrets?,
        header: header?,
        encoding: encoding?,
        prefix: prefix?,
        timestamp,
    })
}

/// An HTTP header name (RFC 9110 token), kept in lower case.
fn read_header_name(node: &Node, errors: &mut Errors) -> Option<String> {
    node.parse_str(errors, |name| {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
        if token {
            Ok(name.to_ascii_lowercase())
        } else {
            Err(format!("`{name}` is not a valid HTTP header name"))
        }
    })
}
