//! The quickstart: a small traced program with a root span, nested children,
//! an error, scores and metrics.
//!
//! With `BRAINTRUST_API_KEY` set it logs to Braintrust. Without it, it starts
//! the local Braintrust-compatible server in-process, logs there, and prints
//! the stored trace tree:
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use braintrust::{current_span, traced, Event, LoggerOptions};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("no documents for {0:?}")]
struct NoDocuments(String);

/// A retrieval step: input and output are captured by `#[traced]`.
#[traced(type = "tool")]
fn retrieve(question: &str) -> Vec<&'static str> {
    let docs = if question.contains("1+1") {
        vec!["arithmetic.md"]
    } else {
        vec![]
    };
    // Scores go on the current span without passing it around.
    current_span()
        .log(Event::new().score("relevance", if docs.is_empty() { 0.0 } else { 0.8 }))
        .ok();
    docs
}

/// A model call: an `llm` span with messages, parameters and token metrics.
/// An `Err` return is logged as the span's error and returned unchanged.
#[traced(type = "llm", name = "answer", skip(docs))]
fn answer(question: &str, docs: &[&str]) -> Result<String, NoDocuments> {
    current_span()
        .log(
            Event::new()
                .input(json!([{"role": "user", "content": question}]))
                .metadata(json!({"model": "stand-in-model", "temperature": 0}))
                .metrics([
                    ("prompt_tokens", 12.0),
                    ("completion_tokens", 1.0),
                    ("tokens", 13.0),
                ]),
        )
        .ok();
    if docs.is_empty() {
        return Err(NoDocuments(question.to_string()));
    }
    Ok("2".to_string())
}

/// The request handler: the root span of each trace.
#[traced(type = "task")]
fn handle_request(question: &str) -> String {
    let docs = retrieve(question);
    let output = answer(question, &docs).unwrap_or_else(|e| format!("sorry: {e}"));
    current_span()
        .log(
            Event::new()
                .score("answered", !docs.is_empty())
                .metadata(json!({"user": 7})),
        )
        .ok();
    output
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session =
        braintrust::local::init_logger_or_local(LoggerOptions::new().project("Quickstart"))?;

    for question in ["What is 1+1?", "What is the meaning of life?"] {
        println!("{question} -> {}", handle_request(question));
    }

    match session.traces()? {
        Some(tree) => {
            println!("\nStored traces (name [type] duration, input and output previews):\n{tree}");
            // The in-process server is gone when this program exits: say how to keep traces.
            println!("These traces live only as long as this program. To keep and browse them:");
            println!("  cargo run -p braintrust-devserver -- --db traces.db --port 8000");
            println!(
                "  # open http://127.0.0.1:8000/ for the trace viewer, then in another shell:"
            );
            println!("  export BRAINTRUST_API_KEY=dev-key");
            println!("  export BRAINTRUST_APP_URL=http://127.0.0.1:8000");
            println!("  export BRAINTRUST_API_URL=http://127.0.0.1:8000");
            println!("  cargo run --example quickstart");
        }
        None => println!("Logged to Braintrust project \"Quickstart\"."),
    }
    Ok(())
}
