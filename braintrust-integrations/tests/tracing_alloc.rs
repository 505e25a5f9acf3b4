//! Spans outside a Braintrust trace cost the layer no allocation: counted
//! with a counting global allocator, the registry alone against the
//! registry plus the layer, on the same spans. One test: the counter is
//! per thread, and the spans are made on this test's thread.
#![cfg(feature = "tracing")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use braintrust_integrations::tracing_layer::BraintrustLayer;
use tracing_subscriber::prelude::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local
// `Cell` with a const initializer, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn workload() {
    for i in 0..1000u64 {
        let span = tracing::info_span!("outside", i, name = "x");
        span.in_scope(|| {
            tracing::info!(i, "event");
            tracing::debug_span!("child").in_scope(|| {});
        });
    }
}

#[test]
fn spans_outside_a_trace_allocate_nothing_in_the_layer() {
    // The counter sees this thread's allocations.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8]))), 1);
    // The fewest of three runs each: the registry's own pools may grow once.
    let runs = |f: &dyn Fn() -> u64| (0..3).map(|_| f()).min().unwrap();
    let bare = tracing_subscriber::registry();
    let bare_allocs = tracing::subscriber::with_default(bare, || {
        workload(); // warm the registry's slab
        runs(&|| allocations(workload))
    });
    let layered = tracing_subscriber::registry().with(BraintrustLayer::new());
    let layered_allocs = tracing::subscriber::with_default(layered, || {
        workload();
        runs(&|| allocations(workload))
    });
    assert!(
        layered_allocs <= bare_allocs,
        "the layer allocated for spans outside a trace: {layered_allocs} allocations with it, {bare_allocs} without, for 3000 spans/events"
    );
}
