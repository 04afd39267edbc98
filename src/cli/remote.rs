//! The commands that talk to a running relay through its admin listener: `ccrelay dlq …` and
//! `ccrelay replay`. They print what the relay answered, as a short summary or, with
//! `--json`, as the JSON itself for scripts.

use std::process::ExitCode;

use serde_json::{Value, json};

/// sysexits.h: a usage error; here, the relay refused the request as asked.
const EXIT_USAGE: u8 = 64;
/// sysexits.h: a service is unavailable; here, the relay could not be reached or failed.
const EXIT_UNAVAILABLE: u8 = 69;

/// Where the relay's admin listener is, and how to print its answers.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The relay's admin listener.
    #[arg(
        long,
        env = "CCRELAY_ADMIN",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    pub admin: String,
    /// Print the relay's JSON answer as it is.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Which dead letters: every filter given must hold.
#[derive(Debug, Default, clap::Args)]
pub struct LetterFilter {
    #[arg(long)]
    pub sink: Option<String>,
    #[arg(long)]
    pub rule: Option<String>,
    /// The envelope kind: form, case, form_stub, app, user or location.
    #[arg(long)]
    pub kind: Option<String>,
    /// Last attempt at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Last attempt before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

impl LetterFilter {
    /// `?sink=…&…`, or nothing when no filter is set.
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("sink", &self.sink),
            ("rule", &self.rule),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        let query = query.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }

    fn is_empty(&self) -> bool {
        self.query().is_empty()
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters: sink, rule, kind, attempts, last attempt, envelope id and reason.
    List {
        #[command(flatten)]
        filter: LetterFilter,
    },
    /// Show one dead letter in full, envelope and body included.
    Show { sink: String, envelope_id: String },
    /// Spool the matching dead letters again for their sinks, then delete them.
    Replay {
        #[command(flatten)]
        filter: LetterFilter,
    },
    /// Delete the matching dead letters for good.
    Purge {
        #[command(flatten)]
        filter: LetterFilter,
        /// Needed to purge every dead letter when no filter is given.
        #[arg(long)]
        all: bool,
    },
}

/// `ccrelay replay`: what to route again.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Envelopes received at or after this RFC 3339 time.
    #[arg(long)]
    pub since: String,
    /// ...and before this one (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only routes chosen by this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only routes to this sink.
    #[arg(long)]
    pub sink: Option<String>,
    /// Count what would be replayed; spool nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn dlq(command: DlqCommand, remote: &Remote) -> ExitCode {
    match command {
        DlqCommand::List { filter } => {
            let url = format!("{}/dead-letters{}", base(remote), filter.query());
            run(remote, reqwest::Method::GET, url, None, print_letters)
        }
        DlqCommand::Show { sink, envelope_id } => {
            let url = format!("{}/dead-letters/{sink}/{envelope_id}", base(remote));
            run(remote, reqwest::Method::GET, url, None, |answer| {
                serde_json::to_string_pretty(answer).expect("JSON values print")
            })
        }
        DlqCommand::Replay { filter } => {
            let url = format!("{}/dead-letters/replay{}", base(remote), filter.query());
            run(remote, reqwest::Method::POST, url, None, |answer| {
                let mut text = format!("replayed {}", answer["replayed"]);
                let skipped = answer["skipped"].as_array().cloned().unwrap_or_default();
                if !skipped.is_empty() {
                    text.push_str(&format!("; skipped {}:", skipped.len()));
                    for letter in skipped {
                        text.push_str(&format!(
                            "\n  {}/{}: {}",
                            plain(&letter["sink"]),
                            plain(&letter["envelope_id"]),
                            plain(&letter["reason"])
                        ));
                    }
                }
                text
            })
        }
        DlqCommand::Purge { filter, all } => {
            if filter.is_empty() && !all {
                eprintln!(
                    "refusing to purge every dead letter: give a filter (--sink, --rule, --kind, --since, --until) or --all"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            let url = format!("{}/dead-letters{}", base(remote), filter.query());
            run(remote, reqwest::Method::DELETE, url, None, |answer| {
                format!("purged {}", answer["purged"])
            })
        }
    }
}

pub fn replay(args: ReplayArgs, remote: &Remote) -> ExitCode {
    let mut request = json!({ "since": args.since, "dry_run": args.dry_run });
    for (name, value) in [
        ("until", args.until),
        ("rule", args.rule),
        ("sink", args.sink),
    ] {
        if let Some(value) = value {
            request[name] = value.into();
        }
    }
    let url = format!("{}/replay", base(remote));
    run(
        remote,
        reqwest::Method::POST,
        url,
        Some(request),
        |answer| {
            let verb = if answer["dry_run"] == true {
                "would replay"
            } else {
                "replayed"
            };
            let mut text = format!(
                "scanned {}, received in range {}, {verb} {}",
                answer["scanned"], answer["in_range"], answer["replayed"]
            );
            if let Some(sinks) = answer["sinks"].as_object() {
                for (sink, count) in sinks {
                    text.push_str(&format!("\n  {sink}: {count}"));
                }
            }
            text
        },
    )
}

fn base(remote: &Remote) -> &str {
    remote.admin.trim_end_matches('/')
}

/// Sends one request and prints the answer: `summary` of it, or the JSON with `--json`.
fn run(
    remote: &Remote,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    summary: impl FnOnce(&Value) -> String,
) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    let answered = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        let mut request = client.request(method, &url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    });
    let (status, text) = match answered {
        Ok(answered) => answered,
        Err(err) => {
            eprintln!("cannot reach the relay's admin listener at {url}: {err}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let detail = answer.get("detail").unwrap_or(&answer);
        eprintln!("the relay answered {status}: {}", plain(detail));
        let code = if status.is_client_error() {
            EXIT_USAGE
        } else {
            EXIT_UNAVAILABLE
        };
        return ExitCode::from(code);
    }
    if remote.json {
        println!("{answer}");
    } else {
        println!("{}", summary(&answer));
    }
    ExitCode::SUCCESS
}

fn print_letters(answer: &Value) -> String {
    let letters = answer["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut text = format!("{} dead letters", letters.len());
    for letter in letters {
        text.push_str(&format!(
            "\n{}  {}  rule={} kind={} attempts={} last={}\n    {}",
            plain(&letter["sink"]),
            plain(&letter["envelope_id"]),
            plain(&letter["rule"]),
            plain(&letter["kind"]),
            letter["attempts"],
            plain(&letter["last_attempt_at"]),
            plain(&letter["reason"]),
        ));
    }
    text
}

/// A JSON value as text, strings without their quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
