//! The server under abuse, over real HTTP on 127.0.0.1: authentication on every route,
//! oversized and unauthenticated bodies (memory of a spawned server process measured through
//! /proc), rows of any depth, rows that break a rule, and the command line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use braintrust_devserver::{DevServer, DevServerConfig, RecordLimits};
use serde_json::{json, Value};

const KEY: &str = "the-key";
const BIN: &str = env!("CARGO_BIN_EXE_braintrust-devserver");

/// A server binary started by the test, killed on drop.
struct Spawned {
    child: Child,
    addr: String,
    stderr: Option<std::process::ChildStderr>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Spawned {
    let mut child = Command::new(BIN)
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server binary starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("braintrust-devserver listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let stderr = child.stderr.take();
    Spawned {
        child,
        addr,
        stderr,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc")
}

/// Sends `POST path` declaring `declared` body bytes (or chunked when `None`), writing up to
/// `send` bytes while the server keeps reading, and returns the status line it answered.
fn post_big(
    addr: &str,
    path: &str,
    auth: Option<&str>,
    declared: Option<u64>,
    send: u64,
) -> String {
    let mut s = TcpStream::connect(addr.replace("0.0.0.0", "127.0.0.1")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(k) = auth {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    match declared {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0u64;
    while sent < send {
        let r = match declared {
            Some(_) => s.write_all(&chunk),
            None => s
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|_| s.write_all(&chunk))
                .and_then(|_| s.write_all(b"\r\n")),
        };
        if r.is_err() {
            break; // the server stopped reading: what this test wants
        }
        sent += chunk.len() as u64;
    }
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().unwrap_or("").to_string()
}

#[test]
fn refused_bodies_cost_no_memory() {
    let server = spawn(&["--api-key", KEY, "--max-body-bytes", "1048576"]);
    let pid = server.child.id();
    // Warm up: one accepted request, so allocator pools exist before measuring.
    assert_eq!(
        post_big(&server.addr, "/version", Some(KEY), Some(0), 0),
        "HTTP/1.1 405 Method Not Allowed"
    );
    let before = rss_kib(pid);
    for _ in 0..3 {
        let status = post_big(&server.addr, "/logs3", None, Some(200 << 20), 200 << 20);
        eprintln!("unauthenticated 200 MB: {status:?}");
        assert!(
            status.is_empty() || status.starts_with("HTTP/1.1 401"),
            "{status}"
        );
    }
    // Authenticated but declared over the limit: refused from the header.
    let status = post_big(
        &server.addr,
        "/logs3",
        Some(KEY),
        Some(200 << 20),
        200 << 20,
    );
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 413"),
        "{status}"
    );
    // Chunked with no length: refused once the limit is passed.
    let status = post_big(&server.addr, "/logs3", Some(KEY), None, 50 << 20);
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 413"),
        "{status}"
    );
    let after = rss_kib(pid);
    eprintln!("server RSS before {before} KiB, after {after} KiB");
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Ordinary ingest into a database file: 16,000 spans with 2 KB inputs
/// (about 35 MB of request bodies) leave the server's RSS nearly flat,
/// since no body is kept once its rows are stored.
#[tokio::test]
async fn ingest_keeps_no_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let server = spawn(&["--db", db.to_str().unwrap()]);
    let pid = server.child.id();
    let url = format!("http://{}/logs3", server.addr);
    let http = reqwest::Client::new();
    let pad = "x".repeat(2048);
    let mut sent = 0usize;
    let mut post = |batch: usize| {
        let rows: Vec<Value> = (0..1000)
            .map(|i| {
                let id = format!("b{batch}-{i}");
                json!({"id": id, "span_id": id, "root_span_id": id, "project_id": "p",
                       "log_id": "g", "input": {"text": pad}, "output": i,
                       "span_attributes": {"name": "ingest"}, "metrics": {"start": 1.0, "end": 2.0}})
            })
            .collect();
        let body = json!({"rows": rows}).to_string();
        sent += body.len();
        http.post(&url).bearer_auth(KEY).body(body).send()
    };
    // Warm up: the allocator's pools and SQLite's page cache exist before measuring.
    for b in 0..2 {
        assert!(post(b).await.unwrap().status().is_success());
    }
    let before = rss_kib(pid);
    for b in 2..16 {
        assert!(post(b).await.unwrap().status().is_success());
    }
    let after = rss_kib(pid);
    eprintln!("server RSS before {before} KiB, after {after} KiB, {sent} body bytes sent");
    assert!(sent > 30 << 20);
    assert!(
        after < before + 12 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn non_loopback_bind_warns_with_the_real_address() {
    let mut server = spawn(&["--host", "0.0.0.0"]);
    assert!(server.addr.starts_with("0.0.0.0:"), "{}", server.addr);
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("warning: bound to 0.0.0.0:"), "{line}");
    assert!(line.contains("without --api-key"), "{line}");
}

#[test]
fn empty_api_key_is_a_clear_error() {
    let out = Command::new(BIN).args(["--api-key", ""]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--api-key") && err.contains("must not be empty"),
        "{err}"
    );
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-body-bytes"));
    let bad = Command::new(BIN).args(["--port", "x"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'x' for '--port"));
}

#[tokio::test]
async fn binary_records_no_requests_by_default() {
    let server = spawn(&[]);
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let resp = http
            .post(format!("{base}/api/apikey/login"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let recorded: Value = http
        .get(format!("{base}/dev/api/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded, json!([]));
}

async fn start(config: DevServerConfig) -> DevServer {
    DevServer::start(config).await.expect("server starts")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_route_needs_the_key_when_one_is_set() {
    let server = start(DevServerConfig::for_tests().api_keys(vec![KEY.into()])).await;
    let http = no_redirects();
    let url = |p: &str| format!("{}{p}", server.url());
    let routes: &[(&str, &str)] = &[
        ("GET", "/"),
        ("GET", "/trace/t1"),
        (
            "GET",
            "/app/dev-org/object?object_type=project_logs&object_id=p&id=r",
        ),
        ("GET", "/app/dev-org/p/proj/logs?oid=r"),
        ("GET", "/dev/api/projects"),
        ("GET", "/dev/api/experiments"),
        ("GET", "/dev/api/rows"),
        ("GET", "/dev/api/traces"),
        ("GET", "/dev/api/traces/t1"),
        ("GET", "/dev/api/trace/t1"),
        ("GET", "/dev/api/locate?id=r"),
        ("GET", "/dev/api/requests"),
        ("PUT", "/dev/upload/k"),
        ("GET", "/dev/upload/k"),
        ("POST", "/api/apikey/login"),
        ("POST", "/logs3"),
        ("GET", "/version"),
        ("POST", "/v1/project"),
        ("GET", "/nonexistent"),
    ];
    for &(method, path) in routes {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for auth in [None, Some("wrong")] {
            let mut req = http.request(m.clone(), url(path)).body("{}");
            if let Some(k) = auth {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let page = method == "GET"
                && !path.starts_with("/dev/")
                && path != "/version"
                && path != "/nonexistent";
            if page {
                assert_eq!(status, 303, "{method} {path} {auth:?}");
                let to = resp.headers()["location"].to_str().unwrap();
                assert!(to.starts_with("/dev/login?next="), "{to}");
            } else {
                assert_eq!(status, 401, "{method} {path} {auth:?}");
            }
        }
        let resp = http
            .request(m, url(path))
            .bearer_auth(KEY)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            ![401, 303].contains(&resp.status().as_u16()),
            "{method} {path} with the key: {}",
            resp.status()
        );
    }
    // Nothing was stored by the refused upload.
    let resp = http
        .get(url("/dev/upload/k"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        "{}",
        "only the keyed PUT stored a body"
    );

    // The viewer's login form sets a cookie that opens the pages and /dev/api.
    let resp = http
        .post(url("/dev/login"))
        .body(format!("key={KEY}&next=%2Ftrace%2Ft1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/trace/t1");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = cookie.split(';').next().unwrap().to_string();
    for path in ["/", "/dev/api/traces"] {
        let resp = http
            .get(url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    // The sign-in form is the one route that reads a body without a key: it takes 4 KiB.
    let resp = http
        .post(url("/dev/login"))
        .body(vec![b'k'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let resp = http
        .post(url("/dev/login"))
        .body("key=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    // The cookie is not accepted on the SDK routes, which always take a bearer key.
    let resp = http
        .post(url("/logs3"))
        .header("cookie", &cookie)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn body_limit_and_bounded_request_log() {
    let server = start(
        DevServerConfig::for_tests()
            .max_body_bytes(1000)
            .record_requests(RecordLimits {
                max_requests: 3,
                max_body_bytes: 1 << 20,
            }),
    )
    .await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/logs3", server.url()))
        .bearer_auth(KEY)
        .body(vec![b' '; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("limit of 1000 bytes"));
    for i in 0..5 {
        http.post(format!("{}/v1/project", server.url()))
            .bearer_auth(KEY)
            .json(&json!({"name": format!("p{i}")}))
            .send()
            .await
            .unwrap();
    }
    let recorded = server.requests();
    assert_eq!(recorded.len(), 3);
    let names: Vec<Value> = recorded
        .iter()
        .map(|r| r.json().unwrap()["name"].clone())
        .collect();
    assert_eq!(names, [json!("p2"), json!("p3"), json!("p4")]);
    assert!(recorded.iter().all(|r| r.status == 200));
}

fn nested(depth: usize) -> String {
    format!(
        "{}\"bottom\"{}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

async fn post_rows(server: &DevServer, rows: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/logs3", server.url()))
        .bearer_auth(KEY)
        .body(format!("{{\"rows\": [{rows}], \"api_version\": 2}}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn stored_text(server: &DevServer) -> String {
    reqwest::Client::new()
        .get(format!("{}/dev/api/rows", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn deep_rows_are_stored_intact() {
    let server = start(DevServerConfig::for_tests()).await;
    let deep = nested(5000);
    let ids = r#""project_id":"p","log_id":"g","span_id":"s","root_span_id":"t""#;
    let (status, body) = post_rows(
        &server,
        &format!(r#"{{"id":"deep",{ids},"input":{deep},"_is_merge":false}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A merge row as deep as the first write merges into it.
    let (status, body) = post_rows(
        &server,
        &format!(r#"{{"id":"deep",{ids},"_is_merge":true,"metadata":{{"tree":{deep}}}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = stored_text(&server).await;
    assert_eq!(
        text.matches(&deep).count(),
        2,
        "input and metadata kept whole"
    );
    let tree = reqwest::Client::new()
        .get(format!("{}/dev/api/traces/t", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        tree.matches(&deep).count(),
        4,
        "in the span list and in the tree"
    );

    // Objects nested to the limit in both the stored row and the merge row: the deep merge
    // walks all the way down.
    let objects = |depth: usize, leaf: &str| {
        format!("{}{leaf}{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    };
    let (status, body) = post_rows(
        &server,
        &format!(
            r#"{{"id":"obj",{ids},"metadata":{}}}"#,
            objects(9_990, "{\"c\":1}")
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_rows(
        &server,
        &format!(
            r#"{{"id":"obj",{ids},"_is_merge":true,"metadata":{}}}"#,
            objects(9_990, "{\"b\":2}")
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = stored_text(&server).await;
    assert!(
        text.contains(&objects(9_990, "{\"c\":1,\"b\":2}")),
        "merged at the bottom of the tree"
    );

    let too_deep = nested(10_001);
    let (status, body) = post_rows(
        &server,
        &format!(
            r#"{{"id":"ok","project_id":"p","log_id":"g"}},{{"id":"x",{ids},"input":{too_deep}}}"#
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "row 1: nested 10001 levels deep; at most 10000 are accepted"
    );
    assert!(server.row("ok").is_none(), "a refused batch stores nothing");
}

#[tokio::test]
async fn bad_rows_are_refused_with_their_index_and_rule() {
    let server = start(DevServerConfig::for_tests()).await;
    let good = r#"{"id":"good","project_id":"p","log_id":"g"}"#;
    let cases = [
        (
            r#"{"project_id":"p","log_id":"g"}"#,
            "row 1: 'id' is required",
        ),
        (
            r#"{"id":7,"project_id":"p","log_id":"g"}"#,
            "row 1: 'id' must be a non-empty string (got number)",
        ),
        (
            r#"{"id":"a","input":1}"#,
            "row 1: exactly one of experiment_id, dataset_id, prompt_session_id or project_id \
             (with log_id) must be set (got none)",
        ),
        (
            r#"{"id":"a","experiment_id":"e","dataset_id":"d"}"#,
            "row 1: exactly one of experiment_id, dataset_id, prompt_session_id or project_id \
             (with log_id) must be set (got experiment_id, dataset_id)",
        ),
        (
            r#"{"id":"a","experiment_id":"e","span_parents":"x"}"#,
            "row 1: 'span_parents' must be null or an array of span id strings",
        ),
        (
            r#"{"id":"a","experiment_id":"e","metadata":[1]}"#,
            "row 1: 'metadata' must be an object (got array)",
        ),
        (
            r#"{"id":"a","experiment_id":"e","_is_merge":"yes"}"#,
            "row 1: '_is_merge' must be a boolean (got string)",
        ),
        (
            r#"{"id":"a","experiment_id":"e","tags":["x",1]}"#,
            "row 1: 'tags' must be null or an array of strings",
        ),
        ("3", "row 1: must be a JSON object (got number)"),
    ];
    for (bad, rule) in cases {
        let (status, body) = post_rows(&server, &format!("{good},{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"], rule, "{bad}");
    }
    assert!(
        server.rows().is_empty(),
        "no batch with a bad row stored anything"
    );
    let (status, body) = post_rows(&server, good).await;
    assert_eq!(status, 200);
    assert_eq!(body["row_ids"], json!(["good"]));
}
