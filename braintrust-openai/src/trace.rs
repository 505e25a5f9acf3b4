//! The span one call makes, shared by every endpoint: started with input and
//! metadata, finished with output and metrics or with the error, and marked
//! cancelled if the call's future or stream is dropped before either.

use std::panic::Location;
use std::time::Instant;

use braintrust_core::__internal::{start_span_at, CANCELLED};
use braintrust_core::{error_string, Event, Span, SpanArgs, SpanType};
use serde_json::{Map, Value};

use crate::error::OpenAiError;

/// `context.span_origin.instrumentation.name` of the spans this crate makes.
pub const INSTRUMENTATION: &str = "openai";

/// Splits a serialized request into the span's `input` (the `input_key`
/// field) and `metadata` (every other field, plus `provider: "openai"`).
pub(crate) fn split_request(body: &Value, input_key: &str) -> (Value, Map<String, Value>) {
    let mut metadata = Map::new();
    let mut input = Value::Null;
    if let Value::Object(map) = body {
        for (k, v) in map {
            if k == input_key {
                input = v.clone();
            } else {
                metadata.insert(k.clone(), v.clone());
            }
        }
    }
    metadata.insert("provider".into(), Value::String("openai".into()));
    (input, metadata)
}

/// The `llm` span of one call. Dropping it unfinished logs
/// `error = "cancelled"` (as a dropped `#[traced]` future does) and ends the span.
pub(crate) struct CallTrace {
    pub span: Span,
    pub started: Instant,
    done: bool,
}

impl CallTrace {
    pub fn start(
        name: &'static str,
        input: Value,
        metadata: Map<String, Value>,
        caller: &'static Location<'static>,
    ) -> CallTrace {
        let started = Instant::now();
        let span = start_span_at(
            SpanArgs::new()
                .name(name)
                .span_type(SpanType::Llm)
                .instrumentation(INSTRUMENTATION)
                .event(Event::new().input(input).metadata(Value::Object(metadata))),
            caller,
        );
        CallTrace {
            span,
            started,
            done: false,
        }
    }

    /// Seconds since the call started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Logs `event` (ignoring validation errors, which our events cannot have).
    pub fn log(&self, event: Event) {
        let _ = self.span.log(event);
    }

    /// Logs the final fields and ends the span.
    pub fn finish(mut self, event: Event) {
        self.log(event);
        self.span.end();
        self.done = true;
    }

    /// Logs `event` plus the error and ends the span.
    pub fn fail(mut self, event: Event, err: &OpenAiError) {
        self.log(event.error(error_string(err)));
        self.span.end();
        self.done = true;
    }

    /// Logs `event` plus `error = "cancelled"` and ends the span.
    pub fn cancel(mut self, event: Event) {
        self.log(event.error(CANCELLED));
        self.span.end();
        self.done = true;
    }
}

impl Drop for CallTrace {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.span.log(Event::new().error(CANCELLED));
            self.span.end();
        }
    }
}

/// `usage` → metrics, plus `time_to_first_token`.
pub(crate) fn metrics_event(usage: Option<&Value>, ttft: Option<f64>) -> Event {
    let mut metrics = usage
        .map(crate::usage::usage_to_metrics)
        .unwrap_or_default();
    if let Some(t) = ttft {
        metrics.push(("time_to_first_token".into(), t));
    }
    if metrics.is_empty() {
        Event::new()
    } else {
        Event::new().metrics(metrics)
    }
}
