//! Trace OpenAI calls into Braintrust: a small tool-using agent turn, an
//! embedding and a Responses API call, all nested under one root span.
//!
//! ```text
//! cargo run --example openai
//! ```
//!
//! * Model calls go to a real OpenAI-compatible endpoint when
//!   `OPENAI_API_KEY` is set (`OPENAI_BASE_URL` to point elsewhere,
//!   `OPENAI_MODEL` / `OPENAI_EMBEDDING_MODEL` for the models, defaults
//!   `gpt-4o-mini` / `text-embedding-3-small`); otherwise to a
//!   mock OpenAI server started in this process.
//! * Traces go to Braintrust when `BRAINTRUST_API_KEY` is set; otherwise to
//!   a local Braintrust-compatible server started in this process, whose
//!   stored trace tree is printed at the end.

use braintrust::local::DevServer;
use braintrust::{Event, Logger, LoggerOptions, SpanArgs, SpanType, WithSpan};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{
    ChatCompletionRequest, ChatMessage, EmbeddingRequest, OpenAiClient, ResponseRequest, Tool,
};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// The model client: the real endpoint, or the in-process mock (kept alive
/// by the returned handle).
async fn model_client() -> Result<(OpenAiClient, String, Option<MockOpenAi>), Error> {
    if set("OPENAI_API_KEY") {
        let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
        return Ok((OpenAiClient::from_env()?, model, None));
    }
    let mock = MockOpenAi::start().await?;
    println!(
        "OPENAI_API_KEY not set: using a mock OpenAI server at {}",
        mock.url()
    );
    let client = mock.client_builder().build()?;
    Ok((client, "gpt-4o-mini".into(), Some(mock)))
}

/// The Braintrust logger: the real service, or an in-process dev server.
fn braintrust_logger() -> Result<(Logger, Option<DevServer>), Error> {
    let session = braintrust::local::init_logger_or_local(
        LoggerOptions::new().project("braintrust-rust-examples"),
    )?;
    Ok((session.logger, session.server))
}

fn get_weather(location: &str) -> serde_json::Value {
    json!({"location": location, "temperature_c": 18, "sky": "sunny"})
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (client, model, _mock) = model_client().await?;
    let (logger, devserver) = braintrust_logger()?;
    // Clients trace by default; `wrap` reads like the other SDKs' wrap_openai.
    let client = braintrust_openai::wrap(client);

    let question = "What's the weather in Paris?";
    let root = logger.start_span(SpanArgs::new().name("answer_question"));
    root.log(Event::new().input(json!({"question": question})))?;

    let answer = async {
        let weather_tool = Tool::function(
            "get_weather",
            "Current weather for a city",
            json!({"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}),
        );
        let mut messages = vec![
            ChatMessage::system("Answer briefly. Use the tools you have."),
            ChatMessage::user(question),
        ];
        // 1. The model asks for a tool call (a `Chat Completion` llm span).
        let first = client
            .chat()
            .create(
                ChatCompletionRequest::new(&model, messages.clone())
                    .tools(vec![weather_tool.clone()])
                    .temperature(0.0),
            )
            .await?;
        messages.push(first.choices[0].message.to_request_message());
        // 2. Run each tool in its own `tool` span, under the current span.
        for call in first.tool_calls() {
            let span = braintrust::current_span().start_span(
                SpanArgs::new()
                    .name(call.function.name.clone())
                    .span_type(SpanType::Tool),
            );
            let args: serde_json::Value = call.function.parse_arguments().unwrap_or_default();
            let result = get_weather(args["location"].as_str().unwrap_or("Paris"));
            span.log(Event::new().input(args).output(result.clone()))?;
            span.end();
            messages.push(ChatMessage::tool(&call.id, result.to_string()));
        }
        // 3. The final answer (another `Chat Completion` span).
        let reply = client
            .chat()
            .create(ChatCompletionRequest::new(&model, messages).tools(vec![weather_tool]))
            .await?;
        Ok::<_, Error>(reply.text().unwrap_or_default().to_string())
    }
    .in_span(root.clone())
    .await?;
    println!("answer: {answer}");

    // An `Embedding` span (the vector is not logged) and an
    // `openai.responses.create` span, also under the root.
    let embedding_model =
        std::env::var("OPENAI_EMBEDDING_MODEL").unwrap_or_else(|_| "text-embedding-3-small".into());
    async {
        let e = client
            .embeddings()
            .create(EmbeddingRequest::new(embedding_model, answer.as_str()))
            .await?;
        println!(
            "embedding dimensions: {}",
            e.data.first().map_or(0, |d| d.embedding.len())
        );
        let r = client
            .responses()
            .create(ResponseRequest::new(&model, "Say hi in five words.").instructions("be nice"))
            .await?;
        println!("responses: {}", r.output_text());
        Ok::<_, Error>(())
    }
    .in_span(root.clone())
    .await?;

    root.log(Event::new().output(json!({"answer": answer})))?;
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
