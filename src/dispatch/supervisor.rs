//! The supervisor keeps one dispatcher per sink of the rules in force, and retires the
//! dispatchers of removed sinks once they have drained what was routed to them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Active, Dispatcher};
use crate::backlog::Backlogs;
use crate::dead_letter::DeadLetters;
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::sinks::Sink;
use crate::spool::Spool;

/// The handshake between the supervisor and a dispatcher about retiring its sink, under one
/// lock so that a sink re-added while its dispatcher is exiting is never left without one.
#[derive(Default)]
pub struct Retirement {
    state: std::sync::Mutex<RetirementState>,
    pub(super) changed: tokio::sync::Notify,
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
    pub(super) fn exit_if_drained(&self, position: u64, on_exit: impl FnOnce()) -> bool {
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
    pub backlogs: Backlogs,
    /// Where dispatchers run: the delivery runtime, apart from ingress (see `app`).
    pub runtime: tokio::runtime::Handle,
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
    running: HashMap<String, Running>,
    /// The rules last synced with.
    synced: Option<Arc<RuleSet>>,
}

struct Running {
    active: Arc<ArcSwap<Active>>,
    retirement: Arc<Retirement>,
}

impl Supervisor {
    pub fn new(
        spool: Spool,
        dead_letters: DeadLetters,
        metrics: Arc<Metrics>,
        data_dir: PathBuf,
        backlogs: Backlogs,
        runtime: tokio::runtime::Handle,
    ) -> Supervisor {
        Supervisor {
            spool,
            dead_letters,
            metrics,
            data_dir,
            backlogs,
            runtime,
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
        for (name, spec) in &rules.sinks {
            let active = Active {
                sink: Sink::build(&spec.config, &self.data_dir),
                retry: spec.retry.clone(),
            };
            let kept = self
                .running
                .get(name)
                .is_some_and(|running| running.retirement.cancel());
            match self.running.get(name) {
                Some(running) if kept => running.active.store(Arc::new(active)),
                // Not running, or its dispatcher exited after forgetting its cursor.
                _ => {
                    self.spool.register_at_end(name);
                    self.start(name, active);
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

    fn start(&mut self, name: &str, active: Active) {
        let active = Arc::new(ArcSwap::from_pointee(active));
        let retirement = Arc::new(Retirement::default());
        let dispatcher = Dispatcher {
            sink_name: name.to_string(),
            active: Arc::clone(&active),
            retirement: Arc::clone(&retirement),
            spool: self.spool.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: Arc::clone(&self.metrics),
            backlogs: self.backlogs.clone(),
        };
        self.tracker
            .spawn_on(dispatcher.run(self.stop.clone()), &self.runtime);
        self.running
            .insert(name.to_string(), Running { active, retirement });
    }
}
