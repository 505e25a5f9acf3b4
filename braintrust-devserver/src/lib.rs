//! A local Braintrust-compatible server for offline work, CI and tests.
//!
//! It speaks the subset of the Braintrust app and API protocol that SDKs use for tracing
//! (login, project and experiment registration, `/version`, `/logs3` with the overflow path,
//! attachments, experiment summaries), validates and stores rows in SQLite with the backend's
//! merge semantics and `_xact_id`s, records requests for inspection (bounded, see
//! [`RecordLimits`]), can inject `/logs3` failures, answers a JSON query API under `/dev/api/`
//! and serves a trace viewer at `/`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), braintrust_devserver::DevServerError> {
//! use braintrust_devserver::{DevServer, DevServerConfig};
//! let server = DevServer::start(DevServerConfig::default()).await?;
//! // Point an SDK at it: BRAINTRUST_APP_URL = BRAINTRUST_API_URL = server.url(),
//! // BRAINTRUST_API_KEY = any non-empty string.
//! println!("{}", server.url());
//! # Ok(()) }
//! ```
//!
//! The server runs as long as at least one [`DevServer`] handle is alive; dropping the last
//! handle (or calling [`DevServer::shutdown`]) stops it.

#![warn(missing_docs)]

mod faults;
mod merge;
mod otlp;
mod query;
mod render;
mod rowtext;
mod server;
mod store;
mod summary;
mod transfer;
mod util;
mod viewer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use faults::Faults;
pub use transfer::{export_jsonl, import_jsonl, ImportSummary, Target, TransferError};

use server::Shared;
use store::{RowFilter, Store};

/// Errors from starting a [`DevServer`].
#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    /// The listening socket could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure (for example reading the bound address).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The SQLite database could not be opened or initialised.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The server thread of [`DevServer::start_blocking`] could not be started.
    #[error("server thread failed: {0}")]
    Thread(String),
    /// The configuration is unusable (for example an empty API key).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Bounds of the in-memory log of received requests ([`DevServer::requests`]). When either
/// bound is passed, the oldest requests are forgotten.
///
/// ```
/// use braintrust_devserver::{DevServerConfig, RecordLimits};
/// let config = DevServerConfig::default().record_requests(RecordLimits {
///     max_requests: 100,
///     max_body_bytes: 1 << 20,
/// });
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Most requests kept; `0` turns recording off.
    pub max_requests: usize,
    /// Most body bytes kept over all recorded requests (the newest request is always kept).
    pub max_body_bytes: usize,
}

impl RecordLimits {
    /// Recording off: [`DevServer::requests`] stays empty.
    pub const OFF: RecordLimits = RecordLimits {
        max_requests: 0,
        max_body_bytes: 0,
    };
}

impl Default for RecordLimits {
    /// 100,000 requests and 256 MiB of bodies.
    fn default() -> Self {
        RecordLimits {
            max_requests: 100_000,
            max_body_bytes: 256 << 20,
        }
    }
}

/// Configuration of a [`DevServer`], built with chained setters from
/// [`DevServerConfig::default`].
#[derive(Debug, Clone)]
pub struct DevServerConfig {
    host: String,
    port: u16,
    db_path: Option<PathBuf>,
    api_keys: Vec<String>,
    org_name: String,
    logs3_payload_max_bytes: Option<u64>,
    max_body_bytes: u64,
    record: RecordLimits,
}

/// Default [`DevServerConfig::max_body_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 << 20;

impl Default for DevServerConfig {
    /// Host `127.0.0.1`, port `0` (ephemeral), in-memory database, any non-empty API key
    /// accepted, org `dev-org`, no `logs3_payload_max_bytes`, 64 MiB body limit, no request
    /// log ([`RecordLimits::OFF`]: bodies are not kept once handled; tests opt in with
    /// [`DevServerConfig::for_tests`]).
    fn default() -> Self {
        DevServerConfig {
            host: "127.0.0.1".to_string(),
            port: 0,
            db_path: None,
            api_keys: Vec::new(),
            org_name: "dev-org".to_string(),
            logs3_payload_max_bytes: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            record: RecordLimits::OFF,
        }
    }
}

impl DevServerConfig {
    /// The default configuration with the request log on, within [`RecordLimits::default`],
    /// so a test can read what the SDK sent with [`DevServer::requests`].
    ///
    /// ```
    /// let server = braintrust_devserver::DevServer::start_blocking(
    ///     braintrust_devserver::DevServerConfig::for_tests(),
    /// ).unwrap();
    /// assert!(server.requests().is_empty());
    /// ```
    pub fn for_tests() -> Self {
        DevServerConfig::default().record_requests(RecordLimits::default())
    }

    /// TCP port to listen on; `0` picks a free ephemeral port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Interface to bind (default `127.0.0.1`). [`DevServer::url`] still uses `127.0.0.1` when
    /// this is an unspecified address such as `0.0.0.0`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// SQLite database file (created if missing; data persists across restarts).
    /// `None` keeps everything in memory.
    pub fn db_path(mut self, path: Option<PathBuf>) -> Self {
        self.db_path = path;
        self
    }

    /// API keys accepted as `Authorization: Bearer <key>`. Empty (the default) accepts any
    /// non-empty key on the SDK routes and leaves the viewer and `/dev/api/*` open. With keys
    /// set, every route needs one (the viewer asks for it once and keeps it in a cookie).
    /// An empty string in the list is refused by [`DevServer::start`].
    pub fn api_keys(mut self, keys: Vec<String>) -> Self {
        self.api_keys = keys;
        self
    }

    /// Name of the single organisation returned by login (default `dev-org`).
    pub fn org_name(mut self, name: impl Into<String>) -> Self {
        self.org_name = name.into();
        self
    }

    /// Server-side `/logs3` body limit. When set, `GET /version` reports it as
    /// `logs3_payload_max_bytes` (which enables the SDKs' overflow path) and `/logs3` bodies
    /// larger than it are answered with 413. `None` (default): no limit, not reported.
    pub fn logs3_payload_max_bytes(mut self, max: Option<u64>) -> Self {
        self.logs3_payload_max_bytes = max;
        self
    }

    /// Largest request body accepted on any route (default [`DEFAULT_MAX_BODY_BYTES`]). Larger
    /// bodies get 413: at once when `Content-Length` says so, otherwise as soon as the limit
    /// is passed, so a body is never held whole beyond the limit.
    pub fn max_body_bytes(mut self, max: u64) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// Bounds of the recorded-request log ([`RecordLimits::OFF`] to turn it off).
    pub fn record_requests(mut self, limits: RecordLimits) -> Self {
        self.record = limits;
        self
    }
}

/// Parses a stored row of any depth. Deep rows are parsed on a large-stack thread; dropping a
/// value nested thousands of levels deep recurses as deep (a 2 MiB stack handles about
/// 10,000 levels).
fn parse_row(text: &str) -> Value {
    if rowtext::depth(text) <= 100 {
        return serde_json::from_str(text).unwrap_or(Value::Null);
    }
    let text = text.to_string();
    rowtext::run_deep_sync(move || rowtext::parse_deep(&text).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

/// One HTTP request received by the server, as recorded for tests. Requests refused before
/// their body was read (401, 413) are recorded with an empty body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path without the query string, e.g. `/logs3`.
    pub path: String,
    /// Raw query string (without `?`), if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Vec<u8>,
    /// Response status; `0` while the request is still being handled.
    pub status: u16,
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is valid JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Inner {
    shared: Arc<Shared>,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Inner {
    fn stop(&self) {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running local Braintrust server. Cheap to clone; all clones control the same server.
///
/// The server stops when [`shutdown`](Self::shutdown) is called or the last clone is dropped.
#[derive(Clone)]
pub struct DevServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DevServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevServer")
            .field("url", &self.inner.shared.url)
            .finish()
    }
}

fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", addr.port()),
    }
}

/// Binds the socket and opens the store (must run inside a tokio runtime).
async fn prepare(
    config: DevServerConfig,
) -> Result<(Arc<Shared>, tokio::net::TcpListener), DevServerError> {
    if config.api_keys.iter().any(|k| k.trim().is_empty()) {
        return Err(DevServerError::Config(
            "an API key must not be empty (it would reject every request)".into(),
        ));
    }
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr.as_str())
        .await
        .map_err(|source| DevServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local_addr = listener.local_addr()?;
    let url = base_url(local_addr);
    let db_path = config.db_path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(db_path.as_deref()))
        .await
        .map_err(|e| DevServerError::Thread(e.to_string()))??;
    let org_id = store.meta_get_or_init("org_id", || uuid::Uuid::new_v4().to_string())?;
    let shared = Arc::new(Shared {
        store,
        url,
        org_id,
        org_name: config.org_name,
        api_keys: config.api_keys,
        logs3_payload_max_bytes: config.logs3_payload_max_bytes,
        max_body_bytes: config.max_body_bytes,
        record: config.record,
        local_addr,
        requests: Mutex::new(Default::default()),
        faults: Faults::default(),
        logs3_rows: AtomicUsize::new(0),
    });
    Ok((shared, listener))
}

async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let app = server::router(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.await;
        })
        .await;
    if let Err(e) = result {
        eprintln!("braintrust-devserver: server error: {e}");
    }
}

impl DevServer {
    fn from_parts(shared: Arc<Shared>, tx: tokio::sync::oneshot::Sender<()>) -> DevServer {
        DevServer {
            inner: Arc::new(Inner {
                shared,
                shutdown: Mutex::new(Some(tx)),
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Binds `host:port` (port 0 = ephemeral) and serves in a task on the current tokio
    /// runtime. Must be called from within a runtime.
    ///
    /// If the code under test blocks that runtime's only thread (for example a synchronous
    /// flush inside a `current_thread` test), use [`start_blocking`](Self::start_blocking).
    pub async fn start(config: DevServerConfig) -> Result<DevServer, DevServerError> {
        let (shared, listener) = prepare(config).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(shared.clone(), listener, rx));
        Ok(DevServer::from_parts(shared, tx))
    }

    /// Starts the server on its own thread with its own tokio runtime. Usable from synchronous
    /// code and from inside another runtime; returns once the socket is bound.
    pub fn start_blocking(config: DevServerConfig) -> Result<DevServer, DevServerError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("braintrust-devserver".to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("braintrust-devserver-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(DevServerError::Io(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match prepare(config).await {
                        Ok((shared, listener)) => {
                            let _ = ready_tx.send(Ok(shared.clone()));
                            serve(shared, listener, rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| DevServerError::Thread(e.to_string()))?;
        let shared = ready_rx
            .recv()
            .map_err(|_| DevServerError::Thread("server thread exited during startup".into()))??;
        Ok(DevServer::from_parts(shared, tx))
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash). Use it as both the app URL and
    /// the API URL; login reports it as the org's `api_url` and `proxy_url`.
    pub fn url(&self) -> String {
        self.shared().url.clone()
    }

    /// The address actually bound (for example `0.0.0.0:8000` when binding every interface,
    /// while [`url`](Self::url) names `127.0.0.1` for local clients).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// The id of the single organisation (stable for the lifetime of the database).
    pub fn org_id(&self) -> String {
        self.shared().org_id.clone()
    }

    /// The requests received since start (or the last [`clear_requests`](Self::clear_requests)),
    /// in arrival order, within the configured [`RecordLimits`] (the oldest are dropped first;
    /// empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared().clear_requests()
    }

    /// All stored rows after the server-side merge, in first-insert order, each with the
    /// `_xact_id` of the request that last wrote it.
    pub fn rows(&self) -> Vec<Value> {
        let texts = self
            .shared()
            .store
            .rows_text(&RowFilter::default())
            .unwrap_or_default();
        texts.iter().map(|t| parse_row(t)).collect()
    }

    /// The first stored row whose `id` is `id` (under any object).
    pub fn row(&self, id: &str) -> Option<Value> {
        let text = self.shared().store.row_text(id).ok().flatten()?;
        Some(parse_row(&text))
    }

    /// Total number of rows received over `/logs3` by this server instance, before merging
    /// (rows sent through the overflow path included; injected failures excluded).
    pub fn logs3_row_count(&self) -> usize {
        self.shared().logs3_rows.load(Ordering::SeqCst)
    }

    /// All projects as `{id, name, org_id, created}`, in creation order.
    pub fn projects(&self) -> Vec<Value> {
        self.shared().store.projects().unwrap_or_default()
    }

    /// All experiments (`{id, name, project_id, created, ...}`), in creation order.
    pub fn experiments(&self) -> Vec<Value> {
        self.shared()
            .store
            .experiments(None, None)
            .unwrap_or_default()
    }

    /// Renders the trace whose `root_span_id` is given as an indented text tree, one span per
    /// line: `<name>[ [type]] <duration>ms[ error: <first line>][ scores: k=v, ...]`, children
    /// indented by two spaces and ordered by start time. Empty if the trace is unknown.
    pub fn trace_tree(&self, root_span_id: &str) -> String {
        let f = RowFilter {
            root_span_id: Some(root_span_id.to_string()),
            ..RowFilter::default()
        };
        let rows = self.shared().store.rows_text(&f).unwrap_or_default();
        rowtext::run_deep_sync(move || query::render_texts(&rows)).unwrap_or_default()
    }

    /// [`trace_tree`](Self::trace_tree) of every trace, concatenated, in order of each trace's
    /// first stored row.
    pub fn render_all_traces(&self) -> String {
        let ids = self.shared().store.trace_ids().unwrap_or_default();
        ids.iter().map(|id| self.trace_tree(id)).collect()
    }

    /// The fault-injection handle for `/logs3`.
    pub fn faults(&self) -> Faults {
        self.shared().faults.clone()
    }

    /// Waits until at least `n` rows are stored (after merge), polling every 10 ms. Returns
    /// `false` if `timeout` passes first. Needs a tokio runtime with the time driver.
    pub async fn wait_for_rows(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared().store.row_count().unwrap_or(0) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the server (for every clone of this handle). In-flight requests are allowed to
    /// finish; the database stays on disk.
    pub fn shutdown(self) {
        self.inner.stop();
    }
}
