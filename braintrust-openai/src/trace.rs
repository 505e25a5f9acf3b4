//! The span one call makes, shared by every endpoint: started with input and
//! metadata, finished with output and metrics or with the error, and marked
//! cancelled (as the core marks a dropped `#[traced]` future:
//! `error = "cancelled"`) if the call's future or stream is dropped before either.

use std::panic::Location;
use std::time::Instant;

use braintrust_core::__internal::{report_left_out, start_span_at, CANCELLED};
use braintrust_core::{error_string, Attachment, Event, Span, SpanArgs, SpanType, ValidationError};
use serde_json::{Map, Value};

/// `context.span_origin.instrumentation.name` of the spans this crate makes.
pub const INSTRUMENTATION: &str = "openai";

/// Splits a serialized request into the span's `input` (the `input_key`
/// field) and `metadata` (every other field, plus `provider: "openai"`).
/// `metadata.provider` is the wrapper's: a request parameter of that name
/// (e.g. a gateway's routing options) is left out, and returned.
fn split_request(
    body: &Value,
    input_key: &str,
) -> (Value, Map<String, Value>, Option<ValidationError>) {
    let mut metadata = Map::new();
    let mut input = Value::Null;
    let mut left_out = None;
    if let Value::Object(map) = body {
        for (k, v) in map {
            if k == input_key {
                input = v.clone();
                data_urls_to_attachments(&mut input);
            } else if k == "provider" {
                left_out = Some(ValidationError {
                    field: "metadata.provider".into(),
                    rule: "reserved for the provider the wrapper logs (\"openai\"); the request's `provider` parameter is not logged".into(),
                });
            } else {
                metadata.insert(k.clone(), v.clone());
            }
        }
    }
    metadata.insert("provider".into(), Value::String("openai".into()));
    (input, metadata, left_out)
}

/// Reports values from the user's call left out of `span` for breaking a
/// rule: once per field on stderr, each counted in `Stats::rejected_logs`.
/// The call itself is not affected.
pub(crate) fn report_left_out_values(span: &Span, left_out: Vec<ValidationError>) {
    for e in left_out {
        report_left_out(
            span,
            &format!("openai-left-out:{}", e.field),
            &format!("braintrust-openai: a value of the OpenAI call was left out of its span ({e}); later ones are only counted in Stats::rejected_logs"),
        );
    }
}

/// Replaces inline base64 `data:` URLs in the logged input by attachments
/// (spec §10), so a multimodal call does not put megabytes of base64 into the
/// row: the file is named `image.<ext>` for images, `file.<ext>` otherwise,
/// unless the object holding the URL names a file (`"filename"`). What cannot
/// be converted stays as it was; plain `https:` URLs stay strings. The request
/// sent to the model is not changed.
fn data_urls_to_attachments(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let named = map
                .get("filename")
                .and_then(Value::as_str)
                .map(str::to_owned);
            for child in map.values_mut() {
                convert_or_descend(child, named.as_deref());
            }
        }
        Value::Array(items) => {
            for child in items {
                convert_or_descend(child, None);
            }
        }
        _ => {}
    }
}

fn convert_or_descend(v: &mut Value, filename: Option<&str>) {
    match v {
        Value::String(s) => {
            if let Some(a) = data_url_attachment(s, filename) {
                *v = Value::from(a);
            }
        }
        _ => data_urls_to_attachments(v),
    }
}

/// `data:<mime>;base64,<payload>` → an attachment of the decoded bytes.
fn data_url_attachment(s: &str, filename: Option<&str>) -> Option<Attachment> {
    use base64::Engine as _;
    let (meta, payload) = s.strip_prefix("data:")?.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let ext = mime.split_once('/')?.1.split(['+', ';']).next()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    let label = if mime.starts_with("image/") {
        "image"
    } else {
        "file"
    };
    let name = filename.map_or_else(|| format!("{label}.{ext}"), str::to_owned);
    Attachment::from_bytes(bytes, name, mime).ok()
}

/// The `llm` span of one call. Dropping it unfinished logs
/// `error = "cancelled"` (as a dropped `#[traced]` future does) and ends the span.
pub(crate) struct CallTrace {
    pub span: Span,
    pub started: Instant,
    done: bool,
}

impl CallTrace {
    /// Starts the span of a call from its serialized request: `input` = the
    /// `input_key` field, `metadata` = the others (see `split_request`).
    pub fn start(
        name: &'static str,
        request: &Value,
        input_key: &str,
        caller: &'static Location<'static>,
    ) -> CallTrace {
        let started = Instant::now();
        let (input, metadata, left_out) = split_request(request, input_key);
        let span = start_span_at(
            SpanArgs::new()
                .name(name)
                .span_type(SpanType::Llm)
                .instrumentation(INSTRUMENTATION)
                .event(Event::new().input(input).metadata(Value::Object(metadata))),
            caller,
        );
        report_left_out_values(&span, left_out.into_iter().collect());
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
    pub fn fail(mut self, event: Event, err: &(dyn std::error::Error + 'static)) {
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

/// `usage` → metrics, plus `time_to_first_token`. Usage values left out
/// (see [`crate::usage_to_metrics`]) are reported on `span`.
pub(crate) fn metrics_event(span: &Span, usage: Option<&Value>, ttft: Option<f64>) -> Event {
    let checked = usage
        .map(crate::usage::checked_usage_metrics)
        .unwrap_or_default();
    report_left_out_values(span, checked.left_out);
    let mut metrics = checked.metrics;
    if let Some(t) = ttft {
        metrics.push(("time_to_first_token".into(), t));
    }
    if metrics.is_empty() {
        Event::new()
    } else {
        Event::new().metrics(metrics)
    }
}

#[cfg(test)]
mod data_url_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_urls_become_attachment_references() {
        let mut v = json!([
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}}
            ]}
        ]);
        data_urls_to_attachments(&mut v);
        let parts = &v[0]["content"];
        let image = &parts[0]["image_url"]["url"];
        assert_eq!(image["type"], "braintrust_attachment");
        assert_eq!(
            (image["filename"].as_str(), image["content_type"].as_str()),
            (Some("image.png"), Some("image/png"))
        );
        assert_eq!(parts[1]["image_url"]["url"], "https://example.com/cat.png");
        let file = &parts[2]["file"]["file_data"];
        assert_eq!(
            (file["filename"].as_str(), file["content_type"].as_str()),
            (Some("report.pdf"), Some("application/pdf"))
        );
        assert_eq!(
            parts[3]["image_url"]["url"],
            "data:image/png;base64,not base64!"
        );
    }
}
