//! Settling a batch: every delivery ends confirmed by the sink or kept as a dead letter.
//! Transient failures are retried with the sink's `RetryPolicy` until it gives up; permanent
//! ones, and those given up on, become dead letters with the last error, the attempt count
//! and the first and last attempt times.

use std::time::Duration;

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::sinks::{Delivery, SinkError};

/// What settling needs of a sink: the sink in force (`dispatch::Active`), or a scripted one
/// in tests. Both are read anew at each attempt, so a reload's new settings apply to retries.
pub trait Target {
    fn retry_policy(&self) -> RetryPolicy;
    fn deliver(&self, batch: &[Delivery]) -> impl Future<Output = Vec<Result<(), SinkError>>>;
    /// Whether the sink holds an open connection to its far side; `None` for sinks that keep
    /// none.
    fn connected(&self) -> Option<bool> {
        None
    }
}

/// Whether a batch was settled or shutdown came first.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Every delivery is confirmed or a dead letter.
    All,
    /// Shutdown interrupted the retries; the batch stays queued for the next start.
    Interrupted,
}

pub struct Settler<'a> {
    pub sink_name: &'a str,
    pub dead_letters: &'a DeadLetters,
    pub metrics: &'a Metrics,
}

impl Settler<'_> {
    /// Delivers `pending` until each delivery is confirmed or dead-lettered, or `shutdown`.
    pub async fn settle(
        &self,
        target: &impl Target,
        mut pending: Vec<Delivery>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Settled {
        // Tokio's clock, so that tests can run days of retries in paused time.
        let first_attempt = tokio::time::Instant::now();
        let first_attempt_at = jiff::Timestamp::now();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let started = tokio::time::Instant::now();
            let spans: Vec<tracing::Span> = pending
                .iter()
                .map(|delivery| self.span(delivery, attempt))
                .collect();
            let results = target.deliver(&pending).await;
            self.metrics
                .sink_delivery_duration
                .with_label_values(&[self.sink_name])
                .observe(started.elapsed().as_secs_f64());
            let policy = target.retry_policy();
            let giving_up = policy.gives_up(attempt, first_attempt.elapsed());
            let mut retry = Vec::new();
            let mut retry_after = None;
            // One warning per attempt, not per envelope: an outage must not flood the log.
            let mut first_error: Option<String> = None;
            for ((delivery, result), span) in pending.into_iter().zip(results).zip(spans) {
                let outcome = match &result {
                    Ok(()) => "delivered",
                    Err(SinkError::Transient { .. }) if !giving_up => "retried",
                    Err(_) => "failed",
                };
                span.record("outcome", outcome);
                let _entered = span.enter();
                let failure = match result {
                    Ok(()) => {
                        self.count(&delivery, "delivered");
                        continue;
                    }
                    Err(SinkError::Transient {
                        reason,
                        retry_after: after,
                    }) if !giving_up => {
                        tracing::debug!(sink = %self.sink_name, envelope_id = %delivery.envelope_id(), attempt, error = %reason, "delivery failed, will retry");
                        first_error.get_or_insert(reason);
                        retry_after = retry_after.max(after);
                        self.count(&delivery, "retried");
                        retry.push(delivery);
                        continue;
                    }
                    Err(SinkError::Transient { reason, .. }) => {
                        policy.exhausted_reason(attempt, first_attempt.elapsed(), &reason)
                    }
                    Err(SinkError::Permanent { reason }) => reason,
                };
                let letter = self.letter(&delivery, failure, attempt, first_attempt_at);
                if self.store(&letter) {
                    self.count(&delivery, "failed");
                } else {
                    // Never dropped: without a dead letter it stays pending.
                    retry.push(delivery);
                }
            }
            self.metrics
                .sink_healthy
                .with_label_values(&[self.sink_name])
                .set(i64::from(retry.is_empty()));
            if let Some(connected) = target.connected() {
                self.metrics
                    .sink_connected
                    .with_label_values(&[self.sink_name])
                    .set(i64::from(connected));
            }
            pending = retry;
            if !pending.is_empty() {
                let delay = policy.delay(attempt - 1, retry_after);
                tracing::warn!(
                    sink = %self.sink_name,
                    attempt,
                    pending = pending.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    error = first_error.as_deref().unwrap_or("dead letter not stored"),
                    "deliveries failed, will retry"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Settled::Interrupted,
                }
            }
        }
        Settled::All
    }

    /// One span per delivery attempt, a child of the ingest that spooled the envelope.
    fn span(&self, delivery: &Delivery, attempt: u32) -> tracing::Span {
        crate::telemetry::span_in_trace(delivery.facts.traceparent.as_deref(), || {
            tracing::info_span!(
                "deliver",
                sink = self.sink_name,
                envelope_id = %delivery.envelope_id(),
                attempt,
                outcome = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            )
        })
    }

    fn count(&self, delivery: &Delivery, outcome: &str) {
        self.metrics
            .sink_deliveries
            .with_label_values(&[self.sink_name, outcome])
            .inc();
        if outcome == "delivered" {
            if let Some(age) = age_of(delivery.envelope_id()) {
                self.metrics
                    .sink_latency
                    .with_label_values(&[self.sink_name])
                    .observe(age.as_secs_f64());
            }
        }
    }

    fn letter(
        &self,
        delivery: &Delivery,
        reason: String,
        attempts: u32,
        first_attempt_at: jiff::Timestamp,
    ) -> DeadLetter {
        tracing::error!(sink = %self.sink_name, envelope_id = %delivery.envelope_id(), attempts, error = %reason, "delivery failed for good, storing a dead letter");
        DeadLetter {
            envelope_id: delivery.envelope_id().to_owned(),
            route: delivery.route.clone(),
            offset: delivery.offset,
            reason,
            attempts,
            first_attempt_at: first_attempt_at.to_string(),
            last_attempt_at: jiff::Timestamp::now().to_string(),
            envelope: serde_json::from_str(&delivery.envelope).unwrap_or(serde_json::Value::Null),
            body_base64: DeadLetter::encode_body(&delivery.body),
        }
    }

    /// Stores a dead letter; false when it could not be stored.
    fn store(&self, letter: &DeadLetter) -> bool {
        match self.dead_letters.store(letter) {
            Ok(_) => {
                self.metrics
                    .sink_dead_letters
                    .with_label_values(&[self.sink_name])
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

/// How long ago the envelope was accepted, read from its id: a UUIDv7 carries its creation
/// time in milliseconds.
fn age_of(envelope_id: &str) -> Option<Duration> {
    let (seconds, nanos) = uuid::Uuid::parse_str(envelope_id)
        .ok()?
        .get_timestamp()?
        .to_unix();
    let created = std::time::UNIX_EPOCH + Duration::new(seconds, nanos);
    std::time::SystemTime::now().duration_since(created).ok()
}

#[cfg(test)]
mod tests {
    //! Retries run in tokio's paused clock: hours of backoff take no real time, and the
    //! virtual time that passed is exact.

    use std::sync::Arc;
    use std::sync::Mutex;

    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::rules::{Payload, Shape};
    use crate::sinks::EnvelopeFacts;
    use crate::spool::Route;

    /// A sink that answers each attempt from a script, per envelope id, then succeeds.
    struct Scripted {
        policy: RetryPolicy,
        script: Mutex<Vec<(&'static str, Vec<SinkError>)>>,
        attempts_at: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(policy: RetryPolicy, script: Vec<(&'static str, Vec<SinkError>)>) -> Scripted {
            Scripted {
                policy,
                script: Mutex::new(script),
                attempts_at: Mutex::new(Vec::new()),
            }
        }
    }

    impl Target for Scripted {
        fn retry_policy(&self) -> RetryPolicy {
            self.policy.clone()
        }

        async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
            self.attempts_at.lock().unwrap().push(Instant::now());
            let mut script = self.script.lock().unwrap();
            batch
                .iter()
                .map(|delivery| {
                    let failures = script
                        .iter_mut()
                        .find(|(id, _)| *id == delivery.envelope_id())
                        .map(|(_, failures)| failures);
                    match failures {
                        Some(failures) if !failures.is_empty() => Err(failures.remove(0)),
                        _ => Ok(()),
                    }
                })
                .collect()
        }
    }

    fn delivery(id: &str) -> Delivery {
        Delivery {
            offset: 0,
            facts: EnvelopeFacts {
                id: id.to_string(),
                ..EnvelopeFacts::default()
            },
            route: Route {
                sink: "downstream".to_string(),
                rule: "all".to_string(),
                shape: Shape::Envelope,
            },
            envelope: Arc::from(format!(r#"{{"id":"{id}"}}"#)),
            body: bytes::Bytes::from_static(b"<data/>"),
            payload: Payload {
                bytes: bytes::Bytes::from_static(b"{}"),
                content_type: "application/json".to_string(),
            },
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: None,
            max_age: Some(Duration::from_secs(3600)),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        dead_letters: DeadLetters,
        metrics: Metrics,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            Fixture {
                dead_letters: DeadLetters::new(dir.path()),
                metrics: Metrics::new(),
                _dir: dir,
            }
        }

        async fn settle(&self, target: &Scripted, ids: &[&str]) -> Settled {
            self.settle_until(target, ids, &CancellationToken::new())
                .await
        }

        async fn settle_until(
            &self,
            target: &Scripted,
            ids: &[&str],
            shutdown: &CancellationToken,
        ) -> Settled {
            let settler = Settler {
                sink_name: "downstream",
                dead_letters: &self.dead_letters,
                metrics: &self.metrics,
            };
            let batch = ids.iter().map(|id| delivery(id)).collect();
            settler.settle(target, batch, shutdown).await
        }

        fn outcomes(&self, outcome: &str) -> u64 {
            self.metrics
                .sink_deliveries
                .with_label_values(&["downstream", outcome])
                .get()
        }

        fn dead_letters(&self) -> Vec<crate::dead_letter::DeadLetter> {
            self.dead_letters.list("downstream").unwrap()
        }
    }

    fn gaps(target: &Scripted) -> Vec<Duration> {
        let at = target.attempts_at.lock().unwrap();
        at.windows(2).map(|pair| pair[1] - pair[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_fails_three_times_then_succeeds_gets_it_on_the_fourth_attempt_after_backoff()
     {
        let fixture = Fixture::new();
        let down = || SinkError::transient("connection refused");
        let target = Scripted::new(policy(), vec![("e1", vec![down(), down(), down()])]);

        assert_eq!(fixture.settle(&target, &["e1"]).await, Settled::All);

        let gaps = gaps(&target);
        assert_eq!(gaps.len(), 3, "four attempts");
        for (gap, base) in gaps.iter().zip([1, 2, 4]) {
            let base = Duration::from_secs(base);
            assert!(*gap >= base && *gap <= base.mul_f64(1.25), "{gaps:?}");
        }
        assert_eq!(fixture.outcomes("retried"), 3);
        assert_eq!(fixture.outcomes("delivered"), 1);
        assert!(fixture.dead_letters().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_becomes_a_dead_letter_at_once_while_the_rest_of_the_batch_is_delivered()
     {
        let fixture = Fixture::new();
        let refused = SinkError::permanent("HTTP 400 Bad Request: unknown field");
        let target = Scripted::new(policy(), vec![("bad", vec![refused])]);

        assert_eq!(
            fixture.settle(&target, &["good", "bad"]).await,
            Settled::All
        );

        assert_eq!(target.attempts_at.lock().unwrap().len(), 1);
        let letters = fixture.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].envelope_id, "bad");
        assert_eq!(letters[0].reason, "HTTP 400 Bad Request: unknown field");
        assert_eq!(letters[0].attempts, 1);
        assert_eq!(fixture.outcomes("failed"), 1);
        assert_eq!(fixture.outcomes("delivered"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts_and_the_dead_letter_says_why_with_the_last_error() {
        let fixture = Fixture::new();
        let policy = RetryPolicy {
            max_attempts: Some(3),
            ..policy()
        };
        let failures = (0..10).map(|n| SinkError::transient(format!("timeout #{n}")));
        let target = Scripted::new(policy, vec![("e1", failures.collect())]);

        assert_eq!(fixture.settle(&target, &["e1"]).await, Settled::All);

        let letters = fixture.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].attempts, 3);
        assert!(
            letters[0]
                .reason
                .starts_with("gave up after 3 attempts over 3s (retry limits: max_attempts 3"),
            "{}",
            letters[0].reason
        );
        assert!(letters[0].reason.ends_with("last error: timeout #2"));
        assert_eq!(fixture.outcomes("retried"), 2);
        assert_eq!(fixture.outcomes("failed"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_once_the_first_attempt_is_max_age_old() {
        let fixture = Fixture::new();
        let policy = RetryPolicy {
            max_age: Some(Duration::from_secs(24 * 3600)),
            max_delay: Duration::from_secs(300),
            ..policy()
        };
        let failures = (0..1000).map(|_| SinkError::transient("503 Service Unavailable"));
        let target = Scripted::new(policy, vec![("e1", failures.collect())]);
        let started = Instant::now();

        assert_eq!(fixture.settle(&target, &["e1"]).await, Settled::All);

        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(24 * 3600)
                && waited < Duration::from_secs(24 * 3600 + 400),
            "{waited:?}"
        );
        assert_eq!(fixture.dead_letters().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sinks_retry_after_is_honoured_when_longer_than_the_backoff() {
        let fixture = Fixture::new();
        let busy = SinkError::Transient {
            reason: "429 Too Many Requests".to_string(),
            retry_after: Some(Duration::from_secs(45)),
        };
        let target = Scripted::new(policy(), vec![("e1", vec![busy])]);

        assert_eq!(fixture.settle(&target, &["e1"]).await, Settled::All);

        assert_eq!(gaps(&target), vec![Duration::from_secs(45)]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_backoff_leaves_the_batch_queued_and_stores_no_dead_letter() {
        let fixture = Fixture::new();
        let failures = (0..10).map(|_| SinkError::transient("connection refused"));
        let target = Scripted::new(policy(), vec![("e1", failures.collect())]);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });

        assert_eq!(
            fixture.settle_until(&target, &["e1"], &shutdown).await,
            Settled::Interrupted
        );
        assert!(fixture.dead_letters().is_empty());
        assert_eq!(fixture.outcomes("delivered"), 0);
    }
}
