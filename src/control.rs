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

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::live_rules::LiveRules;
use crate::sinks::SinkConfig;
use registry::{Registration, Registry, RegistryError};

/// Opens the registry and, when `control.register_on_start` is set, applies the configured
/// forwarders to HQ in the background (a failure there is logged; the relay serves anyway).
///
/// # Errors
/// When the registrations file cannot be read.
pub fn start(config: &Config, tracker: &TaskTracker) -> Result<api::ControlState, RegistryError> {
    let registry = Arc::new(Registry::open(
        &config.data_dir,
        config.control.max_registrations,
    )?);
    if config.control.register_on_start {
        let config = config.clone();
        tracker.spawn(async move { command::register_on_start(&config).await });
    }
    Ok(api::ControlState {
        registry,
        api_keys: Arc::new(config.control.api_keys.clone()),
    })
}

/// Keeps the subscriptions in `live` equal to the registry's registrations: once now, then
/// after every change, until `stop`. A change that cannot be applied is logged and recorded
/// in the rules status by `live` itself; the next change tries again.
pub async fn follow_registry(
    registry: Arc<Registry>,
    live: Arc<LiveRules>,
    sink_for: Arc<dyn Fn(&Registration) -> SinkConfig + Send + Sync>,
    stop: CancellationToken,
) {
    let mut changes = registry.subscribe();
    loop {
        changes.mark_unchanged();
        let subscriptions = subscriptions::compile(&registry.all(), &*sink_for);
        let applying = Arc::clone(&live);
        let _ =
            tokio::task::spawn_blocking(move || applying.set_subscriptions(subscriptions)).await;
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}
