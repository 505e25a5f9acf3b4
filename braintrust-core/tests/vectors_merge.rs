//! Client-side merge and batching vectors from the official Python SDK
//! (`tests/vectors/merge_and_batch.json`), plus property tests.

use braintrust_core::__internal::merge::{
    batch_byte_limit, batch_partition, deep_merge_into, logs3_body, merge_row_batch, Row,
    IS_MERGE_FIELD, LOGS3_EMPTY_ENVELOPE, LOGS3_ENVELOPE_LEN, MERGE_KEY_FIELDS,
    MERGE_ROW_SKIP_FIELDS,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn load(name: &str) -> Value {
    let path = format!("{}/../tests/vectors/{}", env!("CARGO_MANIFEST_DIR"), name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn rows(v: &Value) -> Vec<Row> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

#[test]
fn meta_matches_constants() {
    let v = load("merge_and_batch.json");
    let meta = &v["_meta"];
    assert_eq!(
        meta["empty_envelope"].as_str().unwrap(),
        LOGS3_EMPTY_ENVELOPE
    );
    assert_eq!(LOGS3_EMPTY_ENVELOPE.len(), LOGS3_ENVELOPE_LEN);
    let key: Vec<&str> = meta["merge_key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(key, MERGE_KEY_FIELDS);
}

#[test]
fn merge_cases_match_exactly_including_key_order() {
    let v = load("merge_and_batch.json");
    let cases = v["merge_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let desc = case["description"].as_str().unwrap();
        let merged = merge_row_batch(rows(&case["input_rows"])).unwrap();
        let expected = rows(&case["merged_rows"]);
        assert_eq!(merged, expected, "{desc}");
        // Same key order as Python's dicts, so the serialized rows are identical.
        assert_eq!(
            serde_json::to_string(&merged).unwrap(),
            serde_json::to_string(&expected).unwrap(),
            "{desc}"
        );
    }
}

#[test]
fn batch_cases_match_exactly() {
    let v = load("merge_and_batch.json");
    let cases = v["batch_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let max = case["max_request_size"].as_u64().unwrap() as usize;
        let batch_size = case["batch_size"].as_u64().unwrap() as usize;
        assert_eq!(
            batch_byte_limit(max),
            case["byte_limit_used"].as_u64().unwrap() as usize,
            "limit for {max}"
        );
        let sizes: Vec<usize> = case["row_byte_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap() as usize)
            .collect();
        let batches = batch_partition(&sizes, batch_size, max);
        let ids: Vec<Vec<String>> = batches
            .iter()
            .map(|b| b.iter().map(|i| format!("r{i}")).collect())
            .collect();
        let expected: Vec<Vec<String>> =
            serde_json::from_value(case["batches_row_ids"].clone()).unwrap();
        assert_eq!(ids, expected, "batches for max {max} size {batch_size}");

        // Body sizes, with rows of exactly the given byte sizes.
        let row_text: Vec<String> = sizes.iter().map(|&n| "x".repeat(n)).collect();
        let body_sizes: Vec<usize> = batches
            .iter()
            .map(|b| logs3_body(&b.iter().map(|&i| row_text[i].as_str()).collect::<Vec<_>>()).len())
            .collect();
        let expected: Vec<usize> =
            serde_json::from_value(case["request_body_bytes"].clone()).unwrap();
        assert_eq!(
            body_sizes, expected,
            "bodies for max {max} size {batch_size}"
        );
    }
}

#[test]
fn body_format() {
    let body = logs3_body(&[r#"{"id":"a"}"#, r#"{"id":"b"}"#]);
    assert_eq!(
        body,
        r#"{"rows": [{"id":"a"},{"id":"b"}], "api_version": 2}"#
    );
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        parsed,
        json!({"rows": [{"id": "a"}, {"id": "b"}], "api_version": 2})
    );
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// A straightforward O(n²) transcription of Python's `merge_row_batch`, using
/// plain `serde_json::Value` equality for keys.
fn reference_merge(rows: Vec<Row>) -> Vec<Row> {
    let key = |r: &Row| -> Vec<Value> {
        MERGE_KEY_FIELDS
            .iter()
            .map(|k| r.get(*k).cloned().unwrap_or(Value::Null))
            .collect()
    };
    let truthy = |r: &Row| r.get(IS_MERGE_FIELD) == Some(&Value::Bool(true));
    let mut out: Vec<(Vec<Value>, Row)> = Vec::new();
    for row in rows {
        let k = key(&row);
        match out.iter_mut().find(|(ek, _)| *ek == k) {
            Some((_, existing)) if truthy(&row) => {
                let mut skip = Vec::new();
                for f in MERGE_ROW_SKIP_FIELDS {
                    if let Some(v) = existing.shift_remove(f) {
                        skip.push((f, v));
                    }
                }
                let preserve = !truthy(existing);
                deep_merge_into(existing, row);
                for f in MERGE_ROW_SKIP_FIELDS {
                    existing.shift_remove(f);
                    if let Some((_, v)) = skip.iter().find(|(n, _)| *n == f) {
                        existing.insert(f.to_string(), v.clone());
                    }
                }
                if preserve {
                    existing.shift_remove(IS_MERGE_FIELD);
                }
            }
            Some((_, existing)) => *existing = row,
            None => out.push((k, row)),
        }
    }
    out.into_iter().map(|(_, r)| r).collect()
}

fn small_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        (0i64..3).prop_map(Value::from),
        "[ab]".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[abc]", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn row_strategy() -> impl Strategy<Value = Row> {
    (
        "[ab]",
        prop::option::of("[pq]"),
        prop::option::of(Just("g")),
        prop::option::of(any::<bool>()),
        prop::collection::vec(
            (
                prop_oneof![
                    Just("input"),
                    Just("metadata"),
                    Just("tags"),
                    Just("created"),
                    Just("span_id"),
                    Just("span_parents"),
                    Just("metrics"),
                ],
                small_value(),
            ),
            0..5,
        ),
    )
        .prop_map(|(id, project, log, is_merge, fields)| {
            let mut r = Row::new();
            for (k, v) in fields {
                r.insert(k.to_string(), v);
            }
            r.insert("id".into(), Value::String(id));
            if let Some(p) = project {
                r.insert("project_id".into(), Value::String(p));
            }
            if let Some(l) = log {
                r.insert("log_id".into(), Value::String(l.to_string()));
            }
            if let Some(m) = is_merge {
                r.insert(IS_MERGE_FIELD.into(), Value::Bool(m));
            }
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_matches_reference(rows in prop::collection::vec(row_strategy(), 0..12)) {
        let ours = merge_row_batch(rows.clone()).unwrap();
        let reference = reference_merge(rows);
        prop_assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&reference).unwrap()
        );
    }

    #[test]
    fn batches_cover_rows_in_order_within_limits(
        sizes in prop::collection::vec(0usize..400, 0..60),
        batch_size in 0usize..10,
        max in 0usize..2000,
    ) {
        let batches = batch_partition(&sizes, batch_size, max);
        let flat: Vec<usize> = batches.iter().flatten().copied().collect();
        prop_assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
        for b in &batches {
            prop_assert!(!b.is_empty());
            prop_assert!(b.len() <= batch_size.max(1));
            let body = LOGS3_ENVELOPE_LEN + b.iter().map(|&i| sizes[i]).sum::<usize>() + b.len() - 1;
            prop_assert!(b.len() == 1 || body < max);
        }
        // Greedy: a batch closed early could not have taken the next row.
        for w in batches.windows(2) {
            let (cur, next) = (&w[0], &w[1]);
            let cost: usize = cur.iter().map(|&i| sizes[i] + 1).sum();
            prop_assert!(
                cur.len() >= batch_size.max(1) || cost + sizes[next[0]] + 1 >= batch_byte_limit(max)
            );
        }
    }
}
