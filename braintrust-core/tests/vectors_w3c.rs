//! W3C trace-context vectors from the official Python SDK
//! (`tests/vectors/w3c_propagation.json`), plus property tests.

use std::collections::{BTreeMap, HashMap};

use braintrust_core::__internal::w3c::{
    baggage_braintrust_parent, decode_baggage_value, encode_baggage_value, extract,
    format_traceparent, inject_into, merge_baggage, parse_baggage, parse_traceparent,
    MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS,
};
use braintrust_core::{Carrier, TraceContext};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn load(name: &str) -> Value {
    let path = format!("{}/../tests/vectors/{}", env!("CARGO_MANIFEST_DIR"), name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn vectors() -> Value {
    load("w3c_propagation.json")
}

fn string_map<M: FromIterator<(String, String)>>(v: &Value) -> M {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// The `braintrust.parent` value of the vector's project-logs span.
fn parent_value(v: &Value) -> String {
    let object_id = v["inject_extract"][1]["child_export_decoded"]["object_id"]
        .as_str()
        .unwrap();
    format!("project_id:{object_id}")
}

#[test]
fn inject_replaces_case_variants_and_relays_members() {
    let v = vectors();
    let case = &v["inject_extract"][0];
    let trace_id = case["span"]["root_span_id"].as_str().unwrap();
    let span_id = case["span"]["span_id"].as_str().unwrap();
    let parent = parent_value(&v);

    let expected: BTreeMap<String, String> = string_map(&case["carrier_out"]);

    let mut hash: HashMap<String, String> = string_map(&case["carrier_in"]);
    inject_into(&mut hash, trace_id, span_id, "01", Some(&parent));
    assert_eq!(hash.into_iter().collect::<BTreeMap<_, _>>(), expected);

    let mut btree: BTreeMap<String, String> = string_map(&case["carrier_in"]);
    inject_into(&mut btree, trace_id, span_id, "01", Some(&parent));
    assert_eq!(btree, expected);

    let mut headers = http::HeaderMap::new();
    for (k, v) in string_map::<Vec<(String, String)>>(&case["carrier_in"]) {
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    inject_into(&mut headers, trace_id, span_id, "01", Some(&parent));
    let got: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, expected);

    // Through a trait object too.
    let mut dynamic: BTreeMap<String, String> = string_map(&case["carrier_in"]);
    let carrier: &mut dyn Carrier = &mut dynamic;
    inject_into(carrier, trace_id, span_id, "01", Some(&parent));
    assert_eq!(dynamic, expected);
}

#[test]
fn extract_then_child_joins_the_trace() {
    let v = vectors();
    let injected: HashMap<String, String> = string_map(&v["inject_extract"][0]["carrier_out"]);
    let case = &v["inject_extract"][1];
    let ctx = extract(&injected).unwrap();
    let expected = &case["extracted_context"];
    assert_eq!(
        ctx,
        TraceContext {
            traceparent: expected["traceparent"].as_str().unwrap().to_string(),
            baggage: Some(expected["baggage"].as_str().unwrap().to_string()),
            tracestate: None,
        }
    );
    // `start_span(parent = ctx)`: the child keeps the trace id and is parented to
    // the traceparent's span id, under the object named by braintrust.parent.
    let tp = ctx.trace_parent().unwrap();
    let child = &case["child"];
    assert_eq!(tp.trace_id, child["root_span_id"].as_str().unwrap());
    assert_eq!(
        child["span_parents"],
        Value::Array(vec![Value::String(tp.span_id.clone())])
    );
    assert_eq!(ctx.braintrust_parent(), Some(parent_value(&v)));
    let decoded = &case["child_export_decoded"];
    assert_eq!(decoded["root_span_id"].as_str().unwrap(), tp.trace_id);
    assert_eq!(decoded["span_id"], child["span_id"]);

    // The memory-logger rows agree: parent root span, then the child.
    let rows = v["memory_logger_rows"].as_array().unwrap();
    assert_eq!(rows[0]["span_id"].as_str().unwrap(), tp.span_id);
    assert_eq!(rows[0]["root_span_id"].as_str().unwrap(), tp.trace_id);
    assert_eq!(rows[1]["span_parents"], child["span_parents"]);
    assert_eq!(rows[1]["root_span_id"], child["root_span_id"]);
}

#[test]
fn inject_from_child_into_empty_carrier() {
    let v = vectors();
    let child = &v["inject_extract"][1]["child"];
    let expected: BTreeMap<String, String> = string_map(&v["inject_extract"][2]["carrier_out"]);
    let mut carrier: BTreeMap<String, String> = BTreeMap::new();
    inject_into(
        &mut carrier,
        child["root_span_id"].as_str().unwrap(),
        child["span_id"].as_str().unwrap(),
        "01",
        Some(&parent_value(&v)),
    );
    assert_eq!(carrier, expected);
}

#[test]
fn merge_baggage_cases() {
    let v = vectors();
    let cases = v["merge_baggage"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let desc = case["description"].as_str().unwrap();
        let out = merge_baggage(
            Some(case["existing"].as_str().unwrap()),
            case["braintrust_parent"].as_str().unwrap(),
        );
        assert_eq!(out, case["baggage_out"].as_str().unwrap(), "{desc}");
        let parsed: Map<String, Value> = parse_baggage(&out)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let expected = case["parse_baggage(out)"].as_object().unwrap();
        assert_eq!(
            parsed.iter().collect::<Vec<_>>(),
            expected.iter().collect::<Vec<_>>(),
            "{desc}"
        );
        assert_eq!(
            baggage_braintrust_parent(&out).as_deref(),
            case["braintrust_parent"].as_str(),
            "{desc}"
        );
        // The encoded member is exactly encode_baggage_value of the parent.
        assert!(out.ends_with(&format!(
            ",braintrust.parent={}",
            encode_baggage_value(case["braintrust_parent"].as_str().unwrap())
        )));
    }
}

#[test]
fn parse_traceparent_cases() {
    let v = vectors();
    let cases = v["parse_traceparent"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let tp = case["traceparent"].as_str().unwrap();
        if tp.starts_with("01-") {
            // The official SDKs reject a higher version; the W3C spec (and
            // this SDK) parse its known fields, written back as version 00.
            let parsed = parse_traceparent(tp).unwrap();
            assert_eq!(parsed.to_string(), format!("00{}", &tp[2..]));
            continue;
        }
        match &case["parsed"] {
            Value::Null => assert_eq!(parse_traceparent(tp), None, "{tp}"),
            Value::Array(parts) => {
                let parsed = parse_traceparent(tp).unwrap_or_else(|| panic!("{tp}"));
                assert_eq!(parsed.trace_id, parts[0].as_str().unwrap());
                assert_eq!(parsed.span_id, parts[1].as_str().unwrap());
                assert_eq!(parsed.flags, parts[2].as_str().unwrap());
                assert_eq!(parsed.to_string(), tp);
                assert_eq!(
                    format_traceparent(&parsed.trace_id, &parsed.span_id, &parsed.flags),
                    tp
                );
                // extract() applies the same rule.
                let carrier = BTreeMap::from([("TraceParent".to_string(), tp.to_string())]);
                assert_eq!(extract(&carrier).unwrap().traceparent, tp);
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn extract_rejects_what_parse_rejects() {
    let v = vectors();
    for case in v["parse_traceparent"].as_array().unwrap() {
        let future_version = case["traceparent"].as_str().unwrap().starts_with("01-");
        if case["parsed"].is_null() && !future_version {
            let carrier = HashMap::from([(
                "traceparent".to_string(),
                case["traceparent"].as_str().unwrap().to_string(),
            )]);
            assert!(extract(&carrier).is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn baggage_value_roundtrip(s in any::<String>()) {
        let enc = encode_baggage_value(&s);
        prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        prop_assert_eq!(decode_baggage_value(&enc), s);
    }

    #[test]
    fn decode_never_panics(s in any::<String>()) {
        let _ = decode_baggage_value(&s);
        let _ = parse_baggage(&s);
        let _ = baggage_braintrust_parent(&s);
    }

    #[test]
    fn traceparent_roundtrip(trace in "[0-9a-f]{32}", span in "[0-9a-f]{16}", flags in "[0-9a-f]{2}") {
        let tp = format_traceparent(&trace, &span, &flags);
        let valid = trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0');
        match parse_traceparent(&tp) {
            Some(p) => {
                prop_assert!(valid);
                prop_assert_eq!((p.trace_id, p.span_id, p.flags), (trace, span, flags));
            }
            None => prop_assert!(!valid),
        }
    }

    #[test]
    fn parse_traceparent_never_panics(s in any::<String>()) {
        if let Some(p) = parse_traceparent(&s) {
            prop_assert!(s.contains(&p.to_string()));
        }
    }

    #[test]
    fn inject_then_extract(
        trace in "[0-9a-f]{31}[1-9a-f]",
        span in "[1-9a-f][0-9a-f]{15}",
        parent in "project_name:.{1,100}",
        other in prop::option::of("[a-z]{1,8}=[a-z0-9%]{0,20}"),
    ) {
        let mut carrier: HashMap<String, String> = HashMap::new();
        if let Some(o) = &other {
            carrier.insert("BAGGAGE".into(), o.clone());
        }
        inject_into(&mut carrier, &trace, &span, "01", Some(&parent));
        let ctx = extract(&carrier).unwrap();
        let tp = ctx.trace_parent().unwrap();
        prop_assert_eq!(tp.trace_id, trace);
        prop_assert_eq!(tp.span_id, span);
        prop_assert_eq!(ctx.braintrust_parent(), Some(parent));
        if let Some(o) = other {
            let prefix = format!("{o},");
            prop_assert!(ctx.baggage.unwrap().starts_with(&prefix));
        }
    }
}

proptest! {
    // Large generated headers: fewer cases keep the suite fast.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn merge_keeps_parent_and_limits(
        existing in prop::collection::vec("[a-z%.]{0,6}(=[ -~]{0,300})?", 0..120),
        parent in "(project_id|project_name|experiment_id):.{1,200}",
        sep in prop_oneof![Just(","), Just(" , ")],
    ) {
        let existing = existing.join(sep);
        let out = merge_baggage(Some(&existing), &parent);
        prop_assert!(out.len() <= MAX_BAGGAGE_BYTES);
        prop_assert!(out.split(',').count() <= MAX_BAGGAGE_MEMBERS);
        prop_assert_eq!(baggage_braintrust_parent(&out), Some(parent.clone()));
        let ours = format!("braintrust.parent={}", encode_baggage_value(&parent));
        prop_assert!(out.ends_with(&ours));
        // Relayed members are verbatim (trimmed) members of the input, in order.
        let inputs: Vec<&str> = existing.split(',').map(str::trim).collect();
        let mut at = 0;
        for member in out.split(',').filter(|m| *m != ours) {
            let found = inputs[at..].iter().position(|m| *m == member);
            prop_assert!(found.is_some(), "{} not relayed verbatim", member);
            at += found.unwrap() + 1;
        }
        // Merging again is idempotent.
        prop_assert_eq!(merge_baggage(Some(&out), &parent), out);
    }
}
