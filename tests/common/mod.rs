//! Shared setup for the cross-crate tests: a local server on loopback and a
//! state pointed at it.
#![allow(dead_code)]

pub mod child;
pub mod faulty;

use std::time::Duration;

use braintrust::{Config, Logger, LoggerOptions, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::Value;

/// A config for `server` with short retry delays (tests exercise retries).
pub fn config_for(server: &DevServer) -> Config {
    Config::default()
        .api_key("test-key")
        .app_url(server.url())
        .retry_base_delay(Duration::from_millis(10))
        .lifecycle(braintrust::LifecyclePolicy::Manual)
}

/// A server, plus a logger on a fresh state for project `project`.
pub fn setup(project: &str, tweak: impl FnOnce(Config) -> Config) -> (DevServer, State, Logger) {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).expect("devserver");
    let state = State::new(tweak(config_for(&server))).expect("state");
    let logger =
        braintrust::init_logger(LoggerOptions::new().project(project).state(state.clone()))
            .expect("logger");
    (server, state, logger)
}

/// The `/logs3` request bodies the server received, parsed.
pub fn logs3_bodies(server: &DevServer) -> Vec<Value> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/logs3")
        .filter_map(|r| r.json())
        .collect()
}

/// The stored row whose `span_attributes.name` is `name`.
pub fn row_named(server: &DevServer, name: &str) -> Value {
    server
        .rows()
        .into_iter()
        .find(|r| r["span_attributes"]["name"] == name)
        .unwrap_or_else(|| panic!("no row named {name}: {:#?}", server.rows()))
}

/// Key structure of a JSON value: objects become sorted key trees, leaves "*".
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        _ => Value::String("*".into()),
    }
}

/// The Rust side of the attachment interop tests: a server, a state, and
/// a span logged with an uploaded attachment holding `b"bytes from rust"`;
/// returns the attachment's reference as the official SDKs take it.
pub fn rust_attachment_logged() -> (DevServer, State, Value) {
    let (server, state, logger) = setup("interop-attachments", |c| c);
    let ours =
        braintrust::Attachment::from_bytes(b"bytes from rust".to_vec(), "rust.txt", "text/plain")
            .expect("attachment");
    let span = logger.start_span(braintrust::SpanArgs::new().name("rust-attachment"));
    span.log(braintrust::Event::new().input(serde_json::json!({"doc": ours.clone()})))
        .expect("log");
    span.end();
    state.flush().expect("flush");
    let reference = serde_json::to_value(ours.reference()).expect("reference");
    (server, state, reference)
}

/// The checks on what another SDK did with attachments: it read ours back
/// (`out.rust_bytes`), and its own upload (`out.reference`, holding
/// `expected`) reads back here and replaced the bytes in its span's row.
pub fn assert_foreign_attachment(
    server: &DevServer,
    state: &State,
    out: &Value,
    span_name: &str,
    expected: &[u8],
) {
    assert_eq!(out["rust_bytes"], "bytes from rust");
    let theirs: braintrust::AttachmentReference =
        serde_json::from_value(out["reference"].clone()).expect("the other SDK's reference");
    let stored = state.read_attachment(&theirs).expect("read back");
    assert_eq!(stored.status, braintrust::UploadStatus::Done);
    assert_eq!(stored.data.as_deref(), Some(expected));
    assert_eq!(
        row_named(server, span_name)["input"]["doc"],
        out["reference"]
    );
}
