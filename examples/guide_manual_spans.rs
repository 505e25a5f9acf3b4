//! "Manually managing spans" from the Customize traces guide: when a span
//! cannot be tied to one block of code, start it, keep the handle, log to it
//! from several callbacks, and end it yourself.
//!
//! Run it with `cargo run --example guide_manual_spans` (offline unless
//! `BRAINTRUST_API_KEY` is set; then it prints the stored trace tree).

use std::collections::HashMap;
use std::sync::OnceLock;

use braintrust::{start_span, traced, Event, LoggerOptions, Span, SpanArgs, WithSpan};
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
async fn compute_output(system_prompt: &str, user_input: &str) -> String {
    let request = ChatCompletionRequest::new(
        "gpt-3.5-turbo",
        vec![
            ChatMessage::system(system_prompt),
            ChatMessage::user(user_input),
        ],
    );
    match client().chat().create(request).await {
        Ok(reply) => reply.text().unwrap_or_default().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

struct LiveSpan {
    span: Span,
    input: String,
}

#[derive(Default)]
struct MyHandler {
    live_spans: HashMap<String, LiveSpan>,
}

impl MyHandler {
    fn on_request_start(&mut self, request_id: &str, input: &str, expected: &str) {
        let span = start_span(
            SpanArgs::new()
                .name(request_id.to_string())
                .event(Event::new().input(input).expected(expected)),
        );
        self.live_spans.insert(
            request_id.into(),
            LiveSpan {
                span,
                input: input.into(),
            },
        );
    }

    async fn on_get_output(&self, request_id: &str, system_prompt: &str) {
        let LiveSpan { span, input } = &self.live_spans[request_id];
        // Run the traced call in the request's span, so it becomes its child.
        let output = compute_output(system_prompt, input)
            .in_span(span.clone())
            .await;
        span.log(Event::new().output(output)).expect("valid event");
    }

    fn on_request_end(&mut self, request_id: &str, metadata: Value) {
        if let Some(LiveSpan { span, .. }) = self.live_spans.remove(request_id) {
            span.log(Event::new().metadata(metadata))
                .expect("metadata is an object");
            span.end();
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session = braintrust::local::init_logger_or_local(
        LoggerOptions::new().project("My long-running project"),
    )?;
    let _mock = start_client().await?;

    // Two requests whose callbacks interleave.
    let mut handler = MyHandler::default();
    handler.on_request_start("req-1", "What is 1+1?", "2");
    handler.on_request_start("req-2", "What is 2+2?", "4");
    handler
        .on_get_output("req-2", "You are a calculator.")
        .await;
    handler
        .on_get_output("req-1", "You are a calculator.")
        .await;
    handler.on_request_end("req-1", json!({"user": "alice"}));
    handler.on_request_end("req-2", json!({"user": "bob"}));

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
