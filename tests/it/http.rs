//! The HTTP sink against a local receiver (a real HTTP server on 127.0.0.1, no broker needed):
//! exact bodies and headers, Standard Webhooks signatures checked by an independent
//! implementation (tests/it/verify_webhook.py, Python's standard library), a receiver answering
//! 503 in the middle of a load, and a 400 that ends in a dead letter.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::json;

use crate::brokers::{
    OPEN, assert_all_arrived, assert_outage_was_felt, dead_letters, eventually, post_form,
    post_forms, wait_for_lines,
};
use crate::harness::{Relay, form_xml};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver got it.
#[derive(Clone)]
struct Request {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered.
    status: u16,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A webhook receiver that records every request and answers `status` (paths under
/// `/reject` always get 400).
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests answered 2xx.
    fn accepted(&self) -> Vec<Request> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|request| request.status < 300)
            .cloned()
            .collect()
    }
}

async fn record(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let status = if uri.path().starts_with("/reject") {
        400
    } else {
        receiver.status.load(Ordering::Relaxed)
    };
    receiver.requests.lock().unwrap().push(Request {
        path: uri.path().to_owned(),
        headers,
        body,
        status,
    });
    let status = StatusCode::from_u16(status).unwrap();
    let mut answer = HeaderMap::new();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        answer.insert("retry-after", "1".parse().unwrap());
    }
    (status, answer, "receiver says no")
}

/// Checks every request's signature with tests/it/verify_webhook.py.
fn verify_signatures(requests: &[Request]) {
    let mut input = String::new();
    for request in requests {
        let line = json!({
            "secret": SECRET,
            "id": request.header("webhook-id").expect("webhook-id"),
            "timestamp": request.header("webhook-timestamp").expect("webhook-timestamp"),
            "signature": request.header("webhook-signature").expect("webhook-signature"),
            "body_base64": base64::engine::general_purpose::STANDARD.encode(&request.body),
        });
        input.push_str(&format!("{line}\n"));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify_webhook.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the independent signature check");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let verdicts = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "signatures refused:\n{verdicts}");
    assert_eq!(
        verdicts.lines().filter(|line| *line == "ok").count(),
        requests.len()
    );
}

fn rules(sinks: &str, rules: &str) -> String {
    format!("version: 1\nsinks:\n{sinks}\nrules:\n{rules}")
}

#[tokio::test]
async fn envelopes_and_raw_bodies_arrive_exactly_signed_and_authenticated() {
    let receiver = Receiver::start().await;
    let text = rules(
        &format!(
            "  hook:\n    type: http\n    url: \"{}\"\n    headers: {{ x-kind: \"{{{{ kind }}}}\" }}\n    \
             auth: {{ type: bearer, token: t0ken }}\n    signing_secret: {SECRET}\n  \
             raw:\n    type: http\n    url: \"{}\"\n    method: PUT\n    auth: {{ type: basic, username: u, password: p }}\n  \
             archive: {{ type: file, path: out/all.jsonl }}",
            receiver.url("/hook/{{ kind }}"),
            receiver.url("/raw"),
        ),
        "  - { name: all, to: [hook, archive] }\n  - { name: as sent, to: raw, send: raw }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    let body = form_xml("http-1");
    let id = post_form(&relay, body.clone()).await;
    let spooled = wait_for_lines(&relay, "out/all.jsonl", 1).await.remove(0);
    let requests = eventually("two requests", Duration::from_secs(20), || async {
        let accepted = receiver.accepted();
        (accepted.len() >= 2).then_some(accepted)
    })
    .await;
    let hook = requests
        .iter()
        .find(|r| r.path == "/hook/form")
        .expect("/hook/form");
    assert_eq!(
        hook.body,
        spooled.as_bytes(),
        "the envelope exactly as spooled"
    );
    assert_eq!(hook.header("content-type"), Some("application/json"));
    assert_eq!(hook.header("idempotency-key"), Some(id.as_str()));
    let envelope: serde_json::Value = serde_json::from_str(&spooled).unwrap();
    assert_eq!(
        hook.header("traceparent"),
        envelope["traceparent"].as_str(),
        "the trace goes on"
    );
    assert_eq!(hook.header("webhook-id"), Some(id.as_str()));
    assert_eq!(hook.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(hook.header("x-kind"), Some("form"));
    verify_signatures(std::slice::from_ref(hook));

    let raw = requests.iter().find(|r| r.path == "/raw").expect("/raw");
    assert_eq!(raw.body, body.as_bytes(), "the body exactly as sent");
    assert_eq!(raw.header("content-type"), Some("text/xml"));
    assert_eq!(raw.header("authorization"), Some("Basic dTpw"));
    assert_eq!(
        raw.header("webhook-signature"),
        None,
        "no secret, no signature"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_receiver_answering_503_in_the_middle_of_a_load_loses_nothing() {
    let receiver = Receiver::start().await;
    let text = rules(
        &format!(
            "  hook: {{ type: http, url: \"{}\", signing_secret: {SECRET} }}",
            receiver.url("/hook")
        ),
        "  - { name: all, to: hook }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    let mut accepted = post_forms(&relay, 0, 1000, 16).await;
    receiver.status.store(503, Ordering::Relaxed);
    let outage = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        receiver.status.store(200, Ordering::Relaxed);
    };
    let (during, ()) = tokio::join!(post_forms(&relay, 1000, 2000, 16), outage);
    accepted.extend(during);
    let delivered = eventually(
        "every envelope delivered",
        Duration::from_secs(60),
        || async {
            let delivered = receiver.accepted();
            let distinct: std::collections::HashSet<&str> = delivered
                .iter()
                .filter_map(|request| request.header("idempotency-key"))
                .collect();
            (distinct.len() >= accepted.len()).then_some(delivered)
        },
    )
    .await;
    let ids: Vec<String> = delivered
        .iter()
        .map(|request| request.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_all_arrived(&accepted, &ids);
    let refused = receiver
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|request| request.status == 503)
        .count();
    assert!(
        refused > 0,
        "the receiver refused some while it answered 503"
    );
    assert_outage_was_felt(&relay, "hook").await;
    verify_signatures(&delivered[..delivered.len().min(200)]);
    relay.stop().await;
}

#[tokio::test]
async fn a_400_becomes_a_dead_letter_naming_the_status() {
    let receiver = Receiver::start().await;
    let text = rules(
        &format!(
            "  hook: {{ type: http, url: \"{}\" }}",
            receiver.url("/reject")
        ),
        "  - { name: all, to: hook }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    relay.post("/ingest/hq", "text/xml", form_xml("bad")).await;
    let letters = dead_letters(&relay, "hook", 1).await;
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("400 Bad Request") && reason.contains("receiver says no"),
        "{reason}"
    );
    assert_eq!(
        letters[0]["attempts"], 1,
        "a permanent failure is not retried"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_sink_down_from_the_start_keeps_its_backlog_across_a_restart() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("rules.yaml");
    let data_dir = dir.path().join("data");
    let config = format!("rules: {}\n{OPEN}", rules_path.display());
    let with_url = |url: &str| {
        rules(
            &format!("  hook: {{ type: http, url: \"{url}\" }}"),
            "  - { name: all, to: hook }\n",
        )
    };
    // Nothing listens on port 1: the sink never delivers before the restart.
    std::fs::write(&rules_path, with_url("http://127.0.0.1:1/")).unwrap();
    let relay = Relay::start_in(&data_dir, &config).await;
    let accepted = post_forms(&relay, 0, 50, 8).await;
    relay.stop().await;

    std::fs::write(&rules_path, with_url(&receiver.url("/hook"))).unwrap();
    let relay = Relay::start_in(&data_dir, &config).await;
    let delivered = eventually("the backlog delivered", Duration::from_secs(30), || async {
        let delivered = receiver.accepted();
        (delivered.len() >= accepted.len()).then_some(delivered)
    })
    .await;
    let ids: Vec<String> = delivered
        .iter()
        .map(|request| request.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_all_arrived(&accepted, &ids);
    relay.stop().await;
}
