//! What the sink tests share: the gate on real brokers, loading a relay with forms, and reading
//! what reached the far side.
//!
//! The broker tests talk to the RabbitMQ and tansu that `scripts/brokers.sh` starts, and run
//! only when `CCRELAY_BROKERS=1` (scripts/test.sh sets it after starting them). Without it they
//! say they are skipped and pass, so a plain `cargo test` works on any machine.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::harness::{Relay, form_xml};

pub const OPEN: &str = "sources:\n  \"*\":\n    auth: { type: none }\n";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// Whether the real brokers are up for this run; when not, says the test is skipped.
pub fn brokers_enabled(test: &str) -> bool {
    let enabled = std::env::var("CCRELAY_BROKERS").is_ok_and(|value| value == "1");
    if !enabled {
        eprintln!(
            "skipped {test}: needs the real brokers; run scripts/brokers.sh and set CCRELAY_BROKERS=1 (scripts/test.sh does both)"
        );
    }
    enabled
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Posts `body` as a form to source `hq` and returns the id ingress accepted it under (202).
pub async fn post_form(relay: &Relay, body: String) -> String {
    let response = relay.post("/ingest/hq", "text/xml", body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("a JSON answer");
    answer["id"].as_str().expect("an envelope id").to_owned()
}

/// Posts `count` forms, `concurrency` at a time, and returns the ids ingress accepted (202),
/// in no particular order. Forms are numbered from `first`.
pub async fn post_forms(
    relay: &Relay,
    first: usize,
    count: usize,
    concurrency: usize,
) -> Vec<String> {
    let posts = (first..first + count).map(|n| post_form(relay, form_xml(&format!("form-{n}"))));
    futures::stream::iter(posts)
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// How often each id arrived; panics naming what is missing.
pub fn assert_all_arrived(accepted: &[String], arrived: &[String]) -> usize {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in arrived {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted envelopes never arrived, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates = arrived.len() - counts.len();
    eprintln!(
        "{} accepted, {} arrived, {} duplicates",
        accepted.len(),
        arrived.len(),
        duplicates
    );
    duplicates
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics after `limit` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead letters of `sink`, once there are `count`.
pub async fn dead_letters(relay: &Relay, sink: &str, count: usize) -> Vec<Value> {
    eventually("dead letters", Duration::from_secs(60), || async {
        let (_, listed) = relay.admin_get(&format!("/dead-letters?sink={sink}")).await;
        let letters = listed["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (letters.len() >= count).then_some(letters)
    })
    .await
}

/// Runs `scripts/brokers.sh` with `argument`, as the tests that restart a broker do.
pub fn brokers_script(argument: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(argument)
        .status()
        .expect("run scripts/brokers.sh");
    assert!(status.success(), "scripts/brokers.sh {argument} failed");
}

/// Runs a command that must succeed (rabbitmqctl).
pub fn run(program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Tests that stop or kill a broker hold the write side; every other test of that broker holds
/// the read side, so no test sees an outage it did not cause.
pub static RABBITMQ: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
pub static KAFKA: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The JSON lines of the file sink at `<data_dir>/<path>`, as written.
pub fn file_lines(relay: &Relay, path: &str) -> Vec<String> {
    std::fs::read_to_string(relay.data_dir.join(path))
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Waits until the file sink at `path` has `count` lines and returns them.
pub async fn wait_for_lines(relay: &Relay, path: &str, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} lines in {path}"),
        Duration::from_secs(30),
        || async {
            let lines = file_lines(relay, path);
            (lines.len() >= count).then_some(lines)
        },
    )
    .await
}

/// Proves an outage test tested an outage: the sink had deliveries to retry.
pub async fn assert_outage_was_felt(relay: &Relay, sink: &str) {
    let metrics = relay.metrics().await;
    let prefix = format!("ccrelay_sink_deliveries_total{{outcome=\"retried\",sink=\"{sink}\"}} ");
    let retried: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        retried > 0,
        "the outage should have made deliveries fail:\n{metrics}"
    );
    eprintln!("{retried} deliveries were retried during the outage");
}
