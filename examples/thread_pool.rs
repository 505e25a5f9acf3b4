//! Running traced functions in a thread pool: the Rust port of the guide's
//! `TracedThreadPoolExecutor` example.
//!
//! A span is current per thread (and per task), so work handed to a plain
//! thread pool would lose it. `TracedThreadPool::submit` captures the
//! submitter's span and runs the job in it, so `addition` and
//! `multiplication` below are children of `main` although they run on pool
//! threads, and so are the wrapped OpenAI client's `Chat Completion` spans:
//! sync code calls the async client with a runtime handle's `block_on`.
//!
//! Run it with `cargo run --example thread_pool`. With `BRAINTRUST_API_KEY`
//! set it logs to Braintrust (project `math`); otherwise it starts a local
//! devserver in-process and prints the trace tree the server stored.

use braintrust::{start_span, LoggerOptions, SpanArgs, SpanType, TracedThreadPool};
use braintrust_openai::mock::MockOpenAi;
use braintrust_openai::{ChatCompletionRequest, ChatMessage, OpenAiClient};

/// Runs `f` in a new span named `name` under the current span: what
/// `@braintrust.traced` does in the Python guide.
fn traced<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let span = start_span(SpanArgs::new().name(name).span_type(SpanType::Function));
    let out = span.in_scope(f);
    span.end();
    out
}

/// The model: a wrapped OpenAI client and the Tokio runtime its calls run
/// on. Jobs on pool threads are plain sync code; each call `block_on`s on
/// the job's own thread, where the job's span is current, so the
/// `Chat Completion` span nests under it.
#[derive(Clone)]
struct Llm {
    rt: tokio::runtime::Handle,
    client: OpenAiClient,
}

impl Llm {
    /// `client.chat.completions.create(...)` of the guide.
    fn chat_completion(&self, model: &str, question: &str) -> String {
        let request = ChatCompletionRequest::new(model, vec![ChatMessage::user(question)]);
        match self.rt.block_on(self.client.chat().create(request)) {
            Ok(reply) => reply.text().unwrap_or_default().to_string(),
            Err(e) => format!("error: {e}"),
        }
    }
}

fn addition(llm: &Llm) -> String {
    traced("addition", || {
        llm.chat_completion("gpt-4o-mini", "What is 1+1?")
    })
}

fn multiplication(llm: &Llm) -> String {
    traced("multiplication", || {
        llm.chat_completion("gpt-4o-mini", "What is 1*1?")
    })
}

fn main_traced(llm: &Llm) {
    traced("main", || {
        // Leaving this scope drops the pool, which waits for its jobs: the
        // `with TracedThreadPoolExecutor(max_workers=2) as e:` block.
        let pool = TracedThreadPool::new(2);
        let a = pool.submit({
            let llm = llm.clone();
            move || addition(&llm)
        });
        let m = pool.submit({
            let llm = llm.clone();
            move || multiplication(&llm)
        });
        match (a.join(), m.join()) {
            (Ok(a), Ok(m)) => println!("1+1 = {a}, 1*1 = {m}"),
            _ => eprintln!("Failed: a job panicked"),
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session = braintrust::local::init_logger_or_local(LoggerOptions::new().project("math"))?;

    // OpenAI when `OPENAI_API_KEY` is set, else a mock server in this process
    // (whose canned answer is "Paris.", whatever the question).
    let rt = tokio::runtime::Runtime::new()?;
    let (client, _mock) = if std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty()) {
        (OpenAiClient::from_env()?, None)
    } else {
        let mock = rt.block_on(MockOpenAi::start())?;
        let client = mock.client_builder().build()?;
        (client, Some(mock))
    };
    let llm = Llm {
        rt: rt.handle().clone(),
        client: braintrust_openai::wrap(client),
    };

    main_traced(&llm);

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
