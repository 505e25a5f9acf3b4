//! Tracing a model call made with some other client, following the guide's
//! "Wrapping a custom LLM client": an `llm` span with the messages as input,
//! the parameters as metadata, and output plus token metrics in one call.

use std::panic::Location;
use std::time::Instant;

use braintrust_core::__internal::start_span_at;
use braintrust_core::{error_string, Event, Span, SpanArgs, SpanType};
use serde::Serialize;
use serde_json::Value;

use crate::trace::INSTRUMENTATION;

/// Token counts of one call. `tokens` defaults to prompt + completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCounts {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Total, when the provider reports it separately.
    pub total_tokens: Option<u64>,
}

impl TokenCounts {
    /// Prompt and completion counts; the total is their sum.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        TokenCounts {
            prompt_tokens,
            completion_tokens,
            total_tokens: None,
        }
    }

    fn metrics(self) -> [(&'static str, f64); 3] {
        [
            ("prompt_tokens", self.prompt_tokens as f64),
            ("completion_tokens", self.completion_tokens as f64),
            (
                "tokens",
                self.total_tokens
                    .unwrap_or(self.prompt_tokens + self.completion_tokens) as f64,
            ),
        ]
    }
}

/// An `llm` span around a call to a model this crate does not wrap.
///
/// ```
/// use braintrust_openai::{llm_span, TokenCounts};
/// use serde_json::json;
///
/// let messages = json!([{"role": "user", "content": "Capital of France?"}]);
/// let span = llm_span(&messages, json!({"model": "my-model", "temperature": 0}));
/// // ... call the model ...
/// span.finish(json!([{"role": "assistant", "content": "Paris."}]), TokenCounts::new(12, 2));
/// ```
///
/// With no logger initialized the span is a no-op and nothing is serialized.
/// Dropping an `LlmSpan` without finishing it ends the span as it is.
#[derive(Debug)]
pub struct LlmSpan {
    span: Span,
    started: Instant,
    first_token: bool,
}

/// Starts an `llm` span named `"LLM"` under the current span (or as a root of
/// the current logger): `input` = `messages`, `metadata` = `params` (an
/// object; anything else is ignored).
#[track_caller]
pub fn llm_span(messages: impl Serialize, params: impl Serialize) -> LlmSpan {
    LlmSpan::start_at("LLM", messages, params, Location::caller())
}

impl LlmSpan {
    /// [`llm_span`] with a span name of your choice.
    #[track_caller]
    pub fn start(
        name: impl Into<std::borrow::Cow<'static, str>>,
        messages: impl Serialize,
        params: impl Serialize,
    ) -> LlmSpan {
        LlmSpan::start_at(name, messages, params, Location::caller())
    }

    fn start_at(
        name: impl Into<std::borrow::Cow<'static, str>>,
        messages: impl Serialize,
        params: impl Serialize,
        caller: &'static Location<'static>,
    ) -> LlmSpan {
        let started = Instant::now();
        if !braintrust_core::is_enabled() {
            return LlmSpan {
                span: Span::noop(),
                started,
                first_token: false,
            };
        }
        let mut event = Event::new().input(serde_json::to_value(messages).unwrap_or(Value::Null));
        if let Ok(v @ Value::Object(_)) = serde_json::to_value(params) {
            event = event.metadata(v);
        }
        let span = start_span_at(
            SpanArgs::new()
                .name(name)
                .span_type(SpanType::Llm)
                .instrumentation(INSTRUMENTATION)
                .event(event),
            caller,
        );
        LlmSpan {
            span,
            started,
            first_token: true,
        }
    }

    /// The underlying span (to log more fields or start children).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records `time_to_first_token` now (call it when a stream's first chunk
    /// arrives; only the first call counts). Without it, [`finish`](Self::finish)
    /// records the whole call time, as the OpenAI wrapper does.
    pub fn first_token(&mut self) {
        if std::mem::take(&mut self.first_token) {
            self.span
                .log_metrics([("time_to_first_token", self.started.elapsed().as_secs_f64())]);
        }
    }

    /// Logs the output and token metrics without ending the span.
    pub fn log(&mut self, output: impl Serialize, tokens: TokenCounts) {
        if self.span.is_noop() {
            return;
        }
        self.first_token();
        let output = serde_json::to_value(output).unwrap_or(Value::Null);
        let _ = self
            .span
            .log(Event::new().output(output).metrics(tokens.metrics()));
    }

    /// Logs an OpenAI-style `usage` object, mapped to metrics as the wrapper
    /// does (see [`crate::usage_to_metrics`]).
    pub fn log_usage(&self, usage: &Value) {
        self.span.log_metrics(crate::usage::usage_to_metrics(usage));
    }

    /// Logs the output and token metrics, and ends the span.
    pub fn finish(mut self, output: impl Serialize, tokens: TokenCounts) {
        self.log(output, tokens);
        self.span.end();
    }

    /// Logs an error and ends the span.
    pub fn fail(self, err: &(dyn std::error::Error + 'static)) {
        let _ = self.span.log(Event::new().error(error_string(err)));
        self.span.end();
    }

    /// Ends the span with whatever was logged.
    pub fn end(self) {
        self.span.end();
    }
}
