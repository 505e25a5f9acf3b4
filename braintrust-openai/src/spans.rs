//! The spans of both clients, this crate's own [`OpenAiClient`] and the
//! `async-openai` wrapper, built in one place so the two cannot drift: per
//! endpoint kind, one function that starts the span from the serialized
//! request, and one that ends it from the response as JSON (or a stream's
//! accumulated state), its timing and the error, if any.
//!
//! [`OpenAiClient`]: crate::OpenAiClient

use std::error::Error;
use std::panic::Location;

use braintrust_core::{Event, Span, SpanArgs, SpanType};
use serde_json::{json, Map, Value};

use crate::chat::{ChatAccumulator, ChatCompletionChunk};
use crate::responses::ResponseAccumulator;
use crate::trace::{metrics_event, CallTrace, INSTRUMENTATION};

/// The span name of chat completions.
const CHAT: &str = "Chat Completion";
/// The span name of embeddings.
const EMBEDDING: &str = "Embedding";
/// The span name of Responses API calls.
const RESPONSES: &str = "openai.responses.create";

type DynError<'a> = &'a (dyn Error + 'static);

/// Starts a `Chat Completion` span: `input` = the request's messages,
/// `metadata` = its other fields plus `provider`.
pub(crate) fn chat_start(request: &Value, caller: &'static Location<'static>) -> CallTrace {
    CallTrace::start(CHAT, request, "messages", caller)
}

/// Ends a non-streaming chat span: `output` = the choices (with the standard
/// keys), metrics = usage and `time_to_first_token` (the whole call), and
/// the error when there is one (a response that arrived but did not decode
/// has both).
pub(crate) fn chat_end(trace: CallTrace, response: Option<&Value>, error: Option<DynError<'_>>) {
    let mut event = Event::new();
    if let Some(value) = response {
        event = metrics_event(&trace.span, value.get("usage"), Some(trace.elapsed()));
        if let Some(choices) = value.get("choices") {
            event = event.output(normalize_choices(choices));
        }
    }
    match error {
        Some(e) => trace.fail(event, e),
        None => trace.finish(event),
    }
}

/// The logged `output` of a non-streaming call: the choices as received,
/// with the standard message keys present (null when absent), as the
/// official SDK logs them.
pub(crate) fn normalize_choices(choices: &Value) -> Value {
    let Value::Array(list) = choices else {
        return choices.clone();
    };
    Value::Array(
        list.iter()
            .map(|c| {
                let mut c = c.clone();
                if let Value::Object(choice) = &mut c {
                    for k in ["logprobs", "finish_reason"] {
                        choice.entry(k).or_insert(Value::Null);
                    }
                    if let Some(Value::Object(m)) = choice.get_mut("message") {
                        for k in [
                            "role",
                            "content",
                            "refusal",
                            "tool_calls",
                            "function_call",
                            "audio",
                            "annotations",
                        ] {
                            m.entry(k).or_insert(Value::Null);
                        }
                    }
                }
                c
            })
            .collect(),
    )
}

/// The span of a streaming chat completion: chunks are aggregated as they
/// pass; dropping it before [`end`](Self::end) ends the span with what
/// arrived, marked cancelled.
pub(crate) struct ChatStreamSpan {
    call: Option<CallTrace>,
    acc: ChatAccumulator,
    first_chunk: bool,
}

impl ChatStreamSpan {
    pub(crate) fn new(call: CallTrace) -> Self {
        ChatStreamSpan {
            call: Some(call),
            acc: ChatAccumulator::default(),
            first_chunk: true,
        }
    }

    /// One chunk arrived: `time_to_first_token` on the first, then aggregated.
    pub(crate) fn chunk(&mut self, chunk: &ChatCompletionChunk) {
        if let Some(call) = &self.call {
            if std::mem::take(&mut self.first_chunk) {
                call.log(Event::new().metric("time_to_first_token", call.elapsed()));
            }
            self.acc.push(chunk);
        }
    }

    /// The stream ended (`None`) or failed: logs the aggregated choices and
    /// usage, plus the error, and ends the span.
    pub(crate) fn end(&mut self, error: Option<DynError<'_>>) {
        let Some(call) = self.call.take() else { return };
        let mut event = metrics_event(&call.span, self.acc.usage.as_ref(), None);
        match error {
            None => call.finish(event.output(self.acc.output(true))),
            Some(e) => {
                if self.acc.seen_choice() {
                    event = event.output(self.acc.output(false));
                }
                call.fail(event, e);
            }
        }
    }
}

impl Drop for ChatStreamSpan {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let mut event = metrics_event(&call.span, self.acc.usage.as_ref(), None);
            if self.acc.seen_choice() {
                event = event.output(self.acc.output(false));
            }
            call.cancel(event);
        }
    }
}

/// Starts an `Embedding` span: `input` = the request's input.
pub(crate) fn embeddings_start(request: &Value, caller: &'static Location<'static>) -> CallTrace {
    CallTrace::start(EMBEDDING, request, "input", caller)
}

/// Ends an embedding span: `output` = `{"embedding_length": n}` (the length
/// of the first vector, never the vector), metrics = usage; or the error.
pub(crate) fn embeddings_end(
    trace: CallTrace,
    result: Result<(Option<Value>, usize), DynError<'_>>,
) {
    match result {
        Ok((usage, len)) => {
            let event = metrics_event(&trace.span, usage.as_ref(), None);
            trace.finish(event.output(json!({"embedding_length": len})))
        }
        Err(e) => trace.fail(Event::new(), e),
    }
}

/// Starts an `openai.responses.create` span: `input` = the request's input.
pub(crate) fn responses_start(request: &Value, caller: &'static Location<'static>) -> CallTrace {
    CallTrace::start(RESPONSES, request, "input", caller)
}

/// Ends a non-streaming Responses span: `output` = the output items,
/// metadata = the response's id, model, status..., metrics = usage and
/// `time_to_first_token`, a `tool` child span per tool item; or the error.
pub(crate) fn responses_end(
    trace: CallTrace,
    response: Option<&Value>,
    error: Option<DynError<'_>>,
) {
    let event = match response {
        Some(value) => result_event(&trace.span, value, Some(trace.elapsed())),
        None => Event::new(),
    };
    match (error, response) {
        (Some(e), _) => trace.fail(event, e),
        (None, response) => {
            trace.log(event);
            log_tool_spans(&trace.span, response.and_then(|r| r.get("output")));
            trace.finish(Event::new());
        }
    }
}

/// The span of a streaming Responses call; see [`ChatStreamSpan`].
pub(crate) struct ResponseStreamSpan {
    call: Option<CallTrace>,
    acc: ResponseAccumulator,
    first_event: bool,
}

impl ResponseStreamSpan {
    pub(crate) fn new(call: CallTrace) -> Self {
        ResponseStreamSpan {
            call: Some(call),
            acc: ResponseAccumulator::default(),
            first_event: true,
        }
    }

    /// One event arrived (as JSON): `time_to_first_token` on the first.
    pub(crate) fn event(&mut self, event: &Value) {
        if let Some(call) = &self.call {
            if std::mem::take(&mut self.first_event) {
                call.log(Event::new().metric("time_to_first_token", call.elapsed()));
            }
            self.acc.push(event);
        }
    }

    /// The stream ended (`None`) or failed: logs the final response (or what
    /// the events rebuilt), its tool spans, the error, and ends the span. A
    /// `response.failed` event's error is the span's error.
    pub(crate) fn end(&mut self, error: Option<DynError<'_>>) {
        let Some(call) = self.call.take() else { return };
        let (event, output) = self.acc.event(&call.span);
        if let Some(e) = error {
            call.fail(event, e);
            return;
        }
        call.log(event);
        log_tool_spans(&call.span, output.as_ref());
        let mut end = Event::new();
        if let Some(e) = self.acc.failure.clone() {
            end = end.error(e);
        }
        call.finish(end);
    }
}

impl Drop for ResponseStreamSpan {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let event = self.acc.event(&call.span).0;
            call.cancel(event);
        }
    }
}

const RESULT_METADATA_KEYS: [&str; 9] = [
    "id",
    "model",
    "status",
    "created_at",
    "object",
    "service_tier",
    "background",
    "incomplete_details",
    "moderation",
];

/// The fields a Responses API result logs (usage values left out are
/// reported on `span`).
pub(crate) fn result_event(span: &Span, response: &Value, ttft: Option<f64>) -> Event {
    let mut event = metrics_event(span, response.get("usage"), ttft);
    if let Some(output) = response.get("output") {
        event = event.output(output.clone());
    }
    let mut meta = Map::new();
    for k in RESULT_METADATA_KEYS {
        if let Some(v) = response.get(k).filter(|v| !v.is_null()) {
            meta.insert(k.to_string(), v.clone());
        }
    }
    if !meta.is_empty() {
        event = event.metadata(Value::Object(meta));
    }
    event
}

/// Input keys of each tool item type; the presence of a type here makes it a tool.
fn tool_input_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "function_call" | "mcp_call" => &["arguments"],
        "web_search_call" | "computer_call" => &["action"],
        "file_search_call" => &["queries"],
        "code_interpreter_call" => &["code", "container_id"],
        "image_generation_call" => &[],
        _ => return None,
    })
}

/// Parses a string that looks like a JSON object or array; anything else as is.
fn maybe_json(v: &Value) -> Value {
    if let Value::String(s) = v {
        let t = s.trim();
        if t.starts_with('{') || t.starts_with('[') {
            if let Ok(parsed) = serde_json::from_str(t) {
                return parsed;
            }
        }
    }
    v.clone()
}

/// One `tool` child span per tool item of `output` (spec §9.3).
fn log_tool_spans(parent: &Span, output: Option<&Value>) {
    let Some(Value::Array(items)) = output else {
        return;
    };
    for item in items {
        let Value::Object(item) = item else { continue };
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(input_keys) = tool_input_keys(kind) else {
            continue;
        };
        let str_of = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let name = match (str_of("server_label"), str_of("name")) {
            (Some(label), Some(name)) => format!("{label}.{name}"),
            (_, Some(name)) => name.to_string(),
            _ => kind.to_string(),
        };
        let mut input_map = Map::new();
        for k in input_keys {
            if let Some(v) = item.get(*k).filter(|v| !v.is_null()) {
                input_map.insert(k.to_string(), maybe_json(v));
            }
        }
        let input = if *input_keys == ["arguments"] {
            input_map.remove("arguments")
        } else if input_map.is_empty() {
            None
        } else {
            Some(Value::Object(input_map))
        };
        let mut metadata = Map::new();
        for (meta_key, item_key) in [
            ("tool_type", "type"),
            ("tool_id", "id"),
            ("call_id", "call_id"),
            ("status", "status"),
            ("server_label", "server_label"),
        ] {
            if let Some(v) = item.get(item_key).filter(|v| !v.is_null()) {
                metadata.insert(meta_key.to_string(), v.clone());
            }
        }
        let mut start = Event::new();
        if let Some(i) = input {
            start = start.input(i);
        }
        if !metadata.is_empty() {
            start = start.metadata(Value::Object(metadata));
        }
        let child = parent.start_span(
            SpanArgs::new()
                .name(name)
                .span_type(SpanType::Tool)
                .instrumentation(INSTRUMENTATION)
                .event(start),
        );
        if let Some(err) = item.get("error").filter(|v| !v.is_null()) {
            let err = match maybe_json(err) {
                v @ (Value::Object(_) | Value::Array(_)) => v,
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            };
            let _ = child.log(Event::new().error(err));
        } else if kind != "function_call" {
            let excluded = ["id", "type", "name", "call_id", "server_label", "error"];
            let out: Map<String, Value> = item
                .iter()
                .filter(|(k, v)| {
                    !v.is_null()
                        && !excluded.contains(&k.as_str())
                        && !input_keys.contains(&k.as_str())
                })
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "output" {
                            maybe_json(v)
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect();
            if !out.is_empty() {
                let _ = child.log(Event::new().output(Value::Object(out)));
            }
        }
        child.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_output_has_the_sdk_keys() {
        let out = normalize_choices(
            &json!([{"index":0,"message":{"role":"assistant","content":"Paris.","refusal":null},"logprobs":null,"finish_reason":"stop"}]),
        );
        let mut keys: Vec<_> = out[0]["message"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "annotations",
                "audio",
                "content",
                "function_call",
                "refusal",
                "role",
                "tool_calls"
            ]
        );
    }

    #[test]
    fn tool_names_and_inputs() {
        assert_eq!(maybe_json(&json!("{\"a\":1}")), json!({"a":1}));
        assert_eq!(maybe_json(&json!("plain")), json!("plain"));
        assert_eq!(maybe_json(&json!("{bad")), json!("{bad"));
        assert!(tool_input_keys("message").is_none());
        assert_eq!(
            tool_input_keys("code_interpreter_call"),
            Some(&["code", "container_id"][..])
        );
    }
}
