//! The quickstart: a small traced program.
//!
//! With `BRAINTRUST_API_KEY` set it logs to Braintrust. Without it, it starts
//! the local Braintrust-compatible server in-process, logs there, and prints
//! the stored trace tree, so the whole path can be seen working offline:
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use braintrust::{current_span, Event, LoggerOptions, SpanArgs, SpanType};
use serde_json::json;

fn retrieve(question: &str) -> Vec<&'static str> {
    let span =
        current_span().start_span(SpanArgs::new().name("retrieve").span_type(SpanType::Tool));
    let _in = span.enter();
    let docs = if question.contains("1+1") {
        vec!["arithmetic.md"]
    } else {
        vec![]
    };
    span.log(
        Event::new()
            .input(question)
            .output(json!(docs))
            .score("relevance", 0.8),
    )
    .expect("valid event");
    docs
}

fn answer(question: &str, docs: &[&str]) -> Result<String, String> {
    let span = current_span().start_span(SpanArgs::new().name("answer").span_type(SpanType::Llm));
    let _in = span.enter();
    let messages = json!([{"role": "user", "content": question}]);
    let result = if docs.is_empty() {
        Err(format!("no documents for {question:?}"))
    } else {
        Ok("2".to_string())
    };
    let event = Event::new()
        .input(messages)
        .metadata(json!({"model": "stand-in-model", "temperature": 0}))
        .metrics([
            ("prompt_tokens", 12.0),
            ("completion_tokens", 1.0),
            ("tokens", 13.0),
        ]);
    let event = match &result {
        Ok(a) => event.output(a.as_str()),
        Err(e) => event.error(e.as_str()),
    };
    span.log(event).expect("valid event");
    result
}

fn handle_request(logger: &braintrust::Logger, question: &str) {
    let root = logger.start_span(SpanArgs::new().name("handle_request"));
    let _in = root.enter();
    root.log(
        Event::new()
            .input(json!({"question": question}))
            .metadata(json!({"user": 7})),
    )
    .expect("valid event");
    let docs = retrieve(question);
    let output = answer(question, &docs).unwrap_or_else(|e| format!("sorry: {e}"));
    root.log(
        Event::new()
            .output(output.as_str())
            .score("answered", !docs.is_empty()),
    )
    .expect("valid event");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without an account, run the local server in-process and log there.
    let local = if std::env::var("BRAINTRUST_API_KEY").is_ok() {
        None
    } else {
        let server = braintrust_devserver::DevServer::start_blocking(Default::default())?;
        println!(
            "No BRAINTRUST_API_KEY: logging to a local Braintrust-compatible server at {}",
            server.url()
        );
        Some(server)
    };
    let options = LoggerOptions::new().project("Quickstart");
    let logger = match &local {
        Some(server) => {
            let state = braintrust::State::new(
                braintrust::Config::from_env()
                    .api_key("local")
                    .app_url(server.url()),
            )?;
            braintrust::init_logger(options.state(state).set_current(true))?
        }
        None => braintrust::init_logger(options)?,
    };

    handle_request(&logger, "What is 1+1?");
    handle_request(&logger, "What is the meaning of life?");
    logger.flush()?;

    match &local {
        Some(server) => {
            println!("\nStored traces:\n{}", server.render_all_traces());
            println!(
                "(This server stops with the program. For one that keeps its data and serves the web \
                 viewer, run `cargo run -p braintrust-devserver -- --db bt.sqlite` and set \
                 BRAINTRUST_API_KEY, BRAINTRUST_APP_URL and BRAINTRUST_API_URL as it prints.)"
            );
        }
        None => {
            println!("Logged to Braintrust project \"Quickstart\".");
        }
    }
    Ok(())
}
