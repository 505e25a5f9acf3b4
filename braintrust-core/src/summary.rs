//! Experiment summaries: [`Experiment::summarize`] asks the backend
//! (`GET /v1/experiment/{id}/summarize`) for the experiment's score and metric
//! averages, compared with another experiment.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::api::join_url;
use crate::{Error, Experiment};

/// One score averaged over the experiment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScoreSummary {
    /// Score name.
    pub name: String,
    /// Average, 0 to 1.
    pub score: f64,
    /// Difference with the comparison experiment, when there is one.
    #[serde(default)]
    pub diff: Option<f64>,
    /// Rows that improved on the comparison experiment, when the backend counts them.
    #[serde(default)]
    pub improvements: Option<u64>,
    /// Rows that regressed, when the backend counts them.
    #[serde(default)]
    pub regressions: Option<u64>,
}

/// One metric (for example `duration` or `total_tokens`) averaged over the experiment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MetricSummary {
    /// Metric name.
    pub name: String,
    /// Average value.
    pub metric: f64,
    /// Unit, for example `s` or `tok`.
    #[serde(default)]
    pub unit: String,
    /// Difference with the comparison experiment, when there is one.
    #[serde(default)]
    pub diff: Option<f64>,
    /// Rows that improved, when the backend counts them.
    #[serde(default)]
    pub improvements: Option<u64>,
    /// Rows that regressed, when the backend counts them.
    #[serde(default)]
    pub regressions: Option<u64>,
}

/// Totals over every stored span of the experiment (reported by the local server).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SummaryTotals {
    /// Spans stored.
    pub spans: u64,
    /// Traces (root spans) stored.
    pub traces: u64,
    /// Sum of the root spans' durations, seconds.
    pub duration_s: f64,
    /// Prompt tokens over all spans.
    pub prompt_tokens: f64,
    /// Completion tokens over all spans.
    pub completion_tokens: f64,
    /// All tokens over all spans.
    pub tokens: f64,
}

/// What [`Experiment::summarize`] returns. `Display` prints it for a terminal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExperimentSummary {
    /// Project name.
    pub project_name: String,
    /// Experiment name.
    pub experiment_name: String,
    /// Link to the project.
    #[serde(default)]
    pub project_url: String,
    /// Link to the experiment.
    #[serde(default)]
    pub experiment_url: String,
    /// The experiment the differences are taken against.
    #[serde(default)]
    pub comparison_experiment_name: Option<String>,
    /// Score averages by name.
    #[serde(default)]
    pub scores: BTreeMap<String, ScoreSummary>,
    /// Metric averages by name.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSummary>,
    /// Span, duration and token totals, when the server reports them.
    #[serde(default)]
    pub totals: Option<SummaryTotals>,
}

fn signed(d: Option<f64>, scale: f64, unit: &str) -> String {
    match d {
        Some(d) => format!(" ({:+.2}{unit})", d * scale),
        None => String::new(),
    }
}

impl fmt::Display for ExperimentSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "=========================SUMMARY========================="
        )?;
        writeln!(f, "{} / {}", self.project_name, self.experiment_name)?;
        if let Some(c) = &self.comparison_experiment_name {
            writeln!(f, "compared with {c}")?;
        }
        for s in self.scores.values() {
            writeln!(
                f,
                "{:.2}% '{}' score{}",
                s.score * 100.0,
                s.name,
                signed(s.diff, 100.0, "%")
            )?;
        }
        for m in self.metrics.values() {
            writeln!(
                f,
                "{:.2}{} '{}'{}",
                m.metric,
                m.unit,
                m.name,
                signed(m.diff, 1.0, &m.unit)
            )?;
        }
        if let Some(t) = &self.totals {
            writeln!(
                f,
                "{} spans in {} traces, {:.2}s, {} tokens ({} prompt, {} completion)",
                t.spans, t.traces, t.duration_s, t.tokens, t.prompt_tokens, t.completion_tokens
            )?;
        }
        if !self.experiment_url.is_empty() {
            writeln!(f, "See results at {}", self.experiment_url)?;
        }
        Ok(())
    }
}

impl Experiment {
    /// Flushes the experiment, then fetches its summary from the backend: each score's
    /// average, metric averages (`duration`, token counts) and, from the local server, span,
    /// duration and token totals. Blocks; call it from synchronous code or `spawn_blocking`.
    ///
    /// ```no_run
    /// let experiment = braintrust_core::init_experiment(
    ///     braintrust_core::ExperimentOptions::new().project("my-project"),
    /// )?;
    /// // ... log the experiment's rows ...
    /// let summary = experiment.summarize()?;
    /// print!("{summary}");
    /// # Ok::<(), braintrust_core::Error>(())
    /// ```
    pub fn summarize(&self) -> Result<ExperimentSummary, Error> {
        self.0.flush()?;
        let id = self.0.resolve_id()?;
        let state = self.0.state().clone();
        let login = state.login()?;
        let key = state.config().api_key.clone().ok_or(Error::NoApiKey)?;
        let http = state.api().http()?;
        let url = join_url(
            &login.api_url,
            &format!("v1/experiment/{id}/summarize?summarize_scores=true"),
        );
        let context = format!("GET {url}");
        // A private runtime on its own thread: the caller may be inside a runtime already.
        let fetch = std::thread::spawn(move || -> Result<ExperimentSummary, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let resp = http
                    .get(&url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.text().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("[{}] {body}", status.as_u16()));
                }
                serde_json::from_str(&body).map_err(|e| format!("unexpected summary: {e}"))
            })
        });
        fetch
            .join()
            .map_err(|_| "summary request panicked".to_string())
            .and_then(|r| r)
            .map_err(|message| Error::Http {
                context,
                message,
                status: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_backend_shape_and_prints_it() {
        // The fields of the backend's SummarizeExperimentResponse; `totals` is optional.
        let s: ExperimentSummary = serde_json::from_value(serde_json::json!({
            "project_name": "p", "experiment_name": "e", "project_url": "u/p",
            "experiment_url": "u/p/experiments/e", "comparison_experiment_name": "base",
            "scores": {"acc": {"name": "acc", "score": 0.75, "diff": 0.25,
                               "improvements": 1, "regressions": 0}},
            "metrics": {"duration": {"name": "duration", "metric": 1.5, "unit": "s",
                                     "diff": null, "improvements": null, "regressions": null}}
        }))
        .unwrap();
        assert_eq!(s.scores["acc"].improvements, Some(1));
        assert_eq!(s.totals, None);
        assert_eq!(
            s.to_string().lines().skip(1).collect::<Vec<_>>(),
            [
                "p / e",
                "compared with base",
                "75.00% 'acc' score (+25.00%)",
                "1.50s 'duration'",
                "See results at u/p/experiments/e",
            ]
        );
    }
}
