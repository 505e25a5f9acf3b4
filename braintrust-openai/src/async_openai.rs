//! Tracing for the [`async-openai`](https://docs.rs/async-openai) crate's own
//! client (feature `async-openai`, async-openai 0.43): the Rust counterpart
//! of the official SDKs' `wrap_openai(OpenAI())`.
//!
//! [`wrap_async_openai`] takes the `async_openai::Client<C>` you already have
//! (any [`Config`]: OpenAI, Azure, an OpenAI-compatible base URL) and returns
//! a [`TracedClient`] whose chat completions, embeddings and Responses calls
//! are `llm` spans of exactly the shape [`OpenAiClient`](crate::OpenAiClient)
//! logs: both are built by the same code. You keep async-openai's request,
//! response, stream and error types; only the entry point changes.
//!
//! ```no_run
//! use async_openai::types::chat::{
//!     ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
//! };
//! use braintrust_core::{init_logger, LoggerOptions};
//! use futures_util::StreamExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let logger = init_logger(LoggerOptions::new().project("My Project"))?;
//! let client = braintrust_openai::wrap_async_openai(async_openai::Client::new());
//!
//! let request = CreateChatCompletionRequest {
//!     model: "gpt-4o-mini".into(),
//!     messages: vec![ChatCompletionRequestUserMessage::from("Capital of France?").into()],
//!     ..Default::default()
//! };
//! // A `Chat Completion` span, the answer is async-openai's own response type.
//! let reply = client.chat().create(request.clone()).await?;
//! println!("{:?}", reply.choices[0].message.content);
//!
//! // Streaming: ask the server for usage so the span gets token metrics.
//! let mut stream = client
//!     .chat()
//!     .create_stream(CreateChatCompletionRequest {
//!         stream_options: Some(ChatCompletionStreamOptions {
//!             include_usage: Some(true),
//!             ..Default::default()
//!         }),
//!         ..request
//!     })
//!     .await?;
//! while let Some(chunk) = stream.next().await {
//!     if let Some(text) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
//!         print!("{text}");
//!     }
//! }
//! logger.flush_async().await?;
//! # Ok(()) }
//! ```
//!
//! Spans nest under the current span (`#[traced]`, [`Span::enter`],
//! [`WithSpan`]) when the call's future is first polled. With no logger
//! and no current span, calls go straight to async-openai. A stream dropped
//! before its end ends its span with what arrived and
//! `error = "cancelled"`, as the core marks a dropped `#[traced]` future; errors (async-openai's [`OpenAIError`]) are
//! logged to the span's `error` and returned unchanged.
//!
//! Other endpoints: [`TracedClient::inner`] is the untouched client.
//!
//! [`Span::enter`]: braintrust_core::Span::enter
//! [`WithSpan`]: braintrust_core::WithSpan

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::async_openai::config::Config;
use ::async_openai::error::OpenAIError;
use ::async_openai::types::chat::{
    ChatCompletionResponseStream, CreateChatCompletionRequest, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse,
};
use ::async_openai::types::embeddings::{CreateEmbeddingRequest, CreateEmbeddingResponse};
use ::async_openai::types::responses::{
    CreateResponse, Response, ResponseStream, ResponseStreamEvent,
};
use ::async_openai::Client;
use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;

use crate::chat::ChatCompletionChunk;
use crate::spans::{self, ChatStreamSpan, ResponseStreamSpan};

/// Wraps an async-openai client so its calls become Braintrust `llm` spans
/// (see the [module docs](self)).
///
/// ```
/// let client = braintrust_openai::wrap_async_openai(async_openai::Client::new());
/// let _plain: &async_openai::Client<_> = client.inner();
/// ```
pub fn wrap_async_openai<C: Config + Clone + 'static>(client: Client<C>) -> TracedClient<C> {
    TracedClient { client }
}

/// An async-openai client whose chat completions, embeddings and Responses
/// calls are traced. Cheap to clone, like the client inside. Made by
/// [`wrap_async_openai`].
#[derive(Clone)]
pub struct TracedClient<C: Config> {
    client: Client<C>,
}

impl<C: Config> std::fmt::Debug for TracedClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the API key: never printed.
        f.debug_struct("TracedClient").finish_non_exhaustive()
    }
}

impl<C: Config + Clone + 'static> TracedClient<C> {
    /// The wrapped client, for endpoints this wrapper does not trace.
    pub fn inner(&self) -> &Client<C> {
        &self.client
    }

    /// The wrapped client back.
    pub fn into_inner(self) -> Client<C> {
        self.client
    }

    /// Chat completions, traced as `Chat Completion` spans.
    pub fn chat(&self) -> TracedChat<'_, C> {
        TracedChat { client: self }
    }

    /// Embeddings, traced as `Embedding` spans.
    pub fn embeddings(&self) -> TracedEmbeddings<'_, C> {
        TracedEmbeddings { client: self }
    }

    /// The Responses API, traced as `openai.responses.create` spans.
    pub fn responses(&self) -> TracedResponses<'_, C> {
        TracedResponses { client: self }
    }
}

/// The request as JSON for the span; `None` (no span) if it does not
/// serialize, which async-openai's request types always do.
fn request_json(request: &impl Serialize) -> Option<Value> {
    serde_json::to_value(request).ok()
}

/// Traced chat completions; see [`TracedClient::chat`].
#[derive(Debug, Clone, Copy)]
pub struct TracedChat<'a, C: Config> {
    client: &'a TracedClient<C>,
}

impl<C: Config + Clone + 'static> TracedChat<'_, C> {
    /// `async_openai::Chat::create`, traced: `input` = the messages,
    /// `metadata` = the other parameters plus `provider`, `output` = the
    /// choices, metrics = token usage and `time_to_first_token`.
    #[track_caller]
    pub fn create(
        &self,
        request: CreateChatCompletionRequest,
    ) -> impl Future<Output = Result<CreateChatCompletionResponse, OpenAIError>> + Send + 'static
    {
        let client = self.client.client.clone();
        let caller = Location::caller();
        async move {
            let trace = braintrust_core::is_enabled()
                .then(|| request_json(&request))
                .flatten()
                .map(|body| spans::chat_start(&body, caller));
            let result = client.chat().create(request).await;
            if let Some(trace) = trace {
                match &result {
                    Ok(response) => match serde_json::to_value(response) {
                        Ok(value) => spans::chat_end(trace, Some(&value), None),
                        Err(e) => spans::chat_end(trace, None, Some(&e)),
                    },
                    Err(e) => spans::chat_end(trace, None, Some(e)),
                }
            }
            result
        }
    }

    /// `async_openai::Chat::create_stream`, traced. The stream keeps
    /// async-openai's item type; the span ends when it ends, fails or is
    /// dropped, with the deltas aggregated into `choices` (content, tool
    /// calls, refusal, finish reason) and `time_to_first_token` at the first
    /// chunk. Token usage is only reported when the request sets
    /// `stream_options.include_usage`.
    #[track_caller]
    pub fn create_stream(
        &self,
        mut request: CreateChatCompletionRequest,
    ) -> impl Future<Output = Result<ChatCompletionResponseStream, OpenAIError>> + Send + 'static
    {
        let client = self.client.client.clone();
        let caller = Location::caller();
        async move {
            if !braintrust_core::is_enabled() {
                return client.chat().create_stream(request).await;
            }
            // async-openai sets this itself; set it first so the span's
            // metadata shows what was sent.
            if request.stream.is_none() {
                request.stream = Some(true);
            }
            let Some(body) = request_json(&request) else {
                return client.chat().create_stream(request).await;
            };
            let trace = spans::chat_start(&body, caller);
            match client.chat().create_stream(request).await {
                Ok(inner) => Ok(Box::pin(TracedStream {
                    inner,
                    span: Some(ChatStreamSpan::new(trace)),
                }) as ChatCompletionResponseStream),
                Err(e) => {
                    spans::chat_end(trace, None, Some(&e));
                    Err(e)
                }
            }
        }
    }
}

/// Traced embeddings; see [`TracedClient::embeddings`].
#[derive(Debug, Clone, Copy)]
pub struct TracedEmbeddings<'a, C: Config> {
    client: &'a TracedClient<C>,
}

impl<C: Config + Clone + 'static> TracedEmbeddings<'_, C> {
    /// `async_openai::Embeddings::create`, traced: `input` = the input,
    /// `output` = `{"embedding_length": n}` (never the vectors), metrics =
    /// token usage.
    #[track_caller]
    pub fn create(
        &self,
        request: CreateEmbeddingRequest,
    ) -> impl Future<Output = Result<CreateEmbeddingResponse, OpenAIError>> + Send + 'static {
        let client = self.client.client.clone();
        let caller = Location::caller();
        async move {
            let trace = braintrust_core::is_enabled()
                .then(|| request_json(&request))
                .flatten()
                .map(|body| spans::embeddings_start(&body, caller));
            let result = client.embeddings().create(request).await;
            if let Some(trace) = trace {
                match &result {
                    Ok(response) => {
                        let usage = serde_json::to_value(&response.usage).ok();
                        let len = response.data.first().map_or(0, |d| d.embedding.len());
                        spans::embeddings_end(trace, Ok((usage, len)));
                    }
                    Err(e) => spans::embeddings_end(trace, Err(e)),
                }
            }
            result
        }
    }
}

/// The traced Responses API; see [`TracedClient::responses`].
#[derive(Debug, Clone, Copy)]
pub struct TracedResponses<'a, C: Config> {
    client: &'a TracedClient<C>,
}

impl<C: Config + Clone + 'static> TracedResponses<'_, C> {
    /// `async_openai::Responses::create`, traced: `input` = the input,
    /// `output` = the output items, metadata = the parameters plus the
    /// response's id, model and status, metrics = token usage and
    /// `time_to_first_token`, and a `tool` child span per tool item.
    #[track_caller]
    pub fn create(
        &self,
        request: CreateResponse,
    ) -> impl Future<Output = Result<Response, OpenAIError>> + Send + 'static {
        let client = self.client.client.clone();
        let caller = Location::caller();
        async move {
            let trace = braintrust_core::is_enabled()
                .then(|| request_json(&request))
                .flatten()
                .map(|body| spans::responses_start(&body, caller));
            let result = client.responses().create(request).await;
            if let Some(trace) = trace {
                match &result {
                    Ok(response) => match serde_json::to_value(response) {
                        Ok(mut value) => {
                            drop_nulls(&mut value);
                            spans::responses_end(trace, Some(&value), None)
                        }
                        Err(e) => spans::responses_end(trace, None, Some(&e)),
                    },
                    Err(e) => spans::responses_end(trace, None, Some(e)),
                }
            }
            result
        }
    }

    /// `async_openai::Responses::create_stream`, traced: the span ends with
    /// the final response (or the output rebuilt from the events when the
    /// stream stops early), `time_to_first_token` at the first event.
    #[track_caller]
    pub fn create_stream(
        &self,
        mut request: CreateResponse,
    ) -> impl Future<Output = Result<ResponseStream, OpenAIError>> + Send + 'static {
        let client = self.client.client.clone();
        let caller = Location::caller();
        async move {
            if !braintrust_core::is_enabled() {
                return client.responses().create_stream(request).await;
            }
            if request.stream.is_none() {
                request.stream = Some(true);
            }
            let Some(body) = request_json(&request) else {
                return client.responses().create_stream(request).await;
            };
            let trace = spans::responses_start(&body, caller);
            match client.responses().create_stream(request).await {
                Ok(inner) => Ok(Box::pin(TracedStream {
                    inner,
                    span: Some(ResponseStreamSpan::new(trace)),
                }) as ResponseStream),
                Err(e) => {
                    spans::responses_end(trace, None, Some(&e));
                    Err(e)
                }
            }
        }
    }
}

/// Removes `null` object entries, at any depth. async-openai's Responses
/// types write every field they know, the ones the server left out as
/// `null`; the span logs what the server sent, as the other SDKs do (an
/// explicit `null` from the server goes too). Chat output needs no such
/// step: its standard keys are logged `null` when absent anyway.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// What a stream span needs from one item of async-openai's stream.
trait StreamSpan<T>: Send {
    fn item(&mut self, item: &T);
    fn end(&mut self, error: Option<&(dyn std::error::Error + 'static)>);
}

impl StreamSpan<CreateChatCompletionStreamResponse> for ChatStreamSpan {
    fn item(&mut self, item: &CreateChatCompletionStreamResponse) {
        // Through JSON into this crate's chunk type, which the shared
        // aggregation reads.
        if let Some(chunk) = serde_json::to_value(item)
            .ok()
            .and_then(|v| serde_json::from_value::<ChatCompletionChunk>(v).ok())
        {
            self.chunk(&chunk);
        }
    }
    fn end(&mut self, error: Option<&(dyn std::error::Error + 'static)>) {
        ChatStreamSpan::end(self, error);
    }
}

impl StreamSpan<ResponseStreamEvent> for ResponseStreamSpan {
    fn item(&mut self, item: &ResponseStreamEvent) {
        if let Ok(mut v) = serde_json::to_value(item) {
            drop_nulls(&mut v);
            self.event(&v);
        }
    }
    fn end(&mut self, error: Option<&(dyn std::error::Error + 'static)>) {
        ResponseStreamSpan::end(self, error);
    }
}

/// async-openai's stream with a span alongside. The span ends at the first
/// error item or at the end; dropping the stream earlier cancels it (the
/// span's own `Drop`).
struct TracedStream<T, S> {
    inner: Pin<Box<dyn Stream<Item = Result<T, OpenAIError>> + Send>>,
    span: Option<S>,
}

impl<T, S: StreamSpan<T> + Unpin> Stream for TracedStream<T, S> {
    type Item = Result<T, OpenAIError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.inner.as_mut().poll_next(cx);
        if let Poll::Ready(item) = &next {
            match item {
                Some(Ok(v)) => {
                    if let Some(span) = this.span.as_mut() {
                        span.item(v);
                    }
                }
                Some(Err(e)) => {
                    if let Some(mut span) = this.span.take() {
                        span.end(Some(e));
                    }
                }
                None => {
                    if let Some(mut span) = this.span.take() {
                        span.end(None);
                    }
                }
            }
        }
        next
    }
}
