//! Streaming OpenAI calls traced into Braintrust: chat deltas printed as
//! they arrive, the span's output aggregated from them, token usage from the
//! final chunk, a Responses API stream, and a stream dropped early (its span
//! ends with what arrived, marked cancelled).
//!
//! ```text
//! cargo run --example openai_streaming
//! ```
//!
//! Uses a real OpenAI-compatible endpoint when `OPENAI_API_KEY` is set
//! (`OPENAI_BASE_URL`, `OPENAI_MODEL`), else an in-process mock; logs to
//! Braintrust when `BRAINTRUST_API_KEY` is set, else to an in-process local
//! server whose trace tree is printed.

use std::io::Write as _;

use braintrust::local::DevServer;
use braintrust::{Logger, LoggerOptions, SpanArgs, WithSpan};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{
    ChatCompletionRequest, ChatMessage, OpenAiClient, OpenAiClientBuilder, ResponseRequest,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

async fn model_client() -> Result<(OpenAiClient, String, Option<MockOpenAi>), Error> {
    // Opt in to `stream_options.include_usage` so streamed calls get token
    // metrics. (Without it the request is sent exactly as written.)
    if set("OPENAI_API_KEY") {
        let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
        let client = OpenAiClientBuilder::from_env()
            .include_usage_in_streams(true)
            .build()?;
        return Ok((client, model, None));
    }
    let mock = MockOpenAi::start().await?;
    println!(
        "OPENAI_API_KEY not set: using a mock OpenAI server at {}",
        mock.url()
    );
    let client = mock
        .client_builder()
        .include_usage_in_streams(true)
        .build()?;
    Ok((client, "gpt-4o-mini".into(), Some(mock)))
}

/// The Braintrust logger: the real service, or an in-process dev server.
fn braintrust_logger() -> Result<(Logger, Option<DevServer>), Error> {
    let session = braintrust::local::init_logger_or_local(
        LoggerOptions::new().project("braintrust-rust-examples"),
    )?;
    Ok((session.logger, session.server))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (client, model, _mock) = model_client().await?;
    let (logger, devserver) = braintrust_logger()?;
    let root = logger.start_span(SpanArgs::new().name("streaming_demo"));

    async {
        // A chat stream, printed as it arrives.
        let request = ChatCompletionRequest::new(
            &model,
            vec![
                ChatMessage::system("be terse"),
                ChatMessage::user("Capital of France?"),
            ],
        );
        let mut stream = client.chat().create_stream(request.clone()).await?;
        print!("chat: ");
        while let Some(chunk) = stream.next().await {
            if let Some(text) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
                print!("{text}");
                std::io::stdout().flush()?;
            }
        }
        println!();

        // A stream the caller stops reading after two chunks: dropping it
        // closes the connection; the span keeps what arrived and is marked
        // `metadata.cancelled`.
        let mut stream = client.chat().create_stream(request).await?;
        for _ in 0..2 {
            stream.next().await.transpose()?;
        }
        drop(stream);

        // A Responses API stream.
        let mut events = client
            .responses()
            .create_stream(ResponseRequest::new(&model, "Say hi in five words."))
            .await?;
        print!("responses: ");
        while let Some(event) = events.next().await {
            let event = event?;
            if event.kind == "response.output_text.delta" {
                print!(
                    "{}",
                    event.delta.as_ref().and_then(|d| d.as_str()).unwrap_or("")
                );
                std::io::stdout().flush()?;
            }
        }
        println!();
        Ok::<_, Error>(())
    }
    .in_span(root.clone())
    .await?;

    root.end();
    logger.flush_async().await?;
    match devserver {
        Some(server) => println!("\nstored trace:\n{}", server.render_all_traces()),
        None => {
            let slug = root.export();
            let state = logger.state().clone();
            let link =
                tokio::task::spawn_blocking(move || braintrust::permalink(&slug, Some(&state)))
                    .await?;
            println!("\ntrace: {link}");
        }
    }
    Ok(())
}
