//! Which spawn forms keep work in the trace (the README's "Spawned work"
//! table), each asserted against the local server: a `#[traced] async fn`
//! notes the caller's span when it is *called*, so `tokio::spawn(f(x))`
//! nests; work whose traced call happens inside the new task starts a root
//! unless it is spawned through the SDK.
//!
//! One test: it makes its logger the process's current one.

use std::collections::HashMap;

use braintrust::{
    current_span, start_span, traced, traced_async, Config, LoggerOptions, SpanArgs, State,
    WithSpan,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::Value;

#[traced]
async fn fetch(tag: String) -> usize {
    tokio::task::yield_now().await;
    tag.len()
}

#[traced]
fn fetch_later(tag: String) -> impl std::future::Future<Output = usize> {
    async move { tag.len() }
}

// `unsafe` functions stay `async fn`: the span's parent is taken at the first poll.
#[traced]
async unsafe fn fetch_unsafe(tag: String) -> usize {
    tag.len()
}

// Another attribute macro below `#[traced]` may need to see `async`, so the
// function stays `async fn`: the span's parent is taken at the first poll.
#[traced]
#[tracing::instrument(skip_all)]
async fn fetch_instrumented(tag: String) -> usize {
    tag.len()
}

#[traced]
fn work(tag: String) -> usize {
    tag.len()
}

/// A method whose future holds `&self`: called before the spawn, as required.
struct Client {
    prefix: String,
}

impl Client {
    #[traced]
    async fn get(self: std::sync::Arc<Self>, tag: String) -> String {
        format!("{}{tag}", self.prefix)
    }
}

/// A trait default method with pattern, unused and `mut` parameters: the
/// rewritten `async fn` binds and keeps them as `async fn` does.
trait Job: Sized + Send + 'static {
    fn size(&self) -> usize;

    #[traced(name = "trait_default_method", skip(self))]
    async fn run(self, (a, b): (u8, u8), _unused: u8, mut extra: String) -> usize {
        extra.push('!');
        self.size() + usize::from(a) + usize::from(b) + extra.len()
    }
}

struct Three;

impl Job for Three {
    fn size(&self) -> usize {
        3
    }
}

#[test]
fn each_spawn_form_nests_or_starts_a_root_as_documented() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("spawn-forms")
            .state(state)
            .set_current(true),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request = start_span(SpanArgs::new().name("request"));
    let other = start_span(SpanArgs::new().name("other"));
    let other2 = other.clone();
    rt.block_on(
        async move {
            let client = std::sync::Arc::new(Client {
                prefix: "p-".into(),
            });
            // Nest: the traced call happens here, under `request`.
            tokio::spawn(fetch("spawn_async_fn".into())).await.unwrap();
            tokio::spawn(fetch_later("spawn_fn_returning_future".into()))
                .await
                .unwrap();
            tokio::spawn(traced_async(
                SpanArgs::new().name("spawn_traced_async"),
                |_| async { 1 },
            ))
            .await
            .unwrap();
            tokio::spawn(client.clone().get("spawn_method".into()))
                .await
                .unwrap();
            let n = tokio::spawn(Three.run((1, 2), 0, "x".into())).await;
            assert_eq!(n.unwrap(), 8);
            let mut set = tokio::task::JoinSet::new();
            set.spawn(fetch("join_set".into()));
            set.join_next().await.unwrap().unwrap();
            braintrust::spawn(async { fetch("sdk_spawn_block".into()).await })
                .await
                .unwrap();
            braintrust::spawn_blocking(|| work("sdk_spawn_blocking".into()))
                .await
                .unwrap();
            // An explicit span at the first poll wins over the call's span.
            tokio::spawn(fetch("in_span_other".into()).in_span(other2))
                .await
                .unwrap();
            // Roots: the traced call (or its first poll) happens in the new task.
            tokio::spawn(async { fetch("spawn_block_root".into()).await })
                .await
                .unwrap();
            tokio::task::spawn_blocking(|| work("spawn_blocking_root".into()))
                .await
                .unwrap();
            // SAFETY: `fetch_unsafe` has no safety requirements; it is unsafe
            // only to show the form that keeps the first-poll parent.
            tokio::spawn(unsafe { fetch_unsafe("unsafe_async_fn_root".into()) })
                .await
                .unwrap();
            tokio::spawn(fetch_instrumented("attr_macro_async_fn_root".into()))
                .await
                .unwrap();
            std::thread::spawn(|| work("thread_root".into()))
                .join()
                .unwrap();
            // Not spawned, not awaited in a span: dropped unpolled, no span.
            drop(fetch("never_polled".into()));
            assert!(!current_span().is_noop());
        }
        .in_span(request.clone()),
    );
    // 200 spawns of a traced async fn from a traced handler: none orphaned.
    let handler = start_span(SpanArgs::new().name("handler"));
    rt.block_on(
        async {
            let handles: Vec<_> = (0..200)
                .map(|i| tokio::spawn(fetch(format!("many-{i}"))))
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        }
        .in_span(handler.clone()),
    );
    handler.end();
    request.end();
    other.end();
    braintrust::set_current_logger(None);
    logger.flush().unwrap();

    let rows = server.rows();
    let by_name: HashMap<String, &Value> = rows
        .iter()
        .map(|r| {
            let name = match &r["input"]["tag"] {
                Value::String(t) => t.clone(),
                _ => r["span_attributes"]["name"].as_str().unwrap().to_string(),
            };
            (name, r)
        })
        .collect();
    let child_of = |name: &str, parent: &str| {
        let row = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no span {name}: {rows:#?}"));
        let parent = by_name[parent];
        assert_eq!(
            row["span_parents"],
            serde_json::json!([parent["span_id"]]),
            "{name} should nest under {parent}"
        );
        assert_eq!(row["root_span_id"], parent["root_span_id"], "{name}");
    };
    for name in [
        "spawn_async_fn",
        "spawn_fn_returning_future",
        "spawn_traced_async",
        "spawn_method",
        "trait_default_method",
        "join_set",
        "sdk_spawn_block",
        "sdk_spawn_blocking",
    ] {
        child_of(name, "request");
    }
    child_of("in_span_other", "other");
    for name in [
        "spawn_block_root",
        "spawn_blocking_root",
        "unsafe_async_fn_root",
        "attr_macro_async_fn_root",
        "thread_root",
    ] {
        let row = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no span {name}: {rows:#?}"));
        assert!(row["span_parents"].is_null(), "{name} should be a root");
        assert_ne!(row["root_span_id"], by_name["request"]["root_span_id"]);
    }
    assert!(!by_name.contains_key("never_polled"));
    for i in 0..200 {
        child_of(&format!("many-{i}"), "handler");
    }
}
