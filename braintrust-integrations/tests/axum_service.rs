//! An axum service with the tower layer, tower-http's `TraceLayer`,
//! `#[instrument]` and `#[traced]` functions, a spawned traced call and a
//! GenAI-convention fake LLM call, driven over loopback HTTP with valid and
//! invalid requests: the local server holds one tree per request with every
//! span nested, errors recorded, and the `llm` span's messages and tokens.
//!
//! One test: it installs the process-wide `tracing` subscriber.
#![cfg(all(feature = "tracing", feature = "tower"))]

use std::collections::HashMap;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use braintrust::{init_logger, traced, Config, LoggerOptions, SpanArgs, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use braintrust_integrations::tower::{SpanLayer, TraceContextExt};
use braintrust_integrations::tracing_layer::BraintrustLayer;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::instrument;
use tracing_subscriber::prelude::*;

#[derive(Deserialize)]
struct ChatRequest {
    question: String,
}

#[traced]
async fn get_user(Path(id): Path<u32>) -> Result<Json<Value>, (StatusCode, String)> {
    match id {
        404 => Err((StatusCode::NOT_FOUND, "no such user".into())),
        500 => Err((StatusCode::INTERNAL_SERVER_ERROR, "database down".into())),
        _ => Ok(Json(json!({"id": id, "name": lookup(id).await}))),
    }
}

#[instrument]
async fn lookup(id: u32) -> String {
    tokio::task::yield_now().await;
    format!("user-{id}")
}

#[traced(name = "chat")]
async fn chat(Json(req): Json<ChatRequest>) -> Json<Value> {
    let docs = retrieve(&req.question).await;
    // Spawned directly: still in the request's trace.
    let audit = tokio::spawn(audit(req.question.clone()));
    let answer = fake_llm(&req.question, &docs).await;
    audit.await.unwrap();
    Json(json!({"answer": answer}))
}

#[instrument(skip_all, fields(input = %q))]
async fn retrieve(q: &str) -> Vec<String> {
    tokio::task::yield_now().await;
    vec![format!("doc about {q}")]
}

#[traced]
async fn audit(question: String) -> usize {
    tokio::task::yield_now().await;
    question.len()
}

#[instrument(
    name = "chat fake-model",
    skip_all,
    fields(
        gen_ai.system = "fake",
        gen_ai.request.model = "fake-model",
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    )
)]
async fn fake_llm(question: &str, docs: &[String]) -> String {
    tracing::info!(name: "gen_ai.user.message", content = question);
    tokio::task::yield_now().await;
    let answer = format!("{} ({} docs)", question.to_uppercase(), docs.len());
    tracing::info!(name: "gen_ai.choice", index = 0, finish_reason = "stop", content = answer.as_str());
    let span = tracing::Span::current();
    span.record("gen_ai.usage.input_tokens", question.len() as u64);
    span.record("gen_ai.usage.output_tokens", 4u64);
    answer
}

#[test]
fn one_tree_per_request_with_every_span_nested() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project("axum").state(state)).unwrap();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(BraintrustLayer::new()),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = Router::new()
        .route("/users/{id}", get(get_user))
        .route("/chat", post(chat))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(SpanLayer::with_logger(logger.clone()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = reqwest::Client::new();
    let rounds = 5;
    let mut expected_status = Vec::new();
    rt.block_on(async {
        for i in 0..rounds {
            let cases: [(reqwest::RequestBuilder, u16); 6] = [
                (client.get(format!("{base}/users/{i}")), 200),
                (client.get(format!("{base}/users/404")), 404),
                (client.get(format!("{base}/users/500")), 500),
                (
                    client
                        .post(format!("{base}/chat"))
                        .json(&json!({"question": "why"})),
                    200,
                ),
                (
                    client
                        .post(format!("{base}/chat"))
                        .header("content-type", "application/json")
                        .body("{not json"),
                    400,
                ),
                (
                    client
                        .post(format!("{base}/chat"))
                        .json(&json!({"q": "missing field"})),
                    422,
                ),
            ];
            for (req, status) in cases {
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status().as_u16(), status);
                resp.bytes().await.unwrap();
                expected_status.push(status);
            }
        }
    });
    // A caller's span continues into the service through traceparent.
    let caller = logger.start_span(SpanArgs::new().name("caller"));
    let req = caller.in_scope(|| client.get(format!("{base}/users/9")).with_trace_context());
    rt.block_on(async { req.send().await.unwrap().bytes().await.unwrap() });
    caller.end();
    // And through an exported slug in `x-bt-parent`.
    let slug_caller = logger.start_span(SpanArgs::new().name("slug-caller"));
    let slug = slug_caller.export();
    rt.block_on(async {
        let req = client
            .get(format!("{base}/users/8"))
            .header(braintrust_integrations::tower::SLUG_HEADER, slug);
        req.send().await.unwrap().bytes().await.unwrap()
    });
    slug_caller.end();
    logger.flush().unwrap();
    let rows = server.rows();

    let by_id: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["span_id"].as_str().unwrap(), r))
        .collect();
    let name = |r: &Value| r["span_attributes"]["name"].as_str().unwrap().to_string();
    let parent_name = |r: &Value| -> Option<String> {
        let p = r["span_parents"].as_array()?;
        assert_eq!(p.len(), 1);
        let parent = by_id[p[0].as_str().unwrap()];
        assert_eq!(parent["root_span_id"], r["root_span_id"], "{}", name(r));
        Some(name(parent))
    };
    // Every non-root span hangs under a stored span of its own trace.
    let mut trees: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in &rows {
        parent_name(r);
        trees
            .entry(r["root_span_id"].as_str().unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(
        trees.len(),
        expected_status.len() + 2,
        "one tree per request"
    );
    let mut statuses = Vec::new();
    for tree in trees.values() {
        let roots: Vec<_> = tree
            .iter()
            .filter(|r| r["span_parents"].is_null())
            .collect();
        assert_eq!(roots.len(), 1);
        let root = roots[0];
        let caller_path = match name(root).as_str() {
            "caller" => Some("/users/9"),
            "slug-caller" => Some("/users/8"),
            _ => None,
        };
        if let Some(path) = caller_path {
            let request = tree.iter().find(|r| name(r) == "GET /users/{id}").unwrap();
            assert_eq!(parent_name(request), Some(name(root)));
            assert_eq!(request["metadata"]["path"], path);
            // caller, request span, TraceLayer span, handler, lookup
            assert_eq!(tree.len(), 5);
            continue;
        }
        let status = root["metadata"]["status_code"].as_u64().unwrap() as u16;
        statuses.push(status);
        assert!(root["metrics"]["latency"].as_f64().unwrap() >= 0.0);
        let mut shape: Vec<(String, Option<String>)> =
            tree.iter().map(|r| (name(r), parent_name(r))).collect();
        shape.sort();
        let s = |a: &str, b: Option<&str>| (a.to_string(), b.map(str::to_string));
        match (root["metadata"]["route"].as_str().unwrap(), status) {
            ("/users/{id}", 200) => {
                assert_eq!(name(root), "GET /users/{id}");
                assert!(root["error"].is_null());
                assert_eq!(
                    shape,
                    [
                        s("GET /users/{id}", None),
                        s("get_user", Some("request")),
                        s("lookup", Some("get_user")),
                        s("request", Some("GET /users/{id}")),
                    ]
                );
            }
            ("/users/{id}", code) => {
                assert_eq!(
                    shape,
                    [
                        s("GET /users/{id}", None),
                        s("get_user", Some("request")),
                        s("request", Some("GET /users/{id}")),
                    ]
                );
                let body = if code == 404 {
                    "no such user"
                } else {
                    "database down"
                };
                let reason = if code == 404 {
                    "Not Found"
                } else {
                    "Internal Server Error"
                };
                assert_eq!(root["error"], format!("HTTP {code} {reason}: {body}"));
                let handler = tree.iter().find(|r| name(r) == "get_user").unwrap();
                assert!(handler["error"].as_str().unwrap().contains(body));
            }
            ("/chat", 200) => {
                assert_eq!(name(root), "POST /chat");
                assert_eq!(
                    shape,
                    [
                        s("POST /chat", None),
                        s("audit", Some("chat")),
                        s("chat", Some("request")),
                        s("chat fake-model", Some("chat")),
                        s("request", Some("POST /chat")),
                        s("retrieve", Some("chat")),
                    ]
                );
                let llm = tree.iter().find(|r| name(r) == "chat fake-model").unwrap();
                assert_eq!(llm["span_attributes"]["type"], "llm");
                assert_eq!(llm["input"], json!([{"role": "user", "content": "why"}]));
                assert_eq!(llm["output"][0]["message"]["content"], "WHY (1 docs)");
                assert_eq!(llm["metadata"]["model"], "fake-model");
                assert_eq!(llm["metrics"]["prompt_tokens"], 3.0);
                assert_eq!(llm["metrics"]["completion_tokens"], 4.0);
                assert_eq!(llm["metrics"]["tokens"], 7.0);
                let retrieve = tree.iter().find(|r| name(r) == "retrieve").unwrap();
                assert_eq!(retrieve["input"], "why");
            }
            ("/chat", code) => {
                // Extractor rejections: the handler never ran.
                assert_eq!(
                    shape,
                    [s("POST /chat", None), s("request", Some("POST /chat"))]
                );
                let error = root["error"].as_str().unwrap();
                assert!(error.starts_with(&format!("HTTP {code} ")), "{error}");
                let reason = if code == 400 {
                    "Failed to parse the request body as JSON"
                } else {
                    "missing field `question`"
                };
                assert!(error.contains(reason), "{error}");
            }
            other => panic!("unexpected request {other:?}"),
        }
    }
    statuses.sort();
    expected_status.sort();
    assert_eq!(statuses, expected_status);
}
