//! The pipeline's queue: bounded by entries, allocated as it fills (in
//! small segments), so a large `BRAINTRUST_QUEUE_SIZE` costs nothing until
//! rows wait in it.
//!
//! Its oldest part may be a short list of entries moved to the front (see
//! [`super::spill`]): they stay counted, and the worker takes them before
//! the rest, so the order of one span's rows is kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_queue::SegQueue;

/// Front slots kept allocated after a drain.
const FRONT_KEEP: usize = 1024;

pub(crate) struct BoundedQueue<T> {
    items: SegQueue<T>,
    /// Entries taken from the head of `items` to be rewritten, in the order
    /// they were taken: each has its slot from the moment it is taken
    /// (`None` until its rewrite puts it, or for good if the rewrite made
    /// nothing), so rewrites finishing out of order keep the order. A drain
    /// takes them first: a span's later entry is pushed to `items` only after
    /// its rewritten one is here (the rewrite holds the span's lock until then).
    front: Mutex<VecDeque<Option<T>>>,
    /// Entries in `items` and `front` (and slots being reserved).
    len: AtomicUsize,
    /// Drains waiting or running (a caller giving up may drain while the
    /// logger thread does): no new rewrite starts.
    draining: AtomicUsize,
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
            draining: AtomicUsize::new(0),
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

    /// Takes one entry, the front first.
    #[cfg(test)]
    pub(super) fn pop(&self) -> Option<T> {
        let mut front = self.lock_front();
        let mut item = None;
        while item.is_none() && !front.is_empty() {
            item = front.pop_front().flatten();
        }
        drop(front);
        let item = item.or_else(|| self.items.pop())?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }

    /// Takes every entry, oldest first, including any a rewrite has in hand
    /// (it waits for them).
    pub(super) fn drain(&self) -> Vec<T> {
        self.draining.fetch_add(1, Ordering::SeqCst);
        // A rewrite writes one row; its thread may be descheduled, or the
        // row large: yield a while, then sleep between looks.
        let mut looks = 0u32;
        while self.in_hand.load(Ordering::SeqCst) > 0 {
            looks += 1;
            if looks < 1_000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
        let mut front = self.lock_front();
        let mut all: Vec<T> = front.drain(..).flatten().collect();
        // After a burst, the front's room is given back.
        if front.capacity() > FRONT_KEEP {
            *front = VecDeque::new();
        }
        // `items` last, and fully: a span's entry there is newer than its
        // rewritten one at the front.
        while let Some(item) = self.items.pop() {
            all.push(item);
        }
        // Rewrites resume only once the main part was taken: one started
        // earlier could take an entry this drain should have had.
        self.draining.fetch_sub(1, Ordering::SeqCst);
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
        if self.draining.load(Ordering::Relaxed) > 0 {
            return false;
        }
        // Paired with `drain` (both SeqCst): either the drain sees this
        // rewrite in hand and waits for it, or this sees the drain.
        self.in_hand.fetch_add(1, Ordering::SeqCst);
        let _in_hand = InHand(&self.in_hand);
        if self.draining.load(Ordering::SeqCst) > 0 {
            return false;
        }
        // Taken and given its slot under the front's lock: slots are in the
        // order entries left `items`.
        let (item, slot) = {
            let mut front = self.lock_front();
            let Some(item) = self.items.pop() else {
                return false;
            };
            front.push_back(None);
            (item, front.len() - 1)
        };
        let mut put = false;
        // No drain runs while this is in hand, so `slot` stays where it is.
        rewrite(item, &mut |item| {
            self.lock_front()[slot] = Some(item);
            put = true;
        });
        if !put {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    fn lock_front(&self) -> MutexGuard<'_, VecDeque<Option<T>>> {
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
    fn rewrites_finishing_out_of_order_keep_the_order_entries_were_taken() {
        use std::sync::{Arc, Barrier};
        let q = Arc::new(BoundedQueue::new(10));
        q.push(1).unwrap();
        q.push(2).unwrap();
        let (taken, second_done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        // The first rewrite takes entry 1 and finishes only after a second
        // rewrite took and put entry 2.
        let slow = {
            let (q, taken, second_done) = (q.clone(), taken.clone(), second_done.clone());
            std::thread::spawn(move || {
                q.rewrite_oldest(|x, put| {
                    taken.wait();
                    second_done.wait();
                    put(x * 10);
                })
            })
        };
        taken.wait();
        assert!(q.rewrite_oldest(|x, put| put(x * 10)));
        second_done.wait();
        assert!(slow.join().unwrap());
        assert_eq!(q.drain(), vec![10, 20]);
    }

    #[test]
    fn a_drain_takes_every_entry_even_while_producers_rewrite() {
        // Producers push and rewrite (x -> -x) while another thread drains:
        // every pushed entry comes out exactly once, rewritten or not.
        let q = std::sync::Arc::new(BoundedQueue::new(1_000_000));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 1..=20_000i64 {
                        q.push(p * 1_000_000 + i).unwrap();
                        q.rewrite_oldest(|x, put| put(-x));
                    }
                })
            })
            .collect();
        let drainer = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    seen.extend(q.drain());
                }
                seen
            })
        };
        for p in producers {
            p.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        let mut seen = drainer.join().unwrap();
        seen.extend(q.drain());
        let mut got: Vec<i64> = seen.iter().map(|x| x.abs()).collect();
        got.sort_unstable();
        let mut want: Vec<i64> = (0..3)
            .flat_map(|p| (1..=20_000).map(move |i| p * 1_000_000 + i))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(q.is_empty());
        assert!(seen.iter().any(|x| *x < 0), "no entry was rewritten");
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
