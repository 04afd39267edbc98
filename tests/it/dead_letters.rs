//! Dead letters on the admin listener: a delivery that fails for good is kept with its reason,
//! listed and shown, replayed once the sink is fixed, or purged.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Relay, form_xml};

const OPEN: &str = "sources:\n  \"*\":\n    auth: { type: none }\n";

fn rules_with_path(path: &str) -> String {
    format!(
        "version: 1\nsinks:\n  archive: {{ type: file, path: \"{path}\" }}\nrules:\n  - name: all\n    to: [archive]\n"
    )
}

async fn wait_for_dead_letters(relay: &Relay, count: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listed) = relay.admin_get("/dead-letters").await;
        if listed["count"] == count || tokio::time::Instant::now() > deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_permanent_failure_becomes_a_dead_letter_that_can_be_replayed_after_a_fix() {
    let (relay, rules_path, _dir) =
        Relay::start_with_rules(&rules_with_path("out/{{ form.missing }}.jsonl"), OPEN).await;
    for n in 0..2 {
        let response = relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await;
        assert_eq!(response.status(), 202);
    }

    let listed = wait_for_dead_letters(&relay, 2).await;
    assert_eq!(listed["count"], 2, "{listed}");
    let first = &listed["dead_letters"][0];
    assert_eq!(first["sink"], "archive");
    assert_eq!(first["rule"], "all");
    assert_eq!(first["kind"], "form");
    assert!(
        first["reason"].as_str().unwrap().contains("undefined"),
        "{first}"
    );
    let id = first["envelope_id"].as_str().unwrap();
    let (status, shown) = relay
        .admin_get(&format!("/dead-letters/archive/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["envelope"]["id"], id);
    assert!(!shown["body_base64"].as_str().unwrap().is_empty());
    assert_eq!(relay.admin_get("/dead-letters/archive/nope").await.0, 404);
    assert_eq!(
        relay.admin_get("/dead-letters?sink=other").await.1["count"],
        0
    );

    std::fs::write(&rules_path, rules_with_path("out/fixed.jsonl")).unwrap();
    let reloaded = relay.reload_rules().await;
    assert_eq!(reloaded.status(), 200);
    let replay = relay
        .client
        .post(relay.admin_url("/dead-letters/replay?kind=form"))
        .send()
        .await
        .unwrap();
    let answer: Value = replay.json().await.unwrap();
    assert_eq!(answer["replayed"], 2, "{answer}");

    let delivered = relay.wait_for_output(2).await;
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        relay.admin_get("/dead-letters").await.1["count"],
        0,
        "replayed letters are gone"
    );
    relay.stop().await;
}

#[tokio::test]
async fn dead_letters_can_be_purged() {
    let (relay, _rules_path, _dir) =
        Relay::start_with_rules(&rules_with_path("out/{{ form.missing }}.jsonl"), OPEN).await;
    relay.post("/ingest/hq", "text/xml", form_xml("f1")).await;
    wait_for_dead_letters(&relay, 1).await;
    let purge = relay
        .client
        .delete(relay.admin_url("/dead-letters?sink=archive"))
        .send()
        .await
        .unwrap();
    let answer: Value = purge.json().await.unwrap();
    assert_eq!(answer["purged"], 1);
    assert_eq!(relay.admin_get("/dead-letters").await.1["count"], 0);
    relay.stop().await;
}
