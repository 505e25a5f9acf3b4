//! `import` and `export`: span trees as JSON lines, one tree per line, in the guide's
//! generated-spans format `{name, input, output, expected, metadata, metrics, children}`
//! (plus `type`, `error`, `scores` and `tags` when a span has them). On import, a span without
//! a `type` whose metadata names a `model` or whose metrics count `prompt_tokens` becomes an
//! `llm` span.

use std::io::{BufRead, Write};
use std::path::Path;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::rowtext::{self, run_deep_sync};
use crate::store::{IngestError, RowFilter, Store};
use crate::util::{format_unix_millis, now_iso};

/// Fields copied between a tree node and a span row.
const FIELDS: [&str; 7] = [
    "input", "output", "expected", "metadata", "metrics", "error", "scores",
];

/// Where imported spans go, or which spans to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The logs of the project with this name (created when missing on import).
    ProjectLogs(String),
    /// The experiment `experiment` of project `project` (created when missing on import).
    Experiment {
        /// Project name.
        project: String,
        /// Experiment name.
        experiment: String,
    },
}

/// Errors from [`import_jsonl`] and [`export_jsonl`].
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a span tree; nothing of the input was stored.
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The database could not be opened or written.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The project or experiment to export does not exist.
    #[error("{0} not found")]
    NotFound(String),
}

/// What [`import_jsonl`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Trees (traces) imported.
    pub traces: usize,
    /// Spans imported.
    pub spans: usize,
}

fn hex_id(len: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(len);
    s
}

fn resolve(
    store: &Store,
    target: &Target,
    create: bool,
) -> Result<Map<String, Value>, TransferError> {
    let org = store.meta_get_or_init("org_id", || uuid::Uuid::new_v4().to_string())?;
    let project_name = match target {
        Target::ProjectLogs(p) => p,
        Target::Experiment { project, .. } => project,
    };
    let project = match (store.project_by_name(project_name)?, create) {
        (Some(p), _) => p,
        (None, true) => store.project_get_or_create(project_name, &org)?,
        (None, false) => return Err(TransferError::NotFound(format!("project {project_name}"))),
    };
    let pid = project["id"].as_str().unwrap_or_default().to_string();
    let mut ids = Map::new();
    match target {
        Target::ProjectLogs(_) => {
            ids.insert("project_id".into(), json!(pid));
            ids.insert("log_id".into(), json!("g"));
        }
        Target::Experiment { experiment, .. } => {
            let found = store
                .experiments(Some(&pid), Some(experiment))?
                .into_iter()
                .next();
            let exp = match (found, create) {
                (Some(e), _) => e,
                (None, true) => {
                    store.experiment_register(&pid, Some(experiment), false, Map::new())?
                }
                (None, false) => {
                    return Err(TransferError::NotFound(format!("experiment {experiment}")))
                }
            };
            ids.insert("experiment_id".into(), exp["id"].clone());
        }
    }
    Ok(ids)
}

/// Turns one tree into span rows without object ids (parents first). Iterative, so deep trees
/// are fine.
fn tree_rows(tree: Value, line: usize) -> Result<Vec<Map<String, Value>>, TransferError> {
    let bad = |message: String| TransferError::BadLine { line, message };
    if !tree.is_object() {
        return Err(bad("a span tree must be a JSON object".into()));
    }
    let root_span_id = hex_id(32);
    let mut rows = Vec::new();
    let mut stack: Vec<(Value, Option<String>, String)> = vec![(tree, None, "root".to_string())];
    while let Some((node, parent, path)) = stack.pop() {
        let Value::Object(mut node) = node else {
            return Err(bad(format!("{path}: a span must be a JSON object")));
        };
        let span_id = if parent.is_none() {
            root_span_id[..16].to_string()
        } else {
            hex_id(16)
        };
        let name = match node.remove("name") {
            None | Some(Value::Null) => if parent.is_none() { "root" } else { "span" }.to_string(),
            Some(Value::String(s)) => s,
            Some(_) => return Err(bad(format!("{path}: 'name' must be a string"))),
        };
        let mut row = Map::new();
        row.insert("id".into(), json!(span_id));
        row.insert("span_id".into(), json!(span_id));
        row.insert("root_span_id".into(), json!(root_span_id));
        row.insert(
            "span_parents".into(),
            parent.as_ref().map_or(Value::Null, |p| json!([p])),
        );
        let mut attrs = Map::new();
        attrs.insert("name".into(), json!(name));
        match node.remove("type").filter(|t| !t.is_null()) {
            Some(t) => {
                attrs.insert("type".into(), t);
            }
            // The guide's generated spans name no type; a span with a model or token counts
            // is an LLM call.
            None if node.get("metadata").and_then(|m| m.get("model")).is_some()
                || node
                    .get("metrics")
                    .and_then(|m| m.get("prompt_tokens"))
                    .is_some() =>
            {
                attrs.insert("type".into(), json!("llm"));
            }
            None => {}
        }
        row.insert("span_attributes".into(), Value::Object(attrs));
        let created = node
            .get("metrics")
            .and_then(|m| m.get("start"))
            .and_then(Value::as_f64)
            .map_or_else(now_iso, |s| format_unix_millis((s * 1000.0) as i64));
        row.insert("created".into(), json!(created));
        for f in FIELDS.iter().chain(&["tags"]) {
            if let Some(v) = node.remove(*f).filter(|v| !v.is_null()) {
                row.insert((*f).into(), v);
            }
        }
        match node.remove("children") {
            None | Some(Value::Null) => {}
            Some(Value::Array(kids)) => {
                for (i, kid) in kids.into_iter().enumerate().rev() {
                    stack.push((kid, Some(span_id.clone()), format!("{path}.children[{i}]")));
                }
            }
            Some(_) => return Err(bad(format!("{path}: 'children' must be an array"))),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Imports span trees (one JSON object per line; blank lines skipped) into `target` of the
/// database at `db`, keeping each tree's shape and the `metrics.start`/`end` times given.
/// All lines are checked before anything is stored.
///
/// ```no_run
/// use braintrust_devserver::{import_jsonl, Target};
/// let input = std::io::stdin().lock();
/// let done = import_jsonl("traces.sqlite".as_ref(), &Target::ProjectLogs("imported".into()), input)?;
/// println!("{} traces, {} spans", done.traces, done.spans);
/// # Ok::<(), braintrust_devserver::TransferError>(())
/// ```
pub fn import_jsonl(
    db: &Path,
    target: &Target,
    input: impl BufRead,
) -> Result<ImportSummary, TransferError> {
    let mut rows = Vec::new();
    let mut traces = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let text = line.clone();
        let parsed = run_deep_sync(move || rowtext::parse_deep(&text).map_err(|e| e.to_string()))
            .unwrap_or_else(|| Err("parser thread failed".into()))
            .map_err(|e| TransferError::BadLine {
                line: i + 1,
                message: format!("invalid JSON: {e}"),
            })?;
        rows.extend(tree_rows(parsed, i + 1)?);
        traces += 1;
    }
    // Every line is valid: only now is the database touched.
    let store = Store::open(Some(db))?;
    let ids = resolve(&store, target, true)?;
    let raws: Vec<Box<RawValue>> = rows
        .into_iter()
        .filter_map(|mut r| {
            r.extend(ids.clone());
            RawValue::from_string(Value::Object(r).to_string()).ok()
        })
        .collect();
    let spans = raws.len();
    let stored = run_deep_sync(move || store.ingest(&raws).map(|_| ()))
        .unwrap_or_else(|| Err(IngestError::BadRequest("ingest thread failed".into())));
    match stored {
        Ok(()) => Ok(ImportSummary { traces, spans }),
        Err(IngestError::Db(e)) => Err(TransferError::Db(e)),
        Err(IngestError::BadRequest(m)) => Err(TransferError::BadLine {
            line: 0,
            message: m,
        }),
    }
}

/// Writes every trace of `target` in the database at `db` as span trees, one JSON line per
/// trace, oldest first; [`import_jsonl`] reads them back.
///
/// ```no_run
/// use braintrust_devserver::{export_jsonl, Target};
/// let target = Target::Experiment { project: "p".into(), experiment: "baseline".into() };
/// export_jsonl("traces.sqlite".as_ref(), &target, std::io::stdout().lock())?;
/// # Ok::<(), braintrust_devserver::TransferError>(())
/// ```
pub fn export_jsonl(
    db: &Path,
    target: &Target,
    mut out: impl Write,
) -> Result<usize, TransferError> {
    let store = Store::open(Some(db))?;
    let ids = resolve(&store, target, false)?;
    let filter = RowFilter {
        project_id: ids
            .get("project_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        experiment_id: ids
            .get("experiment_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        log_id: ids
            .get("log_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        root_span_id: None,
    };
    let texts = store.rows_text(&filter)?;
    let lines = run_deep_sync(move || trees_of(&texts)).unwrap_or_default();
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(lines.len())
}

/// Groups stored rows into trees, in order of each trace's first row.
fn trees_of(texts: &[String]) -> Vec<String> {
    let rows: Vec<Map<String, Value>> = texts
        .iter()
        .filter_map(|t| match rowtext::parse_deep(t) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    let s = |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    let mut order: Vec<String> = Vec::new();
    let mut by_trace: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (i, r) in rows.iter().enumerate() {
        if let Some(root) = s(r, "root_span_id") {
            if !by_trace.contains_key(&root) {
                order.push(root.clone());
            }
            by_trace.entry(root).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for root in order {
        let idx = &by_trace[&root];
        let span_of: std::collections::HashMap<String, usize> = idx
            .iter()
            .filter_map(|&i| s(&rows[i], "span_id").map(|sp| (sp, i)))
            .collect();
        let mut kids: std::collections::HashMap<usize, Vec<usize>> = Default::default();
        let mut tops = Vec::new();
        for &i in idx {
            let parent = rows[i]
                .get("span_parents")
                .and_then(Value::as_array)
                .and_then(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .find_map(|p| span_of.get(p))
                })
                .copied()
                .filter(|&p| p != i);
            match parent {
                Some(p) => kids.entry(p).or_default().push(i),
                None => tops.push(i),
            }
        }
        let start = |i: &usize| {
            rows[*i]
                .get("metrics")
                .and_then(|m| m.get("start"))
                .and_then(Value::as_f64)
                .unwrap_or(f64::INFINITY)
        };
        for v in kids.values_mut() {
            v.sort_by(|a, b| start(a).total_cmp(&start(b)).then(a.cmp(b)));
        }
        for top in tops {
            out.push(node_json(top, &rows, &kids));
        }
    }
    out
}

/// One tree node and its subtree as JSON text, built without recursion.
fn node_json(
    top: usize,
    rows: &[Map<String, Value>],
    kids: &std::collections::HashMap<usize, Vec<usize>>,
) -> String {
    let head = |i: usize| {
        let r = &rows[i];
        let mut m = Map::new();
        let attrs = r.get("span_attributes");
        if let Some(n) = attrs.and_then(|a| a.get("name")) {
            m.insert("name".into(), n.clone());
        }
        if let Some(t) = attrs.and_then(|a| a.get("type")) {
            m.insert("type".into(), t.clone());
        }
        for f in FIELDS.iter().chain(&["tags"]) {
            if let Some(v) = r.get(*f).filter(|v| !v.is_null()) {
                m.insert((*f).into(), v.clone());
            }
        }
        let text = Value::Object(m).to_string();
        // Reopen the object to append `children`.
        let mut text = text[..text.len() - 1].to_string();
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str("\"children\":[");
        text
    };
    let mut out = head(top);
    let mut seen = std::collections::HashSet::from([top]);
    let mut stack = vec![(top, 0usize)];
    while let Some((n, next)) = stack.last_mut() {
        let list = kids.get(n).map(Vec::as_slice).unwrap_or(&[]);
        match list[*next..].iter().position(|k| !seen.contains(k)) {
            Some(off) => {
                let k = list[*next + off];
                *next += off + 1;
                if !out.ends_with('[') {
                    out.push(',');
                }
                seen.insert(k);
                out.push_str(&head(k));
                stack.push((k, 0));
            }
            None => {
                out.push_str("]}");
                stack.pop();
            }
        }
    }
    out
}
