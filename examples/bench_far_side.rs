//! The far side of `scripts/bench-sinks.sh`: creates the Kafka topic or the RabbitMQ queue a
//! benchmark run delivers to, and counts what arrived there afterwards.
//!
//! Usage:
//!   bench_far_side kafka-topic BROKERS TOPIC       create a one-partition topic
//!   bench_far_side kafka-count BROKERS TOPIC       read partition 0 whole: messages, distinct ids
//!   bench_far_side amqp-queue URL QUEUE            declare a durable queue
//!   bench_far_side amqp-count URL QUEUE            print the messages ready in the queue

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, address, name] = args.as_slice() else {
        anyhow::bail!(
            "usage: bench_far_side kafka-topic|kafka-count|amqp-queue|amqp-count ADDRESS NAME"
        );
    };
    match command.as_str() {
        "kafka-topic" => {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", address)
                .create()?;
            let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
            for result in admin.create_topics(&[topic], &AdminOptions::new()).await? {
                if let Err((topic, code)) = result {
                    anyhow::bail!("creating topic {topic}: {code}");
                }
            }
        }
        "kafka-count" => {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", address)
                .set("group.id", "bench-far-side")
                .set("enable.auto.commit", "false")
                .create()?;
            let mut partitions = TopicPartitionList::new();
            partitions.add_partition_offset(name, 0, Offset::Beginning)?;
            consumer.assign(&partitions)?;
            let (mut messages, mut ids) = (0u64, HashSet::new());
            // Until the partition has been quiet for 3 s.
            while let Some(message) = consumer.poll(Duration::from_secs(3)) {
                // Connection errors are reported here too; librdkafka reconnects by itself.
                let message = match message {
                    Ok(message) => message,
                    Err(err) => {
                        eprintln!("kafka-count: {err}");
                        continue;
                    }
                };
                messages += 1;
                if let Some(id) = message
                    .headers()
                    .and_then(|headers| headers.iter().find(|header| header.key == "id"))
                    .and_then(|header| header.value)
                {
                    ids.insert(id.to_vec());
                }
            }
            println!("{messages} messages, {} distinct ids", ids.len());
        }
        "amqp-queue" | "amqp-count" => {
            let connection =
                lapin::Connection::connect(address, lapin::ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            let queue = channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        passive: command == "amqp-count",
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if command == "amqp-count" {
                println!("{}", queue.message_count());
            }
            connection.close(0, "done".into()).await?;
        }
        other => anyhow::bail!("unknown command {other}"),
    }
    Ok(())
}
