//! HTTP sink (webhooks) through reqwest with rustls: one request per envelope, many in flight.
//!
//! What counts as delivered is the receiver's status alone: 2xx is delivered; 408, 429, 5xx
//! and network errors are transient (a `Retry-After` is passed to the dispatcher); any other
//! status is permanent and becomes a dead letter naming it. Redirects are not followed: a
//! redirected POST would silently become a GET elsewhere.
//!
//! Every request carries `Idempotency-Key: <envelope id>`, so a receiver can drop the
//! re-deliveries that at-least-once delivery implies. With a `signing_secret`, requests are
//! signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`),
//! so receivers verify them with that spec's libraries.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::{Delivery, SinkError, render, render_headers};
use crate::template::{JsonContext, Template};

/// A `Retry-After` longer than this is cut to it: a receiver cannot park a queue for a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of a refusing receiver's answer goes into the failure reason.
const MAX_REASON_BODY_BYTES: usize = 256;

#[derive(Clone, Debug)]
pub struct HttpSinkConfig {
    pub url: Template,
    /// `POST` (default), `PUT` or `PATCH`.
    pub method: reqwest::Method,
    /// Extra request headers, each value a template.
    pub headers: Vec<(String, Template)>,
    pub auth: Option<HttpAuth>,
    /// For the whole exchange: connecting, sending, and the receiver's answer.
    pub timeout: Duration,
    /// The Standard Webhooks key, decoded from its `whsec_<base64>` form.
    pub signing_key: Option<Vec<u8>>,
    /// Requests in flight at once within a batch.
    pub max_in_flight: usize,
}

#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            HttpAuth::Bearer { .. } => write!(f, "Bearer(***)"),
        }
    }
}

/// Reads a Standard Webhooks secret: `whsec_` followed by the key in base64.
///
/// # Errors
/// A message for the rules file when the text is not of that form or the key is empty.
pub fn parse_signing_secret(text: &str) -> Result<Vec<u8>, String> {
    let encoded = text
        .strip_prefix("whsec_")
        .ok_or("expected a Standard Webhooks secret, `whsec_` followed by base64")?;
    let key = BASE64
        .decode(encoded)
        .map_err(|err| format!("the part after `whsec_` is not base64: {err}"))?;
    if key.is_empty() {
        return Err("the signing key is empty".to_owned());
    }
    Ok(key)
}

/// The Standard Webhooks signature header value: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// What a receiver's status means for the delivery; `retry_after` is its header, if any.
///
/// # Errors
/// Transient for 408, 429 and 5xx; permanent for every other status outside 2xx.
pub fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<&HeaderValue>,
    body: &str,
) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let mut reason = format!("the receiver answered {status}");
    let body = body.trim();
    if !body.is_empty() {
        let mut end = body.len().min(MAX_REASON_BODY_BYTES);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        reason.push_str(&format!(": {}", &body[..end]));
    }
    let transient = status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if transient {
        Err(SinkError::Transient {
            reason,
            retry_after: retry_after.and_then(parse_retry_after),
        })
    } else {
        Err(SinkError::permanent(reason))
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at `MAX_RETRY_AFTER`.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let delay = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
            let now = jiff::Timestamp::now();
            Duration::try_from(at.since(now).ok()?).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

pub struct HttpSink {
    config: HttpSinkConfig,
    client: Result<reqwest::Client, String>,
}

impl HttpSink {
    pub fn new(config: HttpSinkConfig) -> HttpSink {
        // Building a client only reads the TLS roots compiled into it; no connection is made.
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.max_in_flight)
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"));
        HttpSink { config, client }
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        let client = match &self.client {
            Ok(client) => client,
            Err(reason) => {
                return batch
                    .iter()
                    .map(|_| Err(SinkError::transient(reason.clone())))
                    .collect();
            }
        };
        // `buffered` keeps the order of results while up to `max_in_flight` run at once. The
        // futures are boxed first: a closure inside the stream would hide their lifetimes from
        // rustc's `Send` check of the dispatcher's task (rust-lang/rust#102211).
        let sends: Vec<BoxFuture<'_, Result<(), SinkError>>> = batch
            .iter()
            .map(|delivery| self.send(client, delivery).boxed())
            .collect();
        futures::stream::iter(sends)
            .buffered(self.config.max_in_flight)
            .collect()
            .await
    }

    async fn send(&self, client: &reqwest::Client, delivery: &Delivery) -> Result<(), SinkError> {
        let envelope = JsonContext::new(&delivery.envelope);
        let url = render("url", &self.config.url, &envelope)?;
        let mut headers = HeaderMap::new();
        for (name, value) in render_headers(&self.config.headers, &envelope)? {
            headers.insert(header_name(&name)?, header_value(&name, &value)?);
        }
        let content_type = header_value("content-type", &delivery.payload.content_type)?;
        headers.insert(reqwest::header::CONTENT_TYPE, content_type);
        let id = header_value("idempotency-key", delivery.envelope_id())?;
        headers.insert("idempotency-key", id.clone());
        if let Some(traceparent) = &delivery.facts.traceparent {
            headers.insert("traceparent", header_value("traceparent", traceparent)?);
        }
        if let Some(key) = &self.config.signing_key {
            let timestamp = jiff::Timestamp::now().as_second();
            let signature = sign(
                key,
                delivery.envelope_id(),
                timestamp,
                &delivery.payload.bytes,
            );
            headers.insert("webhook-id", id);
            headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
            headers.insert("webhook-signature", header_value("signature", &signature)?);
        }
        let mut request = client
            .request(self.config.method.clone(), &url)
            .headers(headers)
            .body(delivery.payload.bytes.clone());
        request = match &self.config.auth {
            Some(HttpAuth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            Some(HttpAuth::Bearer { token }) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|err| {
            if err.is_builder() {
                // The rendered URL itself is unusable: it will be every time.
                SinkError::permanent(format!("url `{url}`: {err}"))
            } else {
                SinkError::transient(format!("HTTP request to {url} failed: {}", describe(&err)))
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .cloned();
        let body = read_prefix(response).await;
        classify(status, retry_after.as_ref(), &body)
    }
}

/// At most `MAX_REASON_BODY_BYTES` of the answer, so a huge error page cannot fill memory.
async fn read_prefix(mut response: reqwest::Response) -> String {
    let mut prefix = Vec::new();
    while prefix.len() < MAX_REASON_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
            _ => break,
        }
    }
    prefix.truncate(MAX_REASON_BODY_BYTES);
    String::from_utf8_lossy(&prefix).into_owned()
}

/// reqwest's errors say little at the top level; the cause ("connection refused") is below.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn header_name(name: &str) -> Result<HeaderName, SinkError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|err| SinkError::permanent(format!("header name `{name}`: {err}")))
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, SinkError> {
    HeaderValue::from_str(value)
        .map_err(|err| SinkError::permanent(format!("header `{name}`: {err}")))
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::HeaderValue;

    use super::*;

    fn check(status: u16, retry_after: Option<&str>, expected: Result<(), (bool, Option<u64>)>) {
        let header = retry_after.map(|text| HeaderValue::from_str(text).unwrap());
        let outcome = classify(
            StatusCode::from_u16(status).unwrap(),
            header.as_ref(),
            "nope",
        );
        let got = outcome.map_err(|err| match err {
            SinkError::Transient { retry_after, .. } => {
                (true, retry_after.map(|after| after.as_secs()))
            }
            SinkError::Permanent { .. } => (false, None),
        });
        assert_eq!(got, expected, "{status} {retry_after:?}");
    }

    #[test]
    fn statuses_are_delivered_transient_or_permanent() {
        check(200, None, Ok(()));
        check(202, None, Ok(()));
        check(204, None, Ok(()));
        check(408, None, Err((true, None)));
        check(429, Some("7"), Err((true, Some(7))));
        check(500, None, Err((true, None)));
        check(503, Some("120"), Err((true, Some(120))));
        check(503, Some("86400"), Err((true, Some(3600))));
        check(503, Some("soon"), Err((true, None)));
        check(400, Some("5"), Err((false, None)));
        check(401, None, Err((false, None)));
        check(404, None, Err((false, None)));
        check(413, None, Err((false, None)));
        check(301, None, Err((false, None)));
    }

    #[test]
    fn retry_after_may_be_an_http_date() {
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(90);
        let text = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap();
        let delay = parse_retry_after(&HeaderValue::from_str(&text).unwrap()).unwrap();
        assert!((85..=90).contains(&delay.as_secs()), "{text}: {delay:?}");
        let past = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
    }

    #[test]
    fn the_reason_names_the_status_and_a_bounded_part_of_the_answer() {
        let long = "é".repeat(1000);
        let err = classify(StatusCode::BAD_REQUEST, None, &long).unwrap_err();
        let reason = err.to_string();
        assert!(reason.starts_with("the receiver answered 400 Bad Request: é"));
        assert!(reason.len() < 400, "{}", reason.len());
    }

    #[test]
    fn signing_secrets_are_whsec_base64() {
        assert_eq!(parse_signing_secret("whsec_aGVsbG8=").unwrap(), b"hello");
        assert!(
            parse_signing_secret("aGVsbG8=")
                .unwrap_err()
                .contains("whsec_")
        );
        assert!(
            parse_signing_secret("whsec_!!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            parse_signing_secret("whsec_")
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let key = parse_signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
