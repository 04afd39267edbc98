//! What the benchmarks share: a body decoded as ingress would, with the request facts ingress
//! adds.

use serde_json::Map;

use ccrelay::decode::{Arrival, Input};

/// A form XML body as HQ forwards it.
pub fn form_input(body: &[u8]) -> Input<'_> {
    Input {
        body,
        content_type: Some("text/xml"),
        received_on: Some("2024-05-02T06:14:09.482113Z"),
        ..Input::default()
    }
}

/// What ingress knows of a request carrying `body_bytes`.
pub fn arrival(body_bytes: usize) -> Arrival {
    let mut query = Map::new();
    query.insert("app_id".into(), "c0ffee00c0ffee00c0ffee00c0ffee00".into());
    Arrival {
        id: "0190a000-0000-7000-8000-000000000001".into(),
        received_at: "2024-05-02T06:14:10.120431Z".into(),
        source: "kisumu-forms".into(),
        source_domain: Some("demo-project".into()),
        method: "POST".into(),
        content_type: Some("text/xml".into()),
        query,
        headers: Map::new(),
        body_bytes: body_bytes as u64,
        traceparent: None,
    }
}
