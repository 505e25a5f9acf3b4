//! `POST /otel/v1/traces`: OTLP/HTTP trace export (protobuf or JSON), stored
//! as span rows like `/logs3` rows, as Braintrust's OTLP endpoint does.
//!
//! The container comes from the `x-bt-parent` header (or a
//! `braintrust.parent` span/resource attribute): `project_name:<name>`,
//! `project_id:<id>` or `experiment_id:<id>`. Each OTel span becomes one row:
//! `id` and `span_id` = the span id, `root_span_id` = the trace id,
//! `span_parents` = `[parent span id]` (none for roots), `metrics.start/end`
//! from the timestamps, `error` from an `ERROR` status. Attributes
//! `braintrust.input` / `output` / `expected` / `metadata` / `metrics` /
//! `scores` / `span_attributes` (JSON text or values) fill those fields; GenAI
//! attributes make an `llm` span (`gen_ai.request.model` → `metadata.model`,
//! `gen_ai.usage.input_tokens` / `output_tokens` → `metrics.prompt_tokens` /
//! `completion_tokens` / `tokens`); other attributes go to `metadata`.
//!
//! The protobuf subset is decoded here rather than with generated code so the
//! local server (which `braintrust::local` embeds) pulls in no OTel crates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::server::Shared;
use crate::store::IngestError;

/// One decoded OTel span.
#[derive(Debug, Default)]
struct OtelSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    start_nanos: u64,
    end_nanos: u64,
    attributes: Map<String, Value>,
    status_code: i64,
    status_message: String,
    events: Vec<(String, Map<String, Value>)>,
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

/// The handler.
pub(crate) async fn traces(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let decoded = if content_type.starts_with("application/json") {
        decode_json(&body)
    } else if content_type.starts_with("application/x-protobuf")
        || content_type.starts_with("application/protobuf")
    {
        decode_protobuf(&body)
    } else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({"error": format!("content-type {content_type:?}: expected application/x-protobuf or application/json")})),
        )
            .into_response();
    };
    let spans = match decoded {
        Ok(s) => s,
        Err(e) => return bad_request(format!("invalid OTLP trace export: {e}")),
    };
    let header_parent = headers
        .get("x-bt-parent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let s2 = s.clone();
    let stored = tokio::task::spawn_blocking(move || store(&s2, header_parent, spans)).await;
    match stored {
        Ok(Ok(n)) => {
            s.logs3_rows.fetch_add(n, Ordering::SeqCst);
            Json(json!({"partialSuccess": {}})).into_response()
        }
        Ok(Err(StoreError::BadRequest(m))) => bad_request(m),
        Ok(Err(StoreError::Db(e))) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

enum StoreError {
    BadRequest(String),
    Db(rusqlite::Error),
}

/// The row fields naming the container a `braintrust.parent` value names.
fn object_fields(s: &Shared, parent: &str) -> Result<Map<String, Value>, StoreError> {
    let mut m = Map::new();
    if let Some(name) = parent.strip_prefix("project_name:") {
        let p = s
            .store
            .project_get_or_create(name, &s.org_id)
            .map_err(StoreError::Db)?;
        m.insert("project_id".into(), p["id"].clone());
        m.insert("log_id".into(), json!("g"));
    } else if let Some(id) = parent.strip_prefix("project_id:") {
        m.insert("project_id".into(), json!(id));
        m.insert("log_id".into(), json!("g"));
    } else if let Some(id) = parent.strip_prefix("experiment_id:") {
        m.insert("experiment_id".into(), json!(id));
    } else {
        return Err(StoreError::BadRequest(format!(
            "x-bt-parent {parent:?}: expected project_name:<name>, project_id:<id> or experiment_id:<id>"
        )));
    }
    Ok(m)
}

fn store(
    s: &Shared,
    header_parent: Option<String>,
    spans: Vec<OtelSpan>,
) -> Result<usize, StoreError> {
    let mut rows: Vec<Box<RawValue>> = Vec::with_capacity(spans.len());
    for span in spans {
        let parent = span
            .attributes
            .get("braintrust.parent")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| header_parent.clone())
            .ok_or_else(|| {
                StoreError::BadRequest(
                    "no x-bt-parent header or braintrust.parent attribute: cannot route the spans"
                        .into(),
                )
            })?;
        let mut row = object_fields(s, &parent)?;
        span_row(span, &mut row);
        let text = Value::Object(row).to_string();
        rows.push(RawValue::from_string(text).map_err(|e| StoreError::BadRequest(e.to_string()))?);
    }
    s.store
        .ingest(&rows)
        .map(|done| done.row_ids.len())
        .map_err(|e| match e {
            IngestError::BadRequest(m) => StoreError::BadRequest(m),
            IngestError::Db(e) => StoreError::Db(e),
        })
}

/// A JSON value from an attribute that may hold JSON text.
fn json_attr(v: Value) -> Value {
    match &v {
        Value::String(s) => serde_json::from_str(s).unwrap_or(v),
        _ => v,
    }
}

fn span_row(span: OtelSpan, row: &mut Map<String, Value>) {
    let OtelSpan {
        trace_id,
        span_id,
        parent_span_id,
        name,
        start_nanos,
        end_nanos,
        mut attributes,
        status_code,
        status_message,
        events,
    } = span;
    attributes.remove("braintrust.parent");
    let start = start_nanos as f64 / 1e9;
    let mut span_attributes = Map::new();
    span_attributes.insert("name".into(), json!(name));
    let mut metrics = Map::new();
    metrics.insert("start".into(), json!(start));
    if end_nanos > 0 {
        metrics.insert("end".into(), json!(end_nanos as f64 / 1e9));
    }
    let mut metadata = Map::new();
    let mut genai = false;
    let (mut prompt, mut completion) = (None, None);
    for (k, v) in attributes {
        match k.as_str() {
            "braintrust.input" | "braintrust.input_json" => {
                row.insert("input".into(), json_attr(v));
            }
            "braintrust.output" | "braintrust.output_json" => {
                row.insert("output".into(), json_attr(v));
            }
            "braintrust.expected" => {
                row.insert("expected".into(), json_attr(v));
            }
            "braintrust.metadata" => {
                if let Value::Object(m) = json_attr(v) {
                    metadata.extend(m);
                }
            }
            "braintrust.span_attributes" => {
                if let Value::Object(m) = json_attr(v) {
                    span_attributes.extend(m);
                }
            }
            // Token counts and other metrics; the span's own times win.
            "braintrust.metrics" => {
                if let Value::Object(m) = json_attr(v) {
                    for (k, v) in m {
                        if k != "start" && k != "end" {
                            metrics.insert(k, v);
                        }
                    }
                }
            }
            "braintrust.scores" => {
                row.insert("scores".into(), json_attr(v));
            }
            "gen_ai.request.model" => {
                genai = true;
                metadata.insert("model".into(), v);
            }
            "gen_ai.system" | "gen_ai.provider.name" => {
                genai = true;
                metadata.insert("provider".into(), v);
            }
            "gen_ai.usage.input_tokens" | "gen_ai.usage.prompt_tokens" => {
                genai = true;
                prompt = v.as_f64();
            }
            "gen_ai.usage.output_tokens" | "gen_ai.usage.completion_tokens" => {
                genai = true;
                completion = v.as_f64();
            }
            _ => {
                genai |= k.starts_with("gen_ai.");
                metadata.insert(k, v);
            }
        }
    }
    if genai && !span_attributes.contains_key("type") {
        span_attributes.insert("type".into(), json!("llm"));
    }
    if let Some(p) = prompt {
        metrics.insert("prompt_tokens".into(), json!(p));
    }
    if let Some(c) = completion {
        metrics.insert("completion_tokens".into(), json!(c));
    }
    if let (Some(p), Some(c)) = (prompt, completion) {
        metrics.insert("tokens".into(), json!(p + c));
    }
    // OTel status code 2 = ERROR; an `exception` event carries the message.
    if status_code == 2 {
        let exception = events
            .iter()
            .find(|(n, _)| n == "exception")
            .and_then(|(_, a)| a.get("exception.message"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let error = if !status_message.is_empty() {
            status_message
        } else {
            exception.unwrap_or_else(|| "error".to_string())
        };
        row.insert("error".into(), json!(error));
    }
    if !metadata.is_empty() {
        row.insert("metadata".into(), Value::Object(metadata));
    }
    row.insert("id".into(), json!(span_id));
    row.insert("span_id".into(), json!(span_id));
    row.insert("root_span_id".into(), json!(trace_id));
    row.insert(
        "span_parents".into(),
        if parent_span_id.is_empty() {
            Value::Null
        } else {
            json!([parent_span_id])
        },
    );
    row.insert(
        "created".into(),
        json!(crate::util::format_unix_millis(
            (start_nanos / 1_000_000) as i64
        )),
    );
    row.insert("span_attributes".into(), Value::Object(span_attributes));
    row.insert("metrics".into(), Value::Object(metrics));
    row.insert("_is_merge".into(), json!(false));
}

// ------------------------------------------------------------ protobuf

/// A protobuf reader for the OTLP trace messages (wire types 0, 1, 2, 5).
struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 string".to_string())
}

/// `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }`
fn decode_protobuf(buf: &[u8]) -> Result<Vec<OtelSpan>, String> {
    let mut out = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((tag, f)) = r.next()? {
        if let (1, Field::Bytes(b)) = (tag, f) {
            resource_spans(b, &mut out)?;
        }
    }
    Ok(out)
}

/// `ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }`
fn resource_spans(buf: &[u8], out: &mut Vec<OtelSpan>) -> Result<(), String> {
    let mut resource_attrs = Map::new();
    let mut scopes = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(b)) => {
                // Resource { repeated KeyValue attributes = 1; }
                let mut rr = Reader::new(b);
                while let Some((t, f)) = rr.next()? {
                    if let (1, Field::Bytes(kv)) = (t, f) {
                        let (k, v) = key_value(kv)?;
                        resource_attrs.insert(k, v);
                    }
                }
            }
            (2, Field::Bytes(b)) => scopes.push(b),
            _ => {}
        }
    }
    for scope in scopes {
        // ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
        let mut r = Reader::new(scope);
        while let Some((tag, f)) = r.next()? {
            if let (2, Field::Bytes(b)) = (tag, f) {
                let mut span = span(b)?;
                if let Some(p) = resource_attrs.get("braintrust.parent") {
                    span.attributes
                        .entry("braintrust.parent")
                        .or_insert_with(|| p.clone());
                }
                out.push(span);
            }
        }
    }
    Ok(())
}

/// `Span`: trace_id 1, span_id 2, parent_span_id 4, name 5, start 7, end 8,
/// attributes 9, events 11, status 15.
fn span(buf: &[u8]) -> Result<OtelSpan, String> {
    let mut s = OtelSpan::default();
    let mut r = Reader::new(buf);
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(b)) => s.trace_id = hex::encode(b),
            (2, Field::Bytes(b)) => s.span_id = hex::encode(b),
            (4, Field::Bytes(b)) => s.parent_span_id = hex::encode(b),
            (5, Field::Bytes(b)) => s.name = text(b)?,
            (7, Field::Fixed64(v)) => s.start_nanos = v,
            (8, Field::Fixed64(v)) => s.end_nanos = v,
            (9, Field::Bytes(b)) => {
                let (k, v) = key_value(b)?;
                s.attributes.insert(k, v);
            }
            (11, Field::Bytes(b)) => {
                // Event { time 1; string name = 2; repeated KeyValue attributes = 3; }
                let (mut name, mut attrs) = (String::new(), Map::new());
                let mut er = Reader::new(b);
                while let Some((t, f)) = er.next()? {
                    match (t, f) {
                        (2, Field::Bytes(n)) => name = text(n)?,
                        (3, Field::Bytes(kv)) => {
                            let (k, v) = key_value(kv)?;
                            attrs.insert(k, v);
                        }
                        _ => {}
                    }
                }
                s.events.push((name, attrs));
            }
            (15, Field::Bytes(b)) => {
                // Status { string message = 2; StatusCode code = 3; }
                let mut sr = Reader::new(b);
                while let Some((t, f)) = sr.next()? {
                    match (t, f) {
                        (2, Field::Bytes(m)) => s.status_message = text(m)?,
                        (3, Field::Varint(c)) => s.status_code = c as i64,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if s.trace_id.len() != 32 || s.span_id.len() != 16 {
        return Err(format!(
            "span {:?}: trace_id must be 16 bytes and span_id 8",
            s.name
        ));
    }
    Ok(s)
}

/// `KeyValue { string key = 1; AnyValue value = 2; }`
fn key_value(buf: &[u8]) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), Value::Null);
    let mut r = Reader::new(buf);
    while let Some((tag, f)) = r.next()? {
        match (tag, f) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) => value = any_value(b)?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// `AnyValue`: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7.
fn any_value(buf: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(buf);
    let mut v = Value::Null;
    while let Some((tag, f)) = r.next()? {
        v = match (tag, f) {
            (1, Field::Bytes(b)) => Value::String(text(b)?),
            (2, Field::Varint(b)) => Value::Bool(b != 0),
            (3, Field::Varint(i)) => json!(i as i64),
            (4, Field::Fixed64(d)) => json!(f64::from_bits(d)),
            (5, Field::Bytes(b)) => {
                // ArrayValue { repeated AnyValue values = 1; }
                let mut items = Vec::new();
                let mut ar = Reader::new(b);
                while let Some((t, f)) = ar.next()? {
                    if let (1, Field::Bytes(x)) = (t, f) {
                        items.push(any_value(x)?);
                    }
                }
                Value::Array(items)
            }
            (6, Field::Bytes(b)) => {
                // KeyValueList { repeated KeyValue values = 1; }
                let mut m = Map::new();
                let mut kr = Reader::new(b);
                while let Some((t, f)) = kr.next()? {
                    if let (1, Field::Bytes(kv)) = (t, f) {
                        let (k, x) = key_value(kv)?;
                        m.insert(k, x);
                    }
                }
                Value::Object(m)
            }
            (7, Field::Bytes(b)) => Value::String(hex::encode(b)),
            _ => v,
        };
    }
    Ok(v)
}

// ---------------------------------------------------------------- JSON

/// OTLP/JSON: the same messages in lowerCamelCase, ids as hex strings,
/// 64-bit integers as strings or numbers.
fn decode_json(body: &[u8]) -> Result<Vec<OtelSpan>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
        let mut resource_attrs = Map::new();
        json_attrs(&rs["resource"]["attributes"], &mut resource_attrs);
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for sp in ss["spans"].as_array().into_iter().flatten() {
                let id = |k: &str| sp[k].as_str().unwrap_or_default().to_ascii_lowercase();
                let mut s = OtelSpan {
                    trace_id: id("traceId"),
                    span_id: id("spanId"),
                    parent_span_id: id("parentSpanId"),
                    name: sp["name"].as_str().unwrap_or_default().to_string(),
                    start_nanos: json_u64(&sp["startTimeUnixNano"]),
                    end_nanos: json_u64(&sp["endTimeUnixNano"]),
                    status_code: json_u64(&sp["status"]["code"]) as i64,
                    status_message: sp["status"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ..OtelSpan::default()
                };
                json_attrs(&sp["attributes"], &mut s.attributes);
                for e in sp["events"].as_array().into_iter().flatten() {
                    let mut attrs = Map::new();
                    json_attrs(&e["attributes"], &mut attrs);
                    s.events
                        .push((e["name"].as_str().unwrap_or_default().to_string(), attrs));
                }
                if let Some(p) = resource_attrs.get("braintrust.parent") {
                    s.attributes
                        .entry("braintrust.parent")
                        .or_insert_with(|| p.clone());
                }
                if s.trace_id.len() != 32 || s.span_id.len() != 16 {
                    return Err(format!(
                        "span {:?}: traceId must be 32 hex chars and spanId 16",
                        s.name
                    ));
                }
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn json_u64(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

fn json_attrs(list: &Value, into: &mut Map<String, Value>) {
    for kv in list.as_array().into_iter().flatten() {
        if let Some(k) = kv["key"].as_str() {
            into.insert(k.to_string(), json_any(&kv["value"]));
        }
    }
}

fn json_any(v: &Value) -> Value {
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(b) = v.get("boolValue") {
        return b.clone();
    }
    if let Some(i) = v.get("intValue") {
        return match i {
            Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(i.clone()),
            other => other.clone(),
        };
    }
    if let Some(d) = v.get("doubleValue") {
        return d.clone();
    }
    if let Some(a) = v.get("arrayValue") {
        return Value::Array(
            a["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(json_any)
                .collect(),
        );
    }
    if let Some(kv) = v.get("kvlistValue") {
        let mut m = Map::new();
        json_attrs(&kv["values"], &mut m);
        return Value::Object(m);
    }
    if let Some(b) = v.get("bytesValue") {
        return b.clone();
    }
    Value::Null
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(tag: u64, wire: u64, out: &mut Vec<u8>) {
        varint((tag << 3) | wire, out);
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(tag: u64, b: &[u8], out: &mut Vec<u8>) {
        field(tag, 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn decodes_a_hand_encoded_span_and_rejects_truncation() {
        let mut any = Vec::new();
        field(3, 0, &mut any);
        varint(42, &mut any);
        let mut kv = Vec::new();
        bytes(1, b"n", &mut kv);
        bytes(2, &any, &mut kv);
        let mut span = Vec::new();
        bytes(1, &[0xab; 16], &mut span);
        bytes(2, &[0xcd; 8], &mut span);
        bytes(5, b"op", &mut span);
        field(7, 1, &mut span);
        span.extend_from_slice(&1_500_000_000u64.to_le_bytes());
        bytes(9, &kv, &mut span);
        let mut scope = Vec::new();
        bytes(2, &span, &mut scope);
        let mut rs = Vec::new();
        bytes(2, &scope, &mut rs);
        let mut req = Vec::new();
        bytes(1, &rs, &mut req);
        let spans = decode_protobuf(&req).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].trace_id, "ab".repeat(16));
        assert_eq!(spans[0].span_id, "cd".repeat(8));
        assert_eq!(spans[0].name, "op");
        assert_eq!(spans[0].start_nanos, 1_500_000_000);
        assert_eq!(spans[0].attributes["n"], 42);
        assert!(decode_protobuf(&req[..req.len() - 3]).is_err());
    }
}
