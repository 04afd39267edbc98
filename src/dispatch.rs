//! Dispatch: one loop per sink that reads the spool from the sink's cursor, hands the records
//! routed to it to the sink, retries transient failures with backoff, turns permanent ones
//! into dead letters, and stores the cursor only once the whole batch is settled.
//!
//! Invariant: a sink's cursor never passes a record that is neither confirmed by the sink nor
//! stored as a dead letter. A crash therefore re-delivers (at least once), never skips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::sinks::{Delivery, Sink, SinkError};
use crate::spool::{Entry, Spool};

/// Records read from the spool per batch.
const BATCH_RECORDS: usize = 512;
/// After the first record arrives, how long to let more gather: one sync of the sink and one
/// cursor write then cover many records instead of each small group commit.
const BATCH_LINGER: Duration = Duration::from_millis(10);
/// A cursor is written at most this often while records keep coming, and whenever the sink
/// goes idle or stops. A crash re-delivers at most what was confirmed since the last write.
const CURSOR_STORE_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Swapped when a rules reload changes the sink's settings.
    pub sink: Arc<ArcSwap<Sink>>,
    /// Set when the sink left the rules: the dispatcher delivers what was routed to it before
    /// that offset, then forgets its cursor and stops.
    pub retire: watch::Receiver<Option<u64>>,
    pub spool: Spool,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl Dispatcher {
    /// Runs until `shutdown`, then drains: delivers what is spooled until it is caught up or a
    /// delivery fails (the rest stays queued for the next start). The caller bounds the drain.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut reader = Some(self.spool.reader(self.spool.cursor(&self.sink_name)));
        let mut cursor = CursorWriter::new(&self);
        let mut retire = self.retire.clone();
        loop {
            let waiting = reader
                .as_ref()
                .expect("the reader is returned after every read");
            let caught_up = self.spool.durable_end() <= waiting.position();
            let retire_at = *retire.borrow_and_update();
            if retire_at.is_some_and(|end| waiting.position() >= end) {
                cursor.store_pending();
                self.retire_now();
                return;
            }
            if caught_up {
                // Store the cursor once the sink has been idle a moment, not at every pause.
                let idle = tokio::time::sleep(CURSOR_STORE_INTERVAL / 4);
                tokio::pin!(idle);
                loop {
                    tokio::select! {
                        () = waiting.wait_for_records() => break,
                        Ok(()) = retire.changed() => break,
                        () = &mut idle, if cursor.has_pending() => cursor.store_pending(),
                        () = shutdown.cancelled() => {
                            cursor.store_pending();
                            return;
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(BATCH_LINGER) => {}
                    // On shutdown, what is already spooled is still delivered (drain).
                    () = shutdown.cancelled() => {}
                }
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
                break;
            }
            cursor.advance(end);
        }
        cursor.store_pending();
    }

    fn retire_now(&self) {
        tracing::info!(sink = %self.sink_name, "sink removed from the rules and drained; stopping its delivery");
        if let Err(err) = self.spool.forget_cursor(&self.sink_name) {
            tracing::error!(sink = %self.sink_name, error = %err, "cannot forget the removed sink's cursor");
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
            let sink = self.sink.load_full();
            let results = sink.deliver(&pending).await;
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
            // Only ccrelay writes the spool, after checksumming: not UTF-8 JSON here is a bug.
            let envelope: Arc<str> = match std::str::from_utf8(&entry.record.envelope) {
                Ok(text) => text.into(),
                Err(err) => {
                    tracing::error!(sink = %self.sink_name, offset = entry.offset, error = %err, "spooled envelope is not UTF-8");
                    String::from_utf8_lossy(&entry.record.envelope).into()
                }
            };
            let header = serde_json::from_str::<EnvelopeHeader>(&envelope).unwrap_or_default();
            let payload = route.shape.apply(
                &envelope,
                &entry.record.body,
                header.content_type.as_deref(),
            );
            deliveries.push(Delivery {
                offset: entry.offset,
                envelope_id: header.id,
                route: route.clone(),
                envelope,
                body: entry.record.body,
                payload,
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
            envelope: serde_json::from_str(&delivery.envelope).unwrap_or(serde_json::Value::Null),
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

/// The envelope fields a dispatcher reads itself, without parsing the rest.
#[derive(Default, serde::Deserialize)]
struct EnvelopeHeader {
    id: String,
    content_type: Option<String>,
}

/// Stores a dispatcher's cursor, not more often than `CURSOR_STORE_INTERVAL` under load.
struct CursorWriter<'a> {
    dispatcher: &'a Dispatcher,
    pending: Option<u64>,
    last_stored: Instant,
}

impl<'a> CursorWriter<'a> {
    fn new(dispatcher: &'a Dispatcher) -> CursorWriter<'a> {
        CursorWriter {
            dispatcher,
            pending: None,
            last_stored: Instant::now(),
        }
    }

    /// Notes that everything before `offset` is settled, storing it if it is time.
    fn advance(&mut self, offset: u64) {
        self.pending = Some(offset);
        if self.last_stored.elapsed() >= CURSOR_STORE_INTERVAL {
            self.store_pending();
        }
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn store_pending(&mut self) {
        let Some(offset) = self.pending.take() else {
            return;
        };
        let name = &self.dispatcher.sink_name;
        if let Err(err) = self.dispatcher.spool.store_cursor(name, offset) {
            tracing::error!(sink = %name, error = %err, "cannot store the sink's cursor");
            self.pending = Some(offset);
        }
        self.last_stored = Instant::now();
    }
}

/// Keeps one dispatcher running per sink of the rules in force: starts them for new sinks,
/// hands changed settings to running ones, and lets removed ones drain and stop.
pub struct Supervisor {
    pub spool: Spool,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub data_dir: PathBuf,
    pub retry: RetryPolicy,
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
    running: HashMap<String, Running>,
}

struct Running {
    sink: Arc<ArcSwap<Sink>>,
    retire: Arc<watch::Sender<Option<u64>>>,
    /// Bumped each time the sink is (re-)confirmed by a rules reload.
    epoch: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
}

impl Supervisor {
    pub fn new(
        spool: Spool,
        dead_letters: DeadLetters,
        metrics: Arc<Metrics>,
        data_dir: PathBuf,
    ) -> Supervisor {
        Supervisor {
            spool,
            dead_letters,
            metrics,
            data_dir,
            retry: RetryPolicy::default(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            running: HashMap::new(),
        }
    }

    /// Brings the running dispatchers in line with `rules`, which replaced `previous`.
    ///
    /// A sink that `rules` drops still gets what `previous` routed to it: its dispatcher is
    /// retired only once no request holds `previous` any more and the spool has written
    /// every append queued before that, so no record routed to it can come after the end it
    /// drains to.
    pub fn sync(&mut self, rules: &RuleSet, previous: Option<Arc<RuleSet>>) {
        self.running
            .retain(|_, running| !running.finished.load(Ordering::Acquire));
        for (name, config) in &rules.sinks {
            let sink = Sink::build(config, &self.data_dir);
            match self.running.get(name) {
                Some(running) => {
                    running.sink.store(Arc::new(sink));
                    running.epoch.fetch_add(1, Ordering::AcqRel);
                    running.retire.send_replace(None);
                }
                None => self.start(name, sink),
            }
        }
        let Some(previous) = previous else { return };
        for (name, running) in &self.running {
            if rules.sinks.contains_key(name) || running.retire.borrow().is_some() {
                continue;
            }
            tracing::info!(sink = %name, "sink removed from the rules; delivering what was routed to it, then stopping");
            let epoch = running.epoch.load(Ordering::Acquire);
            let (epoch_now, retire, spool) = (
                Arc::clone(&running.epoch),
                Arc::clone(&running.retire),
                self.spool.clone(),
            );
            let previous = Arc::clone(&previous);
            self.tracker.spawn(async move {
                while Arc::strong_count(&previous) > 1 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                spool.barrier().await;
                // Re-added meanwhile: it stays.
                if epoch_now.load(Ordering::Acquire) == epoch {
                    retire.send_replace(Some(spool.durable_end()));
                }
            });
        }
    }

    fn start(&mut self, name: &str, sink: Sink) {
        let sink = Arc::new(ArcSwap::from_pointee(sink));
        let (retire, retire_receiver) = watch::channel(None);
        let finished = Arc::new(AtomicBool::new(false));
        let dispatcher = Dispatcher {
            sink_name: name.to_string(),
            sink: Arc::clone(&sink),
            retire: retire_receiver,
            spool: self.spool.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: Arc::clone(&self.metrics),
            retry: self.retry.clone(),
        };
        let stop = self.stop.clone();
        let done = Arc::clone(&finished);
        self.tracker.spawn(async move {
            dispatcher.run(stop).await;
            done.store(true, Ordering::Release);
        });
        self.running.insert(
            name.to_string(),
            Running {
                sink,
                retire: Arc::new(retire),
                epoch: Arc::new(AtomicU64::new(0)),
                finished,
            },
        );
    }
}
