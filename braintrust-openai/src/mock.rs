//! A small OpenAI-compatible server for tests and examples (feature
//! `mock-server`). Deterministic canned content, recorded requests, and
//! scripted failures.
//!
//! | Endpoint | Plain | Streaming |
//! |---|---|---|
//! | `POST /v1/chat/completions` | `"Paris."`; a call of the first tool when the request has `tools` (unless the last message is a tool result, which is echoed back in the text) | the same as SSE chunks; a final usage chunk when `stream_options.include_usage`; tool-call arguments split across chunks |
//! | `POST /v1/embeddings` | `[0.1, 0.2, 0.3, 0.4]` per input (or `dimensions` values; base64 with `encoding_format: "base64"`) | |
//! | `POST /v1/responses` | a `"Hi!"` message, plus a `function_call` item when the request has function tools | `response.created` … `response.completed` events |
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use braintrust_openai::mock::{Failure, MockOpenAi};
//! let mock = MockOpenAi::start().await?;
//! mock.push_failure(Failure::RateLimited { retry_after_secs: 0 });
//! let client = braintrust_openai::OpenAiClient::builder()
//!     .base_url(mock.url())
//!     .api_key("test")
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

/// A scripted failure, used by the next request (any endpoint), in the
/// order pushed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// `429 Too Many Requests` with `Retry-After: <secs>` and a rate-limit error body.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// `500 Internal Server Error` with an OpenAI-style error body.
    ServerError,
    /// Any status with this body.
    Status {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// A 200 whose body is not JSON (non-streaming).
    MalformedJson,
    /// Streaming: `after` good chunks, then one chunk that is not JSON, then
    /// the rest.
    MalformedChunk {
        /// Good chunks before the bad one.
        after: usize,
    },
    /// Streaming: `after` good chunks, then an `{"error": ...}` event.
    ErrorEvent {
        /// Good chunks before the error.
        after: usize,
    },
    /// Streaming: `after` good chunks, then silence (the connection stays open).
    StallAfter {
        /// Chunks sent before stalling.
        after: usize,
    },
    /// Streaming: `after` good chunks, then the connection is cut (the body
    /// ends with an error, so the client sees a broken transfer, not an end).
    DisconnectAfter {
        /// Chunks sent before the cut.
        after: usize,
    },
    /// Wait this long before answering (for timeouts).
    Delay(Duration),
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct MockRequest {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
}

impl MockRequest {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    failures: Mutex<VecDeque<Failure>>,
    requests: Mutex<Vec<MockRequest>>,
}

/// The running mock. The server stops when the last clone is dropped.
#[derive(Clone)]
pub struct MockOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Mutex<Option<tokio::sync::oneshot::Sender<()>>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

impl std::fmt::Debug for MockOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockOpenAi")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MockOpenAi {
    /// Binds `127.0.0.1:0` and serves on the current Tokio runtime.
    pub async fn start() -> std::io::Result<MockOpenAi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/responses", post(responses))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(MockOpenAi {
            addr,
            shared,
            _stop: Arc::new(StopOnDrop(Mutex::new(Some(tx)))),
        })
    }

    /// The base URL to give a client: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A client builder aimed at this server (base URL and a placeholder
    /// key set), for examples and tests.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = braintrust_openai::mock::MockOpenAi::start().await?;
    /// let client = mock.client_builder().include_usage_in_streams(true).build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn client_builder(&self) -> crate::OpenAiClientBuilder {
        crate::OpenAiClient::builder()
            .base_url(self.url())
            .api_key("mock")
    }

    /// Queues a failure for the next request.
    pub fn push_failure(&self, f: Failure) {
        self.shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<MockRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Shared {
    fn record(&self, path: &str, headers: &HeaderMap, body: &Bytes) -> (Value, Option<Failure>) {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(MockRequest {
                path: path.to_string(),
                headers,
                body: json.clone(),
            });
        let failure = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        (json, failure)
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// The response for a failure that does not depend on streaming, if any.
async fn immediate_failure(f: &Failure) -> Option<Response> {
    match f {
        Failure::RateLimited { retry_after_secs } => Some(
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("content-type", "application/json")
                .header("retry-after", retry_after_secs.to_string())
                .body(Body::from(
                    json!({"error": {
                        "message": "Rate limit reached for requests",
                        "type": "requests",
                        "param": null,
                        "code": "rate_limit_exceeded"
                    }})
                    .to_string(),
                ))
                .unwrap_or_default(),
        ),
        Failure::ServerError => Some(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": null,
                "code": null
            }}),
        )),
        Failure::Status { status, body } => Some(
            Response::builder()
                .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .body(Body::from(body.clone()))
                .unwrap_or_default(),
        ),
        Failure::Delay(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

/// An SSE body from `events` (each already `event:`/`data:` framed),
/// applying a streaming failure.
fn sse(events: Vec<String>, failure: Option<&Failure>) -> Response {
    let mut frames: Vec<String> = Vec::new();
    let mut stall = false;
    let mut cut = false;
    match failure {
        Some(Failure::MalformedChunk { after }) => {
            for (i, e) in events.into_iter().enumerate() {
                if i == *after {
                    frames.push("data: {\"id\": \"broken\", \"choices\": [\n\n".into());
                }
                frames.push(e);
            }
        }
        Some(Failure::ErrorEvent { after }) => {
            frames.extend(events.into_iter().take(*after));
            frames.push(format!(
                "event: error\ndata: {}\n\n",
                json!({"error": {"message": "The model overloaded mid-stream.", "type": "server_error", "code": "overloaded"}, "type": "error"})
            ));
        }
        Some(Failure::StallAfter { after }) => {
            frames.extend(events.into_iter().take(*after));
            stall = true;
        }
        Some(Failure::DisconnectAfter { after }) => {
            frames.extend(events.into_iter().take(*after));
            cut = true;
        }
        _ => frames = events,
    }
    let head = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<Bytes, std::io::Error>(Bytes::from(f))),
    );
    use futures_util::StreamExt;
    let body = if stall {
        Body::from_stream(head.chain(futures_util::stream::pending()))
    } else if cut {
        // An error item makes the server abort the connection mid-body.
        Body::from_stream(head.chain(futures_util::stream::once(async {
            // Pending once first, so the server flushes what it has.
            tokio::task::yield_now().await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "mock: connection cut",
            ))
        })))
    } else {
        Body::from_stream(head)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_default()
}

fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn named(event: &str, v: Value) -> String {
    format!("event: {event}\ndata: {v}\n\n")
}

fn model_of(req: &Value, default: &str) -> String {
    req.get("model")
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// The first function tool's name in a chat or responses request.
fn first_function_tool(req: &Value) -> Option<String> {
    req.get("tools")?.as_array()?.iter().find_map(|t| {
        t.pointer("/function/name")
            .or_else(|| {
                t.get("name")
                    .filter(|_| t.get("type") == Some(&json!("function")))
            })
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

fn chat_usage(full: bool) -> Value {
    if full {
        json!({
            "prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            }
        })
    } else {
        json!({
            "prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 0}
        })
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, failure) = shared.record("/v1/chat/completions", &headers, &body);
    if let Some(f) = &failure {
        if let Some(resp) = immediate_failure(f).await {
            return resp;
        }
    }
    let model = model_of(&req, "gpt-4o-mini");
    // After a tool result, answer with text; otherwise call the first tool.
    let last = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    let tool_result = (last["role"] == "tool").then(|| match &last["content"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let tool = first_function_tool(&req).filter(|_| tool_result.is_none());
    let text = match &tool_result {
        Some(r) => format!("Based on the tool result: {r}"),
        None => "Paris.".to_string(),
    };
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        if failure == Some(Failure::MalformedJson) {
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from("{\"id\": \"chatcmpl-1\", \"choices\": [oops"))
                .unwrap_or_default();
        }
        let message = match &tool {
            Some(name) => json!({
                "role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": name, "arguments": "{\"location\":\"Paris\"}"}
                }]
            }),
            None => json!({"role": "assistant", "content": text, "refusal": null}),
        };
        return json_response(
            StatusCode::OK,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }
                }],
                "usage": chat_usage(true),
                "system_fingerprint": "fp_1"
            }),
        );
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |choices: Value| {
        json!({
            "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": choices
        })
    };
    let delta = |d: Value, finish: Value| {
        chunk(json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]))
    };
    let mut events = Vec::new();
    match &tool {
        None => {
            events.push(data(delta(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )));
            // "Paris." as "Par" + "is.", as in the capture; other texts in two halves too.
            let mid = text.char_indices().nth(3).map_or(text.len(), |(i, _)| i);
            events.push(data(delta(json!({"content": &text[..mid]}), Value::Null)));
            events.push(data(delta(json!({"content": &text[mid..]}), Value::Null)));
            events.push(data(delta(json!({}), json!("stop"))));
        }
        Some(name) => {
            let tc = |v: Value| json!({"tool_calls": [v]});
            events.push(data(delta(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": "call_1", "type": "function",
                    "function": {"name": name, "arguments": ""}
                }]}),
                Value::Null,
            )));
            events.push(data(delta(
                tc(json!({"index": 0, "function": {"arguments": "{\"loca"}})),
                Value::Null,
            )));
            events.push(data(delta(
                tc(json!({"index": 0, "function": {"arguments": "tion\":\"Paris\"}"}})),
                Value::Null,
            )));
            events.push(data(delta(
                tc(json!({"index": 1, "id": "call_2", "type": "function", "function": {"name": name, "arguments": ""}})),
                Value::Null,
            )));
            events.push(data(delta(
                tc(json!({"index": 1, "function": {"arguments": "{\"location\":\"Rome\"}"}})),
                Value::Null,
            )));
            events.push(data(delta(json!({}), json!("tool_calls"))));
        }
    }
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = chat_usage(false);
        events.push(data(last));
    }
    events.push("data: [DONE]\n\n".into());
    sse(events, failure.as_ref())
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (req, failure) = shared.record("/v1/embeddings", &headers, &body);
    if let Some(f) = &failure {
        if let Some(resp) = immediate_failure(f).await {
            return resp;
        }
    }
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(other) => vec![other.to_string()],
        None => vec![String::new()],
    };
    let dims = req.get("dimensions").and_then(Value::as_u64).unwrap_or(4) as usize;
    let vector: Vec<f32> = (1..=dims).map(|i| i as f32 / 10.0).collect();
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let encoded = if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector
            .iter()
            .map(|f| (*f as f64 * 10.0).round() / 10.0)
            .collect::<Vec<f64>>())
    };
    let tokens: usize = inputs
        .iter()
        .map(|s| s.split_whitespace().count() + 1)
        .sum();
    json_response(
        StatusCode::OK,
        json!({
            "object": "list",
            "data": inputs.iter().enumerate().map(|(i, _)| json!({
                "object": "embedding", "index": i, "embedding": encoded
            })).collect::<Vec<_>>(),
            "model": model_of(&req, "text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }),
    )
}

fn response_object(req: &Value, status: &str, output: Vec<Value>, usage: bool) -> Value {
    let mut r = json!({
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "model": model_of(req, "gpt-4o-mini"),
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": req.get("tools").cloned().unwrap_or(json!([])),
        "error": null,
        "incomplete_details": null,
        "instructions": req.get("instructions").cloned().unwrap_or(Value::Null),
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "text": {"format": {"type": "text"}},
    });
    if usage {
        r["usage"] = json!({
            "input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}
        });
    } else {
        r["usage"] = Value::Null;
    }
    r
}

fn message_item(status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([{"type": "output_text", "text": t, "annotations": []}]),
        None => json!([]),
    };
    json!({"id": "msg_1", "type": "message", "role": "assistant", "status": status, "content": content})
}

fn function_item(name: &str, status: &str, args: &str) -> Value {
    json!({"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": name,
           "arguments": args, "status": status})
}

async fn responses(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, failure) = shared.record("/v1/responses", &headers, &body);
    if let Some(f) = &failure {
        if let Some(resp) = immediate_failure(f).await {
            return resp;
        }
    }
    let tool = first_function_tool(&req);
    let args = "{\"location\":\"Paris\"}";
    let mut output = vec![message_item("completed", Some("Hi!"))];
    if let Some(name) = &tool {
        output.push(function_item(name, "completed", args));
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        if failure == Some(Failure::MalformedJson) {
            return Response::builder()
                .status(StatusCode::OK)
                .body(Body::from("not json"))
                .unwrap_or_default();
        }
        return json_response(
            StatusCode::OK,
            response_object(&req, "completed", output, true),
        );
    }
    let mut seq = 0u64;
    let mut ev = |kind: &str, mut v: Value| {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(seq);
        seq += 1;
        named(kind, v)
    };
    let mut events = vec![
        ev(
            "response.created",
            json!({"response": response_object(&req, "in_progress", vec![], false)}),
        ),
        ev(
            "response.in_progress",
            json!({"response": response_object(&req, "in_progress", vec![], false)}),
        ),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": message_item("in_progress", None)}),
        ),
        ev(
            "response.content_part.added",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        ev(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi"}),
        ),
        ev(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "!"}),
        ),
        ev(
            "response.output_text.done",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Hi!"}),
        ),
        ev(
            "response.content_part.done",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "Hi!", "annotations": []}}),
        ),
        ev(
            "response.output_item.done",
            json!({"output_index": 0, "item": message_item("completed", Some("Hi!"))}),
        ),
    ];
    if let Some(name) = &tool {
        events.push(ev(
            "response.output_item.added",
            json!({"output_index": 1, "item": function_item(name, "in_progress", "")}),
        ));
        events.push(ev(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_1", "output_index": 1, "delta": "{\"location\":"}),
        ));
        events.push(ev(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_1", "output_index": 1, "delta": "\"Paris\"}"}),
        ));
        events.push(ev(
            "response.function_call_arguments.done",
            json!({"item_id": "fc_1", "output_index": 1, "arguments": args}),
        ));
        events.push(ev(
            "response.output_item.done",
            json!({"output_index": 1, "item": function_item(name, "completed", args)}),
        ));
    }
    events.push(ev(
        "response.completed",
        json!({"response": response_object(&req, "completed", output, true)}),
    ));
    sse(events, failure.as_ref())
}
