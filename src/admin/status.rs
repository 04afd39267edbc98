//! What the admin page shows about sources and sinks, as JSON: read from the metrics, the
//! spool's cursors, the dead-letter store and the rules in force. Reads only: nothing here
//! creates a metric series, registers a spool consumer or changes a file.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use serde_json::{Value, json};

use super::{AdminState, admin_error};

/// `GET /sources`: per source seen since start, its request, byte and payload counters.
///
/// Sources appear once they have had a request, under their configured name (`*` for the
/// catch-all). Counters only grow, so a client computes rates from two readings.
pub(super) async fn sources(State(state): State<AdminState>) -> Response {
    let metrics = &state.metrics;
    let requests = series(&metrics.ingress_requests);
    let mut sources: BTreeMap<String, SourceCounts> = BTreeMap::new();
    for (labels, value) in &requests {
        let (Some(source), Some(status)) = (labels.get("source"), labels.get("status")) else {
            continue;
        };
        let counts = sources.entry(source.clone()).or_default();
        counts.requests += value;
        match status.chars().next() {
            Some('2') => counts.requests_2xx += value,
            Some('4') => counts.requests_4xx += value,
            Some('5') => counts.requests_5xx += value,
            _ => {}
        }
    }
    let mut add = |metric: &prometheus::IntCounterVec, field: fn(&mut SourceCounts) -> &mut u64| {
        for (labels, value) in series(metric) {
            if let Some(source) = labels.get("source") {
                *field(sources.entry(source.clone()).or_default()) += value;
            }
        }
    };
    add(&metrics.ingress_bytes, |counts| &mut counts.bytes);
    add(&metrics.ingress_envelopes, |counts| &mut counts.accepted);
    add(&metrics.ingress_duplicates, |counts| &mut counts.duplicates);
    add(&metrics.decode_failures, |counts| {
        &mut counts.decode_failures
    });
    add(&metrics.quarantined, |counts| &mut counts.quarantined);
    let listed: Vec<Value> = sources
        .into_iter()
        .map(|(name, counts)| {
            json!({
                "source": name,
                "requests": counts.requests,
                "requests_2xx": counts.requests_2xx,
                "requests_4xx": counts.requests_4xx,
                "requests_5xx": counts.requests_5xx,
                "bytes": counts.bytes,
                "accepted": counts.accepted,
                "duplicates": counts.duplicates,
                "decode_failures": counts.decode_failures,
                "quarantined": counts.quarantined,
            })
        })
        .collect();
    Json(json!({ "at": jiff::Timestamp::now().to_string(), "sources": listed })).into_response()
}

#[derive(Default)]
struct SourceCounts {
    requests: u64,
    requests_2xx: u64,
    requests_4xx: u64,
    requests_5xx: u64,
    bytes: u64,
    accepted: u64,
    duplicates: u64,
    decode_failures: u64,
    quarantined: u64,
}

/// `GET /sinks`: every sink in the rules in force, and every sink that still has dead letters,
/// with its health, backlog and dead-letter count.
///
/// `healthy` is null until the sink's first delivery. `backlog` counts the records routed to
/// the sink and not yet settled; `backlog_bytes` is how far the sink's cursor is behind the
/// spool's durable end, in bytes of spool, or null when the sink has no cursor.
pub(super) async fn sinks(State(state): State<AdminState>) -> Response {
    let rules = state.rules.current();
    let dead_letters = state.dead_letters.clone();
    let dead_by_sink = match tokio::task::spawn_blocking(move || dead_letters.count_by_sink())
        .await
        .expect("counting dead letters does not panic")
    {
        Ok(counts) => counts,
        Err(err) => {
            return admin_error(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err,
            );
        }
    };
    let health = flags_by_sink(&state.metrics.sink_healthy);
    let outcomes = by_sink_and_outcome(&state.metrics.sink_deliveries);
    let count = |sink: &str, outcome: &str| {
        outcomes
            .get(&(sink.to_owned(), outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let durable_end = state.spool.durable_end();
    // Only consumers the spool already knows: `Spool::cursor` would register a new one.
    let consumers = state.spool.consumer_names();

    let mut names: Vec<(String, Option<&'static str>)> = rules
        .sinks
        .iter()
        .map(|(name, spec)| (name.clone(), Some(spec.config.type_name())))
        .collect();
    for name in dead_by_sink.keys() {
        if !rules.sinks.contains_key(name) {
            names.push((name.clone(), None));
        }
    }
    let listed: Vec<Value> = names
        .into_iter()
        .map(|(name, type_name)| {
            let backlog = consumers
                .contains(&name)
                .then(|| durable_end.saturating_sub(state.spool.cursor(&name)));
            json!({
                "sink": name,
                "type": type_name,
                "in_rules": type_name.is_some(),
                "healthy": health.get(&name),
                "backlog": state.backlogs.records(&name),
                "backlog_bytes": backlog,
                "delivered": count(&name, "delivered"),
                "retried": count(&name, "retried"),
                "failed": count(&name, "failed"),
                "dead_letters": dead_by_sink.get(&name).copied().unwrap_or(0),
            })
        })
        .collect();
    Json(json!({ "durable_end": durable_end, "sinks": listed })).into_response()
}

/// Each series of a metric: its labels and its value.
fn series(metric: &prometheus::IntCounterVec) -> Vec<(BTreeMap<String, String>, u64)> {
    collect(metric, |sample| sample.get_counter().get_value() as u64)
}

/// A 0/1 gauge per sink as booleans, for the sinks that have the series; reading never
/// creates one.
pub(super) fn flags_by_sink(metric: &prometheus::IntGaugeVec) -> BTreeMap<String, bool> {
    collect(metric, |sample| sample.get_gauge().get_value() >= 1.0)
        .into_iter()
        .filter_map(|(labels, flag)| Some((labels.get("sink")?.clone(), flag)))
        .collect()
}

fn collect<T>(
    metric: &impl Collector,
    value: impl Fn(&prometheus::proto::Metric) -> T,
) -> Vec<(BTreeMap<String, String>, T)> {
    metric
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|sample| {
            let labels = sample
                .get_label()
                .iter()
                .map(|pair| (pair.name().to_string(), pair.value().to_string()))
                .collect();
            (labels, value(sample))
        })
        .collect()
}

/// A counter's value per (sink, outcome), read in one pass.
fn by_sink_and_outcome(metric: &prometheus::IntCounterVec) -> BTreeMap<(String, String), u64> {
    let mut totals = BTreeMap::new();
    for (mut labels, value) in series(metric) {
        if let (Some(sink), Some(outcome)) = (labels.remove("sink"), labels.remove("outcome")) {
            *totals.entry((sink, outcome)).or_default() += value;
        }
    }
    totals
}
