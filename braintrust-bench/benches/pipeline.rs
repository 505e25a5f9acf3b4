//! The pieces of the pipeline: the queue under two-thread contention, the
//! logger thread's merge / serialize / batch of 10,000 rows, and slug encode /
//! decode.
//!
//! `cargo bench -p braintrust-bench --bench pipeline`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use braintrust::{init_logger, Config, Logger, LoggerOptions, SpanArgs, State};
use braintrust_bench::sink::Sink;
use braintrust_core::__internal::merge::{batch_partition, logs3_body, merge_row_batch, Row};
use braintrust_core::{ObjectType, SpanComponents};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use crossbeam_queue::ArrayQueue;
use serde_json::{json, Value};

/// Operations per thread per timed chunk (two threads: 2 × this fits the
/// default queue of 25,000 entries).
const CHUNK: u64 = 10_000;

/// Runs `op` `iters` times on each of `threads` threads at once, in chunks of
/// [`CHUNK`], with `settle` run untimed between chunks (by this thread, while
/// the workers wait). The threads are spawned once per sample, not per
/// chunk. Each chunk counts the slowest worker's time, so the figure is the
/// time per operation *per thread* under contention (throughput is
/// `threads / time`).
fn contended(
    threads: usize,
    iters: u64,
    op: &(impl Fn(u64) + Sync),
    settle: &mut impl FnMut(),
) -> Duration {
    let chunks = iters.div_ceil(CHUNK);
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    let elapsed: Vec<std::sync::Mutex<Duration>> = (0..threads)
        .map(|_| std::sync::Mutex::new(Duration::ZERO))
        .collect();
    let mut total = Duration::ZERO;
    std::thread::scope(|s| {
        for slot in &elapsed {
            let (start, end) = (&start, &end);
            s.spawn(move || {
                for c in 0..chunks {
                    let first = c * CHUNK;
                    let n = CHUNK.min(iters - first);
                    start.wait();
                    let t = Instant::now();
                    for i in first..first + n {
                        op(i);
                    }
                    *slot.lock().unwrap() = t.elapsed();
                    end.wait();
                }
            });
        }
        for _ in 0..chunks {
            start.wait();
            end.wait();
            total += elapsed.iter().map(|e| *e.lock().unwrap()).max().unwrap();
            settle();
        }
    });
    total
}

fn enqueue(c: &mut Criterion) {
    let sink = Sink::start().expect("sink");
    let state =
        State::new(Config::from_env().api_key("bench-key").app_url(sink.url())).expect("state");
    let logger: Logger = init_logger(
        LoggerOptions::new()
            .project("bench")
            .state(state.clone())
            .set_current(false),
    )
    .expect("logger");
    logger.start_span(SpanArgs::new().name("warmup")).end();
    state.flush().expect("warm-up flush");

    let mut g = c.benchmark_group("enqueue");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);

    // The SDK path: a span started and ended is one queue entry.
    let span_op = |_: u64| {
        let s = logger.start_span(SpanArgs::new().name("span"));
        s.end();
    };
    let mut flush = || state.flush().expect("flush");
    for threads in [1, 2] {
        g.bench_function(format!("braintrust_span_{threads}_threads"), |b| {
            b.iter_custom(|iters| contended(threads, iters, &span_op, &mut flush))
        });
    }

    // The bare mechanism State::enqueue uses: ArrayQueue push of an Arc,
    // a counter, and a tokio Notify (nobody waiting).
    let queue: ArrayQueue<Arc<u64>> = ArrayQueue::new(25_000);
    let queued = AtomicU64::new(0);
    let notify = tokio::sync::Notify::new();
    let item = Arc::new(7u64);
    let raw_op = |_: u64| {
        if queue.push(item.clone()).is_ok() {
            queued.fetch_add(1, Ordering::Relaxed);
            notify.notify_one();
        }
    };
    let mut drain = || while queue.pop().is_some() {};
    for threads in [1, 2] {
        g.bench_function(format!("arrayqueue_notify_{threads}_threads"), |b| {
            b.iter_custom(|iters| contended(threads, iters, &raw_op, &mut drain))
        });
    }
    g.finish();
    assert_eq!(state.stats().dropped_queue_full, 0);
}

/// 10,000 rows as the logger thread builds them for the workload's spans.
fn rows_10k(distinct: bool) -> Vec<Row> {
    let project = "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e";
    let mut rows = Vec::with_capacity(10_000);
    let n_ids = if distinct { 10_000 } else { 5_000 };
    for k in 0..n_ids {
        let id = format!("1b4e28ba-2fa1-41d2-883f-{k:012x}");
        let start = json!({
            "id": id,
            "span_id": format!("{:016x}", k + 1),
            "root_span_id": format!("{:032x}", k / 3 + 1),
            "span_parents": if k % 3 == 0 { Value::Null } else { json!([format!("{:016x}", k)]) },
            "_is_merge": false,
            "created": "2026-01-01T00:00:00.123456+00:00",
            "metrics": {"start": 1767225600.123456},
            "span_attributes": {"name": "l2", "exec_counter": k},
            "context": {"caller_filename": "braintrust-bench/src/workload.rs", "caller_lineno": 80,
                        "span_origin": {"name": "braintrust.sdk.rust", "version": "0.1.0",
                                        "instrumentation": {"name": "braintrust-rust-logger"}}},
            "input": {"i": k},
            "project_id": project, "log_id": "g"
        });
        rows.push(start.as_object().unwrap().clone());
        if !distinct {
            let end = json!({
                "id": id, "span_id": format!("{:016x}", k + 1),
                "root_span_id": format!("{:032x}", k / 3 + 1),
                "_is_merge": true, "output": {"ok": k}, "metrics": {"end": 1767225600.2},
                "project_id": project, "log_id": "g"
            });
            rows.push(end.as_object().unwrap().clone());
        }
    }
    rows
}

fn merge_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows_10k");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    let distinct = rows_10k(true);
    let pairs = rows_10k(false);
    g.bench_function("merge_row_batch_distinct_ids", |b| {
        b.iter_batched(
            || distinct.clone(),
            |rows| merge_row_batch(rows).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("merge_row_batch_start_plus_merge_rows", |b| {
        b.iter_batched(
            || pairs.clone(),
            |rows| merge_row_batch(rows).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("serialize_rows", |b| {
        b.iter(|| {
            distinct
                .iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect::<Vec<_>>()
        })
    });
    let texts: Vec<String> = distinct
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let sizes: Vec<usize> = texts.iter().map(String::len).collect();
    g.bench_function("batch_partition", |b| {
        b.iter(|| batch_partition(black_box(&sizes), 100, 6 * 1024 * 1024))
    });
    g.bench_function("batch_partition_and_bodies", |b| {
        b.iter(|| {
            batch_partition(&sizes, 100, 6 * 1024 * 1024)
                .into_iter()
                .map(|idx| {
                    let refs: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
                    logs3_body(&refs)
                })
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

fn slug(c: &mut Criterion) {
    let mut g = c.benchmark_group("slug");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let comps = SpanComponents::new(
        ObjectType::ProjectLogs,
        "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e",
    )
    .with_row_ids(
        "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        "00f067aa0ba902b7",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    );
    let v4 = comps.to_v4_string();
    let v3 = comps.to_v3_string();
    g.bench_function("encode_v4", |b| b.iter(|| black_box(&comps).to_v4_string()));
    g.bench_function("decode_v4", |b| {
        b.iter(|| SpanComponents::parse(black_box(&v4)).unwrap())
    });
    g.bench_function("encode_v3", |b| b.iter(|| black_box(&comps).to_v3_string()));
    g.bench_function("decode_v3", |b| {
        b.iter(|| SpanComponents::parse(black_box(&v3)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, enqueue, merge_batch, slug);
criterion_main!(benches);
