//! `ccrelay hq list|plan|apply`, and the apply `serve` runs at start when
//! `control.register_on_start` is set.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::client::{ClientError, HqClient};
use super::manual::manual_steps;
use super::plan::{self, Change, Plan};
use super::resource::{Forwarder, RepeaterType};
use crate::config::{self, Config, Overrides};

/// sysexits.h: a service is unavailable (HQ has no Data Forwarding API).
const EXIT_UNAVAILABLE: u8 = 69;
/// sysexits.h: the configuration was incorrect.
const EXIT_CONFIG_ERROR: u8 = 78;

#[derive(Debug, clap::Subcommand)]
pub enum HqCommand {
    /// List the forwarders HQ has in each configured domain (or those given).
    List {
        #[command(flatten)]
        common: HqArgs,
        /// A domain to list; repeatable. Default: the domains in `control.forwarders`.
        #[arg(long)]
        domain: Vec<String>,
    },
    /// Show what `apply` would create, update or delete in HQ.
    Plan {
        #[command(flatten)]
        common: HqArgs,
        /// Also delete forwarders of the configured domains that point elsewhere.
        #[arg(long)]
        all: bool,
    },
    /// Make HQ's forwarders match `control.forwarders`; running it again changes nothing.
    Apply {
        #[command(flatten)]
        common: HqArgs,
        /// Also delete forwarders of the configured domains that point elsewhere.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct HqArgs {
    /// The config file with the `control:` section.
    #[arg(long)]
    pub config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: HqCommand) -> ExitCode {
    let common = match &command {
        HqCommand::List { common, .. }
        | HqCommand::Plan { common, .. }
        | HqCommand::Apply { common, .. } => common,
    };
    let config = match config::load(Some(&common.config), &Overrides::default()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG_ERROR);
        }
    };
    let Some(hq) = &config.control.hq else {
        eprintln!(
            "{}: `control.hq` is not configured (url, username, api_key or password)",
            common.config.display()
        );
        return ExitCode::from(EXIT_CONFIG_ERROR);
    };
    let client = match HqClient::new(hq) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let json_output = common.json;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let outcome = runtime.block_on(async {
        match &command {
            HqCommand::List { domain, .. } => {
                let domains = if domain.is_empty() {
                    plan::domains(&config.control)
                } else {
                    domain.clone()
                };
                if domains.is_empty() {
                    return Err(Failure::Usage(
                        "no domain: pass --domain or configure `control.forwarders`".to_owned(),
                    ));
                }
                let mut listed = Vec::new();
                for domain in &domains {
                    listed.extend(client.list(domain).await?);
                }
                print_list(&listed, json_output);
                Ok(())
            }
            HqCommand::Plan { all, .. } => {
                let plan = make_plan(&client, &config, *all).await?;
                print_plan(&plan, json_output);
                Ok(())
            }
            HqCommand::Apply { all, .. } => {
                let applied = apply_with(&client, &config, *all, &mut |change| {
                    if !json_output {
                        println!("{change}");
                    }
                })
                .await?;
                if json_output {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&applied).expect("serialises")
                    );
                } else {
                    println!(
                        "{} changed, {} already right",
                        applied.changes.len(),
                        applied.unchanged
                    );
                }
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_CONFIG_ERROR)
        }
        Err(Failure::Client(err)) if err.is_api_removed() => {
            let steps = manual_steps(&config);
            if json_output {
                let body = json!({ "error": err.to_string(), "manual_steps": steps });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).expect("serialises")
                );
            } else {
                eprintln!("{err}\n");
                println!("Set up these forwarders by hand:\n\n{steps}");
            }
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(Failure::Client(err)) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Failure::Client(err)
    }
}

/// The plan for every configured domain, listing each domain's forwarders in HQ.
///
/// # Errors
/// The first request HQ refuses or that cannot reach HQ.
pub async fn make_plan(client: &HqClient, config: &Config, all: bool) -> Result<Plan, ClientError> {
    let desired = plan::desired(&config.control);
    let public_url = config.control.public_url.as_deref().unwrap_or_default();
    let mut whole = Plan::default();
    for domain in plan::domains(&config.control) {
        let existing = client.list(&domain).await?;
        let wanted: Vec<_> = desired
            .iter()
            .filter(|desired| desired.domain == domain)
            .cloned()
            .collect();
        let domain_plan = plan::plan_domain(&wanted, &existing, public_url, all);
        whole.changes.extend(domain_plan.changes);
        whole.unchanged += domain_plan.unchanged;
    }
    Ok(whole)
}

/// Plans, then makes each change, calling `report` after each one. What was done is a `Plan`
/// too: the changes made, and how many forwarders were already right.
///
/// # Errors
/// The first request HQ refuses; the changes made before it stay made (running again
/// continues from there).
pub async fn apply_with(
    client: &HqClient,
    config: &Config,
    all: bool,
    report: &mut (dyn FnMut(&Change) + Send),
) -> Result<Plan, ClientError> {
    let plan = make_plan(client, config, all).await?;
    let mut applied = Plan {
        changes: Vec::new(),
        unchanged: plan.unchanged,
    };
    for change in plan.changes {
        match &change {
            Change::Create {
                domain,
                repeater_type,
                url,
            } => client.create(domain, repeater_type.as_str(), url).await?,
            Change::Update { forwarder, url } => {
                client
                    .update(forwarder, &forwarder.repeater_type, url)
                    .await?;
            }
            Change::Delete { forwarder } => match client.delete(forwarder).await {
                // Someone else deleted it meanwhile: the goal is reached.
                Err(ClientError::NotFound { .. }) | Ok(()) => {}
                Err(err) => return Err(err),
            },
        }
        report(&change);
        applied.changes.push(change);
    }
    Ok(applied)
}

/// `serve`'s apply at start: logs the outcome; never fails the relay.
pub async fn register_on_start(config: &Config) {
    let Some(hq) = &config.control.hq else {
        return;
    };
    let client = match HqClient::new(hq) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot register with HQ");
            return;
        }
    };
    let mut report = |change: &Change| tracing::info!(change = %change, "HQ forwarder changed");
    match apply_with(&client, config, false, &mut report).await {
        Ok(applied) => tracing::info!(
            changed = applied.changes.len(),
            unchanged = applied.unchanged,
            "registered with HQ"
        ),
        Err(err) if err.is_api_removed() => tracing::error!(
            error = %err,
            manual_steps = %manual_steps(config),
            "cannot register with HQ; set the forwarders up by hand"
        ),
        Err(err) => tracing::error!(error = %err, "cannot register with HQ; ccrelay serves anyway"),
    }
}

fn print_list(forwarders: &[Forwarder], json_output: bool) {
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(forwarders).expect("serialises")
        );
        return;
    }
    if forwarders.is_empty() {
        println!("no forwarders");
    }
    for forwarder in forwarders {
        let known = if RepeaterType::parse(&forwarder.repeater_type).is_some() {
            ""
        } else {
            " (type unknown to ccrelay)"
        };
        println!(
            "{}  {}  {}  {}{known}",
            forwarder.domain, forwarder.id, forwarder.repeater_type, forwarder.url
        );
    }
}

fn print_plan(plan: &Plan, json_output: bool) {
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(plan).expect("serialises")
        );
        return;
    }
    for change in &plan.changes {
        println!("{change}");
    }
    println!(
        "{} to change, {} already right",
        plan.changes.len(),
        plan.unchanged
    );
}
