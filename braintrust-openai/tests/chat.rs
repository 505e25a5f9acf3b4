//! Chat completions against the mock server, traced into a local Braintrust
//! server: the exact rows of spec §9.1.

mod common;

use std::time::Duration;

use braintrust_core::{SpanArgs, WithSpan};
use braintrust_openai::mock::Failure;
use braintrust_openai::{ChatCompletionRequest, ChatMessage, OpenAiError, Tool};
use common::*;
use serde_json::{json, Value};

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("be terse"),
        ChatMessage::user("Capital of France?"),
    ]
}

fn messages_json() -> Value {
    json!([
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "Capital of France?"}
    ])
}

fn weather_tool() -> Tool {
    Tool::function(
        "get_weather",
        "Current weather",
        json!({"type": "object", "properties": {"location": {"type": "string"}}}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_chat_row() {
    let env = setup().await;
    let root = env.root("request");
    let req = ChatCompletionRequest::new("gpt-4o-mini", messages()).temperature(0.0);
    let reply = env
        .client
        .chat()
        .create(req)
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(reply.text(), Some("Paris."));
    root.end();

    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 2);
    let row = Env::named(&rows, "Chat Completion");
    assert_llm_row(row, "Chat Completion", Some(&root));
    assert_eq!(row["input"], messages_json());
    assert_eq!(
        row["metadata"],
        json!({"model": "gpt-4o-mini", "temperature": 0.0, "provider": "openai"})
    );
    assert_eq!(
        row["output"],
        json!([{
            "index": 0,
            "message": {
                "role": "assistant", "content": "Paris.", "refusal": null,
                "tool_calls": null, "function_call": null, "audio": null, "annotations": null
            },
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    assert_metrics(row, &CHAT_USAGE_METRICS, &["time_to_first_token"]);
    assert!(row.get("error").is_none_or(Value::is_null));
    // What was sent is what the user asked for.
    let sent = &env.mock.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.body,
        json!({"model": "gpt-4o-mini", "messages": messages_json(), "temperature": 0.0})
    );
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_tool_call_row() {
    let env = setup().await;
    let root = env.root("request");
    let req = ChatCompletionRequest::new("gpt-4o-mini", messages()).tools(vec![weather_tool()]);
    let reply = env
        .client
        .chat()
        .create(req)
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(reply.tool_calls()[0].function.name, "get_weather");
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_eq!(
        row["metadata"]["tools"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(row["output"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        row["output"][0]["message"]["tool_calls"],
        json!([{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_chat_with_usage_chunk() {
    let env = setup().await;
    let root = env.root("request");
    let req = ChatCompletionRequest::new("gpt-4o-mini", messages()).include_usage(true);
    let mut stream = env
        .client
        .chat()
        .create_stream(req)
        .in_span(root.clone())
        .await
        .unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    // A `futures` Stream (the inherent `next` is the same thing).
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.unwrap();
        chunks += 1;
        if let Some(c) = chunk
            .choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
        {
            text.push_str(c);
        }
    }
    assert_eq!(text, "Paris.");
    assert_eq!(chunks, 5);
    drop(stream);
    root.end();

    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_llm_row(row, "Chat Completion", Some(&root));
    assert_eq!(row["input"], messages_json());
    assert_eq!(
        row["metadata"],
        json!({"model": "gpt-4o-mini", "stream": true,
               "stream_options": {"include_usage": true}, "provider": "openai"})
    );
    assert_eq!(
        row["output"],
        json!([{"index": 0,
                "message": {"role": "assistant", "content": "Paris.", "tool_calls": null},
                "logprobs": null, "finish_reason": "stop"}])
    );
    assert_metrics(row, &STREAM_USAGE_METRICS, &["time_to_first_token"]);
    assert!(row.get("error").is_none_or(Value::is_null));
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_never_adds_stream_options_unless_opted_in() {
    // Default: the request is sent as asked, and the span has no token metrics.
    let env = setup().await;
    let root = env.root("request");
    let stream = env
        .client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    let done = stream.collect_completion().await.unwrap();
    assert_eq!(done.text(), Some("Paris."));
    assert!(done.usage.is_none());
    root.end();
    assert_eq!(
        env.mock.requests()[0].body,
        json!({"model": "gpt-4o-mini", "messages": messages_json(), "stream": true})
    );
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_metrics(row, &[], &["time_to_first_token"]);
    assert_eq!(
        row["metadata"],
        json!({"model": "gpt-4o-mini", "stream": true, "provider": "openai"})
    );

    // Opted in: stream_options is added when absent...
    let env = setup_with(|b| b.include_usage_in_streams(true)).await;
    let root = env.root("request");
    let stream = env
        .client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    let done = stream.collect_completion().await.unwrap();
    assert_eq!(done.usage.unwrap().total_tokens, Some(14));
    // ...and left alone when the user set it.
    let req = ChatCompletionRequest::new("gpt-4o-mini", messages()).include_usage(false);
    let stream = env
        .client
        .chat()
        .create_stream(req)
        .in_span(root.clone())
        .await
        .unwrap();
    stream.collect_completion().await.unwrap();
    root.end();
    let sent = env.mock.requests();
    assert_eq!(
        sent[0].body["stream_options"],
        json!({"include_usage": true})
    );
    assert_eq!(
        sent[1].body["stream_options"],
        json!({"include_usage": false})
    );
    let rows = env.trace(&root).await;
    let llm: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "Chat Completion")
        .collect();
    assert_eq!(llm.len(), 2);
    let with_usage = llm
        .iter()
        .find(|r| r["metadata"]["stream_options"]["include_usage"] == true)
        .unwrap();
    assert_metrics(with_usage, &STREAM_USAGE_METRICS, &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_tool_call_deltas_across_chunks() {
    let env = setup().await;
    let root = env.root("request");
    let req = ChatCompletionRequest::new("gpt-4o-mini", messages())
        .tools(vec![weather_tool()])
        .include_usage(true);
    let stream = env
        .client
        .chat()
        .create_stream(req)
        .in_span(root.clone())
        .await
        .unwrap();
    let done = stream.collect_completion().await.unwrap();
    let calls = done.tool_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].function.arguments, "{\"location\":\"Paris\"}");
    root.end();

    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_eq!(
        row["output"],
        json!([{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}
                ]
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }])
    );
    assert_metrics(row, &STREAM_USAGE_METRICS, &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_dropped_after_two_chunks_is_cancelled_with_what_arrived() {
    let env = setup().await;
    let root = env.root("request");
    let req = ChatCompletionRequest::new("gpt-4o-mini", messages()).include_usage(true);
    let mut stream = env
        .client
        .chat()
        .create_stream(req)
        .in_span(root.clone())
        .await
        .unwrap();
    for _ in 0..2 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    root.end();

    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_llm_row(row, "Chat Completion", Some(&root));
    assert_eq!(row["error"], "cancelled");
    assert_eq!(row["metadata"]["provider"], "openai");
    assert_eq!(
        row["output"],
        json!([{"index": 0,
                "message": {"role": "assistant", "content": "Par", "tool_calls": null},
                "logprobs": null, "finish_reason": null}])
    );
    // The usage chunk never arrived: only timing.
    assert_metrics(row, &[], &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_429_is_returned_and_logged() {
    let env = setup_with(|b| b.max_retries(0)).await;
    env.mock.push_failure(Failure::RateLimited {
        retry_after_secs: 7,
    });
    let root = env.root("request");
    let err = env
        .client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap_err();
    match &err {
        OpenAiError::Http {
            status,
            error,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 429);
            assert_eq!(
                error.as_ref().unwrap().code,
                Some(json!("rate_limit_exceeded"))
            );
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.to_string().contains("sk-test-secret"));
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    let logged = row["error"].as_str().unwrap();
    assert!(
        logged.starts_with("HTTP 429: Rate limit reached for requests"),
        "{logged}"
    );
    assert!(row.get("output").is_none_or(Value::is_null));
    assert_eq!(row["input"], messages_json());
    assert_metrics(row, &[], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_capped_by_the_core_policy() {
    // The server asks for 7 s; the policy's cap makes it 20 ms.
    let policy = braintrust_core::RetryPolicy::new()
        .max_attempts(2)
        .retry_after_cap(Duration::from_millis(20));
    let env = setup_with(|b| b.retry_policy(policy)).await;
    env.mock.push_failure(Failure::RateLimited {
        retry_after_secs: 7,
    });
    let started = std::time::Instant::now();
    let reply = env
        .client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .await
        .unwrap();
    assert_eq!(reply.text(), Some("Paris."));
    assert_eq!(env.mock.requests().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stay_inside_one_span() {
    let env = setup_with(|b| b.max_retries(2)).await;
    env.mock.push_failure(Failure::RateLimited {
        retry_after_secs: 0,
    });
    env.mock.push_failure(Failure::ServerError);
    let root = env.root("request");
    let reply = env
        .client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(reply.text(), Some("Paris."));
    assert_eq!(env.mock.requests().len(), 3);
    root.end();
    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 2);
    let row = Env::named(&rows, "Chat Completion");
    assert!(row.get("error").is_none_or(Value::is_null));
    assert_metrics(row, &CHAT_USAGE_METRICS, &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_error_500_is_returned_and_logged() {
    let env = setup_with(|b| b.max_retries(0)).await;
    env.mock.push_failure(Failure::ServerError);
    let root = env.root("request");
    let err = env
        .client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(
        err.api_error().unwrap().kind.as_deref(),
        Some("server_error")
    );
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_eq!(
        row["error"],
        "HTTP 500: The server had an error while processing your request. (type: server_error)"
    );
    assert_eq!(row["metadata"]["stream"], true);
    assert_metrics(row, &[], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_chunk_fails_the_stream_and_the_span() {
    let env = setup().await;
    env.mock.push_failure(Failure::MalformedChunk { after: 2 });
    let root = env.root("request");
    let mut stream = env
        .client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    stream.next().await.unwrap().unwrap();
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, OpenAiError::Decode { .. }), "{err:?}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after an error"
    );
    drop(stream);
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    let logged = row["error"].as_str().unwrap();
    assert!(
        logged.starts_with("could not decode the response"),
        "{logged}"
    );
    assert_eq!(row["output"][0]["message"]["content"], "Par");
    assert_ne!(row["error"], "cancelled");
    assert_metrics(row, &[], &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_body_is_a_decode_error() {
    let env = setup().await;
    env.mock.push_failure(Failure::MalformedJson);
    let root = env.root("request");
    let err = env
        .client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, OpenAiError::Decode { .. }), "{err:?}");
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert!(row["error"].as_str().unwrap().contains("could not decode"));
}

#[tokio::test(flavor = "multi_thread")]
async fn error_event_mid_stream() {
    let env = setup().await;
    env.mock.push_failure(Failure::ErrorEvent { after: 3 });
    let root = env.root("request");
    let stream = env
        .client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    let err = stream.collect_completion().await.unwrap_err();
    match &err {
        OpenAiError::Stream { error: Some(e), .. } => assert_eq!(e.code, Some(json!("overloaded"))),
        other => panic!("unexpected {other:?}"),
    }
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert!(row["error"]
        .as_str()
        .unwrap()
        .contains("overloaded mid-stream"));
    assert_eq!(row["output"][0]["message"]["content"], "Paris.");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_stream_times_out() {
    let env = setup_with(|b| b.stream_idle_timeout(Some(Duration::from_millis(300)))).await;
    env.mock.push_failure(Failure::StallAfter { after: 2 });
    let root = env.root("request");
    let mut stream = env
        .client
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    stream.next().await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, OpenAiError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(stream);
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_eq!(row["error"], "request timed out after 300ms");
    assert_eq!(row["output"][0]["message"]["content"], "Par");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_response_times_out() {
    let env = setup_with(|b| b.timeout(Duration::from_millis(200)).max_retries(0)).await;
    env.mock
        .push_failure(Failure::Delay(Duration::from_secs(3)));
    let root = env.root("request");
    let err = env
        .client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, OpenAiError::Timeout(_)), "{err:?}");
    root.end();
    let rows = env.trace(&root).await;
    assert_eq!(
        Env::named(&rows, "Chat Completion")["error"],
        "request timed out after 200ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_nest_under_an_entered_span_and_concurrent_tasks() {
    let env = setup().await;
    let root = env.root("handler");
    let client = env.client.clone();
    // A manually entered child span, and calls inside it.
    let child = root.start_span(SpanArgs::new().name("step"));
    {
        let _guard = child.enter();
        let fut = client
            .chat()
            .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
            .with_current_span();
        drop(_guard);
        fut.await.unwrap();
    }
    child.end();
    // Concurrent calls from spawned tasks, each wrapped with with_current_span.
    let handles: Vec<_> = {
        let _guard = root.enter();
        (0..4)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(
                    async move {
                        tokio::time::sleep(Duration::from_millis(5 * (4 - i))).await;
                        client
                            .chat()
                            .create(ChatCompletionRequest::new(format!("model-{i}"), messages()))
                            .await
                            .unwrap()
                    }
                    .with_current_span(),
                )
            })
            .collect()
    };
    for h in handles {
        h.await.unwrap();
    }
    root.end();
    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 7, "{rows:#?}");
    let step = Env::named(&rows, "step");
    let llm: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "Chat Completion")
        .collect();
    assert_eq!(llm.len(), 5);
    let under_step: Vec<_> = llm
        .iter()
        .filter(|r| r["span_parents"] == json!([step["span_id"]]))
        .collect();
    assert_eq!(under_step.len(), 1);
    assert_eq!(under_step[0]["metadata"]["model"], "gpt-4o-mini");
    let mut models: Vec<String> = llm
        .iter()
        .filter(|r| r["span_parents"] == json!([root.span_id()]))
        .map(|r| r["metadata"]["model"].as_str().unwrap().to_string())
        .collect();
    models.sort();
    assert_eq!(models, ["model-0", "model-1", "model-2", "model-3"]);
    println!("{}", env.server.render_all_traces());
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_call_future_is_marked_cancelled() {
    let env = setup().await;
    env.mock
        .push_failure(Failure::Delay(Duration::from_secs(5)));
    let root = env.root("request");
    let fut = env
        .client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone());
    assert!(tokio::time::timeout(Duration::from_millis(200), fut)
        .await
        .is_err());
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_eq!(row["error"], "cancelled");
    assert!(row["metrics"]["end"].is_number());
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_off_per_client() {
    let env = setup().await;
    let quiet = env.client.with_tracing(false);
    let root = env.root("request");
    quiet
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    let stream = quiet
        .chat()
        .create_stream(ChatCompletionRequest::new("gpt-4o-mini", messages()))
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(
        stream.collect_completion().await.unwrap().text(),
        Some("Paris.")
    );
    root.end();
    let rows = env.trace(&root).await;
    assert_eq!(rows.len(), 1, "only the root: {rows:#?}");
    assert!(braintrust_openai::wrap(quiet).tracing_enabled());
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_span_helper_for_custom_clients() {
    let env = setup().await;
    let root = env.root("request");
    {
        let _g = root.enter();
        let span = braintrust_openai::llm_span(
            messages_json(),
            json!({"model": "my-model", "provider": "custom"}),
        );
        span.finish(
            json!([{"role": "assistant", "content": "Paris."}]),
            braintrust_openai::TokenCounts::new(12, 2),
        );
    }
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "LLM");
    assert_eq!(row["span_attributes"]["type"], "llm");
    assert_eq!(row["span_parents"], json!([root.span_id()]));
    assert_eq!(row["input"], messages_json());
    assert_eq!(
        row["metadata"],
        json!({"model": "my-model", "provider": "custom"})
    );
    assert_eq!(
        row["output"],
        json!([{"role": "assistant", "content": "Paris."}])
    );
    assert_metrics(
        row,
        &[
            ("prompt_tokens", 12.0),
            ("completion_tokens", 2.0),
            ("tokens", 14.0),
        ],
        &["time_to_first_token"],
    );
}
