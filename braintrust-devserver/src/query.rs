//! The JSON query API under `/dev/api/`: projects, experiments, rows, the filtered trace list
//! and one trace as a span tree. Rows are answered as the stored JSON text, so rows of any depth
//! come back intact.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::render;
use crate::rowtext::{self, run_deep, TopLevel};
use crate::server::{db, percent_decode, ApiError, ApiResult, Shared, St};
use crate::store::{RowFilter, TraceQuery};
use crate::util::parse_time;

/// Default and largest page size of `GET /dev/api/traces`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/dev/api/projects", get(projects))
        .route("/dev/api/experiments", get(experiments))
        .route("/dev/api/rows", get(rows))
        .route("/dev/api/traces", get(traces))
        .route("/dev/api/traces/{root_span_id}", get(trace))
        .route("/dev/api/trace/{root_span_id}", get(trace_text))
        .route("/dev/api/locate", get(locate))
}

/// A JSON response built from text already serialised.
fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Joins stored row texts into a JSON array.
fn json_array(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|s| s.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(t);
    }
    out.push(']');
    out
}

async fn projects(State(s): St) -> ApiResult {
    Ok(Json(Value::Array(db(&s, |st| st.projects()).await?)))
}

async fn experiments(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let project = q.get("project_id").filter(|v| !v.is_empty()).cloned();
    Ok(Json(Value::Array(
        db(&s, move |st| st.experiments(project.as_deref(), None)).await?,
    )))
}

fn row_filter(q: &HashMap<String, String>) -> RowFilter {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    RowFilter {
        project_id: get("project_id"),
        experiment_id: get("experiment_id"),
        root_span_id: get("root_span_id"),
        log_id: get("log_id"),
    }
}

async fn rows(
    State(s): St,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = row_filter(&q);
    let rows = db(&s, move |st| st.rows_text(&f)).await?;
    Ok(json_text(json_array(&rows)))
}

/// Parses the trace-list query string. Unknown parameters are refused so a typo is not a
/// silently ignored filter.
fn trace_query(raw: Option<&str>) -> Result<TraceQuery, ApiError> {
    let mut q = TraceQuery {
        limit: DEFAULT_LIMIT,
        ..TraceQuery::default()
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        if v.is_empty() {
            continue;
        }
        let time = |v: &str| {
            parse_time(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'{k}' must be Unix seconds or an RFC 3339 time (got '{v}')"
                ))
            })
        };
        match k.as_str() {
            "project_id" => q.project_id = Some(v),
            "experiment_id" => q.experiment_id = Some(v),
            "name" => q.name = Some(v),
            "type" => q.span_type = Some(v),
            "q" => q.text = Some(v),
            "error" => {
                q.error = Some(match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "'error' must be true or false (got '{v}')"
                        )))
                    }
                })
            }
            "since" => q.since = Some(time(&v)?),
            "until" => q.until = Some(time(&v)?),
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "'limit' must be an integer from 1 to {MAX_LIMIT} (got '{v}')"
                        ))
                    })?
            }
            "cursor" => {
                let parsed = v
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<i64>().ok()?)));
                q.before = Some(parsed.ok_or_else(|| {
                    ApiError::bad_request("'cursor' must be a next_cursor from an earlier page")
                })?);
            }
            other => match other.strip_prefix("metadata.") {
                Some(key) if !key.is_empty() => q.metadata.push((key.to_string(), v)),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter '{other}' (expected project_id, experiment_id, name, \
                         type, error, metadata.<key>, q, since, until, limit or cursor)"
                    )))
                }
            },
        }
    }
    Ok(q)
}

async fn traces(State(s): St, RawQuery(raw): RawQuery) -> ApiResult {
    let mut q = trace_query(raw.as_deref())?;
    let limit = q.limit;
    // One extra row tells whether another page exists.
    q.limit = limit + 1;
    let mut found = db(&s, move |st| st.traces(&q)).await?;
    let next_cursor = (found.len() > limit).then(|| {
        found.truncate(limit);
        let (start, seq) = found[limit - 1].cursor;
        format!("{start}:{seq}")
    });
    Ok(Json(json!({"traces": found, "next_cursor": next_cursor})))
}

/// One span of a trace, as needed to build the tree.
struct Node {
    text: String,
    span_id: Option<String>,
    parents: Vec<String>,
    start: f64,
}

fn node(text: String) -> Node {
    let top = TopLevel::parse(&text).ok();
    let span_id = top.as_ref().and_then(|t| t.get_str("span_id"));
    let parents = top
        .as_ref()
        .and_then(|t| t.get_non_null("span_parents"))
        .and_then(|p| serde_json::from_str::<Vec<String>>(p).ok())
        .unwrap_or_default();
    let start = top
        .as_ref()
        .and_then(|t| t.get("metrics"))
        .and_then(|m| TopLevel::parse(m).ok())
        .and_then(|m| m.get("start").and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(f64::INFINITY);
    Node {
        text,
        span_id,
        parents,
        start,
    }
}

/// Writes the spans as a nested tree `[{"span": <row>, "children": [...]}, ...]`.
///
/// A span is placed under its first parent found in the trace (every parent stays listed in its
/// `span_parents`); spans whose parents are missing are roots; siblings are ordered by
/// `metrics.start`, then storage order. Built without recursion, so long chains are fine.
fn tree_json(nodes: &[Node]) -> String {
    let by_span: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.span_id.as_deref().map(|s| (s, i)))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match n
            .parents
            .iter()
            .find_map(|p| by_span.get(p.as_str()).copied())
            .filter(|&p| p != i)
        {
            Some(p) => children[p].push(i),
            None => roots.push(i),
        }
    }
    let order = |v: &mut Vec<usize>| {
        v.sort_by(|&a, &b| nodes[a].start.total_cmp(&nodes[b].start).then(a.cmp(&b)))
    };
    order(&mut roots);
    children.iter_mut().for_each(order);
    let mut seen = vec![false; nodes.len()];
    let mut out = String::from("[");
    // Spans in a parent cycle are unreachable from a root: list them as roots too.
    let mut top: Vec<usize> = roots;
    let mut i = 0;
    loop {
        if i == top.len() {
            match (0..nodes.len()).find(|&n| !seen[n] && !top.contains(&n)) {
                Some(n) => top.push(n),
                None => break,
            }
        }
        let r = top[i];
        i += 1;
        if seen[r] {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        // (node, index of the next child to write)
        let mut stack = vec![(r, 0usize)];
        seen[r] = true;
        out.push_str("{\"span\":");
        out.push_str(&nodes[r].text);
        out.push_str(",\"children\":[");
        while let Some((n, next)) = stack.last_mut() {
            let kids = &children[*n];
            match kids[*next..].iter().position(|&k| !seen[k]) {
                Some(off) => {
                    let k = kids[*next + off];
                    *next += off + 1;
                    if !out.ends_with('[') {
                        out.push(',');
                    }
                    seen[k] = true;
                    out.push_str("{\"span\":");
                    out.push_str(&nodes[k].text);
                    out.push_str(",\"children\":[");
                    stack.push((k, 0));
                }
                None => {
                    out.push_str("]}");
                    stack.pop();
                }
            }
        }
    }
    out.push(']');
    out
}

async fn trace(State(s): St, Path(root): Path<String>) -> Result<Response, ApiError> {
    let r = root.clone();
    let (summary, rows) = db(&s, move |st| {
        let summary = st.trace_summary(&r)?;
        let rows = st.rows_text(&RowFilter {
            root_span_id: Some(r),
            ..RowFilter::default()
        })?;
        Ok((summary, rows))
    })
    .await?;
    let Some(summary) = summary else {
        return Err(ApiError::not_found(format!("trace {root} not found")));
    };
    let summary = serde_json::to_string(&summary).unwrap_or_else(|_| "null".into());
    let nodes: Vec<Node> = rows.into_iter().map(node).collect();
    let tree = tree_json(&nodes);
    let spans: Vec<String> = nodes.into_iter().map(|n| n.text).collect();
    Ok(json_text(format!(
        "{{\"trace\":{summary},\"spans\":{},\"tree\":{tree}}}",
        json_array(&spans)
    )))
}

async fn trace_text(State(s): St, Path(root): Path<String>) -> Result<String, ApiError> {
    let f = RowFilter {
        root_span_id: Some(root),
        ..RowFilter::default()
    };
    let rows = db(&s, move |st| st.rows_text(&f)).await?;
    run_deep(move || render_texts(&rows))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// Renders stored row texts as the indented text tree. Parses whole rows: call on a
/// [`run_deep`] thread.
pub(crate) fn render_texts(rows: &[String]) -> String {
    let values: Vec<Value> = rows
        .iter()
        .map(|t| rowtext::parse_deep(t).unwrap_or(Value::Null))
        .collect();
    render::render_trace(&values)
}

/// Where a row id lives: `{"root_span_id", "span_id"}` (used by permalinks).
async fn locate(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let id = q
        .get("id")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing 'id' query parameter"))?;
    let msg = format!("row {id} not found");
    let (root, span) = db(&s, move |st| st.span_location(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(msg))?;
    Ok(Json(json!({"root_span_id": root, "span_id": span})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(span: &str, parents: &[&str], start: f64) -> Node {
        node(
            json!({"span_id": span, "span_parents": parents, "metrics": {"start": start}})
                .to_string(),
        )
    }

    #[test]
    fn tree_nests_and_orders_children() {
        let nodes = vec![
            row("a", &[], 1.0),
            row("c", &["a"], 3.0),
            row("b", &["a"], 2.0),
            row("d", &["b", "c"], 4.0),
            row("x", &["y"], 0.5),
        ];
        let tree: Value = serde_json::from_str(&tree_json(&nodes)).unwrap();
        let ids = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|n| n["span"]["span_id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&tree), ["x", "a"]);
        assert_eq!(ids(&tree[1]["children"]), ["b", "c"]);
        assert_eq!(ids(&tree[1]["children"][0]["children"]), ["d"]);
    }

    #[test]
    fn tree_survives_cycles_and_long_chains() {
        let mut nodes = vec![row("p", &["q"], 1.0), row("q", &["p"], 2.0)];
        for i in 0..20_000 {
            let parent = if i == 0 {
                "p".to_string()
            } else {
                format!("n{}", i - 1)
            };
            nodes.push(row(&format!("n{i}"), &[parent.as_str()], 3.0));
        }
        let text = tree_json(&nodes);
        // list, p, p's children, then two levels per chained node, then the row and its metrics.
        assert_eq!(rowtext::depth(&text), 3 + 2 * 20_000 - 1 + 2);
        assert_eq!(text.matches("\"span\":").count(), nodes.len());
    }
}
