//! Braintrust-native spans to any OpenTelemetry exporter (a team's
//! Jaeger/Tempo/collector pipeline), alongside their delivery to Braintrust.
//!
//! The pipeline hands every row it prepares for `/logs3` to a row observer
//! ([`State::set_row_observer`]); [`OtelMirror`] takes those rows on its own
//! thread, merges the writes of each span (a span's start and end may be
//! sent in different rows) and, once a span has ended, exports it as an OTel
//! span through the exporter it was given. The application thread does none
//! of this work, and the logger thread only pushes row text into a bounded
//! channel.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use braintrust_core::{RowObserver, State};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use serde_json::{Map, Value};

/// Rows waiting for the mirror thread; past it a row is dropped and counted.
const CHANNEL_ROWS: usize = 65_536;
/// Spans started but not ended that the mirror keeps; past it the oldest
/// are exported as they are (without an end) and counted.
const MAX_OPEN_SPANS: usize = 100_000;
/// Spans per export call.
const EXPORT_BATCH: usize = 512;
/// Ended spans wait at most this long for a fuller batch.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);

enum Msg {
    Row(String),
    /// Export what has ended, then answer.
    Flush(mpsc::SyncSender<()>),
    /// Export everything, open spans too, answer and stop.
    Shutdown(mpsc::SyncSender<()>),
}

/// What the mirror did, as counts ([`OtelMirror::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorStats {
    /// Spans handed to the exporter, whose export succeeded.
    pub exported: u64,
    /// Spans whose export failed (the exporter's error is told on stderr, throttled).
    pub export_failed: u64,
    /// Rows dropped because the mirror's channel was full.
    pub dropped_rows: u64,
    /// Spans exported without an end because too many were open at once,
    /// or because the mirror shut down before they ended.
    pub unfinished: u64,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    export_failed: AtomicU64,
    dropped_rows: AtomicU64,
    unfinished: AtomicU64,
}

/// Mirrors a backend's spans to an OpenTelemetry [`SpanExporter`].
///
/// Each Braintrust span becomes one OTel span with the same W3C ids (the
/// trace id is the `root_span_id`), its first parent as the OTel parent
/// and any further parents as links, `metrics.start`/`end` as its times, an
/// `error` as an `ERROR` status, and its fields as the attributes
/// `braintrust.input`, `braintrust.output`, `braintrust.expected`,
/// `braintrust.metadata`, `braintrust.metrics`, `braintrust.scores`,
/// `braintrust.span_attributes` (JSON text) and `braintrust.parent`
/// (`project_id:<id>` / `experiment_id:<id>`); `llm` spans also carry the
/// GenAI conventions' `gen_ai.request.model`, `gen_ai.system` and
/// `gen_ai.usage.input_tokens` / `output_tokens`. Braintrust's own OTLP
/// endpoint (and the local server's) reads these attributes back into the
/// same rows.
///
/// Rows are mirrored when the logger thread prepares them, whether or not
/// Braintrust then accepts them; rows that never get that far (the queue
/// was full, login failed) are not mirrored. Spans that start but never end
/// are exported at [`shutdown`](Self::shutdown) without an end time.
///
/// ```no_run
/// use braintrust_core::{init_logger, Config, LoggerOptions, SpanArgs, State};
/// use braintrust_integrations::otel::{BraintrustExporter, OtelMirror};
///
/// let collector = BraintrustExporter::otlp("http://127.0.0.1:4318/v1/traces", Default::default()).unwrap();
/// let mirror = OtelMirror::new(collector).unwrap();
/// let state = State::new(Config::from_env()).unwrap();
/// mirror.attach(&state);
/// let logger = init_logger(LoggerOptions::new().project("app").state(state)).unwrap();
/// logger.start_span(SpanArgs::new().name("request")).end();
/// logger.flush().unwrap();
/// mirror.shutdown(std::time::Duration::from_secs(5)).unwrap();
/// ```
pub struct OtelMirror {
    tx: mpsc::SyncSender<Msg>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for OtelMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelMirror")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The mirror did not finish in time, or its thread is gone.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The flush or shutdown deadline passed first.
    #[error("the OTel mirror did not finish within {0:?}")]
    Timeout(Duration),
    /// The mirror thread has stopped (shut down, or it could not start).
    #[error("the OTel mirror thread has stopped")]
    Stopped,
}

impl OtelMirror {
    /// A mirror exporting through `exporter` (for a collector:
    /// [`BraintrustExporter::otlp`](super::BraintrustExporter::otlp), or any
    /// other OTel exporter), on a thread of its own.
    pub fn new<E: SpanExporter + 'static>(exporter: E) -> Result<OtelMirror, MirrorError> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_ROWS);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("braintrust-otel-mirror".into())
            .spawn(move || Worker::new(exporter, c).run(rx))
            .map_err(|_| MirrorError::Stopped)?;
        Ok(OtelMirror {
            tx,
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The row observer to give a backend: [`attach`](Self::attach) does it.
    pub fn observer(&self) -> RowObserver {
        let tx = self.tx.clone();
        let counters = self.counters.clone();
        Arc::new(move |row: &str| {
            if tx.try_send(Msg::Row(row.to_owned())).is_err() {
                counters.dropped_rows.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Mirrors the rows of `state` (replacing its row observer).
    pub fn attach(&self, state: &State) {
        state.set_row_observer(Some(self.observer()));
    }

    /// Exports every ended span received so far; waits at most `timeout`.
    /// Call it after the backend's own `flush()`, which is when the rows
    /// have reached the mirror.
    pub fn flush(&self, timeout: Duration) -> Result<(), MirrorError> {
        self.ask(Msg::Flush, timeout)
    }

    /// Exports everything received, the spans still open too (without an
    /// end), and stops the mirror; waits at most `timeout`. Rows that
    /// arrive later are counted as dropped.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), MirrorError> {
        let r = self.ask(Msg::Shutdown, timeout);
        if r.is_ok() {
            if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = h.join();
            }
        }
        r
    }

    /// Sends a control message and waits for its answer within `timeout`.
    fn ask(
        &self,
        make: fn(mpsc::SyncSender<()>) -> Msg,
        timeout: Duration,
    ) -> Result<(), MirrorError> {
        let deadline = Instant::now() + timeout;
        let (done, wait) = mpsc::sync_channel(1);
        let mut msg = make(done);
        // The channel may be full of rows: retry until the deadline.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(MirrorError::Stopped),
                Err(mpsc::TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return Err(MirrorError::Timeout(timeout));
                    }
                    msg = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        match wait.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(MirrorError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(MirrorError::Stopped),
        }
    }

    /// What the mirror did so far.
    pub fn stats(&self) -> MirrorStats {
        let c = &self.counters;
        MirrorStats {
            exported: c.exported.load(Ordering::Relaxed),
            export_failed: c.export_failed.load(Ordering::Relaxed),
            dropped_rows: c.dropped_rows.load(Ordering::Relaxed),
            unfinished: c.unfinished.load(Ordering::Relaxed),
        }
    }
}

/// The mirror thread's state: spans being assembled and ended spans waiting
/// for an export.
struct Worker<E> {
    exporter: E,
    runtime: Option<tokio::runtime::Runtime>,
    counters: Arc<Counters>,
    /// Open spans by span id, with their arrival order for eviction.
    open: HashMap<String, (u64, Map<String, Value>)>,
    arrivals: u64,
    ready: Vec<SpanData>,
    last_export: Instant,
    /// When the last export failure was told on stderr.
    last_warning: Option<Instant>,
}

impl<E: SpanExporter> Worker<E> {
    fn new(exporter: E, counters: Arc<Counters>) -> Self {
        Worker {
            exporter,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok(),
            counters,
            open: HashMap::new(),
            arrivals: 0,
            ready: Vec::new(),
            last_export: Instant::now(),
            last_warning: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            match rx.recv_timeout(EXPORT_INTERVAL) {
                Ok(Msg::Row(text)) => self.row(&text),
                Ok(Msg::Flush(done)) => {
                    self.export();
                    let _ = done.send(());
                }
                Ok(Msg::Shutdown(done)) => {
                    self.close_open();
                    self.export();
                    let _ = self.exporter.shutdown();
                    let _ = done.send(());
                    // Later rows find the channel closed and are counted.
                    drop(rx);
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.export();
                    return;
                }
            }
            if self.ready.len() >= EXPORT_BATCH
                || (!self.ready.is_empty() && self.last_export.elapsed() >= EXPORT_INTERVAL)
            {
                self.export();
            }
        }
    }

    /// Merges one row into its span; an ended span moves to `ready`.
    fn row(&mut self, text: &str) {
        let Ok(Value::Object(mut row)) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let Some(span_id) = row
            .get("span_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return;
        };
        let is_merge = matches!(row.remove("_is_merge"), Some(Value::Bool(true)));
        row.remove("_merge_paths");
        let merged = match self.open.remove(&span_id) {
            Some((order, mut stored)) if is_merge => {
                deep_merge(&mut stored, row);
                (order, stored)
            }
            _ => {
                self.arrivals += 1;
                (self.arrivals, row)
            }
        };
        if ended(&merged.1) {
            self.ready.push(to_span_data(&merged.1));
        } else {
            self.open.insert(span_id, merged);
            if self.open.len() > MAX_OPEN_SPANS {
                self.evict_oldest();
            }
        }
    }

    fn evict_oldest(&mut self) {
        let Some(oldest) = self
            .open
            .iter()
            .min_by_key(|(_, (order, _))| *order)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some((_, row)) = self.open.remove(&oldest) {
            self.counters.unfinished.fetch_add(1, Ordering::Relaxed);
            self.ready.push(to_span_data(&row));
        }
    }

    fn close_open(&mut self) {
        let open = std::mem::take(&mut self.open);
        self.counters
            .unfinished
            .fetch_add(open.len() as u64, Ordering::Relaxed);
        let mut open: Vec<_> = open.into_values().collect();
        open.sort_by_key(|(order, _)| *order);
        self.ready
            .extend(open.iter().map(|(_, row)| to_span_data(row)));
    }

    fn export(&mut self) {
        self.last_export = Instant::now();
        while !self.ready.is_empty() {
            let n = self.ready.len().min(EXPORT_BATCH);
            let batch: Vec<SpanData> = self.ready.drain(..n).collect();
            let result = match &self.runtime {
                Some(rt) => rt.block_on(self.exporter.export(batch)),
                None => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "no runtime for the OTel mirror".into(),
                )),
            };
            match result {
                Ok(()) => {
                    self.counters
                        .exported
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    let failed = self
                        .counters
                        .export_failed
                        .fetch_add(n as u64, Ordering::Relaxed)
                        + n as u64;
                    // One line a minute at most, with the running total.
                    if self
                        .last_warning
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                    {
                        self.last_warning = Some(Instant::now());
                        eprintln!(
                            "braintrust: OTel mirror: {failed} span(s) failed to export so far: {e}"
                        );
                    }
                }
            }
        }
    }
}

fn ended(row: &Map<String, Value>) -> bool {
    row.get("metrics")
        .and_then(|m| m.get("end"))
        .is_some_and(Value::is_number)
}

/// A merge row's fields over the stored ones: objects merge key by key,
/// anything else replaces (the `/logs3` merge rule).
fn deep_merge(stored: &mut Map<String, Value>, update: Map<String, Value>) {
    for (k, v) in update {
        match (stored.get_mut(&k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => deep_merge(old, new),
            (_, v) => {
                stored.insert(k, v);
            }
        }
    }
}

/// The first `N` bytes of an id's hex digits (a UUID's without its dashes).
fn id_bytes<const N: usize>(id: &str) -> Option<[u8; N]> {
    let digits: String = id.chars().filter(|c| *c != '-').take(2 * N).collect();
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

fn trace_id(row: &Map<String, Value>) -> TraceId {
    row.get("root_span_id")
        .and_then(Value::as_str)
        .and_then(id_bytes::<16>)
        .map_or(TraceId::INVALID, TraceId::from_bytes)
}

/// A W3C span id from a Braintrust one: 16 hex digits as they are, the
/// first 16 of a UUID (legacy ids) otherwise, so parents and children agree.
fn span_id(id: &str) -> SpanId {
    id_bytes::<8>(id).map_or(SpanId::INVALID, SpanId::from_bytes)
}

fn secs_to_time(v: Option<&Value>) -> Option<SystemTime> {
    let secs = v?.as_f64()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

fn to_span_data(row: &Map<String, Value>) -> SpanData {
    let sid = row.get("span_id").and_then(Value::as_str).unwrap_or("");
    let context = SpanContext::new(
        trace_id(row),
        span_id(sid),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let parents: Vec<SpanId> = row
        .get("span_parents")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(span_id).collect())
        .unwrap_or_default();
    let attrs = row.get("span_attributes").and_then(Value::as_object);
    let name = attrs
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("span")
        .to_owned();
    let metrics = row.get("metrics").and_then(Value::as_object);
    let start =
        secs_to_time(metrics.and_then(|m| m.get("start"))).unwrap_or(SystemTime::UNIX_EPOCH);
    let end = secs_to_time(metrics.and_then(|m| m.get("end"))).unwrap_or(start);

    let mut attributes = Vec::new();
    for field in [
        "input",
        "output",
        "expected",
        "metadata",
        "metrics",
        "scores",
        "span_attributes",
    ] {
        if let Some(v) = row.get(field).filter(|v| !v.is_null()) {
            attributes.push(KeyValue::new(format!("braintrust.{field}"), v.to_string()));
        }
    }
    let container = match (
        row.get("experiment_id").and_then(Value::as_str),
        row.get("project_id").and_then(Value::as_str),
    ) {
        (Some(e), _) => Some(format!("experiment_id:{e}")),
        (None, Some(p)) => Some(format!("project_id:{p}")),
        _ => None,
    };
    if let Some(c) = container {
        attributes.push(KeyValue::new("braintrust.parent", c));
    }
    let is_llm = attrs.and_then(|a| a.get("type")).and_then(Value::as_str) == Some("llm");
    if is_llm {
        let metadata = row.get("metadata").and_then(Value::as_object);
        if let Some(m) = metadata
            .and_then(|m| m.get("model"))
            .and_then(Value::as_str)
        {
            attributes.push(KeyValue::new("gen_ai.request.model", m.to_owned()));
        }
        if let Some(p) = metadata
            .and_then(|m| m.get("provider"))
            .and_then(Value::as_str)
        {
            attributes.push(KeyValue::new("gen_ai.system", p.to_owned()));
        }
        for (metric, key) in [
            ("prompt_tokens", "gen_ai.usage.input_tokens"),
            ("completion_tokens", "gen_ai.usage.output_tokens"),
        ] {
            if let Some(n) = metrics.and_then(|m| m.get(metric)).and_then(Value::as_f64) {
                attributes.push(KeyValue::new(key, n as i64));
            }
        }
    }
    let status = match row.get("error") {
        None | Some(Value::Null) => Status::Unset,
        Some(Value::String(e)) => Status::error(e.clone()),
        Some(other) => Status::error(other.to_string()),
    };
    let mut parents = parents.into_iter();
    let parent = parents.next().unwrap_or(SpanId::INVALID);
    let links = parents
        .map(|p| {
            opentelemetry::trace::Link::with_context(SpanContext::new(
                trace_id(row),
                p,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ))
        })
        .collect::<Vec<_>>();
    SpanData {
        span_context: context,
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: name.into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: {
            let mut l = SpanLinks::default();
            l.links = links;
            l
        },
        status,
        instrumentation_scope: InstrumentationScope::builder("braintrust").build(),
    }
}
