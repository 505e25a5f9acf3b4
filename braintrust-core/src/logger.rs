//! The background logger: one thread per [`State`] with its own small tokio
//! runtime, so sync programs and every tokio flavour work the same. It drains
//! the queue, turns entries into rows, resolves container ids, merges,
//! masks, serializes, batches, posts with retries, and writes payload files.
//! Nothing here runs on the application's threads.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value};

use crate::event::{deep_merge, Event};
use crate::ids::Id;
use crate::merge::{batch_partition, merge_row_batch, Row};
use crate::object::ObjectInner;
use crate::span::{Pending, SpanCore, StartInfo};
use crate::state::{join_url, truncate, LoginInfo, State};
use crate::Error;

/// One queue entry.
pub(crate) enum Op {
    /// A span has unsent writes (see `SpanCore::pending`).
    Span(Arc<SpanCore>),
    /// A ready row without its container ids (`update_span`, feedback).
    Row(Arc<ObjectInner>, Box<Map<String, Value>>),
}

impl Op {
    /// Takes the entry's writes and tells whether it had any (a row to send).
    fn has_rows(self) -> bool {
        match self {
            Op::Row(..) => true,
            Op::Span(core) => {
                let p = core.take_pending();
                p.start.is_some() || p.event.is_some() || p.end.is_some()
            }
        }
    }

    /// Drops an entry that did not fit in the queue. Its span's writes are
    /// dropped with it (and counted by the caller), never left half-queued.
    pub(crate) fn discard(self) {
        if let Op::Span(core) = self {
            core.mark_dropped();
        }
    }
}

/// Commands to the logger thread.
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
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on any logger thread (used by the exit handler to avoid waiting on itself).
pub(crate) fn on_worker_thread() -> bool {
    IS_WORKER.try_with(|w| w.get()).unwrap_or(false)
}

pub(crate) fn start_worker(state: &State) {
    let mut started = false;
    state.0.ctrl.get_or_init(|| {
        started = true;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Alive from now on, so blocking enqueues wait for the starting thread.
        state.0.worker_alive.store(true, Ordering::Release);
        let st = state.clone();
        let spawned = std::thread::Builder::new()
            .name("braintrust-logger".into())
            .spawn(move || {
                IS_WORKER.with(|w| w.set(true));
                let _ = st.0.worker_thread.set(std::thread::current().id());
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!(
                            "braintrust: cannot start the logger runtime: {e}; logging is disabled"
                        );
                        return;
                    }
                };
                st.0.worker_alive.store(true, Ordering::Release);
                rt.block_on(Worker::new(st.clone()).run(rx));
                st.0.worker_alive.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            state.0.worker_alive.store(false, Ordering::Release);
            eprintln!("braintrust: cannot start the logger thread: {e}; logging is disabled");
        }
        tx
    });
    let _ = started;
}

/// What the server said about payload limits (spec §4.1).
#[derive(Clone, Copy)]
struct Limits {
    max_request_size: usize,
    overflow: bool,
}

struct Worker {
    state: State,
    limits: Option<Limits>,
    /// Failures not yet reported to a `flush()` caller.
    unreported: Option<(u64, String)>,
    warned_delivery: bool,
}

/// The rows of a round serialized back to back in one buffer (no
/// allocation per row): row `i` is `text[ends[i - 1]..ends[i]]`.
struct Prepared {
    text: String,
    ends: Vec<usize>,
}

/// Builds a [`Prepared`]: rows serialized one after the other.
struct RowsText {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl RowsText {
    fn with_capacity(rows: usize) -> RowsText {
        RowsText {
            buf: Vec::with_capacity(rows.saturating_mul(640)),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends a row map.
    fn push_row(&mut self, row: &Row) {
        let start = self.buf.len();
        if serde_json::to_writer(&mut self.buf, row).is_err() {
            self.buf.truncate(start);
            self.buf.extend_from_slice(b"{}");
        }
        self.ends.push(self.buf.len());
    }

    /// Appends a span's row from its unsent writes (nothing when it has none).
    fn push_span(&mut self, core: &SpanCore, p: Pending, ids: &IdFields) {
        let start = self.buf.len();
        if write_span_row(core, &p, &ids.text, &mut self.buf) {
            self.ends.push(self.buf.len());
            return;
        }
        self.buf.truncate(start);
        if let Some(mut row) = span_row(core, p) {
            ids.object.id_fields(&ids.id, &mut row);
            self.push_row(&row);
        }
    }

    fn finish(self) -> Prepared {
        // serde_json writes UTF-8 only; the check is one fast pass.
        let text = String::from_utf8(self.buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Prepared {
            text,
            ends: self.ends,
        }
    }
}

impl Prepared {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn row(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    fn sizes(&self) -> Vec<usize> {
        (0..self.len())
            .map(|i| self.ends[i] - if i == 0 { 0 } else { self.ends[i - 1] })
            .collect()
    }
}

/// Most entries one round takes from the queue: enough for every
/// concurrent request of the round to carry a full batch
/// ([`POST_CONCURRENCY`] × `batch_size`), and at least 1,000. Bounding the
/// round bounds the logger thread's working set (rows in memory at once)
/// during a burst; the round loop continues until the queue is empty.
fn round_limit(batch_size: usize) -> usize {
    batch_size.saturating_mul(POST_CONCURRENCY).max(1_000)
}

/// `/logs3` requests a round keeps in flight at once.
const POST_CONCURRENCY: usize = 8;

impl Worker {
    fn new(state: State) -> Worker {
        Worker {
            state,
            limits: None,
            unreported: None,
            warned_delivery: false,
        }
    }

    async fn run(mut self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Cmd>) {
        let sync_flush = self.state.0.config.sync_flush;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    None | Some(Cmd::Shutdown) => break,
                    Some(Cmd::Flush { done, deadline }) => {
                        let r = self.flush(deadline).await;
                        done.send(r);
                    }
                    Some(Cmd::Resolve { object, done }) => {
                        let r = self.state.resolve(&object).await.map(|r| r.id);
                        let _ = done.send(r);
                    }
                    Some(Cmd::Login { done }) => {
                        let _ = done.send(self.state.ensure_login().await);
                    }
                },
                _ = self.state.0.notify.notified(), if !sync_flush => {
                    self.round().await;
                }
                _ = tick.tick() => {
                    self.wake_blocked();
                    if !sync_flush && !self.state.0.queue.is_empty() {
                        self.round().await;
                    }
                }
            }
        }
    }

    fn wake_blocked(&self) {
        if self.state.0.blocked_waiters.load(Ordering::Acquire) > 0 {
            let (lock, cv) = &self.state.0.space;
            let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
            cv.notify_all();
        }
    }

    /// Drains what is queued now and sends it; returns rows lost for good.
    async fn round(&mut self) -> Option<(u64, String)> {
        let mut lost: Option<(u64, String)> = None;
        loop {
            let ops = self.drain();
            if ops.is_empty() {
                break;
            }
            // Counted as in flight until this batch of entries is settled; if
            // the round is abandoned at a deadline, the guard counts them lost.
            let guard = InFlight::new(&self.state, ops.len() as u64);
            let r = self.send_ops(ops).await;
            guard.settle();
            if let Some((n, m)) = r {
                let total = lost.as_ref().map_or(0, |l| l.0) + n;
                lost = Some((total, m));
            }
        }
        if let Some((n, m)) = &lost {
            let prev = self.unreported.take().map_or(0, |u| u.0);
            self.unreported = Some((prev + n, m.clone()));
        }
        lost
    }

    /// Takes up to one round's worth of entries (see [`round_limit`]); the
    /// caller loops until the queue is empty.
    fn drain(&self) -> Vec<Op> {
        let q = &self.state.0.queue;
        let limit = round_limit(self.state.0.config.batch_size);
        let mut ops = Vec::with_capacity(q.len().min(limit));
        while ops.len() < limit {
            match q.pop() {
                Some(op) => ops.push(op),
                None => break,
            }
        }
        if !ops.is_empty() {
            self.wake_blocked();
        }
        ops
    }

    async fn flush(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        let work = async {
            self.round().await;
            self.unreported.take()
        };
        let outcome = match deadline {
            None => Some(work.await),
            Some(d) => tokio::time::timeout_at(d.into(), work).await.ok(),
        };
        match outcome {
            Some(None) => Ok(()),
            Some(Some((rows, message))) => Err(Error::Delivery { rows, message }),
            None => {
                // The abandoned round's guard has already counted its entries.
                let abandoned = self.state.0.counters.abandoned.swap(0, Ordering::AcqRel);
                let undelivered =
                    abandon_queue(&self.state, Instant::now() + EXIT_WRITE_BUDGET) + abandoned;
                Err(Error::Timeout {
                    waited_ms: 0,
                    undelivered,
                })
            }
        }
    }

    /// Turns entries into rows and delivers them. Returns rows lost for good.
    async fn send_ops(&mut self, ops: Vec<Op>) -> Option<(u64, String)> {
        // Spans with generated row ids have distinct merge keys (a span has
        // at most one entry in a drain, and generated ids are random), so
        // merging their rows is the identity. Without a masking function
        // they are written straight to JSON text; anything else takes the
        // general path (rows as maps, merge, mask, serialize).
        let distinct = ops
            .iter()
            .all(|op| matches!(op, Op::Span(core) if matches!(core.row_id, Id::Uuid(_))));
        let masking = self
            .state
            .0
            .masking
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if distinct && !masking {
            return self.send_spans_direct(ops).await;
        }
        // Entries → rows grouped by container.
        let mut groups: Vec<(Arc<ObjectInner>, Vec<Row>)> = Vec::new();
        for op in ops {
            if let Some((obj, row)) = op_to_row(op) {
                match groups.iter_mut().find(|(o, _)| Arc::ptr_eq(o, &obj)) {
                    Some((_, rows)) => rows.push(row),
                    None => groups.push((obj, vec![row])),
                }
            }
        }
        let mut lost: Option<(u64, String)> = None;
        let mut all_rows: Vec<Row> = Vec::new();
        for (obj, mut rows) in groups {
            match self.resolve_with_retries(&obj).await {
                Ok(id) => {
                    for r in &mut rows {
                        obj.id_fields(&id, r);
                    }
                    all_rows.extend(rows);
                }
                Err(e) => {
                    let n = rows.len() as u64;
                    self.state
                        .0
                        .counters
                        .failed_rows
                        .fetch_add(n, Ordering::Relaxed);
                    let msg = format!(
                        "braintrust: failed to construct log records to flush after {} attempts; dropping {n} row(s): {e}",
                        self.state.0.config.num_retries + 1
                    );
                    self.warn_delivery(&msg);
                    lost = Some((lost.map_or(0, |l| l.0) + n, e.to_string()));
                }
            }
        }
        if all_rows.is_empty() {
            return lost;
        }
        let merged = if distinct {
            all_rows
        } else {
            match merge_row_batch(all_rows) {
                Ok(m) => m,
                Err(e) => {
                    self.warn_delivery(&format!("braintrust: dropping a batch: {e}"));
                    return Some((1, e.to_string()));
                }
            }
        };
        let merged = self.mask(merged);
        let mut text = RowsText::with_capacity(merged.len());
        for row in &merged {
            text.push_row(row);
        }
        drop(merged);
        if let Some(l) = self.post_all(text.finish()).await {
            lost = Some((lost.map_or(0, |x| x.0) + l.0, l.1));
        }
        lost
    }

    /// [`send_ops`](Worker::send_ops) for span entries with distinct keys
    /// and no masking: each span's unsent writes go straight to JSON text
    /// ([`write_span_row`]), in queue order, with no row map.
    async fn send_spans_direct(&mut self, ops: Vec<Op>) -> Option<(u64, String)> {
        let mut groups: Vec<(Arc<ObjectInner>, Vec<Arc<SpanCore>>)> = Vec::new();
        let mut count = 0;
        for op in ops {
            if let Op::Span(core) = op {
                count += 1;
                match groups
                    .iter_mut()
                    .find(|(o, _)| Arc::ptr_eq(o, &core.object))
                {
                    Some((_, cores)) => cores.push(core),
                    None => groups.push((core.object.clone(), vec![core])),
                }
            }
        }
        let mut lost: Option<(u64, String)> = None;
        let mut text = RowsText::with_capacity(count);
        for (obj, cores) in groups {
            match self.resolve_with_retries(&obj).await {
                Ok(id) => {
                    let ids = IdFields::new(&obj, &id);
                    for core in cores {
                        text.push_span(&core, core.take_pending(), &ids);
                    }
                }
                Err(e) => {
                    let n: u64 = cores
                        .into_iter()
                        .map(|c| u64::from(Op::Span(c).has_rows()))
                        .sum();
                    self.state
                        .0
                        .counters
                        .failed_rows
                        .fetch_add(n, Ordering::Relaxed);
                    let msg = format!(
                        "braintrust: failed to construct log records to flush after {} attempts; dropping {n} row(s): {e}",
                        self.state.0.config.num_retries + 1
                    );
                    self.warn_delivery(&msg);
                    lost = Some((lost.map_or(0, |l| l.0) + n, e.to_string()));
                }
            }
        }
        let prepared = text.finish();
        if prepared.len() == 0 {
            return lost;
        }
        if let Some(l) = self.post_all(prepared).await {
            lost = Some((lost.map_or(0, |x| x.0) + l.0, l.1));
        }
        lost
    }

    fn warn_delivery(&mut self, msg: &str) {
        // Loud once per state; later failures go to the counters and flush().
        if !self.warned_delivery {
            self.warned_delivery = true;
            eprintln!("{msg}");
        }
    }

    async fn resolve_with_retries(&mut self, obj: &Arc<ObjectInner>) -> Result<String, Error> {
        let tries = self.state.0.config.num_retries + 1;
        let mut last = None;
        for i in 0..tries {
            match self.state.resolve(obj).await {
                Ok(r) => return Ok(r.id),
                Err(e) => {
                    let permanent = matches!(
                        e,
                        Error::NoApiKey
                            | Error::InvalidApiKey { .. }
                            | Error::Organization(_)
                            | Error::Config { .. }
                    );
                    last = Some(e);
                    if permanent || i + 1 == tries {
                        break;
                    }
                    tokio::time::sleep(self.backoff(i)).await;
                }
            }
        }
        Err(last.unwrap_or(Error::Logger("resolution failed".into())))
    }

    fn backoff(&self, i: u32) -> Duration {
        self.state.0.config.retry_base_delay * 2u32.saturating_pow(i)
    }

    fn mask(&mut self, rows: Vec<Row>) -> Vec<Row> {
        let f = self
            .state
            .0
            .masking
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(f) = f else { return rows };
        rows.into_iter()
            .map(|mut row| {
                for field in ["input", "output", "expected", "metadata", "error"] {
                    if let Some(v) = row.remove(field) {
                        let masked =
                            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(v))) {
                                Ok(Ok(m)) => m,
                                Ok(Err(e)) => mask_failed(field, &e),
                                Err(_) => mask_failed(field, "the masking function panicked"),
                            };
                        row.insert(field.into(), masked);
                    }
                }
                row
            })
            .collect()
    }

    async fn limits(&mut self, login: &LoginInfo) -> Limits {
        if let Some(l) = self.limits {
            return l;
        }
        let configured = self.state.0.config.max_request_size;
        let server = match self
            .state
            .api_json(login, reqwest::Method::GET, "version", None)
            .await
        {
            Ok(v) => v
                .get("logs3_payload_max_bytes")
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)
                .map(|n| n as usize),
            Err(e) => {
                crate::diagnostics::warn_once(
                    &format!("version-{}", login.api_url),
                    &format!("braintrust: failed to fetch version info for payload limit: {e}"),
                );
                None
            }
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
        self.limits = Some(l);
        l
    }

    async fn post_all(&mut self, rows: Prepared) -> Option<(u64, String)> {
        let login = match self.state.ensure_login().await {
            Ok(l) => l,
            Err(e) => {
                let n = rows.len() as u64;
                self.state
                    .0
                    .counters
                    .failed_rows
                    .fetch_add(n, Ordering::Relaxed);
                self.warn_delivery(&format!("braintrust: dropping {n} row(s): {e}"));
                return Some((n, e.to_string()));
            }
        };
        let limits = self.limits(&login).await;
        let sizes = rows.sizes();
        let batches = batch_partition(
            &sizes,
            self.state.0.config.batch_size,
            limits.max_request_size,
        );
        let bodies: Vec<(String, u64)> = batches
            .into_iter()
            .map(|idx| {
                let texts: Vec<&str> = idx.iter().map(|&i| rows.row(i)).collect();
                (crate::merge::logs3_body(&texts), idx.len() as u64)
            })
            .collect();
        let state = self.state.clone();
        let results: Vec<Result<u64, (u64, String)>> = stream::iter(bodies)
            .map(|(body, n)| {
                let state = state.clone();
                let login = login.clone();
                async move {
                    match post_batch(&state, &login, limits, body, n).await {
                        Ok(()) => Ok(n),
                        Err(m) => Err((n, m)),
                    }
                }
            })
            .buffer_unordered(POST_CONCURRENCY)
            .collect()
            .await;
        let mut lost: Option<(u64, String)> = None;
        for r in results {
            match r {
                Ok(n) => {
                    self.state
                        .0
                        .counters
                        .delivered_rows
                        .fetch_add(n, Ordering::Relaxed);
                }
                Err((n, m)) => {
                    self.state
                        .0
                        .counters
                        .failed_rows
                        .fetch_add(n, Ordering::Relaxed);
                    lost = Some((lost.map_or(0, |l| l.0) + n, m));
                }
            }
        }
        lost
    }
}

fn mask_failed(field: &str, why: &str) -> Value {
    crate::diagnostics::warn_once(
        &format!("mask-{field}"),
        &format!("braintrust: masking function failed on `{field}` ({why}); the field was replaced by an error marker"),
    );
    Value::String(format!("ERROR: Failed to mask field '{field}' - {why}"))
}

/// How long a missed deadline may still spend writing undelivered rows to
/// the failed-payload directory.
pub(crate) const EXIT_WRITE_BUDGET: Duration = Duration::from_millis(50);

/// Entries taken from the queue and not yet settled (delivered or failed).
struct InFlight {
    state: State,
    n: u64,
    settled: bool,
}

impl InFlight {
    fn new(state: &State, n: u64) -> Self {
        state.0.counters.in_flight.fetch_add(n, Ordering::AcqRel);
        InFlight {
            state: state.clone(),
            n,
            settled: false,
        }
    }
    fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.state.0.counters;
        c.in_flight.fetch_sub(self.n, Ordering::AcqRel);
        if !self.settled {
            c.abandoned.fetch_add(self.n, Ordering::AcqRel);
            c.failed_rows.fetch_add(self.n, Ordering::Relaxed);
        }
    }
}

/// At a deadline: what is still queued is counted as failed and, when a
/// failed-payload directory is set, written there until `write_until`
/// (the exit path must stay bounded; what did not fit is counted, not
/// written). Safe from any thread: the queue is multi-consumer, so the exit
/// path can do this itself when the logger thread is busy in user code.
pub(crate) fn abandon_queue(state: &State, write_until: Instant) -> u64 {
    let q = &state.0.queue;
    let dir = state.0.config.failed_payloads_dir.as_ref();
    let mut texts: Vec<String> = Vec::new();
    let mut n = 0u64;
    while let Some(op) = q.pop() {
        if dir.is_some() && Instant::now() < write_until {
            if let Some((obj, mut row)) = op_to_row(op) {
                if let Some(r) = obj.resolved.get() {
                    obj.id_fields(&r.id, &mut row);
                }
                texts.push(serde_json::to_string(&row).unwrap_or_default());
                n += 1;
            }
        } else {
            n += u64::from(op.has_rows());
        }
    }
    if let Some(dir) = dir {
        if !texts.is_empty() {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            write_payload(dir, &crate::merge::logs3_body(&refs));
        }
    }
    state.0.counters.failed_rows.fetch_add(n, Ordering::Relaxed);
    n
}

/// Converts a queue entry into a row (without container ids).
fn op_to_row(op: Op) -> Option<(Arc<ObjectInner>, Row)> {
    match op {
        Op::Row(obj, row) => Some((obj, *row)),
        Op::Span(core) => {
            let pending = core.take_pending();
            let row = span_row(&core, pending)?;
            Some((core.object.clone(), row))
        }
    }
}

/// `span_attributes.name` of a span started without a name: `file:line` of
/// the caller, prefixed by the function name when known.
fn default_name(start: &StartInfo) -> String {
    let file = Path::new(start.caller.file())
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("unknown");
    match start.function_name {
        Some(f) => format!("{f}:{file}:{}", start.caller.line()),
        None => format!("{file}:{}", start.caller.line()),
    }
}

fn span_row(core: &SpanCore, p: Pending) -> Option<Row> {
    if p.start.is_none() && p.event.is_none() && p.end.is_none() {
        return None;
    }
    // Room for every field a span row gets, so the map never regrows.
    let mut row = Map::with_capacity(16);
    row.insert("id".into(), Value::String(core.row_id.to_string()));
    row.insert("span_id".into(), Value::String(core.span_id.to_string()));
    row.insert(
        "root_span_id".into(),
        Value::String(core.root_span_id.to_string()),
    );
    row.insert(
        "span_parents".into(),
        match &core.parents {
            None => Value::Null,
            Some(ps) => Value::Array(ps.iter().map(|p| Value::String(p.to_string())).collect()),
        },
    );
    let merged_into_first = p.event.is_some() || p.end.is_some();
    match p.start {
        Some(start) => {
            // A first write merged with later ones is a full row, which the
            // client merge marks by leaving `_is_merge` out (spec §4.5).
            if !merged_into_first {
                row.insert("_is_merge".into(), Value::Bool(false));
            }
            row.insert("created".into(), Value::String(format_rfc3339(start.start)));
            let mut metrics = Map::new();
            metrics.insert("start".into(), Value::from(start.start));
            row.insert("metrics".into(), Value::Object(metrics));
            let mut attrs = Map::new();
            let name = match start.name {
                Some(n) => n.into_owned(),
                None => default_name(&start),
            };
            attrs.insert("name".into(), Value::String(name));
            if let Some(t) = start.span_type {
                attrs.insert("type".into(), Value::String(t.as_str().into()));
            }
            attrs.insert("exec_counter".into(), Value::from(start.exec_counter));
            row.insert("span_attributes".into(), Value::Object(attrs));
            let mut ctx = Map::new();
            if let Some(f) = start.function_name {
                ctx.insert("caller_functionname".into(), Value::String(f.into()));
            }
            ctx.insert(
                "caller_filename".into(),
                Value::String(start.caller.file().into()),
            );
            ctx.insert("caller_lineno".into(), Value::from(start.caller.line()));
            ctx.insert(
                "span_origin".into(),
                serde_json::json!({
                    "name": "braintrust.sdk.rust",
                    "version": env!("CARGO_PKG_VERSION"),
                    "instrumentation": {"name": start.instrumentation.unwrap_or("braintrust-rust-logger")},
                }),
            );
            row.insert("context".into(), Value::Object(ctx));
            if let Some(e) = start.event {
                e.write_into(&mut row);
            }
            if let Some(prop) = &core.propagated {
                deep_merge(&mut row, (**prop).clone());
            }
        }
        None => {
            row.insert("_is_merge".into(), Value::Bool(true));
        }
    }
    if let Some(e) = p.event {
        e.write_into(&mut row);
    }
    if let Some(end) = p.end {
        match row.get_mut("metrics") {
            Some(Value::Object(m)) => {
                m.insert("end".into(), Value::from(end));
            }
            _ => {
                let mut m = Map::new();
                m.insert("end".into(), Value::from(end));
                row.insert("metrics".into(), Value::Object(m));
            }
        }
    }
    Some(row)
}

/// A container's id fields (`project_id`, `log_id`, ...) as JSON text, made
/// once per container and round and appended to each span row.
struct IdFields {
    object: Arc<ObjectInner>,
    id: String,
    /// `"k":"v",...` without braces (empty when there are none).
    text: String,
}

impl IdFields {
    fn new(object: &Arc<ObjectInner>, id: &str) -> IdFields {
        let mut m = Map::new();
        object.id_fields(id, &mut m);
        let whole = serde_json::to_string(&m).unwrap_or_else(|_| "{}".into());
        IdFields {
            object: object.clone(),
            id: id.to_string(),
            text: whole[1..whole.len() - 1].to_string(),
        }
    }
}

/// A top-level user field of a row being written by [`write_span_row`].
enum Slot<'a> {
    Value(&'a Value),
    Map(&'a Map<String, Value>),
    Tags(&'a Vec<String>),
    Owned(Value),
}

impl Slot<'_> {
    fn to_owned_map(&self) -> Option<Map<String, Value>> {
        match self {
            Slot::Map(m) => Some((*m).clone()),
            Slot::Value(Value::Object(m)) | Slot::Owned(Value::Object(m)) => Some(m.clone()),
            _ => None,
        }
    }

    fn write(&self, b: &mut Vec<u8>) -> bool {
        match self {
            Slot::Value(v) => serde_json::to_writer(&mut *b, v).is_ok(),
            Slot::Map(m) => serde_json::to_writer(&mut *b, m).is_ok(),
            Slot::Tags(t) => serde_json::to_writer(&mut *b, t).is_ok(),
            Slot::Owned(v) => serde_json::to_writer(&mut *b, v).is_ok(),
        }
    }
}

/// The top-level user fields of a row, in row order: what
/// `Event::write_into` does to a row map, on a short list of borrowed values.
#[derive(Default)]
struct Slots<'a>(Vec<(&'static str, Slot<'a>)>);

impl<'a> Slots<'a> {
    fn find(&mut self, key: &str) -> Option<&mut Slot<'a>> {
        self.0.iter_mut().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    /// `row.insert(key, v)`: replaces in place, or appends.
    fn put(&mut self, key: &'static str, v: Slot<'a>) {
        match self.find(key) {
            Some(s) => *s = v,
            None => self.0.push((key, v)),
        }
    }

    /// Deep-merges `m` into an object already there, else inserts it.
    fn merge(&mut self, key: &'static str, m: &'a Map<String, Value>) {
        match self.find(key) {
            Some(s) => match s.to_owned_map() {
                Some(mut existing) => {
                    deep_merge(&mut existing, m.clone());
                    *s = Slot::Owned(Value::Object(existing));
                }
                None => *s = Slot::Map(m),
            },
            None => self.0.push((key, Slot::Map(m))),
        }
    }

    /// `Event::write_into`, leaving out `metrics` and `span_attributes`
    /// when `skip_fixed` (a start row holds them already).
    fn write_event(&mut self, e: &'a Event, skip_fixed: bool) {
        for (k, v) in [
            ("input", &e.input),
            ("output", &e.output),
            ("expected", &e.expected),
            ("error", &e.error),
        ] {
            if let Some(v) = v {
                self.put(k, Slot::Value(v));
            }
        }
        for (k, v) in [
            ("scores", &e.scores),
            ("metrics", &e.metrics),
            ("metadata", &e.metadata),
            ("span_attributes", &e.span_attributes),
        ] {
            if skip_fixed && (k == "metrics" || k == "span_attributes") {
                continue;
            }
            if let Some(m) = v {
                self.merge(k, m);
            }
        }
        if let Some(t) = &e.tags {
            self.put("tags", Slot::Tags(t));
        }
    }
}

/// Writes a JSON string.
fn write_str(b: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *b, s);
}

/// Writes an id as a JSON string.
fn write_id(b: &mut Vec<u8>, id: &Id) {
    match id {
        Id::Str(s) => write_str(b, s),
        _ => {
            let mut buf = [0u8; 36];
            let n = id.encode(&mut buf);
            b.push(b'"');
            b.extend_from_slice(&buf[..n]);
            b.push(b'"');
        }
    }
}

/// Writes a float as `Value::from(f64)` serializes (null when not finite).
fn write_f64(b: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *b, &v);
}

fn key(b: &mut Vec<u8>, k: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(k.as_bytes());
    b.extend_from_slice(b"\":");
}

/// Writes the JSON text of a span's row, exactly as serializing
/// `span_row(core, p)` with the container's id fields (`ids`) appended would,
/// without building the row map. Returns false, having written garbage to
/// truncate, when the span has no writes or carries a propagated event (the
/// general path handles those).
fn write_span_row(core: &SpanCore, p: &Pending, ids: &str, b: &mut Vec<u8>) -> bool {
    if (p.start.is_none() && p.event.is_none() && p.end.is_none()) || core.propagated.is_some() {
        return false;
    }
    b.extend_from_slice(b"{\"id\":");
    write_id(b, &core.row_id);
    key(b, "span_id");
    write_id(b, &core.span_id);
    key(b, "root_span_id");
    write_id(b, &core.root_span_id);
    key(b, "span_parents");
    match &core.parents {
        None => b.extend_from_slice(b"null"),
        Some(ps) => {
            b.push(b'[');
            for (i, id) in ps.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                write_id(b, id);
            }
            b.push(b']');
        }
    }
    let mut slots = Slots::default();
    match &p.start {
        Some(start) => {
            let first = start.event.as_ref();
            let later = p.event.as_ref();
            let events = [first, later];
            if p.event.is_none() && p.end.is_none() {
                key(b, "_is_merge");
                b.extend_from_slice(b"false");
            }
            key(b, "created");
            write_str(b, &format_rfc3339(start.start));
            key(b, "metrics");
            if events.iter().flatten().any(|e| e.metrics.is_some()) {
                let mut m = Map::new();
                m.insert("start".into(), Value::from(start.start));
                for e in events.iter().flatten() {
                    if let Some(x) = &e.metrics {
                        deep_merge(&mut m, x.clone());
                    }
                }
                if let Some(end) = p.end {
                    m.insert("end".into(), Value::from(end));
                }
                if serde_json::to_writer(&mut *b, &m).is_err() {
                    return false;
                }
            } else {
                b.extend_from_slice(b"{\"start\":");
                write_f64(b, start.start);
                if let Some(end) = p.end {
                    b.extend_from_slice(b",\"end\":");
                    write_f64(b, end);
                }
                b.push(b'}');
            }
            key(b, "span_attributes");
            let name: std::borrow::Cow<'_, str> = match &start.name {
                Some(n) => std::borrow::Cow::Borrowed(n.as_ref()),
                None => std::borrow::Cow::Owned(default_name(start)),
            };
            if events.iter().flatten().any(|e| e.span_attributes.is_some()) {
                let mut m = Map::new();
                m.insert("name".into(), Value::String(name.into_owned()));
                if let Some(t) = start.span_type {
                    m.insert("type".into(), Value::String(t.as_str().into()));
                }
                m.insert("exec_counter".into(), Value::from(start.exec_counter));
                for e in events.iter().flatten() {
                    if let Some(x) = &e.span_attributes {
                        deep_merge(&mut m, x.clone());
                    }
                }
                if serde_json::to_writer(&mut *b, &m).is_err() {
                    return false;
                }
            } else {
                b.extend_from_slice(b"{\"name\":");
                write_str(b, &name);
                if let Some(t) = start.span_type {
                    key(b, "type");
                    write_str(b, t.as_str());
                }
                key(b, "exec_counter");
                let _ = serde_json::to_writer(&mut *b, &start.exec_counter);
                b.push(b'}');
            }
            key(b, "context");
            b.push(b'{');
            if let Some(f) = start.function_name {
                b.extend_from_slice(b"\"caller_functionname\":");
                write_str(b, f);
                b.push(b',');
            }
            b.extend_from_slice(b"\"caller_filename\":");
            write_str(b, start.caller.file());
            key(b, "caller_lineno");
            let _ = serde_json::to_writer(&mut *b, &start.caller.line());
            b.extend_from_slice(b",\"span_origin\":{\"name\":\"braintrust.sdk.rust\",\"version\":");
            write_str(b, env!("CARGO_PKG_VERSION"));
            b.extend_from_slice(b",\"instrumentation\":{\"name\":");
            write_str(b, start.instrumentation.unwrap_or("braintrust-rust-logger"));
            b.extend_from_slice(b"}}}");
            for e in events.iter().flatten() {
                slots.write_event(e, true);
            }
        }
        None => {
            key(b, "_is_merge");
            b.extend_from_slice(b"true");
            if let Some(e) = &p.event {
                slots.write_event(e, false);
            }
            if let Some(end) = p.end {
                match slots.find("metrics").and_then(|s| s.to_owned_map()) {
                    Some(mut m) => {
                        m.insert("end".into(), Value::from(end));
                        slots.put("metrics", Slot::Owned(Value::Object(m)));
                    }
                    None => {
                        let mut m = Map::new();
                        m.insert("end".into(), Value::from(end));
                        slots.put("metrics", Slot::Owned(Value::Object(m)));
                    }
                }
            }
        }
    }
    for (k, v) in &slots.0 {
        key(b, k);
        if !v.write(b) {
            return false;
        }
    }
    if !ids.is_empty() {
        b.push(b',');
        b.extend_from_slice(ids.as_bytes());
    }
    b.push(b'}');
    true
}

/// A UTC instant split into calendar fields:
/// `(year, month, day, hour, minute, second, microsecond)`.
fn civil_time(secs: f64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let total_us = (secs * 1_000_000.0).round() as i64;
    let us = total_us.rem_euclid(1_000_000);
    let s = total_us.div_euclid(1_000_000);
    let days = s.div_euclid(86_400);
    let rem = s.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60, us)
}

/// RFC 3339 UTC with microseconds, as Python writes `created`.
pub(crate) fn format_rfc3339(secs: f64) -> String {
    let (y, m, d, hh, mm, ss, us) = civil_time(secs);
    if !(0..=9999).contains(&y) {
        // Outside what four digits hold: the general formatter (a wider year).
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}+00:00");
    }
    // Digits written by hand: this runs once per span row.
    let mut b = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, hh);
    put(14, 2, mm);
    put(17, 2, ss);
    put(20, 6, us);
    String::from_utf8_lossy(&b).into_owned()
}

/// `Retry-After` in seconds, when the response has one.
pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(60.0)))
}

/// A transport error described without the URL's query or any header.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut s = kind.to_string();
    let mut src = std::error::Error::source(e);
    if let Some(inner) = src.take() {
        s.push_str(&format!(": {inner}"));
    }
    s
}

fn write_payload(dir: &Path, body: &str) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        crate::diagnostics::warn_once(
            &format!("payload-dir-{}", dir.display()),
            &format!(
                "braintrust: cannot create payload directory {}: {e}",
                dir.display()
            ),
        );
        return;
    }
    let ts = crate::span::now_secs();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = dir.join(format!("payload_{ts}_{}.json", &id[..8]));
    if let Err(e) = std::fs::write(&path, body) {
        crate::diagnostics::warn_once(
            &format!("payload-write-{}", dir.display()),
            &format!(
                "braintrust: cannot write payload file {}: {e}",
                path.display()
            ),
        );
    }
}

/// Posts one `/logs3` body with the spec's retry rules (§4.8).
async fn post_batch(
    state: &State,
    login: &LoginInfo,
    limits: Limits,
    body: String,
    rows: u64,
) -> Result<(), String> {
    let cfg = &state.0.config;
    if let Some(dir) = &cfg.all_payloads_dir {
        write_payload(dir, &body);
    }
    let http = state.http().map_err(|e| e.to_string())?;
    let url = join_url(&login.api_url, "logs3");
    let key = cfg.api_key.clone().unwrap_or_default();
    let tries = cfg.num_retries + 1;
    let mut overflow_key: Option<String> = None;
    let mut last_err = String::new();
    for i in 0..tries {
        let started = Instant::now();
        let send_body = if limits.overflow && body.len() > limits.max_request_size {
            match &overflow_key {
                Some(k) => overflow_ref(k, body.len()),
                None => match upload_overflow(state, login, &http, &key, &body).await {
                    Ok(k) => {
                        let r = overflow_ref(&k, body.len());
                        overflow_key = Some(k);
                        r
                    }
                    Err(e) => {
                        last_err = e;
                        if i + 1 < tries {
                            tokio::time::sleep(cfg.retry_base_delay * 2u32.saturating_pow(i)).await;
                        }
                        continue;
                    }
                },
            }
        } else {
            body.clone()
        };
        state.0.counters.requests.fetch_add(1, Ordering::Relaxed);
        state
            .0
            .counters
            .bytes_sent
            .fetch_add(send_body.len() as u64, Ordering::Relaxed);
        let r = http
            .post(&url)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(send_body)
            .send()
            .await;
        let (status, wait, text) = match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    return Ok(());
                }
                let wait = retry_after(&resp);
                let text = resp.text().await.unwrap_or_default();
                (Some(status), wait, text)
            }
            Err(e) => (None, None, describe_reqwest(&e)),
        };
        let elapsed = started.elapsed().as_secs_f64();
        last_err = format!(
            "log request failed. Elapsed time: {elapsed:.3} seconds. Payload size: {}. Error: {}: {}",
            body.len(),
            status.map_or("transport".to_string(), |s| s.to_string()),
            truncate(&text, 300)
        );
        let permanent = matches!(status, Some(400 | 401 | 403 | 404 | 413 | 422));
        if permanent || i + 1 == tries {
            break;
        }
        let delay = wait.unwrap_or_else(|| cfg.retry_base_delay * 2u32.saturating_pow(i));
        tokio::time::sleep(delay).await;
    }
    if let Some(dir) = &cfg.failed_payloads_dir {
        write_payload(dir, &body);
        eprintln!("braintrust: logging failed payloads to {}", dir.display());
    }
    eprintln!("braintrust: {last_err}");
    eprintln!(
        "braintrust: log request failed after {} tries; dropping batch of {rows} row(s)",
        tries
    );
    Err(last_err)
}

fn overflow_ref(key: &str, size: usize) -> String {
    serde_json::json!({
        "rows": {"type": "logs3_overflow", "key": key, "size_bytes": size},
        "api_version": 2
    })
    .to_string()
}

/// Spec §4.7: announce, upload, and return the key.
async fn upload_overflow(
    state: &State,
    login: &LoginInfo,
    http: &reqwest::Client,
    key: &str,
    body: &str,
) -> Result<String, String> {
    let parsed: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let rows_meta: Vec<Value> = parsed
        .get("rows")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let mut ids = Map::new();
                    for k in ["experiment_id", "dataset_id", "prompt_session_id", "project_id", "log_id", "function_data"] {
                        if let Some(v) = r.get(k) {
                            ids.insert(k.into(), v.clone());
                        }
                    }
                    serde_json::json!({
                        "object_ids": ids,
                        "has_comment": false,
                        "is_delete": false,
                        "input_row": {"byte_size": serde_json::to_string(r).map(|s| s.len()).unwrap_or(0)}
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let req = serde_json::json!({"content_type": "application/json", "size_bytes": body.len(), "rows": rows_meta});
    let v = state
        .api_json(login, reqwest::Method::POST, "logs3/overflow", Some(req))
        .await
        .map_err(|e| e.to_string())?;
    let url = v
        .get("signedUrl")
        .and_then(Value::as_str)
        .ok_or("overflow response has no signedUrl")?;
    let okey = v
        .get("key")
        .and_then(Value::as_str)
        .ok_or("overflow response has no key")?
        .to_string();
    let method = v.get("method").and_then(Value::as_str).unwrap_or("PUT");
    let headers = v
        .get("headers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let resp = if method.eq_ignore_ascii_case("POST") {
        let fields = v
            .get("fields")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let ct = fields
            .get("Content-Type")
            .and_then(Value::as_str)
            .unwrap_or("application/json")
            .to_string();
        let mut form = reqwest::multipart::Form::new();
        for (k, fv) in &fields {
            form = form.text(k.clone(), fv.as_str().unwrap_or_default().to_string());
        }
        let part = reqwest::multipart::Part::bytes(body.as_bytes().to_vec())
            .file_name("logs3.json")
            .mime_str(&ct)
            .map_err(|e| e.to_string())?;
        form = form.part("file", part);
        let mut rb = http.post(url).multipart(form);
        for (k, hv) in &headers {
            if !k.eq_ignore_ascii_case("content-type") {
                rb = rb.header(k.as_str(), hv.as_str().unwrap_or_default());
            }
        }
        rb.send().await
    } else {
        let mut rb = http.put(url).body(body.to_string());
        for (k, hv) in &headers {
            rb = rb.header(k.as_str(), hv.as_str().unwrap_or_default());
        }
        if url.contains("blob.core.windows.net") {
            rb = rb.header("x-ms-blob-type", "BlockBlob");
        }
        rb.send().await
    };
    let _ = key;
    match resp {
        Ok(r) if r.status().is_success() => Ok(okey),
        Ok(r) => Err(format!("overflow upload failed: [{}]", r.status().as_u16())),
        Err(e) => Err(format!("overflow upload failed: {}", describe_reqwest(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::export::ObjectType;
    use crate::object::ObjectSpec;
    use crate::span::{Span, SpanArgs, SpanType};
    use serde_json::json;
    use std::panic::Location;

    /// A container on a state whose logger thread never takes entries on
    /// its own, so the test can take them.
    fn container(kind: ObjectType) -> Arc<ObjectInner> {
        let state = State::new(
            Config::default()
                .api_key("k")
                .app_url("http://127.0.0.1:9")
                .sync_flush(true)
                .lifecycle(crate::LifecyclePolicy::Manual),
        )
        .unwrap();
        ObjectInner::new(
            state,
            kind,
            ObjectSpec::Known {
                id: "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e".into(),
            },
        )
    }

    /// Takes every queued span and checks that the direct writer produces
    /// exactly the text of the general path (row map + id fields, serialized).
    fn check_queue(obj: &Arc<ObjectInner>) -> usize {
        let ids = IdFields::new(obj, &obj.resolved.get().unwrap().id);
        let mut n = 0;
        while let Some(op) = obj.state.0.queue.pop() {
            let Op::Span(core) = op else {
                panic!("a row entry")
            };
            let p = core.take_pending();
            let mut fast = Vec::new();
            let ok = write_span_row(&core, &p, &ids.text, &mut fast);
            let slow = span_row(&core, p).map(|mut row| {
                obj.id_fields(&ids.id, &mut row);
                serde_json::to_string(&row).unwrap()
            });
            match slow {
                None => assert!(!ok, "a span without writes wrote a row"),
                Some(slow) if core.propagated.is_some() => assert!(!ok, "{slow}"),
                Some(slow) => {
                    assert!(ok, "fell back on {slow}");
                    assert_eq!(String::from_utf8(fast).unwrap(), slow);
                    n += 1;
                }
            }
        }
        n
    }

    fn start(obj: &Arc<ObjectInner>, parent: Option<&Span>, args: SpanArgs) -> Span {
        Span::start(
            obj,
            parent.and_then(|p| p.child_lineage()),
            args,
            Location::caller(),
        )
        .unwrap()
    }

    #[test]
    fn direct_rows_are_the_general_rows_text() {
        let mut checked = 0;
        for kind in [
            ObjectType::ProjectLogs,
            ObjectType::Experiment,
            ObjectType::PlaygroundLogs,
        ] {
            let obj = container(kind);
            // The workload's shape: input at start, output logged, ended.
            let root = start(
                &obj,
                None,
                SpanArgs::new()
                    .name("l1")
                    .event(Event::new().input(json!({"i": 1}))),
            );
            let child = start(&obj, Some(&root), SpanArgs::new().name("l2 \"quoted\"\n"));
            child.log(Event::new().output(json!({"ok": 1}))).unwrap();
            child.end();
            root.log(Event::new().output("done")).unwrap();
            root.end();
            // Started only (no later writes): `_is_merge: false`.
            let open = start(&obj, Some(&root), SpanArgs::new().span_type(SpanType::Tool));
            // Default name, function name, instrumentation, user row id.
            let _f = start(
                &obj,
                None,
                SpanArgs::new()
                    .function_name("my_fn")
                    .instrumentation("openai")
                    .id("user-row-\u{e9}"),
            );
            // Every field, twice, including the merged objects.
            let full = start(
                &obj,
                Some(&root),
                SpanArgs::new().start_time(1.5).event(
                    Event::new()
                        .input(json!([1, 2]))
                        .metadata(json!({"a": {"x": 1}, "b": 2}))
                        .score("s", 0.5)
                        .metric("tokens", 3.0)
                        .tags(["t1"])
                        .span_attributes(json!({"name": "renamed", "extra": true})),
                ),
            );
            full.log(
                Event::new()
                    .input(json!({"again": null}))
                    .expected(1)
                    .error("boom")
                    .metadata(json!({"a": {"y": 2}}))
                    .score("s2", 1.0)
                    .metric("end", 7.0)
                    .metric("tokens", f64::NAN)
                    .tags(["t2"])
                    .span_attributes(json!({"type": "llm"})),
            )
            .unwrap();
            full.end_at(2.25);
            // Non-finite start time.
            start(&obj, None, SpanArgs::new().start_time(f64::INFINITY)).end_at(f64::NAN);
            checked += check_queue(&obj);
            // Writes after the logger took the first row: merge rows.
            open.log(Event::new().output(1).metric("m", 1.0)).unwrap();
            checked += check_queue(&obj);
            open.log(Event::new().metadata(json!({"k": 1}))).unwrap();
            open.end_at(3.0);
            checked += check_queue(&obj);
            open.end();
            root.log(Event::new().tags(["late"])).unwrap();
            checked += check_queue(&obj);
            // A propagated event takes the general path.
            let prop = start(
                &obj,
                None,
                SpanArgs::new().propagated_event(json!({"metadata": {"p": 1}})),
            );
            start(&obj, Some(&prop), SpanArgs::new()).end();
            prop.end();
            check_queue(&obj);
            drop((root, child, full, _f));
            check_queue(&obj);
        }
        assert_eq!(checked, 3 * 9);
    }

    #[test]
    fn legacy_ids_write_the_same() {
        let state = State::new(
            Config::default()
                .api_key("k")
                .app_url("http://127.0.0.1:9")
                .sync_flush(true)
                .legacy_ids(true)
                .lifecycle(crate::LifecyclePolicy::Manual),
        )
        .unwrap();
        let obj = ObjectInner::new(
            state,
            ObjectType::ProjectLogs,
            ObjectSpec::Known { id: "p".into() },
        );
        let root = start(&obj, None, SpanArgs::new());
        start(&obj, Some(&root), SpanArgs::new().name("c")).end();
        root.end();
        assert_eq!(check_queue(&obj), 2);
    }

    #[test]
    fn created_is_rfc3339_with_microseconds() {
        assert_eq!(format_rfc3339(0.0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            format_rfc3339(1795459929.437756),
            "2026-11-23T18:52:09.437756+00:00"
        );
        assert_eq!(
            format_rfc3339(951782400.5),
            "2000-02-29T00:00:00.500000+00:00"
        );
        // Before the epoch, and past year 9999 (general formatter).
        assert_eq!(format_rfc3339(-1.25), "1969-12-31T23:59:58.750000+00:00");
        assert_eq!(
            format_rfc3339(253402300800.0),
            "10000-01-01T00:00:00.000000+00:00"
        );
        // The hand-written digits agree with `format!` of the same fields.
        fn reference(secs: f64) -> String {
            let (y, m, d, hh, mm, ss, us) = civil_time(secs);
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}+00:00")
        }
        for i in 0..20_000u32 {
            let t = -3e9 + f64::from(i) * 401_234.567_891;
            assert_eq!(format_rfc3339(t), reference(t));
        }
    }
}
