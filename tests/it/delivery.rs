//! Delivery under trouble: a sink that is down holds only its own queue, ingress answers 503
//! once a sink's backlog or the spool's quota is full and takes payloads again once it
//! drains, and operators replay a time range or dead letters with the `ccrelay` commands.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Relay, form_xml, output};

const OPEN: &str = "sources:\n  \"*\":\n    auth: { type: none }\n";

/// Rules with two file sinks: `archive` (under `out/`) and `side`, which writes to
/// `blocked/side.jsonl` and so fails while the test keeps a plain file at `blocked`.
fn two_sinks(side_backlog: u64) -> String {
    format!(
        "version: 1
sinks:
  archive: {{ type: file, path: \"out/{{{{ kind }}}}.jsonl\" }}
  side:
    type: file
    path: blocked/side.jsonl
    max_backlog: {side_backlog}
    retry: {{ initial_delay: 50ms, max_delay: 200ms }}
rules:
  - {{ name: all, to: [archive, side] }}
"
    )
}

fn block(relay: &Relay) -> std::path::PathBuf {
    let blocked = relay.data_dir.join("blocked");
    // The relay creates its data dir as it starts, which may still be under way.
    std::fs::create_dir_all(&relay.data_dir).unwrap();
    std::fs::write(&blocked, "a file where the sink wants a folder").unwrap();
    blocked
}

fn side_output(relay: &Relay) -> Vec<Value> {
    std::fs::read_to_string(relay.data_dir.join("blocked/side.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts a form every 50 ms until one is accepted (or five seconds pass); the last status.
async fn post_until_accepted(relay: &Relay) -> u16 {
    let mut status = 0;
    for _ in 0..100 {
        status = relay
            .post("/ingest/hq", "text/xml", form_xml("f-after"))
            .await
            .status()
            .as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status
}

fn metric(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_sink_that_is_down_holds_its_own_queue_while_the_others_keep_flowing() {
    let (relay, _rules, _dir) = Relay::start_with_rules(&two_sinks(1000), OPEN).await;
    let blocked = block(&relay);
    for n in 0..20 {
        let response = relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await;
        assert_eq!(response.status(), 202);
    }

    assert_eq!(relay.wait_for_output(20).await.len(), 20, "archive flows");
    // The backlog drops once the dispatcher has settled the batch, just after the write.
    let mut metrics = relay.metrics().await;
    for _ in 0..100 {
        if metric(&metrics, "ccrelay_sink_backlog_records{sink=\"archive\"}") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = relay.metrics().await;
    }
    assert_eq!(
        metric(&metrics, "ccrelay_sink_backlog_records{sink=\"side\"}"),
        Some(20.0)
    );
    assert_eq!(
        metric(&metrics, "ccrelay_sink_backlog_records{sink=\"archive\"}"),
        Some(0.0)
    );
    let retried = "ccrelay_sink_deliveries_total{outcome=\"retried\",sink=\"side\"}";
    assert!(metric(&metrics, retried).unwrap() > 0.0);

    std::fs::remove_file(&blocked).unwrap();
    wait_until(|| side_output(&relay).len() >= 20).await;
    assert_eq!(
        side_output(&relay).len(),
        20,
        "side catches up once it is back"
    );
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "ccrelay_sink_routed_total{sink=\"side\"}"),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "ccrelay_sink_deliveries_total{outcome=\"delivered\",sink=\"side\"}"
        ),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "ccrelay_sink_delivery_latency_seconds_count{sink=\"side\"}"
        ),
        Some(20.0)
    );
    relay.stop().await;
}

#[tokio::test]
async fn past_a_sinks_max_backlog_ingress_answers_503_until_the_sink_drains() {
    let (relay, _rules, _dir) = Relay::start_with_rules(&two_sinks(5), OPEN).await;
    let blocked = block(&relay);
    let mut statuses = Vec::new();
    for n in 0..8 {
        let response = relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await;
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "30");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 503, 503, 503]);
    relay.wait_for_output(5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        output(&relay.data_dir).len(),
        5,
        "refused payloads were not kept"
    );

    std::fs::remove_file(&blocked).unwrap();
    wait_until(|| side_output(&relay).len() >= 5).await;
    // The backlog drops as the dispatcher settles; then ingress takes payloads again.
    assert_eq!(post_until_accepted(&relay).await, 202);
    relay.stop().await;
}

#[tokio::test]
async fn a_full_spool_is_503_until_delivery_frees_its_oldest_segment() {
    let spool = "spool: { segment_bytes: 4096, max_disk_bytes: 8192 }\n";
    let relay = Relay::start(&format!("{spool}{OPEN}")).await;
    let mut accepted = 0;
    let mut refused = false;
    for n in 0..20 {
        let status = relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await
            .status();
        match status.as_u16() {
            202 => accepted += 1,
            503 => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused, "the quota is reached after {accepted}");
    relay.wait_for_output(accepted).await;
    assert_eq!(
        post_until_accepted(&relay).await,
        202,
        "delivered segments are freed for new payloads"
    );
    relay.stop().await;
}

/// Runs the `ccrelay` binary against `relay`'s admin listener; returns its exit code, stdout
/// parsed as JSON (`--json`) and stderr. Async: the relay answers on this test's runtime.
async fn ccrelay(relay: &Relay, args: &[&str]) -> (i32, Value, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccrelay"))
        .args(args)
        .args(["--admin", &format!("http://{}", relay.admin), "--json"])
        .output()
        .await
        .expect("run ccrelay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn replay_routes_a_time_range_again_through_rules_changed_since() {
    let one_sink = "version: 1
sinks:
  archive: { type: file, path: \"out/{{ kind }}.jsonl\" }
rules:
  - { name: all, to: [archive] }
";
    let (relay, rules_path, _dir) = Relay::start_with_rules(one_sink, OPEN).await;
    let before = jiff::Timestamp::now();
    for n in 0..5 {
        relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await;
    }
    relay.wait_for_output(5).await;
    // The operator adds an audit sink and wants last hour's forms in it too.
    let with_audit = "version: 1
sinks:
  archive: { type: file, path: \"out/{{ kind }}.jsonl\" }
  audit: { type: file, path: audit.jsonl }
rules:
  - { name: all, to: [archive] }
  - { name: audit, when: { kind: form }, to: [audit] }
";
    std::fs::write(&rules_path, with_audit).unwrap();
    let reload = relay.reload_rules().await;
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());

    let since = before.to_string();
    let (code, dry, _) = ccrelay(
        &relay,
        &["replay", "--since", &since, "--sink", "audit", "--dry-run"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(dry["replayed"], 5);
    assert_eq!(dry["dry_run"], true);
    let (code, report, stderr) =
        ccrelay(&relay, &["replay", "--since", &since, "--sink", "audit"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["scanned"], 5);
    assert_eq!(report["in_range"], 5);
    assert_eq!(report["sinks"], serde_json::json!({ "audit": 5 }));

    let audit_file = relay.data_dir.join("audit.jsonl");
    wait_until(|| std::fs::read_to_string(&audit_file).is_ok_and(|text| text.lines().count() >= 5))
        .await;
    let audited: Vec<Value> = std::fs::read_to_string(&audit_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(audited.len(), 5);
    let archived = output(&relay.data_dir);
    assert_eq!(
        archived.len(),
        5,
        "the sink filter kept archive out of the replay"
    );
    let mut archived_ids: Vec<&Value> = archived.iter().map(|e| &e["id"]).collect();
    let mut audited_ids: Vec<&Value> = audited.iter().map(|e| &e["id"]).collect();
    archived_ids.sort_by_key(|id| id.to_string());
    audited_ids.sort_by_key(|id| id.to_string());
    assert_eq!(archived_ids, audited_ids, "a replay keeps envelope ids");

    // Asking for what is not there is an error that says so.
    let (code, _, stderr) = ccrelay(&relay, &["replay", "--since", &since, "--sink", "nope"]).await;
    assert_eq!(code, 64);
    assert!(
        stderr.contains("no sink `nope` in the rules in force; they have: archive, audit"),
        "{stderr}"
    );
    let (code, _, stderr) = ccrelay(&relay, &["replay", "--since", "yesterday"]).await;
    assert_eq!(code, 64);
    assert!(stderr.contains("400 Bad Request"), "{stderr}");
    relay.stop().await;
}

#[tokio::test]
async fn dlq_commands_list_show_replay_and_purge_through_the_admin_listener() {
    let broken = "version: 1
sinks:
  archive: { type: file, path: \"out/{{ form.missing }}.jsonl\" }
rules:
  - { name: all, to: [archive] }
";
    let (relay, rules_path, _dir) = Relay::start_with_rules(broken, OPEN).await;
    for n in 0..3 {
        relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await;
    }
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = ccrelay(&relay, &["dlq", "list", "--sink", "archive"])
            .await
            .1;
        if listed["count"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["count"], 3, "{listed}");
    let id = listed["dead_letters"][0]["envelope_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, shown, _) = ccrelay(&relay, &["dlq", "show", "archive", &id]).await;
    assert_eq!(code, 0);
    assert_eq!(shown["envelope"]["id"], id.as_str());

    let (code, _, stderr) = ccrelay(&relay, &["dlq", "purge"]).await;
    assert_eq!(code, 64, "a purge of everything needs --all");
    assert!(stderr.contains("--all"), "{stderr}");
    let (code, purged, _) = ccrelay(
        &relay,
        &["dlq", "purge", "--sink", "archive", "--kind", "case"],
    )
    .await;
    assert_eq!((code, &purged["purged"]), (0, &Value::from(0)));

    // The operator fixes the path, then replays what failed.
    std::fs::write(&rules_path, broken.replace("form.missing", "kind")).unwrap();
    let reload = relay.reload_rules().await;
    assert_eq!(reload.status(), 200);
    let (code, replayed, _) = ccrelay(&relay, &["dlq", "replay", "--sink", "archive"]).await;
    assert_eq!(code, 0);
    assert_eq!(replayed["replayed"], 3);
    assert_eq!(relay.wait_for_output(3).await.len(), 3);
    assert_eq!(ccrelay(&relay, &["dlq", "list"]).await.1["count"], 0);
    relay.stop().await;
}

#[tokio::test]
async fn the_commands_say_when_the_relay_cannot_be_reached() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ccrelay"))
        .args(["dlq", "list", "--admin", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("cannot reach the relay's admin listener at http://127.0.0.1:1/dead-letters"),
        "{stderr}"
    );
}
