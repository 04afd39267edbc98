//! The small closed set of error classes every module maps its errors into.
//!
//! Modules keep their own typed errors and say, through `kind()`, which class each belongs to;
//! `ingress::error` alone turns a class into an HTTP status. Keeping the set closed is what
//! makes HQ's retry behaviour reviewable in one place (commcare-forwarding.md §6.2).

/// The class of an error, as far as the sender of a request is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request can never succeed as sent (400).
    BadRequest,
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// No such source or resource (404).
    NotFound,
    /// The body is over the configured limit (413).
    PayloadTooLarge,
    /// The Content-Type is not one ccrelay reads (415).
    UnsupportedMediaType,
    /// The body was read but cannot be parsed; it is quarantined before this is answered (422).
    Unprocessable,
    /// Storage is full, failing or shutting down: the sender should retry later (503).
    Unavailable,
    /// A bug in ccrelay (500).
    Internal,
}
