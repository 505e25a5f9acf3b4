//! Backpressure without waiting: when the logger thread falls behind, the
//! application thread writes rows itself.
//!
//! Past a quarter of the queue's capacity, in entries or in payload bytes
//! (large values fill the byte budget first), each entry an application
//! thread queues first turns the oldest waiting span into its row text (the
//! work the logger thread would do), in place at the queue's front, and then
//! yields the CPU once (`Pipeline::enqueue`). So a burst slows its producer
//! by the cost of writing its rows and by the turns it gives the logger
//! thread, instead of being dropped; a waiting row takes its text (~600
//! bytes for a small span), not the span's objects; and the span's memory is
//! freed by the thread that allocated it, which the allocator does far more
//! cheaply than the logger thread. Nothing waits, and rows are still dropped
//! (counted, told) when the queue is full.
//!
//! Not written here, kept as entries: spans whose values are shared with the
//! caller (`Event::input_shared`, `Event::metadata_shared`: serialized on the
//! logger thread only),
//! spans with a caller-chosen row id (merged with other rows of that id),
//! ready rows, and everything while a masking function is set (it runs on
//! the logger thread only).

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{rows, Op, Pipeline};
use crate::ids::Id;
use crate::logger::ObjectInner;
use crate::span::SpanCore;

/// A span's row written by an application thread, without its container's
/// id fields (the logger thread adds them once the container is known).
pub(crate) struct Written {
    pub(crate) object: Arc<ObjectInner>,
    pub(crate) text: Box<str>,
    /// The span had a row written before: this one may meet it in a round,
    /// so it takes the path that merges rows of one id.
    pub(crate) repeat: bool,
}

impl Drop for Written {
    fn drop(&mut self) {
        // The text counted against the byte budget while it waited.
        self.object
            .state
            .pipeline()
            .sub_payload_bytes(self.text.len());
    }
}

/// Scratch capacity kept between rows.
const SCRATCH_KEEP: usize = 64 << 10;

thread_local! {
    /// Reused across rows, so writing one allocates only its final text.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The queue length (or payload bytes) from which producers write rows: a
/// quarter of the capacity (or byte budget). Lower thresholds delivered
/// more of a one-producer burst of a million spans in the benchmark (the
/// producer starts helping before the logger thread is far behind); see
/// BENCHMARKS.md.
pub(super) fn threshold(capacity: usize) -> usize {
    (capacity / 4).max(1)
}

impl Pipeline {
    /// Writes the oldest waiting span's row on this (application) thread,
    /// when the queue is past the threshold. Skipped while the logger thread
    /// takes the queue.
    pub(super) fn spill_oldest(&self) {
        if self.masking_function().is_some() {
            return;
        }
        self.queue.rewrite_oldest(|op, put| match op {
            Op::Span(core) => self.write_or_keep(core, put),
            other => put(other),
        });
    }

    /// Puts the span's row text, or the span itself when it is not written
    /// here; nothing when the row could not be written (counted as failed).
    /// The row is put while the span's lock is held, so a later write of the
    /// span queues behind it.
    fn write_or_keep(&self, core: Arc<SpanCore>, put: &mut dyn FnMut(Op)) {
        if !matches!(core.row_id, Id::Uuid(_)) {
            return put(Op::Span(core));
        }
        let mut pending = core.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.has_writes() || pending.has_shared() {
            drop(pending);
            return put(Op::Span(core));
        }
        let taken = std::mem::take(&mut *pending);
        let bytes = taken.bytes;
        // The scratch buffer is lent out and given back; it may be gone when
        // a thread's last span ends in its thread-local destructors (then a
        // fresh one is used).
        let mut buf = SCRATCH
            .try_with(|s| std::mem::take(&mut *s.borrow_mut()))
            .unwrap_or_default();
        let text = write_text(&core, taken, &mut buf);
        let _ = SCRATCH.try_with(|s| *s.borrow_mut() = buf);
        if bytes > 0 {
            self.sub_payload_bytes(bytes);
        }
        let Some(text) = text else {
            drop(pending);
            self.counters.failed.fetch_add(1, Ordering::AcqRel);
            self.reporter
                .failed(&self.counters, 1, "a row could not be serialized");
            return;
        };
        self.add_payload_bytes(text.len());
        self.counters.spilled.fetch_add(1, Ordering::Relaxed);
        let repeat = core.spilled.swap(true, Ordering::AcqRel);
        put(Op::Text(Written {
            object: core.object.clone(),
            text,
            repeat,
        }));
        drop(pending);
    }
}

/// The span's row text (`None`: it could not be serialized).
fn write_text(core: &SpanCore, taken: crate::span::Pending, buf: &mut Vec<u8>) -> Option<Box<str>> {
    buf.clear();
    let ok = rows::write_span_text(core, taken, buf);
    // The writers emit UTF-8 only; the check is one fast pass.
    let text = ok.then(|| match std::str::from_utf8(buf) {
        Ok(t) => Box::<str>::from(t),
        Err(_) => String::from_utf8_lossy(buf).into_owned().into_boxed_str(),
    });
    // A large row does not keep its buffer's size on this thread.
    if buf.capacity() > SCRATCH_KEEP {
        *buf = Vec::new();
    }
    text
}
