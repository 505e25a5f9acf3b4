//! An async client for OpenAI and OpenAI-compatible servers (vLLM, Ollama,
//! llama.cpp, Together, Groq, Azure OpenAI...) whose every call is a
//! Braintrust `llm` span, shaped as the official SDKs' `wrap_openai` logs it.
//!
//! * [`chat`](OpenAiClient::chat): `Chat Completion` spans. `input` = the
//!   messages, `metadata` = the other parameters plus `provider: "openai"`,
//!   `output` = the choices (for streams: aggregated from the deltas), metrics
//!   = token usage and `time_to_first_token`.
//! * [`embeddings`](OpenAiClient::embeddings): `Embedding` spans whose
//!   output is `{"embedding_length": n}`, never the vector.
//! * [`responses`](OpenAiClient::responses): `openai.responses.create` spans,
//!   with a `tool` child span per tool item of the output.
//!
//! Already using the `async-openai` crate? With the `async-openai` feature,
//! `braintrust_openai::wrap_async_openai` traces its client, keeping its
//! types, with the same span shapes (module `braintrust_openai::async_openai`).
//!
//! Spans nest under the current span ([`braintrust_core::Span::enter`],
//! [`braintrust_core::WithSpan`], `#[traced]`), or are roots of the current
//! logger. With no logger and no current span, calls do no tracing work at
//! all. Errors (HTTP status with the server's error body, timeouts, bad JSON,
//! broken streams) are logged to the span's `error` and returned as
//! [`OpenAiError`].
//!
//! The request sent and the response returned are never changed by tracing.
//! What the span copies from them is checked: usage values that would make
//! a wrong metric (negative, above 2^53, not a number, or named like the
//! span's own `start`, `end`, `time_to_first_token`) and a request parameter
//! named `provider` are left out of the span, named once per field on stderr
//! and counted in `Stats::rejected_logs` (see [`usage_to_metrics`]).
//!
//! Streaming calls only report token usage when the server is asked to
//! (`stream_options.include_usage`); this client never changes a request by
//! default, see [`OpenAiClientBuilder::include_usage_in_streams`] for the opt-in.
//!
//! ```no_run
//! use braintrust_core::{init_logger, WithSpan, LoggerOptions, SpanArgs};
//! use braintrust_openai::{ChatCompletionRequest, ChatMessage, OpenAiClient};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let logger = init_logger(LoggerOptions::new().project("My Project"))?;
//! let client = braintrust_openai::wrap(OpenAiClient::from_env()?);
//!
//! let root = logger.start_span(SpanArgs::new().name("answer"));
//! let request = ChatCompletionRequest::new(
//!     "gpt-4o-mini",
//!     vec![ChatMessage::system("be terse"), ChatMessage::user("Capital of France?")],
//! )
//! .temperature(0.0);
//! // The `Chat Completion` span is a child of `answer`.
//! let reply = client.chat().create(request).in_span(root.clone()).await?;
//! println!("{}", reply.text().unwrap_or_default());
//! root.end();
//! logger.flush_async().await?;
//! # Ok(()) }
//! ```
//!
//! Streaming:
//!
//! ```no_run
//! use braintrust_openai::{ChatCompletionRequest, ChatMessage, OpenAiClient};
//!
//! # async fn demo() -> Result<(), braintrust_openai::OpenAiError> {
//! let client = OpenAiClient::builder().include_usage_in_streams(true).build()?;
//! let mut stream = client
//!     .chat()
//!     .create_stream(ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hi")]))
//!     .await?;
//! while let Some(chunk) = stream.next().await {
//!     let chunk = chunk?;
//!     if let Some(text) = chunk.choices.first().and_then(|c| c.delta.content.as_deref()) {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "async-openai")]
pub mod async_openai;
mod chat;
mod client;
mod embeddings;
mod error;
mod llm_span;
mod responses;
mod spans;
mod sse;
mod trace;
mod types;
mod usage;

#[cfg(feature = "mock-server")]
pub mod mock;

#[cfg(feature = "async-openai")]
pub use crate::async_openai::{wrap_async_openai, TracedClient};
pub use chat::{
    AssistantMessage, Chat, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatStream,
    Choice, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta,
};
pub use client::{OpenAiClient, OpenAiClientBuilder, DEFAULT_BASE_URL};
pub use embeddings::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingVector, Embeddings,
};
pub use error::{ApiError, OpenAiError};
pub use llm_span::{llm_span, LlmSpan, TokenCounts};
pub use responses::{
    Response, ResponseRequest, ResponseStream, ResponseStreamEvent, ResponseUsage, Responses,
};
pub use trace::INSTRUMENTATION;
pub use types::{
    image_url_part, text_part, ChatMessage, FunctionCall, FunctionDefinition, MessageContent, Role,
    Tool, ToolCall, Usage,
};
pub use usage::usage_to_metrics;

/// Decodes a whole server-sent-events body, fed in `chunks` as a streaming
/// response delivers it, into its events: the `event:` name and the joined
/// `data:` lines. The decoder the streaming wrappers use, exposed for the
/// fuzz targets and property tests; not part of the stable API.
#[doc(hidden)]
pub fn decode_sse_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<(Option<String>, String)> {
    let mut decoder = sse::SseDecoder::default();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(e) = decoder.next_event() {
            events.push((e.event, e.data));
        }
    }
    // WHATWG: an event not terminated by a blank line is discarded.
    events
}

/// Turns tracing on for `client`, in the spirit of the official SDKs'
/// `wrap_openai`. Clients trace by default, so this only matters for a
/// client built with `.tracing(false)`; it exists so code reads the same as
/// in the other SDKs.
///
/// ```
/// let client = braintrust_openai::wrap(
///     braintrust_openai::OpenAiClient::builder().tracing(false).build().unwrap(),
/// );
/// assert!(client.tracing_enabled());
/// ```
pub fn wrap(client: OpenAiClient) -> OpenAiClient {
    client.with_tracing(true)
}
