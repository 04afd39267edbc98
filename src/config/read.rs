//! The config tree read into [`Config`], section by section.
//!
//! Every field is read even after an earlier one failed, so all problems surface in one run;
//! a section yields `None` only when something in it was reported. Checks that depend on
//! command-line overrides run last, after the overrides are applied.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::{Auth, read_auth};
use super::control::{ControlSettings, check_sources, read_control};
use super::{Config, IngressSettings, Overrides, Source, Sources, SpoolSettings, VERSION};
use crate::envelope::Kind;
use crate::yaml::{Errors, Node, join_key};

/// What reading needs from outside the text.
pub(super) struct Context<'a> {
    /// Folder that relative paths are resolved against.
    pub base_dir: &'a Path,
    pub read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

/// A source as read, with what the post-override checks need.
struct SourceDraft<'a> {
    source: Source,
    allow_unauthenticated: bool,
    auth_node: &'a Node,
}

pub(super) fn read_config(
    root: &Node,
    context: &Context,
    overrides: &Overrides,
    errors: &mut Errors,
) -> Option<Config> {
    if root.is_null() {
        errors.push(
            root.error("the config file is empty; it needs at least `version` and `sources`"),
        );
        return None;
    }
    let mut map = root.as_map(errors)?;
    let version_node = map.required("version", errors);
    if let Some((version_node, version)) =
        version_node.and_then(|version_node| Some((version_node, version_node.as_u64(errors)?)))
    {
        if version != VERSION {
            // Another version's fields would all look wrong; say only what matters.
            errors.push(version_node.error(format!(
                "unsupported config version {version}, this build reads version {VERSION}"
            )));
            map.abandon();
            return None;
        }
    }
    let listen_node = map.optional("listen");
    let listen = listen_node.map(|node| read_socket_addr(node, errors));
    let admin_listen_node = map.optional("admin_listen");
    let admin_listen = admin_listen_node.map(|node| read_socket_addr(node, errors));
    let data_dir_node = map.optional("data_dir");
    let data_dir = data_dir_node.map(|node| read_path(node, context, errors));
    let rules_path = map
        .optional("rules")
        .map(|node| read_path(node, context, errors));
    let ingress = match map.optional("ingress") {
        Some(node) => read_ingress(node, errors),
        None => Some(IngressSettings::default()),
    };
    let sources = map
        .required("sources", errors)
        .and_then(|node| read_sources(node, context, errors));
    let spool = match map.optional("spool") {
        Some(node) => read_spool(node, errors),
        None => Some(SpoolSettings::default()),
    };
    let control = map
        .optional("control")
        .map(|node| read_control(node, context, errors));
    map.finish(errors);

    // Overrides replace the file's values, even ones that were wrong in the file.
    let listen = pick(overrides.listen, listen, DEFAULT_LISTEN);
    let admin_listen = pick(overrides.admin_listen, admin_listen, DEFAULT_ADMIN_LISTEN);
    let data_dir = match (&overrides.data_dir, data_dir) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(path)) => path,
        (None, None) => {
            errors.push(root.error("missing field `data_dir`"));
            None
        }
    };
    let rules_path = match (&overrides.rules_path, rules_path) {
        (Some(path), _) => Some(Some(path.clone())),
        (None, from_file) => absent_or_valid(from_file),
    };

    if let (Some(listen), Some(admin_listen)) = (listen, admin_listen) {
        if listen == admin_listen && listen.port() != 0 {
            let at = admin_listen_node.or(listen_node).unwrap_or(root);
            errors.push(at.error(format!(
                "`admin_listen` and `listen` are both {listen}; they need different addresses"
            )));
        }
    }
    if let (Some(listen), Some(sources)) = (listen, &sources) {
        check_unauthenticated(listen, overrides.listen.is_some(), sources, errors);
    }

    if let (Some(Some(control)), Some(drafts)) = (&control, &sources) {
        let defined = |name: &str| {
            drafts
                .iter()
                .any(|draft| draft.source.name == name || draft.source.name == "*")
        };
        check_sources(control, &defined, errors);
    }

    let sources = sources.map(|drafts| {
        let mut named = BTreeMap::new();
        let mut fallback = None;
        for draft in drafts {
            if draft.source.name == "*" {
                fallback = Some(draft.source);
            } else {
                named.insert(draft.source.name.clone(), draft.source);
            }
        }
        Sources { named, fallback }
    });
    Some(Config {
        listen: listen?,
        admin_listen: admin_listen?,
        data_dir: data_dir?,
        rules_path: rules_path?,
        ingress: ingress?,
        sources: sources?,
        spool: spool?,
        control: match control {
            None => ControlSettings::default(),
            Some(draft) => draft?.settings,
        },
    })
}

/// The override, else the file's value (`None` inside when it was wrong), else the default.
fn pick<T>(overridden: Option<T>, from_file: Option<Option<T>>, default: T) -> Option<T> {
    match (overridden, from_file) {
        (Some(value), _) => Some(value),
        (None, Some(value)) => value,
        (None, None) => Some(default),
    }
}

/// An optional field as read: absent is `Some(None)`, valid is `Some(Some(value))`, and
/// reported as wrong is `None`.
fn absent_or_valid<T>(read: Option<Option<T>>) -> Option<Option<T>> {
    match read {
        None => Some(None),
        Some(value) => value.map(Some),
    }
}

/// Auth `none` on a reachable listener would let anyone inject payloads, so it needs a
/// loopback `listen` (a local proxy in front doing auth) or an explicit opt-in.
fn check_unauthenticated(
    listen: SocketAddr,
    listen_overridden: bool,
    sources: &[SourceDraft],
    errors: &mut Errors,
) {
    if listen.ip().is_loopback() {
        return;
    }
    let from = if listen_overridden {
        " (from the command line)"
    } else {
        ""
    };
    for draft in sources {
        if draft.source.auth == Auth::None && !draft.allow_unauthenticated {
            errors.push(draft.auth_node.error(format!(
                "auth type `none` is only allowed when `listen` is a loopback address, and \
                 listen is {listen}{from}; configure auth, or set `allow_unauthenticated: true` \
                 on this source"
            )));
        }
    }
}

fn read_socket_addr(node: &Node, errors: &mut Errors) -> Option<SocketAddr> {
    node.parse_str(errors, |text| {
        text.parse::<SocketAddr>().map_err(|_| {
            format!("`{text}` is not an address with a port, such as 127.0.0.1:8080 or [::1]:8080")
        })
    })
}

fn read_path(node: &Node, context: &Context, errors: &mut Errors) -> Option<PathBuf> {
    node.parse_str(errors, |text| {
        if text.is_empty() {
            Err("expected a path, found an empty string".to_owned())
        } else {
            Ok(context.base_dir.join(text))
        }
    })
}

pub(super) fn positive_u64(node: &Node, errors: &mut Errors) -> Option<NonZeroU64> {
    let value = node.as_u64(errors)?;
    let positive = NonZeroU64::new(value);
    if positive.is_none() {
        errors.push(node.error("expected at least 1, found 0"));
    }
    positive
}

/// The largest `max_body_bytes` accepted: a spool record (body plus envelope) must stay well
/// under the spool's 256 MiB record limit.
const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;

pub(super) fn positive_usize(node: &Node, errors: &mut Errors) -> Option<NonZeroUsize> {
    let value = positive_u64(node, errors)?;
    let converted = usize::try_from(value.get())
        .ok()
        .and_then(NonZeroUsize::new);
    if converted.is_none() {
        errors.push(node.error(format!("{value} is too large for this machine")));
    }
    converted
}

pub(super) fn positive_seconds(node: &Node, errors: &mut Errors) -> Option<Duration> {
    positive_u64(node, errors).map(|seconds| Duration::from_secs(seconds.get()))
}

fn read_ingress(node: &Node, errors: &mut Errors) -> Option<IngressSettings> {
    let defaults = IngressSettings::default();
    let mut map = node.as_map(errors)?;
    let max_body_bytes =
        map.optional("max_body_bytes")
            .map_or(Some(defaults.max_body_bytes), |node| {
                // An envelope can be a few times its body, and a spool record holds both.
                let limit = positive_usize(node, errors)?;
                if limit.get() > MAX_BODY_BYTES_LIMIT {
                    errors.push(
                        node.error(format!("expected at most {MAX_BODY_BYTES_LIMIT} (64 MiB)")),
                    );
                    return None;
                }
                Some(limit)
            });
    let request_timeout = map
        .optional("request_timeout_seconds")
        .map_or(Some(defaults.request_timeout), |node| {
            positive_seconds(node, errors)
        });
    let max_concurrent_requests = map
        .optional("max_concurrent_requests")
        .map_or(Some(defaults.max_concurrent_requests), |node| {
            positive_usize(node, errors)
        });
    let max_depth = map
        .optional("max_depth")
        .map_or(Some(defaults.max_depth), |node| {
            positive_usize(node, errors)
        });
    let shutdown_grace = map
        .optional("shutdown_grace_seconds")
        .map_or(Some(defaults.shutdown_grace), |node| {
            node.as_u64(errors).map(Duration::from_secs)
        });
    let dedupe_window = map
        .optional("dedupe_window_hours")
        .map_or(Some(defaults.dedupe_window), |node| {
            positive_u64(node, errors).map(|hours| Duration::from_secs(hours.get() * 3600))
        });
    let dedupe_max_keys = map
        .optional("dedupe_max_keys")
        .map_or(Some(defaults.dedupe_max_keys), |node| {
            positive_usize(node, errors)
        });
    map.finish(errors);
    Some(IngressSettings {
        max_body_bytes: max_body_bytes?,
        request_timeout: request_timeout?,
        max_concurrent_requests: max_concurrent_requests?,
        max_depth: max_depth?,
        shutdown_grace: shutdown_grace?,
        dedupe_window: dedupe_window?,
        dedupe_max_keys: dedupe_max_keys?,
    })
}

fn read_spool(node: &Node, errors: &mut Errors) -> Option<SpoolSettings> {
    let defaults = SpoolSettings::default();
    let mut map = node.as_map(errors)?;
    let segment_bytes = map
        .optional("segment_bytes")
        .map_or(Some(defaults.segment_bytes), |node| {
            positive_u64(node, errors)
        });
    let retention = map
        .optional("retention_hours")
        .map_or(Some(defaults.retention), |node| {
            positive_u64(node, errors).map(|hours| Duration::from_secs(hours.get() * 3600))
        });
    let max_disk_node = map.optional("max_disk_bytes");
    let max_disk_bytes = max_disk_node.map_or(Some(defaults.max_disk_bytes), |node| {
        positive_u64(node, errors)
    });
    map.finish(errors);
    if let (Some(segment), Some(max_disk)) = (segment_bytes, max_disk_bytes) {
        if max_disk < segment {
            let at = max_disk_node.unwrap_or(node);
            errors.push(at.error(format!(
                "`max_disk_bytes` ({max_disk}) must be at least `segment_bytes` ({segment})"
            )));
            return None;
        }
    }
    Some(SpoolSettings {
        segment_bytes: segment_bytes?,
        retention: retention?,
        max_disk_bytes: max_disk_bytes?,
    })
}

fn read_sources<'a>(
    node: &'a Node,
    context: &Context,
    errors: &mut Errors,
) -> Option<Vec<SourceDraft<'a>>> {
    let map = node.as_map(errors)?;
    if map.entries().is_empty() {
        errors.push(node.error("expected at least one source"));
        return None;
    }
    let mut drafts = Vec::new();
    let mut complete = true;
    for entry in map.entries() {
        let name_ok = is_source_name(&entry.key);
        if !name_ok {
            errors.push(crate::yaml::Error {
                span: entry.key_span,
                path: join_key(&node.path, &entry.key),
                message: format!(
                    "source name `{}` must be `*` or use only letters, digits, `.`, `_` and `-`",
                    entry.key
                ),
            });
        }
        match read_source(&entry.key, &entry.value, context, errors) {
            Some(draft) if name_ok => drafts.push(draft),
            _ => complete = false,
        }
    }
    map.abandon();
    complete.then_some(drafts)
}

/// Safe as one URL path segment without escaping; `.` and `..` would be rewritten by clients.
fn is_source_name(name: &str) -> bool {
    name == "*"
        || (!matches!(name, "" | "." | "..")
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')))
}

fn read_source<'a>(
    name: &str,
    node: &'a Node,
    context: &Context,
    errors: &mut Errors,
) -> Option<SourceDraft<'a>> {
    let mut map = node.as_map(errors)?;
    let domain = map.optional("domain").map(|domain_node| {
        domain_node.parse_str(errors, |domain| {
            if domain.is_empty() {
                Err("expected a CommCare project space name, found an empty string".to_owned())
            } else {
                Ok(domain.to_owned())
            }
        })
    });
    let kinds = Kind::ALL.map(|kind| (kind.as_str(), kind));
    let kind = map
        .optional("kind")
        .map(|kind_node| kind_node.as_choice("payload kind", &kinds, errors));
    let dedupe = map
        .optional("dedupe")
        .map_or(Some(true), |dedupe_node| dedupe_node.as_bool(errors));
    let auth_node = map.required("auth", errors);
    let auth = auth_node.and_then(|auth_node| read_auth(auth_node, context, errors));
    let allow_node = map.optional("allow_unauthenticated");
    let allow_unauthenticated = allow_node.map_or(Some(false), |allow| allow.as_bool(errors));
    map.finish(errors);
    if let (Some(true), Some(auth)) = (allow_unauthenticated, &auth) {
        if *auth != Auth::None {
            let allow_node = allow_node.expect("set when true");
            errors.push(allow_node.error(format!(
                "`allow_unauthenticated` only applies to auth type `none`, not `{}`",
                auth.type_name()
            )));
        }
    }
    Some(SourceDraft {
        source: Source {
            name: name.to_owned(),
            domain: absent_or_valid(domain)?,
            kind: absent_or_valid(kind)?,
            dedupe: dedupe?,
            auth: auth?,
        },
        allow_unauthenticated: allow_unauthenticated?,
        auth_node: auth_node?,
    })
}
