//! Plan: what to create, update or delete in HQ so its forwarders match `control.forwarders`.
//! Pure: the forwarders HQ has go in, a list of changes comes out.
//!
//! Per configured domain, each wanted (type, URL) pair is kept when HQ has a forwarder of
//! that type at that URL; otherwise one of *ours* (a forwarder whose URL starts with
//! `{public_url}/ingest/`) of the same type that nothing else wants is pointed at the URL;
//! otherwise one is created. Ours left over are deleted. Forwarders that point elsewhere are
//! never touched, unless `all` is set, when those of the configured domains are deleted too.

use serde::Serialize;

use super::resource::{Forwarder, RepeaterType};
use crate::config::ControlSettings;

/// One forwarder ccrelay wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub domain: String,
    pub repeater_type: RepeaterType,
    pub url: String,
}

/// One change to make in HQ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    Create {
        domain: String,
        #[serde(rename = "type")]
        repeater_type: RepeaterType,
        url: String,
    },
    Update {
        forwarder: Forwarder,
        url: String,
    },
    Delete {
        forwarder: Forwarder,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create {
                domain,
                repeater_type,
                url,
            } => write!(f, "+ create {repeater_type} in {domain} -> {url}"),
            Change::Update { forwarder, url } => write!(
                f,
                "~ update {} {} in {}: {} -> {url}",
                forwarder.repeater_type, forwarder.id, forwarder.domain, forwarder.url
            ),
            Change::Delete { forwarder } => write!(
                f,
                "- delete {} {} in {} -> {}",
                forwarder.repeater_type, forwarder.id, forwarder.domain, forwarder.url
            ),
        }
    }
}

/// The plan for every configured domain: changes, and how many forwarders are already right.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
}

/// The URL HQ posts `source`'s payloads to.
pub fn ingest_url(public_url: &str, source: &str) -> String {
    format!("{}/ingest/{source}", public_url.trim_end_matches('/'))
}

/// Every (domain, type, URL) the config wants, in config order.
pub fn desired(settings: &ControlSettings) -> Vec<Desired> {
    let Some(public_url) = &settings.public_url else {
        return Vec::new();
    };
    settings
        .forwarders
        .iter()
        .flat_map(|forwarder| {
            forwarder.types.iter().map(|repeater_type| Desired {
                domain: forwarder.domain.clone(),
                repeater_type: *repeater_type,
                url: ingest_url(public_url, &forwarder.source),
            })
        })
        .collect()
}

/// The configured domains, each once, in config order.
pub fn domains(settings: &ControlSettings) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    for forwarder in &settings.forwarders {
        if !domains.contains(&forwarder.domain) {
            domains.push(forwarder.domain.clone());
        }
    }
    domains
}

/// The changes that make `existing` (one domain's forwarders in HQ) match `wanted` (that
/// domain's wanted forwarders).
pub fn plan_domain(
    wanted: &[Desired],
    existing: &[Forwarder],
    public_url: &str,
    all: bool,
) -> Plan {
    let ours_prefix = format!("{}/ingest/", public_url.trim_end_matches('/'));
    let is_ours = |forwarder: &Forwarder| forwarder.url.starts_with(&ours_prefix);
    let mut used = vec![false; existing.len()];
    let mut plan = Plan::default();
    let mut unmet = Vec::new();
    for desired in wanted {
        let exact = existing.iter().enumerate().position(|(index, forwarder)| {
            !used[index]
                && forwarder.repeater_type == desired.repeater_type.as_str()
                && forwarder.url == desired.url
        });
        match exact {
            Some(index) => {
                used[index] = true;
                plan.unchanged += 1;
            }
            None => unmet.push(desired),
        }
    }
    for desired in unmet {
        let reusable = existing.iter().enumerate().position(|(index, forwarder)| {
            !used[index]
                && is_ours(forwarder)
                && forwarder.repeater_type == desired.repeater_type.as_str()
        });
        match reusable {
            Some(index) => {
                used[index] = true;
                plan.changes.push(Change::Update {
                    forwarder: existing[index].clone(),
                    url: desired.url.clone(),
                });
            }
            None => plan.changes.push(Change::Create {
                domain: desired.domain.clone(),
                repeater_type: desired.repeater_type,
                url: desired.url.clone(),
            }),
        }
    }
    for (index, forwarder) in existing.iter().enumerate() {
        if !used[index] && (all || is_ours(forwarder)) {
            plan.changes.push(Change::Delete {
                forwarder: forwarder.clone(),
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "https://relay.example.org";

    fn existing(id: &str, repeater_type: &str, url: &str) -> Forwarder {
        Forwarder {
            id: id.to_owned(),
            repeater_type: repeater_type.to_owned(),
            domain: "d".to_owned(),
            url: url.to_owned(),
            version: None,
            resource_uri: String::new(),
        }
    }

    fn want(repeater_type: RepeaterType, source: &str) -> Desired {
        Desired {
            domain: "d".to_owned(),
            repeater_type,
            url: ingest_url(PUBLIC, source),
        }
    }

    fn check(
        wanted: &[Desired],
        have: &[Forwarder],
        all: bool,
        expected: &[&str],
        unchanged: usize,
    ) {
        let plan = plan_domain(wanted, have, PUBLIC, all);
        let lines: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(lines, expected);
        assert_eq!(plan.unchanged, unchanged);
    }

    #[test]
    fn creates_what_is_missing() {
        check(
            &[
                want(RepeaterType::FormRepeater, "hq"),
                want(RepeaterType::CaseRepeater, "hq"),
            ],
            &[],
            false,
            &[
                "+ create FormRepeater in d -> https://relay.example.org/ingest/hq",
                "+ create CaseRepeater in d -> https://relay.example.org/ingest/hq",
            ],
            0,
        );
    }

    #[test]
    fn keeps_what_matches_and_leaves_foreign_forwarders_alone() {
        check(
            &[want(RepeaterType::FormRepeater, "hq")],
            &[
                existing("1", "FormRepeater", "https://relay.example.org/ingest/hq"),
                existing("2", "FormRepeater", "https://other.example.org/forms"),
            ],
            false,
            &[],
            1,
        );
    }

    #[test]
    fn repoints_ours_and_deletes_ours_left_over() {
        check(
            &[want(RepeaterType::FormRepeater, "forms")],
            &[
                existing("1", "FormRepeater", "https://relay.example.org/ingest/hq"),
                existing("2", "CaseRepeater", "https://relay.example.org/ingest/hq"),
            ],
            false,
            &[
                "~ update FormRepeater 1 in d: https://relay.example.org/ingest/hq -> https://relay.example.org/ingest/forms",
                "- delete CaseRepeater 2 in d -> https://relay.example.org/ingest/hq",
            ],
            0,
        );
    }

    #[test]
    fn all_deletes_foreign_forwarders_too() {
        check(
            &[want(RepeaterType::FormRepeater, "hq")],
            &[
                existing("1", "FormRepeater", "https://relay.example.org/ingest/hq"),
                existing("2", "FormRepeater", "https://other.example.org/forms"),
            ],
            true,
            &["- delete FormRepeater 2 in d -> https://other.example.org/forms"],
            1,
        );
    }

    #[test]
    fn a_prefix_lookalike_is_not_ours() {
        check(
            &[],
            &[existing(
                "1",
                "FormRepeater",
                "https://relay.example.org.evil/ingest/hq",
            )],
            false,
            &[],
            0,
        );
    }
}
