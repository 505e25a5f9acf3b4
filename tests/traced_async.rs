//! `#[traced]` on async code, against the local server: the span stays
//! current across `.await`, nesting, panics, cancellation, functions that
//! return futures, `#[async_trait]`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use braintrust::{
    current_span, init_logger, traced_sync, Config, Event, LoggerOptions, Span, SpanArgs, State,
    WithSpan,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::{json, Value};

/// Runs the future under a root span of a fresh server's logger, on a
/// multi-thread runtime, and returns the stored rows.
fn rows_of<F: Future<Output = ()> + Send + 'static>(f: impl FnOnce(Span) -> F) -> Rows {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project("traced-async").state(state)).unwrap();
    let root = logger.start_span(SpanArgs::new().name("test-root"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Spawned, so the body runs on the worker threads and may hop between them.
    let task = rt.spawn(f(root.clone()).in_span(root.clone()));
    rt.block_on(task).unwrap();
    root.end();
    logger.flush().unwrap();
    Rows(server.rows())
}

struct Rows(Vec<Value>);

impl Rows {
    fn named(&self, name: &str) -> &Value {
        let mut found = self
            .0
            .iter()
            .filter(|r| r["span_attributes"]["name"] == name);
        let row = found
            .next()
            .unwrap_or_else(|| panic!("no span named {name:?} in {:#?}", self.0));
        assert!(found.next().is_none(), "several spans named {name:?}");
        row
    }
    fn parent_name(&self, name: &str) -> &Value {
        let parents = self.named(name)["span_parents"]
            .as_array()
            .expect("a child span");
        assert_eq!(parents.len(), 1);
        let parent = self.0.iter().find(|r| r["span_id"] == parents[0]).unwrap();
        &parent["span_attributes"]["name"]
    }
}

async fn hop() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[braintrust::traced]
async fn pipeline(question: &str) -> String {
    hop().await;
    let answer = retrieve(question).await;
    hop().await;
    let n = count_words(&answer);
    current_span()
        .log(Event::new().metadata(json!({"words": n})))
        .unwrap();
    answer
}

#[braintrust::traced(type = "tool")]
async fn retrieve(query: &str) -> String {
    hop().await;
    // Still current after awaits, possibly on another thread.
    current_span()
        .log(Event::new().metadata(json!({"source": "memory"})))
        .unwrap();
    format!("docs about {query}")
}

#[braintrust::traced]
fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[derive(Debug)]
struct FetchError(String);
impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fetch failed: {}", self.0)
    }
}
impl std::error::Error for FetchError {}

#[braintrust::traced]
async fn fetch(id: u32) -> Result<String, FetchError> {
    hop().await;
    if id == 0 {
        return Err(FetchError("id 0".into()));
    }
    Ok(format!("item {id}"))
}

#[braintrust::traced]
async fn slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[braintrust::traced]
async fn slow_parent() -> u64 {
    slow(60_000).await
}

#[braintrust::traced]
async fn async_explode(code: u32) -> u32 {
    hop().await;
    if code > 0 {
        panic!("async kaboom {code}");
    }
    code
}

#[braintrust::traced]
fn later(x: u32) -> impl Future<Output = u32> {
    let y = x + 1;
    async move {
        hop().await;
        current_span()
            .log(Event::new().metadata(json!({"in": "later"})))
            .unwrap();
        y * 2
    }
}

#[braintrust::traced]
fn boxed(x: u32) -> Pin<Box<dyn Future<Output = u32> + Send>> {
    Box::pin(async move {
        hop().await;
        x + 100
    })
}

/// Logs `{"in": tag}` to the current span after an await, so a test sees
/// which span was current while the future ran.
async fn tagged(tag: &'static str, x: u32) -> u32 {
    hop().await;
    current_span()
        .log(Event::new().metadata(json!({ "in": tag })))
        .unwrap();
    x
}

// Boxed futures that are not an `async` block at the tail: recognized by
// the return type.
#[braintrust::traced]
fn pinned(x: u32) -> Pin<Box<dyn Future<Output = u32> + Send + 'static>> {
    let fut = tagged("pinned", x + 200);
    Box::pin(fut)
}

#[braintrust::traced]
fn box_future(x: u32) -> futures_util::future::BoxFuture<'static, u32> {
    futures_util::FutureExt::boxed(tagged("box_future", x + 300))
}

#[braintrust::traced]
fn local_box_future(x: u32) -> futures_util::future::LocalBoxFuture<'static, u32> {
    let value = std::rc::Rc::new(x + 400);
    futures_util::FutureExt::boxed_local(async move {
        current_span()
            .log(Event::new().metadata(json!({"in": "local_box_future"})))
            .unwrap();
        *value
    })
}

#[braintrust::traced]
fn ready_later(x: u32) -> impl Future<Output = Option<u32>> + Send {
    std::future::ready((x > 5).then_some(x))
}

#[async_trait::async_trait]
trait Store {
    async fn get(&self, key: &str) -> Option<String>;
}

struct Mem;

#[async_trait::async_trait]
impl Store for Mem {
    #[braintrust::traced(name = "Mem::get")]
    async fn get(&self, key: &str) -> Option<String> {
        hop().await;
        (key == "a").then(|| "A".to_string())
    }
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn futures_are_send() {
    assert_send(&pipeline("q"));
    assert_send(&fetch(1));
    assert_send(&later(1));
    assert_send(&Mem.get("a"));
}

#[test]
fn async_in_async_and_sync_in_async_nest_and_stay_current() {
    let rows = rows_of(|_| async {
        assert_eq!(pipeline("rust").await, "docs about rust");
    });
    assert_eq!(rows.parent_name("pipeline"), "test-root");
    assert_eq!(rows.parent_name("retrieve"), "pipeline");
    assert_eq!(rows.parent_name("count_words"), "pipeline");
    let p = rows.named("pipeline");
    assert_eq!(p["input"], json!({"question": "rust"}));
    assert_eq!(p["output"], "docs about rust");
    assert_eq!(p["metadata"], json!({"words": 3}));
    let r = rows.named("retrieve");
    assert_eq!(r["span_attributes"]["type"], "tool");
    assert_eq!(r["metadata"], json!({"source": "memory"}));
    assert_eq!(rows.named("count_words")["output"], json!(3));
}

#[test]
fn async_results() {
    let rows = rows_of(|_| async {
        assert_eq!(fetch(1).await.unwrap(), "item 1");
        assert_eq!(fetch(0).await.unwrap_err().0, "id 0");
    });
    let ok = rows
        .0
        .iter()
        .find(|r| r["input"] == json!({"id": 1}))
        .unwrap();
    assert_eq!(ok["output"], "item 1");
    let err = rows
        .0
        .iter()
        .find(|r| r["input"] == json!({"id": 0}))
        .unwrap();
    assert_eq!(err["error"], "fetch failed: id 0");
    assert!(err["output"].is_null());
}

#[test]
fn cancellation_by_timeout_and_select_ends_the_span() {
    let rows = rows_of(|_| async {
        let r = tokio::time::timeout(Duration::from_millis(20), slow_parent()).await;
        assert!(r.is_err());
        tokio::select! {
            _ = slow(60_001) => unreachable!(),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        // Completed futures are not marked.
        assert_eq!(slow(1).await, 1);
    });
    let parent = rows.named("slow_parent");
    assert_eq!(parent["error"], "cancelled");
    assert!(parent["metrics"]["end"].is_number());
    let child = rows
        .0
        .iter()
        .find(|r| r["input"] == json!({"ms": 60_000}))
        .unwrap();
    assert_eq!(child["error"], "cancelled");
    assert!(child["metrics"]["end"].is_number());
    let selected = rows
        .0
        .iter()
        .find(|r| r["input"] == json!({"ms": 60_001}))
        .unwrap();
    assert_eq!(selected["error"], "cancelled");
    let done = rows
        .0
        .iter()
        .find(|r| r["input"] == json!({"ms": 1}))
        .unwrap();
    assert!(done["error"].is_null());
    assert_eq!(done["output"], json!(1));
}

#[test]
fn async_panics_are_logged_and_keep_unwinding() {
    let rows = rows_of(|root| async move {
        let handle = tokio::spawn(async_explode(3).in_span(root));
        let err = handle.await.unwrap_err();
        let payload = err.into_panic();
        assert_eq!(payload.downcast_ref::<String>().unwrap(), "async kaboom 3");
    });
    let r = rows.named("async_explode");
    assert_eq!(r["error"], "panicked: async kaboom 3");
    assert!(r["metrics"]["end"].is_number());
    assert_eq!(rows.parent_name("async_explode"), "test-root");
}

#[test]
fn functions_returning_futures_trace_the_future() {
    let rows = rows_of(|_| async {
        assert_eq!(later(1).await, 4);
        assert_eq!(boxed(1).await, 101);
        assert_eq!(ready_later(3).await, None);
        assert_eq!(Mem.get("a").await.as_deref(), Some("A"));
        assert_eq!(pinned(1).await, 201);
        assert_eq!(box_future(1).await, 301);
        // Not `Send`: polled without crossing an await of this task.
        let local = futures_util::FutureExt::now_or_never(local_box_future(1));
        assert_eq!(local, Some(401));
    });
    // The span covers the boxed future: it logs the future's output and is
    // current while the future runs.
    for (name, output) in [
        ("pinned", 201),
        ("box_future", 301),
        ("local_box_future", 401),
    ] {
        let row = rows.named(name);
        assert_eq!(row["input"], json!({"x": 1}), "{name}");
        assert_eq!(row["output"], json!(output), "{name}");
        assert_eq!(row["metadata"], json!({ "in": name }), "{name}");
    }
    let l = rows.named("later");
    assert_eq!(l["input"], json!({"x": 1}));
    assert_eq!(l["output"], json!(4));
    assert_eq!(l["metadata"], json!({"in": "later"}));
    assert_eq!(rows.named("boxed")["output"], json!(101));
    let r = rows.named("ready_later");
    assert!(r["output"].is_null() && r.as_object().unwrap().contains_key("output"));
    let g = rows.named("Mem::get");
    assert_eq!(g["input"], json!({"key": "a"}));
    assert_eq!(g["output"], "A");
    // The call site (`caller_functionname` would be the caller's, unknowable).
    assert!(g["context"].get("caller_functionname").is_none());
    assert_eq!(rows.parent_name("Mem::get"), "test-root");
}

#[test]
fn closure_forms() {
    let rows = rows_of(|_| async {
        let out =
            braintrust::traced_async(SpanArgs::new().name("async closure"), |span| async move {
                let n = fetch(2).await.unwrap();
                span.log(Event::new().output(n.as_str())).unwrap();
                n
            })
            .await;
        assert_eq!(out, "item 2");
        let n = traced_sync(SpanArgs::new().name("sync closure"), |_| count_words("a b"));
        assert_eq!(n, 2);
    });
    assert_eq!(rows.named("async closure")["output"], "item 2");
    assert_eq!(rows.parent_name("fetch"), "async closure");
    assert_eq!(rows.parent_name("count_words"), "sync closure");
}

/// `context.caller_lineno` is where the traced function is called (as the
/// Python SDK records it), for an `async fn`, a sync function returning a
/// future, and an `#[async_trait]` method.
#[test]
fn caller_context_is_the_call_site() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = lines.clone();
    let rows = rows_of(|_| async move {
        #[rustfmt::skip]
        let (f, a) = (fetch(1), line!());
        #[rustfmt::skip]
        let (g, b) = (later(1), line!());
        #[rustfmt::skip]
        let (h, c) = (Mem.get("a"), line!());
        f.await.unwrap();
        g.await;
        h.await;
        l.lock().unwrap().extend([a, b, c]);
    });
    let lines = lines.lock().unwrap();
    for (name, line) in [
        ("fetch", lines[0]),
        ("later", lines[1]),
        ("Mem::get", lines[2]),
    ] {
        let ctx = &rows.named(name)["context"];
        assert_eq!(ctx["caller_lineno"], json!(line), "{name}: {ctx}");
        assert!(ctx["caller_filename"]
            .as_str()
            .unwrap()
            .ends_with("traced_async.rs"));
    }
}

// ----- handler outputs: axum's `Json` and the `output = ...` option -----

mod handlers {
    use axum::http::StatusCode;
    use axum::Json;
    use braintrust::traced;
    use serde::Serialize;

    #[derive(Serialize, Debug)]
    pub struct Answer {
        pub answer: String,
        pub docs: Vec<String>,
    }

    pub fn answer(q: &str) -> Answer {
        Answer {
            answer: format!("Echo: {q}"),
            docs: vec!["d1".into()],
        }
    }

    #[traced]
    pub async fn json(q: String) -> Json<Answer> {
        Json(answer(&q))
    }

    #[traced]
    pub async fn result_json(q: String) -> Result<Json<Answer>, (StatusCode, String)> {
        if q.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "empty question".into()));
        }
        Ok(Json(answer(&q)))
    }

    #[traced]
    pub async fn created(q: String) -> (StatusCode, Json<Answer>) {
        (StatusCode::CREATED, Json(answer(&q)))
    }

    /// Any other wrapper: say what to log. The closure gets a reference to
    /// the return value (the `Ok` value of a `Result`) and may borrow from it.
    pub struct Html(pub String, pub Answer);

    #[traced(output = |page| &page.1)]
    pub async fn page(q: String) -> Html {
        let a = answer(&q);
        Html(format!("<p>{}</p>", a.answer), a)
    }

    fn first_doc(r: &Answer) -> Option<&str> {
        r.docs.first().map(String::as_str)
    }

    #[traced(output = first_doc)]
    pub fn doc_only(q: &str) -> Result<Answer, String> {
        Ok(answer(q))
    }
}

#[test]
fn handler_outputs_log_the_inner_json_value() {
    let rows = rows_of(|_| async {
        let _ = handlers::json("hi".into()).await;
        let _ = handlers::result_json("hi".into()).await.unwrap();
        handlers::result_json(String::new()).await.unwrap_err();
        let _ = handlers::created("hi".into()).await;
        assert_eq!(handlers::page("hi".into()).await.0, "<p>Echo: hi</p>");
        handlers::doc_only("hi").unwrap();
    });
    let answer = json!({"answer": "Echo: hi", "docs": ["d1"]});
    assert_eq!(rows.named("json")["output"], answer);
    assert_eq!(rows.named("created")["output"], answer);
    assert_eq!(rows.named("page")["output"], answer);
    assert_eq!(rows.named("doc_only")["output"], "d1");
    let results: Vec<&Value> = rows
        .0
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "result_json")
        .collect();
    assert_eq!(results.len(), 2);
    assert!(results.iter().any(|r| r["output"] == answer));
    assert!(results
        .iter()
        .any(|r| r["error"] == "(400, \"empty question\")"));
}
