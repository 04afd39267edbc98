//! `/dead-letters`: list, show, replay and purge dead letters, filtered by sink, rule, kind
//! and time.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AdminState, admin_error};
use crate::dead_letter::{DeadLetter, Filter};
use crate::spool::Record;

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

async fn find_letters(state: &AdminState, filter: Filter) -> Result<Vec<DeadLetter>, Response> {
    let dead_letters = state.dead_letters.clone();
    tokio::task::spawn_blocking(move || dead_letters.find(&filter))
        .await
        .expect("reading dead letters does not panic")
        .map_err(|err| admin_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", err))
}

/// `GET /dead-letters?sink=&rule=&kind=&since=&until=`: the matching dead letters, summarised.
pub(super) async fn list_dead_letters(
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
pub(super) async fn show_dead_letter(
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
pub(super) async fn replay_dead_letters(
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
        state.backlogs.routed(&record.routes);
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
pub(super) async fn purge_dead_letters(
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
