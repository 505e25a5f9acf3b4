//! `tracing` → Braintrust: a `tracing-subscriber` [`Layer`] that records
//! `tracing` spans inside a Braintrust trace as Braintrust spans, so code
//! instrumented with `#[instrument]`, tower-http, sqlx or an LLM client
//! following the OpenTelemetry GenAI conventions shows up in the trace
//! without being annotated again.
//!
//! # What becomes what
//!
//! A `tracing` span is forwarded when it starts inside a Braintrust trace:
//! its explicit parent is a forwarded span, or (contextual spans) a
//! Braintrust span is current, either a native one (`#[traced]`, the tower
//! middleware) or a forwarded `tracing` span that is entered. The new
//! Braintrust span is the child of that span, and while the `tracing` span is
//! entered it is the current Braintrust span, so `#[traced]` functions called
//! inside nest under it. Spans outside any trace are ignored (no allocation),
//! unless [`BraintrustLayer::forward_roots`] is set.
//!
//! | `tracing` | Braintrust |
//! | --- | --- |
//! | span name (or the `otel.name` field) | `span_attributes.name` |
//! | target, level, other fields | `metadata` (`target`, `level`, each field by its name) |
//! | field `input` / `output` / `expected` | `input` / `output` / `expected` (a string holding a JSON object or array is parsed) |
//! | field `braintrust.type` (e.g. `"tool"`) | `span_attributes.type` |
//! | `ERROR` event (`#[instrument(err)]`), field `otel.status_code = "ERROR"` | `error` (the event's `error` field, else its message) |
//! | event with a `return` field (`#[instrument(ret)]`) | `output` |
//! | other events inside the span | `metadata.events`: `[{level, message, fields...}]` (at most 64) |
//! | `gen_ai.*` fields (GenAI semantic conventions) | an `llm` span: see below |
//!
//! GenAI spans (any field starting with `gen_ai.` at creation): type `llm`;
//! `metadata.provider` from `gen_ai.system` / `gen_ai.provider.name`,
//! `metadata.model` from `gen_ai.request.model` (else
//! `gen_ai.response.model`), other `gen_ai.request.*` values by their last
//! segment (`temperature`, `max_tokens`...); `metrics.prompt_tokens`,
//! `completion_tokens` and `tokens` from `gen_ai.usage.input_tokens` /
//! `output_tokens` (or `prompt_tokens` / `completion_tokens`); `input` is
//! the messages of the `gen_ai.system.message`, `gen_ai.user.message`,
//! `gen_ai.assistant.message` and `gen_ai.tool.message` events
//! (`{role, content}`), or the JSON of a `gen_ai.input.messages` /
//! `gen_ai.prompt` field; `output` is the `gen_ai.choice` events
//! (`{index, finish_reason, message: {role: "assistant", content}}`, as
//! `wrap_openai` logs choices), or the JSON of `gen_ai.output.messages` /
//! `gen_ai.completion`. The older `gen_ai.content.prompt` /
//! `gen_ai.content.completion` events set `input` / `output` from their
//! `gen_ai.prompt` / `gen_ai.completion` fields. An event's name is its `name:` (as in
//! `tracing::info!(name: "gen_ai.user.message", content = "hi")`) or its
//! `event.name` field.
//!
//! # Filters
//!
//! [`BraintrustLayer::with_targets`] takes a
//! [`tracing_subscriber::filter::Targets`]: only spans it enables are
//! forwarded (default: every target, every level). Filtering here does not
//! disable spans for the subscriber's other layers.
//!
//! ```
//! use braintrust_integrations::tracing_layer::BraintrustLayer;
//! use tracing_subscriber::filter::Targets;
//! use tracing_subscriber::prelude::*;
//!
//! let layer = BraintrustLayer::new().with_targets(
//!     Targets::new()
//!         .with_default(tracing::Level::INFO)
//!         .with_target("sqlx", tracing::Level::WARN),
//! );
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     // Outside a Braintrust trace: ignored.
//!     tracing::info_span!("work").in_scope(|| {});
//! });
//! ```

use std::cell::RefCell;
use std::fmt;

use braintrust_core::{current_span, replace_current_span, Event, Span, SpanArgs, SpanType};
use serde_json::{Map, Value};
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Events kept per span in `metadata.events`; later ones are counted only.
const MAX_EVENTS: usize = 64;

/// The layer; see the [module docs](self).
///
/// ```
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(braintrust_integrations::tracing_layer::BraintrustLayer::new())
///     .try_init()
///     .ok(); // fails only if a global subscriber is already set
/// ```
#[derive(Debug, Clone)]
pub struct BraintrustLayer {
    targets: Targets,
    forward_roots: bool,
}

impl Default for BraintrustLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl BraintrustLayer {
    /// Forwards every target at every level, only inside Braintrust traces.
    pub fn new() -> Self {
        BraintrustLayer {
            targets: Targets::new().with_default(tracing_core::LevelFilter::TRACE),
            forward_roots: false,
        }
    }

    /// Forwards only the spans `targets` enables (by target prefix and level).
    pub fn with_targets(mut self, targets: Targets) -> Self {
        self.targets = targets;
        self
    }

    /// Also forwards spans that start outside any Braintrust trace, as new
    /// roots of the current logger (default: off, so a busy service does not
    /// flood the project with its background spans).
    pub fn forward_roots(mut self, on: bool) -> Self {
        self.forward_roots = on;
        self
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        self.targets.would_enable(meta.target(), meta.level())
    }
}

/// What a forwarded span keeps until it closes (in the span's extensions).
struct Forwarded {
    span: Span,
    genai: bool,
    fields: Map<String, Value>,
    input: Option<Value>,
    output: Option<Value>,
    expected: Option<Value>,
    error: Option<String>,
    rename: Option<String>,
    span_type: Option<SpanType>,
    events: Vec<Value>,
    dropped_events: usize,
    messages_in: Vec<Value>,
    choices: Vec<Value>,
}

thread_local! {
    /// Braintrust spans made current by `on_enter`, with what was current
    /// before, restored by the matching `on_exit`.
    static ENTERED: RefCell<Vec<(Id, Span)>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for BraintrustLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !self.wants(meta) {
            return;
        }
        // Parent first, with no allocation on the common "not in a trace" path.
        let parent = if let Some(p) = attrs.parent() {
            ctx.span(p)
                .and_then(|s| s.extensions().get::<Forwarded>().map(|f| f.span.clone()))
        } else if attrs.is_contextual() {
            Some(current_span()).filter(|s| !s.is_noop())
        } else {
            None
        };
        if parent.is_none() && !self.forward_roots {
            return;
        }
        let mut visitor = FieldVisitor::default();
        attrs.record(&mut visitor);
        let genai = visitor.values.keys().any(|k| k.starts_with("gen_ai."));
        let mut fwd = Forwarded {
            span: Span::noop(),
            genai,
            fields: Map::new(),
            input: None,
            output: None,
            expected: None,
            error: None,
            rename: None,
            span_type: genai.then_some(SpanType::Llm),
            events: Vec::new(),
            dropped_events: 0,
            messages_in: Vec::new(),
            choices: Vec::new(),
        };
        fwd.absorb(visitor.values);
        let name = fwd.rename.take().unwrap_or_else(|| meta.name().to_string());
        let mut args = SpanArgs::new().name(name).instrumentation("tracing");
        if let Some(t) = fwd.span_type.take() {
            args = args.span_type(t);
        }
        fwd.span = match parent {
            Some(p) => p.start_span(args),
            None => braintrust_core::start_span(args),
        };
        if fwd.span.is_noop() {
            return;
        }
        fwd.fields
            .insert("target".into(), Value::String(meta.target().to_string()));
        fwd.fields
            .insert("level".into(), Value::String(meta.level().to_string()));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fwd);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(fwd) = ext.get_mut::<Forwarded>() else {
            return;
        };
        let mut visitor = FieldVisitor::default();
        values.record(&mut visitor);
        fwd.absorb(visitor.values);
        if let Some(name) = fwd.rename.take() {
            fwd.span.set_attributes(Some(&name), None);
        }
        if let Some(t) = fwd.span_type.take() {
            fwd.span.set_attributes(None, Some(t));
        }
    }

    fn on_event(&self, event: &tracing_core::Event<'_>, ctx: Context<'_, S>) {
        // Events obey the same target/level filter as spans.
        if !self.wants(event.metadata()) {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(fwd) = ext.get_mut::<Forwarded>() else {
            return;
        };
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        fwd.event(event.metadata(), visitor.values);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(fwd) = ext.get::<Forwarded>() else {
            return;
        };
        let previous = replace_current_span(fwd.span.clone());
        ENTERED.with(|e| e.borrow_mut().push((id.clone(), previous)));
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<Forwarded>().is_none() {
            return;
        }
        let previous = ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            let at = e.iter().rposition(|(i, _)| i == id)?;
            Some(e.remove(at).1)
        });
        if let Some(previous) = previous {
            replace_current_span(previous);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(fwd) = span.extensions_mut().remove::<Forwarded>() else {
            return;
        };
        fwd.finish();
    }
}

impl Forwarded {
    /// Sorts recorded fields into their Braintrust places.
    fn absorb(&mut self, values: Map<String, Value>) {
        for (key, value) in values {
            match key.as_str() {
                "input" => self.input = Some(json_text(value)),
                "output" => self.output = Some(json_text(value)),
                "expected" => self.expected = Some(json_text(value)),
                "otel.name" => self.rename = value.as_str().map(str::to_string),
                "braintrust.type" => {
                    self.span_type = value.as_str().and_then(|t| t.parse().ok());
                }
                "otel.status_code" => {
                    if value
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("error"))
                    {
                        self.error.get_or_insert_with(|| "error".to_string());
                    }
                }
                "otel.status_description" | "error" => {
                    self.error = Some(as_text(&value));
                }
                _ => {
                    if key.starts_with("gen_ai.") {
                        self.genai = true;
                    }
                    self.fields.insert(key, value);
                }
            }
        }
    }

    /// Records an event inside the span.
    fn event(&mut self, meta: &Metadata<'_>, mut fields: Map<String, Value>) {
        let name = match fields.remove("event.name") {
            Some(Value::String(n)) => n,
            _ => meta.name().to_string(),
        };
        if let Some(role) = name
            .strip_prefix("gen_ai.")
            .and_then(|r| r.strip_suffix(".message"))
        {
            self.genai = true;
            let content = fields
                .remove("content")
                .map(json_text)
                .unwrap_or(Value::Null);
            let mut m = Map::new();
            m.insert(
                "role".into(),
                fields
                    .remove("role")
                    .unwrap_or_else(|| Value::String(role.to_string())),
            );
            m.insert("content".into(), content);
            self.messages_in.push(Value::Object(m));
            return;
        }
        // The older convention: prompt and completion events carrying JSON.
        if name == "gen_ai.content.prompt" || name == "gen_ai.content.completion" {
            self.genai = true;
            let (key, slot) = if name.ends_with("prompt") {
                ("gen_ai.prompt", &mut self.input)
            } else {
                ("gen_ai.completion", &mut self.output)
            };
            if let Some(v) = fields.remove(key) {
                *slot = Some(json_text(v));
            }
            return;
        }
        if name == "gen_ai.choice" {
            self.genai = true;
            let content = fields
                .remove("content")
                .map(json_text)
                .unwrap_or(Value::Null);
            let mut message = Map::new();
            message.insert("role".into(), Value::String("assistant".into()));
            message.insert("content".into(), content);
            let mut choice = Map::new();
            choice.insert(
                "index".into(),
                fields
                    .remove("index")
                    .unwrap_or_else(|| Value::from(self.choices.len())),
            );
            if let Some(reason) = fields.remove("finish_reason") {
                choice.insert("finish_reason".into(), reason);
            }
            choice.insert("message".into(), Value::Object(message));
            self.choices.push(Value::Object(choice));
            return;
        }
        if let Some(ret) = fields.remove("return") {
            self.output = Some(json_text(ret));
            return;
        }
        if *meta.level() == Level::ERROR {
            let text = fields
                .remove("error")
                .or_else(|| fields.remove("message"))
                .map(|v| as_text(&v))
                .unwrap_or_else(|| name.clone());
            self.error = Some(text);
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.dropped_events += 1;
            return;
        }
        let mut e = Map::new();
        e.insert("level".into(), Value::String(meta.level().to_string()));
        if let Some(m) = fields.remove("message") {
            e.insert("message".into(), m);
        }
        e.insert("target".into(), Value::String(meta.target().to_string()));
        e.extend(fields);
        self.events.push(Value::Object(e));
    }

    /// Logs what was collected and ends the span.
    fn finish(mut self) {
        let mut event = Event::new();
        let mut metrics: Vec<(String, f64)> = Vec::new();
        if self.genai {
            self.genai_fields(&mut metrics);
        }
        if !self.events.is_empty() {
            self.fields.insert(
                "events".into(),
                Value::Array(std::mem::take(&mut self.events)),
            );
        }
        if self.dropped_events > 0 {
            self.fields
                .insert("events_dropped".into(), Value::from(self.dropped_events));
        }
        event = event.metadata(Value::Object(std::mem::take(&mut self.fields)));
        if let Some(v) = self.input.take() {
            event = event.input(v);
        }
        if let Some(v) = self.output.take() {
            event = event.output(v);
        }
        if let Some(v) = self.expected.take() {
            event = event.expected(v);
        }
        if let Some(e) = self.error.take() {
            event = event.error(e);
        }
        if !metrics.is_empty() {
            event = event.metrics(metrics);
        }
        // Every value is JSON built here; a validation failure would drop
        // only this span's fields, never the user's work.
        let _ = self.span.log(event);
        self.span.end();
    }

    /// Maps GenAI semantic-convention fields to an `llm` span's fields.
    fn genai_fields(&mut self, metrics: &mut Vec<(String, f64)>) {
        let mut keep = Map::new();
        let mut model = None;
        let mut response_model = None;
        let mut prompt = None;
        let mut completion = None;
        for (k, v) in std::mem::take(&mut self.fields) {
            let Some(rest) = k.strip_prefix("gen_ai.") else {
                keep.insert(k, v);
                continue;
            };
            match rest {
                "system" | "provider.name" => {
                    keep.insert("provider".into(), v);
                }
                "request.model" => model = Some(v),
                "response.model" => response_model = Some(v),
                "usage.input_tokens" | "usage.prompt_tokens" => prompt = v.as_f64(),
                "usage.output_tokens" | "usage.completion_tokens" => completion = v.as_f64(),
                "input.messages" | "prompt" => {
                    self.input.get_or_insert_with(|| json_text(v));
                }
                "output.messages" | "completion" => {
                    self.output.get_or_insert_with(|| json_text(v));
                }
                other => {
                    let key = other.strip_prefix("request.").unwrap_or(other);
                    keep.insert(key.to_string(), v);
                }
            }
        }
        if let Some(m) = model.or(response_model) {
            keep.insert("model".into(), m);
        }
        self.fields = keep;
        if let Some(p) = prompt {
            metrics.push(("prompt_tokens".into(), p));
        }
        if let Some(c) = completion {
            metrics.push(("completion_tokens".into(), c));
        }
        if let (Some(p), Some(c)) = (prompt, completion) {
            metrics.push(("tokens".into(), p + c));
        }
        if !self.messages_in.is_empty() && self.input.is_none() {
            self.input = Some(Value::Array(std::mem::take(&mut self.messages_in)));
        }
        if !self.choices.is_empty() && self.output.is_none() {
            self.output = Some(Value::Array(std::mem::take(&mut self.choices)));
        }
    }
}

/// A string holding a JSON object or array becomes that JSON; anything else
/// is kept as it is.
fn json_text(v: Value) -> Value {
    match &v {
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
            serde_json::from_str(s).unwrap_or(v)
        }
        _ => v,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Collects field values as JSON.
#[derive(Default)]
struct FieldVisitor {
    values: Map<String, Value>,
}

impl Visit for FieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values.insert(
            field.name().into(),
            braintrust_core::__internal::json_f64(value),
        );
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values.insert(field.name().into(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.values
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.values.insert(
            field.name().into(),
            Value::String(braintrust_core::error_string(value)),
        );
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.values
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
