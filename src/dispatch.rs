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

use arc_swap::ArcSwap;
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
    pub retirement: Arc<Retirement>,
    pub spool: Spool,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl Dispatcher {
    /// Runs until `shutdown`, then drains: delivers what is spooled until it is caught up or a
    /// delivery fails (the rest stays queued for the next start). The caller bounds the drain.
    pub async fn run(self, shutdown: CancellationToken) {
        let probe = shutdown.child_token();
        let _stop_probe = probe.clone().drop_guard();
        tokio::spawn(probe_sink(
            self.sink_name.clone(),
            Arc::clone(&self.sink),
            Arc::clone(&self.metrics),
            probe,
        ));
        let mut reader = Some(self.spool.reader(self.spool.cursor(&self.sink_name)));
        let mut cursor = CursorWriter::new(&self);
        loop {
            let waiting = reader
                .as_ref()
                .expect("the reader is returned after every read");
            let caught_up = self.spool.durable_end() <= waiting.position();
            if self.retirement.exit_if_drained(waiting.position(), || {
                cursor.store_pending();
                self.forget_cursor();
            }) {
                return;
            }
            if caught_up {
                // Store the cursor once the sink has been idle a moment, not at every pause.
                let idle = tokio::time::sleep(CURSOR_STORE_INTERVAL / 4);
                tokio::pin!(idle);
                loop {
                    tokio::select! {
                        () = waiting.wait_for_records() => break,
                        () = self.retirement.changed.notified() => break,
                        () = &mut idle, if cursor.has_pending() => {
                            cursor.store_pending();
                            // A failed store stays pending: try again later, not at once.
                            idle.as_mut().reset(tokio::time::Instant::now() + CURSOR_STORE_INTERVAL / 4);
                        }
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
                    let skipped = matches!(err, crate::spool::SpoolError::Corrupt { .. })
                        && reader.as_mut().expect("returned above").skip_segment();
                    if !skipped {
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

    fn forget_cursor(&self) {
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
            if let Some(connected) = sink.connected() {
                self.metrics
                    .sink_connected
                    .with_label_values(&[&self.sink_name])
                    .set(i64::from(connected));
            }
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

/// How often a network sink's connection is checked between deliveries.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Checks the sink's far side at start and then every `PROBE_INTERVAL`, so `/readyz` and the
/// metrics say a broker is unreachable before (or without) an envelope failing on it. The
/// health gauge follows the checks only when they change their answer; between changes,
/// deliveries set it.
async fn probe_sink(
    name: String,
    sink: Arc<ArcSwap<Sink>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut last: Option<bool> = None;
    loop {
        let current = sink.load_full();
        let checked = tokio::select! {
            checked = current.check() => checked,
            () = stop.cancelled() => return,
        };
        let reachable = checked.is_ok();
        if let Err(err) = &checked {
            if last != Some(false) {
                tracing::warn!(sink = %name, error = %err, "sink unreachable");
            }
        }
        if last != Some(reachable) {
            metrics
                .sink_healthy
                .with_label_values(&[&name])
                .set(i64::from(reachable));
        }
        if let Some(connected) = current.connected() {
            metrics
                .sink_connected
                .with_label_values(&[&name])
                .set(i64::from(connected));
        } else {
            // Nothing to keep connected (file, http): one check at start says enough.
            return;
        }
        last = Some(reachable);
        drop(current);
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = stop.cancelled() => return,
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

/// The handshake between the supervisor and a dispatcher about retiring its sink, under one
/// lock so that a sink re-added while its dispatcher is exiting is never left without one.
#[derive(Default)]
pub struct Retirement {
    state: std::sync::Mutex<RetirementState>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct RetirementState {
    /// Drain up to here, then stop.
    at: Option<u64>,
    /// The dispatcher has stopped and forgotten its cursor.
    exited: bool,
    /// Bumped each time the sink is confirmed by a reload: a retirement decided before that
    /// must not apply, since the rules in between may have routed records to the sink.
    generation: u64,
}

impl Retirement {
    fn lock(&self) -> std::sync::MutexGuard<'_, RetirementState> {
        self.state
            .lock()
            .expect("retirement lock is never poisoned")
    }

    /// Dispatcher side: when retired and drained to `position`, runs `on_exit` (store and
    /// forget the cursor) under the lock and says to stop.
    fn exit_if_drained(&self, position: u64, on_exit: impl FnOnce()) -> bool {
        let mut state = self.lock();
        if state.at.is_some_and(|end| position >= end) {
            on_exit();
            state.exited = true;
            return true;
        }
        false
    }

    /// Supervisor side: keeps the dispatcher; false when it has already exited.
    fn cancel(&self) -> bool {
        let mut state = self.lock();
        state.at = None;
        state.generation += 1;
        !state.exited
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn has_exited(&self) -> bool {
        self.lock().exited
    }

    /// Retires the sink at `end`, unless it was confirmed again since `generation`.
    fn retire_at(&self, end: u64, generation: u64) {
        let mut state = self.lock();
        if !state.exited && state.generation == generation && state.at.is_none() {
            state.at = Some(end);
        }
        drop(state);
        self.changed.notify_one();
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
    /// The rules last synced with.
    synced: Option<Arc<RuleSet>>,
}

struct Running {
    sink: Arc<ArcSwap<Sink>>,
    retirement: Arc<Retirement>,
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
            synced: None,
        }
    }

    /// Brings the running dispatchers in line with `rules`, the set just swapped in. Called
    /// for every swap, in order.
    ///
    /// A sink `rules` drops still gets what the previous set routed to it: its dispatcher is
    /// retired only once no request holds the previous set any more and the spool has written
    /// every append queued before that, so no record routed to it can come after the end it
    /// drains to.
    pub fn sync(&mut self, rules: Arc<RuleSet>) {
        // A retiring dispatcher stays listed until it has exited, so that a sink re-added
        // meanwhile keeps its one dispatcher (and its cursor) instead of getting a second.
        self.running.retain(|name, running| {
            rules.sinks.contains_key(name) || !running.retirement.has_exited()
        });
        for (name, config) in &rules.sinks {
            let sink = Sink::build(config, &self.data_dir);
            let kept = self
                .running
                .get(name)
                .is_some_and(|running| running.retirement.cancel());
            match self.running.get(name) {
                Some(running) if kept => running.sink.store(Arc::new(sink)),
                // Not running, or its dispatcher exited after forgetting its cursor.
                _ => {
                    self.spool.register_at_end(name);
                    self.start(name, sink);
                }
            }
        }
        let previous = self.synced.replace(Arc::clone(&rules));
        let removed: Vec<(Arc<Retirement>, u64)> = self
            .running
            .iter()
            .filter(|(name, _)| !rules.sinks.contains_key(*name))
            .map(|(name, running)| {
                tracing::info!(sink = %name, "sink not in the rules; delivering what was routed to it, then stopping");
                (Arc::clone(&running.retirement), running.retirement.generation())
            })
            .collect();
        let Some(previous) = previous.filter(|_| !removed.is_empty()) else {
            return;
        };
        let previous = Arc::downgrade(&previous);
        let (spool, stop) = (self.spool.clone(), self.stop.clone());
        self.tracker.spawn(async move {
            while previous.strong_count() > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = stop.cancelled() => return,
                }
            }
            spool.barrier().await;
            let end = spool.durable_end();
            for (retirement, generation) in removed {
                retirement.retire_at(end, generation);
            }
        });
    }

    fn start(&mut self, name: &str, sink: Sink) {
        let sink = Arc::new(ArcSwap::from_pointee(sink));
        let retirement = Arc::new(Retirement::default());
        let dispatcher = Dispatcher {
            sink_name: name.to_string(),
            sink: Arc::clone(&sink),
            retirement: Arc::clone(&retirement),
            spool: self.spool.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: Arc::clone(&self.metrics),
            retry: self.retry.clone(),
        };
        self.tracker.spawn(dispatcher.run(self.stop.clone()));
        self.running
            .insert(name.to_string(), Running { sink, retirement });
    }
}
