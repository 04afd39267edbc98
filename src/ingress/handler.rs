//! `POST|PUT|DELETE /ingest/{source}`: authenticate, decode, route, spool, and only then 2xx.
//!
//! The handler never talks to a sink: it answers as soon as the spool has the payload, since
//! HQ times out after 300 s and re-sends whatever it did not see answered.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use super::IngressState;
use super::auth;
use super::error::IngressError;
use crate::config::Source;
use crate::decode::{self, Arrival, Decoded, Input, Limits};
use crate::quarantine::QuarantineNote;
use crate::spool::Record;

/// HQ's payload headers that carry meaning; both are kept in the envelope.
const RECEIVED_ON: &str = "received-on";
const SERVER_MODIFIED_ON: &str = "server-modified-on";
/// W3C trace context, continued when a sender (or a proxy in front) starts a trace.
pub(super) const TRACEPARENT: &str = "traceparent";

pub async fn ingest(
    State(state): State<Arc<IngressState>>,
    Path(source_name): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let source = state.config.sources.get(&source_name);
    // The label is the config entry's name (`*` for the catch-all), so it stays bounded.
    let label = source
        .map_or("unknown", |source| source.name.as_str())
        .to_string();
    let response = match source {
        None => IngressError::UnknownSource(source_name).into_response(),
        Some(source) => {
            let request = Request {
                source_name: &source_name,
                source,
                method: method.as_str(),
                query: query.as_deref(),
                headers: &headers,
            };
            let timeout = state.config.ingress.request_timeout;
            let accepted = tokio::time::timeout(timeout, accept(&state, request, body))
                .await
                .unwrap_or(Err(IngressError::TimedOut { timeout }));
            match accepted {
                Ok(accepted) => accepted.into_response(),
                Err(err) => {
                    if matches!(err, IngressError::Undecodable { .. }) {
                        let status = err.status();
                        state
                            .metrics
                            .decode_failures
                            .with_label_values(&[&label, status.as_str()])
                            .inc();
                    }
                    err.into_response()
                }
            }
        }
    };
    state
        .metrics
        .ingress_requests
        .with_label_values(&[&label, response.status().as_str()])
        .inc();
    state
        .metrics
        .ingress_request_duration
        .with_label_values(&[&label])
        .observe(started.elapsed().as_secs_f64());
    response
}

struct Request<'a> {
    source_name: &'a str,
    source: &'a Source,
    method: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
}

/// The answer to an accepted payload: 202 with the new envelope's id, or 200 with the id of
/// the first copy when this one is a duplicate. Never 204, which HQ records as "Empty".
#[derive(Debug)]
pub struct Accepted {
    pub id: String,
    pub duplicate: bool,
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let status = if self.duplicate {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let body = json!({ "id": self.id, "duplicate": self.duplicate });
        (status, Json(body)).into_response()
    }
}

async fn accept(
    state: &IngressState,
    request: Request<'_>,
    body: Body,
) -> Result<Accepted, IngressError> {
    if state.shutdown.is_cancelled() {
        return Err(IngressError::ShuttingDown);
    }
    let _permit = state
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| IngressError::Busy)?;
    let limit = state.config.ingress.max_body_bytes.get();
    let body = read_body(body, limit).await?;
    let label = request.source.name.as_str();
    tracing::Span::current().record("source", label);
    state
        .metrics
        .ingress_bytes
        .with_label_values(&[label])
        .inc_by(body.len() as u64);
    let now = jiff::Timestamp::now();
    auth::authenticate(&request.source.auth, request.headers, &body, now).map_err(|source| {
        IngressError::Unauthorized {
            challenge: auth::challenge(&request.source.auth),
            source,
        }
    })?;

    let uuid = uuid::Uuid::now_v7();
    let id = uuid.to_string();
    let trace = crate::telemetry::ingest_trace(header_str(request.headers, TRACEPARENT));
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("envelope_id", id.as_str());
        span.record("trace_id", trace.trace_id_hex());
    }
    let received_at = now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string();
    let content_type = header_str(request.headers, header::CONTENT_TYPE.as_str());
    let arrival = Arrival {
        id: id.clone(),
        received_at,
        source: request.source_name.to_string(),
        source_domain: request.source.domain.clone(),
        method: request.method.to_string(),
        content_type: content_type.map(str::to_string),
        query: parse_query(request.query),
        headers: payload_headers(request.headers),
        body_bytes: body.len() as u64,
        traceparent: Some(trace.to_string()),
    };
    let input = Input {
        body: &body,
        content_type,
        received_on: header_str(request.headers, RECEIVED_ON),
        server_modified_on: header_str(request.headers, SERVER_MODIFIED_ON),
        expected_kind: request.source.kind,
        limits: Limits {
            max_depth: state.config.ingress.max_depth.get(),
        },
    };
    let decoded: Decoded = match decode::decode(&input) {
        Ok(decoded) => decoded,
        Err(err) => return Err(quarantine(state, label, arrival, body, err).await),
    };
    let dedupe_key = request.source.dedupe.then(|| decoded.dedupe_key.clone());
    if let Some(key) = &dedupe_key
        && let Some(seen) = state.dedupe.find(request.source_name, key, now)
    {
        state
            .metrics
            .ingress_duplicates
            .with_label_values(&[label])
            .inc();
        tracing::debug!(envelope_id = %seen.envelope_id, dedupe_key = %key, "duplicate answered, not routed");
        return Ok(Accepted {
            id: seen.envelope_id.to_string(),
            duplicate: true,
        });
    }
    let envelope = decoded.into_envelope(arrival);
    let kind = envelope.kind;
    let envelope_value = envelope.into_value();
    // Held until the append is done: a sink the rules drop meanwhile drains past this record.
    let rules = state.rules.current();
    let routes = rules.route(&envelope_value);
    if routes.is_empty() {
        state
            .metrics
            .rules_unmatched
            .with_label_values(&[label])
            .inc();
        tracing::warn!(envelope_id = %id, source = %request.source_name, %kind, "no rule matched; kept in the spool unrouted");
    }
    let limit = |sink: &str| rules.sinks.get(sink).map(|spec| spec.max_backlog);
    if let Some((sink, backlog)) = state.backlogs.full(&routes, limit) {
        return Err(IngressError::Backlogged {
            sink: sink.to_string(),
            backlog,
        });
    }
    let record = Record {
        routes,
        envelope: Bytes::from(
            serde_json::to_vec(&envelope_value).expect("envelopes always serialise"),
        ),
        body,
    };
    let started = Instant::now();
    state.spool.append(&record).await?;
    drop(rules);
    state.backlogs.routed(&record.routes);
    if let Some(key) = &dedupe_key {
        let forgotten = state.dedupe.insert(request.source_name, key, uuid, now);
        if forgotten > 0 {
            state.metrics.dedupe_forgotten.inc_by(forgotten as u64);
            tracing::warn!(
                forgotten,
                "dedupe index full: the oldest keys were forgotten early; raise ingress.dedupe_max_keys to keep them for the whole window"
            );
        }
    }
    state
        .metrics
        .spool_append_duration
        .observe(started.elapsed().as_secs_f64());
    state.metrics.spool_appended_records.inc();
    state
        .metrics
        .ingress_envelopes
        .with_label_values(&[label, kind.as_str()])
        .inc();
    tracing::debug!(envelope_id = %id, %kind, "accepted");
    Ok(Accepted {
        id,
        duplicate: false,
    })
}

/// Keeps an undecodable payload, then says why it was refused.
async fn quarantine(
    state: &IngressState,
    label: &str,
    arrival: Arrival,
    body: Bytes,
    err: decode::DecodeError,
) -> IngressError {
    let quarantine = state.quarantine.clone();
    let status = super::error::status_of(err.kind()).as_u16();
    let message = err.to_string();
    let stored = tokio::task::spawn_blocking(move || {
        let note = QuarantineNote {
            id: &arrival.id,
            received_at: &arrival.received_at,
            source: &arrival.source,
            method: &arrival.method,
            content_type: arrival.content_type.as_deref(),
            query: &arrival.query,
            headers: &arrival.headers,
            status,
            error: message,
        };
        quarantine.store(&note, &body).map(|()| arrival.id)
    })
    .await
    .expect("quarantine writes do not panic");
    match stored {
        Ok(quarantine_id) => {
            state.metrics.quarantined.with_label_values(&[label]).inc();
            IngressError::Undecodable {
                source: err,
                quarantine_id,
            }
        }
        Err(io) => IngressError::Quarantine(io),
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngressError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(IngressError::BodyTooLarge { limit })
        }
        Err(err) => Err(IngressError::BodyRead(err.to_string())),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn parse_query(query: Option<&str>) -> Map<String, Value> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
        .collect()
}

fn payload_headers(headers: &HeaderMap) -> Map<String, Value> {
    [RECEIVED_ON, SERVER_MODIFIED_ON]
        .into_iter()
        .filter_map(|name| {
            header_str(headers, name)
                .map(|value| (name.to_string(), Value::String(value.to_string())))
        })
        .collect()
}
