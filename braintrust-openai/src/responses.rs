//! The Responses API (`POST /responses`), plain and streaming, and its spans
//! (spec §9.3): one `llm` span per call plus a `tool` child span per tool
//! item in the output.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use braintrust_core::{Event, Span};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::client::OpenAiClient;
use crate::error::{ApiError, OpenAiError};
use crate::spans::{self, result_event, ResponseStreamSpan};
use crate::sse::EventStream;

/// A Responses API request. Anything without a field goes in
/// [`extra`](Self::extra) (or [`param`](Self::param)).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResponseRequest {
    /// The model.
    pub model: String,
    /// A string, or a list of input items (messages, tool outputs...).
    pub input: Value,
    /// System-style instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Output token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Tools (functions and built-in tools such as `web_search`), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Tool choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Continue from a previous response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Reasoning options, e.g. `{"effort": "low"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Value>,
    /// Text format options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    /// Set by [`Responses::create_stream`]; leave it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Store the response server-side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Parameters this crate has no field for.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseRequest {
    /// A request for `model` with this input (a string or a list of items).
    pub fn new(model: impl Into<String>, input: impl Into<Value>) -> Self {
        ResponseRequest {
            model: model.into(),
            input: input.into(),
            ..Default::default()
        }
    }
    /// Sets `instructions`.
    pub fn instructions(mut self, s: impl Into<String>) -> Self {
        self.instructions = Some(s.into());
        self
    }
    /// Sets `tools`.
    pub fn tools(mut self, tools: Vec<Value>) -> Self {
        self.tools = Some(tools);
        self
    }
    /// Sets any other parameter.
    pub fn param(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// Token usage of a response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// e.g. `cached_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens_details: Option<Map<String, Value>>,
    /// e.g. `reasoning_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<Map<String, Value>>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A response object (`object: "response"`). Output items are JSON values;
/// [`output_text`](Self::output_text) and [`function_calls`](Self::function_calls)
/// read the common ones.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    /// Response id.
    #[serde(default)]
    pub id: String,
    /// `"response"`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
    /// `completed`, `incomplete`, `failed`, `in_progress`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Output items (`message`, `function_call`, `web_search_call`, `reasoning`...).
    #[serde(default)]
    pub output: Vec<Value>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    /// The error of a failed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Why a response is incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_details: Option<Value>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Response {
    /// All `output_text` parts of all `message` items, concatenated.
    pub fn output_text(&self) -> String {
        let mut s = String::new();
        for item in &self.output {
            if item.get("type").and_then(Value::as_str) != Some("message") {
                continue;
            }
            for part in item
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if part.get("type").and_then(Value::as_str) == Some("output_text") {
                    s.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
                }
            }
        }
        s
    }
    /// The `function_call` items.
    pub fn function_calls(&self) -> impl Iterator<Item = &Value> {
        self.output
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("function_call"))
    }
}

/// One event of a streaming response (`response.created`,
/// `response.output_text.delta`, `response.completed`...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResponseStreamEvent {
    /// The event type, e.g. `"response.output_text.delta"`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Position in the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// The response, on `response.created` / `in_progress` / `completed` / `incomplete` / `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// Which output item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_index: Option<usize>,
    /// Which content part of the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_index: Option<usize>,
    /// The item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// The item, on `response.output_item.added` / `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    /// The new text, on `*.delta` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Value>,
    /// Fields this crate does not know (`text`, `arguments`, `part`, `message`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The Responses API. Get one with [`OpenAiClient::responses`].
#[derive(Debug, Clone, Copy)]
pub struct Responses<'a> {
    pub(crate) client: &'a OpenAiClient,
}

impl Responses<'_> {
    /// Creates a response. Traced as an `openai.responses.create` `llm` span:
    /// `input` = the request input, `metadata` = the other parameters plus
    /// `provider` and the response's `id`, `model`, `status`, `created_at`,
    /// `object`..., `output` = the response's output items, metrics = usage
    /// and `time_to_first_token`. Each tool item of the output
    /// (`function_call`, `web_search_call`, `mcp_call`...) also gets a `tool`
    /// child span.
    #[track_caller]
    pub fn create(
        &self,
        request: ResponseRequest,
    ) -> impl Future<Output = Result<Response, OpenAiError>> + Send + 'static {
        let client = self.client.clone();
        let caller = Location::caller();
        async move { create(client, request, caller).await }
    }

    /// Creates a streaming response: a [`ResponseStream`] of events. The
    /// span ends with the stream (or when it is dropped, then marked
    /// cancelled); its output is the final response's output, or is rebuilt
    /// from the item and text-delta events if the stream ended without one.
    #[track_caller]
    pub fn create_stream(
        &self,
        request: ResponseRequest,
    ) -> impl Future<Output = Result<ResponseStream, OpenAiError>> + Send + 'static {
        let client = self.client.clone();
        let caller = Location::caller();
        async move { create_stream(client, request, caller).await }
    }
}

const PATH: &str = "responses";
async fn create(
    client: OpenAiClient,
    request: ResponseRequest,
    caller: &'static Location<'static>,
) -> Result<Response, OpenAiError> {
    if request.stream == Some(true) {
        return Err(OpenAiError::Config(
            "`stream: true` needs responses().create_stream()".into(),
        ));
    }
    let inner = &client.inner;
    if !client.traced() {
        let body = inner.post_json(PATH, &request).await?;
        return serde_json::from_slice(&body).map_err(|e| OpenAiError::decode(e, &body));
    }
    let body = serde_json::to_value(&request).map_err(|e| OpenAiError::decode(e, b""))?;
    drop(request);
    let trace = spans::responses_start(&body, caller);
    let result = async {
        let bytes = inner.post_json(PATH, &body).await?;
        serde_json::from_slice::<Value>(&bytes).map_err(|e| OpenAiError::decode(e, &bytes))
    }
    .await;
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            spans::responses_end(trace, None, Some(&e));
            return Err(e);
        }
    };
    match serde_json::from_value::<Response>(value.clone()) {
        Ok(response) => {
            spans::responses_end(trace, Some(&value), None);
            Ok(response)
        }
        Err(e) => {
            let err = OpenAiError::Decode {
                source: e,
                snippet: String::new(),
            };
            spans::responses_end(trace, Some(&value), Some(&err));
            Err(err)
        }
    }
}

async fn create_stream(
    client: OpenAiClient,
    mut request: ResponseRequest,
    caller: &'static Location<'static>,
) -> Result<ResponseStream, OpenAiError> {
    let inner = client.inner.clone();
    request.stream = Some(true);
    if !client.traced() {
        let resp = inner.post_stream(PATH, &request).await?;
        return Ok(ResponseStream {
            events: EventStream::new(resp, inner.stream_idle_timeout),
            trace: None,
            done: false,
        });
    }
    let body = serde_json::to_value(&request).map_err(|e| OpenAiError::decode(e, b""))?;
    drop(request);
    let trace = spans::responses_start(&body, caller);
    match inner.post_stream(PATH, &body).await {
        Ok(resp) => Ok(ResponseStream {
            events: EventStream::new(resp, inner.stream_idle_timeout),
            trace: Some(Box::new(ResponseStreamSpan::new(trace))),
            done: false,
        }),
        Err(e) => {
            spans::responses_end(trace, None, Some(&e));
            Err(e)
        }
    }
}

/// A streaming response: a `Stream` of `Result<ResponseStreamEvent, OpenAiError>`.
/// `Unpin`; ends when the server closes the stream. An `error` event is
/// returned as [`OpenAiError::Stream`] and ends the stream.
pub struct ResponseStream {
    events: EventStream,
    trace: Option<Box<ResponseStreamSpan>>,
    done: bool,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("traced", &self.trace.is_some())
            .field("done", &self.done)
            .finish()
    }
}

impl ResponseStream {
    /// The next event, `None` once the stream is over: the same as
    /// `StreamExt::next`, without needing `futures` in scope.
    pub async fn next(&mut self) -> Option<Result<ResponseStreamEvent, OpenAiError>> {
        futures_util::StreamExt::next(self).await
    }

    /// Reads the rest of the stream and returns the final response (from
    /// `response.completed`, `incomplete` or `failed`).
    pub async fn final_response(mut self) -> Result<Response, OpenAiError> {
        let mut last = None;
        while let Some(ev) = self.next().await {
            let ev = ev?;
            if matches!(
                ev.kind.as_str(),
                "response.completed" | "response.incomplete" | "response.failed"
            ) {
                last = ev.response;
            }
        }
        last.ok_or_else(|| OpenAiError::Stream {
            message: "the stream ended without a final response".into(),
            error: None,
        })
    }

    fn finish(&mut self, err: Option<&OpenAiError>) {
        self.done = true;
        if let Some(mut t) = self.trace.take() {
            t.end(err.map(|e| e as _));
        }
    }
}

impl Stream for ResponseStream {
    type Item = Result<ResponseStreamEvent, OpenAiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let ev = match Pin::new(&mut this.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finish(None);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finish(Some(&e));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(ev))) => ev,
            };
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                this.finish(None);
                return Poll::Ready(None);
            }
            let value: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(e) => {
                    let err = OpenAiError::decode(e, data.as_bytes());
                    this.finish(Some(&err));
                    return Poll::Ready(Some(Err(err)));
                }
            };
            let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
            if kind == "error" || ev.event.as_deref() == Some("error") {
                let api = ApiError::from_value(&value)
                    .or_else(|| serde_json::from_value(value.clone()).ok());
                let err = OpenAiError::Stream {
                    message: api
                        .as_ref()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| data.to_string()),
                    error: api.map(Box::new),
                };
                this.finish(Some(&err));
                return Poll::Ready(Some(Err(err)));
            }
            if let Some(t) = this.trace.as_mut() {
                t.event(&value);
            }
            return match serde_json::from_value::<ResponseStreamEvent>(value) {
                Ok(e) => Poll::Ready(Some(Ok(e))),
                Err(e) => {
                    let err = OpenAiError::decode(e, data.as_bytes());
                    this.finish(Some(&err));
                    Poll::Ready(Some(Err(err)))
                }
            };
        }
    }
}

/// Rebuilds the span fields from stream events (spec §9.3, streaming).
#[derive(Default)]
pub(crate) struct ResponseAccumulator {
    /// The final response, from `response.completed` / `incomplete` / `failed`.
    final_response: Option<Value>,
    /// The latest response snapshot (`response.created`, `in_progress`).
    snapshot: Option<Value>,
    items: Vec<Value>,
    pub(crate) failure: Option<Value>,
}

impl ResponseAccumulator {
    pub(crate) fn push(&mut self, ev: &Value) {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        let index = ev
            .get("output_index")
            .and_then(Value::as_u64)
            .map(|i| i as usize);
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = ev.get("response") {
                    if kind == "response.failed" {
                        self.failure = r.get("error").filter(|e| !e.is_null()).map(|e| {
                            match ApiError::from_value(&json!({"error": e})) {
                                Some(a) => Value::String(a.to_string()),
                                None => e.clone(),
                            }
                        });
                    }
                    self.final_response = Some(r.clone());
                }
            }
            "response.created" | "response.in_progress" | "response.queued" => {
                self.snapshot = ev.get("response").cloned();
            }
            "response.output_item.added" => {
                if let Some(item) = ev.get("item") {
                    let i = index.unwrap_or(self.items.len());
                    while self.items.len() <= i {
                        self.items.push(json!({}));
                    }
                    self.items[i] = item.clone();
                }
            }
            "response.output_item.done" => {
                if let (Some(i), Some(item)) = (index, ev.get("item")) {
                    if i < self.items.len() {
                        self.items[i] = item.clone();
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                let (Some(i), Some(delta)) = (index, ev.get("delta").and_then(Value::as_str))
                else {
                    return;
                };
                let Some(Value::Object(item)) = self.items.get_mut(i) else {
                    return;
                };
                let ci = ev.get("content_index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let content = item.entry("content").or_insert_with(|| json!([]));
                let Value::Array(parts) = content else { return };
                while parts.len() <= ci {
                    parts.push(json!({}));
                }
                let (part_type, field) = if kind == "response.refusal.delta" {
                    ("refusal", "refusal")
                } else {
                    ("output_text", "text")
                };
                if let Value::Object(part) = &mut parts[ci] {
                    part.entry("type").or_insert_with(|| json!(part_type));
                    match part.get_mut(field) {
                        Some(Value::String(s)) => s.push_str(delta),
                        _ => {
                            part.insert(field.into(), json!(delta));
                        }
                    }
                }
            }
            "response.function_call_arguments.delta" | "response.mcp_call_arguments.delta" => {
                let (Some(i), Some(delta)) = (index, ev.get("delta").and_then(Value::as_str))
                else {
                    return;
                };
                if let Some(Value::Object(item)) = self.items.get_mut(i) {
                    match item.get_mut("arguments") {
                        Some(Value::String(s)) => s.push_str(delta),
                        _ => {
                            item.insert("arguments".into(), json!(delta));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The span fields, and the output (for tool spans).
    pub(crate) fn event(&self, span: &Span) -> (Event, Option<Value>) {
        match &self.final_response {
            Some(r) => (result_event(span, r, None), r.get("output").cloned()),
            None => {
                // No final response: the snapshot's metadata, and the output
                // rebuilt from the item and delta events.
                let output = Value::Array(self.items.clone());
                let event = match &self.snapshot {
                    Some(s) => result_event(span, s, None),
                    None => Event::new(),
                };
                (event.output(output.clone()), Some(output))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_output_without_a_final_response() {
        let mut acc = ResponseAccumulator::default();
        for ev in [
            json!({"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","model":"m","output":[]}}),
            json!({"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","role":"assistant","status":"in_progress","content":[]}}),
            json!({"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"Hi"}),
            json!({"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"!"}),
            json!({"type":"response.output_item.added","output_index":1,"item":{"id":"fc_1","type":"function_call","name":"f","call_id":"c1","arguments":""}}),
            json!({"type":"response.function_call_arguments.delta","output_index":1,"delta":"{\"a\":"}),
            json!({"type":"response.function_call_arguments.delta","output_index":1,"delta":"1}"}),
        ] {
            acc.push(&ev);
        }
        let (_, output) = acc.event(&braintrust_core::Span::noop());
        let output = output.unwrap();
        assert_eq!(
            output[0]["content"],
            json!([{"type":"output_text","text":"Hi!"}])
        );
        assert_eq!(output[1]["arguments"], "{\"a\":1}");
    }
}
