//! Subscriptions: routes that come from outside the rules file, such as the endpoints
//! registered through the Data Forwarding API ccrelay serves (`control`).
//!
//! A subscription is a sink plus the domain and payload kinds it receives, always as the raw
//! body (`send: raw`). Subscriptions are additive and independent of the file: they fire
//! whatever the file's rules did (`stop: true` does not hide an envelope from them), and an
//! envelope they match still goes to the file's `unmatched` sinks if no file rule matched it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::envelope::Kind;
use crate::sinks::SinkConfig;

/// One external subscriber, compiled into a sink and a condition on domain and kind.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// The sink's name; it must not clash with a sink of the rules file.
    pub sink: String,
    pub domain: String,
    pub kinds: Vec<Kind>,
    pub config: SinkConfig,
    /// Text that changes whenever the subscription's settings change (e.g. its URL), so a
    /// changed subscription makes a new rule set version.
    pub fingerprint: String,
}

impl Subscription {
    /// Whether the envelope is of this subscription's domain and one of its kinds.
    pub fn matches(&self, envelope: &Value) -> bool {
        envelope["domain"].as_str() == Some(self.domain.as_str())
            && envelope["kind"]
                .as_str()
                .and_then(Kind::parse)
                .is_some_and(|kind| self.kinds.contains(&kind))
    }
}

/// A short digest of every subscription's name and fingerprint, in order.
pub(super) fn digest(subscriptions: &[Subscription]) -> String {
    let mut hasher = Sha256::new();
    for subscription in subscriptions {
        hasher.update(subscription.sink.as_bytes());
        hasher.update([0]);
        hasher.update(subscription.fingerprint.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::{RuleSet, Shape};

    const FILE: &str = "\
version: 1
sinks:
  archive: { type: file, path: out.jsonl }
  urgent: { type: file, path: urgent.jsonl }
rules:
  - name: urgent-first
    when: { form.xmlns: urgent }
    to: urgent
    stop: true
  - name: everything
    to: archive
";

    fn subscription(sink: &str, domain: &str, kinds: &[Kind]) -> Subscription {
        let file = RuleSet::embedded_default();
        Subscription {
            sink: sink.to_owned(),
            domain: domain.to_owned(),
            kinds: kinds.to_vec(),
            config: file.sinks["archive"].config.clone(),
            fingerprint: format!("{sink}-v1"),
        }
    }

    /// The sinks an envelope goes to, with the rule and whether the shape is raw.
    fn check(subscriptions: Vec<Subscription>, envelope: Value, expected: &[(&str, &str, bool)]) {
        let rules = RuleSet::parse(FILE, "rules.yaml")
            .expect("valid")
            .with_subscriptions(subscriptions)
            .expect("no clash");
        let routes: Vec<(String, String, bool)> = rules
            .route(&envelope)
            .into_iter()
            .map(|route| (route.sink, route.rule, route.shape == Shape::Raw))
            .collect();
        let expected: Vec<(String, String, bool)> = expected
            .iter()
            .map(|(sink, rule, raw)| ((*sink).to_owned(), (*rule).to_owned(), *raw))
            .collect();
        assert_eq!(routes, expected, "for {envelope}");
    }

    #[test]
    fn a_subscription_receives_its_domain_and_kinds_raw() {
        let forms = subscription("control-a", "kenya", &[Kind::Form]);
        let cases = subscription("control-b", "kenya", &[Kind::Case]);
        check(
            vec![forms.clone(), cases.clone()],
            json!({"domain": "kenya", "kind": "form", "form": {"xmlns": "x"}}),
            &[
                ("archive", "everything", false),
                ("control-a", "control-a", true),
            ],
        );
        check(
            vec![forms.clone(), cases.clone()],
            json!({"domain": "kenya", "kind": "case"}),
            &[
                ("archive", "everything", false),
                ("control-b", "control-b", true),
            ],
        );
        check(
            vec![forms.clone(), cases],
            json!({"domain": "uganda", "kind": "form"}),
            &[("archive", "everything", false)],
        );
        check(
            vec![forms],
            json!({"domain": null, "kind": "form"}),
            &[("archive", "everything", false)],
        );
    }

    #[test]
    fn a_stop_rule_does_not_hide_envelopes_from_subscriptions() {
        check(
            vec![subscription("control-a", "kenya", &[Kind::Form])],
            json!({"domain": "kenya", "kind": "form", "form": {"xmlns": "urgent"}}),
            &[
                ("urgent", "urgent-first", false),
                ("control-a", "control-a", true),
            ],
        );
    }

    #[test]
    fn versions_follow_the_subscriptions_and_sinks_are_replaced() {
        let file = RuleSet::parse(FILE, "rules.yaml").expect("valid");
        let file_version = file.version().to_owned();
        let with_a = file
            .with_subscriptions(vec![subscription("control-a", "k", &[Kind::Form])])
            .expect("no clash");
        let version_a = with_a.version().to_owned();
        assert!(
            version_a.starts_with(&format!("{file_version}+")),
            "{version_a}"
        );
        assert!(with_a.sinks.contains_key("control-a"));

        let mut changed = subscription("control-a", "k", &[Kind::Form]);
        changed.fingerprint = "control-a-v2".to_owned();
        let with_b = with_a.with_subscriptions(vec![changed]).expect("no clash");
        assert_ne!(with_b.version(), version_a);

        let none = with_b.with_subscriptions(Vec::new()).expect("no clash");
        assert_eq!(none.version(), file_version);
        assert!(!none.sinks.contains_key("control-a"));
        assert_eq!(none.sinks.len(), 2);
    }

    #[test]
    fn a_clash_with_a_file_sink_is_refused() {
        let file = RuleSet::parse(FILE, "rules.yaml").expect("valid");
        let error = file
            .with_subscriptions(vec![subscription("archive", "k", &[Kind::Form])])
            .expect_err("clash");
        assert_eq!(
            error,
            "sink `archive` of a subscription is already defined in rules.yaml; rename that sink"
        );
    }
}
