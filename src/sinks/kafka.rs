//! Kafka sink through rdkafka (librdkafka, bundled and linked statically): an idempotent
//! producer with `acks=all`, so an envelope counts as delivered only when its delivery report
//! says every in-sync replica has it.
//!
//! A batch is handed to the producer whole and every delivery report is awaited together:
//! librdkafka batches, compresses and pipelines the sends. librdkafka also retries on its own
//! within `delivery_timeout_seconds` (idempotence keeps those retries free of duplicates and in
//! order); what is still undelivered then comes back here as a transient failure and the
//! dispatcher tries again later.
//!
//! The producer is created on first use, not at build, and creating it opens no connection
//! of its own accord: librdkafka connects in its own threads and reconnects with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Delivery, SinkError, render, render_headers};
use crate::template::{JsonContext, Template};

/// How long a send may wait for room in librdkafka's queue before it counts as failed.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]`, librdkafka's `bootstrap.servers`.
    pub brokers: String,
    pub topic: Template,
    /// The message key; without one, librdkafka spreads messages over partitions.
    pub key: Option<Template>,
    /// Extra message headers, each value a template; the standard ones are always sent.
    pub headers: Vec<(String, Template)>,
    pub compression: Compression,
    /// librdkafka's `message.timeout.ms`: how long it keeps trying one message.
    pub delivery_timeout: Duration,
    /// Further librdkafka settings, passed through as written, applied last.
    pub settings: Vec<(String, String)>,
}

/// librdkafka's `compression.codec` values this build has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    pub const CHOICES: [(&'static str, Compression); 4] = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
    ];

    fn codec(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

pub struct KafkaSink {
    config: KafkaSinkConfig,
    /// Created on first use; replaced after a fatal error (an idempotent producer that lost
    /// its sequence state, e.g. when a broker came back without its data, never recovers).
    producer: std::sync::Mutex<Option<FutureProducer>>,
    /// Whether the last delivery or check reached a broker.
    connected: Arc<AtomicBool>,
}

impl KafkaSink {
    pub fn new(config: KafkaSinkConfig) -> KafkaSink {
        KafkaSink {
            config,
            producer: std::sync::Mutex::new(None),
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The settings librdkafka is given, in order (later ones win).
    pub fn client_config(config: &KafkaSinkConfig) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.codec", config.compression.codec())
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        for (name, value) in &config.settings {
            client.set(name, value);
        }
        client
    }

    /// The producer, created when there is none. A producer is a handle: clones share it.
    fn producer(&self) -> Result<FutureProducer, SinkError> {
        let mut slot = self
            .producer
            .lock()
            .expect("producer lock is never poisoned");
        if let Some(producer) = slot.as_ref() {
            return Ok(producer.clone());
        }
        let producer = Self::client_config(&self.config)
            .create::<FutureProducer>()
            .map_err(|err| {
                // Settings librdkafka refuses: held, not dead-lettered, until the rules are
                // fixed and reloaded.
                SinkError::transient(format!("cannot create the Kafka producer: {err}"))
            })?;
        *slot = Some(producer.clone());
        Ok(producer)
    }

    /// Drops the producer after a fatal error, or after a batch of which nothing was
    /// delivered, so the next attempt starts a fresh one. librdkafka reconnects by itself,
    /// but an idempotent producer whose broker came back without its state (a restarted
    /// in-memory broker, an expired producer id) can be refused with `UnknownProducerId`
    /// until its messages time out, again and again; a new producer gets a new id.
    fn replace_if_stuck(&self, producer: &FutureProducer, results: &[Result<(), SinkError>]) {
        let fatal = producer.client().fatal_error();
        let nothing_delivered = results
            .iter()
            .all(|result| matches!(result, Err(err) if err.is_retryable()));
        if fatal.is_none() && !nothing_delivered {
            return;
        }
        match fatal {
            Some((code, reason)) => {
                tracing::warn!(error = %reason, code = ?code, "the Kafka producer failed fatally; starting a new one");
            }
            None => {
                tracing::info!(
                    "no message of the batch was delivered; starting a new Kafka producer for the next attempt"
                );
            }
        }
        let mut slot = self
            .producer
            .lock()
            .expect("producer lock is never poisoned");
        // Only if no other delivery has replaced it already.
        if slot.as_ref().is_some_and(|current| {
            std::ptr::eq(
                current.client().native_ptr(),
                producer.client().native_ptr(),
            )
        }) {
            *slot = None;
        }
    }

    /// Fetches the cluster's metadata: the brokers answer.
    ///
    /// # Errors
    /// Transient: no broker answered, or the producer cannot be created.
    pub async fn check(&self) -> Result<(), SinkError> {
        let producer = self.producer()?;
        let connected = Arc::clone(&self.connected);
        let fetched = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, super::CHECK_TIMEOUT)
                .map(|_| ())
        })
        .await
        .map_err(|err| SinkError::transient(format!("Kafka metadata request failed: {err}")))?;
        connected.store(fetched.is_ok(), Ordering::Relaxed);
        fetched.map_err(|err| {
            SinkError::transient(format!(
                "no Kafka broker answered ({}): {err}",
                self.config.brokers
            ))
        })
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        let producer = match self.producer() {
            Ok(producer) => producer,
            Err(err) => {
                let reason = err.to_string();
                return batch
                    .iter()
                    .map(|_| Err(SinkError::transient(reason.clone())))
                    .collect();
            }
        };
        let messages: Vec<Result<Message<'_>, SinkError>> = batch
            .iter()
            .map(|delivery| self.message(delivery))
            .collect();
        // Every send is started before any is awaited, so librdkafka sees the whole batch.
        let sends = messages
            .iter()
            .map(|message| Self::send(&producer, message));
        let results = futures::future::join_all(sends).await;
        if results.iter().any(Result::is_err) {
            self.replace_if_stuck(&producer, &results);
        }
        let reached = results.iter().any(|result| match result {
            Ok(()) => true,
            Err(err) => !err.is_retryable(),
        });
        let unreached = results
            .iter()
            .any(|result| matches!(result, Err(err) if err.is_retryable()));
        if reached || unreached {
            self.connected
                .store(reached && !unreached, Ordering::Relaxed);
        }
        results
    }

    async fn send(
        producer: &FutureProducer,
        message: &Result<Message<'_>, SinkError>,
    ) -> Result<(), SinkError> {
        let message = message.as_ref().map_err(SinkError::clone)?;
        let mut record = FutureRecord::to(&message.topic)
            .payload(&message.delivery.payload.bytes[..])
            .headers(message.headers.clone());
        if let Some(key) = &message.key {
            record = record.key(key.as_str());
        }
        match producer.send(record, QUEUE_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(classify(&err)),
        }
    }

    fn message<'a>(&self, delivery: &'a Delivery) -> Result<Message<'a>, SinkError> {
        let envelope = JsonContext::new(&delivery.envelope);
        let topic = render("topic", &self.config.topic, &envelope)?;
        let key = match &self.config.key {
            Some(template) => Some(render("key", template, &envelope)?),
            None => None,
        };
        let extra = render_headers(&self.config.headers, &envelope)?;
        let facts = &delivery.facts;
        let mut headers = OwnedHeaders::new_with_capacity(6 + extra.len());
        headers = headers.insert(Header {
            key: "id",
            value: Some(facts.id.as_str()),
        });
        headers = headers.insert(Header {
            key: "content_type",
            value: Some(delivery.payload.content_type.as_str()),
        });
        for (name, value) in facts.headers() {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        for (name, value) in &extra {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_str()),
            });
        }
        Ok(Message {
            delivery,
            topic,
            key,
            headers,
        })
    }
}

struct Message<'a> {
    delivery: &'a Delivery,
    topic: String,
    key: Option<String>,
    headers: OwnedHeaders,
}

/// Transient unless the message itself can never be accepted: too large, malformed, or for a
/// topic name Kafka refuses. An unknown topic stays transient: it may yet be created.
pub fn classify(err: &KafkaError) -> SinkError {
    let permanent = matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
        )
    );
    if permanent {
        SinkError::permanent(format!("Kafka refused the message: {err}"))
    } else {
        SinkError::transient(format!("Kafka delivery failed: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::classify;

    #[test]
    fn only_messages_that_can_never_fit_fail_for_good() {
        let check = |code: RDKafkaErrorCode, retryable: bool| {
            let err = classify(&KafkaError::MessageProduction(code));
            assert_eq!(err.is_retryable(), retryable, "{code:?}: {err}");
        };
        check(RDKafkaErrorCode::MessageSizeTooLarge, false);
        check(RDKafkaErrorCode::InvalidTopic, false);
        check(RDKafkaErrorCode::MessageTimedOut, true);
        check(RDKafkaErrorCode::AllBrokersDown, true);
        check(RDKafkaErrorCode::UnknownTopicOrPartition, true);
        check(RDKafkaErrorCode::NotEnoughReplicas, true);
    }
}
