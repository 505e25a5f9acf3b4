//! Tracing a model call made with some other client, following the guide's
//! "Wrapping a custom LLM client": an `llm` span with the messages as input,
//! the parameters as metadata, and output plus token metrics in one call.

use std::panic::Location;
use std::time::Instant;

use braintrust_core::__internal::start_span_at;
use braintrust_core::{error_string, Event, Span, SpanArgs, SpanType, ValidationError};
use serde::Serialize;
use serde_json::Value;

use crate::trace::{report_left_out_values, INSTRUMENTATION};
use crate::usage::MAX_USAGE_VALUE;

/// Token counts of one call. `tokens` defaults to prompt + completion. A
/// count above 2^53 (the largest integer every JSON reader keeps exact) is
/// left out of the span, reported on stderr once and counted in
/// `Stats::rejected_logs`.
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

    /// The metrics, and the counts left out.
    fn metrics(self) -> (Vec<(&'static str, f64)>, Vec<ValidationError>) {
        let total = self
            .total_tokens
            .unwrap_or(self.prompt_tokens.saturating_add(self.completion_tokens));
        let mut left_out = Vec::new();
        let metrics = [
            ("prompt_tokens", self.prompt_tokens),
            ("completion_tokens", self.completion_tokens),
            ("tokens", total),
        ]
        .into_iter()
        .filter_map(|(name, n)| {
            let v = n as f64;
            if v <= MAX_USAGE_VALUE {
                return Some((name, v));
            }
            left_out.push(ValidationError {
                field: format!("metrics.{name}"),
                rule: "token counts must be at most 2^53".into(),
            });
            None
        })
        .collect();
        (metrics, left_out)
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
/// the current logger): `input` = `messages`, `metadata` = `params`. `params`
/// must serialize to an object (or to `null` for none); anything else, and
/// `messages` that fail to serialize, are left out of the span, reported on
/// stderr once and counted in `Stats::rejected_logs`.
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
        let mut left_out = Vec::new();
        let mut event = Event::new();
        match serde_json::to_value(messages) {
            Ok(v) => event = event.input(v),
            Err(e) => left_out.push(ValidationError {
                field: "input".into(),
                rule: format!("the messages must serialize to JSON ({e})"),
            }),
        }
        match serde_json::to_value(params) {
            Ok(v @ Value::Object(_)) => event = event.metadata(v),
            Ok(Value::Null) => {}
            Ok(_) => left_out.push(ValidationError {
                field: "metadata".into(),
                rule: "the params must serialize to a JSON object".into(),
            }),
            Err(e) => left_out.push(ValidationError {
                field: "metadata".into(),
                rule: format!("the params must serialize to a JSON object ({e})"),
            }),
        }
        let span = start_span_at(
            SpanArgs::new()
                .name(name)
                .span_type(SpanType::Llm)
                .instrumentation(INSTRUMENTATION)
                .event(event),
            caller,
        );
        report_left_out_values(&span, left_out);
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
        let (metrics, left_out) = tokens.metrics();
        report_left_out_values(&self.span, left_out);
        let _ = self.span.log(Event::new().output(output).metrics(metrics));
    }

    /// Logs an OpenAI-style `usage` object, mapped to metrics as the wrapper
    /// does (see [`crate::usage_to_metrics`]); values it leaves out are
    /// reported and counted as the wrapper's are.
    pub fn log_usage(&self, usage: &Value) {
        let checked = crate::usage::checked_usage_metrics(usage);
        report_left_out_values(&self.span, checked.left_out);
        self.span.log_metrics(checked.metrics);
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
