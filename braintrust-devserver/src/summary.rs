//! `GET /v1/experiment/{id}/summarize`: the backend's experiment summary (score and metric
//! averages, compared with another experiment), plus the devserver's `totals`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::rowtext::TopLevel;
use crate::store::{RowFilter, Store};

/// Per-experiment aggregates over its stored rows.
#[derive(Debug, Default)]
struct Aggregate {
    spans: u64,
    traces: u64,
    /// Sum and count of each score (rows with a numeric value).
    scores: BTreeMap<String, (f64, u64)>,
    duration_sum: f64,
    duration_count: u64,
    prompt_tokens: f64,
    completion_tokens: f64,
    tokens: f64,
}

fn number(raw: Option<&str>) -> Option<f64> {
    serde_json::from_str::<f64>(raw?).ok()
}

fn aggregate(store: &Store, experiment_id: &str) -> Result<Aggregate, rusqlite::Error> {
    let rows = store.rows_text(&RowFilter {
        experiment_id: Some(experiment_id.to_string()),
        ..RowFilter::default()
    })?;
    let mut a = Aggregate::default();
    for text in rows {
        let Ok(row) = TopLevel::parse(&text) else {
            continue;
        };
        a.spans += 1;
        if let Some(scores) = row.get("scores").and_then(|s| TopLevel::parse(s).ok()) {
            for (k, v) in &scores.0 {
                if let Some(x) = number(Some(v.get())) {
                    let e = a.scores.entry(k.clone()).or_default();
                    e.0 += x;
                    e.1 += 1;
                }
            }
        }
        let metrics = row.get("metrics").and_then(|m| TopLevel::parse(m).ok());
        let metric = |k: &str| metrics.as_ref().and_then(|m| number(m.get(k)));
        let (p, c) = (metric("prompt_tokens"), metric("completion_tokens"));
        a.prompt_tokens += p.unwrap_or(0.0);
        a.completion_tokens += c.unwrap_or(0.0);
        a.tokens += metric("tokens").unwrap_or(p.unwrap_or(0.0) + c.unwrap_or(0.0));
        let is_root = matches!(row.get("span_parents"), None | Some("null") | Some("[]"));
        if is_root {
            a.traces += 1;
            if let (Some(s), Some(e)) = (metric("start"), metric("end")) {
                a.duration_sum += e - s;
                a.duration_count += 1;
            }
        }
    }
    Ok(a)
}

impl Aggregate {
    fn score_avgs(&self) -> BTreeMap<String, f64> {
        self.scores
            .iter()
            .map(|(k, (sum, n))| (k.clone(), sum / *n as f64))
            .collect()
    }

    /// Metric averages per trace: `(name, value, unit)`.
    fn metric_avgs(&self) -> Vec<(&'static str, f64, &'static str)> {
        let mut out = Vec::new();
        if self.duration_count > 0 {
            out.push((
                "duration",
                self.duration_sum / self.duration_count as f64,
                "s",
            ));
        }
        if self.traces > 0 && self.tokens > 0.0 {
            let t = self.traces as f64;
            out.push(("prompt_tokens", self.prompt_tokens / t, "tok"));
            out.push(("completion_tokens", self.completion_tokens / t, "tok"));
            out.push(("total_tokens", self.tokens / t, "tok"));
        }
        out
    }
}

/// The experiment to compare with: the one asked for, else the experiment's
/// `base_exp_id`, else the newest earlier experiment of the same project.
fn comparison(
    store: &Store,
    experiment: &Value,
    asked: Option<&str>,
) -> Result<Option<Value>, rusqlite::Error> {
    if let Some(id) = asked {
        return store.experiment_by_id(id);
    }
    if let Some(id) = experiment["base_exp_id"].as_str() {
        if let Some(e) = store.experiment_by_id(id)? {
            return Ok(Some(e));
        }
    }
    let project = experiment["project_id"].as_str().unwrap_or_default();
    let all = store.experiments(Some(project), None)?;
    let me = experiment["id"].as_str();
    let pos = all.iter().position(|e| e["id"].as_str() == me);
    Ok(pos.and_then(|p| p.checked_sub(1)).map(|p| all[p].clone()))
}

/// Builds the summary of experiment `id`, or `None` if it does not exist.
pub(crate) fn summarize(
    store: &Store,
    base_url: &str,
    org_name: &str,
    id: &str,
    comparison_id: Option<&str>,
) -> Result<Option<Value>, rusqlite::Error> {
    let Some(experiment) = store.experiment_by_id(id)? else {
        return Ok(None);
    };
    let project_id = experiment["project_id"].as_str().unwrap_or_default();
    let project_name = store
        .project_by_id(project_id)?
        .and_then(|p| p["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let mine = aggregate(store, id)?;
    let other = comparison(store, &experiment, comparison_id)?;
    let theirs = match &other {
        Some(o) => Some(aggregate(store, o["id"].as_str().unwrap_or_default())?),
        None => None,
    };
    let their_scores = theirs
        .as_ref()
        .map(Aggregate::score_avgs)
        .unwrap_or_default();
    let their_metrics: BTreeMap<&str, f64> = theirs
        .as_ref()
        .map(|t| {
            t.metric_avgs()
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect()
        })
        .unwrap_or_default();
    let mut scores = Map::new();
    for (name, score) in mine.score_avgs() {
        let diff = their_scores.get(&name).map(|b| score - b);
        scores.insert(
            name.clone(),
            json!({"name": name, "score": score, "diff": diff,
                   "improvements": null, "regressions": null}),
        );
    }
    let mut metrics = Map::new();
    for (name, value, unit) in mine.metric_avgs() {
        let diff = their_metrics.get(name).map(|b| value - b);
        metrics.insert(
            name.to_string(),
            json!({"name": name, "metric": value, "unit": unit, "diff": diff,
                   "improvements": null, "regressions": null}),
        );
    }
    let enc = crate::server::encode_path_segment;
    let project_url = format!("{base_url}/app/{}/p/{}", enc(org_name), enc(&project_name));
    let experiment_name = experiment["name"].as_str().unwrap_or_default().to_string();
    Ok(Some(json!({
        "project_name": project_name,
        "experiment_name": experiment_name,
        "project_url": project_url,
        "experiment_url": format!("{project_url}/experiments/{}", enc(&experiment_name)),
        "comparison_experiment_name": other.as_ref().map(|o| o["name"].clone()),
        "scores": scores,
        "metrics": metrics,
        "totals": {
            "spans": mine.spans,
            "traces": mine.traces,
            "duration_s": mine.duration_sum,
            "prompt_tokens": mine.prompt_tokens,
            "completion_tokens": mine.completion_tokens,
            "tokens": mine.tokens,
        },
    })))
}
