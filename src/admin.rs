//! Admin listener: health, readiness and metrics for operators and orchestrators, on its own
//! address so it can stay private while ingress faces HQ.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::dead_letter::{DeadLetter, DeadLetters, Filter};
use crate::live_rules::{LiveRules, Reloaded};
use crate::metrics::Metrics;
use crate::spool::Record;
use crate::spool::Spool;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub spool: Spool,
    /// Set once ingress is bound and serving.
    pub ingress_ready: Arc<AtomicBool>,
    pub rules: Arc<LiveRules>,
    pub dead_letters: DeadLetters,
    /// The Data Forwarding API ccrelay serves (`control::api`).
    pub control: crate::control::api::ControlState,
}

pub fn router(state: AdminState) -> Router {
    let control = crate::control::api::router(state.control.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/rules", get(rules))
        .route("/rules/reload", post(reload_rules))
        .route(
            "/dead-letters",
            get(list_dead_letters).delete(purge_dead_letters),
        )
        .route("/dead-letters/replay", post(replay_dead_letters))
        .route("/dead-letters/{sink}/{envelope_id}", get(show_dead_letter))
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
    let gauge = |gauge: &prometheus::IntGaugeVec, name: &str| {
        // Read without creating the series: an unknown state is shown as `null`.
        let families = prometheus::core::Collector::collect(gauge);
        families
            .iter()
            .flat_map(|family| family.get_metric())
            .find(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == "sink" && label.value() == name)
            })
            .map(|metric| metric.get_gauge().get_value() >= 1.0)
    };
    let sinks: serde_json::Map<String, serde_json::Value> = rules
        .sinks
        .iter()
        .map(|(name, config)| {
            let health = json!({
                "type": config.type_name(),
                "healthy": gauge(&state.metrics.sink_healthy, name),
                "connected": gauge(&state.metrics.sink_connected, name),
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

/// A dead letter without its envelope and body, for listings.
fn summary(letter: &DeadLetter) -> serde_json::Value {
    json!({
        "envelope_id": letter.envelope_id,
        "sink": letter.route.sink,
        "rule": letter.route.rule,
        "kind": letter.envelope["kind"],
        "reason": letter.reason,
        "attempts": letter.attempts,
        "first_attempt_at": letter.first_attempt_at,
        "last_attempt_at": letter.last_attempt_at,
    })
}

fn admin_error(status: StatusCode, code: &str, detail: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "detail": detail.to_string() })),
    )
        .into_response()
}

async fn find_letters(state: &AdminState, filter: Filter) -> Result<Vec<DeadLetter>, Response> {
    let dead_letters = state.dead_letters.clone();
    tokio::task::spawn_blocking(move || dead_letters.find(&filter))
        .await
        .expect("reading dead letters does not panic")
        .map_err(|err| admin_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", err))
}

/// `GET /dead-letters?sink=&rule=&kind=&since=&until=`: the matching dead letters, summarised.
async fn list_dead_letters(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Response {
    match find_letters(&state, filter).await {
        Ok(letters) => {
            let listed: Vec<_> = letters.iter().map(summary).collect();
            axum::Json(json!({ "count": listed.len(), "dead_letters": listed })).into_response()
        }
        Err(response) => response,
    }
}

/// `GET /dead-letters/{sink}/{envelope_id}`: one dead letter in full, body included.
async fn show_dead_letter(
    State(state): State<AdminState>,
    Path((sink, envelope_id)): Path<(String, String)>,
) -> Response {
    let dead_letters = state.dead_letters.clone();
    let found = tokio::task::spawn_blocking(move || dead_letters.get(&sink, &envelope_id))
        .await
        .expect("reading a dead letter does not panic");
    match found {
        Ok(Some(letter)) => axum::Json(letter).into_response(),
        Ok(None) => admin_error(StatusCode::NOT_FOUND, "not_found", "no such dead letter"),
        Err(err) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", err),
    }
}

/// `POST /dead-letters/replay?…`: spools each matching letter again for its sink, then deletes
/// it. A letter whose sink is not in the rules in force is left where it is.
async fn replay_dead_letters(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Response {
    let letters = match find_letters(&state, filter).await {
        Ok(letters) => letters,
        Err(response) => return response,
    };
    let sinks = state
        .rules
        .current()
        .sinks
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    let (mut replayed, mut skipped) = (0usize, Vec::new());
    for letter in letters {
        if !sinks.contains(&letter.route.sink) {
            skipped.push(json!({ "envelope_id": letter.envelope_id, "sink": letter.route.sink, "reason": "sink is not in the rules" }));
            continue;
        }
        let body = match letter.body() {
            Ok(body) => body,
            Err(err) => {
                skipped.push(json!({ "envelope_id": letter.envelope_id, "sink": letter.route.sink, "reason": format!("body is not base64: {err}") }));
                continue;
            }
        };
        let record = Record {
            routes: vec![letter.route.clone()],
            envelope: serde_json::to_vec(&letter.envelope)
                .expect("JSON values serialise")
                .into(),
            body: body.into(),
        };
        // Deleted only once spooled again: a failure in between leaves a duplicate, not a loss.
        if let Err(err) = state.spool.append(&record).await {
            return admin_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("replayed {replayed}, then: {err}"),
            );
        }
        let dead_letters = state.dead_letters.clone();
        let removed = tokio::task::spawn_blocking(move || dead_letters.remove(&letter))
            .await
            .expect("removing a dead letter does not panic");
        if let Err(err) = removed {
            tracing::error!(error = %err, "replayed dead letter could not be removed; it may be replayed twice");
        }
        replayed += 1;
    }
    axum::Json(json!({ "replayed": replayed, "skipped": skipped })).into_response()
}

/// `DELETE /dead-letters?…`: deletes the matching dead letters for good.
async fn purge_dead_letters(
    State(state): State<AdminState>,
    Query(filter): Query<Filter>,
) -> Response {
    let letters = match find_letters(&state, filter).await {
        Ok(letters) => letters,
        Err(response) => return response,
    };
    let dead_letters = state.dead_letters.clone();
    let purged = tokio::task::spawn_blocking(move || {
        letters.iter().try_fold(0usize, |count, letter| {
            dead_letters.remove(letter).map(|()| count + 1)
        })
    })
    .await
    .expect("removing dead letters does not panic");
    match purged {
        Ok(purged) => axum::Json(json!({ "purged": purged })).into_response(),
        Err(err) => admin_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", err),
    }
}
