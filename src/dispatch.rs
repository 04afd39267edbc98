//! Dispatch: one loop per sink that reads the spool from the sink's cursor, hands the records
//! routed to it to the sink, retries transient failures with backoff, turns permanent ones
//! into dead letters, and stores the cursor only once the whole batch is settled.
//!
//! Invariant: a sink's cursor never passes a record that is neither confirmed by the sink nor
//! stored as a dead letter. A crash therefore re-delivers (at least once), never skips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::metrics::Metrics;
use crate::sinks::{Delivery, Sink, SinkError};
use crate::spool::{Entry, Spool};

/// Records read from the spool per batch.
const BATCH_RECORDS: usize = 512;

/// When to try a failed delivery again.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: exponential, capped, with up to 25% jitter so
    /// that many queues recovering together do not retry in step. A sink's own Retry-After
    /// wins when it is longer.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.initial_delay.saturating_mul(1u32 << attempt.min(20));
        let capped = exponential.min(self.max_delay);
        let jitter = capped.mul_f64(fastrand::f64() * 0.25);
        (capped + jitter).max(retry_after.unwrap_or_default())
    }
}

pub struct Dispatcher {
    pub sink_name: String,
    pub sink: Arc<Sink>,
    pub spool: Spool,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl Dispatcher {
    /// Runs until `shutdown`; a batch being delivered is finished or left for the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut reader = Some(self.spool.reader(self.spool.cursor(&self.sink_name)));
        loop {
            let waiting = reader
                .as_ref()
                .expect("the reader is returned after every read");
            tokio::select! {
                () = waiting.wait_for_records() => {}
                () = shutdown.cancelled() => return,
            }
            let taken = reader
                .take()
                .expect("the reader is returned after every read");
            let (returned, read) = tokio::task::spawn_blocking(move || {
                let mut taken = taken;
                let read = taken.read_batch(BATCH_RECORDS);
                (taken, read)
            })
            .await
            .expect("reading the spool does not panic");
            reader = Some(returned);
            let entries = match read {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::error!(sink = %self.sink_name, error = %err, "cannot read the spool");
                    if matches!(err, crate::spool::SpoolError::Corrupt { .. }) {
                        reader.as_mut().expect("returned above").skip_segment();
                    } else {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            };
            let Some(end) = entries.last().map(|entry| entry.next) else {
                continue;
            };
            if !self.settle(entries, &shutdown).await {
                return;
            }
            if let Err(err) = self.spool.store_cursor(&self.sink_name, end) {
                tracing::error!(sink = %self.sink_name, error = %err, "cannot store the sink's cursor");
            }
        }
    }

    /// Delivers every record of the batch routed to this sink until each is confirmed or
    /// dead-lettered. Returns false when shutdown interrupted it.
    async fn settle(&self, entries: Vec<Entry>, shutdown: &CancellationToken) -> bool {
        let mut pending = self.deliveries(entries);
        let first_attempt_at = jiff::Timestamp::now();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let started = Instant::now();
            let results = self.sink.deliver(&pending).await;
            self.metrics
                .sink_delivery_duration
                .with_label_values(&[&self.sink_name])
                .observe(started.elapsed().as_secs_f64());
            let mut retry = Vec::new();
            let mut retry_after = None;
            for (delivery, result) in pending.into_iter().zip(results) {
                let outcome = match result {
                    Ok(()) => "delivered",
                    Err(SinkError::Transient {
                        reason,
                        retry_after: after,
                    }) => {
                        tracing::warn!(sink = %self.sink_name, envelope_id = %delivery.envelope_id, attempt, error = %reason, "delivery failed, will retry");
                        retry_after = retry_after.max(after);
                        retry.push(delivery);
                        "retried"
                    }
                    Err(SinkError::Permanent { reason }) => {
                        if self.dead_letter(&delivery, reason, attempt, first_attempt_at) {
                            "failed"
                        } else {
                            retry.push(delivery);
                            "retried"
                        }
                    }
                };
                self.metrics
                    .sink_deliveries
                    .with_label_values(&[&self.sink_name, outcome])
                    .inc();
            }
            let healthy = if retry.is_empty() { 1 } else { 0 };
            self.metrics
                .sink_healthy
                .with_label_values(&[&self.sink_name])
                .set(healthy);
            pending = retry;
            if !pending.is_empty() {
                let delay = self.retry.delay(attempt - 1, retry_after);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return false,
                }
            }
        }
        true
    }

    fn deliveries(&self, entries: Vec<Entry>) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        for entry in entries {
            let Some(route) = entry
                .record
                .routes
                .iter()
                .find(|route| route.sink == self.sink_name)
            else {
                continue;
            };
            let envelope: serde_json::Value = match serde_json::from_slice(&entry.record.envelope) {
                Ok(envelope) => envelope,
                Err(err) => {
                    // Only ccrelay writes the spool, after checksumming; this is a bug, not input.
                    tracing::error!(sink = %self.sink_name, offset = entry.offset, error = %err, "spooled envelope is not JSON");
                    serde_json::Value::Null
                }
            };
            let envelope_id = envelope["id"].as_str().unwrap_or_default().to_string();
            deliveries.push(Delivery {
                offset: entry.offset,
                envelope_id,
                route: route.clone(),
                envelope_json: entry.record.envelope,
                envelope,
                body: entry.record.body,
            });
        }
        deliveries
    }

    /// Stores a dead letter; false when it could not be stored, so the delivery stays pending
    /// rather than being dropped.
    fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: String,
        attempts: u32,
        first_attempt_at: jiff::Timestamp,
    ) -> bool {
        tracing::error!(sink = %self.sink_name, envelope_id = %delivery.envelope_id, error = %reason, "delivery failed for good, storing a dead letter");
        let letter = DeadLetter {
            envelope_id: delivery.envelope_id.clone(),
            route: delivery.route.clone(),
            offset: delivery.offset,
            reason,
            attempts,
            first_attempt_at: first_attempt_at.to_string(),
            last_attempt_at: jiff::Timestamp::now().to_string(),
            envelope: delivery.envelope.clone(),
            body_base64: DeadLetter::encode_body(&delivery.body),
        };
        match self.dead_letters.store(&letter) {
            Ok(_) => {
                self.metrics
                    .sink_dead_letters
                    .with_label_values(&[&self.sink_name])
                    .inc();
                true
            }
            Err(err) => {
                tracing::error!(sink = %self.sink_name, envelope_id = %letter.envelope_id, error = %err, "cannot store a dead letter, will try again");
                false
            }
        }
    }
}
