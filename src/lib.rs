//! ccrelay receives CommCare HQ Data Forwarding requests, accepts each durably, and routes it
//! to sinks.
//!
//! # Layout
//!
//! The flow is one straight path: `ingress` → `decode` → `envelope` → `rules` → `spool` →
//! `dispatch` → `sinks`.
//!
//! - `envelope`: the documented shape every payload takes; the contract with rules and sinks.
//! - `decode`: body bytes to envelope parts (XML and JSON, every payload HQ sends). No IO.
//! - `config`: the YAML config file parsed into validated types, every error reported at once.
//! - `yaml`: spanned YAML reading for operator-edited files, collecting located errors.
//! - `ingress::auth`: the pure credential check for `/ingest/{source}` requests.
//! - `error`: the closed set of error classes; `ingress::error` maps them to HTTP once.

pub mod config;
pub mod decode;
pub mod envelope;
pub mod error;
pub mod ingress {
    pub mod auth;
}
pub mod yaml;
