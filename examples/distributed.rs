//! Distributed tracing: one trace across a client and a server.
//!
//! Both run in this program on loopback, each with its own backend state as
//! two processes would have. The client's span calls the server twice:
//!
//! * the W3C way: `span.inject(&mut headers)` writes `traceparent` and the
//!   `braintrust.parent` baggage member, and the server continues with
//!   `braintrust::extract(&headers)` → `SpanArgs::parent(ctx)`;
//! * the slug way: `span.export()` travels in an `x-bt-parent` header and the
//!   server continues with `SpanArgs::parent(slug)`.
//!
//! With `BRAINTRUST_API_KEY` set it logs to Braintrust and prints a link to
//! the trace. Without it, it logs to the local Braintrust-compatible server
//! in-process and prints the single trace tree stored there:
//!
//! ```sh
//! cargo run --example distributed
//! ```

use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use braintrust::{
    current_span, Config, Event, Logger, LoggerOptions, Span, SpanArgs, SpanType, WithSpan,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::json;

const PROJECT: &str = "Distributed example";

/// The server's work, in whatever span is current.
async fn look_up(question: &str) -> String {
    let span = current_span().start_span(SpanArgs::new().name("look_up").span_type(SpanType::Tool));
    let answer = if question.contains("capital") {
        "Paris"
    } else {
        "42"
    };
    span.log(Event::new().input(question).output(answer))
        .expect("valid event");
    span.end();
    answer.to_string()
}

/// Runs `body` in a server span started under `args`' parent, if any.
async fn serve_in_span(logger: &Logger, args: SpanArgs, question: String) -> String {
    let span = logger.start_span(args.event(Event::new().input(question.as_str())));
    let answer = look_up(&question).in_span(span.clone()).await;
    span.log(Event::new().output(answer.as_str()))
        .expect("valid event");
    span.end();
    answer
}

/// `POST /w3c`: continues the trace from `traceparent` + `baggage`.
async fn w3c_handler(AxState(logger): AxState<Logger>, headers: HeaderMap, body: String) -> String {
    let mut args = SpanArgs::new().name("server: /w3c");
    // No (valid) traceparent: a new trace.
    if let Some(ctx) = braintrust::extract(&headers) {
        args = args.parent(ctx);
    }
    serve_in_span(&logger, args, body).await
}

/// `POST /slug`: continues the trace from the exported span in `x-bt-parent`.
async fn slug_handler(
    AxState(logger): AxState<Logger>,
    headers: HeaderMap,
    body: String,
) -> String {
    let slug = headers
        .get("x-bt-parent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // An empty or unusable slug means "no parent": a new trace.
    let args = SpanArgs::new().name("server: /slug").parent(slug);
    serve_in_span(&logger, args, body).await
}

/// The client: one span, two calls to the server.
async fn client(logger: &Logger, base: &str) -> Result<Span, Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    let root = logger.start_span(
        SpanArgs::new()
            .name("client: ask twice")
            .event(Event::new().input(json!({"questions": 2}))),
    );
    let answers = async {
        let span = current_span();
        // 1. W3C trace context.
        let mut headers = reqwest::header::HeaderMap::new();
        span.inject(&mut headers);
        println!(
            "W3C headers sent:\n  traceparent: {}\n  baggage: {}",
            headers["traceparent"].to_str().unwrap_or(""),
            headers["baggage"].to_str().unwrap_or("")
        );
        let a = http
            .post(format!("{base}/w3c"))
            .headers(headers)
            .body("What is the capital of France?")
            .send()
            .await?
            .text()
            .await?;
        // 2. The exported slug in a header.
        let slug = span.export();
        println!("x-bt-parent sent: {slug}");
        let b = http
            .post(format!("{base}/slug"))
            .header("x-bt-parent", slug)
            .body("What is six times seven?")
            .send()
            .await?
            .text()
            .await?;
        Ok::<_, reqwest::Error>(vec![a, b])
    }
    .in_span(root.clone())
    .await?;
    root.log(Event::new().output(json!(answers)))
        .expect("valid event");
    root.end();
    Ok(root)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without an account, run the local server in-process and log there.
    let local = if std::env::var("BRAINTRUST_API_KEY").is_ok() {
        None
    } else {
        let server = DevServer::start(DevServerConfig::default()).await?;
        println!(
            "No BRAINTRUST_API_KEY: logging to a local Braintrust-compatible server at {}\n",
            server.url()
        );
        Some(server)
    };
    // One backend state per "process".
    let new_logger = || -> Result<Logger, braintrust::Error> {
        let config = match &local {
            Some(server) => Config::from_env().api_key("local").app_url(server.url()),
            None => Config::from_env(),
        };
        let state = braintrust::State::new(config)?;
        braintrust::init_logger(LoggerOptions::new().project(PROJECT).state(state))
    };
    let client_logger = new_logger()?;
    let server_logger = new_logger()?;

    // The server.
    let app = Router::new()
        .route("/w3c", post(w3c_handler))
        .route("/slug", post(slug_handler))
        .with_state(server_logger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let root = client(&client_logger, &base).await?;

    // Each "process" flushes its own spans.
    server_logger.flush_async().await?;
    client_logger.flush_async().await?;

    match &local {
        Some(server) => {
            let traces = server.render_all_traces();
            println!("\nThe single trace stored by the server:\n{traces}");
            let roots = server
                .rows()
                .iter()
                .filter(|r| r["span_parents"].is_null())
                .count();
            assert_eq!(roots, 1, "one trace");
        }
        None => println!("\nLogged one trace to Braintrust project {PROJECT:?}."),
    }
    println!("Link to the trace: {}", root.link());
    Ok(())
}
