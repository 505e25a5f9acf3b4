//! Large values logged without a copy (`Event::input_shared`,
//! `Event::metadata_shared` and friends):
//! the server stores the same rows as for owned values, on the fast row
//! writer and on the general one (masking), and a value that cannot be
//! serialized still leaves its row intact.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use braintrust::{Event, SpanArgs};
use serde_json::{json, Map, Value};

#[derive(serde::Serialize)]
struct Doc {
    title: String,
    pages: Vec<String>,
}

fn doc() -> Arc<Doc> {
    Arc::new(Doc {
        title: "report".into(),
        pages: vec!["p".repeat(10_000); 5],
    })
}

fn check(masked: bool) {
    let (server, state, logger) = common::setup("shared", |c| c);
    if masked {
        // Identity masking sends rows through the general writer.
        state.set_masking_function(Some(Arc::new(|v: Value| Ok(v))));
    }
    let shared = doc();
    let owned = serde_json::to_value(&*shared).unwrap();
    let a = logger.start_span(
        SpanArgs::new()
            .name("shared")
            .event(Event::new().input_shared(shared.clone())),
    );
    a.log(Event::new().output_shared(shared.clone()).expected("x"))
        .unwrap();
    a.end();
    let b = logger.start_span(
        SpanArgs::new()
            .name("owned")
            .event(Event::new().input(owned.clone())),
    );
    b.log(Event::new().output(owned.clone()).expected("x"))
        .unwrap();
    b.end();
    // A later owned value replaces a shared one, and the other way round.
    let c = logger.start_span(
        SpanArgs::new()
            .name("replaced")
            .event(Event::new().input_shared(shared.clone())),
    );
    c.log(Event::new().input("plain").output("first")).unwrap();
    c.log(Event::new().output_shared(Arc::new(vec![1, 2])))
        .unwrap();
    c.end();
    // A shared map replaces an input as any value does (only object fields
    // such as metadata merge).
    let map: Map<String, Value> = [("b".to_string(), json!(2))].into_iter().collect();
    let d = logger.start_span(
        SpanArgs::new()
            .name("map input")
            .event(Event::new().input(json!({"a": 1}))),
    );
    d.log(Event::new().input_shared(Arc::new(map))).unwrap();
    d.end();
    logger.flush().unwrap();
    let row = |n| common::row_named(&server, n);
    for k in ["input", "output", "expected"] {
        assert_eq!(row("shared")[k], row("owned")[k], "{k} (masked: {masked})");
    }
    assert_eq!(
        row("shared")["input"]["pages"][4],
        json!("p".repeat(10_000))
    );
    assert_eq!(row("replaced")["input"], json!("plain"));
    assert_eq!(row("replaced")["output"], json!([1, 2]));
    assert_eq!(
        row("map input")["input"],
        json!({"b": 2}),
        "masked: {masked}"
    );
    // Held by the caller, not counted against the byte budget.
    assert_eq!(state.stats().queued_payload_bytes, 0);
}

#[test]
fn shared_values_arrive_as_owned_ones_do() {
    check(false);
}

#[test]
fn shared_values_arrive_as_owned_ones_do_through_masking() {
    check(true);
}

#[test]
fn a_value_that_fails_to_serialize_leaves_its_row_intact() {
    let (server, _state, logger) = common::setup("shared-bad", |c| c);
    // JSON object keys must be strings: this map cannot be serialized.
    let bad: HashMap<Vec<u8>, u8> = [(vec![1u8], 1u8)].into_iter().collect();
    let s = logger.start_span(
        SpanArgs::new()
            .name("bad")
            .event(Event::new().input_shared(Arc::new(bad)).output("kept")),
    );
    s.end();
    logger.flush().unwrap();
    let row = common::row_named(&server, "bad");
    assert_eq!(row["output"], json!("kept"));
    assert!(
        row["input"]
            .as_str()
            .is_some_and(|s| s.starts_with("ERROR: could not serialize `input`")),
        "{row}"
    );
}

/// Logs the same metadata shared on some spans and copied on twins of
/// them, with other metadata before, after and in the same event, and
/// checks each pair of rows has the same metadata.
fn check_metadata(masked: bool) {
    let (server, state, logger) = common::setup("shared-meta", |c| c);
    if masked {
        state.set_masking_function(Some(Arc::new(|v: Value| Ok(v))));
    }
    let ctx: Map<String, Value> = (0..50)
        .map(|k| (format!("key_{k}"), json!(format!("value {k}"))))
        .chain([("nested".to_string(), json!({"a": 1, "b": {"c": 2}}))])
        .collect();
    let ctx = Arc::new(ctx);
    let later = json!({"nested": {"b": {"d": 3}}, "key_0": "replaced", "added": true});
    // Each case logs its metadata one way (`shared`) or the other, in the
    // same order: (start event, later writes).
    type Write = fn(bool, &Arc<Map<String, Value>>, &Value) -> Event;
    let cases: [(&str, Write, &[Write]); 4] = [
        ("alone", |sh, ctx, _| meta(Event::new(), sh, ctx), &[]),
        (
            "then-owned",
            |sh, ctx, _| meta(Event::new().input("q"), sh, ctx),
            &[|_, _, later| Event::new().metadata(later.clone())],
        ),
        (
            "after-owned",
            |_, _, later| Event::new().metadata(later.clone()),
            &[|sh, ctx, _| meta(Event::new(), sh, ctx)],
        ),
        (
            "same-event",
            |sh, ctx, _| meta(Event::new(), sh, ctx).metadata_entry("request", 7),
            &[
                |sh, ctx, _| meta(Event::new().output("o"), sh, ctx),
                |_, _, later| Event::new().metadata(later.clone()),
            ],
        ),
    ];
    for (name, first, writes) in cases {
        for sh in [true, false] {
            let span = logger.start_span(
                SpanArgs::new()
                    .name(format!("{name}-{sh}"))
                    .event(first(sh, &ctx, &later)),
            );
            for w in writes {
                span.log(w(sh, &ctx, &later)).unwrap();
            }
            span.end();
        }
    }
    logger.flush().unwrap();
    for (name, _, _) in cases {
        let shared = common::row_named(&server, &format!("{name}-true"));
        let owned = common::row_named(&server, &format!("{name}-false"));
        assert_eq!(
            shared["metadata"], owned["metadata"],
            "{name} (masked: {masked})"
        );
        assert_eq!(shared["metadata"]["key_49"], json!("value 49"), "{name}");
        for k in ["input", "output"] {
            assert_eq!(shared[k], owned[k], "{name}: {k}");
        }
    }
    let merged = common::row_named(&server, "then-owned-true");
    assert_eq!(
        merged["metadata"]["nested"],
        json!({"a": 1, "b": {"c": 2, "d": 3}})
    );
    assert_eq!(merged["metadata"]["key_0"], json!("replaced"));
    assert_eq!(
        common::row_named(&server, "same-event-true")["metadata"]["request"],
        json!(7)
    );
    // The caller's map is untouched by the merges.
    assert_eq!(ctx["key_0"], json!("value 0"));
}

fn meta(e: Event, shared: bool, ctx: &Arc<Map<String, Value>>) -> Event {
    if shared {
        e.metadata_shared(ctx.clone())
    } else {
        e.metadata(Value::Object((**ctx).clone()))
    }
}

#[test]
fn shared_metadata_merges_as_copied_metadata_does() {
    check_metadata(false);
}

#[test]
fn shared_metadata_merges_as_copied_metadata_does_through_masking() {
    check_metadata(true);
}

#[test]
fn a_copy_made_to_merge_shared_metadata_counts_against_the_byte_budget() {
    // The logger thread is held back, so both writes meet in the span.
    let (server, state, logger) = common::setup("shared-meta-bytes", |c| c.sync_flush(true));
    let ctx: Map<String, Value> = (0..100)
        .map(|k| (format!("key_{k}"), json!("v".repeat(100))))
        .collect();
    let ctx = Arc::new(ctx);
    let span = logger.start_span(SpanArgs::new().name("merged"));
    span.log(Event::new().metadata_shared(ctx.clone())).unwrap();
    let shared_only = state.stats().queued_payload_bytes;
    span.log(Event::new().metadata(json!({"k": 1}))).unwrap();
    let merged = state.stats().queued_payload_bytes;
    // At least the copied values' text (100 x 100 bytes).
    assert!(merged >= shared_only + 10_000, "{shared_only} -> {merged}");
    span.end();
    logger.flush().unwrap();
    assert_eq!(state.stats().queued_payload_bytes, 0);
    let row = common::row_named(&server, "merged");
    assert_eq!(row["metadata"]["k"], json!(1));
    assert_eq!(row["metadata"]["key_99"], json!("v".repeat(100)));
}
