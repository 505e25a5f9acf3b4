//! The official SDK's capture scenario (spec vectors,
//! `python_wrap_openai_capture.json`) replayed with this crate against the
//! same canned responses: every row must have the captured row's keys and
//! shapes, and the same input, metadata, output and token metrics.
//!
//! Own test binary: it makes the logger current, so the spans are roots as
//! in the capture.

mod common;

use braintrust_core::{init_logger, set_current_logger, Config, LoggerOptions, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{
    ChatCompletionRequest, ChatMessage, EmbeddingRequest, OpenAiClient, ResponseRequest,
};
use common::*;
use serde_json::{json, Value};

/// Numbers compared as floats (`0` and `0.0`, `1700000000` and `1700000000.0`).
fn norm(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

fn compare(ours: &Value, theirs: &Value) {
    let label = theirs["span_attributes"]["name"].as_str().unwrap();
    assert_eq!(row_keys(ours), row_keys(theirs), "{label}: row keys");
    assert_eq!(
        keys(&ours["span_attributes"]),
        keys(&theirs["span_attributes"]),
        "{label}: span_attributes keys"
    );
    assert_eq!(
        ours["span_attributes"]["name"],
        theirs["span_attributes"]["name"]
    );
    assert_eq!(
        ours["span_attributes"]["type"],
        theirs["span_attributes"]["type"]
    );
    assert_eq!(
        ours["span_parents"],
        Value::Null,
        "{label}: a root, as in the capture"
    );
    assert_eq!(
        norm(&ours["input"]),
        norm(&theirs["input"]),
        "{label}: input"
    );
    assert_eq!(
        norm(&ours["metadata"]),
        norm(&theirs["metadata"]),
        "{label}: metadata"
    );
    assert_eq!(
        norm(&ours["output"]),
        norm(&theirs["output"]),
        "{label}: output"
    );
    assert_eq!(
        shape(&ours["output"]),
        shape(&theirs["output"]),
        "{label}: output shape"
    );
    assert_eq!(
        keys(&ours["metrics"]),
        keys(&theirs["metrics"]),
        "{label}: metric names"
    );
    for (k, v) in theirs["metrics"].as_object().unwrap() {
        if !matches!(k.as_str(), "start" | "end" | "time_to_first_token") {
            assert_eq!(
                ours["metrics"][k].as_f64(),
                v.as_f64(),
                "{label}: metrics.{k}"
            );
        }
    }
    // Context: the same kinds of fields, this SDK's origin.
    let ctx = &ours["context"];
    assert!(ctx["caller_filename"]
        .as_str()
        .unwrap()
        .ends_with("capture_parity.rs"));
    assert!(ctx["caller_lineno"].is_number());
    assert_eq!(keys(&ctx["span_origin"]["instrumentation"]), ["name"]);
    assert!(
        keys(ctx).iter().all(|k| theirs["context"].get(k).is_some()),
        "{label}: context keys"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_match_the_official_sdk_capture() {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    let state = State::new(Config::default().api_key("test-key").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project("spec-capture").state(state)).unwrap();
    set_current_logger(Some(logger.clone()));
    let mock = MockOpenAi::start().await.unwrap();
    let client = braintrust_openai::wrap(
        OpenAiClient::builder()
            .base_url(mock.url())
            .api_key("k")
            .build()
            .unwrap(),
    );
    let messages = vec![
        ChatMessage::system("be terse"),
        ChatMessage::user("Capital of France?"),
    ];

    client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages.clone()).temperature(0.0))
        .await
        .unwrap();
    client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages).include_usage(true))
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    client
        .embeddings()
        .create(EmbeddingRequest::new(
            "text-embedding-3-small",
            "hello world",
        ))
        .await
        .unwrap();
    client
        .responses()
        .create(ResponseRequest::new("gpt-4o-mini", "Say hi").instructions("be nice"))
        .await
        .unwrap();
    logger.flush_async().await.unwrap();
    set_current_logger(None);

    let ours = server.rows();
    let theirs = captured_rows();
    assert_eq!(ours.len(), theirs.len(), "{ours:#?}");
    for (o, t) in ours.iter().zip(&theirs) {
        compare(o, t);
    }
    // The canned responses the mock serves are the capture's.
    let fake = &capture()["fake_openai_responses"];
    let served = mock.requests();
    assert_eq!(served.len(), 4);
    assert_eq!(
        fake["chat_completion"]["choices"][0]["message"]["content"],
        "Paris."
    );
}
