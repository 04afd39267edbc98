//! What ingress answers, and what it keeps, for every kind of request HQ (or a stranger) sends.

use serde_json::Value;

use crate::harness::{Relay, form_xml};

const OPEN: &str = "sources:\n  \"*\":\n    auth: { type: none }\n";
const BASIC: &str = "sources:\n  hq:\n    domain: demo\n    auth: { type: basic, credentials: [ { username: hq, password: s3cret } ] }\n";

fn quarantine_files(relay: &Relay) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(relay.data_dir.join("quarantine"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_form_is_answered_202_with_its_envelope_id_and_lands_in_the_file_sink() {
    let relay = Relay::start(OPEN).await;
    let response = relay
        .post("/ingest/hq?app_id=app-1", "text/xml", form_xml("form-1"))
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["duplicate"], false);
    let id = answer["id"]
        .as_str()
        .expect("the answer names the envelope");

    let output = relay.wait_for_output(1).await;
    assert_eq!(output.len(), 1);
    let envelope = &output[0];
    assert_eq!(envelope["id"], id);
    assert_eq!(envelope["kind"], "form");
    assert_eq!(envelope["source"], "hq");
    assert_eq!(envelope["method"], "POST");
    assert_eq!(envelope["query"]["app_id"], "app-1");
    assert_eq!(envelope["form"]["id"], "form-1");
    assert_eq!(envelope["cases"][0]["case_id"], "case-form-1");
    relay.stop().await;
}

#[tokio::test]
async fn put_and_delete_are_accepted_like_post() {
    let relay = Relay::start(OPEN).await;
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let response = relay
            .client
            .request(method.clone(), relay.url("/ingest/hq"))
            .header("content-type", "text/xml; charset=utf-8")
            .body(form_xml(&format!("form-{method}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{method}");
    }
    let output = relay.wait_for_output(2).await;
    let mut methods: Vec<&str> = output
        .iter()
        .map(|envelope| envelope["method"].as_str().unwrap())
        .collect();
    methods.sort();
    assert_eq!(methods, ["DELETE", "PUT"]);
    relay.stop().await;
}

#[tokio::test]
async fn an_unknown_source_is_404_when_there_is_no_catch_all() {
    let relay = Relay::start(BASIC).await;
    let response = relay.post("/ingest/other", "text/xml", form_xml("f")).await;
    assert_eq!(response.status(), 404);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "not_found");
    assert_eq!(answer["detail"], "unknown source `other`");
    relay.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_challenge_and_nothing_is_kept() {
    let relay = Relay::start(BASIC).await;
    let missing = relay.post("/ingest/hq", "text/xml", form_xml("f")).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        r#"Basic realm="ccrelay", charset="UTF-8""#
    );
    let wrong = relay
        .client
        .post(relay.url("/ingest/hq"))
        .basic_auth("hq", Some("guess"))
        .header("content-type", "text/xml")
        .body(form_xml("f"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = relay
        .client
        .post(relay.url("/ingest/hq"))
        .basic_auth("hq", Some("s3cret"))
        .header("content-type", "text/xml")
        .body(form_xml("f"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 202);
    let output = relay.wait_for_output(1).await;
    assert_eq!(output.len(), 1, "only the authenticated payload is kept");
    assert_eq!(
        output[0]["domain"], "demo",
        "XML carries no domain; the source's config does"
    );
    assert!(quarantine_files(&relay).is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let relay = Relay::start(&format!("ingress: {{ max_body_bytes: 1000 }}\n{OPEN}")).await;
    let response = relay.post("/ingest/hq", "text/xml", "x".repeat(1001)).await;
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["detail"], "body is over the limit of 1000 bytes");
    relay.stop().await;
}

#[tokio::test]
async fn an_unreadable_content_type_is_415_and_the_payload_is_quarantined() {
    let relay = Relay::start(OPEN).await;
    let response = relay.post("/ingest/hq", "image/png", "\u{89}PNG").await;
    assert_eq!(response.status(), 415);
    let answer: Value = response.json().await.unwrap();
    let id = answer["quarantine_id"].as_str().unwrap();
    assert_eq!(
        quarantine_files(&relay),
        [format!("{id}.body"), format!("{id}.json")]
    );
    relay.stop().await;
}

#[tokio::test]
async fn malformed_xml_is_422_after_the_body_is_kept_byte_for_byte() {
    let relay = Relay::start(OPEN).await;
    let body = "<data xmlns=\"http://x\"><foo></data>";
    let response = relay.post("/ingest/hq", "text/xml", body).await;
    assert_eq!(response.status(), 422);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "unprocessable");
    let id = answer["quarantine_id"].as_str().unwrap();
    let kept = std::fs::read(relay.data_dir.join("quarantine").join(format!("{id}.body"))).unwrap();
    assert_eq!(kept, body.as_bytes());
    let note: Value = serde_json::from_slice(
        &std::fs::read(relay.data_dir.join("quarantine").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(note["status"], 422);
    assert_eq!(note["source"], "hq");
    relay.stop().await;
}

#[tokio::test]
async fn a_full_spool_is_503_with_retry_after() {
    let spool = "spool: { segment_bytes: 4096, max_disk_bytes: 4096 }\n";
    let relay = Relay::start(&format!("{spool}{OPEN}")).await;
    let mut statuses = Vec::new();
    for n in 0..10 {
        let response = relay
            .post("/ingest/hq", "text/xml", form_xml(&format!("f{n}")))
            .await;
        let status = response.status().as_u16();
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "30");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["detail"], "temporarily unavailable, retry later");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 202);
    assert!(
        statuses.contains(&503),
        "the quota is reached: {statuses:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_admin_listener_reports_health_readiness_and_metrics() {
    let relay = Relay::start(OPEN).await;
    relay.post("/ingest/hq", "text/xml", form_xml("f")).await;
    relay.post("/ingest/hq", "text/xml", "not xml").await;
    let client = &relay.client;
    assert_eq!(
        client
            .get(relay.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = client.get(relay.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = relay.metrics().await;
    for expected in [
        "ccrelay_ingress_requests_total{source=\"*\",status=\"202\"} 1",
        "ccrelay_ingress_requests_total{source=\"*\",status=\"422\"} 1",
        "ccrelay_ingress_envelopes_total{kind=\"form\",source=\"*\"} 1",
        "ccrelay_decode_failures_total{source=\"*\",status=\"422\"} 1",
        "ccrelay_quarantined_total{source=\"*\"} 1",
        "ccrelay_spool_appended_records_total 1",
        "ccrelay_spool_append_duration_seconds_count 1",
        "ccrelay_ingress_bytes_total{source=\"*\"}",
    ] {
        assert!(
            metrics.contains(expected),
            "missing `{expected}` in:\n{metrics}"
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn after_shutdown_begins_new_requests_are_503() {
    let relay = Relay::start(OPEN).await;
    let client = reqwest::Client::new();
    // A kept-alive connection stays open while the server drains; requests on it get 503.
    let first = client
        .post(relay.url("/ingest/hq"))
        .header("content-type", "text/xml")
        .body(form_xml("f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let url = relay.url("/ingest/hq");
    relay.stop().await;
    match client
        .post(url)
        .header("content-type", "text/xml")
        .body(form_xml("f2"))
        .send()
        .await
    {
        Ok(response) => assert_eq!(response.status(), 503),
        Err(err) => assert!(
            err.is_connect() || err.is_request(),
            "refused after stop: {err}"
        ),
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_is_cut_off_with_503_so_hq_retries() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let relay = Relay::start(&format!(
        "ingress: {{ request_timeout_seconds: 1 }}\n{OPEN}"
    ))
    .await;
    let mut stream = tokio::net::TcpStream::connect(relay.ingress).await.unwrap();
    let head = "POST /ingest/hq HTTP/1.1\r\nhost: x\r\ncontent-type: text/xml\r\ncontent-length: 1000\r\n\r\n<data>";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the test gave up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 30"),
        "{answer}"
    );
    assert!(
        quarantine_files(&relay).is_empty(),
        "an unfinished body is not a payload"
    );
    relay.stop().await;
}
