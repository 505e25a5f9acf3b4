//! Hostile values in what the wrapper copies from a call into its span
//! (usage → metrics, request parameters → metadata, `llm_span`'s
//! arguments), against the mock OpenAI server and a local Braintrust server:
//! a value that would make a wrong row is left out of the span, named once
//! per field on stderr and counted in `Stats::rejected_logs`, and the call
//! itself (the request sent, the response returned) is untouched. The test
//! that reads stderr runs again in a child process of this test binary, so
//! it sees exactly what a user would.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use async_openai::types::chat::CreateChatCompletionRequest;
use braintrust_core::WithSpan;
use braintrust_openai::mock::Failure;
use braintrust_openai::{llm_span, ChatCompletionRequest, ChatMessage, TokenCounts};
use common::*;
use serde_json::{json, Value};

/// The child-process switch: set to the name of the test to run in the child.
const CHILD_ENV: &str = "BT_OPENAI_HOSTILE_CHILD";

/// In the parent, runs test `name` alone in a child process of this binary
/// and returns its stdout and stderr; in that child, returns `None` (the
/// test body then runs there).
fn rerun_in_child(name: &str) -> Option<String> {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return None;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("spawn the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    Some(text)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A usage object with seven values that must not become metrics (the
/// span's own timing, a negative cost and cached count, a token count that
/// is not a number, one too large to sum) next to good ones.
fn hostile_usage() -> Value {
    json!({
        "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
        "start": 1.0, "end": 2.0, "time_to_first_token": 1e9, "cost": -0.5,
        "prompt_tokens_details": {"cached_tokens": -1, "audio_tokens": "many"},
        "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 1e19}
    })
}

/// The good metrics of [`hostile_usage`].
const GOOD: [(&str, f64); 4] = [
    ("prompt_tokens", 5.0),
    ("completion_tokens", 2.0),
    ("tokens", 7.0),
    ("completion_reasoning_tokens", 1.0),
];

/// The stderr lines (one per field) the hostile values give.
const LEFT_OUT: [&str; 11] = [
    "invalid `metadata.provider`: reserved for the provider the wrapper logs",
    "invalid `usage.start`: `start` is the span's own timing",
    "invalid `usage.end`: `end` is the span's own timing",
    "invalid `usage.time_to_first_token`: `time_to_first_token` is the span's own timing",
    "invalid `usage.cost`: usage values must not be negative",
    "invalid `usage.prompt_tokens_details.cached_tokens`: usage values must not be negative",
    "invalid `usage.prompt_tokens_details.audio_tokens`: token counts must be numbers",
    "invalid `usage.completion_tokens_details.audio_tokens`: usage values must be at most 2^53",
    "invalid `metadata`: the params must serialize to a JSON object",
    "invalid `metrics.prompt_tokens`: token counts must be at most 2^53",
    "invalid `metrics.tokens`: token counts must be at most 2^53",
];

fn completion(usage: Value) -> Value {
    json!({
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": usage
    })
}

/// An SSE body: one content chunk, the finish chunk, then the usage chunk.
fn stream_body(usage: Value) -> String {
    let chunk = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 1,
               "model": "gpt-4o-mini", "choices": choices, "usage": usage})
    };
    [
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "Paris."}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            Value::Null,
        ),
        chunk(json!([]), usage),
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .chain(["data: [DONE]\n\n".to_string()])
    .collect()
}

/// The metrics are the good ones, with the span's own start, end and
/// `time_to_first_token` (within the test's time), nothing else.
fn assert_clean_metrics(row: &Value, good: &[(&str, f64)], since: f64) {
    assert_metrics(row, good, &["time_to_first_token"]);
    let start = row["metrics"]["start"].as_f64().unwrap();
    assert!((since..=now()).contains(&start), "start {start} in {row:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_values_and_a_provider_param_stay_out_of_the_span() {
    const NAME: &str = "bad_usage_values_and_a_provider_param_stay_out_of_the_span";
    let Some(out) = rerun_in_child(NAME) else {
        return hostile_calls().await;
    };
    for line in LEFT_OUT {
        assert_eq!(out.matches(line).count(), 1, "{line:?} in:\n{out}");
    }
    assert_eq!(
        out.matches("braintrust-openai: ").count(),
        LEFT_OUT.len(),
        "one line per field, however many calls:\n{out}"
    );
}

/// The calls of the test above (in the child process).
async fn hostile_calls() {
    let env = setup().await;
    let since = now();
    let root = env.root("hostile");
    let routing = json!({"order": ["azure", "openai"]});
    let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Capital?")])
        .param("provider", routing.clone());

    // Non-streaming, twice: the second call is only counted.
    for _ in 0..2 {
        env.mock.push_failure(Failure::Status {
            status: 200,
            body: completion(hostile_usage()).to_string(),
        });
        let reply = env
            .client
            .chat()
            .create(request.clone())
            .in_span(root.clone())
            .await
            .unwrap();
        // The response the caller gets is what the server sent.
        assert_eq!(reply.text(), Some("Paris."));
        let usage = reply.usage.unwrap();
        assert_eq!((usage.extra["start"].as_f64()), Some(1.0));
        assert_eq!((usage.extra["cost"].as_f64()), Some(-0.5));
        assert_eq!(usage.prompt_tokens_details.unwrap()["cached_tokens"], -1);
    }
    // Streaming: the usage arrives in the last chunk.
    env.mock.push_failure(Failure::Status {
        status: 200,
        body: stream_body(hostile_usage()),
    });
    let streamed = env
        .client
        .chat()
        .create_stream(request.clone())
        .in_span(root.clone())
        .await
        .unwrap()
        .collect_completion()
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(streamed.text(), Some("Paris."));
    assert_eq!(streamed.usage.unwrap().extra["end"].as_f64(), Some(2.0));
    // The request sent is the caller's, `provider` included.
    for r in env.mock.requests() {
        assert_eq!(r.body["provider"], routing, "{:#}", r.body);
    }

    // `llm_span`: params that are not an object, a hostile usage, and token
    // counts too large (whose sum would overflow too).
    {
        let _in_root = root.enter();
        let mut span = llm_span(json!([{"role": "user", "content": "hi"}]), json!(["p"]));
        span.log_usage(&hostile_usage());
        span.first_token();
        span.finish("out", TokenCounts::new(u64::MAX, 1));
    }
    root.end();

    let rows = env.trace(&root).await;
    let calls: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "Chat Completion")
        .collect();
    assert_eq!(calls.len(), 3);
    for row in calls {
        assert_clean_metrics(row, &GOOD, since);
        assert_eq!(row["metadata"]["provider"], "openai", "{row:#}");
        assert_eq!(row["output"][0]["message"]["content"], "Paris.");
    }
    let llm = Env::named(&rows, "LLM");
    assert!(llm.get("metadata").is_none(), "{llm:#}");
    assert_clean_metrics(
        llm,
        &[
            // From the usage: the too large counts were left out.
            ("prompt_tokens", 5.0),
            ("completion_tokens", 1.0),
            ("tokens", 7.0),
            ("completion_reasoning_tokens", 1.0),
        ],
        since,
    );
    // 8 per chat call (7 usage values and `provider`), 10 for `llm_span`
    // (the params, 7 usage values, 2 token counts).
    assert_eq!(env.logger.state().stats().rejected_logs, 3 * 8 + 10);
}

/// async-openai's typed usage cannot carry a negative count or an unknown
/// key (they are dropped or fail to decode before the wrapper sees them),
/// so the same checks leave its rows as they are and report nothing.
#[tokio::test(flavor = "multi_thread")]
async fn async_openai_rows_keep_their_own_timing() {
    let env = setup().await;
    let since = now();
    let root = env.root("hostile-async-openai");
    let client = braintrust_openai::wrap_async_openai(async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(env.mock.url())
            .with_api_key("sk-test-secret"),
    ));
    env.mock.push_failure(Failure::Status {
        status: 200,
        body: completion(json!({
            "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
            "start": 1.0, "end": 2.0, "time_to_first_token": 1e9
        }))
        .to_string(),
    });
    let request: CreateChatCompletionRequest = serde_json::from_value(json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Capital?"}]
    }))
    .unwrap();
    let reply = client
        .chat()
        .create(request)
        .in_span(root.clone())
        .await
        .unwrap();
    assert_eq!(reply.choices[0].message.content.as_deref(), Some("Paris."));
    root.end();
    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    assert_clean_metrics(
        row,
        &[
            ("prompt_tokens", 5.0),
            ("completion_tokens", 2.0),
            ("tokens", 7.0),
        ],
        since,
    );
    assert_eq!(env.logger.state().stats().rejected_logs, 0);
}
