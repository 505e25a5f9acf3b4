//! `#[traced]` with no logger: the body runs, nothing is captured, moved,
//! cloned or allocated; then, with a current logger, traced calls are roots.
//!
//! One test function: the current logger is process-wide state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use braintrust::{init_logger, is_enabled, set_current_logger, Config, LoggerOptions, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde::{Serialize, Serializer};

/// Counts this thread's allocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(|n| n.get())
}

/// Panics if captured: `Serialize`, `Debug` and `Clone` all trip.
struct Tripwire(u32);

impl Serialize for Tripwire {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("an argument was serialized with tracing off")
    }
}
impl std::fmt::Debug for Tripwire {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("an argument was formatted with tracing off")
    }
}
impl Clone for Tripwire {
    fn clone(&self) -> Self {
        panic!("an argument was cloned with tracing off")
    }
}

#[braintrust::traced(metadata = serde_json::json!({"v": t.0}))]
fn consume(t: Tripwire, n: u32) -> Result<Tripwire, String> {
    if n == 0 {
        return Err("zero".into());
    }
    Ok(Tripwire(t.0 + n))
}

#[braintrust::traced]
async fn consume_async(t: Tripwire) -> Tripwire {
    tokio::task::yield_now().await;
    Tripwire(t.0 * 2)
}

/// A boxed future that is not an `async` block: traced by its return type,
/// boxed again only when tracing is on.
#[braintrust::traced]
fn boxed_later(t: Tripwire) -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> {
    let fut = std::future::ready(t.0 + 1);
    Box::pin(fut)
}

#[braintrust::traced]
fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[test]
fn off_runs_the_body_only_then_roots_go_to_the_current_logger() {
    // ----- off -----
    assert!(!is_enabled());
    let before = allocations();
    let t = consume(Tripwire(1), 2).unwrap();
    assert!(consume(Tripwire(1), 0).is_err());
    assert_eq!(add(2, 2), 4);
    assert_eq!(
        allocations() - before,
        1,
        "only the body's own `String` allocation"
    );
    assert_eq!(t.0, 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(consume_async(Tripwire(4))).0, 8);
    let before = allocations();
    let fut = boxed_later(Tripwire(1));
    assert_eq!(allocations() - before, 1, "only the body's own box");
    assert_eq!(rt.block_on(fut), 2);

    // ----- on: a current logger; a traced call outside any span is a root -----
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = init_logger(
        LoggerOptions::new()
            .project("traced-off")
            .state(state)
            .set_current(true),
    )
    .unwrap();
    assert!(is_enabled());
    assert_eq!(add(1, 2), 3);
    set_current_logger(None);
    assert!(!is_enabled());
    assert_eq!(add(5, 5), 10);
    logger.flush().unwrap();
    let rows = server.rows();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let root = &rows[0];
    assert_eq!(root["span_attributes"]["name"], "add");
    assert_eq!(root["span_attributes"]["type"], "function");
    assert!(root["span_parents"].is_null());
    assert_eq!(root["input"], serde_json::json!({"a": 1, "b": 2}));
    assert_eq!(root["output"], 3);
}
