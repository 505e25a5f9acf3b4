//! A fast loopback sink: the few endpoints the SDK calls, and a `/logs3` that
//! counts distinct row ids without storing rows.
//!
//! Endpoints:
//!
//! - `POST /api/apikey/login`: one organization whose `api_url` is the sink.
//! - `POST /v1/project`: a fixed project id.
//! - `GET /version`: a version object (no `logs3_payload_max_bytes`, so the
//!   SDK uses its default request size and no overflow).
//! - `POST /logs3`: parses only the `id` of each row (everything else is
//!   skipped by the parser) and adds it to a set.
//! - `GET /bench/stats`: the counters as JSON (see [`SinkStats`]).
//!
//! Accepted sockets get `TCP_NODELAY`. The server runs on its own thread with
//! a two-worker tokio runtime; it ingests several hundred thousand rows per
//! second on one core (see `braintrust-bench --sink-check`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// The project id the sink hands out.
pub const PROJECT_ID: &str = "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e";

/// What the sink has seen so far.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkStats {
    /// Distinct row ids received on `/logs3`.
    pub distinct_ids: u64,
    /// Rows received on `/logs3`, duplicates included.
    pub rows: u64,
    /// `/logs3` requests.
    pub logs3_requests: u64,
    /// `/logs3` request body bytes.
    pub logs3_bytes: u64,
    /// `/logs3` bodies that did not parse (answered 400).
    pub bad_bodies: u64,
}

/// Distinct row ids. The SDK's row ids are UUIDs, kept here as 128-bit
/// numbers: a request only appends them to a list, and they are deduplicated
/// (into a set under a fast hash) when the counters are read, between
/// measurements. A set of a million boxed strings probed on every row cost
/// the sink a quarter of its CPU in cache misses, and growing a set of
/// millions stalled `/logs3` for tens of milliseconds: CPU and stalls the
/// SDK under test, on the same cores, paid for.
#[derive(Default)]
struct IdSet {
    seen: foldhash::HashSet<u128>,
    fresh: Vec<u128>,
    other: HashSet<Box<str>>,
}

impl IdSet {
    fn insert(&mut self, id: &str) {
        // Only the canonical lowercase form maps to a number, so two ids that
        // differ as strings stay two ids.
        let canonical = id.len() == 36 && !id.bytes().any(|b| b.is_ascii_uppercase());
        match uuid::Uuid::try_parse(id) {
            Ok(u) if canonical => self.fresh.push(u.as_u128()),
            _ => {
                if !self.other.contains(id) {
                    self.other.insert(Box::from(id));
                }
            }
        }
    }

    /// Deduplicates what arrived since the last call and counts.
    fn distinct(&mut self) -> usize {
        self.seen.extend(self.fresh.drain(..));
        self.fresh.shrink_to(1 << 20);
        self.seen.len() + self.other.len()
    }
}

#[derive(Default)]
struct Shared {
    ids: Mutex<IdSet>,
    rows: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    bad: AtomicU64,
}

impl Shared {
    fn stats(&self) -> SinkStats {
        SinkStats {
            distinct_ids: self
                .ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .distinct() as u64,
            rows: self.rows.load(Ordering::Relaxed),
            logs3_requests: self.requests.load(Ordering::Relaxed),
            logs3_bytes: self.bytes.load(Ordering::Relaxed),
            bad_bodies: self.bad.load(Ordering::Relaxed),
        }
    }
}

/// A running sink. It stops when the process exits.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// The part of a `/logs3` body the sink reads.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    rows: Vec<RowId<'a>>,
}

#[derive(Deserialize)]
struct RowId<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

impl Sink {
    /// Binds 127.0.0.1 on a free port and serves on a background thread.
    pub fn start() -> std::io::Result<Sink> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-sink")
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("bench-sink-main".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("bench sink: {e}");
                            return;
                        }
                    };
                    loop {
                        let (stream, _) = match listener.accept().await {
                            Ok(s) => s,
                            Err(_) => continue,
                        };
                        let _ = stream.set_nodelay(true);
                        let sh = sh.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| handle(sh.clone(), addr, req));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                })
            })?;
        Ok(Sink { addr, shared })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters now.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats()
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

async fn handle(
    sh: Arc<Shared>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(json(StatusCode::BAD_REQUEST, "{}".into())),
    };
    let url = format!("http://{addr}");
    let resp = match (method, path.as_str()) {
        (Method::POST, "/logs3") => {
            sh.requests.fetch_add(1, Ordering::Relaxed);
            sh.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            match serde_json::from_slice::<Body>(&body) {
                Ok(b) => {
                    sh.rows.fetch_add(b.rows.len() as u64, Ordering::Relaxed);
                    let mut ids = sh.ids.lock().unwrap_or_else(|e| e.into_inner());
                    for r in b.rows {
                        ids.insert(&r.id);
                    }
                    drop(ids);
                    json(StatusCode::OK, "{}".into())
                }
                Err(e) => {
                    sh.bad.fetch_add(1, Ordering::Relaxed);
                    json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": e.to_string()}).to_string(),
                    )
                }
            }
        }
        (Method::POST, "/api/apikey/login") => json(
            StatusCode::OK,
            serde_json::json!({"org_info": [{
                "id": "00000000-0000-4000-8000-00000000b0b0",
                "name": "bench-org",
                "api_url": url,
                "proxy_url": url,
            }]})
            .to_string(),
        ),
        (Method::POST, "/v1/project") => {
            let name = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .unwrap_or_else(|| "Global".into());
            json(
                StatusCode::OK,
                serde_json::json!({"id": PROJECT_ID, "name": name}).to_string(),
            )
        }
        (Method::GET, "/version") => json(
            StatusCode::OK,
            serde_json::json!({"version": "braintrust-bench-sink"}).to_string(),
        ),
        (Method::GET, "/bench/stats") => json(
            StatusCode::OK,
            serde_json::to_string(&sh.stats()).unwrap_or_default(),
        ),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"no route"}"#.into()),
    };
    Ok(resp)
}

/// Reads a sink's counters over HTTP from another process (a blocking,
/// dependency-free `GET /bench/stats`).
pub fn fetch_stats(sink_url: &str) -> std::io::Result<SinkStats> {
    use std::io::{Read, Write};
    let hostport = sink_url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET /bench/stats HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
    serde_json::from_str(body.trim()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_ids() {
        let sink = Sink::start().unwrap();
        let post = |body: &str| {
            use std::io::{Read, Write};
            let hostport = sink.url().trim_start_matches("http://").to_string();
            let mut s = std::net::TcpStream::connect(&hostport).unwrap();
            write!(
                s,
                "POST /logs3 HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let r = post(
            r#"{"rows": [{"id": "a", "x": {"y": [1, 2]}}, {"id": "b"}, {"id": "a"}], "api_version": 2}"#,
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // UUIDs: the same one twice, and one that differs only in case (a
        // different id to the backend).
        let r = post(
            r#"{"rows": [{"id": "0b1e7c3a-2f4d-4e5f-8a9b-0c1d2e3f4a5b"}, {"id": "0b1e7c3a-2f4d-4e5f-8a9b-0c1d2e3f4a5b"}, {"id": "0B1E7C3A-2F4D-4E5F-8A9B-0C1D2E3F4A5B"}]}"#,
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = post("not json");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        let st = fetch_stats(&sink.url()).unwrap();
        assert_eq!(st.distinct_ids, 4);
        assert_eq!(st.rows, 6);
        assert_eq!(st.logs3_requests, 3);
        assert_eq!(st.bad_bodies, 1);
    }
}
