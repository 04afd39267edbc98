//! The Data Forwarding API v0.5 as ccrelay serves it on the admin listener
//! (commcare-forwarding.md §7): `/a/{domain}/api/v0.5/data-forwarding/` and `.../{id}/`.
//!
//! Same resource, methods and statuses as HQ documented: list (tastypie `meta` + `objects`),
//! POST 201 with `Location`, GET one, PUT 204, DELETE 204, 404 for an unknown id. Callers
//! authenticate per domain from `control.api_keys`, with `Authorization: ApiKey user:key`,
//! Basic, or `?username=&api_key=` as HQ allowed; a key of another domain gets 403.
//! [`ApiError`]'s `IntoResponse` is the one place a status is chosen for this API; 4xx bodies
//! are `{code, detail}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use subtle::{Choice, ConstantTimeEq};

use super::registry::{Fields, Registration, Registry, RegistryError};
use super::resource::{
    self, Forwarder, ListMeta, ListPage, RepeaterType, is_domain_name, is_http_url,
};
use crate::config::ApiKeyGrant;
use crate::error::ErrorKind;
use crate::ingress::error::{code_of, status_of};

/// Largest request body: a forwarder is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Page size when the caller gives none (tastypie's default).
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page; `limit=0` (tastypie's "as many as allowed") gets this too.
pub const MAX_LIMIT: usize = 100;
/// HQ's Connection Settings URL limit.
pub const MAX_URL_CHARS: usize = 255;

#[derive(Clone)]
pub struct ControlState {
    pub registry: Arc<Registry>,
    pub api_keys: Arc<Vec<ApiKeyGrant>>,
}

/// The routes, with their state, ready to merge into the admin router.
pub fn router(state: ControlState) -> Router {
    let list = get(list_forwarders).post(create_forwarder);
    let detail = get(get_forwarder)
        .put(update_forwarder)
        .delete(delete_forwarder);
    Router::new()
        .route("/a/{domain}/api/v0.5/data-forwarding/", list.clone())
        .route("/a/{domain}/api/v0.5/data-forwarding", list)
        .route("/a/{domain}/api/v0.5/data-forwarding/{id}/", detail.clone())
        .route("/a/{domain}/api/v0.5/data-forwarding/{id}", detail)
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("these credentials are not valid for domain `{domain}`")]
    Forbidden { domain: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("no such forwarder")]
    NotFound,
    #[error(transparent)]
    Registry(RegistryError),
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> ApiError {
        match err {
            RegistryError::NotFound { .. } => ApiError::NotFound,
            other => ApiError::Registry(other),
        }
    }
}

impl ApiError {
    fn status(&self) -> (StatusCode, &'static str) {
        let kind = match self {
            ApiError::Unauthorized(_) => return (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => return (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => ErrorKind::BadRequest,
            ApiError::TooLarge => ErrorKind::PayloadTooLarge,
            ApiError::NotFound => ErrorKind::NotFound,
            ApiError::Registry(err) => err.kind(),
        };
        (status_of(kind), code_of(kind))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let detail = if status.is_server_error() {
            tracing::error!(error = %self, "data forwarding API request failed");
            "the registration could not be saved; try again later".to_owned()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            axum::Json(json!({ "code": code, "detail": detail })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey, Basic realm=\"ccrelay\""),
            );
        }
        response
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// The caller's username and key, from the header or the query string.
fn credentials(headers: &HeaderMap, query: Option<&str>) -> ApiResult<(String, String)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed credentials"))?;
        let (scheme, rest) = value
            .split_once(' ')
            .ok_or(ApiError::Unauthorized("malformed credentials"))?;
        let pair = if scheme.eq_ignore_ascii_case("apikey") {
            rest.trim().to_owned()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = BASE64
                .decode(rest.trim())
                .map_err(|_| ApiError::Unauthorized("malformed credentials"))?;
            String::from_utf8(decoded)
                .map_err(|_| ApiError::Unauthorized("malformed credentials"))?
        } else {
            return Err(ApiError::Unauthorized(
                "expected `ApiKey username:key` or Basic credentials",
            ));
        };
        let (username, key) = pair
            .split_once(':')
            .ok_or(ApiError::Unauthorized("malformed credentials"))?;
        return Ok((username.to_owned(), key.to_owned()));
    }
    let (mut username, mut key) = (None, None);
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "username" => username = Some(value.into_owned()),
            "api_key" => key = Some(value.into_owned()),
            _ => {}
        }
    }
    match (username, key) {
        (Some(username), Some(key)) => Ok((username, key)),
        _ => Err(ApiError::Unauthorized("missing credentials")),
    }
}

/// Every grant is compared, in constant time, so timing tells nothing about which matched.
fn authorize(
    grants: &[ApiKeyGrant],
    domain: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> ApiResult<()> {
    let (username, key) = credentials(headers, query)?;
    let (mut here, mut elsewhere) = (Choice::from(0), Choice::from(0));
    for grant in grants {
        let matched = grant.username.as_bytes().ct_eq(username.as_bytes())
            & grant.key.expose().as_bytes().ct_eq(key.as_bytes());
        if grant.domain == domain {
            here |= matched;
        } else {
            elsewhere |= matched;
        }
    }
    if bool::from(here) {
        Ok(())
    } else if bool::from(elsewhere) {
        Err(ApiError::Forbidden {
            domain: domain.to_owned(),
        })
    } else {
        Err(ApiError::Unauthorized("wrong credentials"))
    }
}

/// Checks the caller and that `domain` could be a project space name (else 404).
fn admit(
    state: &ControlState,
    domain: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> ApiResult<()> {
    authorize(&state.api_keys, domain, headers, query)?;
    if is_domain_name(domain) {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

fn to_wire(registration: &Registration) -> Forwarder {
    Forwarder {
        id: registration.id.clone(),
        repeater_type: registration.repeater_type.as_str().to_owned(),
        domain: registration.domain.clone(),
        url: registration.url.clone(),
        version: registration.version.clone(),
        resource_uri: resource::detail_path(&registration.domain, &registration.id),
    }
}

/// `limit` and `offset` from the query; `format` other than json is refused.
fn paging(query: Option<&str>) -> ApiResult<(usize, usize)> {
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let number = || {
            value.parse::<usize>().map_err(|_| {
                ApiError::BadRequest(format!("`{name}` must be a whole number, not `{value}`"))
            })
        };
        match name.as_ref() {
            "limit" => limit = number()?,
            "offset" => offset = number()?,
            "format" if value != "json" => {
                return Err(ApiError::BadRequest(
                    "only `format=json` is served".to_owned(),
                ));
            }
            _ => {}
        }
    }
    if limit == 0 || limit > MAX_LIMIT {
        limit = MAX_LIMIT;
    }
    Ok((limit, offset))
}

fn page_url(domain: &str, limit: usize, offset: usize) -> String {
    format!(
        "{}?limit={limit}&offset={offset}",
        resource::list_path(domain)
    )
}

async fn list_forwarders(
    State(state): State<ControlState>,
    Path(domain): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    admit(&state, &domain, &headers, query.as_deref())?;
    let (limit, offset) = paging(query.as_deref())?;
    let (registrations, total) = state.registry.page(&domain, offset, limit);
    let next =
        (offset.saturating_add(limit) < total).then(|| page_url(&domain, limit, offset + limit));
    let previous = (offset > 0).then(|| page_url(&domain, limit, offset.saturating_sub(limit)));
    let page = ListPage {
        meta: ListMeta {
            limit: limit as u64,
            offset: offset as u64,
            next,
            previous,
            total_count: total as u64,
        },
        objects: registrations.iter().map(to_wire).collect(),
    };
    Ok(axum::Json(page).into_response())
}

async fn create_forwarder(
    State(state): State<ControlState>,
    Path(domain): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    admit(&state, &domain, &headers, query.as_deref())?;
    let fields = read_fields(&domain, None, body).await?;
    let registry = Arc::clone(&state.registry);
    let create_domain = domain.clone();
    let created = tokio::task::spawn_blocking(move || registry.create(&create_domain, fields))
        .await
        .expect("saving a registration does not panic")?;
    tracing::info!(domain = %domain, id = %created.id, repeater_type = %created.repeater_type, url = %created.url, "forwarder registered");
    let location = resource::detail_path(&domain, &created.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

async fn get_forwarder(
    State(state): State<ControlState>,
    Path((domain, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    admit(&state, &domain, &headers, query.as_deref())?;
    let registration = state.registry.get(&domain, &id).ok_or(ApiError::NotFound)?;
    Ok(axum::Json(to_wire(&registration)).into_response())
}

async fn update_forwarder(
    State(state): State<ControlState>,
    Path((domain, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    admit(&state, &domain, &headers, query.as_deref())?;
    if state.registry.get(&domain, &id).is_none() {
        return Err(ApiError::NotFound);
    }
    let fields = read_fields(&domain, Some(&id), body).await?;
    let registry = Arc::clone(&state.registry);
    let (update_domain, update_id) = (domain.clone(), id.clone());
    let updated =
        tokio::task::spawn_blocking(move || registry.update(&update_domain, &update_id, fields))
            .await
            .expect("saving a registration does not panic")?;
    tracing::info!(domain = %domain, id = %id, repeater_type = %updated.repeater_type, url = %updated.url, "forwarder updated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_forwarder(
    State(state): State<ControlState>,
    Path((domain, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    admit(&state, &domain, &headers, query.as_deref())?;
    let registry = Arc::clone(&state.registry);
    let (delete_domain, delete_id) = (domain.clone(), id.clone());
    tokio::task::spawn_blocking(move || registry.delete(&delete_domain, &delete_id))
        .await
        .expect("saving the registrations does not panic")?;
    tracing::info!(domain = %domain, id = %id, "forwarder deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Reads a create or update body under the size limit and checks it.
async fn read_fields(domain: &str, id: Option<&str>, body: Body) -> ApiResult<Fields> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::BadRequest(format!("the body is not JSON: {err}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object with `type` and `url`".to_owned(),
        ));
    };
    fields_from(domain, id, &object)
}

/// The fields of a create (`id` None) or update body. Pure, so it is tested directly.
fn fields_from(domain: &str, id: Option<&str>, object: &Map<String, Value>) -> ApiResult<Fields> {
    const KNOWN: [&str; 6] = ["type", "url", "domain", "version", "id", "resource_uri"];
    if let Some(unknown) = object.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown field `{unknown}`; expected type, url, domain, version"
        )));
    }
    let text = |name: &str| -> ApiResult<Option<&str>> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ApiError::BadRequest(format!("`{name}` must be a string"))),
        }
    };
    let type_name =
        text("type")?.ok_or_else(|| ApiError::BadRequest("missing field `type`".to_owned()))?;
    let repeater_type = RepeaterType::parse(type_name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown type `{type_name}`; expected one of: {}",
            served_types().join(", ")
        ))
    })?;
    if !repeater_type.is_served() {
        return Err(ApiError::BadRequest(format!(
            "type `{type_name}` is not served: HQ forwards a case's full state, so ccrelay \
             cannot tell a creation from an update; use CaseRepeater"
        )));
    }
    let url = text("url")?.ok_or_else(|| ApiError::BadRequest("missing field `url`".to_owned()))?;
    let valid_url = url.chars().count() <= MAX_URL_CHARS
        && !url.contains(|c: char| c == '{' || c == '}' || c.is_whitespace())
        && is_http_url(url);
    if !valid_url {
        return Err(ApiError::BadRequest(format!(
            "`url` must be an http or https URL of at most {MAX_URL_CHARS} characters, without spaces or braces"
        )));
    }
    if let Some(body_domain) = text("domain")? {
        if body_domain != domain {
            return Err(ApiError::BadRequest(format!(
                "`domain` is `{body_domain}` but the URL is for `{domain}`"
            )));
        }
    }
    if let (Some(path_id), Some(body_id)) = (id, text("id")?) {
        if path_id != body_id {
            return Err(ApiError::BadRequest(format!(
                "`id` is `{body_id}` but the URL is for `{path_id}`"
            )));
        }
    }
    let version = match object.get("version") {
        None => repeater_type.default_version().map(str::to_owned),
        Some(_) => text("version")?.map(str::to_owned),
    };
    Ok(Fields {
        repeater_type,
        url: url.to_owned(),
        version,
    })
}

/// The types this API accepts.
fn served_types() -> Vec<&'static str> {
    RepeaterType::ALL
        .into_iter()
        .filter(|repeater| repeater.is_served())
        .map(RepeaterType::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn check_fields(body: Value, expected: Result<(&str, &str, Option<&str>), &str>) {
        let Value::Object(object) = body else {
            panic!("test bodies are objects")
        };
        let got = fields_from("d", Some("1"), &object)
            .map(|fields| (fields.repeater_type.as_str(), fields.url, fields.version))
            .map_err(|err| err.to_string());
        let expected = expected
            .map(|(repeater, url, version)| (repeater, url.to_owned(), version.map(str::to_owned)))
            .map_err(str::to_owned);
        assert_eq!(got, expected);
    }

    #[test]
    fn bodies_are_checked() {
        check_fields(
            json!({"type": "FormRepeater", "url": "https://x.org/f"}),
            Ok(("FormRepeater", "https://x.org/f", None)),
        );
        check_fields(
            json!({"type": "CaseRepeater", "url": "https://x.org/c", "domain": "d", "id": "1", "resource_uri": "/x"}),
            Ok(("CaseRepeater", "https://x.org/c", Some("2.0"))),
        );
        check_fields(
            json!({"type": "CaseRepeater", "url": "https://x.org/c", "version": null}),
            Ok(("CaseRepeater", "https://x.org/c", None)),
        );
        check_fields(
            json!({"type": "Form", "url": "https://x.org/f"}),
            Err(
                "unknown type `Form`; expected one of: FormRepeater, CaseRepeater, ShortFormRepeater, AppStructureRepeater, UserRepeater, LocationRepeater",
            ),
        );
        check_fields(
            json!({"type": "FormRepeater", "url": "ftp://x.org/f"}),
            Err(
                "`url` must be an http or https URL of at most 255 characters, without spaces or braces",
            ),
        );
        check_fields(
            json!({"type": "FormRepeater", "url": "https://x.org/f", "domain": "e"}),
            Err("`domain` is `e` but the URL is for `d`"),
        );
        check_fields(
            json!({"type": "FormRepeater", "url": "https://x.org/f", "id": "2"}),
            Err("`id` is `2` but the URL is for `1`"),
        );
        check_fields(
            json!({"type": "FormRepeater", "url": "https://x.org/f", "auth": "x"}),
            Err("unknown field `auth`; expected type, url, domain, version"),
        );
        check_fields(
            json!({"url": "https://x.org/f"}),
            Err("missing field `type`"),
        );
        check_fields(
            json!({"type": 3, "url": "https://x.org/f"}),
            Err("`type` must be a string"),
        );
    }

    fn grants() -> Vec<ApiKeyGrant> {
        vec![
            ApiKeyGrant {
                domain: "a".to_owned(),
                username: "ops".to_owned(),
                key: Secret::new("key-a"),
            },
            ApiKeyGrant {
                domain: "b".to_owned(),
                username: "ops".to_owned(),
                key: Secret::new("key-b"),
            },
        ]
    }

    fn check_auth(header_value: Option<&str>, query: Option<&str>, expected: Result<(), &str>) {
        let mut headers = HeaderMap::new();
        if let Some(value) = header_value {
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        }
        let got = authorize(&grants(), "a", &headers, query).map_err(|err| err.to_string());
        assert_eq!(
            got,
            expected.map_err(str::to_owned),
            "{header_value:?} {query:?}"
        );
    }

    #[test]
    fn credentials_are_per_domain() {
        check_auth(Some("ApiKey ops:key-a"), None, Ok(()));
        check_auth(Some("apikey ops:key-a"), None, Ok(()));
        let basic = format!("Basic {}", BASE64.encode("ops:key-a"));
        check_auth(Some(&basic), None, Ok(()));
        check_auth(None, Some("username=ops&api_key=key-a"), Ok(()));
        check_auth(
            Some("ApiKey ops:key-b"),
            None,
            Err("these credentials are not valid for domain `a`"),
        );
        check_auth(Some("ApiKey ops:nope"), None, Err("wrong credentials"));
        check_auth(Some("ApiKey ops"), None, Err("malformed credentials"));
        check_auth(
            Some("Bearer t"),
            None,
            Err("expected `ApiKey username:key` or Basic credentials"),
        );
        check_auth(None, None, Err("missing credentials"));
    }

    #[test]
    fn paging_is_bounded() {
        assert_eq!(paging(None).expect("ok"), (20, 0));
        assert_eq!(paging(Some("limit=5&offset=10")).expect("ok"), (5, 10));
        assert_eq!(paging(Some("limit=100000")).expect("ok"), (MAX_LIMIT, 0));
        assert_eq!(paging(Some("limit=0")).expect("ok"), (MAX_LIMIT, 0));
        assert_eq!(
            paging(Some("offset=-1")).expect_err("bad").to_string(),
            "`offset` must be a whole number, not `-1`"
        );
        assert_eq!(
            paging(Some("format=xml")).expect_err("bad").to_string(),
            "only `format=json` is served"
        );
    }
}
