//! Sinks: where envelopes go. A closed set of kinds, each in its own file, each confirming
//! every delivery it accepts before the dispatcher moves its cursor.
//!
//! A sink never decides whether to retry: it says whether a failure is transient or permanent,
//! and `dispatch` alone picks retry or dead letter.

pub mod file;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::rules::Payload;
use crate::spool::Route;
pub use file::{FileSink, FileSinkConfig};

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
}

impl SinkConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
        }
    }
}

/// One envelope on its way to one sink.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The record's offset in the spool: unique, and stable across retries.
    pub offset: u64,
    pub envelope_id: String,
    pub route: Route,
    /// The envelope as JSON text, exactly as spooled; templates parse only what they read.
    pub envelope: Arc<str>,
    /// The request body exactly as HQ sent it.
    pub body: Bytes,
    /// What the sink sends: the envelope, the raw body or a projection, as the rule chose.
    pub payload: Payload,
    /// The envelope's W3C trace context, passed on to the far side as `traceparent`.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
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
}

impl Sink {
    /// Builds a sink from its settings. Builds do no network IO: a sink that cannot reach its
    /// far side still starts, and its queue holds envelopes until it can.
    pub fn build(config: &SinkConfig, data_dir: &std::path::Path) -> Sink {
        match config {
            SinkConfig::File(config) => Sink::File(FileSink::new(data_dir, config.clone())),
        }
    }

    /// Delivers a batch; one result per delivery, in order. `Ok` means the far side has it.
    pub async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        match self {
            Sink::File(sink) => sink.deliver(batch).await,
        }
    }
}
