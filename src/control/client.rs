//! The HQ client: list, create, update and delete forwarders through HQ's v0.5 API, with the
//! errors an operator can act on.
//!
//! 429 and unreachable-network failures are retried up to `max_attempts`, waiting as HQ's
//! `Retry-After` says (capped by `max_retry_wait`) or with a doubling backoff. Lists follow
//! `meta.next` to the end, bounded by [`MAX_FORWARDERS`].

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

use super::resource::{self, Forwarder, ForwarderBody, ListPage};
use crate::config::{HqCredential, HqSettings};

/// The page size asked of HQ (tastypie's own default is 20).
pub const PAGE_LIMIT: u64 = 100;
/// The most forwarders read from one domain; a longer list is refused, not truncated.
pub const MAX_FORWARDERS: usize = 10_000;
/// The largest list page read; a page of 100 forwarders is a few tens of KiB.
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// HQ's error bodies are cut to this many bytes in messages.
const MAX_ERROR_BODY: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "HQ refused the credentials of `{username}` (control.hq.{field}) with 401 for {url}: check the username and {field}"
    )]
    Unauthorized {
        username: String,
        field: &'static str,
        url: String,
    },
    #[error(
        "HQ answered 403 for {url}: `{username}` must be an admin of the project space `{domain}`, and the project's plan must include Data Forwarding"
    )]
    Forbidden {
        username: String,
        domain: String,
        url: String,
    },
    #[error(
        "HQ answered 404 for {url}: CommCare HQ removed the Data Forwarding API in 2022 (dimagi/commcare-hq PR #32133), so forwarders must be set up by hand in HQ"
    )]
    ApiRemoved { domain: String, url: String },
    #[error("HQ has no forwarder at {url} (404); it may have been deleted meanwhile")]
    NotFound { url: String },
    #[error(
        "HQ kept answering 429 (too many requests) for {url}, {attempts} attempts; try again later"
    )]
    Throttled { url: String, attempts: u32 },
    #[error("cannot reach HQ at {url} after {attempts} attempts: {source}")]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("HQ answered {status} for {method} {url}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("HQ's answer for {url} is not what the API documents: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("cannot build the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
}

impl ClientError {
    /// Whether HQ answered that the API is gone, so the manual steps apply.
    pub fn is_api_removed(&self) -> bool {
        matches!(self, ClientError::ApiRemoved { .. })
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

pub struct HqClient {
    http: reqwest::Client,
    base: Url,
    settings: HqSettings,
}

/// What a request is about, for error messages.
enum Target<'a> {
    List { domain: &'a str },
    Detail { domain: &'a str },
}

impl HqClient {
    /// # Errors
    /// When the TLS client cannot be set up, or the configured URL is not a base URL.
    pub fn new(settings: &HqSettings) -> Result<HqClient> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("ccrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Setup)?;
        let base =
            Url::parse(&format!("{}/", settings.url)).map_err(|err| ClientError::BadResponse {
                url: settings.url.clone(),
                detail: format!("not a base URL: {err}"),
            })?;
        Ok(HqClient {
            http,
            base,
            settings: settings.clone(),
        })
    }

    /// Every forwarder of `domain`, following `meta.next` page by page.
    ///
    /// # Errors
    /// See [`ClientError`]; a 404 on the list is [`ClientError::ApiRemoved`].
    pub async fn list(&self, domain: &str) -> Result<Vec<Forwarder>> {
        let first = format!(
            "{}?format=json&limit={PAGE_LIMIT}&offset=0",
            resource::list_path(domain)
        );
        let mut url = self.join(&first)?;
        let mut forwarders = Vec::new();
        let mut seen_pages = Vec::new();
        loop {
            let response = self
                .send(Method::GET, &url, None, Target::List { domain })
                .await?;
            let page: ListPage = read_json(&url, response).await?;
            forwarders.extend(page.objects);
            if forwarders.len() > MAX_FORWARDERS {
                return Err(ClientError::BadResponse {
                    url: url.to_string(),
                    detail: format!("more than {MAX_FORWARDERS} forwarders in `{domain}`"),
                });
            }
            let Some(next) = page.meta.next.filter(|next| !next.is_empty()) else {
                return Ok(forwarders);
            };
            seen_pages.push(url.to_string());
            url = url.join(&next).map_err(|err| ClientError::BadResponse {
                url: url.to_string(),
                detail: format!("meta.next `{next}` is not a URL: {err}"),
            })?;
            if seen_pages.contains(&url.to_string()) {
                return Err(ClientError::BadResponse {
                    url: url.to_string(),
                    detail: "meta.next leads back to a page already read".to_owned(),
                });
            }
        }
    }

    /// Creates a forwarder; HQ answers 201.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn create(&self, domain: &str, repeater_type: &str, url: &str) -> Result<()> {
        let target = self.join(&resource::list_path(domain))?;
        let body = ForwarderBody {
            domain,
            repeater_type,
            url,
        };
        self.send(Method::POST, &target, Some(&body), Target::List { domain })
            .await
            .map(drop)
    }

    /// Points an existing forwarder at `url` (a PUT of the whole object); HQ answers 204.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn update(
        &self,
        forwarder: &Forwarder,
        repeater_type: &str,
        url: &str,
    ) -> Result<()> {
        let target = self.join(&resource::detail_path(&forwarder.domain, &forwarder.id))?;
        let body = ForwarderBody {
            domain: &forwarder.domain,
            repeater_type,
            url,
        };
        let domain = &forwarder.domain;
        self.send(Method::PUT, &target, Some(&body), Target::Detail { domain })
            .await
            .map(drop)
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn delete(&self, forwarder: &Forwarder) -> Result<()> {
        let target = self.join(&resource::detail_path(&forwarder.domain, &forwarder.id))?;
        let domain = &forwarder.domain;
        self.send(Method::DELETE, &target, None, Target::Detail { domain })
            .await
            .map(drop)
    }

    fn join(&self, path: &str) -> Result<Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|err| ClientError::BadResponse {
                url: self.base.to_string(),
                detail: format!("cannot make a URL of `{path}`: {err}"),
            })
    }

    /// Sends one request, retrying 429, 502-504 and network failures, and turns every other
    /// non-2xx answer into the error that says what to do.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&ForwarderBody<'_>>,
        target: Target<'_>,
    ) -> Result<reqwest::Response> {
        let max_attempts = self.settings.max_attempts.get();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(reqwest::header::ACCEPT, "application/json");
            request = match &self.settings.credential {
                HqCredential::ApiKey { username, api_key } => request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("ApiKey {username}:{}", api_key.expose()),
                ),
                HqCredential::Basic { username, password } => {
                    request.basic_auth(username, Some(password.expose()))
                }
            };
            if let Some(body) = body {
                request = request.json(body);
            }
            let wait = match request.send().await {
                Err(err) if attempt >= max_attempts => {
                    return Err(ClientError::Unreachable {
                        url: url.to_string(),
                        attempts: attempt,
                        source: err,
                    });
                }
                Err(err) => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(url = %url, error = %err, attempt, wait_seconds = wait.as_secs_f64(), "cannot reach HQ; retrying");
                    wait
                }
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) if is_retryable(response.status()) => {
                    let status = response.status();
                    if attempt >= max_attempts {
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            return Err(ClientError::Throttled {
                                url: url.to_string(),
                                attempts: attempt,
                            });
                        }
                        return Err(status_error(method, url, response).await);
                    }
                    let wait = retry_after(&response).map_or_else(
                        || self.backoff(attempt),
                        |wait| wait.min(self.settings.max_retry_wait),
                    );
                    tracing::warn!(url = %url, status = status.as_u16(), attempt, wait_seconds = wait.as_secs_f64(), "HQ asked to retry later");
                    wait
                }
                Ok(response) => return Err(self.refused(method, url, response, &target).await),
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let doubled = Duration::from_millis(500).saturating_mul(1 << attempt.min(16));
        doubled.min(self.settings.max_retry_wait)
    }

    async fn refused(
        &self,
        method: Method,
        url: &Url,
        response: reqwest::Response,
        target: &Target<'_>,
    ) -> ClientError {
        let username = self.settings.credential.username().to_owned();
        let domain = match target {
            Target::List { domain } | Target::Detail { domain } => (*domain).to_owned(),
        };
        match (response.status(), target) {
            (StatusCode::UNAUTHORIZED, _) => ClientError::Unauthorized {
                username,
                field: self.settings.credential.kind_name(),
                url: url.to_string(),
            },
            (StatusCode::FORBIDDEN, _) => ClientError::Forbidden {
                username,
                domain,
                url: url.to_string(),
            },
            (StatusCode::NOT_FOUND, Target::List { .. }) => ClientError::ApiRemoved {
                domain,
                url: url.to_string(),
            },
            (StatusCode::NOT_FOUND, Target::Detail { .. }) => ClientError::NotFound {
                url: url.to_string(),
            },
            _ => status_error(method, url, response).await,
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// `Retry-After` in seconds; an HTTP date (rare from HQ) falls back to the backoff.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

async fn status_error(method: Method, url: &Url, response: reqwest::Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let mut body: String = text.chars().take(MAX_ERROR_BODY).collect();
    if body.len() < text.len() {
        body.push('…');
    }
    ClientError::Status {
        method,
        url: url.to_string(),
        status,
        body,
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    url: &Url,
    response: reqwest::Response,
) -> Result<T> {
    let mut response = response;
    let mut bytes = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|err| ClientError::BadResponse {
                url: url.to_string(),
                detail: format!("cannot read the body: {err}"),
            })?;
        let Some(chunk) = chunk else { break };
        if bytes.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(ClientError::BadResponse {
                url: url.to_string(),
                detail: format!("the answer is larger than {MAX_PAGE_BYTES} bytes"),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|err| ClientError::BadResponse {
        url: url.to_string(),
        detail: err.to_string(),
    })
}
