//! App: builds the spool, sinks, dispatchers and both listeners from a validated config,
//! runs them, and shuts them down in order.
//!
//! Shutdown order: ingress stops accepting and answers 503 to new requests on open
//! connections → in-flight requests finish, bounded by the grace period → dispatchers finish
//! their current batch → the admin listener stops last, so probes see the whole drain.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::dead_letter::DeadLetters;
use crate::dedupe::DedupeIndex;
use crate::dispatch::Supervisor;
use crate::ingress::{self, IngressState};
use crate::live_rules::{self, LiveRules};
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::recover;
use crate::rules::RuleSet;
use crate::spool::{Spool, SpoolOptions};

/// How often retention and the quota are enforced on the spool.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(60);

/// Both listeners, bound before `run` so that callers (and tests, on port 0) know the addresses.
pub struct Listeners {
    pub ingress: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// # Errors
    /// When either address cannot be bound.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let ingress = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin_listen)", config.admin_listen))?;
        Ok(Listeners { ingress, admin })
    }

    pub fn ingress_addr(&self) -> SocketAddr {
        self.ingress
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Runs the relay until `shutdown` is cancelled, then drains and returns.
///
/// # Errors
/// When the spool cannot be opened or a listener fails.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let spool = Spool::open(SpoolOptions {
        dir: config.data_dir.clone(),
        segment_bytes: config.spool.segment_bytes.get(),
        retention: config.spool.retention,
        max_disk_bytes: config.spool.max_disk_bytes.get(),
    })
    .with_context(|| format!("cannot open the spool in {}", config.data_dir.display()))?;
    let recovered = {
        let (spool, dedupe, metrics) = (
            spool.clone(),
            DedupeIndex::new(
                config.ingress.dedupe_window,
                config.ingress.dedupe_max_keys.get(),
            ),
            Arc::clone(&metrics),
        );
        tokio::task::spawn_blocking(move || {
            recover::recover(&spool, dedupe, &metrics, jiff::Timestamp::now())
        })
        .await
        .context("reading the spool back at start panicked")?
        .context("cannot read the spool back at start")?
    };
    let (dedupe, backlogs) = (recovered.dedupe, recovered.backlogs);
    metrics
        .dedupe_keys
        .set(dedupe.prune(jiff::Timestamp::now()) as i64);
    let dedupe = Arc::new(dedupe);
    let (live_rules, swapped) = LiveRules::load(
        config.rules_path.as_deref(),
        spool.clone(),
        Arc::clone(&metrics),
    )
    .map_err(|errors| anyhow::anyhow!("the rules file is not valid:\n{errors}"))?;
    let live_rules = Arc::new(live_rules);

    let control = crate::control::Control::open(&config, &live_rules).await?;

    let delivery = DeliveryRuntime::start().context("cannot start the delivery thread")?;
    let mut supervisor = Supervisor::new(
        spool.clone(),
        DeadLetters::new(&config.data_dir),
        Arc::clone(&metrics),
        config.data_dir.clone(),
        backlogs.clone(),
        delivery.handle.clone(),
    );
    supervisor.sync(live_rules.current());
    forget_orphan_cursors(&spool, &live_rules.current());
    let dispatchers = supervisor.tracker.clone();
    let stop_dispatch = supervisor.stop.clone();
    dispatchers.spawn(follow_rules(supervisor, swapped));
    dispatchers.spawn(compact_periodically(
        spool.clone(),
        Arc::clone(&dedupe),
        Arc::clone(&metrics),
        stop_dispatch.clone(),
    ));
    dispatchers.spawn(live_rules::watch(
        Arc::clone(&live_rules),
        stop_dispatch.clone(),
    ));

    let control_state = control.spawn(&config, &dispatchers, &stop_dispatch);

    let ingress_ready = Arc::new(AtomicBool::new(false));
    let stop_admin = CancellationToken::new();
    let admin_router = admin::router(AdminState {
        metrics: Arc::clone(&metrics),
        spool: spool.clone(),
        ingress_ready: Arc::clone(&ingress_ready),
        rules: Arc::clone(&live_rules),
        dead_letters: DeadLetters::new(&config.data_dir),
        backlogs: backlogs.clone(),
        control: control_state,
    });
    let admin_server = axum::serve(listeners.admin, admin_router)
        .with_graceful_shutdown(stop_admin.clone().cancelled_owned())
        .into_future();
    let admin_task = tokio::spawn(admin_server);

    let ingress_state = IngressState {
        config: Arc::clone(&config),
        rules: live_rules,
        spool: spool.clone(),
        quarantine: Quarantine::new(&config.data_dir),
        dedupe,
        backlogs,
        metrics,
        in_flight: Arc::new(Semaphore::new(config.ingress.max_concurrent_requests.get())),
        shutdown: shutdown.clone(),
    };
    let ingress_server = axum::serve(listeners.ingress, ingress::router(ingress_state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let mut ingress_task = tokio::spawn(ingress_server);
    ingress_ready.store(true, Ordering::Release);
    tracing::info!("ccrelay is ready");

    let grace = config.ingress.shutdown_grace;
    let served = tokio::select! {
        () = shutdown.cancelled() => {
            ingress_ready.store(false, Ordering::Release);
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: finishing requests in flight");
            match tokio::time::timeout(grace, &mut ingress_task).await {
                Ok(joined) => joined.context("ingress task failed")?.context("ingress failed"),
                Err(_) => {
                    tracing::warn!("requests still in flight after the grace period; closing them");
                    ingress_task.abort();
                    Ok(())
                }
            }
        }
        joined = &mut ingress_task => joined.context("ingress task failed")?.context("ingress failed"),
    };
    ingress_ready.store(false, Ordering::Release);

    stop_dispatch.cancel();
    dispatchers.close();
    if tokio::time::timeout(grace, dispatchers.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "deliveries still in progress after the grace period; they resume at the next start"
        );
    }
    delivery.stop().await;
    stop_admin.cancel();
    let _ = admin_task.await;
    tracing::info!("ccrelay stopped");
    served
}

/// The runtime dispatchers run on: its own thread, apart from the ingress runtime. Under a
/// flood of requests the ingress workers' queues are full of request tasks; a dispatcher
/// queued behind them all would fall ever further behind, while on its own thread the OS
/// gives delivery its share of the CPU and the backlog stays flat.
struct DeliveryRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeliveryRuntime {
    fn start() -> std::io::Result<DeliveryRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("delivery-blocking")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || {
                // Drives every task spawned through `handle` until told to stop; what is left
                // then is dropped with the runtime, here, outside any async context.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(DeliveryRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread once the dispatchers are done (or given up on) and waits for it.
    async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for DeliveryRuntime {
    /// On an early return the thread is told to stop, not waited for.
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// Keeps the dispatchers in line with every rule set swapped in, until the dispatchers stop.
async fn follow_rules(mut supervisor: Supervisor, mut swapped: mpsc::Receiver<Arc<RuleSet>>) {
    let stop = supervisor.stop.clone();
    loop {
        tokio::select! {
            rules = swapped.recv() => match rules {
                Some(rules) => supervisor.sync(rules),
                None => return,
            },
            () = stop.cancelled() => return,
        }
    }
}

/// A cursor whose sink is not in the rules at start belongs to a sink removed before a
/// restart: nothing can deliver to it any more (its settings are gone), and it would keep
/// retention from freeing the spool. Its records stay in the spool until retention.
fn forget_orphan_cursors(spool: &Spool, rules: &RuleSet) {
    for name in spool.consumer_names() {
        if !rules.sinks.contains_key(&name) {
            tracing::warn!(sink = %name, "forgetting the cursor of a sink that is no longer in the rules");
            if let Err(err) = spool.forget_cursor(&name) {
                tracing::error!(sink = %name, error = %err, "cannot forget the cursor");
            }
        }
    }
}

/// Enforces spool retention and the quota, and forgets dedupe keys past their window.
async fn compact_periodically(
    spool: Spool,
    dedupe: Arc<DedupeIndex>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(COMPACTION_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
        let keys = dedupe.prune(jiff::Timestamp::now());
        metrics.dedupe_keys.set(keys as i64);
        let compacting = spool.clone();
        match tokio::task::spawn_blocking(move || compacting.compact()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "spool compaction failed"),
            Err(err) => tracing::error!(error = %err, "spool compaction panicked"),
        }
    }
}
