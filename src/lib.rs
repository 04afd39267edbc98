//! ccrelay receives CommCare HQ Data Forwarding requests, accepts each durably, and routes it
//! to sinks.
//!
//! # Layout
//!
//! The flow is one straight path: `ingress` → `decode` → `envelope` → `rules` → `spool` →
//! `dispatch` → `sinks`.
//!
//! - `ingress`: the HTTP listener HQ posts to; authenticates, decodes, routes, spools, answers.
//! - `decode`: body bytes to envelope parts (XML and JSON, every payload HQ sends). No IO.
//! - `envelope`: the documented shape every payload takes; the contract with rules and sinks.
//! - `rules`: which sinks an envelope goes to. No IO.
//! - `live_rules`: the rule set in force, reloaded and swapped whole when the file changes.
//! - `spool`: the durable log ingress appends to, and each sink's cursor in it.
//! - `dispatch`: one loop per sink from the spool to the sink, settling every record.
//! - `retry`: when a failed delivery is tried again, and when it becomes a dead letter.
//! - `backlog`: records each sink has yet to settle; past a limit, ingress answers 503.
//! - `recover`: what a start reads back from the spool (dedupe keys, backlogs, duplicates).
//! - `sinks`: the file sink (more to come), each confirming what it accepts.
//! - `dedupe`: the keys each source accepted recently, so resends are answered, not routed.
//! - `quarantine`, `dead_letter`: where refused payloads and failed deliveries are kept.
//! - `admin`: health, readiness and metrics on a separate listener.
//! - `control`: the Data Forwarding API, as HQ's client (`ccrelay hq`) and as a server.
//! - `config`: the config file parsed into validated types, every error reported at once.
//! - `yaml`: spanned YAML reading for operator-edited files, collecting located errors.
//! - `app`, `cli`, `shutdown`, `telemetry`: wiring, command line, signals and logs.
//! - `error`: the closed set of error classes; `ingress::error` maps them to HTTP once.
//! - `metrics`, `template`: Prometheus metrics; templates for sink destinations.
//! - `trace_context`: the W3C traceparent that ties an ingest to its deliveries.

pub mod admin;
pub mod app;
pub mod backlog;
pub mod cli;
pub mod config;
pub mod control;
pub mod dead_letter;
pub mod decode;
pub mod dedupe;
pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod ingress;
pub mod live_rules;
pub mod metrics;
pub mod quarantine;
pub mod recover;
pub mod replay;
pub mod retry;
pub mod rules;
pub mod shutdown;
pub mod sinks;
pub mod spool;
pub mod telemetry;
pub mod template;
pub mod trace_context;
pub mod yaml;
