//! Why an envelope goes where it goes: the rules that matched, each route's rendered
//! destination and the payload its sink would receive. `ccrelay rules test FILE PAYLOAD...`
//! prints this.

use std::fmt;

use serde_json::Value;

use super::RuleSet;
use super::shape::Payload;
use crate::sinks::SinkConfig;
use crate::spool::Route;

/// How one envelope is routed.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// Names of the rules that matched, in file order (up to the first with `stop: true`).
    pub matched_rules: Vec<String>,
    /// Each sink the envelope goes to, once; the `unmatched` sinks when no rule matched.
    pub routes: Vec<RouteExplanation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteExplanation {
    pub route: Route,
    pub sink_type: &'static str,
    /// The rendered destination (the file path, relative to the data dir), or why it cannot
    /// be rendered (such a delivery fails permanently).
    pub destination: Result<String, String>,
    /// What the sink would receive.
    pub payload: Payload,
}

/// Explains `envelope` without its body: a `raw` route shows an empty payload.
pub fn explain(rules: &RuleSet, envelope: &Value) -> Explanation {
    explain_with_body(rules, envelope, &[])
}

/// Explains `envelope`, whose request body was `body`.
pub fn explain_with_body(rules: &RuleSet, envelope: &Value, body: &[u8]) -> Explanation {
    let envelope_json = envelope.to_string();
    let content_type = envelope.get("content_type").and_then(Value::as_str);
    let routes = rules
        .route(envelope)
        .into_iter()
        .map(|route| {
            let sink = rules.sinks.get(&route.sink).map(|spec| &spec.config);
            let destination = match sink {
                Some(SinkConfig::File(file)) => {
                    file.path.render(envelope).map_err(|err| err.to_string())
                }
                Some(SinkConfig::Amqp(amqp)) => amqp
                    .exchange
                    .render(envelope)
                    .and_then(|exchange| {
                        let routing_key = amqp.routing_key.render(envelope)?;
                        Ok(format!(
                            "exchange `{exchange}`, routing key `{routing_key}`"
                        ))
                    })
                    .map_err(|err| err.to_string()),
                Some(SinkConfig::Kafka(kafka)) => kafka
                    .topic
                    .render(envelope)
                    .and_then(|topic| match &kafka.key {
                        Some(key) => {
                            Ok(format!("topic `{topic}`, key `{}`", key.render(envelope)?))
                        }
                        None => Ok(format!("topic `{topic}`")),
                    })
                    .map_err(|err| err.to_string()),
                Some(SinkConfig::Http(http)) => http
                    .url
                    .render(envelope)
                    .map(|url| format!("{} {url}", http.method))
                    .map_err(|err| err.to_string()),
                None => Err(format!("sink `{}` is not defined", route.sink)),
            };
            RouteExplanation {
                sink_type: sink.map_or("unknown", SinkConfig::type_name),
                destination,
                payload: route.shape.apply(&envelope_json, body, content_type),
                route,
            }
        })
        .collect();
    Explanation {
        matched_rules: rules
            .matched_rules(envelope)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        routes,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.matched_rules.is_empty() {
            writeln!(f, "matched rules: none")?;
        } else {
            writeln!(f, "matched rules: {}", self.matched_rules.join(", "))?;
        }
        if self.routes.is_empty() {
            write!(f, "routes: none (kept in the spool unrouted)")?;
            return Ok(());
        }
        write!(f, "routes:")?;
        for explained in &self.routes {
            let route = &explained.route;
            write!(
                f,
                "\n  {} ({}) by rule `{}`",
                route.sink, explained.sink_type, route.rule
            )?;
            match &explained.destination {
                Ok(destination) => write!(f, "\n    destination: {destination}")?,
                Err(err) => write!(f, "\n    destination: cannot render: {err}")?,
            }
            let payload = &explained.payload;
            write!(
                f,
                "\n    payload: {} bytes of {}",
                payload.bytes.len(),
                payload.content_type
            )?;
            if !route.shape.is_envelope() {
                match std::str::from_utf8(&payload.bytes) {
                    Ok(text) => write!(f, "\n    {text}")?,
                    Err(_) => write!(f, "\n    (not UTF-8)")?,
                }
            }
        }
        Ok(())
    }
}
