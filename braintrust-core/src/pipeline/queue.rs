//! The pipeline's queue: bounded by entries, allocated as it fills (in
//! small segments), so a large `BRAINTRUST_QUEUE_SIZE` costs nothing until
//! rows wait in it.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;

pub(crate) struct BoundedQueue<T> {
    items: SegQueue<T>,
    len: AtomicUsize,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    pub(super) fn new(capacity: usize) -> Self {
        BoundedQueue {
            items: SegQueue::new(),
            len: AtomicUsize::new(0),
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

    pub(super) fn pop(&self) -> Option<T> {
        let item = self.items.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(item)
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
}
