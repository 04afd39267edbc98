//! The manual steps: what an operator does in HQ's web UI when HQ has no Data Forwarding API
//! (removed in 2022, commcare-forwarding.md §7). Pure text from the config; secrets are
//! named by where they are configured, never printed.

use std::fmt::Write;

use super::plan::ingest_url;
use crate::config::{Auth, Config};

/// Step-by-step instructions for every configured forwarder.
pub fn manual_steps(config: &Config) -> String {
    let control = &config.control;
    let Some(public_url) = &control.public_url else {
        return "set `control.public_url` to the relay's public address to get the steps\n"
            .to_owned();
    };
    let hq_url = control
        .hq
        .as_ref()
        .map_or("https://www.commcarehq.org", |hq| hq.url.as_str());
    let mut text = String::new();
    let mut step = 0;
    for forwarder in &control.forwarders {
        let url = ingest_url(public_url, &forwarder.source);
        for repeater_type in &forwarder.types {
            step += 1;
            let _ = writeln!(
                text,
                "{step}. In {hq_url}/a/{domain}/ open Project Settings -> Data Forwarding and \
                 choose \"{ui}\" ({repeater_type}), then \"Add a forwarding location\".",
                domain = forwarder.domain,
                ui = repeater_type.ui_name(),
            );
            let _ = writeln!(text, "   URL: {url}");
            let format = repeater_type
                .payload_format()
                .unwrap_or("the only one offered");
            let _ = writeln!(text, "   Payload format: {format}");
            let _ = writeln!(text, "   Request method: POST");
            let auth = config
                .sources
                .get(&forwarder.source)
                .map(|source| &source.auth);
            let _ = writeln!(
                text,
                "   Authentication: {}",
                describe_auth(auth, &forwarder.source)
            );
        }
    }
    if text.is_empty() {
        text.push_str("no forwarders are configured in `control.forwarders`\n");
    }
    text
}

fn describe_auth(auth: Option<&Auth>, source: &str) -> String {
    match auth {
        None => format!("source `{source}` is not configured"),
        Some(Auth::None) => "None".to_owned(),
        Some(Auth::Basic(credentials)) => format!(
            "HTTP Basic, username `{}`, password as configured in sources.{source}.auth.credentials",
            credentials
                .first()
                .map_or("", |credential| credential.username.as_str())
        ),
        Some(Auth::Authorization(_)) => {
            format!("API Key, the whole header value as configured in sources.{source}.auth.values")
        }
        Some(Auth::Bearer(_)) => format!(
            "HQ's Bearer auth fetches a token from an endpoint ccrelay does not serve; \
             give source `{source}` auth type basic or authorization instead"
        ),
        Some(Auth::Hmac(_)) => format!(
            "HQ cannot sign requests; give source `{source}` auth type basic or authorization instead"
        ),
    }
}
