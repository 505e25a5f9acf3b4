//! Tracing the client most Rust applications already use, `async-openai`:
//! wrap it once, keep its request, response and error types.
//!
//! ```text
//! cargo run --example async_openai
//! ```
//!
//! * Model calls go to OpenAI when `OPENAI_API_KEY` is set (then enable
//!   async-openai's `rustls` feature in your own manifest for HTTPS);
//!   otherwise to a mock OpenAI server started in this process.
//! * Traces go to Braintrust when `BRAINTRUST_API_KEY` is set; otherwise to
//!   a local Braintrust-compatible server, whose stored trace tree is printed
//!   and checked at the end.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CreateChatCompletionRequest,
};
use async_openai::types::embeddings::CreateEmbeddingRequest;
use async_openai::types::responses::CreateResponse;
use braintrust::{current_span, traced, Event, LoggerOptions};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{wrap_async_openai, TracedClient};
use futures_util::StreamExt;
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn chat_request(question: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            ChatCompletionRequestSystemMessage::from("be terse").into(),
            ChatCompletionRequestUserMessage::from(question).into(),
        ],
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// A traced function: the `Chat Completion` spans below are its children.
#[traced(skip(client))]
async fn answer(client: &TracedClient<OpenAIConfig>, question: &str) -> Result<String, Error> {
    // Plain: async-openai's own response type.
    let reply = client.chat().create(chat_request(question)).await?;
    let first = reply.choices[0].message.content.clone().unwrap_or_default();

    // Streaming, with usage: the server sends token counts in a last chunk
    // only when asked (`stream_options.include_usage`).
    let mut stream = client
        .chat()
        .create_stream(CreateChatCompletionRequest {
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            ..chat_request(question)
        })
        .await?;
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        if let Some(text) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
            streamed.push_str(&text);
        }
    }
    current_span().log(Event::new().metadata(json!({"agreed": first == streamed})))?;
    Ok(first)
}

#[traced(skip(client))]
async fn embed_and_respond(client: &TracedClient<OpenAIConfig>) -> Result<(), Error> {
    let embedding = client
        .embeddings()
        .create(CreateEmbeddingRequest {
            model: "text-embedding-3-small".into(),
            input: "Paris".into(),
            ..Default::default()
        })
        .await?;
    println!(
        "embedding of {} dimensions",
        embedding.data[0].embedding.len()
    );

    let mut events = client
        .responses()
        .create_stream(serde_json::from_value::<CreateResponse>(
            json!({"model": "gpt-4o-mini", "input": "Say hi"}),
        )?)
        .await?;
    let mut count = 0;
    while let Some(event) = events.next().await {
        event?;
        count += 1;
    }
    println!("Responses API: {count} stream events");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let session = braintrust::local::init_logger_or_local(
        LoggerOptions::new().project("braintrust-rust-examples"),
    )?;

    // Your client, as you build it today...
    let (config, _mock) = if std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty()) {
        (OpenAIConfig::new(), None)
    } else {
        let mock = MockOpenAi::start().await?;
        println!(
            "OPENAI_API_KEY not set: using a mock OpenAI server at {}",
            mock.url()
        );
        let config = OpenAIConfig::new()
            .with_api_base(mock.url())
            .with_api_key("mock");
        (config, Some(mock))
    };
    // ...wrapped once.
    let client = wrap_async_openai(async_openai::Client::with_config(config));

    println!("{}", answer(&client, "Capital of France?").await?);
    embed_and_respond(&client).await?;

    session.logger.flush_async().await?;
    if let Some(server) = &session.server {
        print!("{}", server.render_all_traces());
        // Checked in CI: every model call is an llm span under its function.
        let rows = server.rows();
        let llm: Vec<_> = rows
            .iter()
            .filter(|r| r["span_attributes"]["type"] == "llm")
            .collect();
        let names: Vec<&str> = llm
            .iter()
            .filter_map(|r| r["span_attributes"]["name"].as_str())
            .collect();
        assert_eq!(llm.len(), 4, "{names:?}");
        for row in &llm {
            assert_eq!(row["metadata"]["provider"], "openai");
            assert!(row["span_parents"].is_array(), "nested: {row:#}");
            assert!(row["metrics"]["prompt_tokens"].is_number(), "{row:#}");
        }
        let streamed = llm
            .iter()
            .find(|r| {
                r["metadata"]["stream"] == true && r["span_attributes"]["name"] == "Chat Completion"
            })
            .expect("the streaming chat span");
        assert_eq!(streamed["output"][0]["message"]["content"], "Paris.");
        assert!(streamed["metrics"]["time_to_first_token"].is_number());
    }
    Ok(())
}
