//! The AMQP sink against the real RabbitMQ: what arrives is exactly what was accepted, with its
//! properties; a broker outage in the middle of a load loses nothing; unroutable messages
//! become dead letters; a broker that is down at start only holds the queue.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use crate::brokers::{
    AMQP_URL, OPEN, RABBITMQ, assert_all_arrived, assert_outage_was_felt, brokers_enabled,
    dead_letters, eventually, post_form, post_forms, run, unique, wait_for_lines,
};
use crate::harness::{Relay, form_xml};

/// A message as a consumer sees it.
struct Received {
    body: Vec<u8>,
    properties: lapin::BasicProperties,
}

async fn channel() -> (Connection, lapin::Channel) {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap_or_else(|err| panic!("RabbitMQ must be up at {AMQP_URL}: {err}"));
    let channel = connection.create_channel().await.expect("a channel");
    (connection, channel)
}

async fn declare_queue(name: &str) {
    let (connection, channel) = channel().await;
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the queue");
    connection.close(0, "done".into()).await.ok();
}

/// Consumes from `queue` until `count` messages came or nothing came for `quiet`.
async fn consume(queue: &str, count: usize, quiet: Duration) -> Vec<Received> {
    let (connection, channel) = channel().await;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            unique("test").as_str().into(),
            // Acked one by one as read: what is still in flight when this stops goes back to
            // the queue instead of being lost with the connection.
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut received = Vec::new();
    while received.len() < count {
        match tokio::time::timeout(quiet, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack a message");
                received.push(Received {
                    body: delivery.data.clone(),
                    properties: delivery.properties.clone(),
                });
            }
            Ok(Some(Err(err))) => panic!("consuming from {queue}: {err}"),
            Ok(None) | Err(_) => break,
        }
    }
    connection.close(0, "done".into()).await.ok();
    received
}

fn header(received: &Received, name: &str) -> Option<String> {
    let headers = received.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn rules(sinks: &str, rules: &str) -> String {
    format!("version: 1\nsinks:\n{sinks}\nrules:\n{rules}")
}

#[tokio::test]
async fn envelopes_and_raw_bodies_arrive_exactly_with_their_properties() {
    if !brokers_enabled("amqp end to end") {
        return;
    }
    let _broker = RABBITMQ.read().await;
    let (envelopes, raw) = (unique("envelopes"), unique("raw"));
    declare_queue(&envelopes).await;
    declare_queue(&raw).await;
    let text = rules(
        &format!(
            "  queue: {{ type: amqp, url: \"{AMQP_URL}\", routing_key: \"{envelopes}\", headers: {{ xmlns: \"{{{{ form.xmlns }}}}\" }} }}\n  \
             raw: {{ type: amqp, url: \"{AMQP_URL}\", exchange: \"\", routing_key: \"{raw}\" }}\n  \
             archive: {{ type: file, path: out/all.jsonl }}"
        ),
        "  - { name: all, to: [queue, archive] }\n  - { name: as sent, to: raw, send: raw }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    let body = form_xml("amqp-1");
    let id = post_form(&relay, body.clone()).await;

    let spooled = wait_for_lines(&relay, "out/all.jsonl", 1).await.remove(0);
    let envelope: Value = serde_json::from_str(&spooled).unwrap();
    let received = consume(&envelopes, 1, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 1, "one message on {envelopes}");
    let message = &received[0];
    assert_eq!(
        String::from_utf8(message.body.clone()).unwrap(),
        spooled,
        "the envelope exactly as spooled"
    );
    let properties = &message.properties;
    assert_eq!(properties.message_id().as_ref().unwrap().as_str(), id);
    assert_eq!(
        properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert!(properties.timestamp().is_some());
    assert_eq!(header(message, "kind").as_deref(), Some("form"));
    assert_eq!(header(message, "source").as_deref(), Some("hq"));
    assert_eq!(
        header(message, "dedupe_key"),
        envelope["dedupe_key"].as_str().map(str::to_owned)
    );
    assert_eq!(
        header(message, "traceparent"),
        envelope["traceparent"].as_str().map(str::to_owned),
        "the trace goes on"
    );
    assert_eq!(
        header(message, "xmlns").as_deref(),
        Some("http://openrosa.org/formdesigner/TEST-FORM")
    );

    let received = consume(&raw, 1, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 1, "one message on {raw}");
    assert_eq!(
        received[0].body,
        body.as_bytes(),
        "the body exactly as sent"
    );
    assert_eq!(
        received[0]
            .properties
            .content_type()
            .as_ref()
            .unwrap()
            .as_str(),
        "text/xml"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_broker_outage_in_the_middle_of_a_load_loses_nothing() {
    if !brokers_enabled("amqp outage") {
        return;
    }
    let _broker = RABBITMQ.write().await;
    let queue = unique("outage");
    declare_queue(&queue).await;
    let text = rules(
        &format!("  queue: {{ type: amqp, url: \"{AMQP_URL}\", routing_key: \"{queue}\" }}"),
        "  - { name: all, to: queue }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    let mut accepted = post_forms(&relay, 0, 1000, 16).await;
    // Stopped before the next forms are posted, not while: on a busy machine the posts could
    // otherwise all be delivered before the broker went down, and the test would test no outage.
    let stop = tokio::task::spawn_blocking(|| run("rabbitmqctl", &["-q", "stop_app"]));
    stop.await.unwrap();
    let restart = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let start = tokio::task::spawn_blocking(|| run("rabbitmqctl", &["-q", "start_app"]));
        start.await.unwrap();
    };
    let (during, ()) = tokio::join!(post_forms(&relay, 1000, 2000, 16), restart);
    accepted.extend(during);

    let mut arrived: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let batch = consume(&queue, accepted.len(), Duration::from_secs(2)).await;
        arrived.extend(batch.into_iter().map(|message| {
            message
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        }));
        let distinct: std::collections::HashSet<&String> = arrived.iter().collect();
        if distinct.len() >= accepted.len() || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    assert_all_arrived(&accepted, &arrived);
    assert_outage_was_felt(&relay, "queue").await;
    relay.stop().await;
}

#[tokio::test]
async fn an_unroutable_message_becomes_a_dead_letter_naming_the_reason() {
    if !brokers_enabled("amqp unroutable") {
        return;
    }
    let _broker = RABBITMQ.read().await;
    let nowhere = unique("no-such-queue");
    let text = rules(
        &format!("  queue: {{ type: amqp, url: \"{AMQP_URL}\", routing_key: \"{nowhere}\" }}"),
        "  - { name: all, to: queue }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    relay
        .post("/ingest/hq", "text/xml", form_xml("unroutable"))
        .await;
    let letters = dead_letters(&relay, "queue", 1).await;
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("NO_ROUTE"), "{reason}");
    assert!(reason.contains(&nowhere), "{reason}");
    relay.stop().await;
}

/// Needs no broker: nothing listens on port 1.
#[tokio::test]
async fn a_broker_down_at_start_leaves_the_relay_up_and_the_sink_reported_unhealthy() {
    let text = rules(
        "  queue: { type: amqp, url: \"amqp://guest:guest@127.0.0.1:1/%2f\", routing_key: q }",
        "  - { name: all, to: queue }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    let response = relay.post("/ingest/hq", "text/xml", form_xml("held")).await;
    assert_eq!(response.status(), 202, "the relay accepts and holds");
    let sink = eventually("the sink reported", Duration::from_secs(20), || async {
        let (status, ready) = relay.admin_get("/readyz").await;
        assert_eq!(
            status, 200,
            "a sink that is down does not make the relay unready"
        );
        let sink = ready["sinks"]["queue"].clone();
        (sink["healthy"] == false).then_some(sink)
    })
    .await;
    assert_eq!(sink["type"], "amqp");
    assert_eq!(sink["connected"], false);
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("ccrelay_sink_healthy{sink=\"queue\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("ccrelay_sink_connected{sink=\"queue\"} 0"));
    relay.stop().await;
}
