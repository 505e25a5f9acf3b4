//! `braintrust-bench`: runs the workloads of issues 9 and 14 against a
//! loopback sink and prints one JSON line with every figure.
//!
//! ```text
//! cargo run --release -p braintrust-bench -- --spans 20001 --runs 3
//! ```
//!
//! The sink runs in this (parent) process. Every measurement runs in a fresh
//! child process of this binary, so each peak RSS is that run's own and no
//! run inherits another's warm state. Options:
//!
//! - `--spans N` (20001): spans per run of the main workload (`N / 3`
//!   trees of depth 3).
//! - `--runs R` (3): runs per variant of the main workload; medians.
//! - `--variants manual,traced` (both): the main workload's variants.
//! - `--disabled-calls N` (100000000): calls per disabled-overhead
//!   measurement (0 skips it).
//! - `--burst-spans N` (1000002): the burst at default settings (0 skips).
//! - `--big-spans N` (6000): spans with a 10 KB input and 50-key metadata
//!   (0 skips).
//! - `--scale-spans N` (200001): spans for 1 vs 8 producer threads (0 skips).
//! - `--no-extras`: only the main workload and the disabled probe.
//! - `--sink-check`: only measure the sink's ingest rate and exit.
//! - `--quiet`: no human-readable summary on stderr.
//! - `--serve-sink SECS`: only run the sink for SECS seconds, printing its
//!   URL (to profile a run by hand: `--child manual --sink URL --spans N`).

use std::process::{Command, Stdio};

use braintrust_bench::alloc_count::CountingAlloc;
use braintrust_bench::machine::{self, median, Machine};
use braintrust_bench::sink::Sink;
use braintrust_bench::workload::{self, RunSpec, Variant};
use serde_json::{json, Value};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const RESULT_PREFIX: &str = "BENCH_RESULT ";

struct Options {
    spans: u64,
    runs: usize,
    variants: Vec<Variant>,
    disabled_calls: u64,
    burst_spans: u64,
    big_spans: u64,
    scale_spans: u64,
    extras: bool,
    sink_check: bool,
    serve_sink: Option<u64>,
    quiet: bool,
    child: Option<String>,
    sink: Option<String>,
    producers: usize,
    queue_size: Option<usize>,
}

fn usage() -> ! {
    eprintln!(
        "usage: braintrust-bench [--spans N] [--runs R] [--variants manual,traced] \
         [--disabled-calls N] [--burst-spans N] [--big-spans N] [--scale-spans N] \
         [--no-extras] [--sink-check] [--quiet]"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut o = Options {
        spans: 20_001,
        runs: 3,
        variants: vec![Variant::Manual, Variant::Traced],
        disabled_calls: 100_000_000,
        burst_spans: 1_000_002,
        big_spans: 6_000,
        scale_spans: 200_001,
        extras: true,
        sink_check: false,
        serve_sink: None,
        quiet: false,
        child: None,
        sink: None,
        producers: 1,
        queue_size: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--spans" => o.spans = value().parse().unwrap_or_else(|_| usage()),
            "--runs" => o.runs = value().parse().unwrap_or_else(|_| usage()),
            "--variants" => {
                o.variants = value()
                    .split(',')
                    .map(|v| Variant::parse(v.trim()).unwrap_or_else(|| usage()))
                    .collect()
            }
            "--disabled-calls" => o.disabled_calls = value().parse().unwrap_or_else(|_| usage()),
            "--burst-spans" => o.burst_spans = value().parse().unwrap_or_else(|_| usage()),
            "--big-spans" => o.big_spans = value().parse().unwrap_or_else(|_| usage()),
            "--scale-spans" => o.scale_spans = value().parse().unwrap_or_else(|_| usage()),
            "--no-extras" => o.extras = false,
            "--sink-check" => o.sink_check = true,
            "--serve-sink" => o.serve_sink = Some(value().parse().unwrap_or_else(|_| usage())),
            "--quiet" => o.quiet = true,
            "--child" => o.child = Some(value()),
            "--sink" => o.sink = Some(value()),
            "--producers" => o.producers = value().parse().unwrap_or_else(|_| usage()),
            "--queue-size" => o.queue_size = Some(value().parse().unwrap_or_else(|_| usage())),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if o.runs == 0 || o.spans < 3 {
        usage();
    }
    o
}

fn main() {
    let o = parse_args();
    if let Some(kind) = &o.child {
        child_main(kind, &o);
        return;
    }
    if let Some(secs) = o.serve_sink {
        // For profiling a `--child` run by hand: a sink in its own process.
        let sink = Sink::start().expect("sink");
        println!("{}", sink.url());
        std::thread::sleep(std::time::Duration::from_secs(secs));
        eprintln!("{}", json!({ "sink": sink.stats() }));
        return;
    }
    if o.sink_check {
        let sink = Sink::start().expect("sink");
        let r = sink_check(&sink);
        println!("{r}");
        return;
    }
    parent_main(&o);
}

/// Runs one measurement in this process and prints it as a prefixed line.
fn child_main(kind: &str, o: &Options) {
    let sink = || o.sink.as_deref().unwrap_or_else(|| usage());
    let line = match kind {
        "disabled" => serde_json::to_value(workload::disabled_overhead(o.disabled_calls, 5)),
        "floor" => Ok(json!({
            "ns_per_span": workload::floor_ns_per_span(o.spans),
            "big_clone_us_per_span": workload::big_clone_us_per_span(6_000),
        })),
        "memory" => match workload::memory(sink(), o.spans) {
            Ok(r) => serde_json::to_value(r),
            Err(e) => fail(kind, &e),
        },
        "allocs" => {
            let r: Result<Vec<_>, String> = [Variant::Manual, Variant::Traced]
                .into_iter()
                .map(|v| workload::allocations(v, sink(), o.spans))
                .collect();
            match r {
                Ok(r) => serde_json::to_value(r),
                Err(e) => fail(kind, &e),
            }
        }
        _ => {
            let variant = Variant::parse(kind).unwrap_or_else(|| usage());
            let spec = RunSpec {
                variant,
                spans: o.spans,
                producers: o.producers,
                queue_size: o.queue_size,
            };
            match workload::run(&spec, sink()) {
                Ok(r) => serde_json::to_value(r),
                Err(e) => fail(kind, &e),
            }
        }
    };
    println!("{RESULT_PREFIX}{}", line.expect("serializable result"));
}

fn fail(kind: &str, e: &str) -> ! {
    eprintln!("braintrust-bench: {kind} run failed: {e}");
    std::process::exit(1);
}

/// One child run: its kind and arguments.
struct Child<'a> {
    kind: &'a str,
    spans: u64,
    producers: usize,
    queue_size: Option<usize>,
}

/// Runs a child in a fresh process and parses its result line.
fn spawn_child(c: &Child<'_>, o: &Options, sink_url: &str) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let mut args = vec![
        "--child".to_string(),
        c.kind.to_string(),
        "--sink".into(),
        sink_url.into(),
        "--spans".into(),
        c.spans.to_string(),
        "--producers".into(),
        c.producers.to_string(),
        "--disabled-calls".into(),
        o.disabled_calls.to_string(),
    ];
    if let Some(q) = c.queue_size {
        args.extend(["--queue-size".to_string(), q.to_string()]);
    }
    // The parent only serves the sink while a child runs, so its CPU time
    // over the run is the sink's: what the SDK's figures share the cores with.
    let sink_cpu0 = machine::process_cpu_secs();
    let out = Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(if o.quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .output()
        .expect("spawn child");
    if !out.status.success() {
        eprintln!(
            "braintrust-bench: child {} exited with {}",
            c.kind, out.status
        );
        std::process::exit(1);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .unwrap_or_else(|| {
            eprintln!(
                "braintrust-bench: child {} printed no result: {stdout}",
                c.kind
            );
            std::process::exit(1)
        });
    let mut result: Value = serde_json::from_str(line).expect("child result is JSON");
    add_cpu_budget(&mut result, machine::process_cpu_secs() - sink_cpu0);
    result
}

/// Adds the run's CPU budget to a timed child's result: the sink's CPU per
/// span (warm-up included), the SDK process's plus the sink's, and that sum
/// spread over the cores. The last is a floor under `e2e_s` per span (all
/// of that work is done by the end of the final flush, on cores the SDK
/// shares with the sink), so `cores / total` caps the delivered spans/s;
/// the application thread's time per span can only go below it by leaving
/// work queued for after its loop.
fn add_cpu_budget(result: &mut Value, sink_cpu_s: f64) {
    let (Some(spans), Some(process)) = (
        result["spans"].as_f64().filter(|s| *s > 0.0),
        result["process_cpu_us_per_span"].as_f64(),
    ) else {
        return;
    };
    let sink = sink_cpu_s * 1e6 / spans;
    let cores = Machine::detect().cores as f64;
    result["sink_cpu_us_per_span"] = json!(sink);
    result["total_cpu_us_per_span"] = json!(process + sink);
    result["cpu_floor_us_per_span"] = json!((process + sink) / cores);
}

/// Medians of every numeric field of the runs, plus the spread of the main ones.
fn summarize(runs: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(Value::Object(first)) = runs.first() {
        for (k, v) in first {
            if v.is_number() {
                let xs: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
                let m = median(&xs);
                let is_int = runs.iter().all(|r| r[k].is_u64());
                out.insert(
                    k.clone(),
                    if is_int && m.fract() == 0.0 {
                        json!(m as u64)
                    } else {
                        json!(round(m, 4))
                    },
                );
            } else if k == "variant" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for k in ["app_us_per_span", "e2e_s", "delivered", "peak_rss_mb"] {
        let xs: Vec<Value> = runs.iter().map(|r| r[k].clone()).collect();
        out.insert(format!("runs_{k}"), Value::Array(xs));
    }
    let errors: Vec<Value> = runs
        .iter()
        .filter_map(|r| r.get("flush_error").filter(|e| !e.is_null()).cloned())
        .collect();
    if !errors.is_empty() {
        out.insert("flush_errors".into(), Value::Array(errors));
    }
    Value::Object(out)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn say(o: &Options, label: &str, r: &Value) {
    if o.quiet {
        return;
    }
    eprintln!(
        "{label:<22} app {:>7.3} µs/span (cpu {:>7.3}; sdk+sink cpu {:>7.3}, per core {:>7.3}), e2e {:>7.3} s, delivered {}/{}, {:>9.0} spans/s, {} req, {:.1} MB peak RSS, load {:.2}",
        r["app_us_per_span"].as_f64().unwrap_or(0.0),
        r["app_cpu_us_per_span"].as_f64().unwrap_or(0.0),
        r["total_cpu_us_per_span"].as_f64().unwrap_or(0.0),
        r["cpu_floor_us_per_span"].as_f64().unwrap_or(0.0),
        r["e2e_s"].as_f64().unwrap_or(0.0),
        r["delivered"],
        r["spans"],
        r["delivered_spans_per_s"].as_f64().unwrap_or(0.0),
        r["logs3_requests"],
        r["peak_rss_mb"].as_f64().unwrap_or(0.0),
        r["loadavg_1m_end"].as_f64().unwrap_or(0.0),
    );
}

fn parent_main(o: &Options) {
    let machine = Machine::detect();
    let sink = Sink::start().expect("sink");
    let url = sink.url();
    let mut results: Vec<(Variant, Vec<Value>)> =
        o.variants.iter().map(|v| (*v, Vec::new())).collect();
    let mut disabled: Vec<Value> = Vec::new();
    // Interleave variants run by run, so a burst of load hits both alike.
    for run in 0..o.runs {
        for (v, rs) in results.iter_mut() {
            let c = Child {
                kind: v.as_str(),
                spans: o.spans,
                producers: 1,
                queue_size: None,
            };
            let r = spawn_child(&c, o, &url);
            say(o, &format!("run {}/{} {}", run + 1, o.runs, v.as_str()), &r);
            rs.push(r);
        }
        if o.disabled_calls > 0 {
            let c = Child {
                kind: "disabled",
                spans: o.spans,
                producers: 1,
                queue_size: None,
            };
            let d = spawn_child(&c, o, &url);
            if !o.quiet {
                eprintln!(
                    "run {}/{} disabled: plain {:.3} ns/call, #[traced] {:.3} ns/call, overhead {:.3} ns",
                    run + 1,
                    o.runs,
                    d["plain_ns"].as_f64().unwrap_or(0.0),
                    d["traced_ns"].as_f64().unwrap_or(0.0),
                    d["overhead_ns"].as_f64().unwrap_or(0.0),
                );
            }
            disabled.push(d);
        }
    }
    let mut report = serde_json::Map::new();
    report.insert(
        "bench".into(),
        json!("braintrust-rust workload: trees of depth 3 (l1->l2->l3), input {\"i\": i}, output {\"ok\": i}"),
    );
    report.insert("spans".into(), json!(o.spans / 3 * 3));
    report.insert("runs".into(), json!(o.runs));
    report.insert("machine".into(), serde_json::to_value(&machine).unwrap());
    for (v, rs) in &results {
        report.insert(v.as_str().into(), summarize(rs));
    }
    if !disabled.is_empty() {
        let s = summarize(&disabled);
        report.insert(
            "disabled".into(),
            json!({
                "calls": s["calls"],
                "plain_ns": s["plain_ns"],
                "traced_ns": s["traced_ns"],
                "overhead_ns": s["overhead_ns"],
                "runs_overhead_ns": disabled.iter().map(|d| d["overhead_ns"].clone()).collect::<Vec<_>>(),
            }),
        );
    }
    if o.extras {
        extras(o, &url, &mut report);
        report.insert("targets".into(), targets(&report));
    }
    report.insert("loadavg_end".into(), json!(machine::loadavg()));
    report.insert(
        "sink".into(),
        serde_json::to_value(sink.stats()).unwrap_or(Value::Null),
    );
    println!("{}", Value::Object(report));
}

/// The other figures: queue limit lifted, the burst, big payloads, 1 vs 8
/// producers (each `--runs` times, interleaved, medians per field: their
/// spread is large on a small machine), then memory, allocations and the
/// floor (once each).
fn extras(o: &Options, url: &str, report: &mut serde_json::Map<String, Value>) {
    let child = |kind, spans, producers, queue_size| Child {
        kind,
        spans,
        producers,
        queue_size,
    };
    let mut timed: Vec<(String, Child<'_>)> = vec![(
        "manual_queue_lifted".into(),
        child("manual", o.spans, 1, Some(10_000_000)),
    )];
    if o.burst_spans > 0 {
        timed.push(("burst".into(), child("manual", o.burst_spans, 1, None)));
    }
    if o.big_spans > 0 {
        for (key, kind) in [("big_payload", "big"), ("big_payload_shared", "big_shared")] {
            timed.push((key.into(), child(kind, o.big_spans, 1, None)));
        }
    }
    if o.scale_spans > 0 {
        for producers in [1, 8] {
            timed.push((
                format!("producers_{producers}"),
                child("manual", o.scale_spans, producers, None),
            ));
        }
    }
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); timed.len()];
    for run in 0..o.runs {
        for ((key, c), rs) in timed.iter().zip(runs.iter_mut()) {
            let r = spawn_child(c, o, url);
            say(o, &format!("run {}/{} {key}", run + 1, o.runs), &r);
            rs.push(r);
        }
    }
    for ((key, _), rs) in timed.iter().zip(&runs) {
        report.insert(key.clone(), summarize(rs));
    }
    let mut one = |key: &str, c: Child<'_>| {
        let r = spawn_child(&c, o, url);
        if !o.quiet {
            eprintln!("{key:<22} {r}");
        }
        report.insert(key.into(), r);
    };
    one(
        "memory",
        Child {
            kind: "memory",
            spans: o.spans,
            producers: 1,
            queue_size: None,
        },
    );
    one(
        "allocations",
        Child {
            kind: "allocs",
            spans: o.spans,
            producers: 1,
            queue_size: None,
        },
    );
    one(
        "floor",
        Child {
            kind: "floor",
            spans: 1_000_000,
            producers: 1,
            queue_size: None,
        },
    );
}

/// Each target of issue 14 with the measured figure and whether it is met.
fn targets(r: &serde_json::Map<String, Value>) -> Value {
    let f = |path: &[&str]| {
        let mut v = &Value::Null;
        for (i, p) in path.iter().enumerate() {
            v = if i == 0 {
                r.get(*p).unwrap_or(&Value::Null)
            } else {
                &v[*p]
            };
        }
        v.as_f64()
    };
    let check = |name: &str, value: Option<f64>, ok: fn(f64) -> bool, target: &str| {
        json!({
            "figure": name,
            "target": target,
            "measured": value,
            "met": value.map(ok),
        })
    };
    let burst_share = match (f(&["burst", "delivered"]), f(&["burst", "spans"])) {
        (Some(d), Some(s)) if s > 0.0 => Some(d / s * 100.0),
        _ => None,
    };
    Value::Array(vec![
        check(
            "manual app_us_per_span",
            f(&["manual", "app_us_per_span"]),
            |v| v <= 1.0,
            "<= 1.0",
        ),
        check(
            "traced app_us_per_span",
            f(&["traced", "app_us_per_span"]),
            |v| v <= 1.0,
            "<= 1.0",
        ),
        check(
            "manual delivered_spans_per_s",
            f(&["manual", "delivered_spans_per_s"]),
            |v| v >= 500_000.0,
            ">= 500000",
        ),
        check("burst delivered %", burst_share, |v| v >= 99.0, ">= 99"),
        check(
            "manual peak_rss_mb",
            f(&["manual", "peak_rss_mb"]),
            |v| v <= 30.0,
            "<= 30",
        ),
        check(
            "queue lifted peak_rss_mb",
            f(&["manual_queue_lifted", "peak_rss_mb"]),
            |v| v <= 30.0,
            "<= 30",
        ),
        check(
            "idle queue 1e7 rss_mb",
            f(&["memory", "idle_queue_1e7_rss_mb"]),
            |v| v <= 1.0,
            "nothing preallocated (<= 1)",
        ),
        check(
            "pending overhead bytes/span",
            f(&["memory", "pending_overhead_bytes_per_span"]),
            |v| v <= 256.0,
            "<= 256",
        ),
        check(
            "big payload app_us_per_span",
            f(&["big_payload", "app_us_per_span"]),
            |v| v <= 10.0,
            "<= 10",
        ),
        check(
            "big payload peak_rss_mb",
            f(&["big_payload", "peak_rss_mb"]),
            |v| v <= 57.0,
            "<= 57",
        ),
        check(
            "big payload (shared input) app_us_per_span",
            f(&["big_payload_shared", "app_us_per_span"]),
            |v| v <= 10.0,
            "<= 10",
        ),
        check(
            "big payload (shared input) peak_rss_mb",
            f(&["big_payload_shared", "peak_rss_mb"]),
            |v| v <= 57.0,
            "<= 57",
        ),
        check(
            "disabled overhead_ns",
            f(&["disabled", "overhead_ns"]),
            |v| v <= 2.0,
            "<= 2",
        ),
    ])
}

/// Measures how many rows per second the sink ingests: 8 keep-alive
/// connections post realistic 100-row `/logs3` bodies (pre-built) as fast
/// as they can.
fn sink_check(sink: &Sink) -> Value {
    use std::io::{BufRead, BufReader, Read, Write};
    const CONNS: usize = 8;
    const BODIES_PER_CONN: usize = 50;
    const ROWS_PER_BODY: usize = 100;
    let row = |id: String| {
        json!({
            "id": id,
            "span_id": "00f067aa0ba902b7",
            "root_span_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_parents": ["00f067aa0ba902b8"],
            "created": "2026-01-01T00:00:00.000000+00:00",
            "metrics": {"start": 1767225600.123456, "end": 1767225600.123789},
            "span_attributes": {"name": "l2", "exec_counter": 12345},
            "context": {"caller_filename": "braintrust-bench/src/workload.rs", "caller_lineno": 80,
                        "span_origin": {"name": "braintrust.sdk.rust", "version": "0.1.0",
                                        "instrumentation": {"name": "braintrust-rust-logger"}}},
            "input": {"i": 1234}, "output": {"ok": 1234},
            "project_id": "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e", "log_id": "g"
        })
        .to_string()
    };
    let hostport = sink.url().trim_start_matches("http://").to_string();
    let bodies: Vec<Vec<String>> = (0..CONNS)
        .map(|c| {
            (0..BODIES_PER_CONN)
                .map(|b| {
                    let rows: Vec<String> = (0..ROWS_PER_BODY)
                        .map(|r| row(format!("check-{c}-{b}-{r}")))
                        .collect();
                    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
                    braintrust_core::__internal::merge::logs3_body(&refs)
                })
                .collect()
        })
        .collect();
    let bytes: usize = bodies.iter().flatten().map(String::len).sum();
    let before = sink.stats();
    let t = std::time::Instant::now();
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|bs| {
            let hostport = hostport.clone();
            std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(&hostport).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(s);
                for body in bs {
                    write!(
                        w,
                        "POST /logs3 HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .expect("write");
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        r.read_line(&mut line).expect("read");
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l
                            .to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                        {
                            len = v.parse().unwrap_or(0);
                        }
                    }
                    let mut buf = vec![0u8; len];
                    r.read_exact(&mut buf).expect("body");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    let secs = t.elapsed().as_secs_f64();
    let after = sink.stats();
    let rows = after.distinct_ids - before.distinct_ids;
    json!({
        "sink_check": {
            "connections": CONNS,
            "rows": rows,
            "bytes": bytes,
            "secs": round(secs, 4),
            "rows_per_sec": round(rows as f64 / secs, 0),
            "mb_per_sec": round(bytes as f64 / secs / 1e6, 1),
            "loadavg": machine::loadavg(),
            "note": "client threads run in the same process as the sink, so this is a lower bound",
        }
    })
}
