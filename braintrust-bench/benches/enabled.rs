//! Enabled spans, in one run so the ratios hold: a Braintrust span with and
//! without input/output capture, a `#[traced]` call, and an
//! `opentelemetry_sdk` span (batch processor, no-op exporter) with and
//! without attributes.
//!
//! Only the application thread's span work is timed. Spans are made in chunks
//! of [`CHUNK`]; after each chunk the pipeline is flushed outside the timed
//! part (Braintrust: `flush()` to the loopback sink; OpenTelemetry:
//! `force_flush()`), so neither queue ever fills and drops.
//!
//! Braintrust's state runs in `sync_flush` mode here: its logger thread does
//! the rows' work (JSON, HTTP to the sink) during the untimed flush instead
//! of concurrently, as OpenTelemetry's batch thread has next to nothing to
//! do with a no-op exporter. On a 2-core machine a busy background thread
//! otherwise shows up as noise in the application thread's time. The full
//! pipeline, background work included, is what the `braintrust-bench`
//! binary measures end to end.
//!
//! `cargo bench -p braintrust-bench --bench enabled`

use std::hint::black_box;
use std::time::{Duration, Instant};

use braintrust::{init_logger, Config, Event, Logger, LoggerOptions, SpanArgs, State};
use braintrust_bench::sink::Sink;
use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use serde_json::json;

/// Spans per timed chunk.
const CHUNK: u64 = 5_000;

#[derive(Debug)]
struct NoopExporter;

impl SpanExporter for NoopExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        drop(batch);
        std::future::ready(Ok(()))
    }
}

/// Times `iters` calls of `op` in chunks, running `settle` untimed after each.
fn chunked(iters: u64, mut op: impl FnMut(u64), mut settle: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let t = Instant::now();
        for i in done..done + n {
            op(i);
        }
        total += t.elapsed();
        done += n;
        settle();
    }
    total
}

#[braintrust::traced]
#[inline(never)]
fn traced_fn(i: u64) -> u64 {
    i.wrapping_mul(3)
}

fn enabled(c: &mut Criterion) {
    let sink = Sink::start().expect("sink");
    let state = State::new(
        Config::from_env()
            .api_key("bench-key")
            .app_url(sink.url())
            .sync_flush(true),
    )
    .expect("state");
    let logger: Logger = init_logger(
        LoggerOptions::new()
            .project("bench")
            .state(state.clone())
            .set_current(true),
    )
    .expect("logger");
    // Login, registration and /version before measuring.
    logger.start_span(SpanArgs::new().name("warmup")).end();
    state.flush().expect("warm-up flush");

    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(NoopExporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(16_384)
                        .build(),
                )
                .build(),
        )
        .build();
    let tracer = provider.tracer("bench");

    let mut g = c.benchmark_group("enabled");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);

    let flush = || state.flush().expect("flush");
    g.bench_function("braintrust_span", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |_| {
                    let s = logger.start_span(SpanArgs::new().name("span"));
                    s.end();
                },
                flush,
            )
        })
    });
    g.bench_function("braintrust_span_input_output", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |i| {
                    let s = logger.start_span(
                        SpanArgs::new()
                            .name("span")
                            .event(Event::new().input(json!({ "i": i }))),
                    );
                    let _ = s.log(Event::new().output(json!({ "ok": i })));
                    s.end();
                },
                flush,
            )
        })
    });
    g.bench_function("braintrust_traced_fn_input_output", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |i| {
                    black_box(traced_fn(black_box(i)));
                },
                flush,
            )
        })
    });
    let otel_flush = || {
        let _ = provider.force_flush();
    };
    g.bench_function("otel_span", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |_| {
                    let mut s = tracer.start("span");
                    s.end();
                },
                otel_flush,
            )
        })
    });
    g.bench_function("otel_span_attributes", |b| {
        b.iter_custom(|iters| {
            chunked(
                iters,
                |i| {
                    let mut s = tracer.start("span");
                    s.set_attribute(KeyValue::new("input.i", i as i64));
                    s.set_attribute(KeyValue::new("output.ok", i as i64));
                    s.end();
                },
                otel_flush,
            )
        })
    });
    g.finish();
    let st = state.stats();
    assert_eq!(
        st.dropped_queue_full, 0,
        "the queue dropped entries: {st:?}"
    );
    let _ = provider.shutdown();
}

criterion_group!(benches, enabled);
criterion_main!(benches);
