//! A small Braintrust backend on loopback whose endpoints (login, `/logs3`,
//! `/version`, project registration, the attachment calls) can each be told
//! to misbehave: hang, reset the connection, answer an error status (a
//! number of times, or always), ask for `Retry-After`, refuse bodies over a
//! size, or quote the request's `authorization` header in an error body;
//! and that can be stopped and restarted on the same port. It counts
//! requests, every row it accepted and the distinct row ids among them, so
//! tests check what a user would: which rows arrived, and how many times.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What an endpoint does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Answer normally.
    Ok,
    /// Accept the connection and never answer.
    Hang,
    /// Answer this status (with this `Retry-After`, if any).
    Status(u16, Option<String>),
    /// Answer this status for the next `n` requests, then normally.
    StatusTimes(u16, usize),
    /// Answer 413 to bodies over this many bytes.
    TooLargeOver(usize),
    /// Answer normally after this delay.
    Delay(Duration),
    /// Reset the connection without storing anything.
    Reset,
    /// For the next `n` requests: store the rows, then reset the connection
    /// (the answer is lost, so the client retries: at-least-once).
    ResetAfterStoring(usize),
    /// Answer this status with a body quoting the request's `authorization`
    /// header, as some proxies do.
    EchoAuth(u16),
}

#[derive(Default)]
struct Inner {
    login: Option<Mode>,
    logs3: Option<Mode>,
    login_calls: usize,
    logs3_calls: usize,
    /// The other endpoints' modes and calls, by [`Faulty::route`] name.
    routes: HashMap<&'static str, Mode>,
    route_calls: HashMap<&'static str, usize>,
    largest_body: usize,
    ids: HashSet<String>,
    rows: usize,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    url: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server; it stops when dropped (with the test).
pub struct Faulty {
    shared: Shared,
    addr: SocketAddr,
    /// Set to stop the accept loop and drop every open connection.
    stop: Mutex<
        Option<(
            tokio::sync::watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
    runtime: tokio::runtime::Runtime,
}

/// Drops its connection (with a reset) when fired by a handler.
#[derive(Clone)]
struct ResetHandle(Arc<tokio::sync::Notify>);

impl Faulty {
    /// Starts on 127.0.0.1 with every endpoint answering normally.
    pub fn start() -> Faulty {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            inner: Arc::default(),
            url: format!("http://{addr}"),
        };
        let server = Faulty {
            shared,
            addr,
            stop: Mutex::new(None),
            runtime,
        };
        server.serve(listener);
        server
    }

    /// Stops listening and drops every open connection (requests in flight
    /// see a reset). What the server counted is kept.
    pub fn stop(&self) {
        if let Some((stop, accepting)) = self.stop.lock().unwrap().take() {
            let _ = stop.send(true);
            // The listener is closed when the accept loop has returned.
            let _ = self.runtime.block_on(accepting);
        }
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        self.stop();
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let app = Router::new()
            .route("/api/apikey/login", post(login))
            .route("/version", get(version))
            .route("/v1/project", post(project))
            .route("/logs3", post(logs3))
            .route("/attachment", post(attachment))
            .route("/attachment/status", post(attachment_status))
            .route("/put", put(upload))
            .with_state(self.shared.clone());
        let accepting = self.runtime.spawn(async move {
            loop {
                let mut stopped = stop_rx.clone();
                let accepted = tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                // A dropped connection is then reset, not closed gracefully.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                let reset = ResetHandle(Arc::default());
                let service = hyper_util::service::TowerToHyperService::new(
                    app.clone().layer(Extension(reset.clone())),
                );
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = reset.0.notified() => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        *self.stop.lock().unwrap() = Some((stop_tx, accepting));
    }

    pub fn url(&self) -> String {
        self.shared.url.clone()
    }
    pub fn login(&self, mode: Mode) {
        self.shared.lock().login = Some(mode);
    }
    pub fn logs3(&self, mode: Mode) {
        self.shared.lock().logs3 = Some(mode);
    }
    pub fn login_calls(&self) -> usize {
        self.shared.lock().login_calls
    }
    pub fn logs3_calls(&self) -> usize {
        self.shared.lock().logs3_calls
    }
    /// Sets the mode of another endpoint: `version`, `project`,
    /// `attachment` (signed upload URL), `put` (the upload) or `status`.
    pub fn route(&self, name: &'static str, mode: Mode) {
        self.shared.lock().routes.insert(name, mode);
    }
    /// Requests another endpoint received (see [`Faulty::route`]).
    pub fn calls(&self, name: &'static str) -> usize {
        self.shared
            .lock()
            .route_calls
            .get(name)
            .copied()
            .unwrap_or(0)
    }
    pub fn largest_body(&self) -> usize {
        self.shared.lock().largest_body
    }
    /// Distinct row ids accepted.
    pub fn delivered(&self) -> usize {
        self.shared.lock().ids.len()
    }
    /// Every row accepted, a row sent twice counted twice.
    pub fn rows_received(&self) -> usize {
        self.shared.lock().rows
    }
}

/// A URL where nothing listens: connections are refused.
pub fn refusing_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// What the mode says for this request, or `None` to answer normally.
async fn misbehave(
    mode: &mut Option<Mode>,
    body_len: usize,
    reset: &ResetHandle,
    headers: &HeaderMap,
) -> Option<Response> {
    let m = mode.clone()?;
    match m {
        Mode::Ok | Mode::ResetAfterStoring(_) => None,
        Mode::Reset => {
            reset.0.notify_one();
            Some(std::future::pending::<Response>().await)
        }
        Mode::Hang => Some(std::future::pending::<Response>().await),
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Mode::Status(code, retry_after) => {
            let mut headers = HeaderMap::new();
            if let Some(r) = retry_after {
                headers.insert("retry-after", HeaderValue::from_str(&r).unwrap());
            }
            Some((StatusCode::from_u16(code).unwrap(), headers, "injected").into_response())
        }
        Mode::StatusTimes(code, n) => {
            *mode = if n > 1 {
                Some(Mode::StatusTimes(code, n - 1))
            } else {
                None
            };
            Some((StatusCode::from_u16(code).unwrap(), "injected").into_response())
        }
        Mode::TooLargeOver(limit) => {
            (body_len > limit).then(|| (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response())
        }
        Mode::EchoAuth(code) => {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            Some(
                (
                    StatusCode::from_u16(code).unwrap(),
                    format!("rejected request with authorization: {auth}"),
                )
                    .into_response(),
            )
        }
    }
}

async fn login(
    State(s): State<Shared>,
    Extension(reset): Extension<ResetHandle>,
    headers: HeaderMap,
) -> Response {
    let mut mode = {
        let mut g = s.lock();
        g.login_calls += 1;
        g.login.clone()
    };
    if let Some(r) = misbehave(&mut mode, 0, &reset, &headers).await {
        s.lock().login = mode;
        return r;
    }
    s.lock().login = mode;
    Json(json!({"org_info": [{"id": "org", "name": "org", "api_url": s.url}]})).into_response()
}

type Parts = (State<Shared>, Extension<ResetHandle>, HeaderMap);

async fn version(s: State<Shared>, r: Extension<ResetHandle>, h: HeaderMap) -> Response {
    other("version", (s, r, h), Bytes::new()).await
}
async fn project(s: State<Shared>, r: Extension<ResetHandle>, h: HeaderMap, b: Bytes) -> Response {
    other("project", (s, r, h), b).await
}
async fn attachment(
    s: State<Shared>,
    r: Extension<ResetHandle>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    other("attachment", (s, r, h), b).await
}
async fn attachment_status(
    s: State<Shared>,
    r: Extension<ResetHandle>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    other("status", (s, r, h), b).await
}
async fn upload(s: State<Shared>, r: Extension<ResetHandle>, h: HeaderMap, b: Bytes) -> Response {
    other("put", (s, r, h), b).await
}

/// The endpoints besides login and `/logs3`: the mode set for `route`,
/// else a normal answer.
async fn other(
    route: &'static str,
    (State(s), Extension(reset), headers): Parts,
    body: Bytes,
) -> Response {
    let mut mode = {
        let mut g = s.lock();
        *g.route_calls.entry(route).or_default() += 1;
        g.routes.get(route).cloned()
    };
    let bad = misbehave(&mut mode, body.len(), &reset, &headers).await;
    match mode {
        Some(m) => s.lock().routes.insert(route, m),
        None => s.lock().routes.remove(route),
    };
    if let Some(r) = bad {
        return r;
    }
    match route {
        "project" => {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            Json(json!({"id": "p-1", "name": v["name"]})).into_response()
        }
        "attachment" => {
            Json(json!({"signedUrl": format!("{}/put", s.url), "headers": {}})).into_response()
        }
        "put" => StatusCode::OK.into_response(),
        _ => Json(json!({})).into_response(),
    }
}

async fn logs3(
    State(s): State<Shared>,
    Extension(reset): Extension<ResetHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut mode = {
        let mut g = s.lock();
        g.logs3_calls += 1;
        g.largest_body = g.largest_body.max(body.len());
        g.logs3.clone()
    };
    let bad = misbehave(&mut mode, body.len(), &reset, &headers).await;
    s.lock().logs3 = mode;
    if let Some(r) = bad {
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let lose_the_answer = {
        let mut g = s.lock();
        for row in v["rows"].as_array().into_iter().flatten() {
            g.rows += 1;
            if let Some(id) = row["id"].as_str() {
                g.ids.insert(id.to_string());
            }
        }
        match g.logs3 {
            Some(Mode::ResetAfterStoring(n)) => {
                g.logs3 = (n > 1).then_some(Mode::ResetAfterStoring(n - 1));
                true
            }
            _ => false,
        }
    };
    if lose_the_answer {
        reset.0.notify_one();
        return std::future::pending::<Response>().await;
    }
    Json(json!({})).into_response()
}

/// A config for a fault backend at `url`: short retry delays (the tests
/// exercise retries) and no exit flush.
pub fn config(url: &str) -> braintrust::Config {
    braintrust::Config::default()
        .api_key("test-key")
        .app_url(url)
        .retry_base_delay(Duration::from_millis(10))
        .retry_max_delay(Duration::from_millis(50))
        .lifecycle(braintrust::LifecyclePolicy::Manual)
}

/// A state for `cfg` and a logger of the project `faults` on it.
pub fn logger(cfg: braintrust::Config) -> (braintrust::State, braintrust::Logger) {
    let state = braintrust::State::new(cfg).unwrap();
    let logger = braintrust::init_logger(
        braintrust::LoggerOptions::new()
            .project("faults")
            .state(state.clone()),
    )
    .unwrap();
    (state, logger)
}

/// Every logged row ends in exactly one outcome, or is still pending.
pub fn assert_accounted(s: braintrust::Stats) {
    assert_eq!(
        s.logged,
        s.dropped_queue_full + s.delivered_rows + s.failed_rows + s.undelivered_rows + s.pending,
        "{s:?}"
    );
}
