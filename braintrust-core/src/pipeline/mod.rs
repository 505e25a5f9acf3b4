//! The delivery pipeline of one backend: the queue, the worker thread that
//! drains it, the control channel, the counters and the deadlines.
//!
//! The application thread only pushes an entry (a span with unsent writes,
//! or a ready row) and counts it. The worker ([`worker`]) turns entries into
//! rows ([`rows`]), sends them ([`transport`], with the one retry policy of
//! [`crate::retry`]) and settles each row in exactly one outcome
//! ([`accounting`]). Every wait has a deadline: a request's timeout, a
//! batch's retry budget, the caller's flush or shutdown deadline, the exit
//! deadline. When one passes, work in flight is abandoned, not awaited, and
//! its rows are counted (and written to the failed-payload directory).

mod accounting;
mod payloads;
mod queue;
mod rows;
mod spill;
mod transport;
mod uploads;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::api::{Api, LoginInfo};
use crate::config::{Config, QueueFullPolicy};
use crate::logger::ObjectInner;
use crate::span::SpanCore;
use crate::Error;

use accounting::{Counters, Reporter};
pub use accounting::{LossReport, Stats};
pub(crate) use uploads::read_attachment;
pub(crate) use worker::on_worker_thread;
use worker::{Cmd, Responder};

/// A user-supplied masking function, applied off the application thread to
/// `input`, `output`, `expected`, `metadata` and `error` before sending.
pub type MaskingFunction = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// A function given the JSON text of every row the logger thread prepares
/// for `/logs3` ([`State::set_row_observer`](crate::State::set_row_observer)).
pub type RowObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// How long a caller waits past its deadline for the worker to answer
/// (the worker enforces the same deadline itself); past it the caller gives
/// up on its own.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// One queue entry.
pub(crate) enum Op {
    /// A span has unsent writes (see `SpanCore::pending`).
    Span(Arc<SpanCore>),
    /// A ready row without its container ids (`update_span`, feedback).
    Row(Arc<ObjectInner>, Box<Map<String, Value>>),
    /// A span's row an application thread wrote (see [`spill`]).
    Text(spill::Written),
}

impl Op {
    /// Drops an entry that did not fit in the queue. Its span's writes are
    /// dropped with it (and counted by the caller), never left half-queued.
    fn discard(self) {
        if let Op::Span(core) = self {
            core.mark_dropped();
        }
    }
}

/// A request to abandon the work in flight (a caller's deadline passed).
#[derive(Default)]
struct Abandon {
    requested: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Abandon {
    fn request(&self) {
        self.requested.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }
}

/// How long a bounded flush may take: at most `total`, and at most `idle`
/// without any row reaching an outcome (a slow but healthy backend keeps
/// delivering; a hung one is given up quickly).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub total: Option<Duration>,
    pub idle: Option<Duration>,
    /// How the totals line names the moment ("flush", "at exit").
    pub label: &'static str,
}

/// The pipeline. Owned by one [`State`](crate::State); nothing else touches
/// its fields.
pub(crate) struct Pipeline {
    config: Arc<Config>,
    api: Arc<Api>,
    queue: queue::BoundedQueue<Op>,
    /// Queue length from which producers write the oldest rows themselves.
    spill_at: usize,
    /// Waiting payload bytes from which they do.
    spill_at_bytes: u64,
    notify: tokio::sync::Notify,
    /// The worker waits for entries: the next producer wakes it. While it
    /// works, producers only push (no wake-up per entry).
    worker_idle: AtomicBool,
    space: (Mutex<()>, Condvar),
    blocked_waiters: AtomicU64,
    ctrl: OnceLock<tokio::sync::mpsc::UnboundedSender<Cmd>>,
    worker_thread: OnceLock<std::thread::ThreadId>,
    worker_alive: AtomicBool,
    /// Set by `stop` (shutdown): rows queued from then on are never sent,
    /// so they are counted undelivered at once instead of waiting forever.
    stopped: AtomicBool,
    masking: RwLock<Option<MaskingFunction>>,
    observer: RwLock<Option<RowObserver>>,
    counters: Counters,
    reporter: Reporter,
    abandon: Abandon,
    /// The abandon-request count of the last caller that gave up waiting:
    /// the worker writes nothing more for abandonments up to it.
    dump_closed: Mutex<u64>,
    uploads: uploads::Uploads,
}

impl Pipeline {
    pub(crate) fn new(config: Arc<Config>, api: Arc<Api>) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            queue: queue::BoundedQueue::new(config.queue_size),
            spill_at: spill::threshold(config.queue_size),
            spill_at_bytes: spill::threshold(config.queue_max_bytes) as u64,
            reporter: Reporter::new(
                config.drop_logging_period,
                config.queue_size.max(1),
                config.queue_max_bytes,
            ),
            config,
            api,
            notify: tokio::sync::Notify::new(),
            worker_idle: AtomicBool::new(false),
            space: (Mutex::new(()), Condvar::new()),
            blocked_waiters: AtomicU64::new(0),
            ctrl: OnceLock::new(),
            worker_thread: OnceLock::new(),
            worker_alive: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            masking: RwLock::new(None),
            observer: RwLock::new(None),
            counters: Counters::default(),
            abandon: Abandon::default(),
            dump_closed: Mutex::new(0),
            uploads: uploads::Uploads::default(),
        })
    }

    /// True once something was logged (the worker runs).
    pub(crate) fn started(&self) -> bool {
        self.ctrl.get().is_some()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Counts an event `Span::log_or_report` rejected (see `Stats::rejected_logs`).
    pub(crate) fn count_rejected_log(&self) {
        self.counters.rejected_logs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a span argument a new span rejected (see `Stats::rejected_span_args`).
    pub(crate) fn count_rejected_span_arg(&self) {
        self.counters
            .rejected_span_args
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_masking_function(&self, f: Option<MaskingFunction>) {
        *self.masking.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    fn masking_function(&self) -> Option<MaskingFunction> {
        self.masking
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_row_observer(&self, f: Option<RowObserver>) {
        *self.observer.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    fn row_observer(&self) -> Option<RowObserver> {
        self.observer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_worker_thread(&self) -> bool {
        self.worker_thread.get() == Some(&std::thread::current().id())
    }

    pub(crate) fn ensure_started(self: &Arc<Self>) {
        if self.ctrl.get().is_none() {
            worker::start(self);
        }
    }

    /// Counts payload bytes written into a waiting span.
    pub(crate) fn add_payload_bytes(&self, n: usize) {
        self.counters
            .payload_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts payload bytes taken out of the queue (sent on or dropped),
    /// and wakes callers blocked on the byte budget.
    pub(crate) fn sub_payload_bytes(&self, n: usize) {
        self.counters
            .payload_bytes
            .fetch_sub(n as u64, Ordering::Relaxed);
        self.wake_blocked();
    }

    /// True when the logger thread is behind: past a quarter of the queue,
    /// in entries or in payload bytes (large values fill the byte budget
    /// long before the entry limit).
    fn behind(&self) -> bool {
        self.queue.len() >= self.spill_at
            || self.counters.payload_bytes.load(Ordering::Relaxed) >= self.spill_at_bytes
    }

    /// True when what waits besides an entry of `bytes` (already counted)
    /// is over the byte budget.
    fn over_byte_budget(&self, bytes: usize) -> bool {
        let waiting = self.counters.payload_bytes.load(Ordering::Relaxed);
        waiting.saturating_sub(bytes as u64) > self.config.queue_max_bytes as u64
    }

    /// Queues one entry carrying `bytes` of payload (already counted); drops
    /// it (counted, reported) or blocks when the queue is full, in entries
    /// or in bytes.
    pub(crate) fn enqueue(self: &Arc<Self>, op: Op, bytes: usize) {
        if self.ctrl.get().is_none() {
            self.ensure_started();
        }
        self.counters.logged.fetch_add(1, Ordering::Relaxed);
        if self.stopped.load(Ordering::SeqCst) {
            return self.give_up_after_stop(vec![op], false);
        }
        // The logger thread is behind: write an older row here first.
        // (`on_worker_thread` reads a thread-local safely even while the
        // thread's locals are torn down, where a span may end.)
        if self.behind() && !on_worker_thread() {
            self.spill_oldest();
            // Then give the CPU away once, written or not (masking, shared
            // values): when producers saturate the cores, the logger thread
            // gets a turn to drain. No wait: with nothing else to run, the
            // call returns at once (~0.5 µs).
            std::thread::yield_now();
        }
        let mut op = op;
        loop {
            let by_bytes = self.over_byte_budget(bytes);
            let pushed = if by_bytes {
                Err(op)
            } else {
                self.queue.push(op)
            };
            match pushed {
                Ok(()) => {
                    self.wake_worker();
                    // Stopped meanwhile: the worker's last drain may have
                    // run before this push (paired SeqCst with `stop`).
                    if self.stopped.load(Ordering::SeqCst) {
                        self.give_up_after_stop(self.drain_queue(), false);
                    }
                    return;
                }
                Err(back) => {
                    if self.config.queue_full == QueueFullPolicy::Block
                        && self.worker_alive.load(Ordering::Acquire)
                        && !self.is_worker_thread()
                    {
                        op = back;
                        self.notify.notify_one();
                        let (lock, cv) = &self.space;
                        self.blocked_waiters.fetch_add(1, Ordering::AcqRel);
                        let g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if self.queue.is_full() || self.over_byte_budget(bytes) {
                            let _ = cv.wait_timeout(g, Duration::from_millis(50));
                        }
                        self.blocked_waiters.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    back.discard();
                    self.counters
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    self.reporter.dropped(&self.counters, by_bytes);
                    return;
                }
            }
        }
    }

    /// Wakes the worker if it waits for entries. The fence pairs with the
    /// worker's (see `Worker::run`): either it sees the entry just pushed
    /// or this sees it idle.
    fn wake_worker(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.worker_idle.load(Ordering::Relaxed)
            && self.worker_idle.swap(false, Ordering::AcqRel)
        {
            self.notify.notify_one();
        }
    }

    fn wake_blocked(&self) {
        if self.blocked_waiters.load(Ordering::Acquire) > 0 {
            let (lock, cv) = &self.space;
            let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
            cv.notify_all();
        }
    }

    fn ctrl(self: &Arc<Self>) -> Result<&tokio::sync::mpsc::UnboundedSender<Cmd>, Error> {
        if self.is_worker_thread() {
            return Err(Error::Logger(
                "called from the logger thread itself (e.g. from a masking function)".into(),
            ));
        }
        self.ensure_started();
        self.ctrl
            .get()
            .ok_or_else(|| Error::Logger("the logger thread could not start".into()))
    }

    fn stopped() -> Error {
        Error::Logger("the logger thread has stopped".into())
    }

    /// Asks the worker something and waits for the answer.
    fn call<T: Send + 'static>(
        self: &Arc<Self>,
        make: impl FnOnce(std::sync::mpsc::SyncSender<Result<T, Error>>) -> Cmd,
    ) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.ctrl()?.send(make(tx)).map_err(|_| Self::stopped())?;
        rx.recv().map_err(|_| Self::stopped())?
    }

    pub(crate) fn login(self: &Arc<Self>) -> Result<LoginInfo, Error> {
        // Known: no need to wait behind a round the logger thread is in.
        if let Some(l) = self.api.login_info() {
            return Ok(l);
        }
        self.call(|done| Cmd::Login { done })
    }

    pub(crate) fn resolve_blocking(
        self: &Arc<Self>,
        object: &Arc<ObjectInner>,
    ) -> Result<String, Error> {
        if let Some(r) = object.resolved.get() {
            return Ok(r.id.clone());
        }
        let object = object.clone();
        self.call(move |done| Cmd::Resolve { object, done })
    }

    /// Blocks until everything queued before the call has an outcome, or
    /// the bound passes (then what is left is given up and counted).
    pub(crate) fn flush(self: &Arc<Self>, bound: Bound) -> Result<(), Error> {
        let start = Instant::now();
        let before = self.counters.undelivered.load(Ordering::Acquire);
        let deadline = bound.total.map(|t| start + t);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.ctrl()?
            .send(Cmd::Flush {
                done: Responder::Sync(tx),
                deadline,
            })
            .map_err(|_| Self::stopped())?;
        let mut progress = (self.counters.settled(), Instant::now());
        loop {
            let now = Instant::now();
            let mut wake = deadline.unwrap_or(now + Duration::from_secs(3600));
            if bound.idle.is_some() {
                wake = wake.min(now + Duration::from_millis(50));
            }
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(r) => {
                    // Then the attachments of the rows just posted.
                    if !self.uploads.wait(deadline) {
                        self.uploads
                            .warn_pending(bound.label, self.counters.attachments_pending());
                    }
                    return self.finish_flush(r, start, before, bound.label);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(Self::stopped()),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            let mut expired = deadline.is_some_and(|d| now >= d);
            if let Some(idle) = bound.idle {
                let settled = self.counters.settled();
                if settled != progress.0 {
                    progress = (settled, now);
                } else if now.duration_since(progress.1) >= idle {
                    expired = true;
                }
            }
            if expired {
                // Abandon what is in flight (the worker may be busy with a
                // round that started before this flush): it counts what it
                // holds and answers at once unless it is wedged.
                self.abandon.request();
                return match rx.recv_timeout(DEADLINE_GRACE) {
                    Ok(Ok(()) | Err(Error::RowsLost(_) | Error::Timeout { .. })) => {
                        Err(self.timeout_error(start, before, bound.label))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(self.give_up(start, before, bound.label)),
                };
            }
        }
    }

    /// The async form of [`flush`](Self::flush) with a total bound. The
    /// bound holds on the caller's side whatever executor it runs on.
    pub(crate) async fn flush_async(
        self: &Arc<Self>,
        total: Option<Duration>,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let before = self.counters.undelivered.load(Ordering::Acquire);
        let deadline = total.map(|t| start + t);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ctrl()?
            .send(Cmd::Flush {
                done: Responder::Async(tx),
                deadline,
            })
            .map_err(|_| Self::stopped())?;
        let Some(d) = deadline else {
            let r = rx.await.map_err(|_| Self::stopped())?;
            self.uploads.wait_async(None).await;
            return self.finish_flush(r, start, before, "flush");
        };
        use futures_util::future::{select, Either};
        let rx = match select(rx, Timer::until(d).fired).await {
            Either::Left((r, _)) => {
                let r = r.map_err(|_| Self::stopped())?;
                if !self.uploads.wait_async(deadline).await {
                    self.uploads
                        .warn_pending("flush", self.counters.attachments_pending());
                }
                return self.finish_flush(r, start, before, "flush");
            }
            Either::Right((_, rx)) => rx,
        };
        // The deadline passed: abandon what is in flight, then give the
        // worker a short grace to count it.
        self.abandon.request();
        match select(rx, Timer::until(Instant::now() + DEADLINE_GRACE).fired).await {
            Either::Left((Ok(Ok(()) | Err(Error::RowsLost(_) | Error::Timeout { .. })), _)) => {
                Err(self.timeout_error(start, before, "flush"))
            }
            Either::Left((Ok(Err(e)), _)) => Err(e),
            _ => Err(self.give_up(start, before, "flush")),
        }
    }

    /// Turns the worker's answer into what the caller gets: never `Ok(())`
    /// after a loss, and the totals line on stderr when something was lost.
    fn finish_flush(
        &self,
        r: Result<(), Error>,
        start: Instant,
        before: u64,
        label: &str,
    ) -> Result<(), Error> {
        match r {
            Ok(()) => match self.reporter.take_losses(&self.counters) {
                None => Ok(()),
                Some(lost) => {
                    self.print_totals(label);
                    Err(Error::RowsLost(lost))
                }
            },
            Err(Error::Timeout { .. }) => Err(self.timeout_error(start, before, label)),
            Err(e) => Err(e),
        }
    }

    fn timeout_error(&self, start: Instant, before: u64, label: &str) -> Error {
        let undelivered = self.counters.undelivered.load(Ordering::Acquire) - before;
        let lost = self
            .reporter
            .take_losses(&self.counters)
            .unwrap_or_default();
        self.print_totals(label);
        Error::Timeout {
            waited_ms: start.elapsed().as_millis(),
            undelivered,
            lost,
        }
    }

    /// The caller's side of a missed deadline when the worker did not
    /// answer in time: abandon the queue here (it is multi-consumer) and
    /// report; the worker abandons what it holds when it gets to it.
    fn give_up(&self, start: Instant, before: u64, label: &str) -> Error {
        self.abandon.request();
        // The worker stops writing what it abandons (the totals line below
        // must count exactly what was written); a piece it is writing now
        // is finished and counted first.
        *self.dump_closed.lock().unwrap_or_else(|e| e.into_inner()) =
            self.abandon.requested.load(Ordering::Acquire);
        let (n, texts) = self.take_queue();
        self.counters.undelivered.fetch_add(n, Ordering::AcqRel);
        // What the worker still holds (it is busy, e.g. serializing a large
        // round) is counted here, so nothing is lost silently if the
        // process exits now; the worker will not count it again.
        {
            let mut written_off = self
                .counters
                .written_off
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let held = self.counters.snapshot().pending;
            *written_off += held;
            self.counters.undelivered.fetch_add(held, Ordering::AcqRel);
        }
        self.dump_undelivered(&texts, None);
        self.timeout_error(start, before, label)
    }

    /// Takes every queued entry.
    fn drain_queue(&self) -> Vec<Op> {
        let ops = self.queue.drain();
        if !ops.is_empty() {
            self.wake_blocked();
        }
        ops
    }

    /// Takes every queued entry as row text (with container ids when known).
    fn take_queue(&self) -> (u64, Vec<String>) {
        let dump = self.config.failed_payloads_dir.is_some();
        let mut n = 0;
        let mut texts = Vec::new();
        for op in self.queue.drain() {
            n += 1;
            if dump {
                if let Some(text) = rows::op_text(op) {
                    texts.push(text);
                }
            } else {
                rows::discard(op);
            }
        }
        self.wake_blocked();
        (n, texts)
    }

    /// Writes undelivered rows to the failed-payload directory, in bodies
    /// under the request size limit, and counts what was written. With
    /// `abandon`, the abandon-request count the writer acts on, it stops
    /// once a caller has given up on that abandonment.
    fn dump_undelivered(&self, texts: &[String], abandon: Option<u64>) {
        let Some(dir) = &self.config.failed_payloads_dir else {
            return;
        };
        if texts.is_empty() {
            return;
        }
        let sizes: Vec<usize> = texts.iter().map(String::len).collect();
        let max = self
            .config
            .max_request_size
            .unwrap_or(crate::config::DEFAULT_MAX_REQUEST_SIZE);
        for idx in crate::merge::batch_partition(&sizes, usize::MAX, max) {
            let refs: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
            let closed = self.dump_closed.lock().unwrap_or_else(|e| e.into_inner());
            if abandon.is_some_and(|a| *closed >= a) {
                return;
            }
            if payloads::write(dir, &crate::merge::logs3_body(&refs)) {
                self.counters
                    .dumped
                    .fetch_add(idx.len() as u64, Ordering::AcqRel);
            }
        }
    }

    /// The totals line ("dropped 968,585 of 1,000,000 rows ...") when
    /// anything was lost since the last one.
    pub(crate) fn print_totals(&self, when: &str) {
        self.reporter.totals(
            &self.counters,
            when,
            self.config.failed_payloads_dir.as_deref(),
        );
    }

    /// Stops the worker (after the caller's final flush). What is queued
    /// then or later is counted undelivered (the worker gives up what it
    /// finds when it stops; `enqueue` what comes after).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(ctrl) = self.ctrl.get() {
            let _ = ctrl.send(Cmd::Shutdown);
        }
    }

    /// Rows queued after `stop`: counted undelivered and said on stderr
    /// (throttled). The logger thread's last drain (`write`) also writes
    /// them to the failed-payload directory; an application thread does
    /// not (no serializing or file I/O on the caller's path).
    fn give_up_after_stop(&self, ops: Vec<Op>, write: bool) {
        if ops.is_empty() {
            return;
        }
        let n = ops.len() as u64;
        let dump = write && self.config.failed_payloads_dir.is_some();
        let mut texts = Vec::new();
        for op in ops {
            if dump {
                texts.extend(rows::op_text(op));
            } else {
                rows::discard(op);
            }
        }
        self.counters.undelivered.fetch_add(n, Ordering::AcqRel);
        self.dump_undelivered(&texts, None);
        self.reporter.after_shutdown(n);
    }

    #[cfg(test)]
    pub(crate) fn pop_for_test(&self) -> Option<Op> {
        self.queue.pop()
    }
}

/// A deadline as a future that needs no runtime: a short-lived thread
/// completes it, or exits at once when the timer is dropped.
struct Timer {
    fired: tokio::sync::oneshot::Receiver<()>,
    _cancel: std::sync::mpsc::Sender<()>,
}

impl Timer {
    fn until(at: Instant) -> Timer {
        let (fire, fired) = tokio::sync::oneshot::channel();
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("braintrust-deadline".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    cancelled.recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    let _ = fire.send(());
                }
            });
        if spawned.is_err() {
            // No thread: the worker's own enforcement of the deadline is
            // what bounds the wait.
            crate::diagnostics::warn_once(
                "deadline-thread",
                "braintrust: cannot start a deadline thread; async flush deadlines rely on the logger thread",
            );
        }
        Timer {
            fired,
            _cancel: cancel,
        }
    }
}
