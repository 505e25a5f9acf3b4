//! Row text handling that never builds a JSON tree deeper than one level: the top-level field
//! list, a nesting-depth scanner, deep parsing, and the fields derived for indexing.
//!
//! serde_json stops at 128 levels by default; rows from the SDKs can be deeper. Rows are kept as
//! text, split only at the top level (serde_json skips nested values iteratively), and parsed
//! fully only on a thread with a large stack ([`run_deep`]).

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The deepest row nesting accepted (objects and arrays), far beyond what the Python SDK can
/// serialise (about 1,000 levels) and what Node's `JSON.stringify` handles in practice.
pub(crate) const MAX_DEPTH: usize = 10_000;

/// Stack size of the threads that parse, merge and drop whole rows.
const DEEP_STACK_BYTES: usize = 64 << 20;

/// Runs `f` on a fresh thread with a stack large enough for [`MAX_DEPTH`]-deep JSON trees
/// (parse, merge, serialise and drop are all recursive).
pub(crate) async fn run_deep<T, F>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("braintrust-devserver-rows".into())
        .stack_size(DEEP_STACK_BYTES)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start row thread: {e}"))?;
    rx.await.map_err(|_| "row thread panicked".to_string())
}

/// Synchronous [`run_deep`]: runs `f` on a large-stack thread and waits for it.
pub(crate) fn run_deep_sync<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .stack_size(DEEP_STACK_BYTES)
        .spawn(f)
        .ok()?
        .join()
        .ok()
}

/// Maximum nesting depth of JSON text (brackets outside strings), without parsing it.
pub(crate) fn depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses JSON text of any depth into a tree. Call only on a [`run_deep`] thread (or for text
/// known to be shallow).
pub(crate) fn parse_deep(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let v = serde::Deserialize::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// A JSON object split at the top level: keys in order, values as raw text.
pub(crate) struct TopLevel(pub Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<TopLevel, A::Error> {
                let mut out: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the last value wins, as in a parsed object.
                    out.retain(|(old, _)| *old != k);
                    out.push((k, v));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl serde::Serialize for TopLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl TopLevel {
    /// Splits the text of a JSON object. Depth-safe.
    pub(crate) fn parse(text: &str) -> Result<TopLevel, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Raw text of a top-level field.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.get())
    }

    /// A top-level field that is present and not `null`.
    pub(crate) fn get_non_null(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| *v != "null")
    }

    /// A top-level string field.
    pub(crate) fn get_str(&self, key: &str) -> Option<String> {
        let raw = self.get(key)?;
        raw.starts_with('"')
            .then(|| serde_json::from_str::<String>(raw).ok())
            .flatten()
    }

    /// Sets (or replaces) a top-level field.
    pub(crate) fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Removes the given top-level keys.
    pub(crate) fn remove(&mut self, keys: &[&str]) {
        self.0.retain(|(k, _)| !keys.contains(&k.as_str()));
    }

    /// The object as compact JSON text.
    pub(crate) fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// Name of a JSON value's type, for error messages.
pub(crate) fn type_name(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// Longest text kept per span for free-text search.
const SEARCH_CHARS: usize = 8_192;
/// Longest input preview kept per span.
const PREVIEW_CHARS: usize = 200;

/// The columns derived from a stored row for filtering and the trace list.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Derived {
    pub root_span_id: Option<String>,
    pub span_id: Option<String>,
    pub is_root: bool,
    pub name: Option<String>,
    pub span_type: Option<String>,
    pub has_error: bool,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub tokens: i64,
    /// Lowercased text of `input` and `output` (string leaves and scalars), capped.
    pub search: String,
    /// Start of the input text, for the trace list.
    pub preview: String,
    /// Top-level metadata entries with scalar values: `(key, value text)`; strings unquoted.
    pub metadata: Vec<(String, String)>,
}

/// Appends the text of every scalar in `v` (strings unquoted) to `out`, space-separated,
/// until `out` holds `max` characters. Iterative, so depth does not matter.
fn collect_text(v: &Value, out: &mut String, max: usize) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        if out.chars().count() >= max {
            return;
        }
        match v {
            Value::Null => {}
            Value::String(s) => push_capped(out, s, max),
            Value::Bool(_) | Value::Number(_) => push_capped(out, &v.to_string(), max),
            Value::Array(a) => stack.extend(a.iter().rev()),
            Value::Object(m) => stack.extend(m.values().rev()),
        }
    }
}

fn push_capped(out: &mut String, s: &str, max: usize) {
    if !out.is_empty() {
        out.push(' ');
    }
    let room = max.saturating_sub(out.chars().count());
    out.extend(s.chars().take(room));
}

/// Text of a raw field for search (deep values are walked without recursion).
fn field_text(raw: Option<&str>, max: usize) -> String {
    let mut out = String::new();
    if let Some(raw) = raw {
        if let Ok(v) = parse_deep(raw) {
            collect_text(&v, &mut out, max);
        }
    }
    out
}

fn shallow_object(raw: Option<&str>) -> Option<TopLevel> {
    TopLevel::parse(raw?).ok()
}

fn number(raw: Option<&str>) -> Option<f64> {
    serde_json::from_str::<f64>(raw?).ok()
}

/// Derives the index columns of a row. Walks `input`/`output` fully, so call it on a
/// [`run_deep`] thread.
pub(crate) fn derive(row: &TopLevel) -> Derived {
    let attrs = shallow_object(row.get("span_attributes"));
    let metrics = shallow_object(row.get("metrics"));
    let metric = |k: &str| metrics.as_ref().and_then(|m| number(m.get(k)));
    let tokens = metric("tokens")
        .or_else(
            || match (metric("prompt_tokens"), metric("completion_tokens")) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0.0) + c.unwrap_or(0.0)),
            },
        )
        .unwrap_or(0.0);
    let is_root = match row.get("span_parents") {
        // Python always sends `span_parents` (null for roots); TypeScript omits it on roots.
        None | Some("null") => true,
        Some(raw) => serde_json::from_str::<Vec<Box<RawValue>>>(raw).is_ok_and(|p| p.is_empty()),
    };
    let input = field_text(row.get("input"), SEARCH_CHARS);
    let output = field_text(row.get("output"), SEARCH_CHARS);
    let preview: String = input.chars().take(PREVIEW_CHARS).collect();
    let mut search = input;
    push_capped(&mut search, &output, 2 * SEARCH_CHARS);
    let metadata = shallow_object(row.get("metadata"))
        .map(|m| {
            m.0.iter()
                .filter_map(|(k, v)| {
                    let raw = v.get();
                    match type_name(raw) {
                        "object" | "array" => None,
                        "string" => serde_json::from_str::<String>(raw)
                            .ok()
                            .map(|s| (k.clone(), s)),
                        _ => Some((k.clone(), raw.to_string())),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Derived {
        root_span_id: row.get_str("root_span_id"),
        span_id: row.get_str("span_id"),
        is_root,
        name: attrs.as_ref().and_then(|a| a.get_str("name")),
        span_type: attrs.as_ref().and_then(|a| a.get_str("type")),
        has_error: row.get_non_null("error").is_some(),
        start: metric("start"),
        end: metric("end"),
        tokens: tokens as i64,
        search: search.to_lowercase(),
        preview,
        metadata,
    }
}

/// Converts a tree back to a [`TopLevel`] (for merged rows).
pub(crate) fn top_level_of(v: Map<String, Value>) -> TopLevel {
    TopLevel(
        v.into_iter()
            .filter_map(|(k, v)| {
                let raw = serde_json::value::to_raw_value(&v).ok()?;
                Some((k, raw))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth(r#"{"a":[1,{"b":"[[[{{"}],"c":"\"]"}"#), 3);
        assert_eq!(depth("1"), 0);
    }

    #[test]
    fn top_level_keeps_deep_values_as_text() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let text = format!(r#"{{"id":"x","input":{deep},"id":"y"}}"#);
        let t = TopLevel::parse(&text).unwrap();
        assert_eq!(t.get("input"), Some(deep.as_str()));
        assert_eq!(t.get_str("id").as_deref(), Some("y"));
        assert_eq!(t.to_text(), format!(r#"{{"input":{deep},"id":"y"}}"#));
    }

    #[test]
    fn derives_index_columns() {
        let t = TopLevel::parse(
            r#"{"span_attributes":{"name":"ask","type":"llm"},"span_parents":["p"],
                "metrics":{"start":1.5,"end":2,"prompt_tokens":3,"completion_tokens":4},
                "error":null,"input":[{"role":"user","content":"Caf\u00e9?"}],"output":"Yes",
                "metadata":{"model":"gpt","n":2,"nested":{"a":1}}}"#,
        )
        .unwrap();
        let d = derive(&t);
        assert_eq!(d.name.as_deref(), Some("ask"));
        assert_eq!(d.span_type.as_deref(), Some("llm"));
        assert!(!d.is_root && !d.has_error);
        assert_eq!((d.start, d.end, d.tokens), (Some(1.5), Some(2.0), 7));
        assert_eq!(d.search, "user café? yes");
        assert_eq!(d.preview, "user Café?");
        assert_eq!(
            d.metadata,
            vec![("model".into(), "gpt".into()), ("n".into(), "2".into())]
        );
    }
}
