//! Config: the YAML file, parsed once into validated types, every error reported at once.
//!
//! [`from_yaml`] is the pure core: text, variables and a file reader in, a [`Config`] or every
//! problem (with file, line:column and path) out. [`load`] adds the real file system and the
//! process environment and is the only place here that touches either. The types below are
//! the validated result: durations are [`Duration`]s, limits are non-zero, secrets are
//! [`Secret`]s, so no later code re-checks them. The reference for every field is
//! docs/configuration.md; config/example.yaml shows each one and is parsed by a test.

mod auth;
mod control;
mod interp;
mod read;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::envelope::Kind;
use crate::yaml;

pub use auth::{Auth, BasicCredential, HmacAuth, SignatureEncoding, TimestampCheck};
pub use control::{
    ApiKeyGrant, ControlSettings, DEFAULT_MAX_REGISTRATIONS, HqCredential, HqSettings,
    WantedForwarder,
};
pub use interp::{InterpError, interpolate, substitute};
pub use secret::Secret;

/// The embedded default, used when no config file is given: loopback only, every source
/// accepted without auth.
pub const DEFAULT_YAML: &str = include_str!("../config/default.yaml");

/// The only config version this build reads.
pub const VERSION: u64 = 1;

/// The whole validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where HQ's requests arrive (`/ingest/{source}`).
    pub listen: SocketAddr,
    /// Metrics, health and the admin API; never the ingest routes.
    pub admin_listen: SocketAddr,
    /// Spool and state. Relative paths in a file are resolved against the file's folder.
    pub data_dir: PathBuf,
    /// The rules file, if any; resolved like `data_dir`.
    pub rules_path: Option<PathBuf>,
    pub ingress: IngressSettings,
    pub sources: Sources,
    pub spool: SpoolSettings,
    /// The Data Forwarding API, both directions (docs/control.md); empty when absent.
    pub control: ControlSettings,
}

/// Limits on incoming requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressSettings {
    /// Larger bodies are answered 413.
    pub max_body_bytes: NonZeroUsize,
    /// A request, including reading a slow client's body, is cut off past this.
    pub request_timeout: Duration,
    /// Requests beyond this many in flight are shed with 503, which HQ retries.
    pub max_concurrent_requests: NonZeroUsize,
    /// Deepest XML or JSON nesting a body may have.
    pub max_depth: NonZeroUsize,
    /// How long in-flight requests may finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// A payload whose dedupe key was accepted this recently is answered as a duplicate.
    pub dedupe_window: Duration,
    /// The most dedupe keys kept in memory; past it, the oldest are forgotten first.
    pub dedupe_max_keys: NonZeroUsize,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            max_body_bytes: NonZeroUsize::new(10 * 1024 * 1024).expect("non-zero"),
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: NonZeroUsize::new(1024).expect("non-zero"),
            max_depth: NonZeroUsize::new(64).expect("non-zero"),
            shutdown_grace: Duration::from_secs(30),
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
            dedupe_max_keys: NonZeroUsize::new(1_000_000).expect("non-zero"),
        }
    }
}

/// The durable spool on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Size at which a segment file is closed and a new one started.
    pub segment_bytes: NonZeroU64,
    /// Acknowledged records are kept this long (for replay), then removed.
    pub retention: Duration,
    /// Past this the spool refuses new records (503) rather than fill the disk.
    /// Never smaller than `segment_bytes`.
    pub max_disk_bytes: NonZeroU64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            segment_bytes: NonZeroU64::new(64 * 1024 * 1024).expect("non-zero"),
            retention: Duration::from_secs(168 * 3600),
            max_disk_bytes: NonZeroU64::new(10 * 1024 * 1024 * 1024).expect("non-zero"),
        }
    }
}

/// The configured sources, by the name HQ puts in `/ingest/{source}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sources {
    named: BTreeMap<String, Source>,
    /// The `"*"` entry: settings for any name not listed.
    fallback: Option<Source>,
}

impl Sources {
    /// The source called `name`, else the `"*"` fallback, else `None` (answered 404).
    pub fn get(&self, name: &str) -> Option<&Source> {
        self.named.get(name).or(self.fallback.as_ref())
    }

    /// Every listed source in name order, then the fallback. Bounded by the config, so safe
    /// to use as metric labels.
    pub fn iter(&self) -> impl Iterator<Item = &Source> {
        self.named.values().chain(self.fallback.as_ref())
    }
}

/// One source: who may send to it and what it sends.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The `{source}` path segment, or `*` for the fallback.
    pub name: String,
    /// The CommCare project space; XML bodies do not carry it.
    pub domain: Option<String>,
    /// The payload kind HQ is set to send here; `None` means classify by content.
    pub kind: Option<Kind>,
    /// Whether resends with a known dedupe key are dropped.
    pub dedupe: bool,
    pub auth: Auth,
}

/// Command-line values that replace the file's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub rules_path: Option<PathBuf>,
}

/// Reads the config file at `path` (or the embedded default when `None`), with `${VAR}` taken
/// from the process environment and `{ file: PATH }` secrets from the file system.
///
/// # Errors
///
/// Returns every problem found, or that the file could not be read.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let vars = environment;
    let read_file = |path: &Path| std::fs::read_to_string(path);
    match path {
        None => from_yaml(
            DEFAULT_YAML,
            "<embedded default>",
            &vars,
            &read_file,
            overrides,
        ),
        Some(path) => {
            let origin = path.display().to_string();
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigErrors::Unreadable {
                    origin: origin.clone(),
                    source,
                })?;
            from_yaml(&text, &origin, &vars, &read_file, overrides)
        }
    }
}

/// A process environment variable, for `${VAR}` in the config and the rules file: the one
/// place ccrelay reads the environment (beside telemetry's standard `RUST_LOG`/`OTEL_*`). A
/// variable that is set but not valid UTF-8 reads as unset: a secret must not be mangled.
pub fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses and validates config text. `origin` names the file in errors, and its folder is
/// where relative paths in the text (`data_dir`, `rules`, `{ file: ... }`) are resolved from.
/// Overrides are applied before the checks that depend on them (auth `none` needs a loopback
/// `listen`).
///
/// # Errors
///
/// Returns every problem found, each with its line:column and path.
pub fn from_yaml(
    text: &str,
    origin: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    overrides: &Overrides,
) -> Result<Config, ConfigErrors> {
    let invalid = |errors: yaml::Errors| ConfigErrors::Invalid {
        origin: origin.to_owned(),
        errors: errors.into_sorted_vec(),
    };
    let mut root = yaml::parse(text).map_err(invalid)?;
    let mut errors = yaml::Errors::default();
    interp::interpolate(&mut root, vars, &mut errors);
    let base_dir = Path::new(origin).parent().unwrap_or(Path::new(""));
    let context = read::Context {
        base_dir,
        read_file,
    };
    let config = read::read_config(&root, &context, overrides, &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(invalid(errors)),
    }
}

/// Why a config could not be loaded. Displays one problem per line as
/// `ORIGIN:LINE:COL: PATH: MESSAGE`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    #[error("{origin}: cannot read the config file: {source}")]
    Unreadable {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", yaml::render_errors(origin, errors))]
    Invalid {
        origin: String,
        /// In text order.
        errors: Vec<yaml::Error>,
    },
}

impl ConfigErrors {
    /// The located problems; empty when the file could not be read at all.
    pub fn errors(&self) -> &[yaml::Error] {
        match self {
            ConfigErrors::Unreadable { .. } => &[],
            ConfigErrors::Invalid { errors, .. } => errors,
        }
    }
}
