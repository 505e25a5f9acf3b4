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
use serde_json::json;

use crate::machine;
use crate::sink;

/// Which way the workload makes its spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `Logger::start_span` / `Span::start_span`, `log`, `end`.
    Manual,
    /// Three nested `#[traced]` functions.
    Traced,
}

impl Variant {
    /// The name used on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Manual => "manual",
            Variant::Traced => "traced",
        }
    }

    /// Parses [`as_str`](Variant::as_str) back.
    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "manual" => Some(Variant::Manual),
            "traced" => Some(Variant::Traced),
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

/// The figures of one run of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `manual` or `traced`.
    pub variant: String,
    /// Spans the workload made (`3 × trees`).
    pub spans: u64,
    /// Wall time of the loop that makes the spans, in seconds.
    pub loop_secs: f64,
    /// Application-thread wall time per span (loop time / spans), in µs.
    pub app_us_per_span: f64,
    /// Application-thread CPU time per span, in µs (less sensitive to a busy machine).
    pub app_cpu_us_per_span: f64,
    /// Wall time from the start of the loop until `flush()` returned, in seconds.
    pub e2e_secs: f64,
    /// Wall time of the final `flush()` alone, in seconds.
    pub flush_secs: f64,
    /// CPU time of the whole process (app and logger threads) from loop
    /// start to flush return, per span, in µs.
    pub process_cpu_us_per_span: f64,
    /// Distinct row ids of this run that the sink received.
    pub delivered: u64,
    /// `spans - delivered`.
    pub dropped: u64,
    /// `delivered / e2e_secs`.
    pub delivered_spans_per_sec: f64,
    /// `State::stats().dropped_queue_full` during the run (queue entries, not spans).
    pub sdk_dropped_queue_full: u64,
    /// `State::stats().queued` during the run (queue entries).
    pub sdk_queued: u64,
    /// `State::stats().delivered_rows` during the run (rows after merging).
    pub sdk_delivered_rows: u64,
    /// `State::stats().failed_rows` during the run.
    pub sdk_failed_rows: u64,
    /// `/logs3` request body bytes (SDK counter).
    pub bytes_sent: u64,
    /// `/logs3` requests (SDK counter).
    pub logs3_requests: u64,
    /// `/logs3` request body bytes the sink received.
    pub sink_bytes: u64,
    /// `/logs3` requests the sink received.
    pub sink_requests: u64,
    /// Rows the sink received, duplicates included.
    pub sink_rows: u64,
    /// Peak RSS of the process (VmHWM) after the run, in bytes.
    pub peak_rss_bytes: u64,
    /// RSS after the warm-up, before the timed part, in bytes.
    pub rss_before_bytes: u64,
    /// RSS when the loop ended, before the final flush, in bytes.
    pub rss_after_loop_bytes: u64,
    /// 1-minute load average when the run ended.
    pub loadavg_1m_end: f64,
}

/// Runs one variant in this process against the sink at `sink_url`:
/// warm-up span + flush (login, registration, `/version`), then the timed
/// workload and `flush()`.
pub fn run_variant(variant: Variant, sink_url: &str, spans: u64) -> Result<RunResult, String> {
    let trees = spans / 3;
    let made = trees * 3;
    // Default settings: only the credentials and the URL are given.
    let state = State::new(Config::from_env().api_key("bench-key").app_url(sink_url))
        .map_err(|e| e.to_string())?;
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

    let sink0 = sink::fetch_stats(sink_url).map_err(|e| format!("sink stats: {e}"))?;
    let sdk0 = state.stats();
    let rss_before = machine::rss_bytes();

    let cpu0 = machine::process_cpu_secs();
    let tcpu0 = machine::thread_cpu_secs();
    let t0 = Instant::now();
    match variant {
        Variant::Manual => {
            for i in 0..trees {
                manual_tree(&logger, i);
            }
        }
        Variant::Traced => {
            for i in 0..trees {
                black_box(l1(i));
            }
        }
    }
    let loop_secs = t0.elapsed().as_secs_f64();
    let tcpu = machine::thread_cpu_secs() - tcpu0;
    let rss_after_loop = machine::rss_bytes();
    let tf = Instant::now();
    state.flush().map_err(|e| format!("flush: {e}"))?;
    let flush_secs = tf.elapsed().as_secs_f64();
    let e2e_secs = t0.elapsed().as_secs_f64();
    let cpu = machine::process_cpu_secs() - cpu0;

    let sink1 = sink::fetch_stats(sink_url).map_err(|e| format!("sink stats: {e}"))?;
    let sdk1 = state.stats();
    let delivered = sink1.distinct_ids - sink0.distinct_ids;
    Ok(RunResult {
        variant: variant.as_str().into(),
        spans: made,
        loop_secs,
        app_us_per_span: loop_secs * 1e6 / made as f64,
        app_cpu_us_per_span: tcpu * 1e6 / made as f64,
        e2e_secs,
        flush_secs,
        process_cpu_us_per_span: cpu * 1e6 / made as f64,
        delivered,
        dropped: made.saturating_sub(delivered),
        delivered_spans_per_sec: delivered as f64 / e2e_secs,
        sdk_dropped_queue_full: sdk1.dropped_queue_full - sdk0.dropped_queue_full,
        sdk_queued: (sdk1.logged - sdk1.dropped_queue_full)
            - (sdk0.logged - sdk0.dropped_queue_full),
        sdk_delivered_rows: sdk1.delivered_rows - sdk0.delivered_rows,
        sdk_failed_rows: sdk1.failed_rows - sdk0.failed_rows,
        bytes_sent: sdk1.bytes_sent - sdk0.bytes_sent,
        logs3_requests: sdk1.requests - sdk0.requests,
        sink_bytes: sink1.logs3_bytes - sink0.logs3_bytes,
        sink_requests: sink1.logs3_requests - sink0.logs3_requests,
        sink_rows: sink1.rows - sink0.rows,
        peak_rss_bytes: machine::peak_rss_bytes(),
        rss_before_bytes: rss_before,
        rss_after_loop_bytes: rss_after_loop,
        loadavg_1m_end: machine::loadavg()[0],
    })
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
        for v in [Variant::Manual, Variant::Traced] {
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
        for v in [Variant::Manual, Variant::Traced] {
            let r = run_variant(v, &sink.url(), 30).unwrap();
            assert_eq!(r.spans, 30);
            assert_eq!(r.delivered, 30, "{r:?}");
            assert_eq!(r.dropped, 0);
            assert!(r.logs3_requests >= 1);
        }
        braintrust::set_current_logger(None);
    }
}
