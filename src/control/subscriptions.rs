//! Registrations compiled into rule subscriptions: each registered endpoint becomes a sink
//! named `control-<id>` that receives, raw, its domain's payloads of its type's kind. Pure.
//!
//! [`http_sink`] makes the sink that posts as HQ would have: the raw body with its content
//! type, HQ's `received-on` (forms, form stubs) or `server-modified-on` (cases) header, one
//! request per payload. `compile` takes the sink maker as a parameter so that routing can be
//! tested without a network.

use std::time::Duration;

use crate::rules::Subscription;
use crate::sinks::{HttpSinkConfig, SinkConfig};
use crate::template::Template;

use super::registry::Registration;
use super::resource::RepeaterType;

/// How long a registered endpoint has to answer; HQ itself waits up to 300 s.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Requests in flight at once per endpoint, as HQ's `DEFAULT_REPEATER_WORKERS`.
pub const MAX_IN_FLIGHT: usize = 7;

/// The HTTP sink for a registration: `POST` to its URL, with HQ's payload header for its
/// type taken from the envelope (empty when the payload arrived without it).
///
/// # Errors
/// When the URL cannot be used as a literal template (the API refuses braces in URLs, so
/// only a hand-edited registrations file gets here).
pub fn http_sink(registration: &Registration) -> Result<SinkConfig, String> {
    if registration.url.contains(['{', '}']) {
        return Err(format!(
            "registration {}: the URL must not contain `{{` or `}}`",
            registration.id
        ));
    }
    let url = Template::compile(&registration.url)
        .map_err(|err| format!("registration {}: {err}", registration.id))?;
    let header = match registration.repeater_type {
        RepeaterType::FormRepeater | RepeaterType::ShortFormRepeater => Some("received-on"),
        RepeaterType::CaseRepeater
        | RepeaterType::CreateCaseRepeater
        | RepeaterType::UpdateCaseRepeater => Some("server-modified-on"),
        RepeaterType::AppStructureRepeater
        | RepeaterType::UserRepeater
        | RepeaterType::LocationRepeater => None,
    };
    let headers = header
        .map(|name| {
            let value =
                Template::compile(&format!("{{{{ headers[\"{name}\"] | default(\"\") }}}}"))
                    .expect("the header template is valid");
            vec![(name.to_owned(), value)]
        })
        .unwrap_or_default();
    Ok(SinkConfig::Http(HttpSinkConfig {
        url,
        method: reqwest::Method::POST,
        headers,
        auth: None,
        timeout: TIMEOUT,
        signing_key: None,
        max_in_flight: MAX_IN_FLIGHT,
    }))
}

/// The sink name a registration's deliveries go through (metrics, dead letters, cursors).
pub fn sink_name(registration: &Registration) -> String {
    format!("control-{}", registration.id)
}

/// One subscription per registration, in id order. A registration whose sink cannot be
/// made is logged and left out.
pub fn compile(
    registrations: &[Registration],
    sink_for: &dyn Fn(&Registration) -> Result<SinkConfig, String>,
) -> Vec<Subscription> {
    registrations
        .iter()
        .filter_map(|registration| match sink_for(registration) {
            Ok(config) => Some(Subscription {
                sink: sink_name(registration),
                domain: registration.domain.clone(),
                kinds: vec![registration.repeater_type.kind()],
                config,
                fingerprint: format!("{} {}", registration.repeater_type, registration.url),
            }),
            Err(error) => {
                tracing::error!(id = %registration.id, error = %error, "registration not delivered to");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::control::RepeaterType;
    use crate::rules::{RuleSet, Shape};

    fn registration(id: &str, domain: &str, repeater_type: RepeaterType) -> Registration {
        Registration {
            id: id.to_owned(),
            domain: domain.to_owned(),
            repeater_type,
            url: format!("https://svc.example.org/{id}"),
            version: None,
        }
    }

    /// Which sinks each kind of envelope of domain `d` reaches, raw.
    fn check(registrations: &[Registration], kind: &str, domain: &str, expected: &[&str]) {
        let archive = RuleSet::embedded_default().sinks["archive"].config.clone();
        let subscriptions = compile(registrations, &|_| Ok(archive.clone()));
        let rules = RuleSet::embedded_default()
            .with_subscriptions(subscriptions)
            .expect("no clash");
        let routed: Vec<String> = rules
            .route(&json!({"domain": domain, "kind": kind}))
            .into_iter()
            .filter(|route| route.shape == Shape::Raw)
            .map(|route| route.sink)
            .collect();
        assert_eq!(routed, expected, "{kind} in {domain}");
    }

    #[test]
    fn each_type_receives_its_kind_in_its_domain() {
        let registrations = [
            registration("f", "d", RepeaterType::FormRepeater),
            registration("c", "d", RepeaterType::CaseRepeater),
            registration("s", "d", RepeaterType::ShortFormRepeater),
            registration("a", "d", RepeaterType::AppStructureRepeater),
            registration("o", "other", RepeaterType::FormRepeater),
        ];
        check(&registrations, "form", "d", &["control-f"]);
        check(&registrations, "case", "d", &["control-c"]);
        check(&registrations, "form_stub", "d", &["control-s"]);
        check(&registrations, "app", "d", &["control-a"]);
        check(&registrations, "form", "other", &["control-o"]);
        check(&registrations, "user", "d", &[]);
    }

    #[test]
    fn the_http_sink_posts_to_the_url_with_hqs_header_for_the_type() {
        let header_of = |repeater_type| {
            let SinkConfig::Http(config) =
                http_sink(&registration("f", "d", repeater_type)).expect("sink")
            else {
                panic!("an HTTP sink")
            };
            assert_eq!(config.url.source(), "https://svc.example.org/f");
            assert_eq!(config.method, reqwest::Method::POST);
            config.headers.first().map(|(name, _)| name.clone())
        };
        assert_eq!(
            header_of(RepeaterType::FormRepeater).as_deref(),
            Some("received-on")
        );
        assert_eq!(
            header_of(RepeaterType::ShortFormRepeater).as_deref(),
            Some("received-on")
        );
        assert_eq!(
            header_of(RepeaterType::CaseRepeater).as_deref(),
            Some("server-modified-on")
        );
        assert_eq!(header_of(RepeaterType::AppStructureRepeater), None);

        let mut braces = registration("b", "d", RepeaterType::FormRepeater);
        braces.url = "https://svc.example.org/{{ id }}".to_owned();
        assert!(http_sink(&braces).is_err());
        let compiled = compile(&[braces], &http_sink);
        assert!(compiled.is_empty(), "left out, not failing the others");
    }

    #[test]
    fn a_changed_url_changes_the_fingerprint() {
        let archive = RuleSet::embedded_default().sinks["archive"].config.clone();
        let before = registration("f", "d", RepeaterType::FormRepeater);
        let mut after = before.clone();
        after.url.push_str("/v2");
        let sink_for = |_: &Registration| Ok(archive.clone());
        assert_ne!(
            compile(&[before], &sink_for)[0].fingerprint,
            compile(&[after], &sink_for)[0].fingerprint
        );
    }
}
