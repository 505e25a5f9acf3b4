//! Chat completions (`POST /chat/completions`), plain and streaming, and the
//! span each call makes (spec §9.1).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use braintrust_core::Event;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::client::OpenAiClient;
use crate::error::OpenAiError;
use crate::sse::EventStream;
use crate::trace::{metrics_event, split_request, CallTrace};
use crate::types::{ChatMessage, Role, Tool, ToolCall, Usage};

/// A chat completion request. Set what you need; anything this struct has no
/// field for goes in [`extra`](Self::extra) (or [`param`](Self::param)) and
/// is sent as is.
///
/// ```
/// use braintrust_openai::{ChatCompletionRequest, ChatMessage};
/// let req = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hi")])
///     .temperature(0.0)
///     .param("reasoning_effort", "low");
/// let body = serde_json::to_value(&req).unwrap();
/// assert_eq!(body["reasoning_effort"], "low");
/// assert!(body.get("top_p").is_none()); // unset fields are not sent
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model, e.g. `"gpt-4o-mini"`.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Token limit (legacy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Token limit, reasoning tokens included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Set by [`Chat::create_stream`]; leave it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options, e.g. `{"include_usage": true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    /// Stop sequence(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Token id → bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    /// Return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many alternatives per token with `logprobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"auto"`, `"none"`, `"required"` or a specific tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Allow several tool calls in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// e.g. `{"type": "json_object"}` or a JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Parameters this crate has no field for.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// A request for `model` with these messages.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        ChatCompletionRequest {
            model: model.into(),
            messages,
            ..Default::default()
        }
    }
    /// Sets `temperature`.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = Some(t);
        self
    }
    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Sets `tools`.
    pub fn tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = Some(tools);
        self
    }
    /// Sets `tool_choice`.
    pub fn tool_choice(mut self, choice: impl Into<Value>) -> Self {
        self.tool_choice = Some(choice.into());
        self
    }
    /// Sets `stream_options.include_usage` (only meaningful when streaming).
    pub fn include_usage(mut self, on: bool) -> Self {
        self.stream_options = Some(json!({"include_usage": on}));
        self
    }
    /// Sets any other parameter (sent as is, logged as metadata).
    pub fn param(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// A chat completion (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Completion id.
    #[serde(default)]
    pub id: String,
    /// `"chat.completion"`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered (may differ from the one requested).
    #[serde(default)]
    pub model: String,
    /// The generated choices.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Backend fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletion {
    /// The text of the first choice, if it has any.
    pub fn text(&self) -> Option<&str> {
        self.choices.first()?.message.content.as_deref()
    }
    /// The tool calls of the first choice (empty if none).
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.choices
            .first()
            .and_then(|c| c.message.tool_calls.as_deref())
            .unwrap_or(&[])
    }
}

/// One generated choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Choice {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// The message.
    #[serde(default)]
    pub message: AssistantMessage,
    /// Log probabilities, when requested.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// `"stop"`, `"length"`, `"tool_calls"`, `"content_filter"`...
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The message of a choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Usually `assistant`.
    #[serde(default = "assistant_role")]
    pub role: Role,
    /// The text.
    #[serde(default)]
    pub content: Option<String>,
    /// A refusal message, if the model refused.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Fields this crate does not know (`audio`, `annotations`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AssistantMessage {
    /// This message as a request message, to continue the conversation.
    pub fn to_request_message(&self) -> ChatMessage {
        ChatMessage {
            role: self.role.clone(),
            content: self.content.clone().map(Into::into),
            tool_calls: self.tool_calls.clone(),
            ..ChatMessage::default()
        }
    }
}

fn assistant_role() -> Role {
    Role::Assistant
}

/// One chunk of a streaming chat completion (`object: "chat.completion.chunk"`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Completion id (the same in every chunk).
    #[serde(default)]
    pub id: String,
    /// `"chat.completion.chunk"`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Deltas, one per choice (empty in the final usage chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, in the last chunk when `stream_options.include_usage` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice index.
    #[serde(default)]
    pub index: u32,
    /// What is new.
    #[serde(default)]
    pub delta: Delta,
    /// Log probabilities of this delta's tokens.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The new part of a streamed message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// In the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// More refusal text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Fields this crate does not know (`audio`, `reasoning_content`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A fragment of a tool call: the first carries `id` and the name, later
/// ones more `arguments` text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the message this continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The call id (first fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"` (first fragment).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Name and argument fragments of a tool call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function name (first fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Chat completions. Get one with [`OpenAiClient::chat`].
#[derive(Debug, Clone, Copy)]
pub struct Chat<'a> {
    pub(crate) client: &'a OpenAiClient,
}

impl Chat<'_> {
    /// Creates a chat completion. Traced as a `Chat Completion` `llm` span:
    /// `input` = the messages, `metadata` = the other parameters plus
    /// `provider`, `output` = the choices, metrics = token usage and
    /// `time_to_first_token` (the whole call). The span starts when the
    /// future is first polled, under the span current then.
    ///
    /// Fails with [`OpenAiError::Config`] if `stream` is set: use
    /// [`create_stream`](Self::create_stream).
    #[track_caller]
    pub fn create(
        &self,
        request: ChatCompletionRequest,
    ) -> impl Future<Output = Result<ChatCompletion, OpenAiError>> + Send + 'static {
        let client = self.client.clone();
        let caller = Location::caller();
        async move { create(client, request, caller).await }
    }

    /// Creates a streaming chat completion: a [`ChatStream`] of chunks.
    /// `stream: true` is set for you. With the client's
    /// [`include_usage_in_streams`](crate::OpenAiClientBuilder::include_usage_in_streams)
    /// opt-in, `stream_options.include_usage` is set too when the request has
    /// no `stream_options`.
    ///
    /// The span ends when the stream ends, fails, or is dropped (then with
    /// what arrived and `error = "cancelled"`). Its output aggregates
    /// the deltas into `choices` (content, tool calls, refusal, finish reason,
    /// logprobs); `time_to_first_token` is the time to the first chunk.
    #[track_caller]
    pub fn create_stream(
        &self,
        request: ChatCompletionRequest,
    ) -> impl Future<Output = Result<ChatStream, OpenAiError>> + Send + 'static {
        let client = self.client.clone();
        let caller = Location::caller();
        async move { create_stream(client, request, caller).await }
    }
}

const PATH: &str = "chat/completions";

async fn create(
    client: OpenAiClient,
    request: ChatCompletionRequest,
    caller: &'static Location<'static>,
) -> Result<ChatCompletion, OpenAiError> {
    if request.stream == Some(true) {
        return Err(OpenAiError::Config(
            "`stream: true` needs chat().create_stream()".into(),
        ));
    }
    let inner = &client.inner;
    if !client.traced() {
        let body = inner.post_json(PATH, &request).await?;
        return serde_json::from_slice(&body).map_err(|e| OpenAiError::decode(e, &body));
    }
    let body = serde_json::to_value(&request).map_err(|e| OpenAiError::decode(e, b""))?;
    drop(request);
    let (input, metadata) = split_request(&body, "messages");
    let trace = CallTrace::start("Chat Completion", input, metadata, caller);
    let result = async {
        let bytes = inner.post_json(PATH, &body).await?;
        serde_json::from_slice::<Value>(&bytes).map_err(|e| OpenAiError::decode(e, &bytes))
    }
    .await;
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            trace.fail(Event::new(), &e);
            return Err(e);
        }
    };
    let ttft = trace.elapsed();
    let mut event = metrics_event(value.get("usage"), Some(ttft));
    if let Some(choices) = value.get("choices") {
        event = event.output(normalize_choices(choices));
    }
    match serde_json::from_value::<ChatCompletion>(value) {
        Ok(completion) => {
            trace.finish(event);
            Ok(completion)
        }
        Err(e) => {
            let err = OpenAiError::Decode {
                source: e,
                snippet: String::new(),
            };
            trace.fail(event, &err);
            Err(err)
        }
    }
}

/// The logged `output` of a non-streaming call: the choices as received,
/// with the standard message keys present (null when absent), as the
/// official SDK logs them.
fn normalize_choices(choices: &Value) -> Value {
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

async fn create_stream(
    client: OpenAiClient,
    mut request: ChatCompletionRequest,
    caller: &'static Location<'static>,
) -> Result<ChatStream, OpenAiError> {
    let inner = client.inner.clone();
    request.stream = Some(true);
    if inner.include_usage_in_streams && request.stream_options.is_none() {
        request.stream_options = Some(json!({"include_usage": true}));
    }
    if !client.traced() {
        let resp = inner.post_stream(PATH, &request).await?;
        return Ok(ChatStream {
            events: EventStream::new(resp, inner.stream_idle_timeout),
            trace: None,
            done: false,
        });
    }
    let body = serde_json::to_value(&request).map_err(|e| OpenAiError::decode(e, b""))?;
    drop(request);
    let (input, metadata) = split_request(&body, "messages");
    let trace = CallTrace::start("Chat Completion", input, metadata, caller);
    match inner.post_stream(PATH, &body).await {
        Ok(resp) => Ok(ChatStream {
            events: EventStream::new(resp, inner.stream_idle_timeout),
            trace: Some(Box::new(StreamTrace {
                call: trace,
                acc: ChatAccumulator::default(),
                first_chunk: true,
            })),
            done: false,
        }),
        Err(e) => {
            trace.fail(Event::new(), &e);
            Err(e)
        }
    }
}

struct StreamTrace {
    call: CallTrace,
    acc: ChatAccumulator,
    first_chunk: bool,
}

/// A streaming chat completion: a `Stream` of
/// `Result<ChatCompletionChunk, OpenAiError>` that ends after the server's
/// `[DONE]`. It is `Unpin`, so `next().await` works without pinning.
///
/// After an error item the stream ends. Dropping it early closes the
/// connection and ends the span with what arrived, marked cancelled.
pub struct ChatStream {
    events: EventStream,
    trace: Option<Box<StreamTrace>>,
    done: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("traced", &self.trace.is_some())
            .field("done", &self.done)
            .finish()
    }
}

impl ChatStream {
    /// The next chunk, `None` once the stream is over: the same as
    /// `StreamExt::next`, without needing `futures` in scope.
    pub async fn next(&mut self) -> Option<Result<ChatCompletionChunk, OpenAiError>> {
        futures_util::StreamExt::next(self).await
    }

    /// Reads the rest of the stream and returns the aggregated completion
    /// (choices with their full content and tool calls, and usage if sent).
    pub async fn collect_completion(mut self) -> Result<ChatCompletion, OpenAiError> {
        let mut acc = ChatAccumulator::default();
        let mut first: Option<ChatCompletionChunk> = None;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            acc.push(&chunk);
            if first.is_none() {
                first = Some(chunk);
            }
        }
        let first = first.unwrap_or_default();
        let choices = serde_json::from_value(acc.output(true)).unwrap_or_default();
        let usage = acc.usage.and_then(|u| serde_json::from_value(u).ok());
        Ok(ChatCompletion {
            id: first.id,
            object: "chat.completion".into(),
            created: first.created,
            model: first.model,
            choices,
            usage,
            system_fingerprint: None,
            extra: Map::new(),
        })
    }

    fn finish_ok(&mut self) {
        self.done = true;
        if let Some(t) = self.trace.take() {
            let t = *t;
            let event = metrics_event(t.acc.usage.as_ref(), None).output(t.acc.output(true));
            t.call.finish(event);
        }
    }

    fn finish_err(&mut self, err: &OpenAiError) {
        self.done = true;
        if let Some(t) = self.trace.take() {
            let t = *t;
            let mut event = metrics_event(t.acc.usage.as_ref(), None);
            if t.acc.seen_choice() {
                event = event.output(t.acc.output(false));
            }
            t.call.fail(event, err);
        }
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        if let Some(t) = self.trace.take() {
            let t = *t;
            let mut event = metrics_event(t.acc.usage.as_ref(), None);
            if t.acc.seen_choice() {
                event = event.output(t.acc.output(false));
            }
            t.call.cancel(event);
        }
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatCompletionChunk, OpenAiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let ev = match Pin::new(&mut this.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The body ended without `[DONE]`: what arrived is complete
                    // as far as anyone can tell.
                    this.finish_ok();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finish_err(&e);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(ev))) => ev,
            };
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                this.finish_ok();
                return Poll::Ready(None);
            }
            let parsed = match serde_json::from_str::<Value>(data) {
                Ok(v) => v,
                Err(e) => {
                    let err = OpenAiError::decode(e, data.as_bytes());
                    this.finish_err(&err);
                    return Poll::Ready(Some(Err(err)));
                }
            };
            if parsed.get("choices").is_none() {
                if let Some(api) = crate::error::ApiError::from_value(&parsed) {
                    let err = OpenAiError::Stream {
                        message: api.to_string(),
                        error: Some(Box::new(api)),
                    };
                    this.finish_err(&err);
                    return Poll::Ready(Some(Err(err)));
                }
            }
            let chunk = match serde_json::from_value::<ChatCompletionChunk>(parsed) {
                Ok(c) => c,
                Err(e) => {
                    let err = OpenAiError::decode(e, data.as_bytes());
                    this.finish_err(&err);
                    return Poll::Ready(Some(Err(err)));
                }
            };
            if let Some(t) = this.trace.as_mut() {
                if std::mem::take(&mut t.first_chunk) {
                    let ttft = t.call.elapsed();
                    t.call.log(Event::new().metric("time_to_first_token", ttft));
                }
                t.acc.push(&chunk);
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
    }
}

/// Aggregates streamed deltas into `choices` (spec §9.1, streaming).
#[derive(Default)]
pub(crate) struct ChatAccumulator {
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<Value>,
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<ToolAcc>,
    finish_reason: Option<String>,
    logprobs: Option<(Vec<Value>, Vec<Value>)>,
    audio: Option<Map<String, Value>>,
}

struct ToolAcc {
    index: Option<u32>,
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

impl ChatAccumulator {
    pub(crate) fn push(&mut self, chunk: &ChatCompletionChunk) {
        if let Some(u) = &chunk.usage {
            self.usage = serde_json::to_value(u).ok();
        }
        for c in &chunk.choices {
            let acc = self.choices.entry(c.index).or_default();
            let d = &c.delta;
            if acc.role.is_none() {
                if let Some(r) = &d.role {
                    acc.role = Some(r.as_str().to_string());
                }
            }
            if let Some(text) = &d.content {
                acc.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(text) = &d.refusal {
                acc.refusal.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(calls) = &d.tool_calls {
                for tc in calls {
                    acc.push_tool(tc);
                }
            }
            if let Some(Value::Object(audio)) = d.extra.get("audio") {
                let a = acc.audio.get_or_insert_with(Map::new);
                for (k, v) in audio {
                    match (k.as_str(), v, a.get_mut(k)) {
                        ("data" | "transcript", Value::String(s), Some(Value::String(prev))) => {
                            prev.push_str(s)
                        }
                        _ => {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            if let Some(Value::Object(lp)) = &c.logprobs {
                let (content, refusal) = acc.logprobs.get_or_insert_with(Default::default);
                if let Some(Value::Array(items)) = lp.get("content") {
                    content.extend(items.iter().cloned());
                }
                if let Some(Value::Array(items)) = lp.get("refusal") {
                    refusal.extend(items.iter().cloned());
                }
            }
            if c.finish_reason.is_some() {
                acc.finish_reason = c.finish_reason.clone();
            }
        }
    }

    fn seen_choice(&self) -> bool {
        !self.choices.is_empty()
    }

    /// The aggregated `choices`. With `placeholder`, a stream that carried no
    /// choice still gives one empty choice 0, as the official SDK logs it.
    pub(crate) fn output(&self, placeholder: bool) -> Value {
        let empty = ChoiceAcc::default();
        let mut list: Vec<(u32, &ChoiceAcc)> = self.choices.iter().map(|(i, c)| (*i, c)).collect();
        if list.is_empty() && placeholder {
            list.push((0, &empty));
        }
        Value::Array(
            list.into_iter()
                .map(|(index, c)| {
                    let mut message = Map::new();
                    message.insert(
                        "role".into(),
                        c.role.clone().map_or(Value::Null, Value::String),
                    );
                    message.insert(
                        "content".into(),
                        c.content.clone().map_or(Value::Null, Value::String),
                    );
                    let tool_calls = if c.tool_calls.is_empty() {
                        Value::Null
                    } else {
                        Value::Array(
                            c.tool_calls
                                .iter()
                                .map(|t| {
                                    json!({
                                        "id": t.id,
                                        "type": t.kind,
                                        "function": {"name": t.name, "arguments": t.arguments}
                                    })
                                })
                                .collect(),
                        )
                    };
                    message.insert("tool_calls".into(), tool_calls);
                    if let Some(r) = &c.refusal {
                        message.insert("refusal".into(), Value::String(r.clone()));
                    }
                    if let Some(a) = &c.audio {
                        message.insert("audio".into(), Value::Object(a.clone()));
                    }
                    let logprobs = match &c.logprobs {
                        Some((content, refusal)) => json!({"content": content, "refusal": refusal}),
                        None => Value::Null,
                    };
                    json!({
                        "index": index,
                        "message": Value::Object(message),
                        "logprobs": logprobs,
                        "finish_reason": c.finish_reason,
                    })
                })
                .collect(),
        )
    }
}

impl ChoiceAcc {
    fn push_tool(&mut self, tc: &ToolCallDelta) {
        let id = tc.id.as_deref().filter(|s| !s.is_empty());
        // Which entry does this fragment continue? By `index` when the server
        // sends one (a new id at a used index still starts a new call), else
        // the spec's rule: a new id starts a call, anything else continues the last.
        let target = match tc.index {
            Some(i) => self
                .tool_calls
                .iter()
                .rposition(|t| t.index == Some(i))
                .filter(|&p| {
                    id.is_none_or(|id| {
                        self.tool_calls[p].id.is_empty() || self.tool_calls[p].id == id
                    })
                }),
            None if id.is_some() => None,
            None => self.tool_calls.len().checked_sub(1),
        };
        let pos = match target {
            Some(p) => p,
            None => {
                self.tool_calls.push(ToolAcc {
                    index: tc.index,
                    id: String::new(),
                    kind: "function".into(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.tool_calls.len() - 1
            }
        };
        let t = &mut self.tool_calls[pos];
        if let Some(id) = id {
            t.id = id.to_string();
        }
        if let Some(k) = &tc.kind {
            t.kind = k.clone();
        }
        if let Some(f) = &tc.function {
            if let Some(n) = &f.name {
                t.name.push_str(n);
            }
            if let Some(a) = &f.arguments {
                t.arguments.push_str(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: Value) -> ChatCompletionChunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn aggregates_content_like_the_capture() {
        let mut acc = ChatAccumulator::default();
        for c in [
            json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}),
            json!({"choices":[{"index":0,"delta":{"content":"Par"}}]}),
            json!({"choices":[{"index":0,"delta":{"content":"is."}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
            json!({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}),
        ] {
            acc.push(&chunk(c));
        }
        assert_eq!(
            acc.output(true),
            json!([{"index":0,"message":{"role":"assistant","content":"Paris.","tool_calls":null},
                    "logprobs":null,"finish_reason":"stop"}])
        );
        assert_eq!(acc.usage.unwrap()["total_tokens"], 14);
    }

    #[test]
    fn tool_calls_by_index_and_by_id() {
        let mut acc = ChatAccumulator::default();
        for c in [
            json!({"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[
                {"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[
                {"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}},
                {"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        ] {
            acc.push(&chunk(c));
        }
        let out = acc.output(true);
        assert_eq!(
            out[0]["message"]["tool_calls"],
            json!([
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}
            ])
        );
        assert_eq!(out[0]["message"]["content"], Value::Null);
        assert_eq!(out[0]["finish_reason"], "tool_calls");

        // No index: a new id starts a call, fragments continue the last one.
        let mut acc = ChatAccumulator::default();
        for c in [
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"[]"}}]}}]}),
        ] {
            acc.push(&chunk(c));
        }
        let calls = &acc.output(true)[0]["message"]["tool_calls"];
        assert_eq!(calls[0]["function"]["arguments"], "{}");
        assert_eq!(calls[1]["id"], "b");
    }

    #[test]
    fn refusal_and_logprobs() {
        let mut acc = ChatAccumulator::default();
        for c in [
            json!({"choices":[{"index":0,"delta":{"role":"assistant","refusal":"I can't"},
                   "logprobs":{"content":null,"refusal":[{"token":"I"}]}}]}),
            json!({"choices":[{"index":0,"delta":{"refusal":" help."},
                   "logprobs":{"content":null,"refusal":[{"token":" help."}]}}]}),
        ] {
            acc.push(&chunk(c));
        }
        let out = acc.output(false);
        assert_eq!(out[0]["message"]["refusal"], "I can't help.");
        assert_eq!(
            out[0]["logprobs"],
            json!({"content":[],"refusal":[{"token":"I"},{"token":" help."}]})
        );
    }

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
}
