//! Dispatch: one loop per sink that reads the spool from the sink's cursor, hands the records
//! routed to it to the sink, retries transient failures with backoff, turns permanent ones
//! into dead letters, and stores the cursor only once the whole batch is settled.
//!
//! Invariant: a sink's cursor never passes a record that is neither confirmed by the sink nor
//! stored as a dead letter. A crash therefore re-delivers (at least once), never skips.

mod settle;
mod supervisor;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::backlog::Backlogs;
use crate::dead_letter::DeadLetters;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::sinks::{Delivery, EnvelopeFacts, Sink, SinkError};
use crate::spool::{Entry, Spool};
pub use settle::{Settled, Settler, Target};
pub use supervisor::{Retirement, Supervisor};

/// Records read from the spool per batch.
const BATCH_RECORDS: usize = 512;
/// After the first record arrives, how long to let more gather: one sync of the sink and one
/// cursor write then cover many records instead of each small group commit.
const BATCH_LINGER: Duration = Duration::from_millis(10);
/// A cursor is synced to disk at most this often while records keep coming, and whenever the
/// sink goes idle or stops; in between it is written unsynced after every batch. A killed
/// process re-delivers at most the batch in flight; a machine that loses power, at most what
/// was confirmed since the last sync.
const CURSOR_STORE_INTERVAL: Duration = Duration::from_secs(1);

/// A sink in force and its retry settings, swapped together when a reload changes either.
pub struct Active {
    pub sink: Sink,
    pub retry: RetryPolicy,
}

impl Target for ArcSwap<Active> {
    fn retry_policy(&self) -> RetryPolicy {
        self.load().retry.clone()
    }

    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        let active = self.load_full();
        active.sink.deliver(batch).await
    }

    fn connected(&self) -> Option<bool> {
        self.load().sink.connected()
    }
}

pub struct Dispatcher {
    pub sink_name: String,
    /// Swapped when a rules reload changes the sink's settings.
    pub active: Arc<ArcSwap<Active>>,
    /// Set when the sink left the rules: the dispatcher delivers what was routed to it before
    /// that offset, then forgets its cursor and stops.
    pub retirement: Arc<Retirement>,
    pub spool: Spool,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub backlogs: Backlogs,
}

impl Dispatcher {
    /// Runs until `shutdown`, then drains: delivers what is spooled until it is caught up or a
    /// delivery fails (the rest stays queued for the next start). The caller bounds the drain.
    pub async fn run(self, shutdown: CancellationToken) {
        let probe = shutdown.child_token();
        let _stop_probe = probe.clone().drop_guard();
        tokio::spawn(probe_sink(
            self.sink_name.clone(),
            Arc::clone(&self.active),
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
            let deliveries = self.deliveries(entries);
            let count = deliveries.len();
            if count > 0 {
                self.note_attempt(end);
                let settler = Settler {
                    sink_name: &self.sink_name,
                    dead_letters: &self.dead_letters,
                    metrics: &self.metrics,
                };
                if settler.settle(&*self.active, deliveries, &shutdown).await
                    == Settled::Interrupted
                {
                    break;
                }
                self.backlogs.settled(&self.sink_name, count);
            }
            cursor.advance(end);
        }
        cursor.store_pending();
    }

    fn forget_cursor(&self) {
        tracing::info!(sink = %self.sink_name, "sink removed from the rules and drained; stopping its delivery");
        self.backlogs.forget(&self.sink_name);
        if let Err(err) = self.spool.forget_cursor(&self.sink_name) {
            tracing::error!(sink = %self.sink_name, error = %err, "cannot forget the removed sink's cursor");
        }
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
            let facts = EnvelopeFacts::read(&envelope);
            let payload =
                route
                    .shape
                    .apply(&envelope, &entry.record.body, facts.content_type.as_deref());
            deliveries.push(Delivery {
                offset: entry.offset,
                facts,
                route: route.clone(),
                envelope,
                body: entry.record.body,
                payload,
            });
        }
        deliveries
    }

    /// Notes what is about to be handed to the sink, so that a start after a crash can count
    /// the possible duplicates (`recover`).
    fn note_attempt(&self, end: u64) {
        if let Err(err) = self.spool.note_attempt(&self.sink_name, end) {
            tracing::warn!(sink = %self.sink_name, error = %err, "cannot note the delivery in progress");
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
    active: Arc<ArcSwap<Active>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut last: Option<bool> = None;
    loop {
        let held = active.load_full();
        let current = &held.sink;
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
        // Not held while asleep: a reload may swap the sink meanwhile.
        drop(held);
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
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

    /// Notes that everything before `offset` is settled: written at once, synced if it is
    /// time.
    fn advance(&mut self, offset: u64) {
        self.pending = Some(offset);
        if self.last_stored.elapsed() >= CURSOR_STORE_INTERVAL {
            self.store_pending();
        } else if let Err(err) = self
            .dispatcher
            .spool
            .note_cursor(&self.dispatcher.sink_name, offset)
        {
            tracing::warn!(sink = %self.dispatcher.sink_name, error = %err, "cannot note the sink's cursor");
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
