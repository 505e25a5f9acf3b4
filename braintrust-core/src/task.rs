//! Carrying the current span into spawned tasks, blocking pools and threads.
//!
//! The current span lives in one thread-local slot (see [`current_span`]).
//! Code on the same thread or in the same future sees it; work handed to
//! another task or thread does not, exactly as tokio's task-locals are not
//! inherited by `tokio::spawn`. Every helper here does the same two steps:
//!
//! 1. at the call, it **captures the current span handle** (a [`Span`] clone,
//!    which carries the ids, the container and the backend, not a borrow);
//! 2. inside the new task or thread, it **makes that span current** for the
//!    whole run (every poll, for a future) and restores the previous one after,
//!    unwinding included.
//!
//! Because the captured value is a handle, the parent may end (or every other
//! handle may be dropped) before the child starts: the child still gets
//! `span_parents = [parent.span_id]` and the parent's `root_span_id`. Holding
//! the handle keeps a span that ends *on drop* open until the child is done;
//! call [`Span::end`] to end it earlier.
//!
//! | instead of | write |
//! | --- | --- |
//! | `tokio::spawn(fut)` | [`spawn`]`(fut)` or `tokio::spawn(fut.with_current_span())` |
//! | `tokio::task::spawn_blocking(f)` | [`spawn_blocking`]`(f)` |
//! | `tokio::task::spawn_local(fut)` | [`spawn_local`]`(fut)` |
//! | `join_set.spawn(fut)` | `join_set.spawn(fut.with_current_span())` |
//! | `handle.spawn(fut)` | [`TracedHandle`]`::new(handle).spawn(fut)` |
//! | `std::thread::spawn(f)` | [`thread::spawn`]`(f)` |
//! | `scope.spawn(f)` (in `std::thread::scope`) | [`thread::spawn_scoped`]`(scope, f)` |
//! | a thread pool for blocking work | [`TracedThreadPool`] (Python's `TracedThreadPoolExecutor`) |
//! | `rayon::spawn(f)`, any `FnOnce` executor | `rayon::spawn(`[`wrap_fn`]`(f))` |
//! | `items.par_iter().map(f)` | `items.par_iter().map(`[`wrap_map`]`(f))` |
//!
//! `.with_current_span()` comes from [`WithSpan`]. Futures combined in one
//! task (`join!`, `select!`, `FuturesUnordered`) are polled inside that task,
//! so they see its current span without any helper; give a branch its own
//! span with `branch.in_span(span)`. A branch that loses a `select!` is
//! dropped with its span current, then the previous span is restored.
//!
//! # Executors you own (hyper, tower, rayon)
//!
//! Hand the executor work that is already bound to the span: a future through
//! [`WithSpan::with_current_span`], a closure through [`wrap_fn`]. For hyper's
//! `rt::Executor` (the connection tasks HTTP/2 spawns), forward to [`spawn`]:
//!
//! ```
//! # use std::future::Future;
//! # trait Executor<Fut> { fn execute(&self, fut: Fut); } // stands for `hyper::rt::Executor`
//! #[derive(Clone)]
//! struct TracedExec;
//! impl<F> Executor<F> for TracedExec
//! where
//!     F: Future + Send + 'static,
//!     F::Output: Send + 'static,
//! {
//!     fn execute(&self, fut: F) {
//!         braintrust_core::spawn(fut);
//!     }
//! }
//! ```
//!
//! In a tower `Service` (or an axum handler), start the request's span and run
//! the handler's future in it: `handle(req).in_span(logger.start_span(args))`.
//! Work the handler spawns then follows through the helpers above.
//!
//! # Why plain `tokio::spawn` is not propagated automatically
//!
//! A spawned task starts with no current span, so a span started in it with
//! [`start_span`](crate::start_span) is a new root of the current logger (or a
//! no-op without one). This crate offers no feature flag that changes that,
//! because it cannot be done soundly on stable tokio:
//!
//! - tokio has no stable spawn hook. `tokio::spawn` takes the future as is,
//!   and task-locals are deliberately not inherited.
//! - The runtime hooks that could emulate it (`on_task_spawn`,
//!   `on_before_task_poll`, `on_after_task_poll`, `on_task_terminate`) exist
//!   only under `--cfg tokio_unstable`, a whole-build compiler flag that a
//!   Cargo feature cannot turn on, and only on runtimes built by hand with a
//!   `Builder` (not `#[tokio::main]`, not runtimes owned by other libraries).
//!   They would also cost a global map lookup around every poll of every task.
//! - Wrapping whatever is current on the *worker* thread would be wrong: a
//!   worker has no span between polls, and a task's span must come from the
//!   task that spawned it, which is known only at the spawn call.
//!
//! So propagation is explicit: change `tokio::spawn` to `braintrust::spawn`
//! (same signature), or wrap the future with `.with_current_span()`. The one
//! exception is a direct traced call, `tokio::spawn(traced_fn(x))`: a
//! `#[traced]` function notes the caller's span when it is *called*, so it
//! nests without a helper.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::task::JoinHandle;

use crate::context::{current_span, WithSpan};
#[cfg(doc)]
use crate::span::Span;

/// `tokio::spawn` that runs the future in the span current at the call.
///
/// Same signature and panics as [`tokio::spawn`] (it must be called inside a
/// tokio runtime). Spans the task starts with
/// [`start_span`](crate::start_span) are children of the caller's span, even
/// when that span has ended by the time the task runs.
///
/// ```
/// use braintrust_core::{current_span, spawn};
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let parent = current_span(); // a real span when a logger is initialized
///     let child = spawn(async { current_span() });
///     assert!(child.await.unwrap().same_span(&parent));
/// });
/// ```
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.with_current_span())
}

/// `tokio::task::spawn_blocking` that runs `f` in the span current at the call.
///
/// ```
/// use braintrust_core::{current_span, spawn_blocking};
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let n = spawn_blocking(|| { assert!(current_span().is_noop()); 2 }).await.unwrap();
///     assert_eq!(n, 2);
/// });
/// ```
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(wrap_fn(f))
}

/// `tokio::task::spawn_local` that runs the future in the span current at the
/// call. Must be called inside a `tokio::task::LocalSet`, like `spawn_local`.
///
/// ```
/// use braintrust_core::spawn_local;
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let local = tokio::task::LocalSet::new();
/// let n = local.block_on(&rt, async {
///     let rc = std::rc::Rc::new(5); // not Send: fine on a LocalSet
///     spawn_local(async move { *rc }).await.unwrap()
/// });
/// assert_eq!(n, 5);
/// ```
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    tokio::task::spawn_local(future.with_current_span())
}

/// Binds `f` to the span current now: the returned closure runs `f` with that
/// span current, wherever and whenever it is called, and restores the
/// previous span after (unwinding included).
///
/// The adapter for executors you own that take an `FnOnce`: rayon, a job
/// queue, a callback registry.
///
/// ```
/// use braintrust_core::{current_span, wrap_fn};
/// let job = wrap_fn(|| current_span().is_noop());
/// // e.g. rayon::spawn(job), or any thread:
/// assert!(std::thread::spawn(job).join().unwrap());
/// ```
pub fn wrap_fn<F, R>(f: F) -> impl FnOnce() -> R
where
    F: FnOnce() -> R,
{
    let span = current_span();
    move || span.in_scope(f)
}

/// Binds a one-argument `Fn` to the span current now: each call runs with that
/// span current. For data-parallel maps such as rayon's
/// `items.par_iter().map(wrap_map(|x| work(x)))`, whose closures run on pool
/// threads; the closure is `Send + Sync` when `f` is.
///
/// ```
/// use braintrust_core::{current_span, wrap_map};
/// let double = wrap_map(|x: i32| { assert!(current_span().is_noop()); x * 2 });
/// let out: Vec<i32> = std::thread::scope(|s| {
///     let double = &double;
///     let hs: Vec<_> = (1..=3).map(|x| s.spawn(move || double(x))).collect();
///     hs.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert_eq!(out, [2, 4, 6]);
/// ```
pub fn wrap_map<F, A, R>(f: F) -> impl Fn(A) -> R
where
    F: Fn(A) -> R,
{
    let span = current_span();
    move |a| span.in_scope(|| f(a))
}

/// `std::thread` counterparts that run the new thread in the span current at
/// the spawn call.
pub mod thread {
    use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

    use super::wrap_fn;

    /// [`std::thread::spawn`] that runs `f` in the span current at the call.
    /// Panics if the OS cannot create a thread, like `std::thread::spawn`.
    ///
    /// ```
    /// let t = braintrust_core::thread::spawn(|| braintrust_core::current_span().is_noop());
    /// assert!(t.join().unwrap());
    /// ```
    pub fn spawn<F, T>(f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        std::thread::spawn(wrap_fn(f))
    }

    /// [`std::thread::Builder::spawn`] that runs `f` in the span current at the
    /// call (for a named thread or a custom stack size).
    ///
    /// ```
    /// let b = std::thread::Builder::new().name("worker".into());
    /// let t = braintrust_core::thread::spawn_with(b, || 1).unwrap();
    /// assert_eq!(t.join().unwrap(), 1);
    /// ```
    pub fn spawn_with<F, T>(builder: Builder, f: F) -> std::io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        builder.spawn(wrap_fn(f))
    }

    /// `scope.spawn(f)` for [`std::thread::scope`] that runs `f` in the span
    /// current at the call. The closure may borrow from the enclosing scope.
    ///
    /// ```
    /// use braintrust_core::thread::spawn_scoped;
    /// let data = vec![1, 2, 3];
    /// let sum = std::thread::scope(|s| {
    ///     let h = spawn_scoped(s, || data.iter().sum::<i32>());
    ///     h.join().unwrap()
    /// });
    /// assert_eq!(sum, 6);
    /// ```
    pub fn spawn_scoped<'scope, 'env, F, T>(
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        scope.spawn(wrap_fn(f))
    }
}

/// A `tokio::runtime::Handle` whose `spawn` and `spawn_blocking` always run the
/// work in the submitter's current span. Cheap to clone; hand it to code that
/// spawns onto a runtime it was given.
///
/// ```
/// use braintrust_core::{current_span, TracedHandle};
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let handle = TracedHandle::new(rt.handle().clone());
/// let t = handle.spawn(async { current_span().is_noop() });
/// assert!(handle.block_on(t).unwrap());
/// ```
#[derive(Clone, Debug)]
pub struct TracedHandle {
    handle: tokio::runtime::Handle,
}

impl TracedHandle {
    /// Wraps a runtime handle.
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        TracedHandle { handle }
    }

    /// The handle of the runtime this is called in.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`tokio::runtime::Handle::current`].
    #[track_caller]
    pub fn current() -> Self {
        Self::new(tokio::runtime::Handle::current())
    }

    /// The handle of the runtime this is called in, or an error outside one.
    pub fn try_current() -> Result<Self, tokio::runtime::TryCurrentError> {
        tokio::runtime::Handle::try_current().map(Self::new)
    }

    /// Spawns `future` on the runtime, in the span current at the call.
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future.with_current_span())
    }

    /// Runs `f` on the runtime's blocking pool, in the span current at the call.
    #[track_caller]
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.handle.spawn_blocking(wrap_fn(f))
    }

    /// Runs `future` to completion on this thread, in the span current at the
    /// call. Panics where [`tokio::runtime::Handle::block_on`] does (inside an
    /// async context).
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future.with_current_span())
    }

    /// The wrapped handle (for APIs that need the plain one).
    pub fn inner(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Unwraps the handle.
    pub fn into_inner(self) -> tokio::runtime::Handle {
        self.handle
    }
}

impl From<tokio::runtime::Handle> for TracedHandle {
    fn from(handle: tokio::runtime::Handle) -> Self {
        Self::new(handle)
    }
}

/// A tokio runtime whose `spawn`, `spawn_blocking` and `block_on` always run
/// the work in the submitter's current span. Owns the runtime; dropping it
/// shuts the runtime down as dropping a `tokio::runtime::Runtime` does.
///
/// ```
/// use braintrust_core::{current_span, TracedRuntime};
/// let rt = TracedRuntime::multi_thread().unwrap();
/// let t = rt.spawn(async { current_span().is_noop() });
/// assert!(rt.block_on(t).unwrap());
/// ```
#[derive(Debug)]
pub struct TracedRuntime {
    rt: tokio::runtime::Runtime,
}

impl TracedRuntime {
    /// Wraps a runtime.
    pub fn new(rt: tokio::runtime::Runtime) -> Self {
        TracedRuntime { rt }
    }

    /// A multi-thread runtime with all drivers enabled (as `Runtime::new`).
    pub fn multi_thread() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(Self::new)
    }

    /// A current-thread runtime with all drivers enabled.
    pub fn current_thread() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(Self::new)
    }

    /// A [`TracedHandle`] to this runtime.
    pub fn handle(&self) -> TracedHandle {
        TracedHandle::new(self.rt.handle().clone())
    }

    /// Spawns `future` on the runtime, in the span current at the call.
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(future.with_current_span())
    }

    /// Runs `f` on the runtime's blocking pool, in the span current at the call.
    #[track_caller]
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.rt.spawn_blocking(wrap_fn(f))
    }

    /// Runs `future` to completion on this thread, in the span current at the
    /// call. Panics inside an async context, like `Runtime::block_on`.
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future.with_current_span())
    }

    /// The wrapped runtime.
    pub fn inner(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Unwraps the runtime.
    pub fn into_inner(self) -> tokio::runtime::Runtime {
        self.rt
    }
}

impl From<tokio::runtime::Runtime> for TracedRuntime {
    fn from(rt: tokio::runtime::Runtime) -> Self {
        Self::new(rt)
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

struct PoolQueue {
    jobs: VecDeque<Job>,
    shutdown: bool,
}

struct PoolShared {
    queue: Mutex<PoolQueue>,
    ready: Condvar,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolQueue> {
        // Jobs run outside the lock and panics in them are caught, so a
        // poisoned lock can only come from an allocation failure; go on.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let job = {
                let mut q = self.lock();
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    if q.shutdown {
                        return;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            job();
        }
    }
}

/// A pool of OS threads for blocking work whose [`submit`](Self::submit)
/// runs each job in the submitter's current span: the counterpart of
/// Python's `TracedThreadPoolExecutor`.
///
/// Jobs run in submission order on up to `max_workers` threads. A job that
/// panics does not take its worker down: the panic comes back from
/// [`PoolJoinHandle::join`]. Dropping the pool (or [`shutdown`](Self::shutdown))
/// waits for every job already submitted, then joins the threads, like
/// leaving Python's `with ThreadPoolExecutor(...)` block.
///
/// ```
/// use braintrust_core::{current_span, TracedThreadPool};
/// let pool = TracedThreadPool::new(2);
/// let a = pool.submit(|| 1 + 1);
/// let m = pool.submit(|| 1 * 1);
/// let in_span = pool.submit(|| current_span().is_noop()); // the caller's span: none here
/// assert_eq!(a.join().unwrap(), 2);
/// assert_eq!(m.join().unwrap(), 1);
/// assert!(in_span.join().unwrap());
/// assert!(pool.submit(|| panic!("boom")).join().is_err());
/// ```
pub struct TracedThreadPool {
    shared: Arc<PoolShared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for TracedThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedThreadPool")
            .field("max_workers", &self.workers.len())
            .finish()
    }
}

impl TracedThreadPool {
    /// Starts a pool of `max_workers` threads (0 counts as 1), named
    /// `braintrust-pool-N`.
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread, like `std::thread::spawn`; use
    /// [`try_new`](Self::try_new) to get the error instead.
    pub fn new(max_workers: usize) -> Self {
        Self::try_new(max_workers).expect("braintrust: failed to spawn a thread-pool worker")
    }

    /// Starts a pool of `max_workers` threads (0 counts as 1), or returns the
    /// OS error if a thread cannot be created (the threads already started are
    /// stopped).
    pub fn try_new(max_workers: usize) -> std::io::Result<Self> {
        let shared = Arc::new(PoolShared {
            queue: Mutex::new(PoolQueue {
                jobs: VecDeque::new(),
                shutdown: false,
            }),
            ready: Condvar::new(),
        });
        let mut pool = TracedThreadPool {
            shared,
            workers: Vec::with_capacity(max_workers.max(1)),
        };
        for i in 0..max_workers.max(1) {
            let shared = pool.shared.clone();
            let worker = std::thread::Builder::new()
                .name(format!("braintrust-pool-{i}"))
                .spawn(move || shared.work())?; // `pool` drops here: stops the started ones
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// The number of worker threads.
    pub fn max_workers(&self) -> usize {
        self.workers.len()
    }

    /// Queues `f` to run on a worker in the span current at this call, and
    /// returns a handle to its result. Never blocks.
    pub fn submit<F, T>(&self, f: F) -> PoolJoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                result: None,
                waker: None,
            }),
            done: Condvar::new(),
        });
        let completer = Completer(Some(slot.clone()));
        let f = wrap_fn(f);
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(f));
            completer.complete(result);
        });
        {
            let mut q = self.shared.lock();
            q.jobs.push_back(job);
        }
        self.shared.ready.notify_one();
        PoolJoinHandle { slot }
    }

    /// Waits for every submitted job to finish, then stops the threads.
    /// The same happens on drop.
    pub fn shutdown(self) {
        drop(self)
    }
}

impl Drop for TracedThreadPool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.ready.notify_all();
        let me = std::thread::current().id();
        for w in self.workers.drain(..) {
            // A job that owned the pool and dropped it last cannot join its
            // own thread; that worker exits on its own once the queue is empty.
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
    }
}

struct SlotState<T> {
    result: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

struct Slot<T> {
    state: Mutex<SlotState<T>>,
    done: Condvar,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Delivers a job's result; if the job is dropped without running, delivers
/// an error instead, so a waiting [`PoolJoinHandle`] never hangs.
struct Completer<T>(Option<Arc<Slot<T>>>);

impl<T> Completer<T> {
    fn complete(mut self, result: std::thread::Result<T>) {
        if let Some(slot) = self.0.take() {
            Self::deliver(&slot, result);
        }
    }

    fn deliver(slot: &Slot<T>, result: std::thread::Result<T>) {
        let waker = {
            let mut s = slot.lock();
            s.result = Some(result);
            s.waker.take()
        };
        slot.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            Self::deliver(
                &slot,
                Err(Box::new("braintrust: pool job dropped before it ran")),
            );
        }
    }
}

/// The result of a job submitted to a [`TracedThreadPool`]: [`join`](Self::join)
/// it from sync code or `.await` it from async code. Dropping it detaches the
/// job, which still runs.
pub struct PoolJoinHandle<T> {
    slot: Arc<Slot<T>>,
}

impl<T> fmt::Debug for PoolJoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> PoolJoinHandle<T> {
    /// Blocks until the job finished; its value, or the payload of its panic
    /// (as [`std::thread::JoinHandle::join`] returns it).
    pub fn join(self) -> std::thread::Result<T> {
        let mut s = self.slot.lock();
        loop {
            if let Some(r) = s.result.take() {
                return r;
            }
            s = self.slot.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// True once the job finished (its result is ready).
    pub fn is_finished(&self) -> bool {
        self.slot.lock().result.is_some()
    }
}

impl<T> Future for PoolJoinHandle<T> {
    type Output = std::thread::Result<T>;

    /// Ready with what [`join`](Self::join) returns. Polling again after that
    /// panics, as for any finished future.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock();
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                match &mut s.waker {
                    Some(w) => w.clone_from(cx.waker()),
                    None => s.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn pool_runs_every_job_before_drop_returns() {
        let n = Arc::new(AtomicUsize::new(0));
        {
            let pool = TracedThreadPool::new(3);
            for _ in 0..100 {
                let n = n.clone();
                pool.submit(move || n.fetch_add(1, Ordering::SeqCst));
            }
        }
        assert_eq!(n.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn pool_survives_panics_and_reports_them() {
        let pool = TracedThreadPool::new(1);
        let bad = pool.submit(|| -> u8 { panic!("boom") });
        let good = pool.submit(|| 7u8);
        let err = bad.join().unwrap_err();
        assert_eq!(err.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(good.join().unwrap(), 7);
        assert_eq!(pool.max_workers(), 1);
    }

    #[test]
    fn zero_workers_means_one() {
        let pool = TracedThreadPool::new(0);
        assert_eq!(pool.max_workers(), 1);
        assert_eq!(pool.submit(|| 3).join().unwrap(), 3);
        pool.shutdown();
    }

    #[test]
    fn handle_is_a_future() {
        let pool = TracedThreadPool::new(2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = pool.submit(move || {
            rx.recv().unwrap();
            5
        });
        assert!(!h.is_finished());
        let v = rt.block_on(async move {
            tx.send(()).unwrap();
            h.await.unwrap()
        });
        assert_eq!(v, 5);
    }

    #[test]
    fn dropped_job_reports_an_error() {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::<u8> {
                result: None,
                waker: None,
            }),
            done: Condvar::new(),
        });
        drop(Completer(Some(slot.clone())));
        assert!(PoolJoinHandle { slot }.join().is_err());
    }

    #[test]
    fn pool_dropped_inside_its_own_job_does_not_deadlock() {
        let pool = Arc::new(TracedThreadPool::new(2));
        let p2 = pool.clone();
        let h = pool.submit(move || drop(p2));
        drop(pool); // the job may now hold the last handle
        h.join().unwrap();
    }
}
