//! Live rules: the rule set in force, replaced whole when the rules file changes.
//!
//! A new file is read and compiled completely before an atomic swap; a file that does not
//! compile leaves the old rules serving and is reported in the log, in
//! `ccrelay_rules_reloads_total{result}` and in `status()` (served at `GET /rules`). Each
//! request loads the current set once, so it is routed by one consistent set. Sinks a new set
//! adds are registered in the spool at its end *before* the swap, so their dispatchers start
//! exactly where the new rules begin to route to them.
//!
//! Subscriptions (endpoints registered through the served Data Forwarding API, `control`) are
//! merged into the file's rules on every change to either: `set_subscriptions` recompiles the
//! last good file text with the new subscriptions and swaps like a reload, so dispatch and the
//! supervisor see one kind of change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config;
use crate::metrics::Metrics;
use crate::rules::{RuleSet, Subscription};
use crate::spool::Spool;

/// What `GET /rules` says about the rules in force.
#[derive(Clone, Debug, Serialize)]
pub struct RulesStatus {
    /// The rules file, or null for the embedded default.
    pub path: Option<PathBuf>,
    /// A short hash of the file's text.
    pub version: String,
    pub loaded_at: String,
    pub rule_count: usize,
    pub sinks: Vec<String>,
    /// Why the last reload was refused, if it was; cleared by the next good one.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

pub struct LiveRules {
    path: Option<PathBuf>,
    current: ArcSwap<RuleSet>,
    status: Mutex<RulesStatus>,
    spool: Spool,
    metrics: Arc<Metrics>,
    /// Every rule set swapped in, in order, for the dispatcher supervisor. Bounded: a burst of
    /// reloads waits for the supervisor rather than piling up.
    swaps: mpsc::Sender<Arc<RuleSet>>,
    /// The subscriptions merged into the rules in force. Held while a new set is made and
    /// swapped, so a reload and a subscription change never swap in each other's stale input.
    subscriptions: Mutex<Vec<Subscription>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file's text is the one in force already.
    Unchanged,
    Swapped {
        version: String,
    },
}

impl LiveRules {
    /// Loads the rules file (or the embedded default) for the start of `serve`.
    ///
    /// # Errors
    /// Every problem with the file, one per line.
    /// Also returns the receiving end of the swaps, for the dispatcher supervisor.
    pub fn load(
        path: Option<&Path>,
        spool: Spool,
        metrics: Arc<Metrics>,
    ) -> Result<(LiveRules, mpsc::Receiver<Arc<RuleSet>>), String> {
        let rules = match path {
            None => RuleSet::embedded_default(),
            Some(path) => read_and_compile(path)?,
        };
        let status = RulesStatus {
            path: path.map(Path::to_path_buf),
            version: rules.version().to_string(),
            loaded_at: now(),
            rule_count: rules.rule_count(),
            sinks: rules.sinks.keys().cloned().collect(),
            last_error: None,
            last_error_at: None,
        };
        let (swaps, swapped) = mpsc::channel(SWAP_QUEUE);
        let live = LiveRules {
            path: path.map(Path::to_path_buf),
            current: ArcSwap::from_pointee(rules),
            status: Mutex::new(status),
            spool,
            metrics,
            swaps,
            subscriptions: Mutex::new(Vec::new()),
        };
        Ok((live, swapped))
    }

    /// The rules in force; cheap, lock-free.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    pub fn status(&self) -> RulesStatus {
        self.status
            .lock()
            .expect("status lock is never poisoned")
            .clone()
    }

    /// Reads the rules file again and swaps it in if it compiles and differs. Blocking: call
    /// it from a blocking thread, never from async code.
    ///
    /// # Errors
    /// The file's problems, when it cannot be read or compiled; the old rules stay in force.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let Some(path) = &self.path else {
            return Ok(Reloaded::Unchanged);
        };
        let subscriptions = self.lock_subscriptions();
        let outcome = read_and_compile(path).and_then(|rules| {
            let rules = rules.with_subscriptions(subscriptions.clone())?;
            Ok(self.swap(rules))
        });
        drop(subscriptions);
        let result = match &outcome {
            Ok(Reloaded::Unchanged) => "unchanged",
            Ok(Reloaded::Swapped { .. }) => "success",
            Err(_) => "failure",
        };
        self.metrics
            .rules_reloads
            .with_label_values(&[result])
            .inc();
        match &outcome {
            Ok(Reloaded::Swapped { version }) => {
                tracing::info!(rules = %path.display(), %version, "rules reloaded")
            }
            Ok(Reloaded::Unchanged) => {}
            Err(errors) => {
                tracing::error!(rules = %path.display(), errors = %errors, "rules reload refused; the previous rules stay in force");
                self.record_error(errors);
            }
        }
        outcome
    }

    /// Replaces the subscriptions merged into the file's rules and swaps the result in.
    /// Blocking, like [`LiveRules::reload`].
    ///
    /// # Errors
    /// When a subscription's sink clashes with a sink of the rules file; the rules in force
    /// stay, and the error is recorded in the status.
    pub fn set_subscriptions(&self, subscriptions: Vec<Subscription>) -> Result<Reloaded, String> {
        let mut merged = self.lock_subscriptions();
        // Under this lock the set in force is the file's rules plus the `merged`
        // subscriptions, which `with_subscriptions` replaces: nothing to parse again.
        let outcome = RuleSet::clone(&self.current()).with_subscriptions(subscriptions.clone());
        match outcome {
            Ok(rules) => {
                *merged = subscriptions;
                Ok(self.swap(rules))
            }
            Err(error) => {
                tracing::error!(error = %error, "subscriptions not applied; the previous rules stay in force");
                self.record_error(&error);
                Err(error)
            }
        }
    }

    /// Keeps why the last change was refused, for `GET /rules`, until one is swapped in.
    fn record_error(&self, error: &str) {
        let mut status = self.status.lock().expect("status lock is never poisoned");
        status.last_error = Some(error.to_owned());
        status.last_error_at = Some(now());
    }

    fn lock_subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.subscriptions
            .lock()
            .expect("subscriptions lock is never poisoned")
    }

    fn swap(&self, rules: RuleSet) -> Reloaded {
        let mut status = self.status.lock().expect("status lock is never poisoned");
        if rules.version() == status.version {
            status.last_error = None;
            status.last_error_at = None;
            return Reloaded::Unchanged;
        }
        for sink in rules.sinks.keys() {
            self.spool.register_at_end(sink);
        }
        let version = rules.version().to_string();
        *status = RulesStatus {
            path: self.path.clone(),
            version: version.clone(),
            loaded_at: now(),
            rule_count: rules.rule_count(),
            sinks: rules.sinks.keys().cloned().collect(),
            last_error: None,
            last_error_at: None,
        };
        let rules = Arc::new(rules);
        self.current.store(Arc::clone(&rules));
        drop(status);
        // The supervisor is gone only when shutting down, when new sinks no longer matter.
        let _ = self.swaps.blocking_send(rules);
        Reloaded::Swapped { version }
    }
}

/// Swaps the supervisor has not taken yet; `reload` waits past this many.
const SWAP_QUEUE: usize = 16;

fn read_and_compile(path: &Path) -> Result<RuleSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let origin = path.display().to_string();
    RuleSet::parse_with_vars(&text, &origin, &config::environment)
        .map_err(|errors| errors.to_string())
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// How often the rules file is read again to notice changes. Polling the content (rather than
/// watching inotify events) also notices Kubernetes ConfigMap updates, which swap a symlink.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the rules when the file changes or on SIGHUP, until `shutdown`.
pub async fn watch(live: Arc<LiveRules>, shutdown: tokio_util::sync::CancellationToken) {
    if live.path.is_none() {
        return;
    }
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGHUP; rules reload on file change and POST /rules/reload only");
            None
        }
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP received: reloading the rules");
            }
            () = shutdown.cancelled() => return,
        }
        let reloading = Arc::clone(&live);
        // Errors are logged and recorded in the status by `reload` itself.
        let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
    }
}
