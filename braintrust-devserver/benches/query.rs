//! Trace-list query latency on a 100,000-span store, over real HTTP.
//!
//! Run with `cargo bench -p braintrust-devserver --bench query`. Prints one JSON object per
//! query: the median and worst latency of repeated requests. `SPANS` overrides the store size.

use std::time::{Duration, Instant};

use braintrust_devserver::{DevServer, DevServerConfig, RecordLimits};
use serde_json::{json, Value};

const SPANS_PER_TRACE: usize = 5;

fn rows_body(first_trace: usize, traces: usize) -> String {
    let mut rows = Vec::with_capacity(traces * SPANS_PER_TRACE);
    for t in first_trace..first_trace + traces {
        let root = format!("trace-{t:08}");
        let start = 1_767_225_600.0 + t as f64;
        for s in 0..SPANS_PER_TRACE {
            let span = format!("{root}-{s}");
            let (name, ty) = match s {
                0 => ("handle_request", "task"),
                1 | 2 => ("chat", "llm"),
                3 => ("retrieve", "tool"),
                _ => ("score", "score"),
            };
            let mut row = json!({
                "id": span, "span_id": span, "root_span_id": root,
                "span_parents": if s == 0 { Value::Null } else { json!([format!("{root}-0")]) },
                "project_id": "bench-project", "log_id": "g", "_is_merge": false,
                "created": "2026-01-01T00:00:00Z",
                "span_attributes": {"name": name, "type": ty},
                "metrics": {"start": start + s as f64 * 0.01, "end": start + 0.5,
                            "prompt_tokens": 10, "completion_tokens": 5},
                "input": {"question": format!("question number {t} about topic {}", t % 97)},
                "output": {"answer": format!("answer {t}")},
                "metadata": {"user": format!("user-{}", t % 1000), "env": "prod"},
            });
            if t % 250 == 0 && s == 3 {
                row["error"] = json!("tool failed: timeout");
            }
            rows.push(row.to_string());
        }
    }
    format!("{{\"rows\": [{}], \"api_version\": 2}}", rows.join(","))
}

#[tokio::main]
async fn main() {
    let spans: usize = std::env::var("SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let traces = spans / SPANS_PER_TRACE;
    let server = DevServer::start(DevServerConfig::default().record_requests(RecordLimits::OFF))
        .await
        .expect("server starts");
    let http = reqwest::Client::new();
    let t = Instant::now();
    let per_request = 40;
    for first in (0..traces).step_by(per_request) {
        let resp = http
            .post(format!("{}/logs3", server.url()))
            .bearer_auth("bench")
            .body(rows_body(first, per_request.min(traces - first)))
            .send()
            .await
            .expect("logs3");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    eprintln!("loaded {spans} spans in {:?}", t.elapsed());
    let queries = [
        ("newest page", ""),
        ("by span name", "name=retrieve"),
        ("errors only", "error=true"),
        ("metadata key/value", "metadata.user=user-420"),
        ("free text", "q=topic%2042"),
        (
            "free text, no match (scans every trace)",
            "q=no%20such%20words",
        ),
        ("span name, no match (scans every trace)", "name=nope"),
        ("time range", "since=1767230000&until=1767231000"),
        (
            "combined",
            "type=llm&metadata.env=prod&q=question%20number%2019",
        ),
        (
            "a page halfway down (cursor)",
            "limit=50&cursor=1767235600:0",
        ),
    ];
    for (label, query) in queries {
        let url = format!("{}/dev/api/traces?{query}", server.url());
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..15 {
            let t = Instant::now();
            let body: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            times.push(t.elapsed());
            count = body["traces"].as_array().map_or(0, Vec::len);
        }
        times.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        println!(
            "{}",
            json!({"bench": "trace_list", "spans": spans, "query": label, "params": query,
                   "results": count, "median_ms": ms(times[times.len() / 2]),
                   "max_ms": ms(*times.last().unwrap())})
        );
    }
}
