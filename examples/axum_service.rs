//! An axum service traced with no per-handler plumbing: the tower layer opens
//! one span per request (named by route template), `tracing` spans
//! (`#[instrument]`, tower-http's `TraceLayer`, a GenAI-convention LLM
//! client) join the trace through the `tracing` layer, `#[traced]` handlers
//! nest, and a directly spawned traced call stays in its request's trace.
//!
//! Without `BRAINTRUST_API_KEY` it logs to the in-process local server and
//! prints the stored trees:
//!
//! ```sh
//! cargo run --example axum_service --features tracing,tower
//! ```

use axum::routing::post;
use axum::{Json, Router};
use braintrust::tower::SpanLayer;
use braintrust::tracing_layer::BraintrustLayer;
use braintrust::{traced, LoggerOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::instrument;
use tracing_subscriber::prelude::*;

#[derive(Deserialize)]
struct Ask {
    question: String,
}

/// The handler: a `#[traced]` span under the request's.
#[traced]
async fn ask(Json(req): Json<Ask>) -> Json<Value> {
    let context = retrieve(&req.question).await;
    // Spawned directly: the call notes the request's span.
    let audit = tokio::spawn(audit(req.question.clone()));
    let answer = complete(&req.question, &context).await;
    let _ = audit.await;
    Json(json!({ "answer": answer }))
}

/// Already instrumented with `tracing`: recorded as is.
#[instrument(skip_all, fields(input = %question))]
async fn retrieve(question: &str) -> String {
    format!("notes about {question}")
}

#[traced(type = "tool")]
async fn audit(question: String) -> usize {
    question.len()
}

/// A model client instrumented with the OpenTelemetry GenAI conventions:
/// an `llm` span with messages, model and token metrics.
#[instrument(
    name = "chat stand-in-model",
    skip_all,
    fields(
        gen_ai.system = "stand-in",
        gen_ai.request.model = "stand-in-model",
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    )
)]
async fn complete(question: &str, context: &str) -> String {
    tracing::info!(name: "gen_ai.system.message", content = context);
    tracing::info!(name: "gen_ai.user.message", content = question);
    let answer = format!("You asked: {question}");
    tracing::info!(name: "gen_ai.choice", index = 0, finish_reason = "stop", content = answer.as_str());
    let span = tracing::Span::current();
    span.record("gen_ai.usage.input_tokens", 9u64);
    span.record("gen_ai.usage.output_tokens", 4u64);
    answer
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session =
        braintrust::local::init_logger_or_local(LoggerOptions::new().project("axum-service"))?;
    tracing_subscriber::registry()
        .with(BraintrustLayer::new())
        .try_init()?;

    let app = Router::new()
        .route("/ask", post(ask))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(SpanLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ask", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let ok = client
        .post(&url)
        .json(&json!({"question": "what is tracing?"}))
        .send()
        .await?;
    println!("valid request -> {} {}", ok.status(), ok.text().await?);
    let bad = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await?;
    println!("invalid body  -> {} {}", bad.status(), bad.text().await?);

    match tokio::task::spawn_blocking(move || session.traces()).await?? {
        Some(tree) => println!("\nStored traces:\n{tree}"),
        None => println!("Logged to Braintrust project \"axum-service\"."),
    }
    Ok(())
}
