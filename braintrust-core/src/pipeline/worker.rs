//! The worker: one thread per pipeline with its own small tokio runtime, so
//! sync programs and every tokio flavour work the same. It runs rounds
//! (drain the queue, resolve containers, build rows, send), answers
//! flushes, and abandons what it holds when a deadline passes.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use super::rows::{self, IdFields, Prepared, RowsText};
use super::transport::{Limits, Settle, Transport};
use super::{Op, Pipeline};
use crate::api::LoginInfo;
use crate::ids::Id;
use crate::logger::ObjectInner;
use crate::merge::{batch_partition, merge_row_batch, Row};
use crate::retry::RetryPolicy;
use crate::Error;

/// Commands to the worker.
pub(crate) enum Cmd {
    Flush {
        done: Responder,
        deadline: Option<Instant>,
    },
    Resolve {
        object: Arc<ObjectInner>,
        done: std::sync::mpsc::SyncSender<Result<String, Error>>,
    },
    Login {
        done: std::sync::mpsc::SyncSender<Result<LoginInfo, Error>>,
    },
    Shutdown,
}

/// Where a flush result goes: a blocked thread or an awaiting task.
pub(crate) enum Responder {
    Sync(std::sync::mpsc::SyncSender<Result<(), Error>>),
    Async(tokio::sync::oneshot::Sender<Result<(), Error>>),
}

impl Responder {
    fn send(self, r: Result<(), Error>) {
        match self {
            Responder::Sync(tx) => {
                let _ = tx.send(r);
            }
            Responder::Async(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// True on any logger thread (the exit handler must not wait on itself).
pub(crate) fn on_worker_thread() -> bool {
    IS_WORKER.try_with(Cell::get).unwrap_or(false)
}

pub(super) fn start(p: &Arc<Pipeline>) {
    p.ctrl.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Alive from now on, so blocking enqueues wait for the starting thread.
        p.worker_alive.store(true, Ordering::Release);
        let pipeline = p.clone();
        let spawned = std::thread::Builder::new()
            .name("braintrust-logger".into())
            .spawn(move || {
                IS_WORKER.with(|w| w.set(true));
                let _ = pipeline.worker_thread.set(std::thread::current().id());
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        pipeline.worker_alive.store(false, Ordering::Release);
                        eprintln!(
                            "braintrust: cannot start the logger runtime: {e}; logging is disabled"
                        );
                        return;
                    }
                };
                rt.block_on(Worker::new(pipeline.clone()).run(rx));
                pipeline.worker_alive.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            p.worker_alive.store(false, Ordering::Release);
            eprintln!("braintrust: cannot start the logger thread: {e}; logging is disabled");
        }
        tx
    });
}

/// One attempt of a call to the backend, cut by the request timeout or
/// `budget_deadline`, whichever comes first; a cut attempt is a transient
/// failure (`what` names the call in its message).
pub(super) async fn attempt_within<T, E: From<Error>>(
    config: &crate::config::Config,
    budget_deadline: Instant,
    what: &str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let deadline = (Instant::now() + config.effective_timeout()).min(budget_deadline);
    match tokio::time::timeout_at(deadline.into(), op).await {
        Ok(r) => r,
        Err(_) => Err(E::from(Error::Http {
            context: what.to_string(),
            message: "no answer in time".into(),
            status: None,
        })),
    }
}

/// Most entries one round serializes at once: enough for every concurrent
/// request to carry a full batch, and at least 1,000. It bounds the worker's
/// working set during a burst; the round goes on until the queue is empty.
fn chunk_limit(batch_size: usize, concurrency: usize) -> usize {
    batch_size.saturating_mul(concurrency).max(1_000)
}

/// Row text a chunk aims at once its rows' size is known.
const CHUNK_BYTES: usize = 2 << 20;

/// Chunks of at least twice this many entries are serialized by two threads.
const SPLIT_AT: usize = 256;

/// What a round holds that has no outcome yet. On abandonment this is
/// what gets counted (and written to the failed-payload directory).
#[derive(Default)]
struct Held {
    /// Entries not yet turned into rows, taken from the front chunk by
    /// chunk (a `Vec` would shift the rest at each chunk of a large round).
    ops: VecDeque<Op>,
    /// Rows on another thread: being masked or serialized (counted, never
    /// written: they are not at hand, and masked rows not masked yet).
    elsewhere: u64,
    /// Rows serialized and being sent; `unsettled[i]` until row `i` ends.
    prepared: Option<Rc<Prepared>>,
    unsettled: Vec<bool>,
    /// The abandon-request count when the round started: once it changes,
    /// nothing in the round settles rows any more; `abandon` counts them.
    epoch: u64,
}

/// What ended the worker's wait.
enum Woke {
    Cmd(Option<Cmd>),
    Entries,
    Tick,
    Nothing,
}

/// Why a round stopped early.
enum Stop {
    Abandoned,
    Deadline,
}

/// The reason rows could not even be built (login or registration).
struct ResolveFailure {
    cause: String,
    /// Not worth retrying (an invalid key, a wrong URL).
    permanent: bool,
}

struct Worker {
    p: Arc<Pipeline>,
    limits: Cell<Option<Limits>>,
    /// After a failed login: no new attempt before this instant. Rows
    /// arriving meanwhile stay queued (a transient failure) or fail with the
    /// remembered cause (a permanent one).
    login_down: RefCell<Option<(Instant, ResolveFailure)>>,
}

impl Worker {
    fn new(p: Arc<Pipeline>) -> Worker {
        Worker {
            p,
            limits: Cell::new(None),
            login_down: RefCell::new(None),
        }
    }

    fn policy(&self) -> RetryPolicy {
        retry_policy(&self.p.config)
    }

    async fn run(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Cmd>) {
        let sync_flush = self.p.config.sync_flush;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let p = self.p.clone();
        loop {
            // Waiting: say so, then look once more (the fence pairs with the
            // producers' in `Pipeline::wake_worker`), so an entry pushed now
            // is either seen here or wakes the wait below.
            p.worker_idle.store(true, Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::SeqCst);
            // Commands first, between rounds: a flush must not wait behind
            // a stream of rows that never lets the queue empty.
            let ready = match rx.try_recv() {
                Ok(cmd) => Some(Woke::Cmd(Some(cmd))),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => Some(Woke::Cmd(None)),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => None,
            };
            if ready.is_none() && !sync_flush && !p.queue.is_empty() {
                p.worker_idle.store(false, Ordering::Relaxed);
                self.deliver_round(None, false).await;
                continue;
            }
            let woke = match ready {
                Some(w) => w,
                None => tokio::select! {
                    biased;
                    cmd = rx.recv() => Woke::Cmd(cmd),
                    // A caller gave up while nothing was in flight; it took the
                    // queue itself. Only the permit is consumed here.
                    _ = p.abandon.notify.notified() => Woke::Nothing,
                    _ = p.notify.notified(), if !sync_flush => Woke::Entries,
                    _ = tick.tick() => Woke::Tick,
                },
            };
            p.worker_idle.store(false, Ordering::Relaxed);
            match woke {
                Woke::Cmd(None | Some(Cmd::Shutdown)) => {
                    // Rows queued after the final flush are never sent:
                    // counted undelivered (and written), not left pending.
                    let queued = self.p.drain_queue();
                    self.p.give_up_after_stop(queued, true);
                    break;
                }
                Woke::Cmd(Some(Cmd::Flush { done, deadline })) => {
                    let r = match self.deliver_round(deadline, true).await {
                        None => Ok(()),
                        Some(_) => Err(Error::Timeout {
                            waited_ms: 0,
                            undelivered: 0,
                            lost: Default::default(),
                        }),
                    };
                    done.send(r);
                }
                Woke::Cmd(Some(Cmd::Resolve { object, done })) => {
                    let r = self.resolve_object(&object).await;
                    let _ = done.send(r);
                }
                Woke::Cmd(Some(Cmd::Login { done })) => {
                    // One attempt, cut by the retry budget like every call.
                    let deadline = self.policy().start().budget_deadline();
                    let r = self
                        .within(deadline, "log in to Braintrust", self.p.api.ensure_login())
                        .await;
                    let _ = done.send(r);
                }
                Woke::Nothing => {}
                Woke::Entries => {
                    self.deliver_round(None, false).await;
                }
                Woke::Tick => {
                    self.p.wake_blocked();
                    if !sync_flush && !self.p.queue.is_empty() {
                        self.deliver_round(None, false).await;
                    }
                }
            }
        }
    }

    /// One round over everything queued now; stops early (abandoning what
    /// it holds) at `deadline` or when a caller asks. While login is paused
    /// after a transient failure the queue is left as is, or, for a flush,
    /// waited on until the pause ends. One round, not rounds until the
    /// queue is empty: a flush covers what was logged before it (all of
    /// it queued when its command arrives), and rows other threads keep
    /// logging must not hold it (or the commands behind it) without end.
    async fn deliver_round(&self, deadline: Option<Instant>, flush: bool) -> Option<Stop> {
        let p = self.p.clone();
        // Requests made before this call were answered by then: a permit
        // they left behind must not abandon new work.
        let epoch = p.abandon.requested.load(Ordering::Acquire);
        let abandon_requested = || async {
            loop {
                p.abandon.notify.notified().await;
                if p.abandon.requested.load(Ordering::Acquire) != epoch {
                    return;
                }
            }
        };
        let deadline_passes = || async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        if let Some(until) = self.login_paused() {
            if !flush || self.p.queue.is_empty() {
                return None;
            }
            let stop = tokio::select! {
                biased;
                _ = abandon_requested() => Some(Stop::Abandoned),
                _ = deadline_passes() => Some(Stop::Deadline),
                _ = tokio::time::sleep_until(until.into()) => None,
            };
            if let Some(stop) = stop {
                self.abandon(&RefCell::new(Held {
                    epoch,
                    ..Held::default()
                }));
                return Some(stop);
            }
        }
        let ops = self.p.drain_queue();
        if ops.is_empty() {
            return None;
        }
        let held = RefCell::new(Held {
            ops: ops.into(),
            epoch,
            ..Held::default()
        });
        let stop = {
            let round = self.round(&held);
            tokio::select! {
                biased;
                _ = abandon_requested() => Some(Stop::Abandoned),
                _ = deadline_passes() => Some(Stop::Deadline),
                _ = round => None,
            }
        };
        // A request that came while the round was finishing still
        // abandons what it left in `held`.
        let stop = stop.or_else(|| self.abandoning(&held).then_some(Stop::Abandoned));
        if stop.is_some() {
            self.abandon(&held);
        }
        stop
    }

    /// Gives up what `held` holds and everything queued: counted as
    /// undelivered, written to the failed-payload directory when set (except
    /// rows inside the masking function, which are not masked yet).
    fn abandon(&self, held: &RefCell<Held>) {
        let request = self.p.abandon.requested.load(Ordering::Acquire);
        let mut h = held.borrow_mut();
        let dump = self.p.config.failed_payloads_dir.is_some();
        // Counted before anything is written out (cheap), so a caller
        // waiting for the answer sees the count even if writing takes a while.
        let mut n = h.elsewhere + h.ops.len() as u64;
        if let Some(prep) = &h.prepared {
            n += (0..prep.len())
                .filter(|&i| h.unsettled.get(i).copied().unwrap_or(false))
                .map(|i| prep.weight(i))
                .sum::<u64>();
        }
        let ops = std::mem::take(&mut h.ops);
        let mut texts = Vec::new();
        if let Some(prep) = h.prepared.take() {
            if dump {
                for (i, unsettled) in h.unsettled.iter().enumerate() {
                    if *unsettled {
                        texts.push(prep.row(i).to_string());
                    }
                }
            }
        }
        h.elsewhere = 0;
        h.unsettled.clear();
        drop(h);
        let queued = self.p.drain_queue();
        let n = n + queued.len() as u64;
        {
            // A caller that gave up before counted what it saw pending, all
            // of which is here now: count the rest only.
            let c = &self.p.counters;
            let mut written_off = c.written_off.lock().unwrap_or_else(|e| e.into_inner());
            let already = std::mem::take(&mut *written_off).min(n);
            c.undelivered.fetch_add(n - already, Ordering::AcqRel);
        }
        self.p.dump_undelivered(&texts, Some(request));
        // Written in pieces: what is written is counted at once, so a caller
        // that stops waiting reports exactly what reached the directory.
        let mut ops = ops.into_iter().chain(queued).peekable();
        while ops.peek().is_some() {
            let piece: Vec<String> = ops
                .by_ref()
                .take(1_000)
                .filter_map(|op| {
                    if dump {
                        rows::op_text(op)
                    } else {
                        rows::discard(op);
                        None
                    }
                })
                .collect();
            self.p.dump_undelivered(&piece, Some(request));
        }
    }

    /// True once a caller asked to abandon this round.
    fn abandoning(&self, held: &RefCell<Held>) -> bool {
        self.p.abandon.requested.load(Ordering::Acquire) != held.borrow().epoch
    }

    /// Fails entries of the round for good, unless the round is being
    /// abandoned: then they go back to `held` for `abandon` to count.
    fn fail_held(&self, held: &RefCell<Held>, ops: Vec<Op>, cause: &str) {
        if self.abandoning(held) {
            held.borrow_mut().ops.extend(ops);
        } else {
            self.fail_ops(ops, cause);
        }
    }

    /// One round over the entries in `held`.
    async fn round(&self, held: &RefCell<Held>) {
        // Containers of this round, resolved once each (login at most once).
        let mut containers: Vec<Arc<ObjectInner>> = Vec::new();
        for op in &held.borrow().ops {
            let obj = op_object(op);
            if !containers.iter().any(|o| Arc::ptr_eq(o, obj)) {
                containers.push(obj.clone());
            }
        }
        let login = match self.login().await {
            Ok(l) => Some(l),
            Err(f) => {
                let ops = std::mem::take(&mut held.borrow_mut().ops);
                self.fail_held(held, ops.into(), &f.cause);
                None
            }
        };
        let Some(login) = login else { return };
        let mut ids: Vec<(Arc<ObjectInner>, String)> = Vec::new();
        for obj in containers {
            match self.register(&obj).await {
                Ok(id) => ids.push((obj, id)),
                Err(f) => {
                    let ops = {
                        let mut h = held.borrow_mut();
                        let (mine, rest): (Vec<Op>, Vec<Op>) = std::mem::take(&mut h.ops)
                            .into_iter()
                            .partition(|op| Arc::ptr_eq(op_object(op), &obj));
                        h.ops = rest.into();
                        mine
                    };
                    self.fail_held(held, ops, &f.cause);
                }
            }
        }
        // A `/version` that did not answer within the retry budget spent
        // the round's budget: the batches then fail at once with that cause
        // (as after a batch spent it), so the round lasts one budget.
        let (limits, spent) = self.limits(&login).await;
        let http = match self.p.api.http() {
            Ok(h) => h,
            Err(e) => {
                let ops = std::mem::take(&mut held.borrow_mut().ops);
                self.fail_held(held, ops.into(), &e.to_string());
                return;
            }
        };
        let logs3 = match super::transport::logs3_url(&login) {
            Ok(u) => u,
            Err(cause) => {
                let ops = std::mem::take(&mut held.borrow_mut().ops);
                self.fail_held(held, ops.into(), &cause);
                return;
            }
        };
        let transport = Transport {
            logs3,
            http,
            api: &self.p.api,
            login,
            limits,
            config: &self.p.config,
            counters: &self.p.counters,
            policy: self.policy(),
            spent: std::cell::RefCell::new(spent),
        };
        let chunk_limit_max = chunk_limit(
            self.p.config.batch_size,
            self.p.config.max_concurrent_requests,
        );
        // Chunks hold about CHUNK_BYTES of row text, so large rows do not
        // multiply the memory in flight; `max` then `min`, not `clamp`,
        // never panics whatever the configuration.
        let entries_for = |row_bytes: usize| {
            (CHUNK_BYTES / row_bytes.max(1))
                .max(self.p.config.batch_size)
                .min(chunk_limit_max)
                .max(1)
        };
        // The first chunk's rows are sized from the payload bytes waiting,
        // the next ones from the rows just written.
        let chunk = Cell::new({
            let waiting = self.p.counters.payload_bytes.load(Ordering::Relaxed) as usize;
            let entries = held.borrow().ops.len() + self.p.queue.len();
            entries_for(waiting / entries.max(1))
        });
        let take = || -> Vec<Op> {
            let mut h = held.borrow_mut();
            let n = h.ops.len().min(chunk.get());
            h.ops.drain(..n).collect()
        };
        // Pipelined: the next chunk is serialized on a blocking thread while
        // this one is sent, so building rows and sending them overlap.
        let mut next = Some(self.begin_prepare(take(), &ids, held));
        while let Some(preparing) = next.take() {
            let prepared = preparing.await;
            if let Some(p) = prepared.as_ref().filter(|p| p.len() > 0) {
                chunk.set(entries_for(p.text_len() / p.len()));
            }
            let ops = take();
            if !ops.is_empty() {
                next = Some(self.begin_prepare(ops, &ids, held));
            }
            let Some(prepared) = prepared else {
                continue;
            };
            if let Some(observe) = self.p.row_observer() {
                observe_rows(&observe, &prepared);
            }
            let prepared = Rc::new(prepared);
            {
                let mut h = held.borrow_mut();
                h.unsettled = vec![true; prepared.len()];
                h.prepared = Some(prepared.clone());
            }
            self.send(&transport, &prepared, held).await;
            super::uploads::after_rows(&self.p, &prepared);
            let mut h = held.borrow_mut();
            h.prepared = None;
            h.unsettled.clear();
        }
    }

    /// Starts turning entries into serialized rows; the future gives `None`
    /// when nothing is left to send. Spans with generated row ids have
    /// distinct merge keys (a span has one entry at a time, generated ids
    /// are random), so merging is the identity: without masking they go
    /// straight to JSON text, at once, on a blocking thread. Anything else
    /// takes the general path (merge, mask) when awaited.
    fn begin_prepare<'s>(
        &'s self,
        ops: Vec<Op>,
        ids: &'s [(Arc<ObjectInner>, String)],
        held: &'s RefCell<Held>,
    ) -> LocalBoxFuture<'s, Option<Prepared>> {
        let masking = self.p.masking_function();
        let distinct = ops.iter().all(|op| match op {
            Op::Span(core) => {
                matches!(core.row_id, Id::Uuid(_)) && !core.spilled.load(Ordering::Acquire)
            }
            Op::Text(w) => !w.repeat,
            Op::Row(..) => false,
        });
        if !distinct || masking.is_some() {
            return Box::pin(self.prepare(ops, ids, held));
        }
        let logged = ops.len() as u64;
        held.borrow_mut().elsewhere += logged;
        // Two threads for a large chunk: serializing is most of the
        // pipeline's work, and one thread is its ceiling.
        let mut ops = ops;
        let second = (ops.len() >= 2 * SPLIT_AT).then(|| ops.split_off(ops.len() / 2));
        let spawn = |ops: Vec<Op>| {
            let ids = ids.to_vec();
            tokio::task::spawn_blocking(move || serialize_spans(ops, &ids))
        };
        let first = spawn(ops);
        let second = second.map(spawn);
        Box::pin(async move {
            let mut done = first.await;
            if let Some(second) = second {
                match (&mut done, second.await) {
                    (Ok(a), Ok(b)) => a.append(b),
                    (_, Err(e)) => done = Err(e),
                    _ => {}
                }
            }
            held.borrow_mut().elsewhere -= logged;
            match done {
                Ok(prepared) => {
                    self.forget_empty(logged, &prepared);
                    (prepared.len() > 0).then_some(prepared)
                }
                Err(_) => {
                    // The serializing thread panicked: its rows are lost,
                    // counted, and said.
                    self.p.counters.failed.fetch_add(logged, Ordering::AcqRel);
                    self.p.reporter.failed(
                        &self.p.counters,
                        logged,
                        "rows could not be serialized",
                    );
                    None
                }
            }
        })
    }

    /// Entries → serialized rows by the general path (merge, then mask).
    /// `None` when nothing is left to send.
    async fn prepare(
        &self,
        ops: Vec<Op>,
        ids: &[(Arc<ObjectInner>, String)],
        held: &RefCell<Held>,
    ) -> Option<Prepared> {
        let id_of = |obj: &Arc<ObjectInner>| {
            ids.iter()
                .find(|(o, _)| Arc::ptr_eq(o, obj))
                .map(|(_, id)| id.as_str())
        };
        let masking = self.p.masking_function();
        let mut logged = ops.len() as u64;
        let mut rows_in: Vec<Row> = Vec::with_capacity(ops.len());
        for op in ops {
            // Text written by an application thread is read back to be merged
            // or masked; text it cannot read (nesting deeper than the parser
            // takes) is a row lost, not a row that never was.
            let is_text = matches!(&op, Op::Text(_));
            match rows::op_to_row(op) {
                Some((obj, mut row)) => {
                    if let Some(id) = id_of(&obj) {
                        obj.id_fields(id, &mut row);
                        rows_in.push(row);
                    }
                }
                None if is_text => {
                    logged -= 1;
                    self.p.counters.failed.fetch_add(1, Ordering::AcqRel);
                    self.p.reporter.failed(
                        &self.p.counters,
                        1,
                        "a row written by the application thread could not be read back to merge or mask it (nested deeper than 128 levels)",
                    );
                }
                None => {}
            }
        }
        let mut weights: HashMap<Vec<u8>, u32> = HashMap::new();
        for row in &rows_in {
            *weights.entry(crate::merge::merge_key(row)).or_default() += 1;
        }
        // Every row entering the merge, lost together when a step fails: the
        // rows are counted as the logged rows they stand for, and said.
        let lose_all = |cause: &str| {
            let rows: u64 = weights.values().map(|w| u64::from(*w)).sum();
            self.forget_empty_rows(logged, rows);
            self.p.counters.failed.fetch_add(rows, Ordering::AcqRel);
            self.p.reporter.failed(&self.p.counters, rows, cause);
        };
        let merged = match merge_row_batch(rows_in) {
            Ok(m) => m,
            Err(e) => {
                lose_all(&format!("rows could not be merged: {e}"));
                return None;
            }
        };
        let merged = match masking {
            None => merged,
            Some(f) => {
                // Entries, not merged rows: an abandon meanwhile counts
                // each logged entry once, as on the fast path.
                let n = logged;
                held.borrow_mut().elsewhere += n;
                // Off the worker's runtime thread: a slow masking function
                // must not stop the worker from honouring deadlines.
                let task = tokio::task::spawn_blocking(move || mask_rows(&f, merged));
                let masked = task.await;
                held.borrow_mut().elsewhere -= n;
                match masked {
                    Ok(m) => {
                        if m.failures > 0 {
                            self.p.reporter.masking_failed(m.failures, &m.last_cause);
                        }
                        m.rows
                    }
                    Err(_) => {
                        // A panic the function's own guard did not hold
                        // (e.g. its payload panicked when dropped).
                        lose_all("rows could not be masked: the masking thread panicked");
                        return None;
                    }
                }
            }
        };
        let mut text = RowsText::with_capacity(merged.len());
        for row in &merged {
            let w = weights
                .get(&crate::merge::merge_key(row))
                .copied()
                .unwrap_or(1);
            text.push_row(row, w);
        }
        let prepared = text.finish();
        self.forget_empty(logged, &prepared);
        (prepared.len() > 0).then_some(prepared)
    }

    /// Entries that turned out to hold no write produce no row: they were
    /// never a row to deliver, so they leave the `logged` count.
    fn forget_empty(&self, logged: u64, prepared: &Prepared) {
        let rows: u64 = (0..prepared.len()).map(|i| prepared.weight(i)).sum();
        self.forget_empty_rows(logged, rows);
    }

    /// [`forget_empty`](Self::forget_empty) when `rows` of `logged`
    /// entries held writes.
    fn forget_empty_rows(&self, logged: u64, rows: u64) {
        if rows < logged {
            self.p
                .counters
                .logged
                .fetch_sub(logged - rows, Ordering::AcqRel);
        }
    }

    /// Sends prepared rows in batches, several requests at a time.
    async fn send(&self, transport: &Transport<'_>, prepared: &Rc<Prepared>, held: &RefCell<Held>) {
        let batches = batch_partition(
            &prepared.sizes(),
            self.p.config.batch_size,
            transport.limits.max_request_size,
        );
        let settle = |idx: &[usize], how: Settle| {
            if self.abandoning(held) {
                return; // `abandon` counts what is unsettled
            }
            let mut h = held.borrow_mut();
            let mut n = 0;
            for &i in idx {
                if h.unsettled.get(i).copied().unwrap_or(false) {
                    h.unsettled[i] = false;
                    n += prepared.weight(i);
                }
            }
            drop(h);
            let c = &self.p.counters;
            match how {
                Settle::Delivered => {
                    c.delivered.fetch_add(n, Ordering::AcqRel);
                }
                Settle::Failed { cause, dumped } => {
                    c.failed.fetch_add(n, Ordering::AcqRel);
                    if dumped {
                        c.dumped.fetch_add(n, Ordering::AcqRel);
                    }
                    self.p.reporter.failed(c, n, &cause);
                }
            }
        };
        let settle: &dyn Fn(&[usize], Settle) = &settle;
        stream::iter(batches)
            .map(|idx| transport.deliver(prepared, idx, settle))
            .buffer_unordered(self.p.config.max_concurrent_requests.max(1))
            .collect::<Vec<()>>()
            .await;
    }

    fn fail_ops(&self, ops: Vec<Op>, cause: &str) {
        if ops.is_empty() {
            return;
        }
        let n = ops.len() as u64;
        let mut texts = Vec::new();
        let dump = self.p.config.failed_payloads_dir.is_some();
        for op in ops {
            if dump {
                texts.extend(rows::op_text(op));
            } else {
                rows::discard(op);
            }
        }
        let c = &self.p.counters;
        if let Some(dir) = &self.p.config.failed_payloads_dir {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            if !refs.is_empty() && super::payloads::write(dir, &crate::merge::logs3_body(&refs)) {
                c.dumped.fetch_add(refs.len() as u64, Ordering::AcqRel);
            }
        }
        c.failed.fetch_add(n, Ordering::AcqRel);
        self.p.reporter.failed(c, n, cause);
    }

    /// Logs in: one attempt per retry step, under the retry policy. A failed
    /// login is remembered for the longest backoff, so the rounds that follow
    /// do not hammer a broken endpoint.
    async fn login(&self) -> Result<LoginInfo, ResolveFailure> {
        if let Some(l) = self.p.api.login_info() {
            return Ok(l);
        }
        if let Some((until, f)) = &*self.login_down.borrow() {
            if Instant::now() < *until {
                return Err(ResolveFailure {
                    cause: f.cause.clone(),
                    permanent: f.permanent,
                });
            }
        }
        let r = self
            .with_retries(|| self.p.api.ensure_login(), "log in to Braintrust")
            .await;
        match r {
            Ok(l) => {
                *self.login_down.borrow_mut() = None;
                Ok(l)
            }
            Err(f) => {
                *self.login_down.borrow_mut() = Some((
                    Instant::now() + self.p.config.retry_max_delay,
                    ResolveFailure {
                        cause: f.cause.clone(),
                        permanent: f.permanent,
                    },
                ));
                Err(f)
            }
        }
    }

    /// When login is paused after a transient failure (and no login is
    /// known): the instant the pause ends.
    fn login_paused(&self) -> Option<Instant> {
        match &*self.login_down.borrow() {
            Some((until, f)) if !f.permanent && Instant::now() < *until => {
                self.p.api.login_info().is_none().then_some(*until)
            }
            _ => None,
        }
    }

    /// Registers a container (project, experiment) under the retry policy.
    async fn register(&self, obj: &Arc<ObjectInner>) -> Result<String, ResolveFailure> {
        if let Some(r) = obj.resolved.get() {
            return Ok(r.id.clone());
        }
        self.with_retries(
            || self.p.api.resolve(obj),
            "register the project or experiment",
        )
        .await
        .map(|r| r.id)
    }

    /// For `Logger::resolve_id` and friends: login and registration.
    async fn resolve_object(&self, obj: &Arc<ObjectInner>) -> Result<String, Error> {
        let policy = self.policy();
        let mut retry = policy.start();
        loop {
            let attempt = self.within(
                retry.budget_deadline(),
                "register the project or experiment",
                self.p.api.resolve(obj),
            );
            match attempt.await {
                Ok(r) => return Ok(r.id),
                Err(e) if e.is_transient() => match retry.next_delay(None) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt, cut by the request timeout or `budget_deadline`,
    /// whichever comes first (see [`attempt_within`]).
    async fn within<T>(
        &self,
        budget_deadline: Instant,
        what: &str,
        op: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        attempt_within(&self.p.config, budget_deadline, what, op).await
    }

    async fn with_retries<T, F, Fut>(&self, mut op: F, what: &str) -> Result<T, ResolveFailure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut retry = self.policy().start();
        loop {
            let r = self.within(retry.budget_deadline(), what, op()).await;
            match r {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() => match retry.next_delay(None) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        let tries = retry.attempts();
                        return Err(ResolveFailure {
                            cause: format!(
                                "could not {what} after {tries} tr{}: {e}",
                                if tries == 1 { "y" } else { "ies" }
                            ),
                            permanent: false,
                        });
                    }
                },
                Err(e) => {
                    return Err(ResolveFailure {
                        cause: format!("could not {what}: {e}"),
                        permanent: true,
                    })
                }
            }
        }
    }

    /// The payload limit: the server's (from `/version`), else the configured
    /// one; and, when `/version` did not answer within the request timeout
    /// and the retry budget (whichever is shorter), the cause, which spends
    /// the round's budget.
    async fn limits(&self, login: &LoginInfo) -> (Limits, Option<String>) {
        if let Some(l) = self.limits.get() {
            return (l, None);
        }
        let configured = self.p.config.max_request_size;
        let wait = self
            .p
            .config
            .effective_timeout()
            .min(self.policy().total_budget());
        let version = tokio::time::timeout(
            wait,
            self.p
                .api
                .api_json(login, reqwest::Method::GET, "version", None),
        )
        .await;
        let hung = version.is_err().then(|| {
            format!(
                "GET {}: no answer within {:.1} s",
                crate::config::redact_url(&crate::api::join_url(&login.api_url, "version")),
                wait.as_secs_f64()
            )
        });
        let answered = matches!(version, Ok(Ok(_)));
        let server = match version {
            Ok(Ok(v)) => v
                .get("logs3_payload_max_bytes")
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)
                .map(|n| n as usize),
            Ok(Err(e)) => {
                crate::diagnostics::warn_once(
                    &format!("version-{}", login.api_url),
                    &format!("braintrust: failed to fetch version info for payload limit: {e}"),
                );
                None
            }
            Err(_) => None,
        };
        let l = match server {
            Some(s) => Limits {
                max_request_size: configured.map_or(s, |c| c.min(s)),
                overflow: true,
            },
            None => Limits {
                max_request_size: configured.unwrap_or(crate::config::DEFAULT_MAX_REQUEST_SIZE),
                overflow: false,
            },
        };
        // A good answer is kept. A failed lookup is retried next round, but
        // not one that went unanswered: asking again would make every round
        // spend its budget here even when `/logs3` answers, so the
        // configured limit (without overflow) holds from then on.
        if answered || hung.is_some() {
            self.limits.set(Some(l));
        }
        (l, hung)
    }
}

/// Serializes spans with generated row ids (distinct merge keys) straight
/// to JSON text, with their containers' id fields; rows already written
/// get the id fields only.
fn serialize_spans(ops: Vec<Op>, ids: &[(Arc<ObjectInner>, String)]) -> Prepared {
    let mut text = RowsText::with_capacity(ops.len());
    let mut fields: Vec<IdFields> = Vec::new();
    for op in ops {
        let object = op_object(&op);
        let Some(id) = ids
            .iter()
            .find(|(o, _)| Arc::ptr_eq(o, object))
            .map(|(_, id)| id.as_str())
        else {
            continue;
        };
        let f = match fields.iter().position(|f| f.is_for(object)) {
            Some(i) => &fields[i],
            None => {
                fields.push(IdFields::new(object, id));
                fields.last().expect("just pushed")
            }
        };
        match &op {
            Op::Span(core) => text.push_span(core, core.take_pending(), f),
            Op::Text(w) => text.push_written(w, f),
            Op::Row(..) => {}
        }
    }
    text.finish()
}

/// Hands each prepared row to the row observer; a panicking observer is
/// caught (its rows are still sent) and reported once.
fn observe_rows(observe: &super::RowObserver, prepared: &Prepared) {
    let all = std::panic::AssertUnwindSafe(|| {
        for i in 0..prepared.len() {
            observe(prepared.row(i));
        }
    });
    if std::panic::catch_unwind(all).is_err() {
        crate::diagnostics::warn_once(
            "row-observer-panic",
            "braintrust: the row observer panicked; the rows are still sent to Braintrust",
        );
    }
}

/// The backend's retry policy (rows, login, registration, uploads).
pub(super) fn retry_policy(c: &crate::config::Config) -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(c.num_retries.saturating_add(1))
        .base_delay(c.retry_base_delay)
        .max_delay(c.retry_max_delay)
        .retry_after_cap(c.retry_after_cap)
        .budget(c.retry_budget)
}

fn op_object(op: &Op) -> &Arc<ObjectInner> {
    match op {
        Op::Span(core) => &core.object,
        Op::Row(obj, _) => obj,
        Op::Text(w) => &w.object,
    }
}

/// What masking a batch did: the rows, and how often the function failed.
struct Masked {
    rows: Vec<Row>,
    failures: u64,
    last_cause: String,
}

/// Applies the masking function to each user field; a failure or panic
/// replaces the field with a marker. Panics print nothing: they are counted
/// and reported by the caller, once per period.
fn mask_rows(f: &super::MaskingFunction, rows: Vec<Row>) -> Masked {
    let mut failures = 0;
    let mut last_cause = String::new();
    let rows = rows
        .into_iter()
        .map(|mut row| {
            for field in ["input", "output", "expected", "metadata", "error"] {
                if let Some(v) = row.remove(field) {
                    let cause = match crate::diagnostics::catch_unwind_quietly(|| f(v)) {
                        Ok(Ok(m)) => {
                            row.insert(field.into(), m);
                            continue;
                        }
                        Ok(Err(e)) => e,
                        Err(_) => "the masking function panicked".to_string(),
                    };
                    row.insert(
                        field.into(),
                        Value::String(format!("ERROR: Failed to mask field '{field}' - {cause}")),
                    );
                    failures += 1;
                    last_cause = cause;
                }
            }
            row
        })
        .collect();
    Masked {
        rows,
        failures,
        last_cause,
    }
}
