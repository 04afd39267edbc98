//! The admin page in a real browser: headless Chromium (Debian's `chromium` package) loads
//! `/` from a running relay and the test reads what the page shows, then clicks replay.
//!
//! Runs with `--features browser`, which scripts/test.sh turns on after installing Chromium;
//! with the feature on and Chromium missing, it fails saying so.
#![cfg(feature = "browser")]

#[path = "browser/cdp.rs"]
mod cdp;
#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use serde_json::{Value, json};

use cdp::{Browser, Page};
use harness::{Relay, form_xml};

const OPEN: &str = "sources:\n  hq-forms:\n    auth: { type: none }\n";

/// `archive` fails for good while its path template names a missing field; `copy` works.
fn rules(archive_path: &str, extra: &str) -> String {
    format!(
        "version: 1\n{extra}sinks:\n  archive: {{ type: file, path: \"{archive_path}\" }}\n  copy: {{ type: file, path: \"copy/out.jsonl\" }}\nrules:\n  - name: all\n    to: [archive, copy]\n"
    )
}

/// Markup that would add an element and mark the page if it were ever parsed as HTML.
const MARKUP: &str = r#"<img id=injected src=x onerror=\"document.body.dataset.pwned=1\">"#;

/// What the page shows, read from its DOM as a person would read the screen.
const SNAPSHOT: &str = r##"(() => {
  const text = (selector) => document.querySelector(selector).textContent;
  const rows = (selector) => [...document.querySelectorAll(selector + " tbody tr")]
    .map((tr) => [...tr.cells].map((cell) => cell.textContent));
  const banner = (id) => document.getElementById(id).hidden ? null : document.getElementById(id).textContent;
  return {
    ready: text("#ready"),
    version: text("#rules-version"),
    last_error: text("#rules-last-error"),
    sources: rows("#sources"),
    sinks: rows("#sinks"),
    letters: rows("#dead-letters"),
    letters_summary: text("#dead-letters-summary"),
    replay_buttons: [...document.querySelectorAll("button.replay")].map((b) => b.dataset.sink),
    error: banner("error"),
    message: banner("message"),
    injected: document.querySelectorAll("#injected, img").length,
    pwned: document.body.dataset.pwned === "1",
  };
})()"##;

async fn snapshot(browser: &mut Browser, page: &Page) -> Value {
    browser.eval(page, SNAPSHOT).await
}

/// Runs the page's own refresh and waits for it, so the next snapshot is current.
async fn refresh(browser: &mut Browser, page: &Page) {
    browser.eval(page, "refresh().then(() => true)").await;
}

fn row<'a>(rows: &'a Value, name: &str) -> &'a Vec<Value> {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|cells| cells[0] == name)
        .unwrap_or_else(|| panic!("no row for {name} in {rows}"))
        .as_array()
        .expect("cells")
}

/// The `ccrelay_sink_healthy` gauge of `sink`, if it has one.
async fn sink_healthy(relay: &Relay, sink: &str) -> Option<i64> {
    let prefix = format!("ccrelay_sink_healthy{{sink=\"{sink}\"}} ");
    relay.metrics().await.lines().find_map(|line| {
        line.strip_prefix(&prefix)
            .map(|value| value.parse().unwrap())
    })
}

async fn wait_for_dead_letters(relay: &Relay, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, listed) = relay.admin_get("/dead-letters").await;
        if listed["count"] == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} dead letters: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_admin_page_shows_sources_sinks_dead_letters_and_rules_and_replays() {
    let (relay, rules_path, _dir) =
        Relay::start_with_rules(&rules("out/{{ form.missing }}.jsonl", ""), OPEN).await;
    for n in 0..2 {
        let response = relay
            .post("/ingest/hq-forms", "text/xml", form_xml(&format!("f{n}")))
            .await;
        assert_eq!(response.status(), 202);
    }
    wait_for_dead_letters(&relay, 2).await;
    // A refused reload whose message carries markup: the page must show it as text.
    std::fs::write(
        &rules_path,
        rules("out/x.jsonl", &format!("\"{MARKUP}\": 1\n")),
    )
    .unwrap();
    let refused = relay.reload_rules().await;
    assert_eq!(refused.status(), 422);
    let (_, rules_status) = relay.admin_get("/rules").await;
    let first_version = rules_status["version"].as_str().unwrap().to_string();

    let mut browser = Browser::launch().await;
    let page = browser.open(&relay.admin_url("/")).await;
    assert!(
        browser
            .wait_for(
                &page,
                "Number(document.body.dataset.refreshes || 0) >= 1",
                Duration::from_secs(20)
            )
            .await,
        "the page never finished loading: {}",
        snapshot(&mut browser, &page).await
    );
    let shown = snapshot(&mut browser, &page).await;
    assert_eq!(shown["error"], Value::Null, "{shown}");
    assert_eq!(shown["ready"], "ready");
    assert_eq!(shown["version"], first_version.as_str());
    let last_error = shown["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("<img id=injected") && last_error.contains("unknown field"),
        "{last_error}"
    );
    assert_eq!(shown["injected"], 0, "markup became elements: {shown}");
    assert_eq!(shown["pwned"], false);

    let source = row(&shown["sources"], "hq-forms");
    assert_eq!(source[1], "2", "requests: {source:?}");
    // No rate before a second reading; no requests between readings if the page's own 5 s
    // refresh has come round on a slow machine.
    assert!(source[2] == "—" || source[2] == "0.00", "rate: {source:?}");
    assert_eq!(source[3], "2", "2xx: {source:?}");
    assert_eq!(source[6], "2", "accepted: {source:?}");

    let archive = row(&shown["sinks"], "archive");
    assert_eq!(archive[1], "file");
    // Health is whatever the sink_healthy gauge says (dispatch decides what counts).
    let expected_health = match sink_healthy(&relay, "archive").await {
        Some(1) => "healthy",
        Some(_) => "failing",
        None => "no delivery yet",
    };
    assert_eq!(archive[2], expected_health, "{archive:?}");
    assert_eq!(archive[6], "2", "dead letters: {archive:?}");
    let copy = row(&shown["sinks"], "copy");
    assert_eq!(copy[2], "healthy", "{copy:?}");
    assert_eq!(copy[3], "0", "nothing waiting for copy (records): {copy:?}");
    assert_eq!(copy[4], "2", "delivered: {copy:?}");
    assert_eq!(copy[6], "0", "{copy:?}");
    assert_eq!(shown["replay_buttons"], json!(["archive"]));
    let letters = shown["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{shown}");
    assert!(letters.iter().all(|cells| cells[0] == "archive"));
    assert!(
        letters[0][6].as_str().unwrap().contains("undefined"),
        "{letters:?}"
    );
    assert_eq!(shown["letters_summary"], "2 dead letters");

    // Fix the sink, reload, and replay from the page; meanwhile more requests arrive.
    std::fs::write(&rules_path, rules("out/fixed.jsonl", "")).unwrap();
    let reloaded = relay.reload_rules().await;
    assert_eq!(reloaded.status(), 200);
    for n in 2..5 {
        let response = relay
            .post("/ingest/hq-forms", "text/xml", form_xml(&format!("f{n}")))
            .await;
        assert_eq!(response.status(), 202);
    }
    browser
        .eval(
            &page,
            r#"document.querySelector('button.replay[data-sink="archive"]').click(), true"#,
        )
        .await;
    assert!(
        browser
            .wait_for(
                &page,
                r#"document.getElementById("message").textContent.startsWith("Replayed")"#,
                Duration::from_secs(20)
            )
            .await,
        "replay never answered: {}",
        snapshot(&mut browser, &page).await
    );
    let after = snapshot(&mut browser, &page).await;
    assert_eq!(
        after["message"], "Replayed 2 dead letters of archive",
        "{after}"
    );
    // Replayed letters are spooled again for `archive`, which now writes them under out/,
    // beside the three that arrived after the fix.
    let delivered = relay.wait_for_output(5).await;
    let ids: std::collections::HashSet<&str> = delivered
        .iter()
        .map(|envelope| envelope["id"].as_str().unwrap())
        .collect();
    assert_eq!((delivered.len(), ids.len()), (5, 5), "{delivered:?}");
    refresh(&mut browser, &page).await;
    let settled = snapshot(&mut browser, &page).await;
    assert_eq!(settled["letters_summary"], "None.", "{settled}");
    assert_eq!(settled["replay_buttons"], json!([]));
    assert_eq!(
        settled["version"].as_str().unwrap().len(),
        first_version.len()
    );
    assert_ne!(settled["version"], first_version.as_str());
    assert_eq!(settled["last_error"], "none");
    let archive = row(&settled["sinks"], "archive");
    assert_eq!(archive[2], "healthy", "{archive:?}");
    assert_eq!(archive[6], "0", "{archive:?}");
    let source = row(&settled["sources"], "hq-forms");
    assert_eq!(source[1], "5", "{source:?}");
    let rate: f64 = source[2].as_str().unwrap().parse().expect("a rate");
    assert!(rate > 0.0, "3 requests since the first reading: {source:?}");

    drop(browser);
    relay.stop().await;
}
