//! Running traced functions in a thread pool: the Rust port of the guide's
//! `TracedThreadPoolExecutor` example.
//!
//! A span is current per thread (and per task), so work handed to a plain
//! thread pool would lose it. `TracedThreadPool::submit` captures the
//! submitter's span and runs the job in it, so `addition` and
//! `multiplication` below are children of `main` although they run on pool
//! threads.
//!
//! Run it with `cargo run --example thread_pool`. With `BRAINTRUST_API_KEY`
//! set it logs to Braintrust (project `math`); otherwise it starts a local
//! devserver in-process and prints the trace tree the server stored.

use braintrust::{start_span, Event, LoggerOptions, SpanArgs, SpanType, TracedThreadPool};
use serde_json::json;

/// Runs `f` in a new span named `name` under the current span: what
/// `@braintrust.traced` does in the Python guide.
fn traced<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let span = start_span(SpanArgs::new().name(name).span_type(SpanType::Function));
    let out = span.in_scope(f);
    span.end();
    out
}

/// Stands in for `client.chat.completions.create(...)` on a wrapped OpenAI
/// client: logs an `llm` span with the messages and answers locally.
fn chat_completion(model: &str, question: &str) -> String {
    let span = start_span(
        SpanArgs::new()
            .name("Chat Completion")
            .span_type(SpanType::Llm)
            .event(
                Event::new()
                    .input(json!([{"role": "user", "content": question}]))
                    .metadata(json!({"model": model, "provider": "local stand-in"})),
            ),
    );
    let answer = match question {
        "What is 1+1?" => "2",
        "What is 1*1?" => "1",
        _ => "I don't know",
    };
    let logged = span.log(
        Event::new()
            .output(json!([{"role": "assistant", "content": answer}]))
            .metrics([
                ("prompt_tokens", 14.0),
                ("completion_tokens", 1.0),
                ("tokens", 15.0),
            ]),
    );
    if let Err(e) = logged {
        eprintln!("could not log the completion: {e}");
    }
    span.end();
    answer.to_string()
}

fn addition() -> String {
    traced("addition", || {
        chat_completion("gpt-4o-mini", "What is 1+1?")
    })
}

fn multiplication() -> String {
    traced("multiplication", || {
        chat_completion("gpt-4o-mini", "What is 1*1?")
    })
}

fn main_traced() {
    traced("main", || {
        // Leaving this scope drops the pool, which waits for its jobs: the
        // `with TracedThreadPoolExecutor(max_workers=2) as e:` block.
        let pool = TracedThreadPool::new(2);
        let a = pool.submit(addition);
        let m = pool.submit(multiplication);
        match (a.join(), m.join()) {
            (Ok(a), Ok(m)) => println!("1+1 = {a}, 1*1 = {m}"),
            _ => eprintln!("Failed: a job panicked"),
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session = braintrust::local::init_logger_or_local(LoggerOptions::new().project("math"))?;

    main_traced();

    session.logger.flush()?;
    if let Some(server) = &session.server {
        let tree = server.render_all_traces();
        print!("{tree}");
        // Checked in CI: one trace, main > {addition, multiplication} > llm.
        let rows = server.rows();
        let name_of = |id: &serde_json::Value| {
            rows.iter()
                .find(|r| &r["span_id"] == id)
                .and_then(|r| r["span_attributes"]["name"].as_str())
                .unwrap_or("?")
                .to_string()
        };
        let mut edges: Vec<String> = rows
            .iter()
            .map(|r| {
                let parent = r["span_parents"]
                    .get(0)
                    .map_or_else(|| "-".to_string(), name_of);
                format!(
                    "{parent}>{}",
                    r["span_attributes"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        edges.sort();
        let want = [
            "->main",
            "addition>Chat Completion",
            "main>addition",
            "main>multiplication",
            "multiplication>Chat Completion",
        ];
        if edges != want {
            return Err(format!("unexpected trace tree: {edges:?}").into());
        }
    }
    Ok(())
}
