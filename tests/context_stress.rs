//! 10,000 concurrent tasks on a 2-worker runtime, each building a 3-span tree
//! across `.await`s while tasks migrate between workers: the server must
//! store exactly the right parent and trace for every span, and no worker may
//! be left with a current span.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use braintrust::{
    current_span, start_span, Config, LoggerOptions, QueueFullPolicy, SpanArgs, State, WithSpan,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::Value;
use tokio::task::yield_now;

const TASKS: usize = 10_000;

#[test]
fn ten_thousand_concurrent_task_trees() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let config = Config::default()
        .api_key("k")
        .app_url(server.url())
        .queue_size(4 * TASKS)
        .batch_size(1_000)
        .queue_full(QueueFullPolicy::Block);
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("stress")
            .state(State::new(config).unwrap()),
    )
    .unwrap();

    // Between polls a worker must have no current span: check at every park
    // and when each thread stops.
    let checks = Arc::new(AtomicUsize::new(0));
    let leaks = Arc::new(AtomicUsize::new(0));
    let check = {
        let (checks, leaks) = (checks.clone(), leaks.clone());
        move || {
            checks.fetch_add(1, Ordering::Relaxed);
            if !current_span().is_noop() {
                leaks.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_park(check.clone())
        .on_thread_stop(check)
        .build()
        .unwrap();

    let migrated = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let logger = logger.clone();
                // Plain tokio::spawn: each task roots its own trace explicitly.
                tokio::spawn(async move {
                    let first = std::thread::current().id();
                    let mut threads = vec![first];
                    let root = logger.start_span(SpanArgs::new().name(format!("root-{i}")));
                    let r = root.clone();
                    async {
                        yield_now().await;
                        assert!(r.is_current());
                        let child = start_span(SpanArgs::new().name(format!("child-{i}")));
                        let c = child.clone();
                        async {
                            tokio::time::sleep(Duration::ZERO).await;
                            threads.push(std::thread::current().id());
                            assert!(c.is_current());
                            let grand = start_span(SpanArgs::new().name(format!("grand-{i}")));
                            let g = grand.clone();
                            async {
                                yield_now().await;
                                threads.push(std::thread::current().id());
                                assert!(g.is_current());
                            }
                            .in_span(grand.clone())
                            .await;
                            grand.end();
                            yield_now().await;
                            assert!(c.is_current());
                        }
                        .in_span(child.clone())
                        .await;
                        child.end();
                        yield_now().await;
                        threads.push(std::thread::current().id());
                        assert!(r.is_current());
                    }
                    .in_span(root.clone())
                    .await;
                    root.end();
                    assert!(current_span().is_noop(), "span leaked out of task {i}");
                    threads.iter().any(|t| *t != first)
                })
            })
            .collect();
        let mut migrated = 0;
        for t in tasks {
            if t.await.unwrap() {
                migrated += 1;
            }
        }
        migrated
    });
    drop(rt); // stops the workers: runs the stop check on each
    assert!(current_span().is_noop());
    assert!(checks.load(Ordering::Relaxed) >= 2, "no worker was checked");
    assert_eq!(
        leaks.load(Ordering::Relaxed),
        0,
        "a worker kept a current span"
    );
    eprintln!("{migrated} of {TASKS} tasks ran on more than one worker");
    assert!(migrated > 0, "no task migrated between workers");

    logger.flush().unwrap();
    let rows = server.rows();
    assert_eq!(rows.len(), 3 * TASKS);
    let by_name: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["span_attributes"]["name"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_name.len(), 3 * TASKS, "duplicate span names");
    for i in 0..TASKS {
        let root = by_name[format!("root-{i}").as_str()];
        let child = by_name[format!("child-{i}").as_str()];
        let grand = by_name[format!("grand-{i}").as_str()];
        assert!(root["span_parents"].is_null(), "root-{i}: {root}");
        assert_eq!(
            child["span_parents"],
            serde_json::json!([root["span_id"]]),
            "child-{i}"
        );
        assert_eq!(
            grand["span_parents"],
            serde_json::json!([child["span_id"]]),
            "grand-{i}"
        );
        assert_eq!(child["root_span_id"], root["root_span_id"], "child-{i}");
        assert_eq!(grand["root_span_id"], root["root_span_id"], "grand-{i}");
        for r in [root, child, grand] {
            assert!(r["metrics"]["end"].is_f64(), "not ended: {r}");
        }
    }
}
