//! Dedupe: HQ resends a payload after a timeout or a manual "Resend"; ccrelay answers the
//! copy 200 `"duplicate": true` with the first copy's id and does not route it again, across
//! restarts too, unless the source switches dedupe off.

use serde_json::Value;

use crate::harness::{Relay, form_xml};

const OPEN: &str = "sources:\n  \"*\":\n    auth: { type: none }\n";
const NO_DEDUPE: &str = "sources:\n  \"*\":\n    dedupe: false\n    auth: { type: none }\n";

async fn send(relay: &Relay, body: &str, received_on: &str) -> (u16, Value) {
    let response = relay
        .client
        .post(relay.url("/ingest/hq"))
        .header("content-type", "text/xml")
        .header("received-on", received_on)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

const RECEIVED: &str = "2024-05-02T06:14:09.482113Z";

#[tokio::test]
async fn a_resent_payload_is_answered_as_a_duplicate_and_not_routed_again() {
    let relay = Relay::start(OPEN).await;
    let (first_status, first) = send(&relay, &form_xml("f1"), RECEIVED).await;
    assert_eq!(
        (first_status, &first["duplicate"]),
        (202, &Value::Bool(false))
    );
    let (second_status, second) = send(&relay, &form_xml("f1"), RECEIVED).await;
    assert_eq!(second_status, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["id"], first["id"], "the answer names the first copy");

    let (edited_status, _) = send(
        &relay,
        &form_xml("f1").replace("routine", "urgent"),
        "2024-05-03T00:00:00.000000Z",
    )
    .await;
    assert_eq!(
        edited_status, 202,
        "an edit is a new version, with a new key"
    );

    let output = relay.wait_for_output(2).await;
    assert_eq!(output.len(), 2);
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("ccrelay_ingress_duplicates_total{source=\"*\"} 1"),
        "{metrics}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_source_can_switch_dedupe_off() {
    let relay = Relay::start(NO_DEDUPE).await;
    assert_eq!(send(&relay, &form_xml("f1"), RECEIVED).await.0, 202);
    assert_eq!(send(&relay, &form_xml("f1"), RECEIVED).await.0, 202);
    assert_eq!(relay.wait_for_output(2).await.len(), 2);
    relay.stop().await;
}

#[tokio::test]
async fn dedupe_survives_a_restart() {
    let relay = Relay::start(OPEN).await;
    let (_, first) = send(&relay, &form_xml("f1"), RECEIVED).await;
    let data_dir = relay.data_dir.clone();
    let temp = relay.stop().await;

    let restarted = Relay::start_in(&data_dir, OPEN).await;
    let (status, again) = send(&restarted, &form_xml("f1"), RECEIVED).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    restarted.stop().await;
    drop(temp);
}
