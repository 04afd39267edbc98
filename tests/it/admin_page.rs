//! The admin page's files and the JSON summaries it reads (`/sources`, `/sinks`); how the
//! page shows them is tests/browser.rs.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Relay, form_xml};

const SOURCES: &str = "sources:\n  hq-forms:\n    auth: { type: none }\n";

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_content_security_policy() {
    let relay = Relay::start(SOURCES).await;
    for (path, content_type, marker) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<title>ccrelay admin</title>",
        ),
        (
            "/assets/admin.js",
            "text/javascript; charset=utf-8",
            "textContent",
        ),
        ("/assets/admin.css", "text/css; charset=utf-8", "table"),
    ] {
        let response = relay
            .client
            .get(relay.admin_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
            "{path}: {policy}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
    relay.stop().await;
}

async fn sink(relay: &Relay, name: &str) -> Value {
    let (status, body) = relay.admin_get("/sinks").await;
    assert_eq!(status, 200);
    body["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sink| sink["sink"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {body}"))
        .clone()
}

async fn wait_for_sink(relay: &Relay, name: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let shown = sink(relay, name).await;
        if until(&shown) || tokio::time::Instant::now() > deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sinks_show_health_backlog_and_counts_and_sources_their_requests() {
    let rules = "version: 1\nsinks:\n  blocked: { type: file, path: \"blocker/out.jsonl\" }\nrules:\n  - name: all\n    to: [blocked]\n";
    let (relay, _rules_path, _dir) = Relay::start_with_rules(rules, SOURCES).await;
    let before = sink(&relay, "blocked").await;
    assert_eq!(before["type"], "file");
    assert_eq!(before["in_rules"], true);
    // The check at start runs beside the dispatcher: not done yet (null), or it found the
    // sink writable; never failing.
    assert!(
        before["healthy"].is_null() || before["healthy"] == true,
        "no delivery yet: {before}"
    );
    assert_eq!(before["backlog_bytes"], 0, "{before}");

    // A file where the sink needs a folder: writes fail, transiently, until it is removed.
    let blocker = relay.data_dir.join("blocker");
    std::fs::write(&blocker, "not a folder").unwrap();
    let response = relay
        .post("/ingest/hq-forms", "text/xml", form_xml("blocked-1"))
        .await;
    assert_eq!(response.status(), 202);
    let failing = wait_for_sink(&relay, "blocked", |sink| sink["retried"] != 0).await;
    assert_eq!(failing["healthy"], false, "{failing}");
    assert!(
        failing["backlog_bytes"].as_u64().unwrap() > 0,
        "the record waits in the spool: {failing}"
    );
    assert_eq!(failing["backlog"], 1, "one record waits: {failing}");
    assert_eq!(failing["delivered"], 0);
    assert_eq!(failing["dead_letters"], 0);

    std::fs::remove_file(&blocker).unwrap();
    let recovered = wait_for_sink(&relay, "blocked", |sink| {
        sink["delivered"] == 1 && sink["backlog_bytes"] == 0 && sink["backlog"] == 0
    })
    .await;
    assert_eq!(recovered["healthy"], true, "{recovered}");
    assert_eq!(recovered["backlog_bytes"], 0, "{recovered}");
    assert_eq!(recovered["backlog"], 0, "{recovered}");

    let unknown = relay.post("/ingest/nobody", "text/xml", "<x/>").await;
    assert_eq!(unknown.status(), 404);
    let (status, sources) = relay.admin_get("/sources").await;
    assert_eq!(status, 200);
    assert!(
        sources["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|source| source["source"] != "nobody"),
        "names not in the config never become sources: {sources}"
    );
    let hq = sources["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|source| source["source"] == "hq-forms")
        .unwrap_or_else(|| panic!("{sources}"));
    assert_eq!(hq["requests"], 1);
    assert_eq!(hq["requests_2xx"], 1);
    assert_eq!(hq["accepted"], 1);
    assert!(hq["bytes"].as_u64().unwrap() > 100, "{hq}");
    relay.stop().await;
}
