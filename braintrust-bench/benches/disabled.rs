//! Disabled overhead: a trivial function under `#[traced]` with no logger and
//! no current span, against the same function plain and under
//! `tracing::instrument` with no subscriber.
//!
//! `cargo bench -p braintrust-bench --bench disabled`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

#[inline(never)]
fn plain(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[braintrust::traced]
#[inline(never)]
fn traced(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[tracing::instrument]
#[inline(never)]
fn instrumented(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

fn disabled(c: &mut Criterion) {
    assert!(!braintrust::is_enabled());
    let mut g = c.benchmark_group("disabled");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("plain_call", |b| {
        b.iter(|| plain(black_box(1), black_box(2)))
    });
    g.bench_function("braintrust_traced", |b| {
        b.iter(|| traced(black_box(1), black_box(2)))
    });
    g.bench_function("tracing_instrument_no_subscriber", |b| {
        b.iter(|| instrumented(black_box(1), black_box(2)))
    });
    g.bench_function("braintrust_start_span_noop", |b| {
        b.iter(|| {
            let s = braintrust::start_span(braintrust::SpanArgs::new().name("x"));
            s.end();
            black_box(s)
        })
    });
    g.finish();
}

criterion_group!(benches, disabled);
criterion_main!(benches);
