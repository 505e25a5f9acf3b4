//! Server-side row merge (protocol spec §4.5, as the backend applies it).

use serde_json::{Map, Value};

/// Top-level fields whose stored value wins over a merge row's value.
const KEEP_STORED: &[&str] = &[
    "created",
    "span_id",
    "root_span_id",
    "span_parents",
    "_parent_id",
];

/// Control keys that are directives to the server and never stored.
pub(crate) const CONTROL_KEYS: &[&str] = &["_is_merge", "_merge_paths", "_object_delete"];

/// Parses `_merge_paths` (an array of arrays of strings) into paths.
fn merge_paths(row: &Map<String, Value>) -> Vec<Vec<String>> {
    let Some(Value::Array(paths)) = row.get("_merge_paths") else {
        return Vec::new();
    };
    paths
        .iter()
        .filter_map(|p| match p {
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .map(|s| match s {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Deep-merges the merge row `incoming` into `stored`.
///
/// * objects merge recursively; arrays, scalars and `null` replace;
/// * a top-level `tags` array is set-unioned with the stored one (stored items first);
/// * `created`, `span_id`, `root_span_id`, `span_parents` and `_parent_id` keep the stored
///   value when the stored row has one (otherwise the incoming value is taken);
/// * paths listed in the incoming `_merge_paths` are replaced instead of merged;
/// * control keys (`_is_merge`, `_merge_paths`, `_object_delete`) are not copied.
pub(crate) fn merge_into(stored: &mut Map<String, Value>, incoming: Map<String, Value>) {
    let paths = merge_paths(&incoming);
    let mut path = Vec::new();
    for (k, v) in incoming {
        if CONTROL_KEYS.contains(&k.as_str()) {
            continue;
        }
        if KEEP_STORED.contains(&k.as_str()) && stored.contains_key(&k) {
            continue;
        }
        path.push(k);
        let replace = paths.contains(&path);
        let k = path.pop().expect("pushed above");
        if replace {
            stored.insert(k, v);
            continue;
        }
        if k == "tags" {
            if let (Some(Value::Array(old)), Value::Array(new)) = (stored.get_mut("tags"), &v) {
                for t in new {
                    if !old.contains(t) {
                        old.push(t.clone());
                    }
                }
                continue;
            }
        }
        merge_value(stored, k, v, &mut path, &paths);
    }
}

fn merge_value(
    target: &mut Map<String, Value>,
    key: String,
    value: Value,
    path: &mut Vec<String>,
    paths: &[Vec<String>],
) {
    match (target.get_mut(&key), value) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            path.push(key);
            for (k, v) in new {
                path.push(k);
                let replace = paths.iter().any(|p| p == path);
                let k = path.pop().expect("pushed above");
                if replace {
                    old.insert(k, v);
                } else {
                    merge_value(old, k, v, path, paths);
                }
            }
            path.pop();
        }
        (_, value) => {
            target.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn deep_merge_and_replace() {
        let mut stored =
            obj(json!({"id":"r","metadata":{"a":{"b":1,"c":[1,2]},"k":"v"},"scores":{"s":0.5}}));
        merge_into(
            &mut stored,
            obj(
                json!({"id":"r","_is_merge":true,"metadata":{"a":{"c":[3],"d":2},"k":null},"scores":{"t":1}}),
            ),
        );
        assert_eq!(
            Value::Object(stored),
            json!({"id":"r","metadata":{"a":{"b":1,"c":[3],"d":2},"k":null},"scores":{"s":0.5,"t":1}})
        );
    }

    #[test]
    fn tags_union_and_nested_tags_replace() {
        let mut stored = obj(json!({"tags":["a","b"],"metadata":{"tags":["x"]}}));
        merge_into(
            &mut stored,
            obj(json!({"_is_merge":true,"tags":["b","c"],"metadata":{"tags":["y"]}})),
        );
        assert_eq!(
            Value::Object(stored),
            json!({"tags":["a","b","c"],"metadata":{"tags":["y"]}})
        );
    }

    #[test]
    fn keep_stored_fields() {
        let mut stored =
            obj(json!({"created":"first","span_id":"s","root_span_id":"t","span_parents":null}));
        merge_into(
            &mut stored,
            obj(
                json!({"_is_merge":true,"created":"second","span_id":"s2","root_span_id":"t2","span_parents":["zz"],"output":3}),
            ),
        );
        assert_eq!(
            Value::Object(stored),
            json!({"created":"first","span_id":"s","root_span_id":"t","span_parents":null,"output":3})
        );
    }

    #[test]
    fn merge_paths_replace() {
        let mut stored = obj(json!({"metadata":{"a":{"b":1}},"tags":["x"]}));
        merge_into(
            &mut stored,
            obj(
                json!({"_is_merge":true,"_merge_paths":[["metadata","a"],["tags"]],"metadata":{"a":{"c":2}},"tags":["y"]}),
            ),
        );
        assert_eq!(
            Value::Object(stored),
            json!({"metadata":{"a":{"c":2}},"tags":["y"]})
        );
    }
}
