//! Documented behaviour: a plain `tokio::spawn` does not carry the span, so
//! a span started in it is a new root of the current logger; the fix is
//! `braintrust::spawn` (or `.with_current_span()`).
//!
//! This binary holds a single test because it makes its logger the
//! process's current one.

use std::collections::HashMap;

use braintrust::{current_span, start_span, Config, LoggerOptions, SpanArgs, State, WithSpan};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::Value;

#[test]
fn plain_tokio_spawn_starts_a_new_root_and_the_helper_a_child() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("plain")
            .state(state)
            .set_current(true),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request = start_span(SpanArgs::new().name("request"));
    rt.block_on(
        async {
            tokio::spawn(async {
                assert!(current_span().is_noop());
                start_span(SpanArgs::new().name("plain")).end();
            })
            .await
            .unwrap();
            braintrust::spawn(async {
                start_span(SpanArgs::new().name("helper")).end();
            })
            .await
            .unwrap();
            tokio::spawn(
                async {
                    start_span(SpanArgs::new().name("with_current_span")).end();
                }
                .with_current_span(),
            )
            .await
            .unwrap();
        }
        .in_span(request.clone()),
    );
    request.end();
    braintrust::set_current_logger(None);
    logger.flush().unwrap();

    let rows = server.rows();
    let by_name: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["span_attributes"]["name"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_name.len(), 4, "{rows:#?}");
    let request = by_name["request"];
    let plain = by_name["plain"];
    assert!(
        plain["span_parents"].is_null(),
        "plain tokio::spawn: {plain}"
    );
    assert_ne!(plain["root_span_id"], request["root_span_id"]);
    for name in ["helper", "with_current_span"] {
        let row = by_name[name];
        assert_eq!(
            row["span_parents"],
            serde_json::json!([request["span_id"]]),
            "{name}"
        );
        assert_eq!(row["root_span_id"], request["root_span_id"], "{name}");
    }
}
