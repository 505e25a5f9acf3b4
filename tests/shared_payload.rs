//! Large values logged without a copy (`Event::input_shared` and friends):
//! the server stores the same rows as for owned values, on the fast row
//! writer and on the general one (masking), and a value that cannot be
//! serialized still leaves its row intact.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use braintrust::{Event, SpanArgs};
use serde_json::{json, Value};

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
