//! Live rules: a changed file is swapped in whole, a broken one is refused while the old rules
//! keep serving, and no request fails or is lost while files change under load.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Relay, form_xml, wait_for_ids};

const OPEN: &str = "sources:\n  \"*\":\n    auth: { type: none }\n";

fn rules_to(sink: &str) -> String {
    format!(
        "version: 1\nsinks:\n  {sink}: {{ type: file, path: \"out/{sink}/{{{{ kind }}}}.jsonl\" }}\nrules:\n  - name: everything to {sink}\n    to: [{sink}]\n"
    )
}

const BROKEN: &str = "version: 1\nsinks:\n  a: { type: file, path: \"out/a.jsonl\" }\nrules:\n  - name: broken\n    when: { kind: { like: form } }\n    to: [nowhere]\n";

async fn start_with_rules(rules: &str) -> (Relay, std::path::PathBuf, tempfile::TempDir) {
    Relay::start_with_rules(rules, OPEN).await
}

async fn status(relay: &Relay) -> Value {
    relay.admin_get("/rules").await.1
}

async fn reload(relay: &Relay) -> (u16, Value) {
    let response = relay.reload_rules().await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_changed_rules_file_routes_new_payloads_by_the_new_rules() {
    let (relay, rules_path, _dir) = start_with_rules(&rules_to("a")).await;
    let before = status(&relay).await;
    assert_eq!(before["sinks"], serde_json::json!(["a"]));
    assert_eq!(
        relay
            .post("/ingest/hq", "text/xml", form_xml("f1"))
            .await
            .status(),
        202
    );

    std::fs::write(&rules_path, rules_to("b")).unwrap();
    let (code, answer) = reload(&relay).await;
    assert_eq!(code, 200);
    assert_eq!(answer["changed"], true);
    assert_ne!(answer["rules"]["version"], before["version"]);
    assert_eq!(
        relay
            .post("/ingest/hq", "text/xml", form_xml("f2"))
            .await
            .status(),
        202
    );

    relay.wait_for_output(2).await;
    let a = std::fs::read_to_string(relay.data_dir.join("out/a/form.jsonl")).unwrap();
    let b = std::fs::read_to_string(relay.data_dir.join("out/b/form.jsonl")).unwrap();
    assert!(a.contains("\"f1\"") && !a.contains("\"f2\""));
    assert!(b.contains("\"f2\"") && !b.contains("\"f1\""));
    relay.stop().await;
}

#[tokio::test]
async fn a_broken_rules_file_is_refused_and_the_old_rules_keep_serving() {
    let (relay, rules_path, _dir) = start_with_rules(&rules_to("a")).await;
    let version = status(&relay).await["version"].clone();
    std::fs::write(&rules_path, BROKEN).unwrap();
    let (code, answer) = reload(&relay).await;
    assert_eq!(code, 422);
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("nowhere"),
        "names the unknown sink: {detail}"
    );
    assert!(detail.contains("like"), "names the unknown op: {detail}");

    let after = status(&relay).await;
    assert_eq!(after["version"], version, "the old rules stay in force");
    assert!(after["last_error"].as_str().unwrap().contains("nowhere"));
    assert_eq!(
        relay
            .post("/ingest/hq", "text/xml", form_xml("f1"))
            .await
            .status(),
        202
    );
    relay.wait_for_output(1).await;
    assert!(relay.data_dir.join("out/a/form.jsonl").exists());

    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("ccrelay_rules_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_rules_file_is_reloaded_when_it_changes_without_being_asked() {
    let (relay, rules_path, _dir) = start_with_rules(&rules_to("a")).await;
    let version = status(&relay).await["version"].clone();
    std::fs::write(&rules_path, rules_to("b")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&relay).await["version"] == version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn no_request_fails_or_is_lost_while_rules_change_under_load() {
    let (relay, rules_path, _dir) = start_with_rules(&rules_to("a")).await;
    let url = relay.url("/ingest/hq");
    let client = relay.client.clone();
    let sender = tokio::spawn(async move {
        let mut accepted = Vec::new();
        for n in 0..600 {
            let response = client
                .post(&url)
                .header("content-type", "text/xml")
                .body(form_xml(&format!("load-{n}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202, "request {n} failed during a reload");
            let answer: Value = response.json().await.unwrap();
            accepted.push(answer["id"].as_str().unwrap().to_string());
        }
        accepted
    });
    for round in 0..6 {
        let text = match round % 3 {
            0 => rules_to("b"),
            1 => BROKEN.to_string(),
            _ => rules_to("a"),
        };
        std::fs::write(&rules_path, text).unwrap();
        reload(&relay).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let accepted = sender.await.unwrap();
    let delivered = wait_for_ids(&relay.data_dir, &accepted).await;
    let ids: HashSet<&str> = delivered
        .iter()
        .filter_map(|envelope| envelope["id"].as_str())
        .collect();
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted envelopes reached no sink",
        missing.len()
    );
    assert_eq!(
        delivered.len(),
        accepted.len(),
        "each envelope went to exactly one sink"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_rule_can_send_the_raw_body_or_a_projection_instead_of_the_envelope() {
    let rules = r#"version: 1
sinks:
  raw: { type: file, path: "out/raw.xml" }
  slim: { type: file, path: "out/slim.jsonl" }
rules:
  - name: raw copy
    to: [raw]
    send: raw
  - name: slim
    to: [slim]
    send: { keep: [id, kind, form.id], set: { origin: ccrelay } }
"#;
    let (relay, _rules_path, _dir) = start_with_rules(rules).await;
    let body = form_xml("f1");
    assert_eq!(
        relay
            .post("/ingest/hq", "text/xml", body.clone())
            .await
            .status(),
        202
    );
    let slim_path = relay.data_dir.join("out/slim.jsonl");
    let raw_path = relay.data_dir.join("out/raw.xml");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(slim_path.exists() && raw_path.exists()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both sinks are written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&raw_path).unwrap(),
        format!("{body}\n"),
        "the body byte for byte"
    );
    let slim: Value =
        serde_json::from_str(std::fs::read_to_string(&slim_path).unwrap().trim()).unwrap();
    assert_eq!(slim["kind"], "form");
    assert_eq!(slim["form"], serde_json::json!({ "id": "f1" }));
    assert_eq!(slim["origin"], "ccrelay");
    assert!(slim.get("cases").is_none());
    relay.stop().await;
}
