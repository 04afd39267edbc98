//! Control: the Data Forwarding API v0.5 (commcare-forwarding.md §7), in both directions.
//!
//! - As a **client** of CommCare HQ (`client`, `plan`, `command`): `ccrelay hq list|plan|apply`
//!   make the forwarders HQ has in each domain match `control.forwarders`, touching only
//!   forwarders whose URL points at this relay unless told otherwise. HQ removed this API in
//!   2022, so a 404 on it is answered with the manual steps (`manual`).
//! - As a **server** (`registry`, `api`): the admin listener serves the same resource so that
//!   tools written for HQ's API can register endpoints with ccrelay. Registrations are kept
//!   durably under the data dir and compile into rule subscriptions (`subscriptions`), which
//!   `live_rules` merges with the rules file, so each registered endpoint receives its
//!   domain's payloads of its type through the normal spool, dispatch and sink path.
//!
//! Only this module and `sinks` talk to the network as a client. `api` is the one place here
//! that knows axum, and the one place that maps control errors to HTTP statuses.

pub mod api;
pub mod client;
pub mod command;
pub mod manual;
pub mod plan;
pub mod registry;
pub mod resource;
pub mod subscriptions;

pub use command::HqCommand;
pub use resource::{Forwarder, RepeaterType};

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::live_rules::{self, LiveRules};
use registry::Registry;

/// The control module as `serve` runs it.
pub struct Control {
    registry: Arc<Registry>,
    live: Arc<LiveRules>,
}

impl Control {
    /// Opens the registry and merges its registrations into the rules in force, before the
    /// dispatchers start: a restart must find every `control-<id>` sink in the rules, or its
    /// cursor would be forgotten as an orphan.
    ///
    /// # Errors
    /// When the registrations file cannot be read, or its sinks clash with the rules file's.
    pub async fn open(config: &Config, live: &Arc<LiveRules>) -> anyhow::Result<Control> {
        let registry = Registry::open(&config.data_dir, config.control.max_registrations)
            .context("cannot open the Data Forwarding registrations")?;
        let registry = Arc::new(registry);
        merge_registrations(&registry, live)
            .await
            .context("merging the registrations into the rules panicked")?
            .map_err(|error| anyhow::anyhow!("cannot merge the registrations: {error}"))?;
        Ok(Control {
            registry,
            live: Arc::clone(live),
        })
    }

    /// Starts following the registry (changes apply without a restart) and, when
    /// `control.register_on_start` is set, applies the configured forwarders to HQ in the
    /// background (a failure there is logged; the relay serves anyway). Returns the served
    /// API's state.
    pub fn spawn(
        self,
        config: &Config,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> api::ControlState {
        if config.control.register_on_start {
            let (config, stop) = (config.clone(), stop.clone());
            // Retries against a throttling HQ must not hold up shutdown.
            tracker.spawn(async move {
                tokio::select! {
                    () = command::register_on_start(&config) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
        tracker.spawn(follow_registry(
            Arc::clone(&self.registry),
            self.live,
            stop.clone(),
        ));
        api::ControlState {
            registry: self.registry,
            api_keys: Arc::new(config.control.api_keys.clone()),
        }
    }
}

/// Keeps the subscriptions in `live` equal to the registry's registrations after every
/// change, until `stop`. A change that cannot be applied is logged and recorded in the rules
/// status by `live` itself; the next change tries again.
pub async fn follow_registry(
    registry: Arc<Registry>,
    live: Arc<LiveRules>,
    stop: CancellationToken,
) {
    let mut changes = registry.subscribe();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
        // Errors are logged and kept in the rules status by `set_subscriptions` itself.
        let _ = merge_registrations(&registry, &live).await;
    }
}

/// Makes every registration an HTTP sink and merges them into the rules in force.
async fn merge_registrations(
    registry: &Registry,
    live: &Arc<LiveRules>,
) -> Result<Result<live_rules::Reloaded, String>, tokio::task::JoinError> {
    let subscriptions = subscriptions::compile(&registry.all(), &subscriptions::http_sink);
    let applying = Arc::clone(live);
    tokio::task::spawn_blocking(move || applying.set_subscriptions(subscriptions)).await
}
