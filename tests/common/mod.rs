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
