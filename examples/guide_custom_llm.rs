//! "Wrapping a custom LLM client" from the Customize traces guide. To show a
//! span as an LLM call, give it `type = "llm"`, log the prompt as OpenAI-format
//! messages (other parameters in `metadata`), and log `prompt_tokens`,
//! `completion_tokens` and `total_tokens` as metrics.
//!
//! Run it with `cargo run --example guide_custom_llm` (offline unless
//! `BRAINTRUST_API_KEY` is set; then it prints the stored trace tree).

use braintrust::{current_span, traced, traced_async, Event, LoggerOptions, SpanArgs};
use serde::Serialize;
use serde_json::json;

struct LlmCompletion {
    completion: String,
    prompt_tokens: usize,
    completion_tokens: usize,
}

#[derive(Clone, Copy, Serialize)]
struct Params {
    temperature: f64,
}

/// Replace with your own LLM client.
async fn call_my_llm(input: &str, _params: Params) -> LlmCompletion {
    LlmCompletion {
        completion: "Hello, world!".into(),
        prompt_tokens: input.len(),
        completion_tokens: 10,
    }
}

/// `notrace_io`: the span's input and output are logged below in the shape
/// the LLM views expect, instead of as `{llm_input, params}`.
#[traced(type = "llm", name = "Custom LLM", notrace_io)]
async fn invoke_custom_llm(llm_input: &str, params: Params) -> String {
    let result = call_my_llm(llm_input, params).await;
    let (prompt, completion) = (result.prompt_tokens as f64, result.completion_tokens as f64);
    current_span()
        .log(
            Event::new()
                .input(json!([{"role": "user", "content": llm_input}]))
                .output(result.completion.as_str())
                .metrics([
                    ("prompt_tokens", prompt),
                    ("completion_tokens", completion),
                    ("total_tokens", prompt + completion),
                ])
                .metadata(json!(params)),
        )
        .expect("valid event");
    result.completion
}

/// The request handler, as the guide's `POST`.
async fn post(request_text: String) -> String {
    traced_async(SpanArgs::new().name("POST"), |span| async move {
        let result = invoke_custom_llm(&request_text, Params { temperature: 0.1 }).await;
        span.log(
            Event::new()
                .input(request_text.as_str())
                .output(result.as_str()),
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

    println!("{}", post("Say hello".into()).await);

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
