//! Span context follows the work: join!, select!, JoinSet, spawn_blocking,
//! threads, nested spawns, the traced executors and pool, and parents that
//! end before their children. Every test asserts the tree the server stored.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Waker};

use braintrust::{
    current_span, start_span, Config, Event, Logger, LoggerOptions, QueueFullPolicy, Span,
    SpanArgs, State, TracedHandle, TracedRuntime, TracedThreadPool, WithSpan,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::{json, Value};
use tokio::task::{yield_now, JoinSet};

/// A devserver, a fresh backend and a logger that is not the process's
/// current one (tests of one binary run in parallel).
struct Env {
    server: DevServer,
    logger: Logger,
}

impl Env {
    fn new(project: &str) -> Env {
        let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
        let config = Config::default()
            .api_key("k")
            .app_url(server.url())
            .queue_full(QueueFullPolicy::Block);
        let state = State::new(config).unwrap();
        let logger =
            braintrust::init_logger(LoggerOptions::new().project(project).state(state)).unwrap();
        Env { server, logger }
    }

    fn root(&self, name: &str) -> Span {
        self.logger
            .start_span(SpanArgs::new().name(name.to_string()))
    }

    /// Flushes and returns the stored tree.
    fn tree(&self) -> Tree {
        self.logger.flush().unwrap();
        Tree::new(self.server.rows())
    }
}

/// Stored rows by span name (names are unique within a test).
struct Tree {
    by_name: HashMap<String, Value>,
    name_of: HashMap<String, String>,
}

impl Tree {
    fn new(rows: Vec<Value>) -> Tree {
        let mut by_name = HashMap::new();
        let mut name_of = HashMap::new();
        for row in rows {
            let name = row["span_attributes"]["name"].as_str().unwrap().to_string();
            let span_id = row["span_id"].as_str().unwrap().to_string();
            name_of.insert(span_id, name.clone());
            assert!(
                by_name.insert(name.clone(), row).is_none(),
                "duplicate span {name}"
            );
        }
        let tree = Tree { by_name, name_of };
        tree.check_roots();
        tree
    }

    fn row(&self, name: &str) -> &Value {
        self.by_name
            .get(name)
            .unwrap_or_else(|| panic!("no stored span {name}; have {:?}", self.names()))
    }

    fn names(&self) -> Vec<&String> {
        let mut n: Vec<_> = self.by_name.keys().collect();
        n.sort();
        n
    }

    fn parents(row: &Value) -> Vec<String> {
        match &row["span_parents"] {
            Value::Null => vec![],
            v => v
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect(),
        }
    }

    /// Every child shares its parent's trace id.
    fn check_roots(&self) {
        for (name, row) in &self.by_name {
            for p in Tree::parents(row) {
                let parent = &self.by_name[&self.name_of[&p]];
                assert_eq!(
                    row["root_span_id"], parent["root_span_id"],
                    "trace of {name}"
                );
            }
        }
    }

    /// `parent>child` for every span (`-` for roots), sorted.
    fn edges(&self) -> Vec<String> {
        let mut edges: Vec<String> = self
            .by_name
            .iter()
            .map(|(name, row)| {
                let parents = Tree::parents(row);
                assert!(parents.len() <= 1, "{name} has parents {parents:?}");
                let parent = parents.first().map_or("-", |p| self.name_of[p].as_str());
                format!("{parent}>{name}")
            })
            .collect();
        edges.sort();
        edges
    }

    fn ended(&self, name: &str) -> bool {
        self.row(name)["metrics"]["end"].is_f64()
    }

    fn metric(&self, name: &str, m: &str) -> f64 {
        self.row(name)["metrics"][m].as_f64().unwrap()
    }
}

fn sorted(edges: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = edges.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn span(name: impl Into<String>) -> Span {
    start_span(SpanArgs::new().name(name.into()))
}

/// Starts a span under the current one and ends it at once.
fn leaf(name: impl Into<String>) {
    span(name).end();
}

#[test]
fn join_branches_each_get_their_own_span() {
    let env = Env::new("join");
    let root = env.root("root");
    runtime().block_on(
        async {
            let a = span("a");
            let b = span("b");
            let (ra, rb) = (a.clone(), b.clone());
            tokio::join!(
                async move {
                    yield_now().await;
                    assert!(ra.is_current());
                    leaf("a1");
                    yield_now().await;
                    leaf("a2");
                }
                .in_span(a.clone()),
                async move {
                    yield_now().await;
                    assert!(rb.is_current());
                    leaf("b1");
                }
                .in_span(b.clone()),
                async {
                    // Not instrumented: polled in the enclosing span.
                    yield_now().await;
                    leaf("c");
                },
            );
            a.end();
            b.end();
        }
        .in_span(root.clone()),
    );
    root.end();
    assert!(current_span().is_noop());
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&["->root", "root>a", "root>b", "root>c", "a>a1", "a>a2", "b>b1"])
    );
}

/// Logs `cancelled` on the span current when it is dropped.
struct OnDrop(Arc<Mutex<Option<String>>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let cur = current_span();
        cur.log(Event::new().metadata(json!({"cancelled": true})))
            .unwrap();
        *self.0.lock().unwrap() = Some(cur.span_id());
    }
}

#[test]
fn select_loser_is_dropped_in_its_span_and_ended() {
    let env = Env::new("select");
    let root = env.root("root");
    let seen = Arc::new(Mutex::new(None));
    let slow_id = runtime().block_on({
        let seen = seen.clone();
        let r = root.clone();
        async move {
            let fast = span("fast");
            let slow = span("slow");
            let slow_id = slow.span_id();
            let won = tokio::select! {
                biased;
                v = async {
                    yield_now().await;
                    leaf("fast_child");
                    current_span().end();
                    1
                }.in_span(fast) => v,
                _ = async move {
                    let _guard = OnDrop(seen);
                    leaf("slow_child");
                    std::future::pending::<()>().await
                }.in_span(slow) => unreachable!(),
            };
            assert_eq!(won, 1);
            // The loser was dropped; its span is not left current.
            assert!(r.is_current(), "stale current span after select!");
            leaf("after");
            slow_id
        }
        .in_span(root.clone())
    });
    root.end();
    assert!(current_span().is_noop());
    assert_eq!(seen.lock().unwrap().as_deref(), Some(slow_id.as_str()));
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&[
            "->root",
            "root>fast",
            "root>slow",
            "root>after",
            "fast>fast_child",
            "slow>slow_child"
        ])
    );
    assert!(tree.ended("slow"), "losing branch's span not ended");
    assert!(tree.ended("fast"));
    assert_eq!(tree.row("slow")["metadata"]["cancelled"], json!(true));
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn in_span_restores_on_pending_panic_and_drop() {
    let env = Env::new("in_span");
    let outer = env.root("outer");
    let inner = outer.start_span(SpanArgs::new().name("inner"));
    let _g = outer.enter();

    // Pending: the span is current only during the poll.
    let mut fut = Box::pin(
        async {
            leaf("during_poll");
            std::future::pending::<()>().await
        }
        .in_span(inner.clone()),
    );
    assert!(poll_once(fut.as_mut()).is_pending());
    assert!(outer.is_current());

    // Dropped while pending: the inner future is dropped with `inner` current,
    // then `outer` is back.
    let seen = Arc::new(Mutex::new(None));
    let mut fut2 = Box::pin(
        {
            let seen = seen.clone();
            async move {
                let _guard = OnDrop(seen);
                std::future::pending::<()>().await
            }
        }
        .in_span(inner.clone()),
    );
    assert!(poll_once(fut2.as_mut()).is_pending());
    drop(fut2);
    assert_eq!(seen.lock().unwrap().clone(), Some(inner.span_id()));
    assert!(outer.is_current());

    // A panicking poll restores too.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut f = Box::pin(async { panic!("boom") }.in_span(inner.clone()));
        let _ = poll_once(f.as_mut());
    }));
    assert!(panicked.is_err());
    assert!(outer.is_current());

    drop(fut);
    assert!(outer.is_current());
    drop(_g);
    assert!(current_span().is_noop());
    inner.end();
    outer.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&["->outer", "outer>inner", "inner>during_poll"])
    );
}

#[test]
fn join_set_tasks_are_children_of_the_spawner() {
    let env = Env::new("joinset");
    let root = env.root("root");
    runtime().block_on(
        async {
            let mut set = JoinSet::new();
            for i in 0..8 {
                set.spawn(
                    async move {
                        yield_now().await;
                        let s = span(format!("js{i}"));
                        async { yield_now().await }.in_span(s.clone()).await;
                        s.end();
                    }
                    .with_current_span(),
                );
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        }
        .in_span(root.clone()),
    );
    root.end();
    let tree = env.tree();
    let mut want = vec!["->root".to_string()];
    want.extend((0..8).map(|i| format!("root>js{i}")));
    want.sort();
    assert_eq!(tree.edges(), want);
}

#[test]
fn spawn_blocking_and_spawn_local_run_in_the_callers_span() {
    let env = Env::new("blocking");
    let root = env.root("root");
    runtime().block_on(
        async {
            braintrust::spawn_blocking(|| leaf("blocking"))
                .await
                .unwrap();
            TracedHandle::current()
                .spawn_blocking(|| leaf("handle_blocking"))
                .await
                .unwrap();
        }
        .in_span(root.clone()),
    );
    // spawn_local on a LocalSet.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &rt,
        async {
            let rc = std::rc::Rc::new("local");
            braintrust::spawn_local(async move {
                yield_now().await;
                leaf(*rc);
            })
            .await
            .unwrap();
        }
        .in_span(root.clone()),
    );
    root.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&[
            "->root",
            "root>blocking",
            "root>handle_blocking",
            "root>local"
        ])
    );
}

#[test]
fn threads_scoped_and_unscoped_run_in_the_callers_span() {
    let env = Env::new("threads");
    let root = env.root("root");
    let other = env.root("other");
    let data = vec![0, 1, 2, 3];
    {
        let _g = root.enter();
        std::thread::scope(|s| {
            for i in &data {
                braintrust::thread::spawn_scoped(s, move || {
                    let t = span(format!("scoped{i}"));
                    t.in_scope(|| leaf(format!("scoped{i}_child")));
                    t.end();
                });
            }
            // Plain `scope.spawn` under another span, to check no cross-talk.
            let _o = other.enter();
            braintrust::thread::spawn_scoped(s, || leaf("scoped_other"));
        });
        braintrust::thread::spawn(|| leaf("thread")).join().unwrap();
        let b = std::thread::Builder::new().name("named".into());
        braintrust::thread::spawn_with(b, || leaf("named_thread"))
            .unwrap()
            .join()
            .unwrap();
        // A plain std thread starts with no span.
        assert!(std::thread::spawn(|| current_span().is_noop())
            .join()
            .unwrap());
    }
    root.end();
    other.end();
    let tree = env.tree();
    let mut want: Vec<String> = vec![
        "->root".into(),
        "->other".into(),
        "other>scoped_other".into(),
        "root>thread".into(),
        "root>named_thread".into(),
    ];
    for i in 0..4 {
        want.push(format!("root>scoped{i}"));
        want.push(format!("scoped{i}>scoped{i}_child"));
    }
    want.sort();
    assert_eq!(tree.edges(), want);
}

fn level(n: usize) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = span(format!("level{n}"));
        async move {
            yield_now().await;
            if n < 5 {
                // Each level spawns the next and awaits it.
                braintrust::spawn(level(n + 1)).await.unwrap();
            }
            yield_now().await;
        }
        .in_span(s.clone())
        .await;
        s.end();
    })
}

#[test]
fn nested_spawns_five_levels_deep() {
    let env = Env::new("nested");
    let root = env.root("root");
    runtime()
        .block_on(async { braintrust::spawn(level(1)).await }.in_span(root.clone()))
        .unwrap();
    root.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&[
            "->root",
            "root>level1",
            "level1>level2",
            "level2>level3",
            "level3>level4",
            "level4>level5"
        ])
    );
    let trace = &tree.row("root")["root_span_id"];
    assert_eq!(&tree.row("level5")["root_span_id"], trace);
}

#[test]
fn parent_that_ends_first_still_gets_its_children() {
    let env = Env::new("early_end");
    let root = env.root("root");
    let rt = runtime();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (not_started, running) = rt.block_on(
        async {
            let parent = span("parent");
            // Captured before the parent ends; starts only after.
            let not_started = parent.in_scope(|| {
                braintrust::spawn(async move {
                    start_rx.await.unwrap();
                    leaf("late_child");
                })
            });
            // Starts now, finishes after the parent ended.
            let running = parent.in_scope(|| {
                braintrust::spawn(async move {
                    let c = span("running_child");
                    started_tx.send(()).unwrap();
                    async move {
                        finish_rx.await.unwrap();
                        leaf("grandchild_after_end");
                    }
                    .in_span(c.clone())
                    .await;
                    c.end();
                })
            });
            started_rx.await.unwrap();
            parent.end();
            drop(parent); // every handle but the ones the tasks captured
            (not_started, running)
        }
        .in_span(root.clone()),
    );
    start_tx.send(()).unwrap();
    finish_tx.send(()).unwrap();
    rt.block_on(async {
        not_started.await.unwrap();
        running.await.unwrap();
    });
    root.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&[
            "->root",
            "root>parent",
            "parent>late_child",
            "parent>running_child",
            "running_child>grandchild_after_end"
        ])
    );
    assert!(tree.metric("parent", "end") <= tree.metric("late_child", "start"));
    assert!(tree.metric("parent", "end") <= tree.metric("grandchild_after_end", "start"));
}

#[test]
fn traced_runtime_and_handle_propagate_the_submitters_span() {
    let env = Env::new("runtime");
    let root = env.root("root");
    let other = env.root("other");
    let rt = TracedRuntime::new(runtime());
    {
        let _g = root.enter();
        rt.block_on(async { leaf("block_on") });
        let t = rt.spawn(async {
            yield_now().await;
            leaf("rt_spawn")
        });
        let b = rt.spawn_blocking(|| leaf("rt_blocking"));
        let h = rt.handle();
        let t2 = other.in_scope(|| h.spawn(async { leaf("handle_spawn_other") }));
        rt.block_on(async {
            t.await.unwrap();
            b.await.unwrap();
            t2.await.unwrap();
        });
    }
    root.end();
    other.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&[
            "->root",
            "->other",
            "root>block_on",
            "root>rt_spawn",
            "root>rt_blocking",
            "other>handle_spawn_other"
        ])
    );
}

#[test]
fn traced_thread_pool_runs_jobs_in_the_submitters_span() {
    let env = Env::new("pool");
    let roots = [env.root("root0"), env.root("root1")];
    let pool = TracedThreadPool::new(2);
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let _g = roots[i % 2].enter();
            pool.submit(move || {
                let s = span(format!("job{i}"));
                s.in_scope(|| leaf(format!("job{i}_child")));
                s.end();
                i
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), i);
    }
    // A panicking job comes back as an error and leaves no span behind.
    let bad = roots[0].in_scope(|| pool.submit(|| -> () { panic!("job failed") }));
    assert!(bad.join().is_err());
    // Every worker at once (a barrier forces one job per worker): none has a
    // span current between jobs.
    let barrier = Arc::new(Barrier::new(pool.max_workers()));
    let idle: Vec<_> = (0..pool.max_workers())
        .map(|_| {
            let barrier = barrier.clone();
            pool.submit(move || {
                barrier.wait();
                current_span().is_noop()
            })
        })
        .collect();
    assert!(idle.into_iter().all(|h| h.join().unwrap()));
    drop(pool);
    for r in &roots {
        r.end();
    }
    let tree = env.tree();
    let mut want = vec!["->root0".to_string(), "->root1".to_string()];
    for i in 0..40 {
        want.push(format!("root{}>job{i}", i % 2));
        want.push(format!("job{i}>job{i}_child"));
    }
    want.sort();
    assert_eq!(tree.edges(), want);
}

#[test]
fn wrap_fn_and_wrap_map_bind_closures_for_user_owned_executors() {
    let env = Env::new("wrap");
    let root = env.root("root");
    // A user-owned executor: a thread fed through a channel.
    let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let exec = std::thread::spawn(move || {
        for job in rx {
            job();
            assert!(current_span().is_noop());
        }
    });
    root.in_scope(|| {
        tx.send(Box::new(braintrust::wrap_fn(|| leaf("wrapped"))))
            .unwrap();
        // Not wrapped: runs with no span, so nothing is recorded.
        tx.send(Box::new(|| leaf("unwrapped"))).unwrap();
        let f = braintrust::wrap_map(|i: usize| leaf(format!("map{i}")));
        std::thread::scope(|s| {
            for i in 0..3 {
                let f = &f;
                s.spawn(move || f(i));
            }
        });
    });
    drop(tx);
    exec.join().unwrap();
    root.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&[
            "->root",
            "root>wrapped",
            "root>map0",
            "root>map1",
            "root>map2"
        ])
    );
}

#[test]
fn explicit_parent_wins_over_the_current_span_in_spawned_work() {
    let env = Env::new("explicit");
    let root = env.root("root");
    let other = env.root("other");
    runtime().block_on(
        async {
            braintrust::spawn(async move {
                start_span(SpanArgs::new().name("by_span").parent(&other)).end();
                leaf("by_context");
                other.end();
            })
            .await
            .unwrap();
        }
        .in_span(root.clone()),
    );
    root.end();
    let tree = env.tree();
    assert_eq!(
        tree.edges(),
        sorted(&["->root", "->other", "other>by_span", "root>by_context"])
    );
}
