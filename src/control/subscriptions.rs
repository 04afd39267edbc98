//! Registrations compiled into rule subscriptions: each registered endpoint becomes a sink
//! named `control-<id>` that receives, raw, its domain's payloads of its type's kind. Pure.
//!
//! The sink settings come from `sink_for`, so this stays independent of how a sink posts.

use crate::rules::Subscription;
use crate::sinks::SinkConfig;

use super::registry::Registration;

/// The sink name a registration's deliveries go through (metrics, dead letters, cursors).
pub fn sink_name(registration: &Registration) -> String {
    format!("control-{}", registration.id)
}

/// One subscription per registration, in id order.
pub fn compile(
    registrations: &[Registration],
    sink_for: &dyn Fn(&Registration) -> SinkConfig,
) -> Vec<Subscription> {
    registrations
        .iter()
        .map(|registration| Subscription {
            sink: sink_name(registration),
            domain: registration.domain.clone(),
            kinds: vec![registration.repeater_type.kind()],
            config: sink_for(registration),
            fingerprint: format!("{} {}", registration.repeater_type, registration.url),
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
        let archive = RuleSet::embedded_default().sinks["archive"].clone();
        let subscriptions = compile(registrations, &|_| archive.clone());
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
    fn a_changed_url_changes_the_fingerprint() {
        let archive = RuleSet::embedded_default().sinks["archive"].clone();
        let before = registration("f", "d", RepeaterType::FormRepeater);
        let mut after = before.clone();
        after.url.push_str("/v2");
        let sink_for = |_: &Registration| archive.clone();
        assert_ne!(
            compile(&[before], &sink_for)[0].fingerprint,
            compile(&[after], &sink_for)[0].fingerprint
        );
    }
}
