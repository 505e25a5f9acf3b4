//! "Deeply nested code" from the Customize traces guide: traced functions
//! deep in the call stack find their parent without being passed a span, and
//! `current_span()` logs on the innermost one, across `.await`s.
//!
//! Run it with `cargo run --example guide_nested` (offline unless
//! `BRAINTRUST_API_KEY` is set; then it prints the stored trace tree).

use braintrust::{current_span, traced, traced_async, Event, LoggerOptions, SpanArgs};
use serde_json::{json, Value};

/// Stands in for a wrapped OpenAI client's chat completion.
#[traced(type = "llm", name = "Chat Completion")]
async fn chat_completion(model: &str, content: &str) -> String {
    tokio::task::yield_now().await;
    format!("[{model}] {} ... 42.", &content[..20])
}

#[traced]
async fn run_llm(input: &str) -> String {
    // The guide picks a model at random; any choice made here can be logged.
    let model = if input.len().is_multiple_of(2) {
        "gpt-4o"
    } else {
        "gpt-4o-mini"
    };
    let output = chat_completion(model, input).await;
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

    let answer = post(json!({"text": "What is the meaning of life?", "userId": 7})).await;
    println!("{answer}");

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
