//! The command line: `serve` runs the relay; `parse` shows the envelope ccrelay makes of a
//! payload, or the answer ingress would give it; `rules` checks and tests a rules file; `dlq`
//! and `replay` act on a running relay through its admin listener (`remote`).

mod remote;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Overrides};
use crate::decode::{self, Arrival, Input, Limits};
use crate::envelope::Kind;
use crate::rules::{self, RuleSet, TestCase, TestPayload};
use crate::telemetry::{self, LogFormat};

/// sysexits.h: the input data was incorrect.
const EXIT_DATA_ERROR: u8 = 65;
/// sysexits.h: the configuration was incorrect.
const EXIT_CONFIG_ERROR: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "ccrelay",
    version,
    about = "Receives CommCare HQ Data Forwarding and routes it to sinks"
)]
pub struct Cli {
    /// Log lines as human-readable text or as JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: ingress, delivery and the admin listener.
    Serve {
        /// The config file; without it, the embedded default (loopback only, any source name).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Ingress address, overriding `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin address, overriding `admin_listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Data folder, overriding `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rules file, overriding `rules`; without either, everything goes to the file sink.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Manage the forwarders CommCare HQ has for this relay (the Data Forwarding API).
    Hq {
        #[command(subcommand)]
        command: crate::control::HqCommand,
    },
    /// Check or test a rules file.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// List, show, replay or purge the dead letters of a running relay.
    Dlq {
        #[command(subcommand)]
        command: remote::DlqCommand,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Route accepted envelopes from a time range again, through the rules now in force.
    Replay {
        #[command(flatten)]
        args: remote::ReplayArgs,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Print the envelope ccrelay makes of a payload, or the error ingress would answer.
    Parse {
        /// The payload file.
        file: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// The kind the source expects (form, case, form_stub, app, user, location).
        #[arg(long)]
        kind: Option<String>,
        /// The source's CommCare domain, used when the payload carries none.
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Exit 0 when the rules file is valid; otherwise print every problem, with line and column.
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// With payloads, show where each would go; without, run the file's own `tests:`.
    Test {
        /// The rules file.
        file: PathBuf,
        /// Payload files to route (the content type is guessed from the extension).
        payloads: Vec<PathBuf>,
        #[command(flatten)]
        request: RequestArgs,
    },
}

/// How a payload given on the command line would have arrived.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The Content-Type it would arrive with; omitted, the kind is told by content (or, for
    /// `rules test`, by the file's extension).
    #[arg(long)]
    pub content_type: Option<String>,
    /// A request header, as `Name: value` (e.g. `received-on: 2024-05-02T06:14:09.482113Z`).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The source name it would arrive on.
    #[arg(long, default_value = "cli")]
    pub source: String,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            data_dir,
            rules,
        } => serve(
            config,
            Overrides {
                listen,
                admin_listen,
                data_dir,
                rules_path: rules,
            },
        ),
        Command::Hq { command } => crate::control::command::run(command),
        Command::Rules {
            command: RulesCommand::Check { file },
        } => rules_check(&file),
        Command::Rules {
            command:
                RulesCommand::Test {
                    file,
                    payloads,
                    request,
                },
        } => rules_test(&file, &payloads, &request),
        Command::Dlq { command, remote } => remote::dlq(command, &remote),
        Command::Replay { args, remote } => remote::replay(args, &remote),
        Command::Parse {
            file,
            request,
            kind,
            domain,
        } => parse(ParseArgs {
            file,
            request,
            kind,
            domain,
        }),
    }
}

fn serve(config_path: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let config = match config::load(config_path.as_deref(), &overrides) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG_ERROR);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        let listeners = crate::app::Listeners::bind(&config).await?;
        tracing::info!(ingress = %listeners.ingress_addr(), admin = %listeners.admin_addr(), data_dir = %config.data_dir.display(), "listening");
        let shutdown = crate::shutdown::on_signals();
        crate::app::run(config, listeners, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "ccrelay failed");
            ExitCode::FAILURE
        }
    }
}

struct ParseArgs {
    file: PathBuf,
    request: RequestArgs,
    kind: Option<String>,
    domain: Option<String>,
}

fn parse(args: ParseArgs) -> ExitCode {
    let body = match std::fs::read(&args.file) {
        Ok(body) => body,
        Err(err) => {
            eprintln!("cannot read {}: {err}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let headers = match parse_headers(&args.request.headers) {
        Ok(headers) => headers,
        Err(code) => return code,
    };
    let expected_kind = match args.kind.as_deref().map(|name| (name, Kind::parse(name))) {
        None => None,
        Some((_, Some(kind))) => Some(kind),
        Some((name, None)) => {
            eprintln!("--kind `{name}` is not one of: form, case, form_stub, app, user, location");
            return ExitCode::FAILURE;
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let content_type = args
        .request
        .content_type
        .as_deref()
        .or_else(|| header("content-type"));
    let input = Input {
        body: &body,
        content_type,
        received_on: header("received-on"),
        server_modified_on: header("server-modified-on"),
        expected_kind,
        limits: Limits::default(),
    };
    match decode::decode(&input) {
        Ok(decoded) => {
            let now = jiff::Timestamp::now();
            let payload_headers = ["received-on", "server-modified-on"]
                .into_iter()
                .filter_map(|name| header(name).map(|value| (name.to_string(), value.into())))
                .collect();
            let arrival = Arrival {
                id: uuid::Uuid::now_v7().to_string(),
                received_at: now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
                source: args.request.source,
                source_domain: args.domain,
                method: "POST".into(),
                content_type: content_type.map(str::to_string),
                query: serde_json::Map::new(),
                headers: payload_headers,
                body_bytes: body.len() as u64,
                traceparent: None,
            };
            let envelope = decoded.into_envelope(arrival);
            println!(
                "{}",
                serde_json::to_string_pretty(&envelope).expect("envelopes always serialise")
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            let status = crate::ingress::error::status_of(err.kind());
            eprintln!(
                "{} {}: {err}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            );
            ExitCode::from(EXIT_DATA_ERROR)
        }
    }
}

fn load_rules(file: &Path) -> Result<RuleSet, ExitCode> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("cannot read {}: {err}", file.display());
            return Err(ExitCode::from(EXIT_CONFIG_ERROR));
        }
    };
    RuleSet::parse_with_vars(&text, &file.display().to_string(), &config::environment).map_err(
        |errors| {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG_ERROR)
        },
    )
}

fn rules_check(file: &Path) -> ExitCode {
    match load_rules(file) {
        Ok(rules) => {
            println!(
                "{}: valid, {} rules, {} sinks, {} tests, version {}",
                file.display(),
                rules.rule_count(),
                rules.sinks.len(),
                rules.tests().len(),
                rules.version()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn rules_test(file: &Path, payloads: &[PathBuf], request: &RequestArgs) -> ExitCode {
    let rules = match load_rules(file) {
        Ok(rules) => rules,
        Err(code) => return code,
    };
    if payloads.is_empty() {
        let base_dir = file.parent().unwrap_or(Path::new("."));
        let report = rules::run_tests(&rules, &|path| std::fs::read(path), base_dir);
        println!("{report}");
        if report.results.is_empty() {
            eprintln!("{} has no tests: add a `tests:` section", file.display());
        }
        return if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let headers = match parse_headers(&request.headers) {
        Ok(headers) => headers,
        Err(code) => return code,
    };
    let mut all_routed = true;
    for payload in payloads {
        let body = match std::fs::read(payload) {
            Ok(body) => body,
            Err(err) => {
                eprintln!("cannot read {}: {err}", payload.display());
                return ExitCode::FAILURE;
            }
        };
        let case = TestCase {
            name: payload.display().to_string(),
            span: crate::yaml::Span { line: 1, column: 1 },
            payload: TestPayload::File(payload.clone()),
            content_type: request.content_type.clone(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone().into()))
                .collect(),
            source: request.source.clone(),
            query: serde_json::Map::new(),
            reach: Vec::new(),
            not_reach: Vec::new(),
            matched_rules: None,
        };
        println!("{}:", payload.display());
        let envelope = match rules::test_envelope(&case, &body) {
            Ok(envelope) => envelope,
            Err(err) => {
                println!("  {err}");
                all_routed = false;
                continue;
            }
        };
        let explanation = rules::explain_with_body(&rules, &envelope, &body);
        let matched = if explanation.matched_rules.is_empty() {
            "none".to_string()
        } else {
            explanation.matched_rules.join(", ")
        };
        println!("  matched rules: {matched}");
        if explanation.routes.is_empty() {
            println!("  no sink: kept in the spool unrouted");
        }
        for route in explanation.routes {
            let destination = route
                .destination
                .unwrap_or_else(|err| format!("cannot render: {err}"));
            println!(
                "  -> {} ({} sink, rule `{}`): {destination}",
                route.route.sink, route.sink_type, route.route.rule
            );
            let payload = &route.payload;
            println!(
                "     {} ({} bytes): {}",
                payload.content_type,
                payload.bytes.len(),
                String::from_utf8_lossy(&payload.bytes)
            );
        }
    }
    if all_routed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DATA_ERROR)
    }
}

fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, ExitCode> {
    headers
        .iter()
        .map(|header| match header.split_once(':') {
            Some((name, value)) => Ok((name.trim().to_ascii_lowercase(), value.trim().to_string())),
            None => {
                eprintln!("--header `{header}` must look like `Name: value`");
                Err(ExitCode::FAILURE)
            }
        })
        .collect()
}
