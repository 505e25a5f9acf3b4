//! Client-side row merging and request batching for `/logs3` (protocol spec
//! §4.5 and §4.6), matching the official Python SDK's `merge_row_batch` and
//! `batch_items`.
//!
//! ```
//! use braintrust_core::__internal::merge::{batch_partition, logs3_body, merge_row_batch, Row};
//! use serde_json::json;
//!
//! let row = |v: serde_json::Value| -> Row { v.as_object().unwrap().clone() };
//! let merged = merge_row_batch(vec![
//!     row(json!({"id": "r1", "project_id": "p", "log_id": "g", "_is_merge": false,
//!                "span_id": "s", "metrics": {"start": 1.0}})),
//!     row(json!({"id": "r1", "project_id": "p", "log_id": "g", "_is_merge": true,
//!                "span_id": "other", "metrics": {"end": 2.0}})),
//! ])
//! .unwrap();
//! assert_eq!(
//!     serde_json::Value::Object(merged[0].clone()),
//!     json!({"id": "r1", "project_id": "p", "log_id": "g",
//!            "metrics": {"start": 1.0, "end": 2.0}, "span_id": "s"})
//! );
//!
//! let rows: Vec<String> = merged.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
//! let sizes: Vec<usize> = rows.iter().map(|r| r.len()).collect();
//! for batch in batch_partition(&sizes, 100, 6 * 1024 * 1024) {
//!     let body = logs3_body(&batch.iter().map(|&i| rows[i].as_str()).collect::<Vec<_>>());
//!     assert!(body.starts_with(r#"{"rows": [{"#));
//! }
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// A log row: a JSON object.
pub type Row = Map<String, Value>;

/// The row field telling the server (and [`merge_row_batch`]) to deep-merge
/// rather than replace.
pub const IS_MERGE_FIELD: &str = "_is_merge";

/// The fields identifying a row for merging, in key order (a missing field
/// counts as `null`).
pub const MERGE_KEY_FIELDS: [&str; 7] = [
    "org_id",
    "project_id",
    "experiment_id",
    "dataset_id",
    "prompt_session_id",
    "log_id",
    "id",
];

/// Fields that keep the earlier row's value when a merge row is merged in (and
/// stay absent if the earlier row lacked them).
pub const MERGE_ROW_SKIP_FIELDS: [&str; 5] = [
    "created",
    "span_id",
    "root_span_id",
    "span_parents",
    "_parent_id",
];

/// The error message for a row without an `id`, identical to the Python SDK's.
pub(crate) const MISSING_ID_MESSAGE: &str = "Logged row is missing an id. This is an internal braintrust error. Please contact us at info@braintrust.dev for help";

/// The empty `/logs3` request envelope; its length is [`LOGS3_ENVELOPE_LEN`].
pub const LOGS3_EMPTY_ENVELOPE: &str = r#"{"rows": [], "api_version": 2}"#;

/// `len(r#"{"rows": [], "api_version": 2}"#)`, the bytes a `/logs3` body adds
/// around its rows.
pub const LOGS3_ENVELOPE_LEN: usize = 30;

/// Errors of [`merge_row_batch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The row at `index` of the input has no `id` or a `null` one. `Display` is
    /// exactly `MISSING_ID_MESSAGE`.
    #[error("{}", MISSING_ID_MESSAGE)]
    MissingId {
        /// Position of the offending row in the input.
        index: usize,
    },
}

/// Merges rows that share a key (spec §4.5), in queue order:
///
/// 1. Every row must have a non-null `id`, else [`MergeError::MissingId`]
///    (checked for all rows before anything is merged).
/// 2. The key is [`MERGE_KEY_FIELDS`] (missing = `null`). The first row of a key
///    fixes its position in the output.
/// 3. A later row whose `_is_merge` is truthy (Python truthiness: `true`, a
///    non-zero number, a non-empty string/array/object) is merged into the stored
///    row with [`deep_merge_into`], except that the stored row keeps its own
///    [`MERGE_ROW_SKIP_FIELDS`] (`created`, `span_id`, `root_span_id`,
///    `span_parents`, `_parent_id`), dropping them if it lacked them; those
///    fields move to the end of the row, in that order, as in Python. If the
///    stored row was not a merge (`_is_merge` falsy or missing), the result has
///    no `_is_merge` key at all.
/// 4. A later row that is not a merge replaces the stored row (same position).
///
/// `_merge_paths` is not interpreted (it is copied as data). Runs in linear time
/// using a hash map from key to output index.
pub fn merge_row_batch(rows: Vec<Row>) -> Result<Vec<Row>, MergeError> {
    if let Some(index) = rows
        .iter()
        .position(|r| matches!(r.get("id"), None | Some(Value::Null)))
    {
        return Err(MergeError::MissingId { index });
    }
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    let mut positions: HashMap<Vec<u8>, usize> = HashMap::with_capacity(rows.len());
    for row in rows {
        match positions.entry(merge_key(&row)) {
            Entry::Occupied(e) => {
                let stored = &mut out[*e.get()];
                if is_truthy(row.get(IS_MERGE_FIELD)) {
                    merge_into_stored(stored, row);
                } else {
                    *stored = row;
                }
            }
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(row);
            }
        }
    }
    Ok(out)
}

/// Deep-merges `update` into `target`, like the Python SDK's `merge_dicts`:
///
/// * for each key of `update`, in order: if both values are objects they are
///   merged recursively; otherwise the new value replaces the old one (arrays,
///   scalars and explicit `null` included). Replaced keys keep their position,
///   new keys are appended;
/// * exception: a **top-level** `tags` key whose old and new values are both
///   arrays becomes their set union: old items first, then new ones, keeping the
///   first occurrence of each (strings compare as strings, other items by their
///   JSON value with object keys sorted). Nested `tags` keys are not special.
///
/// No field is skipped here: [`merge_row_batch`] handles
/// [`MERGE_ROW_SKIP_FIELDS`] and `_is_merge` itself.
pub fn deep_merge_into(target: &mut Row, update: Row) {
    merge_top_level(target, update, false);
}

fn merge_top_level(target: &mut Row, update: Row, skip_fields: bool) {
    for (key, value) in update {
        if skip_fields && MERGE_ROW_SKIP_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if key == "tags" {
            if let (Some(Value::Array(old)), Value::Array(new)) = (target.get_mut("tags"), &value) {
                union_into(old, new);
                continue;
            }
        }
        merge_entry(target, key, value);
    }
}

fn merge_entry(target: &mut Row, key: String, value: Value) {
    match value {
        Value::Object(update) => {
            if let Some(Value::Object(existing)) = target.get_mut(&key) {
                merge_objects(existing, update);
            } else {
                target.insert(key, Value::Object(update));
            }
        }
        other => {
            target.insert(key, other);
        }
    }
}

fn merge_objects(target: &mut Row, update: Row) {
    for (key, value) in update {
        merge_entry(target, key, value);
    }
}

fn union_into(old: &mut Vec<Value>, new: &[Value]) {
    let mut seen: HashSet<String> = HashSet::with_capacity(old.len() + new.len());
    let mut combined: Vec<Value> = Vec::with_capacity(old.len() + new.len());
    for item in old.drain(..).chain(new.iter().cloned()) {
        if seen.insert(dedup_key(&item)) {
            combined.push(item);
        }
    }
    *old = combined;
}

fn dedup_key(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let mut k = String::with_capacity(s.len() + 1);
            k.push('s');
            k.push_str(s);
            k
        }
        other => {
            let mut k = String::from("j");
            canonical_json(other, &mut k);
            k
        }
    }
}

/// JSON with object keys sorted, for order-insensitive comparison.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Merges a merge row into the stored row, as Python's `merge_row_batch` does.
fn merge_into_stored(stored: &mut Row, update: Row) {
    let mut saved: [Option<Value>; MERGE_ROW_SKIP_FIELDS.len()] = Default::default();
    for (slot, field) in saved.iter_mut().zip(MERGE_ROW_SKIP_FIELDS) {
        *slot = stored.shift_remove(field);
    }
    let preserve_no_merge = !is_truthy(stored.get(IS_MERGE_FIELD));
    merge_top_level(stored, update, true);
    for (slot, field) in saved.iter_mut().zip(MERGE_ROW_SKIP_FIELDS) {
        if let Some(v) = slot.take() {
            stored.insert(field.to_string(), v);
        }
    }
    if preserve_no_merge {
        stored.shift_remove(IS_MERGE_FIELD);
    }
}

/// Python truthiness of an optional JSON value.
fn is_truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// One allocation per row: each key field as a tag byte (0 null/missing,
/// 1 string, 2 other JSON) plus length-prefixed bytes.
pub(crate) fn merge_key(row: &Row) -> Vec<u8> {
    let mut key = Vec::with_capacity(80);
    for field in MERGE_KEY_FIELDS {
        match row.get(field) {
            None | Some(Value::Null) => key.push(0),
            Some(Value::String(s)) => {
                key.push(1);
                key.extend_from_slice(&(s.len() as u64).to_le_bytes());
                key.extend_from_slice(s.as_bytes());
            }
            Some(other) => {
                let mut s = String::new();
                canonical_json(other, &mut s);
                key.push(2);
                key.extend_from_slice(&(s.len() as u64).to_le_bytes());
                key.extend_from_slice(s.as_bytes());
            }
        }
    }
    key
}

/// The byte budget of one batch's rows: `max_request_size - 30 + 1` (where 30
/// is [`LOGS3_ENVELOPE_LEN`]), saturating at 0.
pub fn batch_byte_limit(max_request_size: usize) -> usize {
    max_request_size
        .saturating_add(1)
        .saturating_sub(LOGS3_ENVELOPE_LEN)
}

/// Splits rows into request batches (spec §4.6), returning the row indices of
/// each batch in order. Greedy, exactly like Python's `batch_items`:
///
/// * each row costs `row_sizes[i] + 1` bytes (its serialized UTF-8 length plus a
///   comma);
/// * a row joins the current batch only if the batch has fewer than
///   `batch_size` rows **and** `batch cost + row cost < batch_byte_limit(max_request_size)`
///   (strictly less, as in Python); otherwise the batch is closed first;
/// * a row larger than the limit still goes into a batch, alone.
///
/// So every request body ([`logs3_body`]) is at most `max_request_size - 1`
/// bytes unless it holds a single oversized row. A `batch_size` of 0 is treated
/// as 1.
pub fn batch_partition(
    row_sizes: &[usize],
    batch_size: usize,
    max_request_size: usize,
) -> Vec<Vec<usize>> {
    let max_rows = batch_size.max(1);
    let limit = batch_byte_limit(max_request_size);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let mut batch_bytes = 0usize;
    for (i, &size) in row_sizes.iter().enumerate() {
        let cost = size.saturating_add(1);
        let fits = batch.len() < max_rows && batch_bytes.saturating_add(cost) < limit;
        if !batch.is_empty() && !fits {
            out.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch.push(i);
        batch_bytes = batch_bytes.saturating_add(cost);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Builds a `/logs3` request body from pre-serialized rows:
/// `{"rows": [` + rows joined by `,` + `], "api_version": 2}`. Its length is
/// `30 + Σ len(row) + (n - 1)` for `n > 0` rows.
pub fn logs3_body(rows: &[&str]) -> String {
    let total: usize = rows.iter().map(|r| r.len() + 1).sum();
    let mut body = String::with_capacity(LOGS3_ENVELOPE_LEN + total);
    body.push_str(r#"{"rows": ["#);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row);
    }
    body.push_str(r#"], "api_version": 2}"#);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn keys(r: &Row) -> Vec<&str> {
        r.keys().map(String::as_str).collect()
    }

    #[test]
    fn envelope_constants() {
        assert_eq!(LOGS3_EMPTY_ENVELOPE.len(), LOGS3_ENVELOPE_LEN);
        assert_eq!(logs3_body(&[]), LOGS3_EMPTY_ENVELOPE);
        assert_eq!(
            logs3_body(&["{}", "{\"a\":1}"]),
            r#"{"rows": [{},{"a":1}], "api_version": 2}"#
        );
        assert_eq!(batch_byte_limit(400), 371);
        assert_eq!(batch_byte_limit(0), 0);
        assert_eq!(batch_byte_limit(usize::MAX), usize::MAX - 30);
    }

    #[test]
    fn missing_id_errors() {
        let err =
            merge_row_batch(vec![row(json!({"id": "a"})), row(json!({"id": null}))]).unwrap_err();
        assert_eq!(err, MergeError::MissingId { index: 1 });
        assert_eq!(err.to_string(), MISSING_ID_MESSAGE);
        assert!(merge_row_batch(vec![row(json!({"input": 1}))]).is_err());
        assert_eq!(merge_row_batch(vec![]).unwrap(), Vec::<Row>::new());
    }

    #[test]
    fn truthiness_of_is_merge() {
        for (flag, merged) in [
            (json!(1), true),
            (json!("yes"), true),
            (json!(0), false),
            (json!(""), false),
            (json!(null), false),
            (json!([]), false),
        ] {
            let out = merge_row_batch(vec![
                row(json!({"id": "a", "x": {"a": 1}})),
                row(json!({"id": "a", "x": {"b": 2}, "_is_merge": flag})),
            ])
            .unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0]["x"].get("a").is_some(), merged, "{flag}");
        }
    }

    #[test]
    fn merge_keeps_is_merge_when_stored_was_merge_and_orders_skip_fields() {
        let out = merge_row_batch(vec![
            row(json!({"id": "a", "span_parents": ["p"], "_is_merge": true, "created": "c", "x": 1})),
            row(json!({"id": "a", "_is_merge": true, "y": 2, "_parent_id": "late", "created": "d"})),
        ])
        .unwrap();
        assert_eq!(
            keys(&out[0]),
            vec!["id", "_is_merge", "x", "y", "created", "span_parents"]
        );
        assert_eq!(out[0]["created"], json!("c"));
    }

    #[test]
    fn deep_merge_semantics() {
        let mut t =
            row(json!({"tags": ["a", "a", 1], "m": {"tags": ["x"], "n": {"k": 1}}, "s": 1}));
        deep_merge_into(
            &mut t,
            row(
                json!({"tags": ["b", "a", "1", {"z": 1, "y": 2}, {"y": 2, "z": 1}], "m": {"tags": ["y"], "n": {"j": 2}}, "s": {"now": "obj"}, "new": null}),
            ),
        );
        assert_eq!(
            Value::Object(t.clone()),
            json!({"tags": ["a", 1, "b", "1", {"z": 1, "y": 2}], "m": {"tags": ["y"], "n": {"k": 1, "j": 2}}, "s": {"now": "obj"}, "new": null})
        );
        assert_eq!(keys(&t), vec!["tags", "m", "s", "new"]);
        // Tags replace when either side is not an array.
        let mut t = row(json!({"tags": null}));
        deep_merge_into(&mut t, row(json!({"tags": ["a"]})));
        assert_eq!(t["tags"], json!(["a"]));
        deep_merge_into(&mut t, row(json!({"tags": null})));
        assert_eq!(t["tags"], json!(null));
        // Skip fields are merged normally by deep_merge_into itself.
        let mut t = row(json!({"created": "a"}));
        deep_merge_into(&mut t, row(json!({"created": "b"})));
        assert_eq!(t["created"], json!("b"));
    }

    #[test]
    fn key_covers_non_string_values() {
        let out = merge_row_batch(vec![
            row(json!({"id": 1, "log_id": "g"})),
            row(json!({"id": "1", "log_id": "g"})),
            row(json!({"id": 1, "log_id": "g", "_is_merge": true, "x": 1})),
            row(json!({"id": 1, "log_id": null, "x": 2})),
        ])
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0]["x"], json!(1));
        assert_eq!(out[2]["x"], json!(2));
    }

    #[test]
    fn batch_partition_boundaries() {
        // limit = 100 - 29 = 71; cost = size + 1.
        assert_eq!(batch_byte_limit(100), 71);
        // 35 + 35 = 70 < 71: together.
        assert_eq!(batch_partition(&[34, 34], 10, 100), vec![vec![0, 1]]);
        // 35 + 36 = 71, not < 71: split (Python's strict comparison).
        assert_eq!(batch_partition(&[34, 35], 10, 100), vec![vec![0], vec![1]]);
        assert_eq!(batch_partition(&[], 10, 100), Vec::<Vec<usize>>::new());
        assert_eq!(
            batch_partition(&[1, 1, 1], 0, 100),
            vec![vec![0], vec![1], vec![2]]
        );
        assert_eq!(batch_partition(&[500, 1], 10, 100), vec![vec![0], vec![1]]);
        assert_eq!(
            batch_partition(&[usize::MAX, 1], 10, usize::MAX),
            vec![vec![0], vec![1]]
        );
    }

    #[test]
    fn bodies_stay_within_max_request_size() {
        let sizes: Vec<usize> = (0..200).map(|i| (i * 37) % 90 + 1).collect();
        for max in [40usize, 64, 100, 257, 1000] {
            for batch in batch_partition(&sizes, 7, max) {
                assert!(batch.len() <= 7);
                let body = LOGS3_ENVELOPE_LEN
                    + batch.iter().map(|&i| sizes[i]).sum::<usize>()
                    + batch.len()
                    - 1;
                assert!(batch.len() == 1 || body < max, "max {max} body {body}");
            }
        }
    }

    #[test]
    fn merge_is_linear_time() {
        let n = 20_000;
        let mut rows = Vec::with_capacity(3 * n);
        for i in 0..n {
            let id = format!("row-{i}");
            rows.push(row(json!({"id": id, "project_id": "p", "log_id": "g", "_is_merge": false,
                "span_id": "s", "root_span_id": "t", "span_parents": null, "created": "c",
                "metrics": {"start": 1.0}, "span_attributes": {"name": "n", "type": "task"}, "input": {"q": i}})));
        }
        for i in 0..n {
            rows.push(row(json!({"id": format!("row-{i}"), "project_id": "p", "log_id": "g", "_is_merge": true,
                "span_id": "s", "root_span_id": "t", "output": {"a": i}, "tags": ["x"]})));
            rows.push(row(json!({"id": format!("row-{i}"), "project_id": "p", "log_id": "g", "_is_merge": true,
                "span_id": "s", "root_span_id": "t", "metrics": {"end": 2.0}})));
        }
        let start = std::time::Instant::now();
        let out = merge_row_batch(rows).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(out.len(), n);
        assert!(out[n - 1].get(IS_MERGE_FIELD).is_none());
        assert_eq!(out[7]["metrics"], json!({"start": 1.0, "end": 2.0}));
        // Generous bound (debug build, shared CI machine): 60k rows.
        assert!(elapsed.as_secs() < 10, "merge took {elapsed:?}");
    }
}
