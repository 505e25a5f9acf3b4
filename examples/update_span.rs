//! Updating a span after it was logged, and linking to it.
//!
//! A request starts in one place and finishes later (a callback, another
//! worker, another service). The span is logged and flushed when the request
//! starts; when the result arrives it is added to the same row with
//! `logger.update_span(id, …)` (same logger) or `braintrust::update_span(slug,
//! …)` (anywhere: the exported slug names the container too). Update only
//! after the original rows were flushed, so the two cannot trample each other.
//!
//! ```sh
//! cargo run --example update_span
//! ```

use braintrust::{Config, Event, LoggerOptions, SpanArgs};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let local = if std::env::var("BRAINTRUST_API_KEY").is_ok() {
        None
    } else {
        let server = DevServer::start_blocking(DevServerConfig::default())?;
        println!(
            "No BRAINTRUST_API_KEY: logging to a local Braintrust-compatible server at {}\n",
            server.url()
        );
        Some(server)
    };
    let config = match &local {
        Some(server) => Config::from_env().api_key("local").app_url(server.url()),
        None => Config::from_env(),
    };
    let state = braintrust::State::new(config)?;
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("Update span example")
            .state(state.clone()),
    )?;

    // Start the request: log what is known now and keep the span's handles.
    let span = logger.start_span(
        SpanArgs::new()
            .name("start_request")
            .event(Event::new().input(json!({"document": "report.pdf"}))),
    );
    let id = span.id();
    let exported = span.export();
    span.end();
    logger.flush()?;

    // Later, with the same logger: by row id.
    logger.update_span(&id, Event::new().output("summary: all good"))?;
    // Or from anywhere that has the exported slug.
    braintrust::update_span(
        &exported,
        Event::new()
            .score("reviewed", 1.0)
            .metadata(json!({"reviewer": "r1"})),
        Some(&state),
    )?;
    logger.flush()?;

    // Deep links: `link()` needs no network; `permalink(slug)` works from the
    // slug alone (it may log in and look the project up).
    println!("span.link():          {}", span.link());
    println!(
        "permalink(exported):  {}",
        braintrust::permalink(&exported, Some(&state))
    );

    if let Some(server) = &local {
        let row = server.row(&id).expect("the row");
        println!(
            "\nThe updated row: output={} scores={} metadata={}",
            row["output"], row["scores"], row["metadata"]
        );
        println!("\n{}", server.render_all_traces());
    }
    Ok(())
}
