//! What the fuzz targets check on the core parsers, shared with the property
//! tests that run in CI (`braintrust-core/tests/fuzz_props.rs`). Each check
//! takes arbitrary bytes and panics on a broken invariant; "no panic, no
//! hang" is the first invariant of all.

use std::collections::HashMap;

use base64::Engine;
use braintrust_core::__internal::merge::{merge_row_batch, Row};
use braintrust_core::__internal::w3c::{
    extract, inject_into, merge_baggage, parse_baggage, parse_traceparent, MAX_BAGGAGE_BYTES,
    MAX_BAGGAGE_MEMBERS,
};
use braintrust_core::__internal::INVALID_ENCODING_MESSAGE;
use braintrust_core::SpanComponents;
use serde_json::Value;

/// The slug decoder (V1–V4), on the bytes as text and as base64 of the raw
/// slug bytes: a decoded slug validates and re-encodes (V4 and V3) to one
/// that decodes the same; a failure has the standard message.
pub fn slug(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        check_slug(s);
    }
    check_slug(&base64::engine::general_purpose::STANDARD.encode(data));
}

fn check_slug(s: &str) {
    match SpanComponents::parse(s) {
        Ok(c) => {
            assert!(c.validate().is_ok(), "{s:?} decoded to invalid {c:?}");
            let v4 = SpanComponents::parse(&c.to_v4_string()).expect("V4 re-encoding decodes");
            let v3 = SpanComponents::parse(&c.to_v3_string()).expect("V3 re-encoding decodes");
            assert_eq!(SpanComponents::parse(&v4.to_v4_string()).unwrap(), v4);
            assert_eq!(v3, v4, "{s:?}");
        }
        Err(e) => assert_eq!(e.to_string(), INVALID_ENCODING_MESSAGE),
    }
}

/// W3C `traceparent`, `tracestate` and `baggage` (the input split at the
/// first two newlines): what `extract` accepts re-parses to itself, baggage
/// stays within the W3C limits, and inject-then-extract keeps the trace.
pub fn w3c(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (tp, ts, bg) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if let Some(p) = parse_traceparent(tp) {
        assert_eq!(parse_traceparent(&p.to_string()), Some(p.clone()), "{tp:?}");
    }
    let members = parse_baggage(bg);
    assert!(members.len() <= MAX_BAGGAGE_MEMBERS);
    let merged = merge_baggage(Some(bg), "project_id:p");
    assert!(merged.len() <= MAX_BAGGAGE_BYTES, "{bg:?}");
    let carrier: HashMap<String, String> =
        [("traceparent", tp), ("tracestate", ts), ("baggage", bg)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let Some(ctx) = extract(&carrier) else {
        assert!(parse_traceparent(tp).is_none());
        return;
    };
    let parent = ctx.trace_parent().expect("extracted traceparent parses");
    let _ = ctx.braintrust_parent();
    let mut out: HashMap<String, String> = HashMap::new();
    inject_into(
        &mut out,
        &parent.trace_id,
        &parent.span_id,
        &parent.flags,
        ctx.braintrust_parent().as_deref(),
    );
    let again = extract(&out).expect("injected headers extract");
    assert_eq!(again.trace_parent(), Some(parent));
}

/// The row merger on a JSON array of rows: no panic, never more rows out
/// than in, and every row out has an id.
pub fn merge(data: &[u8]) {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let rows: Vec<Row> = items
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect();
    let n = rows.len();
    if let Ok(out) = merge_row_batch(rows) {
        assert!(out.len() <= n);
        assert!(out
            .iter()
            .all(|r| r.get("id").is_some_and(|v| !v.is_null())));
    }
}
