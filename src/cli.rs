//! The command line: `serve` runs the relay; `parse` shows the envelope ccrelay makes of a
//! payload, or the answer ingress would give it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Overrides};
use crate::decode::{self, Arrival, Input, Limits};
use crate::envelope::Kind;
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
    /// Print the envelope ccrelay makes of a payload, or the error ingress would answer.
    Parse {
        /// The payload file.
        file: PathBuf,
        /// The Content-Type it would arrive with; omitted, the kind is told by content.
        #[arg(long)]
        content_type: Option<String>,
        /// A request header, as `Name: value` (e.g. `received-on: 2024-05-02T06:14:09.482113Z`).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The source name the payload would arrive on.
        #[arg(long, default_value = "cli")]
        source: String,
        /// The kind the source expects (form, case, form_stub, app, user, location).
        #[arg(long)]
        kind: Option<String>,
        /// The source's CommCare domain, used when the payload carries none.
        #[arg(long)]
        domain: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            data_dir,
        } => serve(
            config,
            Overrides {
                listen,
                admin_listen,
                data_dir,
                rules_path: None,
            },
        ),
        Command::Parse {
            file,
            content_type,
            headers,
            source,
            kind,
            domain,
        } => parse(ParseArgs {
            file,
            content_type,
            headers,
            source,
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
    content_type: Option<String>,
    headers: Vec<String>,
    source: String,
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
    let mut headers = Vec::new();
    for header in &args.headers {
        match header.split_once(':') {
            Some((name, value)) => {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            }
            None => {
                eprintln!("--header `{header}` must look like `Name: value`");
                return ExitCode::FAILURE;
            }
        }
    }
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
                source: args.source,
                source_domain: args.domain,
                method: "POST".into(),
                content_type: content_type.map(str::to_string),
                query: serde_json::Map::new(),
                headers: payload_headers,
                body_bytes: body.len() as u64,
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
