//! The pipeline's queue: bounded by entries, allocated as it fills (in
//! small segments), so a large `BRAINTRUST_QUEUE_SIZE` costs nothing until
//! rows wait in it.
//!
//! Its oldest part may be a short list of entries moved to the front (see
//! [`super::spill`]): they stay counted, and the worker takes them before
//! the rest, so the order of one span's rows is kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_queue::SegQueue;

pub(crate) struct BoundedQueue<T> {
    items: SegQueue<T>,
    /// Entries taken from the head of `items` and rewritten; older than
    /// everything in `items`. Its lock also orders a move against a drain.
    front: Mutex<VecDeque<T>>,
    /// Entries in `items` and `front` (and slots being reserved).
    len: AtomicUsize,
    /// A drain is waiting or running: no new rewrite starts.
    draining: AtomicBool,
    /// Entries taken out for a rewrite and not yet put back: a drain waits
    /// for them, so nothing queued before it is missed.
    in_hand: AtomicUsize,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    pub(super) fn new(capacity: usize) -> Self {
        BoundedQueue {
            items: SegQueue::new(),
            front: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            in_hand: AtomicUsize::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Adds `item`, or gives it back when the queue is full.
    pub(super) fn push(&self, item: T) -> Result<(), T> {
        // Reserve a slot first, so concurrent producers never exceed the bound.
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(item);
        }
        self.items.push(item);
        Ok(())
    }

    /// Takes one entry, the front first (order does not matter to callers:
    /// they give everything up).
    pub(super) fn pop(&self) -> Option<T> {
        let item = self.lock_front().pop_front().or_else(|| self.items.pop())?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }

    /// Takes every entry, oldest first.
    pub(super) fn drain(&self) -> Vec<T> {
        self.draining.store(true, Ordering::SeqCst);
        // A rewrite takes about a microsecond; its thread may be descheduled.
        while self.in_hand.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
        let mut front = self.lock_front();
        self.draining.store(false, Ordering::SeqCst);
        let mut all: Vec<T> = front.drain(..).collect();
        while let Some(item) = self.items.pop() {
            all.push(item);
        }
        drop(front);
        self.len.fetch_sub(all.len(), Ordering::AcqRel);
        all
    }

    /// Takes the oldest entry of the main part for `rewrite`, which puts
    /// what it makes of it at the end of the front with `put` (it stays
    /// counted), or drops it (it leaves the queue). Skipped, returning false,
    /// while a drain waits or runs, or when the main part is empty.
    pub(super) fn rewrite_oldest(&self, rewrite: impl FnOnce(T, &mut dyn FnMut(T))) -> bool {
        // Seen here, a drain is not kept waiting by rewrites that start
        // after it (with many producers there would always be one).
        if self.draining.load(Ordering::Relaxed) {
            return false;
        }
        // Paired with `drain` (both SeqCst): either the drain sees this
        // rewrite in hand and waits for it, or this sees the drain.
        self.in_hand.fetch_add(1, Ordering::SeqCst);
        let _in_hand = InHand(&self.in_hand);
        if self.draining.load(Ordering::SeqCst) {
            return false;
        }
        let Some(item) = self.items.pop() else {
            return false;
        };
        let mut put = false;
        rewrite(item, &mut |item| {
            self.lock_front().push_back(item);
            put = true;
        });
        if !put {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    fn lock_front(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.front.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }
}

/// A rewrite in hand, ended when dropped (also by a panic).
struct InHand<'a>(&'a AtomicUsize);

impl Drop for InHand<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_its_capacity_across_threads() {
        let q = std::sync::Arc::new(BoundedQueue::new(1_000));
        let accepted: usize = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || (0..500).filter(|i| q.push(*i).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(accepted, 1_000);
        assert!(q.is_full());
        let mut n = 0;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!((n, q.len(), q.is_empty()), (1_000, 0, true));
        assert!(q.push(1).is_ok());
    }

    #[test]
    fn rewritten_entries_stay_counted_and_come_out_first() {
        let q = BoundedQueue::new(4);
        for i in 1..=4 {
            q.push(i).unwrap();
        }
        // The oldest two are rewritten (x10): still four entries, still full.
        let times_ten = |i: i32, put: &mut dyn FnMut(i32)| put(i * 10);
        assert!(q.rewrite_oldest(times_ten));
        assert!(q.rewrite_oldest(times_ten));
        assert!(q.is_full());
        assert_eq!(q.push(5), Err(5));
        // One leaves the queue instead.
        assert!(q.rewrite_oldest(|_, _| {}));
        assert_eq!(q.len(), 3);
        assert_eq!(q.drain(), vec![10, 20, 4]);
        assert!(q.is_empty());
        assert!(!q.rewrite_oldest(times_ten));
    }
}
