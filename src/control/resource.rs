//! The Data Forwarding API v0.5 resource (commcare-forwarding.md §7): forwarder types, the
//! wire object `{id, type, domain, url, version, resource_uri}` and tastypie's list envelope.
//!
//! These are the wire types both directions share: the client reads them from HQ, the served
//! API writes them. No IO here.

use serde::{Deserialize, Serialize};

use crate::envelope::Kind;

/// The API's path under a domain, with its trailing slash as tastypie writes it.
pub const API_PATH: &str = "api/v0.5/data-forwarding/";

/// The list URL of a domain's forwarders, relative to HQ's root.
pub fn list_path(domain: &str) -> String {
    format!("/a/{domain}/{API_PATH}")
}

/// The detail URL of one forwarder, relative to HQ's root.
pub fn detail_path(domain: &str, id: &str) -> String {
    format!("/a/{domain}/{API_PATH}{id}/")
}

/// Whether `text` can be a CommCare project space name: letters, digits, `-`, `_`, `.`.
pub fn is_domain_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// Whether `text` is an absolute `http` or `https` URL with a host.
pub fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

/// A forwarder ("repeater") class HQ knows (commcare-forwarding.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RepeaterType {
    FormRepeater,
    CaseRepeater,
    CreateCaseRepeater,
    UpdateCaseRepeater,
    ShortFormRepeater,
    AppStructureRepeater,
    UserRepeater,
    LocationRepeater,
}

impl RepeaterType {
    pub const ALL: [RepeaterType; 8] = [
        RepeaterType::FormRepeater,
        RepeaterType::CaseRepeater,
        RepeaterType::CreateCaseRepeater,
        RepeaterType::UpdateCaseRepeater,
        RepeaterType::ShortFormRepeater,
        RepeaterType::AppStructureRepeater,
        RepeaterType::UserRepeater,
        RepeaterType::LocationRepeater,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepeaterType::FormRepeater => "FormRepeater",
            RepeaterType::CaseRepeater => "CaseRepeater",
            RepeaterType::CreateCaseRepeater => "CreateCaseRepeater",
            RepeaterType::UpdateCaseRepeater => "UpdateCaseRepeater",
            RepeaterType::ShortFormRepeater => "ShortFormRepeater",
            RepeaterType::AppStructureRepeater => "AppStructureRepeater",
            RepeaterType::UserRepeater => "UserRepeater",
            RepeaterType::LocationRepeater => "LocationRepeater",
        }
    }

    /// Whether the served API accepts this type: HQ forwards a case's full state, so ccrelay
    /// cannot tell a creation from an update, and the two case-event types are refused.
    pub fn is_served(self) -> bool {
        !matches!(
            self,
            RepeaterType::CreateCaseRepeater | RepeaterType::UpdateCaseRepeater
        )
    }

    pub fn parse(name: &str) -> Option<RepeaterType> {
        RepeaterType::ALL
            .into_iter()
            .find(|repeater| repeater.as_str() == name)
    }

    /// The payload kind this forwarder sends.
    pub fn kind(self) -> Kind {
        match self {
            RepeaterType::FormRepeater => Kind::Form,
            RepeaterType::CaseRepeater
            | RepeaterType::CreateCaseRepeater
            | RepeaterType::UpdateCaseRepeater => Kind::Case,
            RepeaterType::ShortFormRepeater => Kind::FormStub,
            RepeaterType::AppStructureRepeater => Kind::App,
            RepeaterType::UserRepeater => Kind::User,
            RepeaterType::LocationRepeater => Kind::Location,
        }
    }

    /// The `version` HQ showed: `"2.0"` for case and form stub forwarders, null otherwise.
    pub fn default_version(self) -> Option<&'static str> {
        match self {
            RepeaterType::CaseRepeater
            | RepeaterType::CreateCaseRepeater
            | RepeaterType::UpdateCaseRepeater
            | RepeaterType::ShortFormRepeater => Some("2.0"),
            _ => None,
        }
    }

    /// HQ's UI name, for the manual steps ("Forward Forms").
    pub fn ui_name(self) -> &'static str {
        match self {
            RepeaterType::FormRepeater => "Forward Forms",
            RepeaterType::CaseRepeater => "Forward Cases",
            RepeaterType::CreateCaseRepeater => "Forward Cases on Creation Only",
            RepeaterType::UpdateCaseRepeater => "Forward Cases on Update Only",
            RepeaterType::ShortFormRepeater => "Forward Form Stubs",
            RepeaterType::AppStructureRepeater => "Forward App Schema Changes",
            RepeaterType::UserRepeater => "Forward Users",
            RepeaterType::LocationRepeater => "Forward Locations",
        }
    }

    /// The "Payload Format" to pick in HQ so ccrelay receives what its decoders expect;
    /// `None` where HQ offers one format only.
    pub fn payload_format(self) -> Option<&'static str> {
        match self {
            RepeaterType::FormRepeater => Some("XML (form_xml)"),
            RepeaterType::CaseRepeater
            | RepeaterType::CreateCaseRepeater
            | RepeaterType::UpdateCaseRepeater => Some("XML (case_xml) or JSON (case_json)"),
            _ => None,
        }
    }
}

impl std::fmt::Display for RepeaterType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One forwarder as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarder {
    pub id: String,
    /// Kept as text when reading from HQ, which may know types this build does not.
    #[serde(rename = "type")]
    pub repeater_type: String,
    pub domain: String,
    pub url: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub resource_uri: String,
}

/// Tastypie's list `meta`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {
    pub limit: u64,
    pub offset: u64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub total_count: u64,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub meta: ListMeta,
    pub objects: Vec<Forwarder>,
}

/// The body of a create or update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwarderBody<'a> {
    pub domain: &'a str,
    #[serde(rename = "type")]
    pub repeater_type: &'a str,
    pub url: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for repeater in RepeaterType::ALL {
            assert_eq!(RepeaterType::parse(repeater.as_str()), Some(repeater));
            let json = serde_json::to_string(&repeater).expect("serialises");
            assert_eq!(json, format!("\"{}\"", repeater.as_str()));
        }
        assert_eq!(RepeaterType::parse("formrepeater"), None);
    }

    #[test]
    fn kinds_and_versions_follow_the_contract() {
        assert_eq!(RepeaterType::FormRepeater.kind(), Kind::Form);
        assert_eq!(RepeaterType::ShortFormRepeater.kind(), Kind::FormStub);
        assert_eq!(RepeaterType::AppStructureRepeater.kind(), Kind::App);
        assert_eq!(RepeaterType::FormRepeater.default_version(), None);
        assert_eq!(RepeaterType::CaseRepeater.default_version(), Some("2.0"));
        assert_eq!(
            RepeaterType::ShortFormRepeater.default_version(),
            Some("2.0")
        );
    }

    #[test]
    fn paths_keep_tastypies_trailing_slash() {
        assert_eq!(list_path("demo"), "/a/demo/api/v0.5/data-forwarding/");
        assert_eq!(
            detail_path("demo", "abc"),
            "/a/demo/api/v0.5/data-forwarding/abc/"
        );
    }
}
