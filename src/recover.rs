//! Recover: what a start learns from the spool in one pass, before ingress opens: the dedupe
//! keys still within their window, each sink's backlog, and how many records each sink may
//! receive twice because the last run stopped between handing them over and noting so.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backlog::Backlogs;
use crate::dedupe::DedupeIndex;
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError};

pub struct Recovered {
    pub dedupe: DedupeIndex,
    pub backlogs: Backlogs,
}

/// Where a sink stood when the last run stopped.
struct Marks {
    cursor: u64,
    /// The end of what it had handed to its sink; past `cursor` only after an unclean stop.
    attempted: u64,
    backlog: u64,
    redelivered: u64,
}

/// Reads the whole spool once, filling `dedupe` with the keys still in its window. Blocking IO.
///
/// # Errors
/// When the spool cannot be read.
pub fn recover(
    spool: &Spool,
    dedupe: DedupeIndex,
    metrics: &Arc<Metrics>,
    now: jiff::Timestamp,
) -> Result<Recovered, SpoolError> {
    let mut marks: HashMap<String, Marks> = spool
        .consumer_names()
        .into_iter()
        .map(|name| {
            let cursor = spool.cursor(&name);
            let attempted = spool.attempted(&name).unwrap_or(cursor);
            let marks = Marks {
                cursor,
                attempted,
                backlog: 0,
                redelivered: 0,
            };
            (name, marks)
        })
        .collect();
    let mut keys = 0usize;
    spool.scan(spool.start(), |entry| {
        if dedupe.note_spooled(&entry.record.envelope, now) {
            keys += 1;
        }
        for route in &entry.record.routes {
            // A route to a sink without a cursor belongs to a sink removed for good.
            if let Some(sink) = marks.get_mut(&route.sink) {
                if entry.offset >= sink.cursor {
                    sink.backlog += 1;
                    if entry.offset < sink.attempted {
                        sink.redelivered += 1;
                    }
                }
            }
        }
    })?;
    tracing::info!(keys, "dedupe index rebuilt from the spool");
    let backlogs = Backlogs::new(Arc::clone(metrics));
    for (name, sink) in marks {
        backlogs.recovered(&name, sink.backlog);
        if sink.redelivered > 0 {
            tracing::warn!(sink = %name, records = sink.redelivered, "the last run stopped while delivering: these records are delivered again and may arrive twice");
            metrics
                .sink_redelivered
                .with_label_values(&[&name])
                .inc_by(sink.redelivered);
        }
    }
    Ok(Recovered { dedupe, backlogs })
}
