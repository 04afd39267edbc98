//! The Kafka sink against a real Kafka-compatible broker (tansu, from scripts/brokers.sh): what
//! arrives is exactly what was accepted, with its key and headers; a broker killed and
//! restarted while envelopes keep coming loses none of them; a message too large becomes a
//! dead letter.
//!
//! tansu keeps its data in memory, so a killed broker comes back empty: the outage test reads
//! everything delivered before the kill, kills, keeps loading, restarts, recreates the topic,
//! and then reads what the relay delivered to the new broker.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::brokers::{
    KAFKA, KAFKA_BROKERS, OPEN, assert_all_arrived, assert_outage_was_felt, brokers_enabled,
    brokers_script, dead_letters, post_form, post_forms, unique, wait_for_lines,
};
use crate::harness::{Relay, form_xml};

/// A message as a consumer sees it.
struct Received {
    key: Option<String>,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Creates `topic` with one partition; tansu creates no topic by itself.
async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", KAFKA_BROKERS)
        .create()
        .expect("an admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|err| panic!("Kafka must be up at {KAFKA_BROKERS}: {err}"));
    for result in created {
        if let Err((name, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {name}"
            );
        }
    }
}

/// Reads `topic`'s partition 0 from the start until `count` messages came or nothing came for
/// `quiet`. Partitions are assigned, not joined through a group: nothing to rebalance.
async fn consume(topic: &str, count: usize, quiet: Duration) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA_BROKERS)
        .set("group.id", unique("test"))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition 0");
    consumer.assign(&partitions).expect("assign partition 0");
    let mut received = Vec::new();
    while received.len() < count {
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                let value = header.value.unwrap_or_default();
                                (
                                    header.key.to_owned(),
                                    String::from_utf8_lossy(value).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                received.push(Received {
                    key: message
                        .key()
                        .map(|key| String::from_utf8_lossy(key).into_owned()),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Ok(Err(err)) => eprintln!("consuming {topic}: {err}"),
            Err(_) => break,
        }
    }
    received
}

/// Consumes until every id in `accepted` is seen or `limit` passes; returns the ids read.
async fn consume_ids(topic: &str, accepted: &[String], limit: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Each pass reads from the start again, so only the last pass counts.
        let ids: Vec<String> = consume(topic, usize::MAX, Duration::from_secs(3))
            .await
            .iter()
            .filter_map(|message| message.header("id").map(str::to_owned))
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        let complete = accepted.iter().all(|id| distinct.contains(id));
        if complete || tokio::time::Instant::now() > deadline {
            return ids;
        }
    }
}

fn rules(sinks: &str, rules: &str) -> String {
    format!("version: 1\nsinks:\n{sinks}\nrules:\n{rules}")
}

#[tokio::test]
async fn envelopes_arrive_exactly_with_their_key_and_headers() {
    if !brokers_enabled("kafka end to end") {
        return;
    }
    let _broker = KAFKA.read().await;
    let topic = unique("envelopes");
    create_topic(&topic).await;
    let text = rules(
        &format!(
            "  topic:\n    type: kafka\n    brokers: \"{KAFKA_BROKERS}\"\n    topic: \"{topic}\"\n    \
             key: \"{{{{ cases[0].case_id }}}}\"\n    compression: lz4\n    \
             headers: {{ xmlns: \"{{{{ form.xmlns }}}}\" }}\n    settings: {{ linger.ms: 2 }}\n  \
             archive: {{ type: file, path: out/all.jsonl }}"
        ),
        "  - { name: all, to: [topic, archive] }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    let id = post_form(&relay, form_xml("kafka-1")).await;
    let spooled = wait_for_lines(&relay, "out/all.jsonl", 1).await.remove(0);
    let envelope: Value = serde_json::from_str(&spooled).unwrap();

    let received = consume(&topic, 1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1, "one message on {topic}");
    let message = &received[0];
    assert_eq!(String::from_utf8(message.payload.clone()).unwrap(), spooled);
    assert_eq!(message.key.as_deref(), Some("case-kafka-1"));
    assert_eq!(message.header("id"), Some(id.as_str()));
    assert_eq!(message.header("content_type"), Some("application/json"));
    assert_eq!(message.header("kind"), Some("form"));
    assert_eq!(message.header("source"), Some("hq"));
    assert_eq!(
        message.header("dedupe_key"),
        envelope["dedupe_key"].as_str()
    );
    assert_eq!(
        message.header("traceparent"),
        envelope["traceparent"].as_str(),
        "the trace goes on"
    );
    assert_eq!(
        message.header("xmlns"),
        Some("http://openrosa.org/formdesigner/TEST-FORM")
    );
    let (_, ready) = relay.admin_get("/readyz").await;
    assert_eq!(ready["sinks"]["topic"]["healthy"], true, "{ready}");
    assert_eq!(ready["sinks"]["topic"]["connected"], true, "{ready}");
    relay.stop().await;
}

#[tokio::test]
async fn a_broker_killed_and_restarted_while_envelopes_keep_coming_loses_none() {
    if !brokers_enabled("kafka outage") {
        return;
    }
    let _broker = KAFKA.write().await;
    let topic = unique("outage");
    create_topic(&topic).await;
    let text = rules(
        &format!(
            "  topic: {{ type: kafka, brokers: \"{KAFKA_BROKERS}\", topic: \"{topic}\", compression: lz4, delivery_timeout_seconds: 10 }}"
        ),
        "  - { name: all, to: topic }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;

    let before = post_forms(&relay, 0, 6000, 32).await;
    let arrived_before = consume_ids(&topic, &before, Duration::from_secs(60)).await;
    assert_all_arrived(&before, &arrived_before);

    tokio::task::spawn_blocking(|| brokers_script("stop-kafka"))
        .await
        .unwrap();
    let restart = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::spawn_blocking(|| brokers_script("start-kafka"))
            .await
            .unwrap();
        create_topic(&topic).await;
    };
    let (during, ()) = tokio::join!(post_forms(&relay, 6000, 3000, 16), restart);
    let arrived_after = consume_ids(&topic, &during, Duration::from_secs(120)).await;
    assert_all_arrived(&during, &arrived_after);
    assert_outage_was_felt(&relay, "topic").await;
    relay.stop().await;
}

#[tokio::test]
async fn a_message_too_large_becomes_a_dead_letter_naming_the_reason() {
    if !brokers_enabled("kafka too large") {
        return;
    }
    let _broker = KAFKA.read().await;
    let topic = unique("large");
    create_topic(&topic).await;
    let text = rules(
        &format!(
            "  topic: {{ type: kafka, brokers: \"{KAFKA_BROKERS}\", topic: \"{topic}\", settings: {{ message.max.bytes: 1000 }} }}"
        ),
        "  - { name: all, to: topic }\n",
    );
    let (relay, _rules, _dir) = Relay::start_with_rules(&text, OPEN).await;
    relay
        .post("/ingest/hq", "text/xml", form_xml("large"))
        .await;
    let letters = dead_letters(&relay, "topic", 1).await;
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.to_lowercase().contains("too large"), "{reason}");
    relay.stop().await;
}
