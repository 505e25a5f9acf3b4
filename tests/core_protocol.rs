//! The core runtime against a real local server: wire format, merge, batching,
//! retries, failure handling, queue limits and flushing from every context.

mod common;

use std::time::{Duration, Instant};

use braintrust::{Config, Event, LoggerOptions, SpanArgs, SpanType, State};
use common::{logs3_bodies, row_named, setup, shape};
use serde_json::{json, Value};

fn capture(scenario: &str) -> Value {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/python_logs3_capture.json"
    ));
    let v: Value = serde_json::from_str(text).unwrap();
    v["scenarios"][scenario].clone()
}

fn capture_rows(scenario: &str) -> Vec<Value> {
    capture(scenario)["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/logs3")
        .flat_map(|r| r["body"]["rows"].as_array().unwrap().clone())
        .collect()
}

/// The same program as the official SDK's capture: a root with input, output,
/// metadata, tags; an llm child with scores and token metrics; a function
/// child; a separate root that fails.
fn run_capture_program(logger: &braintrust::Logger) {
    let root = logger.start_span(
        SpanArgs::new()
            .name("root-request")
            .event(Event::new().input(json!({"question": "hi"}))),
    );
    root.log(
        Event::new()
            .output(json!({"answer": "hello"}))
            .metadata(json!({"user": "u1"}))
            .tags(["t1"]),
    )
    .unwrap();
    let child = root.start_span(SpanArgs::new().name("child-llm").span_type(SpanType::Llm));
    child
        .log(
            Event::new()
                .input(json!([{"role": "user", "content": "hi"}]))
                .output(json!({"role": "assistant", "content": "hello"}))
                .metadata(json!({"model": "gpt-x", "temperature": 0}))
                .score("quality", 0.9)
                .score("bool_score", true)
                .score("skipped", None::<f64>)
                .metrics([
                    ("prompt_tokens", 10.0),
                    ("completion_tokens", 5.0),
                    ("tokens", 15.0),
                ]),
        )
        .unwrap();
    child.end();
    let f = root.start_span(
        SpanArgs::new()
            .name("add")
            .span_type(SpanType::Function)
            .function_name("logger_scenario")
            .event(Event::new().input(json!({"a": 1, "b": 3}))),
    );
    f.log(Event::new().output(4)).unwrap();
    f.end();
    root.end();
    let failing = logger.start_span(
        SpanArgs::new()
            .name("failing-span")
            .span_type(SpanType::Tool),
    );
    failing.log(Event::new().error("boom")).unwrap();
    failing.end();
}

/// Python includes `caller_functionname` for manual spans; Rust can only
/// know the function name through `#[traced]`/`function_name`, so manual
/// spans leave it out (documented in the README).
fn without_functionname(mut v: Value) -> Value {
    if let Some(ctx) = v.get_mut("context").and_then(Value::as_object_mut) {
        ctx.remove("caller_functionname");
    }
    v
}

#[test]
fn batched_rows_have_the_official_sdk_shape() {
    let (server, _state, logger) = setup("spec-capture", |c| c.sync_flush(true));
    run_capture_program(&logger);
    logger.flush().unwrap();

    let bodies = logs3_bodies(&server);
    assert_eq!(bodies.len(), 1, "one flush, one request");
    assert_eq!(bodies[0]["api_version"], 2);
    let ours = bodies[0]["rows"].as_array().unwrap().clone();
    let theirs = capture_rows("batched");
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(
            shape(&without_functionname(o.clone())),
            shape(&without_functionname(t.clone())),
            "row {} differs in structure",
            t["span_attributes"]["name"]
        );
        assert!(
            o.get("_is_merge").is_none(),
            "merged full rows carry no _is_merge"
        );
        assert_eq!(o["span_attributes"]["name"], t["span_attributes"]["name"]);
        assert_eq!(o["span_attributes"]["type"], t["span_attributes"]["type"]);
        assert_eq!(o["log_id"], "g");
    }
    // Values the SDK computes the same way.
    let llm = &ours[1];
    assert_eq!(
        llm["scores"],
        json!({"quality": 0.9, "bool_score": 1, "skipped": null})
    );
    assert_eq!(llm["metrics"]["tokens"], 15);
    assert_eq!(llm["span_parents"], json!([ours[0]["span_id"]]));
    assert_eq!(llm["root_span_id"], ours[0]["root_span_id"]);
    assert_eq!(ours[0]["span_parents"], Value::Null);
    assert_eq!(ours[0]["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(ours[0]["root_span_id"].as_str().unwrap().len(), 32);
    assert_eq!(
        ours[0]["context"]["span_origin"]["name"],
        "braintrust.sdk.rust"
    );
    assert_eq!(ours[2]["context"]["caller_functionname"], "logger_scenario");
    assert!(ours[0]["context"]["caller_filename"]
        .as_str()
        .unwrap()
        .ends_with("core_protocol.rs"));
    assert_ne!(ours[3]["root_span_id"], ours[0]["root_span_id"]);
    assert_eq!(ours[3]["error"], "boom");

    // Registration happened as the official SDK does it.
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        &paths[..4],
        [
            "POST /api/apikey/login",
            "POST /v1/project",
            "GET /version",
            "POST /logs3"
        ]
    );
    let proj = server.requests()[1].json().unwrap();
    assert_eq!(proj["name"], "spec-capture");
}

#[test]
fn stepwise_flushes_write_initial_and_merge_rows() {
    let (server, _state, logger) = setup("stepwise", |c| c.sync_flush(true));
    let root = logger.start_span(
        SpanArgs::new()
            .name("root-request")
            .event(Event::new().input(json!({"question": "hi"}))),
    );
    logger.flush().unwrap();
    root.log(Event::new().output(json!({"answer": "hello"})).tags(["t1"]))
        .unwrap();
    logger.flush().unwrap();
    root.end();
    logger.flush().unwrap();

    let bodies = logs3_bodies(&server);
    assert_eq!(bodies.len(), 3);
    let rows: Vec<&Value> = bodies.iter().map(|b| &b["rows"][0]).collect();
    assert_eq!(rows[0]["_is_merge"], false);
    assert!(rows[0]["created"].as_str().unwrap().ends_with("+00:00"));
    assert!(rows[0]["metrics"]["start"].is_f64());
    assert_eq!(rows[1]["_is_merge"], true);
    assert_eq!(rows[1]["output"], json!({"answer": "hello"}));
    assert!(rows[1].get("created").is_none());
    assert_eq!(rows[2]["_is_merge"], true);
    assert!(rows[2]["metrics"]["end"].is_f64());
    // Each shape matches the official SDK's stepwise capture.
    let theirs = capture_rows("stepwise");
    assert_eq!(
        shape(&without_functionname(rows[0].clone())),
        shape(&without_functionname(theirs[0].clone()))
    );
    assert_eq!(
        shape(rows[1])
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "metadata")
            .count(),
        shape(&theirs[1])
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "metadata")
            .count()
    );
    // The server merged them into one complete row.
    let stored = row_named(&server, "root-request");
    assert_eq!(stored["output"], json!({"answer": "hello"}));
    assert!(stored["metrics"]["end"].is_f64());
}

#[test]
fn batch_size_splits_requests() {
    let (server, _state, logger) = setup("batches", |c| c.sync_flush(true).batch_size(2));
    for i in 0..5 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    logger.flush().unwrap();
    let bodies = logs3_bodies(&server);
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b["rows"].as_array().unwrap().len())
        .collect();
    let mut sorted = sizes.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 2]);
    assert_eq!(server.rows().len(), 5);
}

#[test]
fn a_503_is_retried_and_delivered_once() {
    let (server, state, logger) = setup("retry", |c| c.sync_flush(true));
    logger.flush().unwrap(); // login + registration first
    server.faults().fail_next_logs3(1, 503);
    logger.log(Event::new().input("x")).unwrap();
    logger.flush().unwrap();
    assert_eq!(logs3_bodies(&server).len(), 2, "one failure, one retry");
    assert_eq!(server.rows().len(), 1);
    assert_eq!(state.stats().delivered_rows, 1);
    assert_eq!(state.stats().failed_rows, 0);
}

#[test]
fn retry_after_is_honoured() {
    let (server, _state, logger) = setup("retry-after", |c| {
        c.sync_flush(true)
            .retry_base_delay(Duration::from_millis(1))
    });
    logger.flush().unwrap();
    server.faults().retry_after(1);
    server.faults().fail_next_logs3(1, 429);
    logger.log(Event::new().input("x")).unwrap();
    let t = Instant::now();
    logger.flush().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(server.rows().len(), 1);
}

#[test]
fn a_413_is_not_retried_and_lands_in_the_failed_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (server, state, logger) = setup("too-large", |c| {
        c.sync_flush(true).failed_payloads_dir(dir.path())
    });
    logger.flush().unwrap();
    server.faults().fail_next_logs3(5, 413);
    logger.log(Event::new().input("x")).unwrap();
    let err = logger.flush().unwrap_err();
    assert!(
        matches!(&err, braintrust::Error::RowsLost(l) if l.failed == 1),
        "{err}"
    );
    assert_eq!(logs3_bodies(&server).len(), 1, "413 is never retried");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("payload_") && name.ends_with(".json"),
        "{name}"
    );
    let body: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(body["rows"][0]["input"], "x");
    assert_eq!(state.stats().failed_rows, 1);
}

#[test]
fn permanent_failure_is_dropped_counted_and_reported_by_flush() {
    let (server, state, logger) = setup("down", |c| c.sync_flush(true).num_retries(2));
    logger.flush().unwrap();
    server.faults().fail_all_logs3(500);
    logger.log(Event::new().input("lost")).unwrap();
    let err = logger.flush().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("1 failed for good"), "{msg}");
    assert!(
        msg.contains("answered 500") && msg.contains("after 3 tries"),
        "{msg}"
    );
    assert_eq!(
        logs3_bodies(&server).len(),
        3,
        "num_retries 2 means 3 tries"
    );
    assert_eq!(state.stats().failed_rows, 1);
    // Nothing queued later is affected.
    server.faults().reset();
    logger.log(Event::new().input("kept")).unwrap();
    logger.flush().unwrap();
    assert_eq!(server.rows().len(), 1);
}

#[test]
fn queue_full_drops_exactly_the_excess_and_keeps_the_rest() {
    let (server, state, logger) = setup("queue", |c| c.sync_flush(true).queue_size(10));
    for i in 0..25 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    assert_eq!(state.stats().dropped_queue_full, 15);
    // The flush delivers the rest and reports the loss: never Ok after a drop.
    match logger.flush() {
        Err(braintrust::Error::RowsLost(l)) => {
            assert_eq!((l.dropped_queue_full, l.failed, l.undelivered), (15, 0, 0))
        }
        other => panic!("{other:?}"),
    }
    let s = state.stats();
    assert_eq!((s.logged, s.delivered_rows, s.pending), (25, 10, 0));
    // Reported once: the next flush is clean.
    logger.flush().unwrap();
    let rows = server.rows();
    assert_eq!(rows.len(), 10);
    let mut got: Vec<i64> = rows
        .iter()
        .map(|r| r["input"]["i"].as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "the newest are dropped, the first 10 kept"
    );
}

#[test]
fn init_against_a_closed_port_returns_at_once_and_spans_work() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let t = Instant::now();
    let state = State::new(
        Config::default()
            .api_key("k")
            .app_url(format!("http://127.0.0.1:{port}"))
            .num_retries(0)
            // Nothing is taken before the flush, so the span is one row (a
            // background round could take its start alone, then wait out
            // the login pause for the rest).
            .sync_flush(true)
            .lifecycle(braintrust::LifecyclePolicy::Manual),
    )
    .unwrap();
    let logger =
        braintrust::init_logger(LoggerOptions::new().project("p").state(state.clone())).unwrap();
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_millis(10), "init took {elapsed:?}");
    let span = logger.start_span(SpanArgs::new().name("still works"));
    span.log(Event::new().output(1)).unwrap();
    span.end();
    let err = logger.flush().unwrap_err();
    assert!(matches!(err, braintrust::Error::RowsLost(_)), "{err}");
    assert_eq!(state.stats().failed_rows, 1);
}

#[test]
fn validation_errors_name_the_field_and_queue_nothing() {
    let (server, _state, logger) = setup("validation", |c| c.sync_flush(true));
    let span = logger.start_span(SpanArgs::new().name("s"));
    span.log(Event::new().output("kept")).unwrap();
    let err = span
        .log(Event::new().output("lost").score("bad", 7.0))
        .unwrap_err();
    assert_eq!(err.field, "scores.bad");
    let err = span.log(Event::new().metadata(json!("nope"))).unwrap_err();
    assert_eq!(err.field, "metadata");
    span.end();
    logger.flush().unwrap();
    let row = row_named(&server, "s");
    assert_eq!(row["output"], "kept");
    assert!(row.get("scores").is_none());
}

#[test]
fn non_finite_metrics_are_sent_as_strings() {
    let (server, _state, logger) = setup("nan", |c| c.sync_flush(true));
    let span = logger.start_span(SpanArgs::new().name("n"));
    span.log_metrics([
        ("a", f64::NAN),
        ("b", f64::INFINITY),
        ("c", f64::NEG_INFINITY),
    ]);
    span.end();
    logger.flush().unwrap();
    let row = row_named(&server, "n");
    assert_eq!(row["metrics"]["a"], "NaN");
    assert_eq!(row["metrics"]["b"], "Infinity");
    assert_eq!(row["metrics"]["c"], "-Infinity");
}

#[test]
fn dropped_span_is_ended_not_lost() {
    let (server, _state, logger) = setup("drop", |c| c.sync_flush(true));
    {
        let span = logger.start_span(SpanArgs::new().name("forgotten"));
        span.log(Event::new().output(1)).unwrap();
    }
    logger.flush().unwrap();
    let row = row_named(&server, "forgotten");
    assert!(row["metrics"]["end"].is_f64());
}

#[test]
fn end_is_idempotent_and_returns_the_time() {
    let (server, _state, logger) = setup("end", |c| c.sync_flush(true));
    let span = logger.start_span(SpanArgs::new().name("e"));
    let t1 = span.end();
    let _ = span.end();
    logger.flush().unwrap();
    let row = row_named(&server, "e");
    assert_eq!(row["metrics"]["end"].as_f64().unwrap(), t1);
}

#[test]
fn masking_applies_to_user_fields_and_failures_become_markers() {
    let (server, state, logger) = setup("mask", |c| c.sync_flush(true));
    state.set_masking_function(Some(std::sync::Arc::new(|v: Value| match v {
        Value::String(s) if s.contains("secret") => Ok(Value::String("[REDACTED]".into())),
        Value::String(s) if s == "explode" => Err("mask service down".into()),
        other => Ok(other),
    })));
    let span = logger.start_span(SpanArgs::new().name("m"));
    span.log(
        Event::new()
            .input("my secret")
            .output("explode")
            .metadata(json!({"k": 1})),
    )
    .unwrap();
    span.end();
    logger.flush().unwrap();
    let row = row_named(&server, "m");
    assert_eq!(row["input"], "[REDACTED]");
    assert_eq!(
        row["output"],
        "ERROR: Failed to mask field 'output' - mask service down"
    );
    assert_eq!(row["metadata"], json!({"k": 1}));
    assert_eq!(
        row["span_attributes"]["name"], "m",
        "span attributes are not masked"
    );
}

#[test]
fn experiments_register_and_log_eval_roots() {
    let (server, state, _logger) = setup("exp-project", |c| c.sync_flush(true));
    let exp = braintrust::init_experiment(
        braintrust::ExperimentOptions::new()
            .project("exp-project")
            .name("exp-1")
            .metadata(json!({"k": "v"}))
            .tags(["a"])
            .state(state),
    )
    .unwrap();
    let span = exp
        .as_logger()
        .start_span(SpanArgs::new().event(Event::new().input(1).output(2).score("s", 1.0)));
    span.end();
    exp.as_logger().flush().unwrap();
    let req = server
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/experiment")
        .expect("experiment registered");
    let body = req.json().unwrap();
    assert_eq!(body["name"], "exp-1");
    assert_eq!(body["ensure_new"], true);
    assert_eq!(body["public"], false);
    assert_eq!(body["metadata"], json!({"k": "v"}));
    let row = &server.rows()[0];
    assert_eq!(
        row["experiment_id"].as_str(),
        exp.as_logger().id().as_deref()
    );
    assert_eq!(row["span_attributes"]["type"], "eval");
    assert_eq!(row["span_attributes"]["name"], "root");
    assert!(row.get("project_id").is_none());
}

#[test]
fn flush_works_from_sync_multi_thread_and_current_thread_contexts() {
    let (server, _state, logger) = setup("flavours", |c| c);
    logger.log(Event::new().input("sync")).unwrap();
    logger.flush().unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        logger.log(Event::new().input("multi-async")).unwrap();
        logger.flush_async().await.unwrap();
        logger.log(Event::new().input("multi-blocking")).unwrap();
        logger.flush().unwrap();
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        logger.log(Event::new().input("current-async")).unwrap();
        logger.flush_async().await.unwrap();
        logger.log(Event::new().input("current-blocking")).unwrap();
        logger.flush().unwrap();
        braintrust::flush_async().await.unwrap();
    });
    let mut inputs: Vec<String> = server
        .rows()
        .iter()
        .map(|r| r["input"].as_str().unwrap().to_string())
        .collect();
    inputs.sort();
    assert_eq!(
        inputs,
        [
            "current-async",
            "current-blocking",
            "multi-async",
            "multi-blocking",
            "sync"
        ]
    );
}

#[test]
fn background_mode_delivers_without_explicit_flush_calls_in_between() {
    let (server, state, logger) = setup("background", |c| c);
    for i in 0..200 {
        let s = logger.start_span(SpanArgs::new().name(format!("s{i}")));
        s.log(Event::new().input(json!({"i": i}))).unwrap();
        s.end();
    }
    logger.flush().unwrap();
    assert_eq!(server.rows().len(), 200);
    assert_eq!(state.stats().failed_rows, 0);
    assert_eq!(state.stats().dropped_queue_full, 0);
    // Every stored row is complete whatever the request boundaries were.
    for r in server.rows() {
        assert!(
            r["metrics"]["start"].is_f64() && r["metrics"]["end"].is_f64(),
            "{r}"
        );
    }
}

#[test]
fn api_key_never_appears_in_debug_or_errors() {
    let state = State::new(
        Config::default()
            .api_key("sk-very-secret-value")
            .app_url("http://127.0.0.1:9")
            .num_retries(0)
            .lifecycle(braintrust::LifecyclePolicy::Manual),
    )
    .unwrap();
    assert!(!format!("{state:?}").contains("very-secret"));
    let err = state.login().unwrap_err();
    assert!(!err.to_string().contains("very-secret"), "{err}");
}

#[test]
fn blocking_queue_mode_loses_nothing() {
    let (server, state, logger) = setup("blocking", |c| {
        c.queue_size(4)
            .queue_full(braintrust::QueueFullPolicy::Block)
    });
    for i in 0..300 {
        let s = logger.start_span(SpanArgs::new().name(format!("b{i}")));
        s.log(Event::new().input(json!({"i": i}))).unwrap();
        s.end();
    }
    logger.flush().unwrap();
    assert_eq!(state.stats().dropped_queue_full, 0);
    assert_eq!(server.rows().len(), 300);
}

#[test]
fn a_span_can_have_several_parents() {
    let (server, _state, logger) = setup("dag", |c| c.sync_flush(true));
    let root = logger.start_span(SpanArgs::new().name("root"));
    let a = root.start_span(SpanArgs::new().name("a"));
    let b = root.start_span(SpanArgs::new().name("b"));
    let join = a.start_span(SpanArgs::new().name("join").also_parent(&b));
    assert_eq!(join.span_parents(), vec![a.span_id(), b.span_id()]);
    for s in [&join, &a, &b, &root] {
        s.end();
    }
    logger.flush().unwrap();
    let row = row_named(&server, "join");
    assert_eq!(row["span_parents"], json!([a.span_id(), b.span_id()]));
    assert_eq!(row["root_span_id"], root.root_span_id());
}

#[test]
fn set_attributes_renames_and_retypes() {
    let (server, _state, logger) = setup("attrs", |c| c.sync_flush(true));
    let s = logger.start_span(SpanArgs::new().name("before"));
    s.set_attributes(Some("after"), Some(SpanType::Score));
    s.end();
    logger.flush().unwrap();
    let row = row_named(&server, "after");
    assert_eq!(row["span_attributes"]["type"], "score");
    assert!(row["span_attributes"]["exec_counter"].is_u64());
}
