//! With no logger and no current span, calls do no tracing work (own test
//! binary: no test here sets a logger).

use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{llm_span, ChatCompletionRequest, ChatMessage, OpenAiClient, TokenCounts};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn calls_work_untraced_without_a_logger() {
    assert!(!braintrust_core::is_enabled());
    let mock = MockOpenAi::start().await.unwrap();
    let client = OpenAiClient::builder()
        .base_url(mock.url())
        .build()
        .unwrap();
    let req = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
    let reply = client.chat().create(req.clone()).await.unwrap();
    assert_eq!(reply.text(), Some("Paris."));
    let streamed = client
        .chat()
        .create_stream(req)
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    assert_eq!(streamed.text(), Some("Paris."));
    // No Authorization header without a key.
    assert!(mock.requests()[0].header("authorization").is_none());

    let span = llm_span(
        json!([{"role": "user", "content": "hi"}]),
        json!({"model": "m"}),
    );
    assert!(span.span().is_noop());
    span.finish("out", TokenCounts::new(1, 1));
    assert!(!braintrust_core::is_enabled());
}

#[test]
fn client_builds_outside_a_runtime() {
    let c = OpenAiClient::builder()
        .base_url("http://127.0.0.1:9/v1")
        .api_key("sk-x")
        .organization("org")
        .project("proj")
        .header("api-key", "azure")
        .query_param("api-version", "2024-10-21")
        .build()
        .unwrap();
    assert!(!format!("{c:?}").contains("sk-x"));
}
