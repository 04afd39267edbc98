//! Metrics: every Prometheus metric ccrelay exports, named and described once.
//!
//! One `Metrics` value is built at start and shared; nothing is global, so tests can run
//! several relays in one process. Label values come only from bounded sets: configured source
//! names (`*` for the catch-all source), the six kinds, sink and rule names from the rules
//! file, status codes and outcome words.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub ingress_requests: IntCounterVec,
    pub ingress_request_duration: HistogramVec,
    pub ingress_bytes: IntCounterVec,
    pub ingress_envelopes: IntCounterVec,
    pub ingress_duplicates: IntCounterVec,
    pub decode_failures: IntCounterVec,
    pub quarantined: IntCounterVec,
    pub spool_append_duration: Histogram,
    pub spool_appended_records: IntCounter,
    pub spool_disk_bytes: IntGauge,
    pub dedupe_keys: IntGauge,
    pub dedupe_forgotten: IntCounter,
    pub sink_deliveries: IntCounterVec,
    pub sink_delivery_duration: HistogramVec,
    pub sink_dead_letters: IntCounterVec,
    pub sink_healthy: IntGaugeVec,
    pub sink_routed: IntCounterVec,
    pub sink_backlog: IntGaugeVec,
    pub sink_latency: HistogramVec,
    pub sink_redelivered: IntCounterVec,
    pub sink_connected: IntGaugeVec,
    pub rules_reloads: IntCounterVec,
    pub rules_unmatched: IntCounterVec,
}

/// From acceptance to confirmation: milliseconds when all is well, hours in an outage.
const END_TO_END_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 21600.0, 86400.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let register = |metric: Box<dyn prometheus::core::Collector>| {
            registry.register(metric).expect("metric names are unique");
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are valid");
            register(Box::new(metric.clone()));
            metric
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are valid");
            register(Box::new(metric.clone()));
            metric
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("metric definitions are valid");
            register(Box::new(metric.clone()));
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("metric definitions are valid");
            register(Box::new(metric.clone()));
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("metric definitions are valid");
            register(Box::new(metric.clone()));
            metric
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = Histogram::with_opts(opts).expect("metric definitions are valid");
            register(Box::new(metric.clone()));
            metric
        };

        Metrics {
            ingress_requests: counter_vec(
                "ccrelay_ingress_requests_total",
                "Ingress requests answered, by source and HTTP status",
                &["source", "status"],
            ),
            ingress_request_duration: histogram_vec(
                "ccrelay_ingress_request_duration_seconds",
                "Time to answer an ingress request",
                &["source"],
                LATENCY_BUCKETS,
            ),
            ingress_bytes: counter_vec(
                "ccrelay_ingress_bytes_total",
                "Request body bytes received",
                &["source"],
            ),
            ingress_envelopes: counter_vec(
                "ccrelay_ingress_envelopes_total",
                "Payloads accepted, by source and kind",
                &["source", "kind"],
            ),
            ingress_duplicates: counter_vec(
                "ccrelay_ingress_duplicates_total",
                "Payloads answered as duplicates of one accepted within the dedupe window",
                &["source"],
            ),
            decode_failures: counter_vec(
                "ccrelay_decode_failures_total",
                "Payloads that could not be decoded, by source and status answered",
                &["source", "status"],
            ),
            quarantined: counter_vec(
                "ccrelay_quarantined_total",
                "Payloads stored in the quarantine because they could not be decoded",
                &["source"],
            ),
            spool_append_duration: histogram(
                "ccrelay_spool_append_duration_seconds",
                "Time from handing a record to the spool until it was synced to disk",
                LATENCY_BUCKETS,
            ),
            spool_appended_records: counter(
                "ccrelay_spool_appended_records_total",
                "Records appended to the spool and synced",
            ),
            spool_disk_bytes: gauge(
                "ccrelay_spool_disk_bytes",
                "Bytes the spool's segments take on disk",
            ),
            dedupe_keys: gauge(
                "ccrelay_dedupe_keys",
                "Dedupe keys held in memory (within the window, at most ingress.dedupe_max_keys)",
            ),
            dedupe_forgotten: counter(
                "ccrelay_dedupe_forgotten_total",
                "Dedupe keys forgotten before their window ended, to stay within dedupe_max_keys",
            ),
            sink_deliveries: counter_vec(
                "ccrelay_sink_deliveries_total",
                "Envelope delivery attempts by sink and outcome: delivered (confirmed), retried \
             (failed, will retry) or failed (given up: permanent failure or retries exhausted)",
                &["sink", "outcome"],
            ),
            sink_delivery_duration: histogram_vec(
                "ccrelay_sink_delivery_duration_seconds",
                "Time a sink took to confirm a batch",
                &["sink"],
                LATENCY_BUCKETS,
            ),
            sink_dead_letters: counter_vec(
                "ccrelay_sink_dead_letters_total",
                "Deliveries given up and stored as dead letters",
                &["sink"],
            ),
            sink_healthy: gauge_vec(
                "ccrelay_sink_healthy",
                "1 while the sink's last delivery or check succeeded, else 0",
                &["sink"],
            ),
            sink_routed: counter_vec(
                "ccrelay_sink_routed_total",
                "Envelopes routed to the sink and durably spooled",
                &["sink"],
            ),
            sink_backlog: gauge_vec(
                "ccrelay_sink_backlog_records",
                "Envelopes routed to the sink and not yet delivered or dead-lettered",
                &["sink"],
            ),
            sink_latency: histogram_vec(
                "ccrelay_sink_delivery_latency_seconds",
                "Time from accepting an envelope to its sink confirming it",
                &["sink"],
                END_TO_END_BUCKETS,
            ),
            sink_redelivered: counter_vec(
                "ccrelay_sink_redelivered_total",
                "Envelopes handed to the sink before an unclean stop and handed again after \
                 the restart: the possible duplicates",
                &["sink"],
            ),
            sink_connected: gauge_vec(
                "ccrelay_sink_connected",
                "1 while a network sink (amqp, kafka) holds a connection to its broker, else 0",
                &["sink"],
            ),
            rules_reloads: counter_vec(
                "ccrelay_rules_reloads_total",
                "Rules file reloads by result (success, unchanged, failure)",
                &["result"],
            ),
            rules_unmatched: counter_vec(
                "ccrelay_rules_unmatched_total",
                "Envelopes that matched no rule and had no unmatched sinks, kept unrouted",
                &["source"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text encoder accepts every registered metric")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
