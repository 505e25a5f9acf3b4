//! Shared test setup: a local Braintrust server, a logger that is *not* the
//! process's current one (tests in one binary run in parallel), a mock OpenAI
//! server, and helpers to read and compare stored rows.
#![allow(dead_code)]

use std::time::Duration;

use braintrust_core::{init_logger, Config, Logger, LoggerOptions, Span, SpanArgs, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::OpenAiClient;
use serde_json::{Map, Value};

pub struct Env {
    pub server: DevServer,
    pub logger: Logger,
    pub mock: MockOpenAi,
    pub client: OpenAiClient,
}

pub async fn setup() -> Env {
    setup_with(|b| b).await
}

pub async fn setup_with(
    f: impl FnOnce(braintrust_openai::OpenAiClientBuilder) -> braintrust_openai::OpenAiClientBuilder,
) -> Env {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    let state = State::new(Config::default().api_key("test-key").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project("openai-tests").state(state)).unwrap();
    let mock = MockOpenAi::start().await.unwrap();
    let client = f(OpenAiClient::builder()
        .base_url(mock.url())
        .api_key("sk-test-secret")
        .retry_base_delay(Duration::from_millis(10)))
    .build()
    .unwrap();
    Env {
        server,
        logger,
        mock,
        client,
    }
}

impl Env {
    /// A root span of this test's logger, to run calls in.
    pub fn root(&self, name: &'static str) -> Span {
        self.logger.start_span(SpanArgs::new().name(name))
    }

    /// Flushes and returns the stored rows of `root`'s trace.
    pub async fn trace(&self, root: &Span) -> Vec<Value> {
        self.logger.flush_async().await.unwrap();
        let trace = root.root_span_id();
        self.server
            .rows()
            .into_iter()
            .filter(|r| r["root_span_id"] == trace.as_str())
            .collect()
    }

    /// The one row named `name` in `rows`.
    pub fn named<'a>(rows: &'a [Value], name: &str) -> &'a Value {
        let found: Vec<&Value> = rows
            .iter()
            .filter(|r| r["span_attributes"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "expected one {name:?} row in {rows:#?}");
        found[0]
    }
}

/// The capture of the official SDK (spec vectors).
pub fn capture() -> Value {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/python_wrap_openai_capture.json"
    ));
    serde_json::from_str(text).unwrap()
}

/// The captured `/logs3` rows, in order: chat, chat stream, embedding, response.
pub fn captured_rows() -> Vec<Value> {
    capture()["scenario"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/logs3")
        .flat_map(|r| r["body"]["rows"].as_array().unwrap().clone())
        .collect()
}

/// Row fields the server adds or that only matter to storage.
const SERVER_FIELDS: [&str; 4] = ["_xact_id", "org_id", "_is_merge", "_object_delete"];

/// The sorted keys of an object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// The row's top-level keys without server-side ones.
pub fn row_keys(row: &Value) -> Vec<String> {
    keys(row)
        .into_iter()
        .filter(|k| !SERVER_FIELDS.contains(&k.as_str()))
        .collect()
}

/// A type-and-keys description of a JSON value: objects keep their keys,
/// arrays their element shapes, scalars become their type name.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Null => Value::String("null".into()),
        Value::Bool(_) => Value::String("bool".into()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(_) => Value::String("string".into()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// Asserts the row has the metrics `start`, `end`, the token metrics of
/// `expected` with those exact values, and nothing else but `extra` names
/// (e.g. `time_to_first_token`).
pub fn assert_metrics(row: &Value, expected: &[(&str, f64)], extra: &[&str]) {
    let m = row["metrics"].as_object().expect("metrics");
    let mut want: Vec<String> = expected.iter().map(|(k, _)| k.to_string()).collect();
    want.extend(["start", "end"].map(String::from));
    want.extend(extra.iter().map(|s| s.to_string()));
    want.sort();
    assert_eq!(keys(&row["metrics"]), want, "metrics of {row:#}");
    for (k, v) in expected {
        assert_eq!(m[*k].as_f64(), Some(*v), "metrics.{k}");
    }
    let start = m["start"].as_f64().unwrap();
    let end = m["end"].as_f64().unwrap();
    assert!(end >= start, "end {end} before start {start}");
    if let Some(t) = m.get("time_to_first_token") {
        let t = t.as_f64().unwrap();
        assert!(
            t >= 0.0 && t <= end - start + 0.01,
            "ttft {t} vs duration {}",
            end - start
        );
    }
}

/// The common checks of an llm span row: name, type, parent, origin.
pub fn assert_llm_row(row: &Value, name: &str, parent: Option<&Span>) {
    assert_eq!(row["span_attributes"]["name"], name);
    assert_eq!(row["span_attributes"]["type"], "llm");
    match parent {
        Some(p) => assert_eq!(row["span_parents"], serde_json::json!([p.span_id()])),
        None => assert!(row["span_parents"].is_null(), "{row:#}"),
    }
    assert_eq!(
        row["context"]["span_origin"]["instrumentation"]["name"],
        braintrust_openai::INSTRUMENTATION
    );
    // The caller is the test file, not this crate's internals.
    let file = row["context"]["caller_filename"].as_str().unwrap_or("");
    assert!(file.contains("tests/"), "caller_filename {file:?}");
}

/// Chat metrics of the mock's non-streaming usage.
pub const CHAT_USAGE_METRICS: [(&str, f64); 9] = [
    ("prompt_tokens", 12.0),
    ("completion_tokens", 2.0),
    ("tokens", 14.0),
    ("prompt_cached_tokens", 0.0),
    ("prompt_audio_tokens", 0.0),
    ("completion_reasoning_tokens", 0.0),
    ("completion_audio_tokens", 0.0),
    ("completion_accepted_prediction_tokens", 0.0),
    ("completion_rejected_prediction_tokens", 0.0),
];

/// Chat metrics of the mock's streaming usage chunk.
pub const STREAM_USAGE_METRICS: [(&str, f64); 4] = [
    ("prompt_tokens", 12.0),
    ("completion_tokens", 2.0),
    ("tokens", 14.0),
    ("prompt_cached_tokens", 0.0),
];
