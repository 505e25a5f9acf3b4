//! A small Braintrust backend on loopback whose login and `/logs3` can be
//! told to misbehave: hang, answer an error status (a number of times, or
//! always), ask for `Retry-After`, or refuse bodies over a size. It counts
//! requests and the distinct row ids it accepted, so tests check what a
//! user would: which rows arrived.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
}

#[derive(Default)]
struct Inner {
    login: Option<Mode>,
    logs3: Option<Mode>,
    login_calls: usize,
    logs3_calls: usize,
    largest_body: usize,
    ids: HashSet<String>,
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
    _runtime: tokio::runtime::Runtime,
}

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
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            inner: Arc::default(),
            url,
        };
        let app = Router::new()
            .route("/api/apikey/login", post(login))
            .route("/version", get(|| async { Json(json!({})) }))
            .route("/v1/project", post(project))
            .route("/logs3", post(logs3))
            .with_state(shared.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Faulty {
            shared,
            _runtime: runtime,
        }
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
    pub fn largest_body(&self) -> usize {
        self.shared.lock().largest_body
    }
    /// Distinct row ids accepted.
    pub fn delivered(&self) -> usize {
        self.shared.lock().ids.len()
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
async fn misbehave(mode: &mut Option<Mode>, body_len: usize) -> Option<Response> {
    let m = mode.clone()?;
    match m {
        Mode::Ok => None,
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
    }
}

async fn login(State(s): State<Shared>) -> Response {
    let mut mode = {
        let mut g = s.lock();
        g.login_calls += 1;
        g.login.clone()
    };
    if let Some(r) = misbehave(&mut mode, 0).await {
        s.lock().login = mode;
        return r;
    }
    s.lock().login = mode;
    Json(json!({"org_info": [{"id": "org", "name": "org", "api_url": s.url}]})).into_response()
}

async fn project(body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    Json(json!({"id": "p-1", "name": v["name"]})).into_response()
}

async fn logs3(State(s): State<Shared>, body: Bytes) -> Response {
    let mut mode = {
        let mut g = s.lock();
        g.logs3_calls += 1;
        g.largest_body = g.largest_body.max(body.len());
        g.logs3.clone()
    };
    let bad = misbehave(&mut mode, body.len()).await;
    s.lock().logs3 = mode;
    if let Some(r) = bad {
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut g = s.lock();
    for row in v["rows"].as_array().into_iter().flatten() {
        if let Some(id) = row["id"].as_str() {
            g.ids.insert(id.to_string());
        }
    }
    Json(json!({})).into_response()
}
