//! Ingress: the HTTP listener HQ forwards to. Owns the router and the order of its layers;
//! `handler` accepts payloads, `auth` checks credentials, `error` maps errors to answers.
//!
//! Invariant: no 2xx leaves here before the spool has synced the payload.

pub mod auth;
pub mod error;
pub mod handler;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::backlog::Backlogs;
use crate::config::Config;
use crate::dedupe::DedupeIndex;
use crate::ingress::error::IngressError;
use crate::live_rules::LiveRules;
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::spool::Spool;

/// What the ingress handler works with: built components, not raw config.
#[derive(Clone)]
pub struct IngressState {
    pub config: Arc<Config>,
    pub rules: Arc<LiveRules>,
    pub spool: Spool,
    pub quarantine: Quarantine,
    pub dedupe: Arc<DedupeIndex>,
    pub backlogs: Backlogs,
    pub metrics: Arc<Metrics>,
    /// Requests in progress; past the configured maximum, ingress answers 503.
    pub in_flight: Arc<Semaphore>,
    /// Cancelled when shutdown begins: new requests get 503 while in-flight ones finish.
    pub shutdown: CancellationToken,
}

/// The ingress router with its layers, outermost first: a panic becomes an answer and every
/// request is traced. The request timeout is the handler's own, so that it is answered like
/// every other error (503, which HQ retries; a 408 would make current HQ drop the payload).
pub fn router(state: IngressState) -> Router {
    Router::new()
        .route(
            "/ingest/{source}",
            post(handler::ingest)
                .put(handler::ingest)
                .delete(handler::ingest),
        )
        // One shared state: axum clones it for every request.
        .with_state(Arc::new(state))
        // The handler enforces the configured limit itself, to answer in ccrelay's own format.
        .layer(DefaultBodyLimit::disable())
        // Failures are logged once, with their cause, by `IngressError::into_response`.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(()),
        )
        .layer(CatchPanicLayer::custom(answer_panic))
}

/// One span per request, filled in by the handler as it learns the source, the envelope id
/// and the trace; delivery spans continue the same trace (`telemetry::continue_trace`).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let traceparent = request
        .headers()
        .get(handler::TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    crate::telemetry::span_in_trace(traceparent, || {
        tracing::info_span!(
            "ingest",
            method = %request.method(),
            path = request.uri().path(),
            source = tracing::field::Empty,
            envelope_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        )
    })
}

/// A panic is a bug that a retry may not hit again: 503, which HQ retries, not 500.
fn answer_panic(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    IngressError::Panicked.into_response()
}
