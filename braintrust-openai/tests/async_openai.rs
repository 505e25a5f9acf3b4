//! The async-openai wrapper against the mock server: every endpoint's rows
//! compared field by field with the rows this crate's own client logs for
//! the same request (which `capture_parity.rs` compares with the official
//! SDK's capture).

mod common;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionRequest;
use async_openai::types::embeddings::CreateEmbeddingRequest;
use async_openai::types::responses::CreateResponse;
use braintrust_core::{Span, WithSpan};
use braintrust_openai::mock::Failure;
use braintrust_openai::{
    wrap_async_openai, ChatCompletionRequest, EmbeddingRequest, ResponseRequest, TracedClient,
};
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn wrapped(env: &Env) -> TracedClient<OpenAIConfig> {
    wrap_async_openai(async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(env.mock.url())
            .with_api_key("sk-test-secret"),
    ))
}

/// One request as JSON, read into both clients' request types, so both send
/// the same thing.
fn chat_json(extra: Value) -> Value {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "Capital of France?"}
        ],
        "temperature": 0.0
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn tools() -> Value {
    json!({"tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}
    }}]})
}

fn ours<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

/// Every row of `root`'s trace but the root, ordered by name.
async fn call_rows(env: &Env, root: &Span) -> Vec<Value> {
    let mut rows: Vec<Value> = env
        .trace(root)
        .await
        .into_iter()
        .filter(|r| r["span_id"] != root.span_id().as_str())
        .collect();
    rows.sort_by_key(|r| {
        r["span_attributes"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    rows
}

/// Rows equal but for ids, times, order and the caller's line: same fields, same
/// input, output, metadata, error, attributes and origin, same metrics
/// (token counts equal; `start`/`end`/`time_to_first_token` present in both).
fn assert_same_rows(theirs: &[Value], ours: &[Value]) {
    assert_eq!(theirs.len(), ours.len(), "{theirs:#?}\nvs\n{ours:#?}");
    for (a, b) in theirs.iter().zip(ours) {
        assert_eq!(row_keys(a), row_keys(b));
        for k in ["input", "output", "metadata", "error", "tags"] {
            assert_eq!(a.get(k), b.get(k), "field {k}");
        }
        // `exec_counter` orders spans in time: the only attribute that differs.
        let attrs = |r: &Value| {
            let mut m = r["span_attributes"].clone();
            m.as_object_mut().unwrap().remove("exec_counter");
            m
        };
        assert_eq!(attrs(a), attrs(b));
        assert_eq!(a["context"]["span_origin"], b["context"]["span_origin"]);
        // The caller of an llm span is the code that made the call.
        if a["span_attributes"]["type"] == "llm" {
            let file = a["context"]["caller_filename"].as_str().unwrap();
            assert!(file.ends_with("async_openai.rs"), "{file}");
        }
        assert_eq!(keys(&a["metrics"]), keys(&b["metrics"]), "metrics of {a:#}");
        for (k, v) in a["metrics"].as_object().unwrap() {
            if !["start", "end", "time_to_first_token"].contains(&k.as_str()) {
                assert_eq!(v, &b["metrics"][k], "metrics.{k}");
            }
        }
        assert_eq!(a["span_parents"].is_null(), b["span_parents"].is_null());
    }
}

/// The bodies the mock received, in order.
fn sent(env: &Env) -> Vec<Value> {
    env.mock.requests().into_iter().map(|r| r.body).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_plain_and_with_tools_match_our_client() {
    let env = setup().await;
    let client = wrapped(&env);
    for extra in [json!({}), tools()] {
        let req = chat_json(extra);
        let theirs_root = env.root("theirs");
        let reply = client
            .chat()
            .create(ours::<CreateChatCompletionRequest>(&req))
            .in_span(theirs_root.clone())
            .await
            .unwrap();
        theirs_root.end();
        let ours_root = env.root("ours");
        let own = env
            .client
            .chat()
            .create(ours::<ChatCompletionRequest>(&req))
            .in_span(ours_root.clone())
            .await
            .unwrap();
        ours_root.end();
        // The caller keeps async-openai's own response type.
        assert_eq!(
            reply.choices[0].message.content,
            own.text().map(String::from)
        );
        let theirs = call_rows(&env, &theirs_root).await;
        let ours = call_rows(&env, &ours_root).await;
        assert_same_rows(&theirs, &ours);
        assert_llm_row(&theirs[0], "Chat Completion", Some(&theirs_root));
        assert_metrics(&theirs[0], &CHAT_USAGE_METRICS, &["time_to_first_token"]);
    }
    let bodies = sent(&env);
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[2], bodies[3]);
}

/// Reads a wrapped stream to its end, returning the text.
async fn drain(mut stream: async_openai::types::chat::ChatCompletionResponseStream) -> String {
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        if let Some(t) = chunk
            .unwrap()
            .choices
            .first()
            .and_then(|c| c.delta.content.clone())
        {
            text.push_str(&t);
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_streams_with_and_without_usage_and_tools_match_our_client() {
    let env = setup().await;
    let client = wrapped(&env);
    let cases = [
        (json!({}), &[][..]),
        (
            json!({"stream_options": {"include_usage": true}}),
            &STREAM_USAGE_METRICS[..],
        ),
        (tools(), &[][..]),
    ];
    for (extra, metrics) in cases {
        let req = chat_json(extra);
        let theirs_root = env.root("theirs");
        let stream = client
            .chat()
            .create_stream(ours::<CreateChatCompletionRequest>(&req))
            .in_span(theirs_root.clone())
            .await
            .unwrap();
        let text = drain(stream).await;
        theirs_root.end();
        let ours_root = env.root("ours");
        let own = env
            .client
            .chat()
            .create_stream(ours::<ChatCompletionRequest>(&req))
            .in_span(ours_root.clone())
            .await
            .unwrap()
            .collect_completion()
            .await
            .unwrap();
        ours_root.end();
        assert_eq!(text, own.text().unwrap_or_default());
        let theirs = call_rows(&env, &theirs_root).await;
        let ours = call_rows(&env, &ours_root).await;
        assert_same_rows(&theirs, &ours);
        assert_metrics(&theirs[0], metrics, &["time_to_first_token"]);
        assert_eq!(theirs[0]["metadata"]["stream"], true);
    }
    // Tool calls aggregated from the deltas.
    let root = env.root("tools");
    let stream = client
        .chat()
        .create_stream(ours::<CreateChatCompletionRequest>(&chat_json(tools())))
        .in_span(root.clone())
        .await
        .unwrap();
    drain(stream).await;
    root.end();
    let rows = call_rows(&env, &root).await;
    assert_eq!(
        rows[0]["output"][0]["message"]["tool_calls"],
        json!([
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}
        ])
    );
    assert_eq!(rows[0]["output"][0]["finish_reason"], "tool_calls");
    let bodies = sent(&env);
    for pair in bodies.chunks(2).take(3) {
        assert_eq!(pair[0], pair[1]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_match_our_client() {
    let env = setup().await;
    let client = wrapped(&env);
    let req = json!({"model": "text-embedding-3-small", "input": ["hello", "world"]});
    let theirs_root = env.root("theirs");
    let reply = client
        .embeddings()
        .create(ours::<CreateEmbeddingRequest>(&req))
        .in_span(theirs_root.clone())
        .await
        .unwrap();
    theirs_root.end();
    assert_eq!(reply.data.len(), 2);
    let ours_root = env.root("ours");
    env.client
        .embeddings()
        .create(ours::<EmbeddingRequest>(&req))
        .in_span(ours_root.clone())
        .await
        .unwrap();
    ours_root.end();
    let theirs = call_rows(&env, &theirs_root).await;
    assert_same_rows(&theirs, &call_rows(&env, &ours_root).await);
    assert_eq!(theirs[0]["output"], json!({"embedding_length": 4}));
    assert_eq!(theirs[0]["input"], json!(["hello", "world"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_plain_and_streaming_match_our_client() {
    let env = setup().await;
    let client = wrapped(&env);
    let req = json!({
        "model": "gpt-4o-mini",
        "input": "Weather in Paris?",
        "instructions": "be terse",
        "tools": [{"type": "function", "name": "get_weather",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]
    });
    // Plain: the llm span and its tool child span.
    let theirs_root = env.root("theirs");
    let reply = client
        .responses()
        .create(ours::<CreateResponse>(&req))
        .in_span(theirs_root.clone())
        .await
        .unwrap();
    theirs_root.end();
    let ours_root = env.root("ours");
    let own = env
        .client
        .responses()
        .create(ours::<ResponseRequest>(&req))
        .in_span(ours_root.clone())
        .await
        .unwrap();
    ours_root.end();
    assert_eq!(reply.id, own.id);
    let theirs = call_rows(&env, &theirs_root).await;
    assert_same_rows(&theirs, &call_rows(&env, &ours_root).await);
    assert_eq!(theirs.len(), 2, "the llm span and one tool span");
    assert_eq!(theirs[0]["span_attributes"]["type"], "tool");

    // Streaming.
    let theirs_root = env.root("theirs");
    let mut stream = client
        .responses()
        .create_stream(ours::<CreateResponse>(&req))
        .in_span(theirs_root.clone())
        .await
        .unwrap();
    let mut events = 0;
    while let Some(ev) = stream.next().await {
        ev.unwrap();
        events += 1;
    }
    theirs_root.end();
    assert!(events > 2);
    let ours_root = env.root("ours");
    env.client
        .responses()
        .create_stream(ours::<ResponseRequest>(&req))
        .in_span(ours_root.clone())
        .await
        .unwrap()
        .final_response()
        .await
        .unwrap();
    ours_root.end();
    let theirs = call_rows(&env, &theirs_root).await;
    assert_same_rows(&theirs, &call_rows(&env, &ours_root).await);
    let llm = Env::named(&theirs, "openai.responses.create");
    assert!(llm["metrics"]["time_to_first_token"].is_number());
    let bodies = sent(&env);
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[2], bodies[3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_is_returned_unchanged_and_logged() {
    let env = setup().await;
    let client = wrapped(&env);
    // async-openai retries a 5xx 3 times itself (100 ms doubling): all
    // four attempts fail, inside the one span.
    for _ in 0..4 {
        env.mock.push_failure(Failure::ServerError);
    }
    let root = env.root("request");
    let err = client
        .chat()
        .create(ours::<CreateChatCompletionRequest>(&chat_json(json!({}))))
        .in_span(root.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, OpenAIError::ApiError(_)), "{err:?}");
    root.end();
    let rows = call_rows(&env, &root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_llm_row(row, "Chat Completion", Some(&root));
    let logged = row["error"].as_str().unwrap();
    assert!(logged.contains(&err.to_string()), "{logged}");
    assert!(!logged.contains("sk-test-secret"));
    assert!(row.get("output").is_none_or(Value::is_null));
    assert_eq!(row["input"], chat_json(json!({}))["messages"]);
    assert_metrics(row, &[], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_logs_what_arrived_and_the_error() {
    let env = setup().await;
    let client = wrapped(&env);
    env.mock.push_failure(Failure::DisconnectAfter { after: 2 });
    let root = env.root("request");
    let mut stream = client
        .chat()
        .create_stream(ours::<CreateChatCompletionRequest>(&chat_json(json!({}))))
        .in_span(root.clone())
        .await
        .unwrap();
    let mut chunks = 0;
    let mut failed = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => chunks += 1,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(stream);
    root.end();
    let err = failed.expect("the cut is an error item");
    assert_eq!(chunks, 2);
    let rows = call_rows(&env, &root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert!(row["error"].as_str().unwrap().contains(&err.to_string()));
    assert_eq!(row["output"][0]["message"]["content"], "Par");
    assert_ne!(row["error"], "cancelled");
    assert_metrics(row, &[], &["time_to_first_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_dropped_early_is_marked_cancelled_like_ours() {
    let env = setup().await;
    let client = wrapped(&env);
    let req = chat_json(json!({}));
    let theirs_root = env.root("theirs");
    let mut stream = client
        .chat()
        .create_stream(ours::<CreateChatCompletionRequest>(&req))
        .in_span(theirs_root.clone())
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    theirs_root.end();
    let ours_root = env.root("ours");
    let mut own = env
        .client
        .chat()
        .create_stream(ours::<ChatCompletionRequest>(&req))
        .in_span(ours_root.clone())
        .await
        .unwrap();
    own.next().await.unwrap().unwrap();
    own.next().await.unwrap().unwrap();
    drop(own);
    ours_root.end();
    let theirs = call_rows(&env, &theirs_root).await;
    assert_same_rows(&theirs, &call_rows(&env, &ours_root).await);
    assert_eq!(theirs[0]["error"], "cancelled");
    assert_eq!(theirs[0]["output"][0]["message"]["content"], "Par");
}

#[braintrust::traced(skip(client))]
async fn answer(client: &TracedClient<OpenAIConfig>, question: &str) -> Option<String> {
    let req = chat_json(json!({"messages": [{"role": "user", "content": question}]}));
    let reply = client
        .chat()
        .create(ours::<CreateChatCompletionRequest>(&req))
        .await
        .ok()?;
    reply.choices[0].message.content.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn nests_under_traced_functions_and_spawned_tasks() {
    let env = setup().await;
    let client = wrapped(&env);
    let root = env.root("request");
    // `braintrust_core::spawn` carries the current span (here `root`) into
    // each task: three traced functions, and one bare call.
    let (tasks, bare) = root.in_scope(|| {
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let client = client.clone();
                braintrust_core::spawn(
                    async move { answer(&client, &format!("question {i}")).await },
                )
            })
            .collect();
        let client = client.clone();
        let bare = braintrust_core::spawn(async move {
            client
                .chat()
                .create(ours::<CreateChatCompletionRequest>(&chat_json(json!({}))))
                .await
        });
        (tasks, bare)
    });
    for t in tasks {
        assert_eq!(t.await.unwrap().as_deref(), Some("Paris."));
    }
    bare.await.unwrap().unwrap();
    root.end();
    let rows = env.trace(&root).await;
    let answers: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "answer")
        .collect();
    assert_eq!(answers.len(), 3);
    for a in &answers {
        assert_eq!(a["span_parents"], json!([root.span_id()]));
        let id = a["span_id"].as_str().unwrap();
        let llm: Vec<&Value> = rows
            .iter()
            .filter(|r| r["span_parents"] == json!([id]))
            .collect();
        assert_eq!(llm.len(), 1);
        assert_eq!(llm[0]["span_attributes"]["name"], "Chat Completion");
        assert_eq!(llm[0]["span_attributes"]["type"], "llm");
        assert_eq!(llm[0]["root_span_id"], root.root_span_id().as_str());
    }
    let direct: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["span_attributes"]["type"] == "llm" && r["span_parents"] == json!([root.span_id()])
        })
        .collect();
    assert_eq!(
        direct.len(),
        1,
        "the bare call's span is a child of the root"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn untraced_without_a_logger_or_span() {
    // No current span under this test's logger, which is not the process's
    // current logger: the call goes straight through.
    let env = setup().await;
    let client = wrapped(&env);
    let reply = client
        .chat()
        .create(ours::<CreateChatCompletionRequest>(&chat_json(json!({}))))
        .await
        .unwrap();
    assert_eq!(reply.choices[0].message.content.as_deref(), Some("Paris."));
}

/// The recipe for sync code (the README's "From sync code and thread
/// pools"): keep a Tokio runtime and `block_on` the call on the calling
/// thread, where the current span is. Both clients, from a plain sync
/// function and from `TracedThreadPool` jobs, nest under the submitter's span.
#[test]
fn both_clients_from_sync_code_and_a_thread_pool() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(setup());
    let theirs = wrapped(&env);
    let req = chat_json(json!({}));
    let root = env.root("main");
    let answers = root.in_scope(|| {
        let pool = braintrust_core::TracedThreadPool::new(2);
        let (rt_a, own, req_a) = (rt.handle().clone(), env.client.clone(), req.clone());
        let a = pool.submit(move || {
            let reply = rt_a.block_on(own.chat().create(ours::<ChatCompletionRequest>(&req_a)));
            reply.unwrap().text().map(String::from)
        });
        let (rt_b, theirs_b, req_b) = (rt.handle().clone(), theirs.clone(), req.clone());
        let b = pool.submit(move || {
            let reply = rt_b.block_on(
                theirs_b
                    .chat()
                    .create(ours::<CreateChatCompletionRequest>(&req_b)),
            );
            reply.unwrap().choices[0].message.content.clone()
        });
        // And straight from this sync function.
        let c = rt
            .block_on(
                theirs
                    .chat()
                    .create(ours::<CreateChatCompletionRequest>(&req)),
            )
            .unwrap()
            .choices[0]
            .message
            .content
            .clone();
        [a.join().unwrap(), b.join().unwrap(), c]
    });
    root.end();
    assert_eq!(answers.map(|a| a.unwrap()), ["Paris.", "Paris.", "Paris."]);
    let rows = rt.block_on(call_rows(&env, &root));
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["span_attributes"]["name"], "Chat Completion");
        assert_eq!(row["span_parents"], json!([root.span_id()]));
    }
    assert_same_rows(&rows[..1], &rows[1..2]);
}
