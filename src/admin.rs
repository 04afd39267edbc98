//! Admin listener: health, readiness and metrics for operators and orchestrators, the rules
//! in force, dead letters and replay, on its own address so it can stay private while
//! ingress faces HQ. `page` serves the operators' web page at `/`; `status` the source and
//! sink summaries it reads. The `ccrelay dlq` and `ccrelay replay` commands are its clients.

mod dead_letters;
mod page;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::backlog::Backlogs;
use crate::dead_letter::DeadLetters;
use crate::ingress::error::{code_of, status_of};
use crate::live_rules::{LiveRules, Reloaded};
use crate::metrics::Metrics;
use crate::replay::ReplayRequest;
use crate::spool::Spool;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub spool: Spool,
    /// Set once ingress is bound and serving.
    pub ingress_ready: Arc<AtomicBool>,
    pub rules: Arc<LiveRules>,
    pub dead_letters: DeadLetters,
    pub backlogs: Backlogs,
    /// The Data Forwarding API ccrelay serves (`control::api`).
    pub control: crate::control::api::ControlState,
}

pub fn router(state: AdminState) -> Router {
    let control = crate::control::api::router(state.control.clone());
    Router::new()
        .route("/", get(page::index))
        .route("/assets/admin.js", get(page::script))
        .route("/assets/admin.css", get(page::style))
        .route("/sources", get(status::sources))
        .route("/sinks", get(status::sinks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/rules", get(rules))
        .route("/rules/reload", post(reload_rules))
        .route(
            "/dead-letters",
            get(dead_letters::list_dead_letters).delete(dead_letters::purge_dead_letters),
        )
        .route(
            "/dead-letters/replay",
            post(dead_letters::replay_dead_letters),
        )
        .route(
            "/dead-letters/{sink}/{envelope_id}",
            get(dead_letters::show_dead_letter),
        )
        .route("/replay", post(replay))
        .with_state(state)
        .merge(control)
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the spool is open (it is, or this state could not exist) and ingress is serving.
/// Sinks are shown but do not decide readiness: a sink that is down only holds its queue, and
/// the relay must keep accepting (and spooling) what HQ sends meanwhile.
async fn readyz(State(state): State<AdminState>) -> Response {
    let ingress = state.ingress_ready.load(Ordering::Acquire);
    let status = if ingress {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ingress,
        "ingress": if ingress { "serving" } else { "not serving" },
        "spool": { "open": true, "disk_bytes": state.spool.disk_bytes(), "durable_end": state.spool.durable_end() },
        "sinks": sink_health(&state),
    });
    (status, axum::Json(body)).into_response()
}

/// Each sink of the rules in force: its type, whether its last delivery or check succeeded
/// (`null` before either) and, for sinks that keep one, whether it holds a connection.
fn sink_health(state: &AdminState) -> serde_json::Value {
    let rules = state.rules.current();
    // Read without creating series: an unknown state is shown as `null`.
    let healthy = status::flags_by_sink(&state.metrics.sink_healthy);
    let connected = status::flags_by_sink(&state.metrics.sink_connected);
    let sinks: serde_json::Map<String, serde_json::Value> = rules
        .sinks
        .iter()
        .map(|(name, spec)| {
            let health = json!({
                "type": spec.config.type_name(),
                "healthy": healthy.get(name),
                "connected": connected.get(name),
            });
            (name.clone(), health)
        })
        .collect();
    serde_json::Value::Object(sinks)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state
        .metrics
        .spool_disk_bytes
        .set(state.spool.disk_bytes() as i64);
    state.backlogs.publish();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The rules in force: version, when loaded, rule count, sinks, and the last reload error.
async fn rules(State(state): State<AdminState>) -> Response {
    axum::Json(state.rules.status()).into_response()
}

/// Reloads the rules file now; 200 with the new status, or 422 with the file's problems
/// (the previous rules stay in force).
async fn reload_rules(State(state): State<AdminState>) -> Response {
    let live = Arc::clone(&state.rules);
    let outcome = tokio::task::spawn_blocking(move || live.reload())
        .await
        .expect("reloading the rules does not panic");
    match outcome {
        Ok(reloaded) => {
            let changed = matches!(reloaded, Reloaded::Swapped { .. });
            let body = json!({ "changed": changed, "rules": state.rules.status() });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(errors) => {
            let body =
                json!({ "code": "invalid_rules", "detail": errors, "rules": state.rules.status() });
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
        }
    }
}

/// A JSON error answer: `{"code", "detail"}`, the same shape ingress uses.
pub(super) fn admin_error(
    status: StatusCode,
    code: &str,
    detail: impl std::fmt::Display,
) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "detail": detail.to_string() })),
    )
        .into_response()
}

/// `POST /replay` with a JSON `ReplayRequest`: re-routes accepted envelopes from a time range
/// through the rules in force and spools them again; answers with the counts.
async fn replay(
    State(state): State<AdminState>,
    request: Result<axum::Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            );
        }
    };
    let rules = state.rules.current();
    match crate::replay::replay(&state.spool, &rules, &state.backlogs, &request).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(err) => admin_error(status_of(err.kind()), code_of(err.kind()), err),
    }
}
