//! A CommCare HQ stand-in: the Data Forwarding API v0.5 as commcare-forwarding.md §7 documents
//! it (tastypie pagination, `ApiKey` auth, domain-admin 403), with modes for a server that
//! removed the API (404) and one that throttles (429 + Retry-After), and forwarding as HQ does
//! it (§2: one POST per payload, its headers, retried on 5xx).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// The stand-in caps pages at this size, smaller than ccrelay asks for, so clients must
/// follow `meta.next`.
pub const MAX_PAGE: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredForwarder {
    pub id: String,
    pub repeater_type: String,
    pub domain: String,
    pub url: String,
}

#[derive(Default)]
struct Inner {
    forwarders: Vec<StoredForwarder>,
    next_id: u64,
    /// Answer 404 on every API path, as current HQ does.
    removed: bool,
    /// Answer this many requests 429 before serving again.
    throttle: u32,
    /// Every API request: method and path with query.
    requests: Vec<String>,
}

#[derive(Clone)]
pub struct HqStandin {
    pub addr: SocketAddr,
    username: String,
    api_key: String,
    /// The domains the user administers; others answer 403.
    admin_of: Vec<String>,
    inner: Arc<Mutex<Inner>>,
}

impl HqStandin {
    pub async fn start(username: &str, api_key: &str, admin_of: &[&str]) -> HqStandin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let standin = HqStandin {
            addr: listener.local_addr().expect("address"),
            username: username.to_owned(),
            api_key: api_key.to_owned(),
            admin_of: admin_of.iter().map(|domain| (*domain).to_owned()).collect(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/a/{domain}/api/v0.5/data-forwarding/",
                get(list).post(create),
            )
            .route(
                "/a/{domain}/api/v0.5/data-forwarding/{id}/",
                get(detail).put(update).delete(remove),
            )
            .with_state(standin.clone());
        // Runs until the test's runtime ends.
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stand-in serves");
        });
        standin
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_removed(&self, removed: bool) {
        self.lock().removed = removed;
    }

    pub fn throttle_next(&self, count: u32) {
        self.lock().throttle = count;
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    pub fn forwarders(&self, domain: &str) -> Vec<StoredForwarder> {
        self.lock()
            .forwarders
            .iter()
            .filter(|forwarder| forwarder.domain == domain)
            .cloned()
            .collect()
    }

    /// Adds a forwarder as if an operator had made it in HQ's UI.
    pub fn seed(&self, domain: &str, repeater_type: &str, url: &str) -> String {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = format!("{:032x}", inner.next_id);
        inner.forwarders.push(StoredForwarder {
            id: id.clone(),
            repeater_type: repeater_type.to_owned(),
            domain: domain.to_owned(),
            url: url.to_owned(),
        });
        id
    }

    /// Removes a forwarder as if an operator had deleted it in HQ's UI.
    pub fn unseed(&self, id: &str) {
        self.lock()
            .forwarders
            .retain(|forwarder| forwarder.id != id);
    }

    /// Sends one payload to every forwarder of `repeater_type` in `domain`, as HQ does: one
    /// POST each, with the payload header and the Connection Settings' Basic auth, retried up
    /// to 3 attempts on 5xx. Returns the final status of each.
    pub async fn forward(
        &self,
        domain: &str,
        repeater_type: &str,
        payload: &HqPayload<'_>,
        basic: (&str, &str),
    ) -> Vec<u16> {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for forwarder in self.forwarders(domain) {
            if forwarder.repeater_type != repeater_type {
                continue;
            }
            let mut status = 0;
            for _attempt in 0..3 {
                let response = client
                    .post(&forwarder.url)
                    .header(header::CONTENT_TYPE, payload.content_type)
                    .header(payload.header.0, payload.header.1)
                    .basic_auth(basic.0, Some(basic.1))
                    .body(payload.body.to_owned())
                    .send()
                    .await
                    .expect("the forwarder URL answers");
                status = response.status().as_u16();
                if status < 500 {
                    break;
                }
            }
            statuses.push(status);
        }
        statuses
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in lock")
    }

    /// Auth, removal and throttling, in HQ's order: the URL must exist before auth matters.
    /// `Some` is the refusal to answer.
    fn admit(&self, domain: &str, headers: &HeaderMap, request: String) -> Option<Response> {
        let mut inner = self.lock();
        inner.requests.push(request);
        if inner.removed {
            return Some((StatusCode::NOT_FOUND, "<h1>Not Found</h1>").into_response());
        }
        if inner.throttle > 0 {
            inner.throttle -= 1;
            return Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "slow down",
                )
                    .into_response(),
            );
        }
        let expected = format!("ApiKey {}:{}", self.username, self.api_key);
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        if given != Some(expected.as_str()) {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "not authorized"})),
                )
                    .into_response(),
            );
        }
        if !self.admin_of.iter().any(|admin| admin == domain) {
            return Some(StatusCode::FORBIDDEN.into_response());
        }
        None
    }
}

/// A payload as HQ forwards it.
pub struct HqPayload<'a> {
    pub body: &'a str,
    pub content_type: &'a str,
    /// `received-on` for forms, `server-modified-on` for cases.
    pub header: (&'a str, &'a str),
}

fn wire(forwarder: &StoredForwarder) -> Value {
    let version = if forwarder.repeater_type == "FormRepeater" {
        Value::Null
    } else {
        json!("2.0")
    };
    json!({
        "id": forwarder.id,
        "type": forwarder.repeater_type,
        "domain": forwarder.domain,
        "url": forwarder.url,
        "version": version,
        "resource_uri": format!("/a/{}/api/v0.5/data-forwarding/{}/", forwarder.domain, forwarder.id),
    })
}

async fn list(
    State(standin): State<HqStandin>,
    Path(domain): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = standin.admit(&domain, &headers, format!("GET list {domain} {query:?}"))
    {
        return response;
    }
    let limit = query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .unwrap_or(20usize)
        .min(MAX_PAGE);
    let offset: usize = query
        .get("offset")
        .and_then(|offset| offset.parse().ok())
        .unwrap_or(0);
    let all = standin.forwarders(&domain);
    let page_url = |offset: usize| {
        format!("/a/{domain}/api/v0.5/data-forwarding/?format=json&limit={limit}&offset={offset}")
    };
    let next = (offset + limit < all.len()).then(|| page_url(offset + limit));
    let previous = (offset > 0).then(|| page_url(offset.saturating_sub(limit)));
    let objects: Vec<Value> = all.iter().skip(offset).take(limit).map(wire).collect();
    axum::Json(json!({
        "meta": {"limit": limit, "offset": offset, "next": next, "previous": previous, "total_count": all.len()},
        "objects": objects,
    }))
    .into_response()
}

fn body_fields(body: &Value) -> Option<(String, String)> {
    Some((
        body.get("type")?.as_str()?.to_owned(),
        body.get("url")?.as_str()?.to_owned(),
    ))
}

async fn create(
    State(standin): State<HqStandin>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(response) = standin.admit(&domain, &headers, format!("POST {domain} {body}")) {
        return response;
    }
    let Some((repeater_type, url)) = body_fields(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let id = standin.seed(&domain, &repeater_type, &url);
    (
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/a/{domain}/api/v0.5/data-forwarding/{id}/"),
        )],
    )
        .into_response()
}

async fn detail(
    State(standin): State<HqStandin>,
    Path((domain, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = standin.admit(&domain, &headers, format!("GET {domain} {id}")) {
        return response;
    }
    match standin
        .forwarders(&domain)
        .into_iter()
        .find(|forwarder| forwarder.id == id)
    {
        Some(forwarder) => axum::Json(wire(&forwarder)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn update(
    State(standin): State<HqStandin>,
    Path((domain, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(response) = standin.admit(&domain, &headers, format!("PUT {domain} {id} {body}")) {
        return response;
    }
    let Some((repeater_type, url)) = body_fields(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut inner = standin.lock();
    match inner
        .forwarders
        .iter_mut()
        .find(|forwarder| forwarder.id == id && forwarder.domain == domain)
    {
        Some(forwarder) => {
            forwarder.repeater_type = repeater_type;
            forwarder.url = url;
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn remove(
    State(standin): State<HqStandin>,
    Path((domain, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = standin.admit(&domain, &headers, format!("DELETE {domain} {id}")) {
        return response;
    }
    let mut inner = standin.lock();
    let before = inner.forwarders.len();
    inner
        .forwarders
        .retain(|forwarder| !(forwarder.id == id && forwarder.domain == domain));
    if inner.forwarders.len() < before {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
