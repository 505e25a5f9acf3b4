//! One backend: its configuration, credentials, HTTP client, login, queue,
//! background logger, masking function and counters. A value, not a hidden
//! global: a process may hold several, each with its own everything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use serde_json::Value;

use crate::config::{mask_key, Config, QueueFullPolicy};
use crate::logger::{self, Cmd, Op, Responder};
use crate::object::{ObjectInner, ObjectSpec, Resolved};
use crate::span::SpanCore;
use crate::Error;

/// A user-supplied masking function, applied on the logger thread to
/// `input`, `output`, `expected`, `metadata` and `error` before sending.
pub type MaskingFunction = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// What login returned (spec §2.2).
#[derive(Debug, Clone)]
pub struct LoginInfo {
    /// Organization id.
    pub org_id: String,
    /// Organization name.
    pub org_name: String,
    /// Data-plane URL used for `/logs3`.
    pub api_url: String,
    /// Control-plane URL.
    pub app_url: String,
    /// Proxy URL, if any.
    pub proxy_url: Option<String>,
}

/// Counters of one state. Every row that is not delivered is counted here.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub queued: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub delivered_rows: AtomicU64,
    pub failed_rows: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Entries the logger thread holds and has not settled yet.
    pub in_flight: AtomicU64,
    /// Entries given up at a flush deadline (not yet reported).
    pub abandoned: AtomicU64,
}

/// A snapshot of a state's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Entries accepted into the queue.
    pub queued: u64,
    /// Entries dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Rows the backend acknowledged.
    pub delivered_rows: u64,
    /// Rows dropped after failing for good (or written to the failed-payload directory).
    pub failed_rows: u64,
    /// `/logs3` requests sent (tries included).
    pub requests: u64,
    /// Request body bytes sent to `/logs3`.
    pub bytes_sent: u64,
}

pub(crate) struct StateInner {
    pub(crate) config: Config,
    pub(crate) queue: ArrayQueue<Op>,
    pub(crate) notify: tokio::sync::Notify,
    pub(crate) space: (Mutex<()>, std::sync::Condvar),
    pub(crate) blocked_waiters: AtomicU64,
    pub(crate) ctrl: OnceLock<tokio::sync::mpsc::UnboundedSender<Cmd>>,
    pub(crate) worker_thread: OnceLock<std::thread::ThreadId>,
    pub(crate) worker_alive: AtomicBool,
    pub(crate) login: RwLock<Option<LoginInfo>>,
    pub(crate) login_lock: tokio::sync::Mutex<()>,
    pub(crate) http: OnceLock<Result<reqwest::Client, String>>,
    pub(crate) masking: RwLock<Option<MaskingFunction>>,
    pub(crate) counters: Counters,
    pub(crate) exit_flush: AtomicBool,
    pub(crate) last_drop_report: Mutex<Option<Instant>>,
}

/// One Braintrust backend. Cheap to clone; clones share everything.
///
/// ```
/// use braintrust_core::{State, Config, HttpOptions};
/// let byoc = State::new(
///     Config::from_env()
///         .api_key("my-key")
///         .app_url("http://127.0.0.1:9")
///         .http(HttpOptions::new().default_header("x-team", "search")),
/// ).unwrap();
/// assert_eq!(byoc.stats().queued, 0);
/// ```
#[derive(Clone)]
pub struct State(pub(crate) Arc<StateInner>);

static DEFAULT_STATE: OnceLock<State> = OnceLock::new();
static ALL_STATES: Mutex<Vec<Weak<StateInner>>> = Mutex::new(Vec::new());

impl State {
    /// A new, independent state. Nothing touches the network until the first
    /// flush, so this returns at once.
    pub fn new(config: Config) -> Result<State, Error> {
        let inner = Arc::new(StateInner {
            queue: ArrayQueue::new(config.queue_size.max(1)),
            config,
            notify: tokio::sync::Notify::new(),
            space: (Mutex::new(()), std::sync::Condvar::new()),
            blocked_waiters: AtomicU64::new(0),
            ctrl: OnceLock::new(),
            worker_thread: OnceLock::new(),
            worker_alive: AtomicBool::new(false),
            login: RwLock::new(None),
            login_lock: tokio::sync::Mutex::new(()),
            http: OnceLock::new(),
            masking: RwLock::new(None),
            counters: Counters::default(),
            exit_flush: AtomicBool::new(false),
            last_drop_report: Mutex::new(None),
        });
        let state = State(inner);
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

    /// Counters: queued, dropped, delivered, failed rows; requests and bytes.
    pub fn stats(&self) -> Stats {
        let c = &self.0.counters;
        Stats {
            queued: c.queued.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            delivered_rows: c.delivered_rows.load(Ordering::Relaxed),
            failed_rows: c.failed_rows.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }

    /// Sets (or clears) the masking function of this state. It runs on the
    /// logger thread, so a slow one never blocks the application; one that
    /// fails replaces the field with an error marker and warns once.
    pub fn set_masking_function(&self, f: Option<MaskingFunction>) {
        *self.0.masking.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// The login result, once the background login has happened.
    pub fn login_info(&self) -> Option<LoginInfo> {
        self.0
            .login
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logs in now (blocking) and returns the result. Repeat calls reuse it.
    pub fn login(&self) -> Result<LoginInfo, Error> {
        self.call_worker(|done| Cmd::Login { done })
    }

    /// Forgets the current login so the next request logs in again with this
    /// state's configuration. Other states are never affected. To change
    /// credentials, build a new `State` with a new [`Config`]: a state's
    /// configuration is fixed so its rows can never switch backends midway.
    pub fn reset_login(&self) {
        *self.0.login.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Starts the background logger thread if it is not running.
    pub(crate) fn ensure_started(&self) {
        if self.0.ctrl.get().is_some() {
            return;
        }
        logger::start_worker(self);
    }

    pub(crate) fn is_worker_thread(&self) -> bool {
        self.0.worker_thread.get() == Some(&std::thread::current().id())
    }

    /// Queues a span whose unsent writes changed.
    pub(crate) fn enqueue_span(&self, core: &Arc<SpanCore>) {
        self.enqueue(Op::Span(core.clone()));
    }

    /// Queues one entry; drops it (counted) or blocks when the queue is full.
    pub(crate) fn enqueue(&self, op: Op) {
        let inner = &self.0;
        if inner.ctrl.get().is_none() {
            self.ensure_started();
        }
        let mut op = op;
        loop {
            match inner.queue.push(op) {
                Ok(()) => {
                    inner.counters.queued.fetch_add(1, Ordering::Relaxed);
                    inner.notify.notify_one();
                    return;
                }
                Err(back) => {
                    if inner.config.queue_full == QueueFullPolicy::Block
                        && inner.worker_alive.load(Ordering::Acquire)
                        && !self.is_worker_thread()
                    {
                        op = back;
                        inner.notify.notify_one();
                        let (lock, cv) = &inner.space;
                        inner.blocked_waiters.fetch_add(1, Ordering::AcqRel);
                        let g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if inner.queue.is_full() {
                            let _ = cv.wait_timeout(g, Duration::from_millis(50));
                        }
                        inner.blocked_waiters.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    back.discard();
                    inner
                        .counters
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    self.report_drops_throttled();
                    return;
                }
            }
        }
    }

    /// Reports queue drops on stderr at most once per drop-logging period.
    pub(crate) fn report_drops_throttled(&self) {
        let period = self.0.config.drop_logging_period;
        let mut last = self
            .0
            .last_drop_report
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < period) {
            return;
        }
        *last = Some(now);
        let n = self.0.counters.dropped_queue_full.load(Ordering::Relaxed);
        eprintln!(
            "braintrust: dropped {n} row(s) so far because the logging queue is full (capacity {}); raise BRAINTRUST_QUEUE_SIZE or flush more often",
            self.0.config.queue_size
        );
    }

    fn call_worker<T: Send + 'static>(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<Result<T, Error>>) -> Cmd,
    ) -> Result<T, Error> {
        if self.is_worker_thread() {
            return Err(Error::Logger(
                "called from the logger thread itself (e.g. from a masking function)".into(),
            ));
        }
        self.ensure_started();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ctrl = self
            .0
            .ctrl
            .get()
            .ok_or_else(|| Error::Logger("not started".into()))?;
        ctrl.send(make(tx))
            .map_err(|_| Error::Logger("the logger thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Logger("the logger thread has stopped".into()))?
    }

    /// Blocks until everything queued before the call is delivered or has
    /// failed for good. Works from sync code and from inside any tokio
    /// runtime (the logger has its own thread), without deadlock.
    pub fn flush(&self) -> Result<(), Error> {
        self.call_worker(|done| Cmd::Flush {
            done: Responder::Sync(done),
            deadline: None,
        })
    }

    /// Like [`flush`](State::flush) but gives up at `timeout`: rows still
    /// undelivered then are written to the failed-payload directory (when
    /// set), counted and returned as [`Error::Timeout`].
    pub fn flush_with_timeout(&self, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        let deadline = start + timeout;
        if self.is_worker_thread() {
            return Err(Error::Logger("called from the logger thread itself".into()));
        }
        self.ensure_started();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ctrl = self
            .0
            .ctrl
            .get()
            .ok_or_else(|| Error::Logger("not started".into()))?;
        if ctrl
            .send(Cmd::Flush {
                done: Responder::Sync(tx),
                deadline: Some(deadline),
            })
            .is_err()
        {
            return Err(self.give_up(start));
        }
        // The logger thread enforces the deadline itself; this bound also
        // holds when it is stuck in user code (a slow masking function).
        match rx.recv_timeout(timeout + Duration::from_millis(25)) {
            Ok(r) => r,
            Err(_) => Err(self.give_up(start)),
        }
    }

    /// The caller's side of a missed deadline: takes what is still queued
    /// (written to the failed-payload directory when set) and counts what
    /// the logger thread still holds.
    fn give_up(&self, start: Instant) -> Error {
        let queued = logger::abandon_queue(self, Instant::now() + logger::EXIT_WRITE_BUDGET);
        let held = self.0.counters.in_flight.load(Ordering::Acquire);
        Error::Timeout {
            waited_ms: start.elapsed().as_millis(),
            undelivered: queued + held,
        }
    }

    /// The async form of [`flush`](State::flush).
    pub async fn flush_async(&self) -> Result<(), Error> {
        self.flush_async_inner(None).await
    }

    /// The async form of [`flush_with_timeout`](State::flush_with_timeout).
    pub async fn flush_with_timeout_async(&self, timeout: Duration) -> Result<(), Error> {
        self.flush_async_inner(Some(Instant::now() + timeout)).await
    }

    async fn flush_async_inner(&self, deadline: Option<Instant>) -> Result<(), Error> {
        if self.is_worker_thread() {
            return Err(Error::Logger("called from the logger thread itself".into()));
        }
        self.ensure_started();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ctrl = self
            .0
            .ctrl
            .get()
            .ok_or_else(|| Error::Logger("not started".into()))?;
        ctrl.send(Cmd::Flush {
            done: Responder::Async(tx),
            deadline,
        })
        .map_err(|_| Error::Logger("the logger thread has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Logger("the logger thread has stopped".into()))?
    }

    /// Resolves a container's id (blocking).
    pub(crate) fn resolve_blocking(&self, object: &Arc<ObjectInner>) -> Result<String, Error> {
        if let Some(r) = object.resolved.get() {
            return Ok(r.id.clone());
        }
        let object = object.clone();
        self.call_worker(move |done| Cmd::Resolve { object, done })
    }

    /// Stops the background logger after a final flush bounded by `timeout`.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let r = self.flush_with_timeout(timeout);
        crate::lifecycle::unregister_exit_flush_for(self);
        if let Some(ctrl) = self.0.ctrl.get() {
            let _ = ctrl.send(Cmd::Shutdown);
        }
        r
    }

    /// The async form of [`shutdown`](State::shutdown).
    pub async fn shutdown_async(&self, timeout: Duration) -> Result<(), Error> {
        let r = self.flush_with_timeout_async(timeout).await;
        crate::lifecycle::unregister_exit_flush_for(self);
        if let Some(ctrl) = self.0.ctrl.get() {
            let _ = ctrl.send(Cmd::Shutdown);
        }
        r
    }

    // ---- HTTP: runs on the logger thread ----

    pub(crate) fn http(&self) -> Result<reqwest::Client, Error> {
        self.0
            .http
            .get_or_init(|| build_client(&self.0.config))
            .clone()
            .map_err(|m| Error::Config {
                field: "http",
                rule: m,
            })
    }

    fn bearer(&self) -> Result<String, Error> {
        match &self.0.config.api_key {
            Some(k) => Ok(format!("Bearer {k}")),
            None => Err(Error::NoApiKey),
        }
    }

    /// Logs in (once; concurrent callers wait for the same login).
    pub(crate) async fn ensure_login(&self) -> Result<LoginInfo, Error> {
        if let Some(l) = self.login_info() {
            return Ok(l);
        }
        let _g = self.0.login_lock.lock().await;
        if let Some(l) = self.login_info() {
            return Ok(l);
        }
        let info = self.do_login().await?;
        *self.0.login.write().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());
        Ok(info)
    }

    async fn do_login(&self) -> Result<LoginInfo, Error> {
        let cfg = &self.0.config;
        let key = cfg.api_key.clone().ok_or(Error::NoApiKey)?;
        if key == "___TEST_API_KEY__" {
            return Ok(LoginInfo {
                org_id: "test-org-id".into(),
                org_name: "test-org-name".into(),
                api_url: cfg
                    .api_url
                    .clone()
                    .unwrap_or_else(|| "https://api.braintrust.ai".into()),
                app_url: cfg.app_url.clone(),
                proxy_url: None,
            });
        }
        let http = self.http()?;
        let url = join_url(&cfg.app_url, "api/apikey/login");
        // One attempt: the logger thread retries the whole resolution with
        // the configured backoff, so retrying here too would multiply waits.
        let resp = http
            .post(&url)
            .header("authorization", self.bearer()?)
            .header("content-length", "0")
            .send()
            .await;
        let resp = resp.map_err(|e| Error::Http {
            context: format!("POST {url}"),
            message: logger::describe_reqwest(&e),
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::InvalidApiKey {
                masked_key: mask_key(&key),
                status: status.as_u16(),
                body: truncate(&body, 500),
            });
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| Error::Http {
            context: format!("POST {url}"),
            message: format!("login response is not JSON: {e}"),
        })?;
        parse_login(&v, cfg)
    }

    /// Resolves (registers) a container and returns its ids.
    pub(crate) async fn resolve(&self, object: &Arc<ObjectInner>) -> Result<Resolved, Error> {
        if let Some(r) = object.resolved.get() {
            return Ok(r.clone());
        }
        let _g = object.resolve_lock.lock().await;
        if let Some(r) = object.resolved.get() {
            return Ok(r.clone());
        }
        let login = self.ensure_login().await?;
        let resolved = match &object.spec {
            ObjectSpec::Known { id } => Resolved { id: id.clone() },
            ObjectSpec::Project { name, id } => {
                let p = self
                    .register_project(&login, name.as_deref(), id.as_deref())
                    .await?;
                Resolved { id: p.0.clone() }
            }
            ObjectSpec::Experiment {
                project_name,
                project_id,
                options,
            } => {
                let (pid, _) = self
                    .register_project(&login, project_name.as_deref(), project_id.as_deref())
                    .await?;
                let mut body = serde_json::Map::new();
                body.insert("project_id".into(), Value::String(pid.clone()));
                body.insert("ensure_new".into(), Value::Bool(!options.update));
                if let Some(n) = &options.name {
                    body.insert("name".into(), Value::String(n.clone()));
                }
                if let Some(d) = &options.description {
                    body.insert("description".into(), Value::String(d.clone()));
                }
                if let Some(b) = &options.base_experiment_id {
                    body.insert("base_exp_id".into(), Value::String(b.clone()));
                }
                body.insert("public".into(), Value::Bool(options.public));
                if let Some(m) = &options.metadata {
                    body.insert("metadata".into(), Value::Object(m.clone()));
                }
                if let Some(t) = &options.tags {
                    body.insert("tags".into(), serde_json::json!(t));
                }
                let v = self
                    .api_json(
                        &login,
                        reqwest::Method::POST,
                        "v1/experiment",
                        Some(Value::Object(body)),
                    )
                    .await?;
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Http {
                        context: "POST /v1/experiment".into(),
                        message: "response has no id".into(),
                    })?;
                Resolved { id: id.to_string() }
            }
        };
        let _ = object.resolved.set(resolved.clone());
        Ok(resolved)
    }

    async fn register_project(
        &self,
        login: &LoginInfo,
        name: Option<&str>,
        id: Option<&str>,
    ) -> Result<(String, String), Error> {
        match (name, id) {
            (Some(n), Some(i)) => Ok((i.to_string(), n.to_string())),
            (None, Some(i)) => {
                let v = self
                    .api_json(
                        login,
                        reqwest::Method::GET,
                        &format!("v1/project/{i}"),
                        None,
                    )
                    .await?;
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                Ok((i.to_string(), name.to_string()))
            }
            (n, None) => {
                let n = n.unwrap_or("Global");
                let body = serde_json::json!({"name": n, "org_name": login.org_name});
                let v = self
                    .api_json(login, reqwest::Method::POST, "v1/project", Some(body))
                    .await?;
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Http {
                        context: "POST /v1/project".into(),
                        message: "response has no id".into(),
                    })?;
                Ok((id.to_string(), n.to_string()))
            }
        }
    }

    /// An authenticated JSON call on the API URL.
    pub(crate) async fn api_json(
        &self,
        login: &LoginInfo,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let http = self.http()?;
        let url = join_url(&login.api_url, path);
        let mut req = http
            .request(method.clone(), &url)
            .header("authorization", self.bearer()?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let context = format!("{method} {url}");
        let resp = req.send().await.map_err(|e| Error::Http {
            context: context.clone(),
            message: logger::describe_reqwest(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Http {
                context,
                message: format!("[{}] {}", status.as_u16(), truncate(&text, 500)),
            });
        }
        serde_json::from_str(&text).map_err(|e| Error::Http {
            context,
            message: format!("response is not JSON: {e}"),
        })
    }
}

fn parse_login(v: &Value, cfg: &Config) -> Result<LoginInfo, Error> {
    let orgs: Vec<&serde_json::Map<String, Value>> = v
        .get("org_info")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Organization("login response has no org_info array".into()))?
        .iter()
        .filter_map(Value::as_object)
        .filter(|o| {
            o.get("id").is_some_and(Value::is_string) && o.get("name").is_some_and(Value::is_string)
        })
        .collect();
    if orgs.is_empty() {
        return Err(Error::Organization(
            "This user is not part of any organizations.".into(),
        ));
    }
    let org = match &cfg.org_name {
        Some(name) => orgs
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| {
                let names: Vec<&str> = orgs
                    .iter()
                    .filter_map(|o| o.get("name").and_then(Value::as_str))
                    .collect();
                Error::Organization(format!(
                    "Organization {name} not found. Must be one of {}",
                    names.join(", ")
                ))
            })?,
        None => &orgs[0],
    };
    let s = |k: &str| org.get(k).and_then(Value::as_str).map(str::to_string);
    let org_name = s("name").unwrap_or_default();
    let api_url = cfg.api_url.clone().or_else(|| s("api_url")).ok_or_else(|| {
        Error::Organization(match &cfg.org_name {
            Some(n) => format!(
                "Unable to log into organization '{n}'. Are you sure this credential is scoped to the organization?"
            ),
            None => "Unable to log into any organization with the provided credential.".into(),
        })
    })?;
    Ok(LoginInfo {
        org_id: s("id").unwrap_or_default(),
        org_name,
        api_url,
        app_url: cfg.app_url.clone(),
        proxy_url: s("proxy_url"),
    })
}

pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn build_client(cfg: &Config) -> Result<reqwest::Client, String> {
    let h = &cfg.http;
    if let Some(c) = &h.client {
        return Ok(c.clone());
    }
    let mut ua = format!("braintrust-rust/{}", env!("CARGO_PKG_VERSION"));
    if let Some(s) = &h.user_agent_suffix {
        ua.push(' ');
        ua.push_str(s);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &h.default_headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("default header name {k:?}: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|e| format!("default header {k:?} value: {e}"))?;
        headers.append(name, value);
    }
    let mut b = reqwest::Client::builder()
        .user_agent(ua)
        .default_headers(headers)
        .timeout(cfg.effective_timeout())
        .tcp_nodelay(true)
        .use_rustls_tls();
    if let Some(ct) = h.connect_timeout {
        b = b.connect_timeout(ct);
    }
    if let Some(p) = &h.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy: {e}"))?);
    }
    for pem in &h.root_certificates_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("root certificate: {e}"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(pem) = &h.identity_pem {
        b = b.identity(reqwest::Identity::from_pem(pem).map_err(|e| format!("identity: {e}"))?);
    }
    b.build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn login_picks_the_named_org_and_env_api_url() {
        let v = json!({"org_info": [
            {"id": "1", "name": "a", "api_url": "http://a"},
            "junk",
            {"id": "2", "name": "b", "api_url": "http://b"}
        ]});
        let l = parse_login(&v, &Config::default()).unwrap();
        assert_eq!((l.org_id.as_str(), l.api_url.as_str()), ("1", "http://a"));
        let l = parse_login(&v, &Config::default().org_name("b")).unwrap();
        assert_eq!(l.api_url, "http://b");
        let l = parse_login(
            &v,
            &Config::default().org_name("b").api_url("http://override"),
        )
        .unwrap();
        assert_eq!(l.api_url, "http://override");
        let e = parse_login(&v, &Config::default().org_name("c")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Organization c not found. Must be one of a, b"
        );
        let e = parse_login(&json!({"org_info": []}), &Config::default()).unwrap_err();
        assert_eq!(e.to_string(), "This user is not part of any organizations.");
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join_url("http://x/", "/logs3"), "http://x/logs3");
        assert_eq!(join_url("http://x", "logs3"), "http://x/logs3");
    }
}
