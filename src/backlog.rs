//! Backlog: how many spooled records each sink has yet to settle (deliver or dead-letter).
//!
//! Ingress adds a sink's routes once a record is durable and refuses new records for a sink
//! past its `max_backlog` (503, so HQ retries later); its dispatcher takes settled records
//! off. The count is rebuilt from the spool at start (`recover`), so it needs no file. The
//! same numbers feed `ccrelay_sink_routed_total` and `ccrelay_sink_backlog_records`, so a
//! dashboard can also subtract settled from routed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::IntCounter;

use crate::metrics::Metrics;
use crate::spool::Route;

#[derive(Clone)]
pub struct Backlogs {
    sinks: Arc<RwLock<HashMap<String, Arc<SinkBacklog>>>>,
    metrics: Arc<Metrics>,
}

/// One sink's count, and its counter looked up once rather than per record.
struct SinkBacklog {
    records: AtomicI64,
    routed: IntCounter,
}

impl Backlogs {
    pub fn new(metrics: Arc<Metrics>) -> Backlogs {
        Backlogs {
            sinks: Arc::default(),
            metrics,
        }
    }

    fn sink(&self, name: &str) -> Arc<SinkBacklog> {
        if let Some(sink) = self.read().get(name) {
            return Arc::clone(sink);
        }
        let mut sinks = self.sinks.write().expect("backlog lock is never poisoned");
        let sink = sinks.entry(name.to_string()).or_insert_with(|| {
            Arc::new(SinkBacklog {
                records: AtomicI64::new(0),
                routed: self.metrics.sink_routed.with_label_values(&[name]),
            })
        });
        Arc::clone(sink)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<SinkBacklog>>> {
        self.sinks.read().expect("backlog lock is never poisoned")
    }

    /// Records not yet settled by sink `name`.
    pub fn records(&self, name: &str) -> u64 {
        self.read().get(name).map_or(0, |sink| {
            // Settling can race ahead of the add for the same record; never show that as < 0.
            sink.records.load(Ordering::Relaxed).max(0) as u64
        })
    }

    /// The first of `routes` whose sink is at or past its limit, with its backlog.
    pub fn full<'a>(
        &self,
        routes: &'a [Route],
        limit: impl Fn(&str) -> Option<u64>,
    ) -> Option<(&'a str, u64)> {
        routes.iter().find_map(|route| {
            let backlog = self.records(&route.sink);
            let max = limit(&route.sink)?;
            (backlog >= max).then_some((route.sink.as_str(), backlog))
        })
    }

    /// Counts a durable record's routes.
    pub fn routed(&self, routes: &[Route]) {
        for route in routes {
            let sink = self.sink(&route.sink);
            sink.records.fetch_add(1, Ordering::Relaxed);
            sink.routed.inc();
        }
    }

    /// Takes `count` settled records off sink `name`'s backlog.
    pub fn settled(&self, name: &str, count: usize) {
        self.sink(name)
            .records
            .fetch_sub(count as i64, Ordering::Relaxed);
    }

    /// Sets sink `name`'s backlog as counted from the spool at start.
    pub fn recovered(&self, name: &str, records: u64) {
        self.sink(name)
            .records
            .store(records as i64, Ordering::Relaxed);
    }

    /// Stops counting for a sink that is gone, so its gauge is not reported any more.
    pub fn forget(&self, name: &str) {
        self.sinks
            .write()
            .expect("backlog lock is never poisoned")
            .remove(name);
        let _ = self.metrics.sink_backlog.remove_label_values(&[name]);
    }

    /// Copies every count into the backlog gauge, for a scrape.
    pub fn publish(&self) {
        for (name, sink) in self.read().iter() {
            self.metrics
                .sink_backlog
                .with_label_values(&[name])
                .set(sink.records.load(Ordering::Relaxed).max(0));
        }
    }

    /// Every sink's backlog, by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .read()
            .iter()
            .map(|(name, sink)| {
                let records = sink.records.load(Ordering::Relaxed).max(0) as u64;
                (name.clone(), records)
            })
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Shape;

    fn route(sink: &str) -> Route {
        Route {
            sink: sink.to_string(),
            rule: "r".to_string(),
            shape: Shape::Envelope,
        }
    }

    #[test]
    fn a_sink_is_full_at_its_limit_and_frees_up_as_records_settle() {
        let backlogs = Backlogs::new(Arc::new(Metrics::new()));
        let routes = [route("a"), route("b")];
        let limit = |sink: &str| (sink == "b").then_some(2);
        backlogs.routed(&routes);
        assert_eq!(backlogs.full(&routes, limit), None);
        backlogs.routed(&routes);
        assert_eq!(backlogs.full(&routes, limit), Some(("b", 2)));
        backlogs.settled("b", 1);
        assert_eq!(backlogs.full(&routes, limit), None);
        assert_eq!(
            backlogs.snapshot(),
            vec![("a".to_string(), 2), ("b".to_string(), 1)]
        );
    }
}
