//! Replay: accepted envelopes from a time range, routed again through the rules in force and
//! spooled again for the sinks those rules choose now: after an operator adds a sink, fixes a
//! rule, or a downstream system lost data.
//!
//! Replay reads the spool (so it reaches back as far as retention and the quota keep
//! records) up to the end it had when it began, never into its own appends. A replayed
//! record keeps its envelope id, so downstream systems can recognise a second copy; it is
//! not checked against dedupe, which is for HQ's resends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backlog::Backlogs;
use crate::envelope::EnvelopeFacts;
use crate::error::ErrorKind;
use crate::rules::RuleSet;
use crate::spool::{Entry, Record, Spool, SpoolError};

/// Records read per step.
const BATCH_RECORDS: usize = 512;

/// What to replay. `since` is required: replaying all of the spool is never what an operator
/// means by accident.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Envelopes received at or after this RFC 3339 time...
    pub since: jiff::Timestamp,
    /// ...and before this one (default: now).
    pub until: Option<jiff::Timestamp>,
    /// Only routes chosen by this rule.
    pub rule: Option<String>,
    /// Only routes to this sink.
    pub sink: Option<String>,
    /// Count what would be replayed, spool nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Records read.
    pub scanned: u64,
    /// Records received within the range.
    pub in_range: u64,
    /// Records spooled again (or that would be, in a dry run).
    pub replayed: u64,
    /// Replayed routes per sink.
    pub sinks: BTreeMap<String, u64>,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("`until` ({until}) must be after `since` ({since})")]
    EmptyRange {
        since: jiff::Timestamp,
        until: jiff::Timestamp,
    },
    #[error("no sink `{name}` in the rules in force; they have: {known}")]
    UnknownSink { name: String, known: String },
    #[error("no rule `{name}` in the rules in force; they have: {known}")]
    UnknownRule { name: String, known: String },
    #[error("replayed {replayed} records, then: {source}")]
    Spool { replayed: u64, source: SpoolError },
}

impl ReplayError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReplayError::EmptyRange { .. } => ErrorKind::BadRequest,
            ReplayError::UnknownSink { .. } | ReplayError::UnknownRule { .. } => {
                ErrorKind::NotFound
            }
            ReplayError::Spool { source, .. } => source.kind(),
        }
    }
}

/// Replays what `request` selects through `rules`.
///
/// # Errors
/// A bad request (checked before anything is read), or a spool that cannot be read or
/// appended to; what was replayed before the failure stays replayed.
pub async fn replay(
    spool: &Spool,
    rules: &RuleSet,
    backlogs: &Backlogs,
    request: &ReplayRequest,
) -> Result<ReplayReport, ReplayError> {
    let until = request.until.unwrap_or_else(jiff::Timestamp::now);
    check(rules, request, until)?;
    let end = spool.durable_end();
    let mut report = ReplayReport {
        dry_run: request.dry_run,
        ..ReplayReport::default()
    };
    let mut reader = Some(spool.reader(spool.start()));
    while reader
        .as_ref()
        .is_some_and(|reader| reader.position() < end)
    {
        let mut taken = reader.take().expect("checked above");
        let (returned, read) = tokio::task::spawn_blocking(move || {
            let read = taken.read_batch_past_damage(BATCH_RECORDS);
            (taken, read)
        })
        .await
        .expect("reading the spool does not panic");
        reader = Some(returned);
        let entries = read.map_err(|source| ReplayError::Spool {
            replayed: report.replayed,
            source,
        })?;
        if entries.is_empty() {
            break;
        }
        let records: Vec<Record> = entries
            .into_iter()
            .take_while(|entry| entry.offset < end)
            .filter_map(|entry| select(&entry, rules, request, until, &mut report))
            .collect();
        if request.dry_run || records.is_empty() {
            continue;
        }
        // One group commit for the whole step rather than one sync per record.
        let appends = records.iter().map(|record| spool.append(record));
        if let Err(source) = futures::future::try_join_all(appends).await {
            let replayed = report.replayed;
            return Err(ReplayError::Spool { replayed, source });
        }
        for record in &records {
            backlogs.routed(&record.routes);
        }
    }
    tracing::info!(
        scanned = report.scanned,
        in_range = report.in_range,
        replayed = report.replayed,
        dry_run = request.dry_run,
        "replay done"
    );
    Ok(report)
}

fn check(
    rules: &RuleSet,
    request: &ReplayRequest,
    until: jiff::Timestamp,
) -> Result<(), ReplayError> {
    if until <= request.since {
        return Err(ReplayError::EmptyRange {
            since: request.since,
            until,
        });
    }
    if let Some(name) = request
        .sink
        .as_ref()
        .filter(|name| !rules.sinks.contains_key(*name))
    {
        let known = rules.sinks.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(ReplayError::UnknownSink {
            name: name.clone(),
            known,
        });
    }
    if let Some(name) = request
        .rule
        .as_ref()
        .filter(|name| !rules.rule_names().any(|rule| rule == name.as_str()))
    {
        let known = rules.rule_names().collect::<Vec<_>>().join(", ");
        return Err(ReplayError::UnknownRule {
            name: name.clone(),
            known,
        });
    }
    Ok(())
}

/// The record to spool again for `entry`, if it is in the range and the rules route it to
/// what the request asks for.
fn select(
    entry: &Entry,
    rules: &RuleSet,
    request: &ReplayRequest,
    until: jiff::Timestamp,
    report: &mut ReplayReport,
) -> Option<Record> {
    report.scanned += 1;
    let text = std::str::from_utf8(&entry.record.envelope).ok()?;
    let received_at: jiff::Timestamp = EnvelopeFacts::read(text).received_at.parse().ok()?;
    if received_at < request.since || received_at >= until {
        return None;
    }
    report.in_range += 1;
    let envelope: Value = serde_json::from_slice(&entry.record.envelope).ok()?;
    let routes: Vec<_> = rules
        .route(&envelope)
        .into_iter()
        .filter(|route| request.sink.as_ref().is_none_or(|sink| *sink == route.sink))
        .filter(|route| request.rule.as_ref().is_none_or(|rule| *rule == route.rule))
        .collect();
    if routes.is_empty() {
        return None;
    }
    report.replayed += 1;
    for route in &routes {
        *report.sinks.entry(route.sink.clone()).or_default() += 1;
    }
    Some(Record {
        routes,
        envelope: entry.record.envelope.clone(),
        body: entry.record.body.clone(),
    })
}
