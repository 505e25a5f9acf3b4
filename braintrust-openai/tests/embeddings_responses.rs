//! Embeddings (spec §9.2) and the Responses API (spec §9.3), plain and
//! streaming, with tool child spans.

mod common;

use braintrust_core::WithSpan;
use braintrust_openai::mock::Failure;
use braintrust_openai::{EmbeddingRequest, OpenAiError, ResponseRequest};
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn embedding_row_logs_the_length_not_the_vector() {
    let env = setup().await;
    let root = env.root("request");
    let resp = env
        .client
        .embeddings()
        .create(EmbeddingRequest::new(
            "text-embedding-3-small",
            "hello world",
        ))
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(resp.data[0].embedding.to_vec(), vec![0.1, 0.2, 0.3, 0.4]);
    // base64 vectors are measured in floats, not characters.
    let resp = env
        .client
        .embeddings()
        .create(
            EmbeddingRequest::new("text-embedding-3-small", vec!["a", "b"])
                .dimensions(8)
                .encoding_format("base64"),
        )
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(resp.data.len(), 2);
    assert_eq!(resp.data[1].embedding.len(), 8);
    root.end();

    let rows = env.trace(&root).await;
    let embeds: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "Embedding")
        .collect();
    assert_eq!(embeds.len(), 2);
    let plain = embeds.iter().find(|r| r["input"] == "hello world").unwrap();
    assert_llm_row(plain, "Embedding", Some(&root));
    assert_eq!(
        plain["metadata"],
        json!({"model": "text-embedding-3-small", "provider": "openai"})
    );
    assert_eq!(plain["output"], json!({"embedding_length": 4}));
    assert_metrics(plain, &[("prompt_tokens", 3.0), ("tokens", 3.0)], &[]);
    let b64 = embeds
        .iter()
        .find(|r| r["input"] == json!(["a", "b"]))
        .unwrap();
    assert_eq!(b64["output"], json!({"embedding_length": 8}));
    assert_eq!(
        b64["metadata"],
        json!({"model": "text-embedding-3-small", "dimensions": 8,
               "encoding_format": "base64", "provider": "openai"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn response_row_plain() {
    let env = setup().await;
    let root = env.root("request");
    let resp = env
        .client
        .responses()
        .create(ResponseRequest::new("gpt-4o-mini", "Say hi").instructions("be nice"))
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(resp.output_text(), "Hi!");
    root.end();

    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 2, "no tool items, no tool spans");
    let row = Env::named(&rows, "openai.responses.create");
    assert_llm_row(row, "openai.responses.create", Some(&root));
    assert_eq!(row["input"], "Say hi");
    assert_eq!(
        row["metadata"],
        json!({"model": "gpt-4o-mini", "instructions": "be nice", "provider": "openai",
               "id": "resp_1", "status": "completed", "created_at": 1700000000,
               "object": "response"})
    );
    assert_eq!(
        row["output"],
        json!([{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Hi!", "annotations": []}]}])
    );
    assert_metrics(
        row,
        &[
            ("prompt_tokens", 5.0),
            ("completion_tokens", 2.0),
            ("tokens", 7.0),
            ("prompt_cached_tokens", 0.0),
            ("completion_reasoning_tokens", 0.0),
        ],
        &["time_to_first_token"],
    );
}

fn function_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "parameters": {"type": "object"}})
}

fn assert_tool_child(rows: &[Value], llm: &Value) {
    let tool = Env::named(rows, "get_weather");
    assert_eq!(tool["span_attributes"]["type"], "tool");
    assert_eq!(tool["span_parents"], json!([llm["span_id"]]));
    assert_eq!(tool["input"], json!({"location": "Paris"}));
    assert_eq!(
        tool["metadata"],
        json!({"tool_type": "function_call", "tool_id": "fc_1", "call_id": "call_1", "status": "completed"})
    );
    assert!(tool.get("output").is_none_or(Value::is_null));
}

#[tokio::test(flavor = "multi_thread")]
async fn response_with_function_call_gets_a_tool_child_span() {
    let env = setup().await;
    let root = env.root("request");
    let resp = env
        .client
        .responses()
        .create(ResponseRequest::new("gpt-4o-mini", "Weather?").tools(vec![function_tool()]))
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(resp.function_calls().count(), 1);
    root.end();
    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 3);
    let llm = Env::named(&rows, "openai.responses.create");
    assert_eq!(llm["output"][1]["type"], "function_call");
    assert_tool_child(&rows, llm);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_streaming_row_and_tool_span() {
    let env = setup().await;
    let root = env.root("request");
    let mut stream = env
        .client
        .responses()
        .create_stream(
            ResponseRequest::new("gpt-4o-mini", "Weather?")
                .instructions("be nice")
                .tools(vec![function_tool()]),
        )
        .in_span(root.clone())
        .await
        .unwrap();
    let mut text = String::new();
    let mut kinds = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap();
        if ev.kind == "response.output_text.delta" {
            text.push_str(ev.delta.as_ref().and_then(Value::as_str).unwrap());
        }
        kinds.push(ev.kind);
    }
    assert_eq!(text, "Hi!");
    assert_eq!(kinds.first().map(String::as_str), Some("response.created"));
    assert_eq!(kinds.last().map(String::as_str), Some("response.completed"));
    drop(stream);
    root.end();

    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 3);
    let row = Env::named(&rows, "openai.responses.create");
    assert_llm_row(row, "openai.responses.create", Some(&root));
    assert_eq!(row["input"], "Weather?");
    assert_eq!(row["metadata"]["stream"], true);
    assert_eq!(row["metadata"]["instructions"], "be nice");
    assert_eq!(row["metadata"]["provider"], "openai");
    assert_eq!(row["metadata"]["id"], "resp_1");
    assert_eq!(row["metadata"]["status"], "completed");
    assert_eq!(row["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(row["output"][1]["arguments"], "{\"location\":\"Paris\"}");
    assert_metrics(
        row,
        &[
            ("prompt_tokens", 5.0),
            ("completion_tokens", 2.0),
            ("tokens", 7.0),
            ("prompt_cached_tokens", 0.0),
            ("completion_reasoning_tokens", 0.0),
        ],
        &["time_to_first_token"],
    );
    assert_tool_child(&rows, row);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_stream_dropped_early_rebuilds_output() {
    let env = setup().await;
    let root = env.root("request");
    let mut stream = env
        .client
        .responses()
        .create_stream(ResponseRequest::new("gpt-4o-mini", "Say hi"))
        .in_span(root.clone())
        .await
        .unwrap();
    // created, in_progress, item added, part added, "Hi" delta.
    for _ in 0..5 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "openai.responses.create");
    assert_eq!(row["error"], "cancelled");
    assert_eq!(row["metadata"]["status"], "in_progress");
    assert_eq!(row["output"][0]["id"], "msg_1");
    assert_eq!(
        row["output"][0]["content"],
        json!([{"type": "output_text", "text": "Hi"}])
    );
    assert_metrics(row, &[], &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_stream_error_event() {
    let env = setup().await;
    env.mock.push_failure(Failure::ErrorEvent { after: 4 });
    let root = env.root("request");
    let stream = env
        .client
        .responses()
        .create_stream(ResponseRequest::new("gpt-4o-mini", "Say hi"))
        .in_span(root.clone())
        .await
        .unwrap();
    let err = stream.final_response().await.unwrap_err();
    assert!(matches!(err, OpenAiError::Stream { .. }), "{err:?}");
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "openai.responses.create");
    assert!(row["error"]
        .as_str()
        .unwrap()
        .contains("overloaded mid-stream"));
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_500() {
    let env = setup_with(|b| b.max_retries(0)).await;
    env.mock.push_failure(Failure::ServerError);
    let root = env.root("request");
    let err = env
        .client
        .embeddings()
        .create(EmbeddingRequest::new("text-embedding-3-small", "x"))
        .in_span(root.clone())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    root.end();
    let rows = env.trace(&root).await;
    assert!(Env::named(&rows, "Embedding")["error"]
        .as_str()
        .unwrap()
        .starts_with("HTTP 500"));
}
