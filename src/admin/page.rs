//! The admin page: one static HTML file, a script and a style sheet, compiled into the binary
//! (no build step, nothing to deploy beside it). The script reads the admin JSON API
//! (`/readyz`, `/rules`, `/sources`, `/sinks`, `/dead-letters`) and posts replays.
//!
//! Everything the API returns is put into the page as text (`textContent`), never as HTML,
//! and the Content-Security-Policy allows only these files' own script and style, so a sink
//! error or rules-file message containing markup is shown, not run.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("page/index.html");
const ADMIN_JS: &str = include_str!("page/admin.js");
const ADMIN_CSS: &str = include_str!("page/admin.css");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub(super) async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /assets/admin.js`.
pub(super) async fn script() -> Response {
    asset(ADMIN_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/admin.css`.
pub(super) async fn style() -> Response {
    asset(ADMIN_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The files change only with the binary; no-cache keeps a page from an older version
    // from talking to a newer API after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
