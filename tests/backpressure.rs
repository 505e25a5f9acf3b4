//! Past a quarter of the queue's capacity (entries or payload bytes), each
//! logging call first writes the
//! oldest waiting span's row itself (backpressure without waiting; see the
//! README's reliability section). These tests hold the logger thread back
//! (`sync_flush`) so the queue fills deterministically, and check what a
//! user sees: the same rows on the server as without it, every row
//! accounted for, and `Stats::rows_written_by_callers`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use braintrust::{Event, SpanArgs, SpanType, State};
use common::faulty::{assert_accounted, Faulty, Mode};
use common::setup;
use serde_json::{json, Value};

/// Spans of every kind the writers handle: a propagated event (the general
/// writer), a default name, a shared input and a caller's row id (both left
/// to the logger thread) first, so they are the oldest when the queue fills;
/// then trees with every field.
fn log_spans(logger: &braintrust::Logger) {
    let propagated = logger.start_span(
        SpanArgs::new()
            .name("propagated")
            .propagated_event(json!({"metadata": {"tenant": "acme"}})),
    );
    propagated.end();
    logger.start_span(SpanArgs::new()).end();
    let shared = logger.start_span(SpanArgs::new().name("shared"));
    shared
        .log(Event::new().input_shared(Arc::new(json!({"big": "value"}))))
        .unwrap();
    shared.end();
    let own_id = logger.start_span(SpanArgs::new().name("own id").id("my-row-1"));
    own_id.log(Event::new().output(1)).unwrap();
    own_id.end();
    for t in 0..4 {
        let root = logger.start_span(
            SpanArgs::new()
                .name(format!("root {t}"))
                .event(Event::new().input(json!({"t": t}))),
        );
        let child = root.start_span(
            SpanArgs::new()
                .name(format!("child {t}"))
                .span_type(SpanType::Llm),
        );
        child
            .log(
                Event::new()
                    .output(json!({"text": "é \"quoted\"\n"}))
                    .metadata(json!({"model": "m", "nested": {"k": [1, 2]}}))
                    .metric("tokens", 12.0)
                    .score("accuracy", 0.5)
                    .tags(["a", "b"]),
            )
            .unwrap();
        child.end();
        root.log(Event::new().output("done")).unwrap();
        root.end();
    }
}

/// The stored rows by name, without what differs between runs (ids, times,
/// line numbers), and with their parent's name.
fn rows_by_name(rows: &[Value]) -> BTreeMap<String, Value> {
    let name_of_span: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r["span_id"].as_str().unwrap().to_string(),
                r["span_attributes"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut r = r.as_object().unwrap().clone();
            let parent = r["span_parents"]
                .as_array()
                .and_then(|p| p.first())
                .and_then(Value::as_str)
                .map(|p| name_of_span[p].clone());
            assert!(r["metrics"]["start"].is_number(), "{r:?}");
            assert!(r["metrics"]["end"].is_number(), "{r:?}");
            assert!(r["project_id"].is_string(), "{r:?}");
            for volatile in [
                "project_id",
                "id",
                "span_id",
                "root_span_id",
                "span_parents",
                "created",
                "_xact_id",
                "_pagination_key",
            ] {
                r.remove(volatile);
            }
            for m in ["start", "end"] {
                r["metrics"].as_object_mut().unwrap().remove(m);
            }
            r["span_attributes"]
                .as_object_mut()
                .unwrap()
                .remove("exec_counter");
            r["context"]
                .as_object_mut()
                .unwrap()
                .remove("caller_lineno");
            r.insert("parent".into(), json!(parent));
            let name = r["span_attributes"]["name"].as_str().unwrap().to_string();
            (name, Value::Object(r))
        })
        .collect()
}

#[test]
fn rows_written_by_the_logging_thread_arrive_as_the_logger_thread_writes_them() {
    // Without backpressure: a queue far larger than what is logged.
    let (plain_server, plain_state, plain) = setup("bp", |c| c.sync_flush(true));
    log_spans(&plain);
    plain.flush().unwrap();
    assert_eq!(plain_state.stats().rows_written_by_callers, 0);
    // With it: 16 entries, so past 4 each new entry writes an older row.
    let (server, state, logger) = setup("bp", |c| c.sync_flush(true).queue_size(16));
    log_spans(&logger);
    let s = state.stats();
    assert_eq!(s.dropped_queue_full, 0, "{s:?}");
    // 12 spans, all queued: the 8 past the threshold each took the oldest
    // waiting one, and wrote its row unless it holds a shared value or a
    // caller's row id (2 of them).
    assert_eq!((s.logged, s.pending), (12, 12), "{s:?}");
    assert_eq!(s.rows_written_by_callers, 6, "{s:?}");
    assert!(s.queued_payload_bytes > 0, "{s:?}");
    logger.flush().unwrap();
    let s = state.stats();
    assert_accounted(s);
    assert_eq!((s.delivered_rows, s.pending), (12, 0), "{s:?}");
    // The written rows' text is counted until it leaves the queue.
    assert_eq!(s.queued_payload_bytes, 0, "{s:?}");
    let want = rows_by_name(&plain_server.rows());
    let got = rows_by_name(&server.rows());
    assert_eq!(want.len(), 12);
    assert_eq!(got, want);
}

#[test]
fn a_span_written_before_it_ends_is_merged_with_its_later_writes() {
    // Twelve entries: past three, each new entry writes the oldest's row.
    let (server, state, logger) = setup("bp-open", |c| c.sync_flush(true).queue_size(12));
    let open = logger.start_span(
        SpanArgs::new()
            .name("open")
            .event(Event::new().input("question")),
    );
    for i in 0..3 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    // The open span's start was written as text; its later writes queue
    // anew (and the next entry writes the first `log`'s row).
    assert_eq!(state.stats().rows_written_by_callers, 1);
    open.log(Event::new().output("answer")).unwrap();
    assert_eq!(state.stats().rows_written_by_callers, 2);
    open.log(Event::new().metadata(json!({"step": 2}))).unwrap();
    open.end();
    logger.flush().unwrap();
    let s = state.stats();
    assert_accounted(s);
    assert_eq!((s.logged, s.delivered_rows, s.pending), (5, 5, 0), "{s:?}");
    let row = common::row_named(&server, "open");
    assert_eq!(row["input"], "question");
    assert_eq!(row["output"], "answer");
    assert_eq!(row["metadata"]["step"], 2);
    assert!(row["metrics"]["end"].is_number(), "{row}");
    // Both writes were in one round: merged before sending (one row for the
    // id in the request), as rows of one id always are.
    let id = row["id"].as_str().unwrap();
    let sent: usize = common::logs3_bodies(&server)
        .iter()
        .flat_map(|b| b["rows"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["id"] == id)
        .count();
    assert_eq!(sent, 1);
    assert_eq!(server.rows().len(), 4);
}

#[test]
fn large_values_start_backpressure_by_bytes_long_before_the_entry_limit() {
    // 25,000 entries (far off), 40,000 payload bytes: past 10,000 bytes
    // waiting, each new entry writes the oldest's row.
    let (server, state, logger) = setup("bp-bytes", |c| {
        c.sync_flush(true)
            .queue_size(25_000)
            .queue_max_bytes(40_000)
    });
    let page = "p".repeat(4_000);
    for i in 0..8 {
        let s = logger.start_span(
            SpanArgs::new()
                .name(format!("big {i}"))
                .event(Event::new().input(json!({"page": page, "i": i}))),
        );
        s.end();
    }
    let s = state.stats();
    assert_eq!((s.logged, s.dropped_queue_full), (8, 0), "{s:?}");
    assert!(s.rows_written_by_callers >= 4, "{s:?}");
    logger.flush().unwrap();
    let s = state.stats();
    assert_accounted(s);
    assert_eq!((s.delivered_rows, s.queued_payload_bytes), (8, 0), "{s:?}");
    for i in 0..8 {
        let row = common::row_named(&server, &format!("big {i}"));
        assert_eq!(row["input"], json!({"page": page, "i": i}));
        assert!(row["metrics"]["end"].is_number(), "{row}");
    }
}

#[test]
fn with_a_masking_function_rows_are_written_on_the_logger_thread_only() {
    let (server, state, logger) = setup("bp-mask", |c| c.sync_flush(true).queue_size(4));
    state.set_masking_function(Some(Arc::new(|v: Value| {
        Ok(if v.is_string() { json!("***") } else { v })
    })));
    for i in 0..4 {
        logger
            .log(Event::new().input(format!("secret {i}")))
            .unwrap();
    }
    assert_eq!(state.stats().rows_written_by_callers, 0);
    logger.flush().unwrap();
    let rows = server.rows();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["input"] == "***"), "{rows:?}");
}

#[test]
fn written_rows_given_up_at_a_deadline_are_dumped_with_their_container_ids() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let state = State::new(
        braintrust::Config::default()
            .api_key("test-key")
            .app_url(server.url())
            .sync_flush(true)
            .queue_size(10)
            .failed_payloads_dir(dir.path())
            .lifecycle(braintrust::LifecyclePolicy::Manual),
    )
    .unwrap();
    let logger = braintrust::init_logger(
        braintrust::LoggerOptions::new()
            .project("bp-dump")
            .state(state.clone()),
    )
    .unwrap();
    for i in 0..10 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    // Past 2 of 10, each of the last 8 wrote an older row.
    assert_eq!(state.stats().rows_written_by_callers, 8);
    let err = state
        .flush_with_timeout(Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, braintrust::Error::Timeout { .. }), "{err}");
    let s = state.stats();
    assert_accounted(s);
    assert_eq!(s.undelivered_rows, 10, "{s:?}");
    // The logger thread writes what it abandons unless it is not scheduled
    // within the caller's 250 ms grace (a loaded machine): then the caller
    // counts the rows and none may be written (README, "logger thread busy
    // at a deadline"). Either way the directory holds exactly what is said.
    assert!(s.dumped_rows == 10 || s.dumped_rows == 0, "{s:?}");
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for row in v["rows"].as_array().unwrap() {
            assert!(row["project_id"].is_string(), "{row}");
            assert_eq!(row["log_id"], "g", "{row}");
            inputs.push(row["input"]["i"].as_i64().unwrap());
        }
    }
    inputs.sort();
    let written = if s.dumped_rows == 10 { 0..10 } else { 0..0 };
    assert_eq!(inputs, written.collect::<Vec<_>>(), "{s:?}");
}

#[test]
fn producers_writing_rows_while_the_logger_thread_drains_lose_and_mix_nothing() {
    // Blocking mode, so nothing may be dropped; a small queue, so producers
    // write rows (past 50) while the logger thread drains concurrently, and
    // roots stay open while their first rows are written.
    let (server, state, logger) = setup("bp-threads", |c| {
        c.queue_size(200)
            .queue_full(braintrust::QueueFullPolicy::Block)
    });
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let logger = logger.clone();
            std::thread::spawn(move || {
                let mut root = logger.start_span(SpanArgs::new().name(format!("root {t}/0")));
                for i in 0..500 {
                    if i % 50 == 49 {
                        root.log(Event::new().output(json!({"children": 50})))
                            .unwrap();
                        root.end();
                        root = logger.start_span(SpanArgs::new().name(format!("root {t}/{i}")));
                    }
                    let child = root.start_span(
                        SpanArgs::new()
                            .name(format!("child {t}/{i}"))
                            .event(Event::new().input(json!({"t": t, "i": i}))),
                    );
                    child.log(Event::new().output(i)).unwrap();
                    child.end();
                }
                root.log(Event::new().output(json!({"children": 50})))
                    .unwrap();
                root.end();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    logger.flush().unwrap();
    let s = state.stats();
    assert_accounted(s);
    assert_eq!((s.dropped_queue_full, s.failed_rows, s.pending), (0, 0, 0));
    // Four producers outrun one logger thread here (about 3 of 4 rows).
    assert!(s.rows_written_by_callers > 0, "{s:?}");
    let rows = server.rows();
    // 500 children and 11 roots per thread, each one complete.
    assert_eq!(rows.len(), 4 * 511);
    for r in &rows {
        assert!(
            r["output"].is_number() || r["output"]["children"] == 50,
            "{r}"
        );
        assert!(r["metrics"]["end"].is_number(), "{r}");
    }
    let children = rows.iter().filter(|r| {
        r["span_attributes"]["name"]
            .as_str()
            .unwrap()
            .starts_with("child")
    });
    for r in children {
        assert_eq!(r["input"]["i"], r["output"], "{r}");
        assert_eq!(r["span_parents"].as_array().unwrap().len(), 1, "{r}");
    }
}

#[test]
fn an_update_queued_after_a_written_row_is_applied_after_it() {
    // Eight entries: past two, each new entry takes the oldest.
    let (server, state, logger) = setup("bp-update", |c| c.sync_flush(true).queue_size(8));
    let span = logger.start_span(
        SpanArgs::new()
            .name("updated")
            .event(Event::new().input("q")),
    );
    let id = span.id();
    span.end();
    logger
        .update_span(&id, Event::new().output("late answer").tags(["fixed"]))
        .unwrap();
    for i in 0..3 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    // The span's row was written as text, the update taken after it.
    assert_eq!(state.stats().rows_written_by_callers, 2);
    logger.flush().unwrap();
    let row = server.row(&id).unwrap();
    assert_eq!(row["input"], "q");
    assert_eq!(row["output"], "late answer", "{row}");
    assert_eq!(row["tags"], json!(["fixed"]), "{row}");
    assert!(row["metrics"]["end"].is_number(), "{row}");
    assert_accounted(state.stats());
}

#[test]
fn a_masking_function_set_after_rows_were_written_masks_them_too() {
    let (server, state, logger) = setup("bp-mask-late", |c| c.sync_flush(true).queue_size(8));
    for i in 0..6 {
        logger
            .log(Event::new().input(format!("secret {i}")))
            .unwrap();
    }
    assert_eq!(state.stats().rows_written_by_callers, 4);
    state.set_masking_function(Some(Arc::new(|v: Value| {
        Ok(if v.is_string() { json!("***") } else { v })
    })));
    logger.flush().unwrap();
    let rows = server.rows();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["input"] == "***"), "{rows:?}");
}

#[test]
fn a_written_row_too_deep_to_read_back_is_counted_as_failed() {
    let (server, state, logger) = setup("bp-deep", |c| c.sync_flush(true).queue_size(8));
    // Nested deeper than the JSON parser reads back (128 levels).
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    logger.log(Event::new().input(deep)).unwrap();
    for i in 0..3 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    assert_eq!(state.stats().rows_written_by_callers, 2);
    // The masking function sends the round down the path that reads rows back.
    state.set_masking_function(Some(Arc::new(Ok)));
    match logger.flush() {
        Err(braintrust::Error::RowsLost(l)) => assert_eq!(l.failed, 1, "{l}"),
        other => panic!("{other:?}"),
    }
    let s = state.stats();
    assert_accounted(s);
    assert_eq!(
        (s.logged, s.failed_rows, s.delivered_rows),
        (4, 1, 3),
        "{s:?}"
    );
    assert_eq!(server.rows().len(), 3);
}

#[test]
fn a_span_ending_in_its_threads_exit_is_queued_without_a_panic() {
    use std::cell::RefCell;
    thread_local! {
        static HELD: RefCell<Option<braintrust::Span>> = const { RefCell::new(None) };
    }
    // Twelve entries: past three, each new entry takes the oldest.
    let (server, state, logger) = setup("bp-exit", |c| c.sync_flush(true).queue_size(12));
    for i in 0..4 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    let l = logger.clone();
    std::thread::spawn(move || {
        // Registered first, so destroyed after the SDK's own thread-locals
        // this thread uses when it writes rows below: the span ends while
        // they are gone, and its end queues anew (its start was written
        // by the third log), which writes another row on the way out.
        HELD.with(|h| *h.borrow_mut() = Some(l.start_span(SpanArgs::new().name("held"))));
        for i in 0..3 {
            l.log(Event::new().input(format!("written here {i}")))
                .unwrap();
        }
    })
    .join()
    .unwrap();
    logger.flush().unwrap();
    let s = state.stats();
    assert_accounted(s);
    assert_eq!((s.logged, s.rows_written_by_callers), (9, 6), "{s:?}");
    let held = common::row_named(&server, "held");
    assert!(held["metrics"]["end"].is_number(), "{held}");
}
