//! The issue-9 workload and the disabled-overhead probe.
//!
//! The workload is fixed so figures compare with the other SDKs: `spans / 3`
//! trees of depth 3 (`l1` → `l2` → `l3`); every span logs input `{"i": i}`
//! and output `{"ok": i}`. The manual variant gives the input with the span's
//! start and logs the output just before ending it, which is what the
//! `#[traced]` variant does too (input captured from the argument `i`, output
//! captured from the returned value).

use std::hint::black_box;
use std::time::Instant;

use braintrust::{init_logger, Config, Event, Logger, LoggerOptions, SpanArgs, State};
use serde::Serialize;
use serde_json::{json, Value};

use crate::machine;
use crate::sink;

/// Which way the workload makes its spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `Logger::start_span` / `Span::start_span`, `log`, `end`.
    Manual,
    /// Three nested `#[traced]` functions.
    Traced,
    /// Flat spans with a 10 KB input and 50-key metadata, built per span
    /// by cloning a template (what a caller that keeps its value does).
    Big,
    /// The same spans with the caller's values shared, not copied
    /// (`Event::input_shared`, `Event::metadata_shared`).
    BigShared,
}

impl Variant {
    /// The name used on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Manual => "manual",
            Variant::Traced => "traced",
            Variant::Big => "big",
            Variant::BigShared => "big_shared",
        }
    }

    /// Parses [`as_str`](Variant::as_str) back.
    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "manual" => Some(Variant::Manual),
            "traced" => Some(Variant::Traced),
            "big" => Some(Variant::Big),
            "big_shared" => Some(Variant::BigShared),
            _ => None,
        }
    }
}

/// The output every span of the workload returns / logs: `{"ok": i}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Out {
    /// The tree index.
    pub ok: u64,
}

/// Level 3 of a traced tree.
#[braintrust::traced]
pub fn l3(i: u64) -> Out {
    Out { ok: i }
}

/// Level 2 of a traced tree.
#[braintrust::traced]
pub fn l2(i: u64) -> Out {
    black_box(l3(i));
    Out { ok: i }
}

/// Level 1 (the root) of a traced tree.
#[braintrust::traced]
pub fn l1(i: u64) -> Out {
    black_box(l2(i));
    Out { ok: i }
}

/// One manual tree: the same spans, names, input and output as [`l1`].
#[inline]
pub fn manual_tree(logger: &Logger, i: u64) {
    let s1 = logger.start_span(
        SpanArgs::new()
            .name("l1")
            .event(Event::new().input(json!({ "i": i }))),
    );
    let s2 = s1.start_span(
        SpanArgs::new()
            .name("l2")
            .event(Event::new().input(json!({ "i": i }))),
    );
    let s3 = s2.start_span(
        SpanArgs::new()
            .name("l3")
            .event(Event::new().input(json!({ "i": i }))),
    );
    let _ = s3.log(Event::new().output(json!({ "ok": i })));
    s3.end();
    let _ = s2.log(Event::new().output(json!({ "ok": i })));
    s2.end();
    let _ = s1.log(Event::new().output(json!({ "ok": i })));
    s1.end();
}

/// The big payload: a 10 KB text input and 50 metadata keys.
pub fn big_payload() -> (Value, Value) {
    let text: String = "lorem ipsum dolor sit amet, ".repeat(366)[..10_240].to_string();
    let input = json!({ "messages": [{ "role": "user", "content": text }] });
    let meta: serde_json::Map<String, Value> = (0..50)
        .map(|k| (format!("key_{k}"), json!(format!("value number {k}"))))
        .collect();
    (input, Value::Object(meta))
}

/// One big span: the caller's values cloned into the event.
#[inline]
pub fn big_span(logger: &Logger, input: &Value, meta: &Value, i: u64) {
    let s = logger.start_span(
        SpanArgs::new()
            .name("big")
            .event(Event::new().input(input.clone()).metadata(meta.clone())),
    );
    let _ = s.log(Event::new().output(json!({ "ok": i })));
    s.end();
}

/// One big span with the caller's input and metadata shared (no copy).
#[inline]
pub fn big_shared_span(
    logger: &Logger,
    input: &std::sync::Arc<Value>,
    meta: &std::sync::Arc<serde_json::Map<String, Value>>,
    i: u64,
) {
    let s = logger.start_span(
        SpanArgs::new().name("big").event(
            Event::new()
                .input_shared(input.clone())
                .metadata_shared(meta.clone()),
        ),
    );
    let _ = s.log(Event::new().output(json!({ "ok": i })));
    s.end();
}

/// How a run is set up besides the variant.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The variant.
    pub variant: Variant,
    /// Spans to make (trees of three for manual and traced).
    pub spans: u64,
    /// Producer threads (the spans are split between them).
    pub producers: usize,
    /// `BRAINTRUST_QUEUE_SIZE`, when not the default.
    pub queue_size: Option<usize>,
}

/// The figures of one run, under the keys of the official SDKs' benchmark
/// (`app_us_per_span`, `e2e_s`, `flush_wait_s`, `delivered`, `dropped`,
/// `delivered_spans_per_s`, `bytes_sent`, `logs3_requests`, `peak_rss_mb`)
/// plus more.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `manual`, `traced` or `big`.
    pub variant: String,
    /// Producer threads.
    pub producers: usize,
    /// Spans the workload made.
    pub spans: u64,
    /// Wall time of the loop that makes the spans, in seconds.
    pub loop_s: f64,
    /// Application-thread wall time per span (loop time / spans per
    /// producer), in µs.
    pub app_us_per_span: f64,
    /// Application-thread CPU time per span, in µs (less sensitive to a
    /// busy machine; the first producer's).
    pub app_cpu_us_per_span: f64,
    /// Wall time from the start of the loop until `flush()` returned, in seconds.
    pub e2e_s: f64,
    /// Wall time of the final `flush()` alone, in seconds.
    pub flush_wait_s: f64,
    /// CPU time of the whole process (app and logger threads) from loop
    /// start to flush return, per span, in µs.
    pub process_cpu_us_per_span: f64,
    /// Distinct row ids of this run that the sink received.
    pub delivered: u64,
    /// `spans - delivered`.
    pub dropped: u64,
    /// `delivered / e2e_s`.
    pub delivered_spans_per_s: f64,
    /// `State::stats().dropped_queue_full` during the run (queue entries).
    pub sdk_dropped_queue_full: u64,
    /// `State::stats().delivered_rows` during the run.
    pub sdk_delivered_rows: u64,
    /// `State::stats().rows_written_by_callers` during the run: rows the
    /// application thread wrote itself because the logger thread was behind.
    pub sdk_rows_written_by_callers: u64,
    /// `/logs3` request body bytes (SDK counter).
    pub bytes_sent: u64,
    /// `/logs3` requests (SDK counter).
    pub logs3_requests: u64,
    /// `/logs3` request body bytes the sink received.
    pub sink_bytes: u64,
    /// Rows the sink received, duplicates included.
    pub sink_rows: u64,
    /// Peak RSS of the process (VmHWM) after the run, in MB.
    pub peak_rss_mb: f64,
    /// RSS after the warm-up, before the timed part, in MB.
    pub rss_before_mb: f64,
    /// What the final flush returned, when it was not `Ok`.
    pub flush_error: Option<String>,
    /// 1-minute load average when the run ended.
    pub loadavg_1m_end: f64,
}

fn logger_for(sink_url: &str, queue_size: Option<usize>) -> Result<(State, Logger), String> {
    // Default settings: only the credentials and the URL are given.
    let mut config = Config::from_env().api_key("bench-key").app_url(sink_url);
    if let Some(q) = queue_size {
        config = config.queue_size(q);
    }
    let state = State::new(config).map_err(|e| e.to_string())?;
    let logger = init_logger(
        LoggerOptions::new()
            .project("bench")
            .state(state.clone())
            .set_current(true),
    )
    .map_err(|e| e.to_string())?;
    // Warm-up: login, project registration and /version happen here.
    let warm = logger.start_span(SpanArgs::new().name("warmup"));
    let _ = warm.log(
        Event::new()
            .input(json!({"i": -1}))
            .output(json!({"ok": -1})),
    );
    warm.end();
    drop(warm);
    state.flush().map_err(|e| format!("warm-up flush: {e}"))?;
    Ok((state, logger))
}

/// Makes this producer's share of the spans; returns its thread CPU seconds.
fn produce(spec: &RunSpec, logger: &Logger, share: std::ops::Range<u64>) -> f64 {
    let tcpu0 = machine::thread_cpu_secs();
    match spec.variant {
        Variant::Manual => {
            for i in share {
                manual_tree(logger, i);
            }
        }
        Variant::Traced => {
            // `#[traced]` roots use the current logger.
            for i in share {
                black_box(l1(i));
            }
        }
        Variant::Big => {
            let (input, meta) = big_payload();
            for i in share {
                big_span(logger, &input, &meta, i);
            }
        }
        Variant::BigShared => {
            let (input, meta) = big_payload();
            let input = std::sync::Arc::new(input);
            let Value::Object(meta) = meta else {
                unreachable!("big_payload's metadata is an object")
            };
            let meta = std::sync::Arc::new(meta);
            for i in share {
                big_shared_span(logger, &input, &meta, i);
            }
        }
    }
    machine::thread_cpu_secs() - tcpu0
}

/// Runs one spec in this process against the sink at `sink_url`: warm-up
/// span + flush (login, registration, `/version`), then the timed workload
/// and `flush()`. A failed flush (rows lost) is a result, not an error.
pub fn run(spec: &RunSpec, sink_url: &str) -> Result<RunResult, String> {
    let per_unit = match spec.variant {
        Variant::Big | Variant::BigShared => 1,
        Variant::Manual | Variant::Traced => 3,
    };
    let units = spec.spans / per_unit;
    let made = units * per_unit;
    let producers = spec.producers.max(1) as u64;
    let (state, logger) = logger_for(sink_url, spec.queue_size)?;

    let sink0 = sink::fetch_stats(sink_url).map_err(|e| format!("sink stats: {e}"))?;
    let sdk0 = state.stats();
    let rss_before = machine::rss_bytes();

    let cpu0 = machine::process_cpu_secs();
    let t0 = Instant::now();
    let tcpu = if producers == 1 {
        produce(spec, &logger, 0..units)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..producers)
                .map(|p| {
                    let logger = logger.clone();
                    let share = units * p / producers..units * (p + 1) / producers;
                    s.spawn(move || produce(spec, &logger, share))
                })
                .collect();
            let cpus: Vec<f64> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0.0))
                .collect();
            cpus[0] * producers as f64
        })
    };
    let loop_s = t0.elapsed().as_secs_f64();
    let tf = Instant::now();
    let flush_error = state.flush().err().map(|e| e.to_string());
    let flush_wait_s = tf.elapsed().as_secs_f64();
    let e2e_s = t0.elapsed().as_secs_f64();
    let cpu = machine::process_cpu_secs() - cpu0;

    let sink1 = sink::fetch_stats(sink_url).map_err(|e| format!("sink stats: {e}"))?;
    let sdk1 = state.stats();
    let delivered = sink1.distinct_ids - sink0.distinct_ids;
    let per_producer = made as f64 / producers as f64;
    Ok(RunResult {
        variant: spec.variant.as_str().into(),
        producers: producers as usize,
        spans: made,
        loop_s,
        app_us_per_span: loop_s * 1e6 / per_producer,
        app_cpu_us_per_span: tcpu * 1e6 / made as f64,
        e2e_s,
        flush_wait_s,
        process_cpu_us_per_span: cpu * 1e6 / made as f64,
        delivered,
        dropped: made.saturating_sub(delivered),
        delivered_spans_per_s: delivered as f64 / e2e_s,
        sdk_dropped_queue_full: sdk1.dropped_queue_full - sdk0.dropped_queue_full,
        sdk_delivered_rows: sdk1.delivered_rows - sdk0.delivered_rows,
        sdk_rows_written_by_callers: sdk1.rows_written_by_callers - sdk0.rows_written_by_callers,
        bytes_sent: sdk1.bytes_sent - sdk0.bytes_sent,
        logs3_requests: sdk1.requests - sdk0.requests,
        sink_bytes: sink1.logs3_bytes - sink0.logs3_bytes,
        sink_rows: sink1.rows - sink0.rows,
        peak_rss_mb: machine::peak_rss_bytes() as f64 / 1e6,
        rss_before_mb: rss_before as f64 / 1e6,
        flush_error,
        loadavg_1m_end: machine::loadavg()[0],
    })
}

/// Memory figures that need no sink traffic.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    /// Heap bytes held per span waiting for the logger thread (the logger
    /// thread takes nothing until the final flush), payload included.
    pub pending_bytes_per_span: f64,
    /// Heap bytes of the workload's own values per span (`{"i": i}` and
    /// `{"ok": i}`), measured by holding them alone.
    pub payload_bytes_per_span: f64,
    /// `pending - payload`: what the SDK adds per waiting span.
    pub pending_overhead_bytes_per_span: f64,
    /// RSS growth from creating a backend with `BRAINTRUST_QUEUE_SIZE`
    /// 10,000,000 before anything is logged, in MB.
    pub idle_queue_1e7_rss_mb: f64,
}

fn heap_bytes() -> f64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as f64
}

/// Measures [`MemoryResult`] against the sink at `sink_url` (used for the
/// warm-up only).
pub fn memory(sink_url: &str, spans: u64) -> Result<MemoryResult, String> {
    let trees = spans / 3;
    let made = (trees * 3) as f64;
    let rss0 = machine::rss_bytes();
    let idle = State::new(
        Config::from_env()
            .api_key("bench-key")
            .app_url(sink_url)
            .queue_size(10_000_000),
    )
    .map_err(|e| e.to_string())?;
    let idle_rss = machine::rss_bytes().saturating_sub(rss0) as f64 / 1e6;
    drop(idle);

    // The payload alone: the same values, held.
    let h0 = heap_bytes();
    let values: Vec<(Value, Value)> = (0..trees * 3)
        .map(|i| (json!({ "i": i }), json!({ "ok": i })))
        .collect();
    let payload =
        (heap_bytes() - h0 - (values.capacity() * std::mem::size_of::<(Value, Value)>()) as f64)
            / made;
    drop(values);

    let held = State::new(
        Config::from_env()
            .api_key("bench-key")
            .app_url(sink_url)
            .queue_size(10_000_000)
            .sync_flush(true),
    )
    .map_err(|e| e.to_string())?;
    let held_logger = init_logger(LoggerOptions::new().project("bench").state(held.clone()))
        .map_err(|e| e.to_string())?;
    let h1 = heap_bytes();
    for i in 0..trees {
        manual_tree(&held_logger, i);
    }
    let pending = (heap_bytes() - h1) / made;
    let _ = held.flush();
    Ok(MemoryResult {
        pending_bytes_per_span: pending,
        payload_bytes_per_span: payload,
        pending_overhead_bytes_per_span: pending - payload,
        idle_queue_1e7_rss_mb: idle_rss,
    })
}

/// Allocations per span of the manual workload: in the whole process
/// (application and logger threads, loop and final flush) and on the
/// application thread alone. Needs the counting allocator installed.
#[derive(Debug, Clone, Serialize)]
pub struct AllocResult {
    /// The variant measured.
    pub variant: String,
    /// Allocations per span, whole process.
    pub process_allocs_per_span: f64,
    /// Allocations per span on the application thread.
    pub app_allocs_per_span: f64,
}

/// Measures [`AllocResult`] for `variant` against the sink at `sink_url`.
pub fn allocations(variant: Variant, sink_url: &str, spans: u64) -> Result<AllocResult, String> {
    use crate::alloc_count;
    let (state, logger) = logger_for(sink_url, None)?;
    let spec = RunSpec {
        variant,
        spans,
        producers: 1,
        queue_size: None,
    };
    let made = (spans / 3 * 3) as f64;
    alloc_count::enable(true);
    let (p0, t0) = (alloc_count::process_allocs(), alloc_count::thread_allocs());
    produce(&spec, &logger, 0..spans / 3);
    let app = alloc_count::thread_allocs() - t0;
    let _ = state.flush();
    let process = alloc_count::process_allocs() - p0;
    alloc_count::enable(false);
    Ok(AllocResult {
        variant: variant.as_str().into(),
        process_allocs_per_span: process as f64 / made,
        app_allocs_per_span: app as f64 / made,
    })
}

/// The floor: what one span costs at the least (two random ids, a
/// timestamp, a push onto a queue another thread drains), in ns per span.
pub fn floor_ns_per_span(spans: u64) -> f64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    let q = crossbeam_queue::SegQueue::<(u64, u128, f64, u64)>::new();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Acquire) || !q.is_empty() {
                if q.pop().is_none() {
                    std::hint::spin_loop();
                }
            }
        });
        let t = Instant::now();
        for i in 0..spans {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            q.push((fastrand::u64(..), fastrand::u128(..), now, i));
        }
        let ns = t.elapsed().as_secs_f64() * 1e9 / spans as f64;
        done.store(true, Ordering::Release);
        ns
    })
}

/// The big-payload workload's own cost with no logging: cloning the
/// caller's input and metadata and building the output, as `big_span` does
/// per span, then freeing them, in µs per span. The cloned variant cannot
/// cost the application thread less than this.
pub fn big_clone_us_per_span(spans: u64) -> f64 {
    let (input, meta) = big_payload();
    let t = Instant::now();
    for i in 0..spans {
        let values = (input.clone(), meta.clone(), json!({ "ok": i }));
        drop(black_box(values));
    }
    t.elapsed().as_secs_f64() * 1e6 / spans as f64
}

/// A trivial function, for the disabled-overhead baseline.
#[inline(never)]
pub fn plain_add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// The same function under `#[traced]`.
#[braintrust::traced]
#[inline(never)]
pub fn traced_add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// The disabled-overhead figures (no logger, no current span).
#[derive(Debug, Clone, Serialize)]
pub struct DisabledResult {
    /// Calls per measurement.
    pub calls: u64,
    /// ns per call of [`plain_add`] (median of the repetitions).
    pub plain_ns: f64,
    /// ns per call of [`traced_add`] (median of the repetitions).
    pub traced_ns: f64,
    /// `traced_ns - plain_ns`.
    pub overhead_ns: f64,
}

fn time_calls(calls: u64, f: fn(u64, u64) -> u64) -> f64 {
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..calls {
        acc = acc.wrapping_add(f(black_box(i), black_box(1)));
    }
    black_box(acc);
    t.elapsed().as_secs_f64() * 1e9 / calls as f64
}

/// Times `calls` calls of the plain and the traced function, alternating,
/// `reps` times each; returns the medians. Must run with tracing disabled.
pub fn disabled_overhead(calls: u64, reps: usize) -> DisabledResult {
    assert!(
        !braintrust::is_enabled(),
        "the disabled probe needs no logger and no current span"
    );
    // Warm up caches and the thread-local slot.
    time_calls(calls / 10 + 1, plain_add);
    time_calls(calls / 10 + 1, traced_add);
    let mut plain = Vec::with_capacity(reps);
    let mut traced = Vec::with_capacity(reps);
    for _ in 0..reps {
        plain.push(time_calls(calls, plain_add));
        traced.push(time_calls(calls, traced_add));
    }
    let plain_ns = machine::median(&plain);
    let traced_ns = machine::median(&traced);
    DisabledResult {
        calls,
        plain_ns,
        traced_ns,
        overhead_ns: traced_ns - plain_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_round_trip() {
        for v in [
            Variant::Manual,
            Variant::Traced,
            Variant::Big,
            Variant::BigShared,
        ] {
            assert_eq!(Variant::parse(v.as_str()), Some(v));
        }
        assert_eq!(Variant::parse("x"), None);
    }

    /// A small run of each variant end to end: every span arrives. (One
    /// test, so no other test's traced call lands in its logger.)
    #[test]
    fn small_runs_deliver_every_span() {
        // Disabled first: no logger yet.
        assert!(!braintrust::is_enabled());
        assert_eq!(traced_add(2, 3), plain_add(2, 3));
        assert_eq!(l1(4).ok, 4);
        let sink = sink::Sink::start().unwrap();
        for (v, producers) in [
            (Variant::Manual, 1),
            (Variant::Traced, 1),
            (Variant::Big, 1),
            (Variant::BigShared, 1),
            (Variant::Manual, 3),
        ] {
            let spec = RunSpec {
                variant: v,
                spans: 30,
                producers,
                queue_size: None,
            };
            let r = run(&spec, &sink.url()).unwrap();
            assert_eq!(r.spans, 30);
            assert_eq!(r.delivered, 30, "{r:?}");
            assert_eq!(r.dropped, 0);
            assert_eq!(r.flush_error, None);
            assert!(r.logs3_requests >= 1);
        }
        braintrust::set_current_logger(None);
    }
}
