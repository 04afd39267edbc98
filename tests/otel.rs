//! OpenTelemetry export (feature `otel`): the ccrelay binary, given the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, sends its spans over OTLP/HTTP to a collector stand-in that
//! records what arrives; the spans still buffered at SIGTERM are flushed before exit.
#![cfg(feature = "otel")]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

/// One export request as the collector stand-in saw it.
#[derive(Clone, Debug)]
struct Export {
    content_type: String,
    body: Bytes,
}

type Exports = Arc<Mutex<Vec<Export>>>;

async fn record(State(exports): State<Exports>, headers: HeaderMap, body: Bytes) -> &'static str {
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    exports.lock().unwrap().push(Export { content_type, body });
    ""
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn spans_go_to_the_otlp_endpoint_and_the_last_ones_are_flushed_at_exit() {
    let exports: Exports = Arc::default();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(record))
        .with_state(Arc::clone(&exports));
    tokio::spawn(async move { axum::serve(collector, app).await });

    let data = tempfile::tempdir().unwrap();
    let (ingress_port, admin_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccrelay"))
        .args(["serve", "--listen", &format!("127.0.0.1:{ingress_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--data-dir")
        .arg(data.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        // The ingest and delivery spans are at info level; a long batch delay leaves the
        // flush at exit to send them.
        .env("RUST_LOG", "warn,ccrelay=info")
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ccrelay");
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    let mut is_ready = false;
    for _ in 0..200 {
        if client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
        {
            is_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !is_ready {
        child.kill().ok();
        panic!("ccrelay did not become ready");
    }
    let form = std::fs::read("tests/fixtures/form_xml/visit.xml").expect("fixture");
    let answer = client
        .post(format!("http://127.0.0.1:{ingress_port}/ingest/hq"))
        .header("content-type", "text/xml")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let answer: serde_json::Value = answer.json().await.unwrap();
    let envelope_id = answer["id"].as_str().unwrap().to_string();
    assert!(
        exports.lock().unwrap().is_empty(),
        "nothing is sent before the batch delay or the exit"
    );

    let pid = child.id().to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(signalled.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "ccrelay exits cleanly: {status}");

    let exports = exports.lock().unwrap().clone();
    assert!(!exports.is_empty(), "no spans reached the collector");
    for export in &exports {
        assert_eq!(export.content_type, "application/x-protobuf");
    }
    let bytes: Vec<u8> = exports
        .iter()
        .flat_map(|export| export.body.iter().copied())
        .collect();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    // Protobuf keeps strings as they are: the resource's service name and the request span's
    // attributes are readable in the bytes.
    assert!(
        contains(b"service.name") && contains(b"ccrelay"),
        "service name"
    );
    assert!(contains(b"/ingest/hq"), "the request span carries its URI");
    // The sender's trace is continued by the ingest span and by the delivery span, both of
    // which name the envelope.
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let in_trace = bytes
        .windows(trace_id.len())
        .filter(|window| *window == trace_id.as_slice())
        .count();
    assert!(
        in_trace >= 2,
        "ingest and delivery spans share the trace: {in_trace}"
    );
    assert!(contains(b"deliver") && contains(envelope_id.as_bytes()));
}

/// The trace a sender started, as its `traceparent` names it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
