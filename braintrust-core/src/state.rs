//! One backend: its configuration, API client and delivery pipeline. A
//! value, not a hidden global: a process may hold several, each with its
//! own everything.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::api::{Api, LoginInfo};
use crate::config::Config;
use crate::logger::ObjectInner;
use crate::pipeline::{Bound, MaskingFunction, Op, Pipeline, RowObserver, Stats};
use crate::span::SpanCore;
use crate::Error;

pub(crate) struct StateInner {
    config: Arc<Config>,
    api: Arc<Api>,
    pipeline: Arc<Pipeline>,
    pub(crate) exit_flush: AtomicBool,
}

/// One Braintrust backend: credentials, URLs, HTTP client, login, the
/// delivery pipeline (queue, logger thread, counters) and the exit policy.
/// Cheap to clone; clones share everything.
///
/// Most programs never name it: [`init_logger`](crate::init_logger) uses the
/// process-wide one built from the environment ([`State::default_state`]).
/// Make your own with [`State::new`] to log to a second organization or
/// server, and pass it through [`LoggerOptions::state`](crate::LoggerOptions::state).
///
/// ```
/// use braintrust_core::{State, Config, HttpOptions};
/// let byoc = State::new(
///     Config::from_env()
///         .api_key("my-key")
///         .app_url("http://127.0.0.1:9")
///         .http(HttpOptions::new().default_header("x-team", "search")),
/// ).unwrap();
/// assert_eq!(byoc.stats().logged, 0);
/// ```
#[derive(Clone)]
pub struct State(pub(crate) Arc<StateInner>);

static DEFAULT_STATE: OnceLock<State> = OnceLock::new();
static ALL_STATES: Mutex<Vec<Weak<StateInner>>> = Mutex::new(Vec::new());

impl State {
    /// A new, independent state. Nothing touches the network until something
    /// is logged on it (or it is flushed or logged in explicitly), so this
    /// returns at once; the first logged row starts its logger thread, which
    /// logs in and sends in the background (with
    /// [`Config::sync_flush`] only at a flush).
    pub fn new(config: Config) -> Result<State, Error> {
        let config = Arc::new(config);
        let api = Arc::new(Api::new(config.clone()));
        let pipeline = Pipeline::new(config.clone(), api.clone());
        let state = State(Arc::new(StateInner {
            config,
            api,
            pipeline,
            exit_flush: AtomicBool::new(false),
        }));
        {
            let mut all = ALL_STATES.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&state.0));
        }
        crate::lifecycle::apply_policy(&state);
        Ok(state)
    }

    /// The process-wide state, built from the environment on first use.
    pub fn default_state() -> Result<State, Error> {
        if let Some(s) = DEFAULT_STATE.get() {
            return Ok(s.clone());
        }
        let s = State::new(Config::from_env())?;
        Ok(DEFAULT_STATE.get_or_init(|| s).clone())
    }

    pub(crate) fn all() -> Vec<State> {
        let all = ALL_STATES.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().filter_map(|w| w.upgrade().map(State)).collect()
    }

    /// This state's configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub(crate) fn legacy_ids(&self) -> bool {
        self.0.config.legacy_ids
    }

    pub(crate) fn api(&self) -> &Api {
        &self.0.api
    }

    pub(crate) fn pipeline(&self) -> &Arc<Pipeline> {
        &self.0.pipeline
    }

    /// Where every logged row of this backend ended (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        self.0.pipeline.stats()
    }

    /// Sets (or clears) the masking function of this state. It runs off the
    /// application thread (and off the logger's own event loop, so a slow
    /// one never stops deadlines); one that fails replaces the field with an
    /// error marker and warns once.
    pub fn set_masking_function(&self, f: Option<MaskingFunction>) {
        self.0.pipeline.set_masking_function(f);
    }

    /// Sets (or clears) a row observer: a function the logger thread calls
    /// with the JSON text of every row it prepares for `/logs3` (after
    /// merging and masking, before sending), whatever then becomes of the
    /// row. It mirrors this backend's rows elsewhere (for example
    /// `braintrust::otel::OtelMirror`, which turns them into OpenTelemetry
    /// spans for a collector). It must return quickly: hand the text to a
    /// channel. A panic in it is caught and reported once.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use braintrust_core::{Config, State};
    /// let state = State::new(Config::default().api_key("k").app_url("http://127.0.0.1:9")).unwrap();
    /// let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    /// let sink = seen.clone();
    /// state.set_row_observer(Some(Arc::new(move |row: &str| sink.lock().unwrap().push(row.to_owned()))));
    /// state.set_row_observer(None);
    /// ```
    pub fn set_row_observer(&self, f: Option<RowObserver>) {
        self.0.pipeline.set_row_observer(f);
    }

    /// What the server holds for an attachment logged through this backend
    /// (`GET /attachment`): its upload status and, once uploaded, its bytes.
    /// Blocks (from async code, call it in `spawn_blocking`).
    ///
    /// ```no_run
    /// # fn demo(state: &braintrust_core::State, a: &braintrust_core::Attachment) -> Result<(), braintrust_core::Error> {
    /// let stored = state.read_attachment(&a.reference())?;
    /// assert_eq!(stored.status, braintrust_core::UploadStatus::Done);
    /// # Ok(()) }
    /// ```
    pub fn read_attachment(
        &self,
        reference: &crate::AttachmentReference,
    ) -> Result<crate::StoredAttachment, Error> {
        crate::pipeline::read_attachment(&self.0.pipeline, reference)
    }

    /// The login result, once the background login has happened.
    pub fn login_info(&self) -> Option<LoginInfo> {
        self.0.api.login_info()
    }

    /// Logs in now (blocking) and returns the result. Repeat calls reuse it.
    pub fn login(&self) -> Result<LoginInfo, Error> {
        self.0.pipeline.login()
    }

    /// Forgets the current login so the next request logs in again with this
    /// state's configuration. Other states are never affected. To change
    /// credentials, build a new `State` with a new [`Config`]: a state's
    /// configuration is fixed so its rows can never switch backends midway.
    pub fn reset_login(&self) {
        self.0.api.reset_login();
    }

    pub(crate) fn ensure_started(&self) {
        self.0.pipeline.ensure_started();
    }

    /// Queues a span whose unsent writes changed, with `bytes` of payload.
    pub(crate) fn enqueue_span(&self, core: &Arc<SpanCore>, bytes: usize) {
        self.0.pipeline.enqueue(Op::Span(core.clone()), bytes);
    }

    /// Queues a ready row (`update_span`, feedback).
    pub(crate) fn enqueue_row(
        &self,
        object: Arc<ObjectInner>,
        row: serde_json::Map<String, serde_json::Value>,
    ) {
        // Ready rows (updates, feedback) are small and rare: not counted
        // against the byte budget.
        self.0.pipeline.enqueue(Op::Row(object, Box::new(row)), 0);
    }

    /// Blocks until everything queued before the call has an outcome:
    /// delivered, or failed for good (after the retry policy's attempts and
    /// budget). Works from sync code and from inside any tokio runtime (the
    /// logger has its own thread), without deadlock. Returns
    /// [`Error::RowsLost`] when any row was lost since the previous flush.
    pub fn flush(&self) -> Result<(), Error> {
        self.0.pipeline.flush(Bound {
            total: None,
            idle: None,
            label: "flush",
        })
    }

    /// Like [`flush`](State::flush) but gives up at `timeout` (plus a
    /// 250 ms grace at most): rows still undelivered then, queued or in
    /// flight, are counted, written to the failed-payload directory when
    /// set, and returned as [`Error::Timeout`].
    pub fn flush_with_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.0.pipeline.flush(Bound {
            total: Some(timeout),
            idle: None,
            label: "flush",
        })
    }

    /// A flush bounded by `total`, and by `idle` without any row reaching an
    /// outcome (the exit policy's bound).
    pub(crate) fn flush_bounded(
        &self,
        total: Option<Duration>,
        idle: Option<Duration>,
    ) -> Result<(), Error> {
        self.0.pipeline.flush(Bound {
            total,
            idle,
            label: "at exit",
        })
    }

    /// The async form of [`flush`](State::flush).
    pub async fn flush_async(&self) -> Result<(), Error> {
        self.0.pipeline.flush_async(None).await
    }

    /// The async form of [`flush_with_timeout`](State::flush_with_timeout);
    /// the bound holds on the caller's side on any executor.
    pub async fn flush_with_timeout_async(&self, timeout: Duration) -> Result<(), Error> {
        self.0.pipeline.flush_async(Some(timeout)).await
    }

    /// Resolves a container's id (blocking).
    pub(crate) fn resolve_blocking(&self, object: &Arc<ObjectInner>) -> Result<String, Error> {
        self.0.pipeline.resolve_blocking(object)
    }

    /// Stops the background logger after a final flush bounded by `timeout`,
    /// and unregisters the exit flush.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let r = self.flush_with_timeout(timeout);
        self.finish_shutdown();
        r
    }

    /// The async form of [`shutdown`](State::shutdown).
    pub async fn shutdown_async(&self, timeout: Duration) -> Result<(), Error> {
        let r = self.flush_with_timeout_async(timeout).await;
        self.finish_shutdown();
        r
    }

    fn finish_shutdown(&self) {
        crate::lifecycle::unregister_exit_flush_for(self);
        self.0.pipeline.print_totals("shutdown");
        self.0.pipeline.stop();
    }
}
