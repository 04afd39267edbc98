//! Sinks: where envelopes go. A closed set of kinds, each in its own file, each confirming
//! every delivery it accepts before the dispatcher moves its cursor.
//!
//! A sink never decides whether to retry: it says whether a failure is transient or permanent,
//! and `dispatch` alone picks retry or dead letter.
//!
//! Builds do no network IO: the network sinks (`amqp`, `kafka`, `http`) connect on their first
//! delivery or check, so a far side that is down at start only holds its queue, never the relay.

pub mod amqp;
pub mod file;
pub mod http;
pub mod kafka;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use crate::envelope::EnvelopeFacts;
use crate::rules::Payload;
use crate::spool::Route;
use crate::template::{JsonContext, Template};
pub use amqp::{AmqpSink, AmqpSinkConfig, ExchangeDeclaration};
pub use file::{FileSink, FileSinkConfig};
pub use http::{HttpAuth, HttpSink, HttpSinkConfig};
pub use kafka::{Compression, KafkaSink, KafkaSinkConfig};

/// Whether `name` may name a sink: sink names become file names (cursors, dead letters),
/// metric labels and log fields, so they are plain and start with a letter or digit (never
/// `.` or `..`). Ids taken from admin requests are held to the same rule.
pub fn is_plain_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// A sink's settings, as named in the rules file's `sinks:`.
#[derive(Clone, Debug)]
pub enum SinkConfig {
    File(FileSinkConfig),
    Amqp(AmqpSinkConfig),
    Kafka(KafkaSinkConfig),
    Http(HttpSinkConfig),
}

impl SinkConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Amqp(_) => "amqp",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Http(_) => "http",
        }
    }
}

/// One envelope on its way to one sink.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The record's offset in the spool: unique, and stable across retries.
    pub offset: u64,
    /// The envelope fields dispatch and the sinks read, parsed once per delivery.
    pub facts: EnvelopeFacts,
    pub route: Route,
    /// The envelope as JSON text, exactly as spooled; templates parse only what they read.
    pub envelope: Arc<str>,
    /// The request body exactly as HQ sent it.
    pub body: Bytes,
    /// What the sink sends: the envelope, the raw body or a projection, as the rule chose.
    pub payload: Payload,
}

impl Delivery {
    pub fn envelope_id(&self) -> &str {
        &self.facts.id
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later: the far side is down, slow or full.
    #[error("{reason}")]
    Transient {
        reason: String,
        /// The far side's own word on when to come back (HTTP Retry-After).
        retry_after: Option<Duration>,
    },
    /// Will fail the same way every time: a template that cannot render, a refused message.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl SinkError {
    pub fn transient(reason: impl Into<String>) -> SinkError {
        SinkError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> SinkError {
        SinkError::Permanent {
            reason: reason.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Transient { .. })
    }
}

/// A built, running sink.
pub enum Sink {
    File(FileSink),
    Amqp(AmqpSink),
    Kafka(KafkaSink),
    Http(HttpSink),
}

impl Sink {
    /// Builds a sink from its settings. Builds do no network IO: a sink that cannot reach its
    /// far side still starts, and its queue holds envelopes until it can.
    pub fn build(config: &SinkConfig, data_dir: &std::path::Path) -> Sink {
        match config {
            SinkConfig::File(config) => Sink::File(FileSink::new(data_dir, config.clone())),
            SinkConfig::Amqp(config) => Sink::Amqp(AmqpSink::new(config.clone())),
            SinkConfig::Kafka(config) => Sink::Kafka(KafkaSink::new(config.clone())),
            SinkConfig::Http(config) => Sink::Http(HttpSink::new(config.clone())),
        }
    }

    /// Delivers a batch; one result per delivery, in order. `Ok` means the far side has it.
    pub async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        match self {
            Sink::File(sink) => sink.deliver(batch).await,
            Sink::Amqp(sink) => sink.deliver(batch).await,
            Sink::Kafka(sink) => sink.deliver(batch).await,
            Sink::Http(sink) => sink.deliver(batch).await,
        }
    }

    /// Reaches the far side without delivering anything (connects when not connected), so a
    /// sink that is down reports so before its first envelope. Bounded by `CHECK_TIMEOUT`.
    ///
    /// # Errors
    /// Why the far side cannot be reached now; always transient.
    pub async fn check(&self) -> Result<(), SinkError> {
        let checked = async {
            match self {
                Sink::File(_) => Ok(()),
                Sink::Amqp(sink) => sink.check().await,
                Sink::Kafka(sink) => sink.check().await,
                Sink::Http(_) => Ok(()),
            }
        };
        match tokio::time::timeout(CHECK_TIMEOUT, checked).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::transient(format!(
                "no answer from the far side within {} s",
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Whether the sink holds an open connection to its far side; `None` for sinks that do
    /// not keep one (file; http, whose connections are pooled per request).
    pub fn connected(&self) -> Option<bool> {
        match self {
            Sink::File(_) | Sink::Http(_) => None,
            Sink::Amqp(sink) => Some(sink.connected()),
            Sink::Kafka(sink) => Some(sink.connected()),
        }
    }
}

/// How long a sink's check may take before it counts as a failure.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Renders every `(name, template)` pair against the delivery's envelope.
///
/// # Errors
/// A permanent failure naming the header whose template cannot render.
pub(crate) fn render_headers(
    headers: &[(String, Template)],
    envelope: &JsonContext,
) -> Result<Vec<(String, String)>, SinkError> {
    headers
        .iter()
        .map(|(name, template)| {
            template
                .render_in(envelope)
                .map(|value| (name.clone(), value))
                .map_err(|err| SinkError::permanent(format!("header `{name}`: {err}")))
        })
        .collect()
}

/// Renders one destination template; a failure is permanent, naming the field.
///
/// # Errors
/// When the template cannot render for this envelope.
pub(crate) fn render(
    field: &str,
    template: &Template,
    envelope: &JsonContext,
) -> Result<String, SinkError> {
    template
        .render_in(envelope)
        .map_err(|err| SinkError::permanent(format!("{field}: {err}")))
}
