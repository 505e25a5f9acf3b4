//! Token usage → span metrics (spec §9.1 table), shared by chat, responses,
//! embeddings and the custom-LLM helper.

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
/// Non-numeric values are skipped. Anything but an object gives no metrics.
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
    let mut out = Vec::new();
    if let Value::Object(map) = usage {
        collect(map, &mut out);
    }
    out
}

fn collect(map: &Map<String, Value>, out: &mut Vec<(String, f64)>) {
    for (key, value) in map {
        match value {
            Value::Number(n) => {
                let Some(v) = n.as_f64() else { continue };
                let name = match key.as_str() {
                    "prompt_tokens" | "input_tokens" => "prompt_tokens",
                    "completion_tokens" | "output_tokens" => "completion_tokens",
                    "total_tokens" | "tokens" => "tokens",
                    "prompt_cache_write_tokens" => "prompt_cache_creation_tokens",
                    other => other,
                };
                push(out, name.to_string(), v);
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
                    if let Some(v) = v.as_f64() {
                        push(out, format!("{prefix}_{k}"), v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Later values win, as they would in the merged row.
fn push(out: &mut Vec<(String, f64)>, name: String, v: f64) {
    match out.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = v,
        None => out.push((name, v)),
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
}
