//! The ingest path's CPU per request, stage by stage, on the benchmark's 2 KB form XML:
//! decode, build the envelope value, route with the embedded default rules, serialise, and
//! encode the spool record. `scripts/bench-ingest.sh` measures the whole server; this says
//! which stage to look at when it is slow.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Map;

use ccrelay::decode::{self, Arrival, Input};
use ccrelay::rules::RuleSet;
use ccrelay::spool::Record;

// As in the binary: the allocator is a large part of this path's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FORM_XML: &[u8] = include_bytes!("../bench/form-2k.xml");

fn input() -> Input<'static> {
    Input {
        body: FORM_XML,
        content_type: Some("text/xml"),
        received_on: Some("2024-05-02T06:14:09.482113Z"),
        ..Input::default()
    }
}

fn arrival() -> Arrival {
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
        body_bytes: FORM_XML.len() as u64,
        traceparent: None,
    }
}

fn stages(c: &mut Criterion) {
    let rules = RuleSet::embedded_default();
    let body = Bytes::from_static(FORM_XML);
    c.bench_function("decode", |b| {
        b.iter(|| decode::decode(black_box(&input())).expect("decodes"))
    });
    let decoded = decode::decode(&input()).expect("decodes");
    c.bench_function("envelope value", |b| {
        b.iter_batched(
            || decoded.clone(),
            |decoded| decoded.into_envelope(arrival()).into_value(),
            criterion::BatchSize::SmallInput,
        )
    });
    let value = decoded.clone().into_envelope(arrival()).into_value();
    c.bench_function("route", |b| b.iter(|| rules.route(black_box(&value))));
    c.bench_function("serialise", |b| {
        b.iter(|| serde_json::to_vec(black_box(&value)).expect("serialises"))
    });
    let record = Record {
        routes: rules.route(&value),
        envelope: Bytes::from(serde_json::to_vec(&value).expect("serialises")),
        body: body.clone(),
    };
    c.bench_function("record encode", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            black_box(&record).encode_into(&mut out);
            out
        })
    });
    c.bench_function("whole path", |b| {
        b.iter(|| {
            let decoded = decode::decode(black_box(&input())).expect("decodes");
            let value = decoded.into_envelope(arrival()).into_value();
            let record = Record {
                routes: rules.route(&value),
                envelope: Bytes::from(serde_json::to_vec(&value).expect("serialises")),
                body: body.clone(),
            };
            let mut out = Vec::new();
            record.encode_into(&mut out);
            out
        })
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
