//! Ingress errors and the one place where an error becomes an HTTP answer.
//!
//! Statuses follow HQ's retry rules (commcare-forwarding.md §6.1, §6.2): anything that may
//! succeed later is 503 with Retry-After, because current HQ drops most 4xx and 500 for good;
//! 4xx is only for requests that can never succeed as sent. 4xx bodies are one short JSON
//! shape, `{"code", "detail"}`, since HQ shows them to operators; 5xx bodies say nothing
//! internal, and the detail goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::decode::DecodeError;
use crate::error::ErrorKind;
use crate::ingress::auth::AuthError;
use crate::spool::SpoolError;

/// Seconds HQ (or any sender) is asked to wait before retrying a 503.
const RETRY_AFTER_SECONDS: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error("body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error("{source}")]
    Unauthorized {
        source: AuthError,
        challenge: Option<&'static str>,
    },
    #[error("{source}")]
    Undecodable {
        source: DecodeError,
        /// Where the payload was kept; named in the answer so an operator can find it.
        quarantine_id: String,
    },
    #[error("cannot store the payload in the quarantine: {0}")]
    Quarantine(#[source] std::io::Error),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("too many requests in progress")]
    Busy,
    /// A sink the payload would go to already has `max_backlog` records waiting: taking more
    /// would only grow a queue that is not moving. Nothing is stored; HQ retries later.
    #[error("sink `{sink}` has {backlog} records waiting, its max_backlog")]
    Backlogged { sink: String, backlog: u64 },
    /// Reading the body or storing the payload took longer than the request timeout; nothing
    /// was acknowledged, so the sender retries.
    #[error("request not completed within {}s", timeout.as_secs())]
    TimedOut { timeout: std::time::Duration },
    #[error("shutting down")]
    ShuttingDown,
    #[error("the request handler panicked")]
    Panicked,
}

impl IngressError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngressError::UnknownSource(_) => ErrorKind::NotFound,
            IngressError::BodyTooLarge { .. } => ErrorKind::PayloadTooLarge,
            IngressError::BodyRead(_) => ErrorKind::BadRequest,
            IngressError::Unauthorized { .. } => ErrorKind::Unauthorized,
            IngressError::Undecodable { source, .. } => source.kind(),
            IngressError::Quarantine(_)
            | IngressError::Busy
            | IngressError::Backlogged { .. }
            | IngressError::TimedOut { .. }
            | IngressError::ShuttingDown => ErrorKind::Unavailable,
            IngressError::Spool(err) => err.kind(),
            IngressError::Panicked => ErrorKind::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.kind())
    }
}

/// The HTTP status of an error class; the only such mapping in ccrelay (ingress and admin).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        // A bug may pass; HQ retries 503 but drops 500 (commcare-forwarding.md §6.2).
        ErrorKind::Unavailable | ErrorKind::Internal => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub fn code_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::NotFound => "not_found",
        ErrorKind::PayloadTooLarge => "payload_too_large",
        ErrorKind::UnsupportedMediaType => "unsupported_media_type",
        ErrorKind::Unprocessable => "unprocessable",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Internal => "internal",
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let status = status_of(kind);
        let mut body = json!({ "code": code_of(kind) });
        if status.is_server_error() {
            if kind == ErrorKind::Internal {
                tracing::error!(error = %self, "ingress request failed");
            } else {
                tracing::warn!(error = %self, "ingress request answered 503");
            }
            body["detail"] = "temporarily unavailable, retry later".into();
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "ingress request refused");
            body["detail"] = self.to_string().into();
        }
        if let IngressError::Undecodable { quarantine_id, .. } = &self {
            body["quarantine_id"] = quarantine_id.clone().into();
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if let IngressError::Unauthorized {
            challenge: Some(challenge),
            ..
        } = &self
        {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
