//! The ingest path's CPU per request, stage by stage, on the benchmark's 2 KB form XML:
//! decode, build the envelope value, route with the embedded default rules, serialise, and
//! encode the spool record. `scripts/bench-ingest.sh` measures the whole server; this says
//! which stage to look at when it is slow.

mod common;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};

use ccrelay::decode::{self, Arrival, Input};
use ccrelay::rules::RuleSet;
use ccrelay::spool::Record;

// As in the binary: the allocator is a large part of this path's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FORM_XML: &[u8] = include_bytes!("../bench/form-2k.xml");

fn input() -> Input<'static> {
    common::form_input(FORM_XML)
}

fn arrival() -> Arrival {
    common::arrival(FORM_XML.len())
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
