//! "Annotating your code" from the Customize traces guide: `#[traced]` is
//! the Rust form of TypeScript's `wrapTraced` and Python's `@traced`.
//!
//! Each call of a traced function becomes a span named after the function,
//! with the arguments as `input` and the return value as `output`; an `Err`
//! becomes the span's `error`. Calls made inside it become its children.
//!
//! Run it with `cargo run --example guide_annotate`. With `BRAINTRUST_API_KEY`
//! set it logs to Braintrust; otherwise it starts a local devserver
//! in-process and prints the trace tree the server stored.

use braintrust::{traced, LoggerOptions};
use serde::Serialize;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A chat message in the OpenAI format.
#[derive(Debug, Serialize)]
struct Message {
    role: &'static str,
    content: String,
}

/// Stands in for `client.chat.completions.create(...)`, so the example runs
/// offline (`braintrust-openai` traces a real client the same way).
#[traced(type = "llm", name = "Chat Completion")]
async fn chat_completion(model: &str, messages: &[Message]) -> Option<String> {
    let question = &messages.last()?.content;
    Some(format!(
        "[{model}] To answer {question:?}: plan your day in blocks."
    ))
}

/// `input` = `{"body": ...}`, `output` = the answer (or `error` on `Err`).
#[traced]
async fn answer_question(body: &str) -> Result<String, Error> {
    let prompt = [
        Message {
            role: "system",
            content: "You are a helpful assistant.".into(),
        },
        Message {
            role: "user",
            content: body.into(),
        },
    ];
    let content = chat_completion("gpt-4o", &prompt)
        .await
        .ok_or("The LLM response content is empty or undefined.")?;
    Ok(content)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session =
        braintrust::local::init_logger_or_local(LoggerOptions::new().project("My Project"))?;

    let input = "How can I improve my productivity?";
    let result = answer_question(input).await?;
    println!("{result}");

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
