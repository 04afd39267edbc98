//! The `control:` section: ccrelay's side of the Data Forwarding API (docs/control.md).
//!
//! Read into [`ControlSettings`] with every problem reported; the cross-checks against
//! `sources` (a forwarder must post to a source that exists) run once both are read.

use std::num::NonZeroU32;
use std::time::Duration;

use super::read::{Context, positive_seconds, positive_u64, positive_usize};
use super::secret::{Secret, read_secret};
use crate::control::RepeaterType;
use crate::control::resource::{is_domain_name, is_http_url};
use crate::yaml::{Errors, Node};

/// What ccrelay asks of CommCare HQ, and whom it lets use the API it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSettings {
    /// HQ's address and the credential `ccrelay hq` uses; needed for `hq` commands only.
    pub hq: Option<HqSettings>,
    /// The relay's public base URL, without a trailing slash: HQ posts to
    /// `{public_url}/ingest/{source}`.
    pub public_url: Option<String>,
    /// The forwarders ccrelay wants HQ to have.
    pub forwarders: Vec<WantedForwarder>,
    /// Whether `serve` applies `forwarders` to HQ at start (a failure is logged, not fatal).
    pub register_on_start: bool,
    /// Who may use the Data Forwarding API ccrelay serves, per domain.
    pub api_keys: Vec<ApiKeyGrant>,
    /// The most registrations the served API keeps, over all domains.
    pub max_registrations: usize,
}

/// The default for `max_registrations`.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 1000;

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            hq: None,
            public_url: None,
            forwarders: Vec::new(),
            register_on_start: false,
            api_keys: Vec::new(),
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
        }
    }
}

/// How to reach CommCare HQ's API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HqSettings {
    /// HQ's base URL without a trailing slash, e.g. `https://www.commcarehq.org`.
    pub url: String,
    pub credential: HqCredential,
    /// Per request, connecting included.
    pub timeout: Duration,
    /// How many times a request is tried when HQ answers 429 or cannot be reached.
    pub max_attempts: NonZeroU32,
    /// The longest wait between attempts, whatever `Retry-After` says.
    pub max_retry_wait: Duration,
}

/// The credential sent to HQ; HQ requires the user to be a domain admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HqCredential {
    /// `Authorization: ApiKey <username>:<api_key>`.
    ApiKey { username: String, api_key: Secret },
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: Secret },
}

impl HqCredential {
    pub fn username(&self) -> &str {
        match self {
            HqCredential::ApiKey { username, .. } | HqCredential::Basic { username, .. } => {
                username
            }
        }
    }

    /// `api_key` or `password`, as named in the config.
    pub fn kind_name(&self) -> &'static str {
        match self {
            HqCredential::ApiKey { .. } => "api_key",
            HqCredential::Basic { .. } => "password",
        }
    }
}

/// One forwarder ccrelay wants in a domain: HQ posts payloads of `types` to `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedForwarder {
    pub domain: String,
    pub types: Vec<RepeaterType>,
    /// A source in `sources`; the forwarder's URL is `{public_url}/ingest/{source}`.
    pub source: String,
}

/// A credential for the served API, valid for one domain: `Authorization: ApiKey
/// <username>:<key>` or Basic with `key` as the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyGrant {
    pub domain: String,
    pub username: String,
    pub key: Secret,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// The section as read, with the nodes the `sources` cross-check points at.
pub(super) struct ControlDraft<'a> {
    pub settings: ControlSettings,
    pub source_nodes: Vec<&'a Node>,
}

pub(super) fn read_control<'a>(
    node: &'a Node,
    context: &Context,
    errors: &mut Errors,
) -> Option<ControlDraft<'a>> {
    let mut map = node.as_map(errors)?;
    let hq = map
        .optional("hq")
        .map(|node| read_hq(node, context, errors));
    let public_url_node = map.optional("public_url");
    let public_url = public_url_node.map(|node| {
        node.parse_str(errors, |text| {
            http_url(text).map(|url| url.trim_end_matches('/').to_owned())
        })
    });
    let forwarders_node = map.optional("forwarders");
    let forwarders = match forwarders_node {
        Some(node) => read_forwarders(node, errors),
        None => Some((Vec::new(), Vec::new())),
    };
    let register_node = map.optional("register_on_start");
    let register_on_start = register_node.map_or(Some(false), |node| node.as_bool(errors));
    let api_keys = match map.optional("api_keys") {
        Some(node) => read_api_keys(node, context, errors),
        None => Some(Vec::new()),
    };
    let max_registrations = map
        .optional("max_registrations")
        .map_or(Some(DEFAULT_MAX_REGISTRATIONS), |node| {
            positive_usize(node, errors).map(std::num::NonZeroUsize::get)
        });
    map.finish(errors);

    let has_forwarders = forwarders
        .as_ref()
        .is_some_and(|(list, _)| !list.is_empty());
    if has_forwarders && public_url.is_none() {
        let at = forwarders_node.unwrap_or(node);
        errors.push(at.error(
            "`forwarders` needs `public_url`: the address HQ posts to, as {public_url}/ingest/{source}",
        ));
    }
    if register_on_start == Some(true) && (hq.is_none() || public_url.is_none()) {
        let at = register_node.unwrap_or(node);
        errors.push(at.error("`register_on_start: true` needs `hq` and `public_url`"));
    }
    let (forwarders, source_nodes) = forwarders?;
    Some(ControlDraft {
        settings: ControlSettings {
            hq: match hq {
                None => None,
                Some(hq) => Some(hq?),
            },
            public_url: match public_url {
                None => None,
                Some(url) => Some(url?),
            },
            forwarders,
            register_on_start: register_on_start?,
            api_keys: api_keys?,
            max_registrations: max_registrations?,
        },
        source_nodes,
    })
}

/// Forwarders must post to a source this config defines (or the `*` fallback).
pub(super) fn check_sources(
    draft: &ControlDraft,
    source_defined: &dyn Fn(&str) -> bool,
    errors: &mut Errors,
) {
    for (forwarder, node) in draft.settings.forwarders.iter().zip(&draft.source_nodes) {
        if !source_defined(&forwarder.source) {
            errors.push(node.error(format!(
                "source `{}` is not in `sources`; HQ would post to a path ccrelay answers 404",
                forwarder.source
            )));
        }
    }
}

/// An absolute `http` or `https` URL with a host.
fn http_url(text: &str) -> Result<&str, String> {
    if is_http_url(text) {
        Ok(text)
    } else {
        Err(format!(
            "`{text}` is not an http or https URL such as https://relay.example.org"
        ))
    }
}

fn read_hq(node: &Node, context: &Context, errors: &mut Errors) -> Option<HqSettings> {
    let mut map = node.as_map(errors)?;
    let url = map.required("url", errors).and_then(|node| {
        node.parse_str(errors, |text| {
            http_url(text).map(|url| url.trim_end_matches('/').to_owned())
        })
    });
    let username = map
        .required("username", errors)
        .and_then(|node| read_username(node, errors));
    let api_key_node = map.optional("api_key");
    let password_node = map.optional("password");
    let api_key = api_key_node.map(|node| read_header_secret(node, context, errors));
    let password = password_node.map(|node| read_header_secret(node, context, errors));
    let timeout = map
        .optional("timeout_seconds")
        .map_or(Some(DEFAULT_TIMEOUT), |node| positive_seconds(node, errors));
    let max_attempts = map.optional("max_attempts").map_or(
        Some(NonZeroU32::new(DEFAULT_MAX_ATTEMPTS).expect("non-zero")),
        |node| {
            let value = positive_u64(node, errors)?;
            let attempts = u32::try_from(value.get()).ok().and_then(NonZeroU32::new);
            if attempts.is_none() {
                errors.push(node.error(format!("{value} attempts is too many")));
            }
            attempts
        },
    );
    let max_retry_wait = map
        .optional("max_retry_wait_seconds")
        .map_or(Some(DEFAULT_MAX_RETRY_WAIT), |node| {
            positive_seconds(node, errors)
        });
    map.finish(errors);
    let credential = match (api_key, password) {
        (Some(api_key), None) => HqCredential::ApiKey {
            username: username?,
            api_key: api_key?,
        },
        (None, Some(password)) => HqCredential::Basic {
            username: username?,
            password: password?,
        },
        (Some(_), Some(_)) => {
            let at = password_node.expect("present when read");
            errors.push(at.error("give `api_key` or `password`, not both"));
            return None;
        }
        (None, None) => {
            errors.push(
                node.error("missing field `api_key` (HQ's ApiKey auth) or `password` (HTTP Basic)"),
            );
            return None;
        }
    };
    Some(HqSettings {
        url: url?,
        credential,
        timeout: timeout?,
        max_attempts: max_attempts?,
        max_retry_wait: max_retry_wait?,
    })
}

fn read_username(node: &Node, errors: &mut Errors) -> Option<String> {
    let username = node.as_text(errors)?;
    if username.is_empty() || username.contains(':') || !printable(username) {
        errors.push(node.error("username must be non-empty printable ASCII without `:`"));
        return None;
    }
    Some(username.to_owned())
}

fn printable(text: &str) -> bool {
    text.bytes().all(|byte| (b' '..=b'~').contains(&byte))
}

/// A secret sent in an `Authorization` header, so printable ASCII.
fn read_header_secret(node: &Node, context: &Context, errors: &mut Errors) -> Option<Secret> {
    let secret = read_secret(node, context, errors)?;
    if !printable(secret.expose()) {
        errors.push(node.error("secret must be printable ASCII to fit in an HTTP header"));
        return None;
    }
    Some(secret)
}

fn read_domain(node: &Node, errors: &mut Errors) -> Option<String> {
    node.parse_str(errors, |domain| {
        if is_domain_name(domain) {
            Ok(domain.to_owned())
        } else {
            Err(format!(
                "`{domain}` is not a CommCare project space name (letters, digits, `-`, `_`, `.`)"
            ))
        }
    })
}

type ForwarderList<'a> = (Vec<WantedForwarder>, Vec<&'a Node>);

fn read_forwarders<'a>(node: &'a Node, errors: &mut Errors) -> Option<ForwarderList<'a>> {
    let items = node.as_list(errors)?;
    let mut forwarders = Vec::new();
    let mut source_nodes = Vec::new();
    let mut complete = true;
    for item in items {
        match read_forwarder(item, errors) {
            Some((forwarder, source_node)) => {
                let duplicate = forwarders.iter().any(|seen: &WantedForwarder| {
                    seen.domain == forwarder.domain && seen.source == forwarder.source
                });
                if duplicate {
                    errors.push(item.error(format!(
                        "domain `{}` and source `{}` are listed twice; put all types in one entry",
                        forwarder.domain, forwarder.source
                    )));
                    complete = false;
                }
                forwarders.push(forwarder);
                source_nodes.push(source_node);
            }
            None => complete = false,
        }
    }
    complete.then_some((forwarders, source_nodes))
}

fn read_forwarder<'a>(node: &'a Node, errors: &mut Errors) -> Option<(WantedForwarder, &'a Node)> {
    let mut map = node.as_map(errors)?;
    let domain = map
        .required("domain", errors)
        .and_then(|node| read_domain(node, errors));
    let names = RepeaterType::ALL.map(|repeater| (repeater.as_str(), repeater));
    let types_node = map.required("types", errors);
    let types = types_node.and_then(|types_node| {
        let items = types_node.as_list(errors)?;
        if items.is_empty() {
            errors.push(types_node.error("`types` needs at least one forwarder type"));
            return None;
        }
        let read: Vec<Option<RepeaterType>> = items
            .iter()
            .map(|item| item.as_choice("forwarder type", &names, errors))
            .collect();
        let mut types: Vec<RepeaterType> = read.into_iter().collect::<Option<_>>()?;
        let count = types.len();
        types.sort();
        types.dedup();
        if types.len() != count {
            errors.push(types_node.error("a forwarder type is listed twice"));
            return None;
        }
        Some(types)
    });
    let source_node = map.required("source", errors);
    let source = source_node.and_then(|node| node.as_str(errors).map(str::to_owned));
    map.finish(errors);
    Some((
        WantedForwarder {
            domain: domain?,
            types: types?,
            source: source?,
        },
        source_node?,
    ))
}

fn read_api_keys(node: &Node, context: &Context, errors: &mut Errors) -> Option<Vec<ApiKeyGrant>> {
    let items = node.as_list(errors)?;
    let read: Vec<Option<ApiKeyGrant>> = items
        .iter()
        .map(|item| {
            let mut map = item.as_map(errors)?;
            let domain = map
                .required("domain", errors)
                .and_then(|node| read_domain(node, errors));
            let username = map
                .required("username", errors)
                .and_then(|node| read_username(node, errors));
            let key = map
                .required("key", errors)
                .and_then(|node| read_header_secret(node, context, errors));
            map.finish(errors);
            Some(ApiKeyGrant {
                domain: domain?,
                username: username?,
                key: key?,
            })
        })
        .collect();
    read.into_iter().collect()
}
