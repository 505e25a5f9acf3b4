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

use std::sync::OnceLock;

use braintrust::{traced, LoggerOptions};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{wrap, ChatCompletionRequest, ChatMessage, OpenAiClient};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The wrapped OpenAI client (`wrap_openai(OpenAI())` in the guide). Here it
/// talks to a mock OpenAI server started in this process, so the example
/// runs offline; `OpenAiClient::from_env()` would talk to OpenAI.
static CLIENT: OnceLock<OpenAiClient> = OnceLock::new();

fn client() -> &'static OpenAiClient {
    CLIENT.get().expect("set in main")
}

/// Starts the mock server and sets [`CLIENT`]; keep the returned handle alive.
async fn start_client() -> Result<MockOpenAi, Error> {
    let mock = MockOpenAi::start().await?;
    let client = mock.client_builder().build()?;
    let _ = CLIENT.set(wrap(client));
    Ok(mock)
}

/// `input` = `{"body": ...}`, `output` = the answer (or `error` on `Err`).
#[traced]
async fn answer_question(body: &str) -> Result<String, Error> {
    let prompt = vec![
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user(body),
    ];
    // A `Chat Completion` llm span, child of this function's span.
    let result = client()
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o", prompt))
        .await?;
    let content = result
        .text()
        .filter(|c| !c.is_empty())
        .ok_or("The LLM response content is empty or undefined.")?
        .to_string();
    Ok(content)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session =
        braintrust::local::init_logger_or_local(LoggerOptions::new().project("My Project"))?;
    let _mock = start_client().await?;

    let input = "How can I improve my productivity?";
    let result = answer_question(input).await?;
    println!("{result}");

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
