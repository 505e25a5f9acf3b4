//! Token usage → span metrics (spec §9.1 table), shared by chat, responses,
//! embeddings and the custom-LLM helper.

use braintrust_core::ValidationError;
use serde_json::{Map, Value};

/// Maps an OpenAI-style `usage` object to Braintrust metric names:
///
/// | usage key | metric |
/// |---|---|
/// | `prompt_tokens` / `input_tokens` | `prompt_tokens` |
/// | `completion_tokens` / `output_tokens` | `completion_tokens` |
/// | `total_tokens` / `tokens` | `tokens` |
/// | `<x>_tokens_details.<k>` (numeric) | `prompt_<k>` for `input`/`prompt`, `completion_<k>` for `output`/`completion`, else `<x>_<k>` |
/// | `prompt_cache_write_tokens` | `prompt_cache_creation_tokens` |
/// | other numeric top-level keys | kept under their own names |
///
/// Other non-numeric values are skipped. Values that would make a wrong
/// metric are left out (the wrapper's spans report each one on stderr,
/// once per field, and count it in `Stats::rejected_logs`):
///
/// * a negative value (token counts and costs are not negative);
/// * a value above 2^53, the largest integer every JSON reader keeps exact
///   (a backend summing token counts overflows on such values, failing
///   the whole request that carries the row);
/// * a value for `start`, `end` or `time_to_first_token`, the span's own
///   timing, which the usage cannot set;
/// * a token count that is not a number (a top-level key ending in `tokens`,
///   or an entry of a `*_tokens_details` object), `null` aside.
///
/// Anything but an object gives no metrics.
///
/// ```
/// use serde_json::json;
/// let m = braintrust_openai::usage_to_metrics(&json!({
///     "input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
///     "input_tokens_details": {"cached_tokens": 1},
///     "output_tokens_details": {"reasoning_tokens": 0}
/// }));
/// assert_eq!(m, vec![
///     ("prompt_tokens".to_string(), 5.0),
///     ("completion_tokens".to_string(), 2.0),
///     ("tokens".to_string(), 7.0),
///     ("prompt_cached_tokens".to_string(), 1.0),
///     ("completion_reasoning_tokens".to_string(), 0.0),
/// ]);
/// ```
pub fn usage_to_metrics(usage: &Value) -> Vec<(String, f64)> {
    checked_usage_metrics(usage).metrics
}

/// The largest usage value logged: 2^53, the largest integer every JSON
/// reader keeps exact (JavaScript's safe-integer limit).
pub(crate) const MAX_USAGE_VALUE: f64 = 9_007_199_254_740_992.0;

/// Metric names the span's timing owns: a usage value cannot set them.
const RESERVED_METRICS: [&str; 3] = ["start", "end", "time_to_first_token"];

/// The metrics of a `usage` object, and the values left out of them.
#[derive(Debug, Default)]
pub(crate) struct UsageMetrics {
    pub metrics: Vec<(String, f64)>,
    /// One per value left out, naming its path in the usage (`usage.cost`).
    pub left_out: Vec<ValidationError>,
}

/// [`usage_to_metrics`], also returning what it left out and why.
pub(crate) fn checked_usage_metrics(usage: &Value) -> UsageMetrics {
    let mut out = UsageMetrics::default();
    match usage {
        Value::Object(map) => collect(map, &mut out),
        Value::Null => {}
        _ => out.reject("usage".into(), "usage must be an object"),
    }
    out
}

fn collect(map: &Map<String, Value>, out: &mut UsageMetrics) {
    for (key, value) in map {
        match value {
            Value::Number(n) => {
                let name = match key.as_str() {
                    "prompt_tokens" | "input_tokens" => "prompt_tokens",
                    "completion_tokens" | "output_tokens" => "completion_tokens",
                    "total_tokens" | "tokens" => "tokens",
                    "prompt_cache_write_tokens" => "prompt_cache_creation_tokens",
                    other => other,
                };
                out.push(format!("usage.{key}"), name.to_string(), n.as_f64());
            }
            Value::Object(details) => {
                let Some(prefix) = key.strip_suffix("_tokens_details") else {
                    continue;
                };
                let prefix = match prefix {
                    "input" | "prompt" => "prompt",
                    "output" | "completion" => "completion",
                    other => other,
                };
                for (k, v) in details {
                    let path = format!("usage.{key}.{k}");
                    match v {
                        Value::Number(n) => out.push(path, format!("{prefix}_{k}"), n.as_f64()),
                        Value::Null => {}
                        _ => out.reject(path, "token counts must be numbers"),
                    }
                }
            }
            Value::Null => {}
            _ if key.ends_with("tokens") => {
                out.reject(format!("usage.{key}"), "token counts must be numbers")
            }
            _ => {}
        }
    }
}

impl UsageMetrics {
    fn reject(&mut self, field: String, rule: &str) {
        self.left_out.push(ValidationError {
            field,
            rule: rule.into(),
        });
    }

    /// Adds metric `name` from the value at `path`, or leaves it out. Later
    /// values win, as they would in the merged row.
    fn push(&mut self, path: String, name: String, v: Option<f64>) {
        if RESERVED_METRICS.contains(&name.as_str()) {
            return self.reject(
                path,
                &format!("`{name}` is the span's own timing; the usage cannot set it"),
            );
        }
        // Not `v < 0.0`: a NaN is left out too.
        let Some(v) = v.filter(|v| *v >= 0.0) else {
            return self.reject(path, "usage values must not be negative");
        };
        if v > MAX_USAGE_VALUE {
            return self.reject(path, "usage values must be at most 2^53");
        }
        match self.metrics.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = v,
            None => self.metrics.push((name, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_usage_from_the_capture() {
        let m = usage_to_metrics(&json!({
            "prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            }
        }));
        let names: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "prompt_tokens",
                "completion_tokens",
                "tokens",
                "prompt_cached_tokens",
                "prompt_audio_tokens",
                "completion_reasoning_tokens",
                "completion_audio_tokens",
                "completion_accepted_prediction_tokens",
                "completion_rejected_prediction_tokens"
            ]
        );
    }

    #[test]
    fn renames_and_passthrough() {
        let m = usage_to_metrics(&json!({
            "prompt_cache_write_tokens": 4, "cost": 0.5, "model": "x",
            "server_tool_use": {"web_search_requests": 1}, "flag": true,
            "cache_tokens_details": {"hits": 2}
        }));
        assert_eq!(
            m,
            vec![
                ("prompt_cache_creation_tokens".into(), 4.0),
                ("cost".into(), 0.5),
                ("cache_hits".into(), 2.0)
            ]
        );
        assert!(usage_to_metrics(&json!(null)).is_empty());
    }

    #[test]
    fn wrong_values_are_left_out_and_named() {
        let m = checked_usage_metrics(&json!({
            "prompt_tokens": 5, "cost": -0.5, "start": 1, "end": 2,
            "time_to_first_token": 9, "completion_tokens": "2", "total_tokens": null, "huge": 1e19,
            "prompt_tokens_details": {"cached_tokens": -1, "audio_tokens": [1], "text_tokens": 4},
            "note": "kept out quietly"
        }));
        assert_eq!(
            m.metrics,
            vec![
                ("prompt_tokens".to_string(), 5.0),
                ("prompt_text_tokens".to_string(), 4.0)
            ]
        );
        let mut left_out: Vec<String> = m.left_out.iter().map(|e| e.to_string()).collect();
        left_out.sort();
        assert_eq!(
            left_out,
            [
                "invalid `usage.completion_tokens`: token counts must be numbers",
                "invalid `usage.cost`: usage values must not be negative",
                "invalid `usage.end`: `end` is the span's own timing; the usage cannot set it",
                "invalid `usage.huge`: usage values must be at most 2^53",
                "invalid `usage.prompt_tokens_details.audio_tokens`: token counts must be numbers",
                "invalid `usage.prompt_tokens_details.cached_tokens`: usage values must not be negative",
                "invalid `usage.start`: `start` is the span's own timing; the usage cannot set it",
                "invalid `usage.time_to_first_token`: `time_to_first_token` is the span's own timing; the usage cannot set it",
            ]
        );
        let m = checked_usage_metrics(&json!("many"));
        assert_eq!(
            m.left_out[0].to_string(),
            "invalid `usage`: usage must be an object"
        );
    }
}
