//! "Deeply nested code" from the Customize traces guide: traced functions
//! deep in the call stack find their parent without being passed a span, and
//! `current_span()` logs on the innermost one, across `.await`s.
//!
//! Run it with `cargo run --example guide_nested` (offline unless
//! `BRAINTRUST_API_KEY` is set; then it prints the stored trace tree).

use std::sync::OnceLock;

use braintrust::{current_span, traced, traced_async, Event, LoggerOptions, SpanArgs};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{wrap, ChatCompletionRequest, ChatMessage, OpenAiClient};
use serde_json::{json, Value};

/// The wrapped OpenAI client (`wrap_openai(OpenAI())` in the guide). Here it
/// talks to a mock OpenAI server started in this process, so the example
/// runs offline; `OpenAiClient::from_env()` would talk to OpenAI.
static CLIENT: OnceLock<OpenAiClient> = OnceLock::new();

fn client() -> &'static OpenAiClient {
    CLIENT.get().expect("set in main")
}

/// Starts the mock server and sets [`CLIENT`]; keep the returned handle alive.
async fn start_client() -> Result<MockOpenAi, Box<dyn std::error::Error>> {
    let mock = MockOpenAi::start().await?;
    let client = mock.client_builder().build()?;
    let _ = CLIENT.set(wrap(client));
    Ok(mock)
}

#[traced]
async fn run_llm(input: &str) -> String {
    // The guide picks a model at random; any choice made here can be logged.
    let model = if input.len().is_multiple_of(2) {
        "gpt-4o"
    } else {
        "gpt-4o-mini"
    };
    // The wrapped client's `Chat Completion` span is a child of this one.
    let output = match client()
        .chat()
        .create(ChatCompletionRequest::new(
            model,
            vec![ChatMessage::user(input)],
        ))
        .await
    {
        Ok(reply) => reply.text().unwrap_or_default().to_string(),
        Err(e) => format!("error: {e}"),
    };
    // Still this function's span after the `.await`.
    current_span()
        .log(Event::new().metadata(json!({"randomModel": model})))
        .expect("metadata is an object");
    output
}

#[traced]
async fn some_logic(input: &str) -> String {
    run_llm(&format!(
        "You are a magical wizard. Answer the following question: {input}"
    ))
    .await
}

/// The request handler: TypeScript's `traced(async () => { ... })`.
async fn post(body: Value) -> String {
    traced_async(SpanArgs::new().name("POST"), |_span| async move {
        let text = body["text"].as_str().unwrap_or_default();
        let result = some_logic(text).await;
        current_span()
            .log(
                Event::new()
                    .input(text)
                    .output(result.as_str())
                    .metadata(json!({"user_id": body["userId"]})),
            )
            .expect("valid event");
        result
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session =
        braintrust::local::init_logger_or_local(LoggerOptions::new().project("My Project"))?;
    let _mock = start_client().await?;

    let answer = post(json!({"text": "What is the meaning of life?", "userId": 7})).await;
    println!("{answer}");

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
