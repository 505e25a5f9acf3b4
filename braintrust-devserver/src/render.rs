//! Text rendering of traces.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::Value;

fn str_field<'a>(row: &'a Value, field: &str) -> Option<&'a str> {
    row.get(field).and_then(Value::as_str)
}

fn metric(row: &Value, name: &str) -> Option<f64> {
    row.get("metrics")
        .and_then(|m| m.get(name))
        .and_then(Value::as_f64)
}

/// The span's display name: `span_attributes.name`, else its id.
pub(crate) fn span_name(row: &Value) -> String {
    row.get("span_attributes")
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| str_field(row, "id").map(|id| format!("<{id}>")))
        .unwrap_or_else(|| "<unnamed>".to_string())
}

/// The span's type (`span_attributes.type`), if any.
pub(crate) fn span_type(row: &Value) -> Option<String> {
    row.get("span_attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Duration in milliseconds from `metrics.start`/`metrics.end` (Unix seconds).
pub(crate) fn duration_ms(row: &Value) -> Option<f64> {
    Some((metric(row, "end")? - metric(row, "start")?) * 1000.0)
}

/// One line summarising the `error` field, if present and non-null.
pub(crate) fn error_summary(row: &Value) -> Option<String> {
    let err = row.get("error")?;
    let text = match err {
        Value::Null => return None,
        Value::String(s) => {
            let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let pick = if lines.first().is_some_and(|l| l.starts_with("Traceback")) {
                lines.last()
            } else {
                lines.first()
            };
            pick.map(|s| s.to_string()).unwrap_or_default()
        }
        other => other.to_string(),
    };
    Some(truncate(&text, 200))
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

fn scores_summary(row: &Value) -> Option<String> {
    let scores = row.get("scores")?.as_object()?;
    if scores.is_empty() {
        return None;
    }
    Some(
        scores
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn render_line(out: &mut String, row: &Value, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
    out.push_str(&span_name(row));
    if let Some(t) = span_type(row) {
        let _ = write!(out, " [{t}]");
    }
    match duration_ms(row) {
        Some(ms) => {
            out.push(' ');
            out.push_str(&format_duration(ms));
        }
        None => out.push_str(" (unfinished)"),
    }
    for (label, field) in [("in", "input"), ("out", "output")] {
        if let Some(v) = row.get(field).filter(|v| !v.is_null()) {
            let _ = write!(out, " {label}: {}", preview(v, PREVIEW_CHARS));
        }
    }
    if let Some(e) = error_summary(row) {
        let _ = write!(out, " error: {e}");
    }
    if let Some(s) = scores_summary(row) {
        let _ = write!(out, " scores: {s}");
    }
    out.push('\n');
}

/// How many characters of a span's input or output a tree line shows.
const PREVIEW_CHARS: usize = 48;

/// A duration with three significant digits: sub-millisecond spans (most
/// local function calls) would otherwise all read `0.0ms`.
pub(crate) fn format_duration(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Compact JSON of `v`, cut to `max_chars` characters.
pub(crate) fn preview(v: &Value, max_chars: usize) -> String {
    truncate(&v.to_string(), max_chars)
}

fn parents(row: &Value) -> Vec<&str> {
    match row.get("span_parents") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Renders the rows of one trace (in stored order) as an indented tree.
///
/// Each line is `<indent><name>[ [type]] <duration>[ in: <preview>][ out: <preview>]`
/// `[ error: <summary>][ scores: k=v, ...]`, with two spaces of indent per level. Children are ordered by `metrics.start`, then by storage
/// order. Spans whose parent is not in the trace are shown as extra roots.
pub(crate) fn render_trace(rows: &[Value]) -> String {
    let span_ids: Vec<Option<&str>> = rows.iter().map(|r| str_field(r, "span_id")).collect();
    let by_span: HashMap<&str, usize> = span_ids
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (s, i)))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let parent = parents(row)
            .into_iter()
            .find_map(|p| by_span.get(p).copied())
            .filter(|&p| p != i);
        match parent {
            Some(p) => children.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    let order = |v: &mut Vec<usize>| {
        v.sort_by(|&a, &b| {
            let sa = metric(&rows[a], "start").unwrap_or(f64::INFINITY);
            let sb = metric(&rows[b], "start").unwrap_or(f64::INFINITY);
            sa.partial_cmp(&sb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        })
    };
    order(&mut roots);
    for v in children.values_mut() {
        order(v);
    }
    let mut out = String::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        render_line(&mut out, &rows[i], depth);
        if let Some(kids) = children.get(&i) {
            for &k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    // Rows caught in a parent cycle are never reached from a root: show them flat.
    for (i, row) in rows.iter().enumerate() {
        if !seen.contains(&i) {
            render_line(&mut out, row, 0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_nested_tree() {
        let rows = vec![
            json!({"id":"a","span_id":"s1","root_span_id":"t","span_parents":null,
                   "span_attributes":{"name":"root","type":"task"},
                   "metrics":{"start":1.0,"end":1.5}}),
            json!({"id":"c","span_id":"s3","root_span_id":"t","span_parents":["s1"],
                   "span_attributes":{"name":"second"},
                   "metrics":{"start":1.2,"end":1.3},"error":"boom\n\ncaused by x"}),
            json!({"id":"b","span_id":"s2","root_span_id":"t","span_parents":["s1"],
                   "span_attributes":{"name":"first","type":"llm"},
                   "metrics":{"start":1.1,"end":1.15},"scores":{"acc":1,"skip":null}}),
        ];
        assert_eq!(
            render_trace(&rows),
            "root [task] 500.0ms\n  first [llm] 50.0ms scores: acc=1, skip=null\n  second 100.0ms error: boom\n"
        );
    }

    #[test]
    fn durations_keep_three_significant_digits() {
        assert_eq!(format_duration(0.0421), "42µs");
        assert_eq!(format_duration(3.2149), "3.21ms");
        assert_eq!(format_duration(250.04), "250.0ms");
        assert_eq!(format_duration(12_345.0), "12.35s");
    }

    #[test]
    fn lines_preview_input_and_output() {
        let long = "x".repeat(100);
        let rows = vec![json!({"id":"a","span_id":"s1","root_span_id":"s1",
            "span_attributes":{"name":"ask"},"metrics":{"start":1.0,"end":1.0005},
            "input":{"q":"What is 1+1?"},"output":long})];
        let line = render_trace(&rows);
        assert!(
            line.starts_with("ask 500µs in: {\"q\":\"What is 1+1?\"} out: \"xxx"),
            "{line}"
        );
        assert!(line.trim_end().ends_with('…'), "{line}");
        assert_eq!(
            line.trim_end().chars().count(),
            "ask 500µs in: {\"q\":\"What is 1+1?\"} out: "
                .chars()
                .count()
                + PREVIEW_CHARS
                + 1
        );
    }
}
