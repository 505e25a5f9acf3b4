//! Spans of `#[traced(crate = "my_bt")]` functions reach the server.

use braintrust_devserver::{DevServer, DevServerConfig};
use braintrust_renamed_test::{add, boxed, double, fail, later, ready, triple, words};
use my_bt::{init_logger, Config, Logger, LoggerOptions, SpanArgs, State};
use serde_json::{json, Value};

#[test]
fn spans_are_logged_through_the_renamed_crate() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger: Logger = init_logger(LoggerOptions::new().project("renamed").state(state)).unwrap();
    let root = logger.start_span(SpanArgs::new().name("root"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    root.in_scope(|| {
        assert_eq!(add(1, 2), 3);
        assert!(fail().is_err());
        assert_eq!(words("a b c"), ["a", "b", "c"]);
        rt.block_on(async {
            assert_eq!(double(2).await, 4);
            // SAFETY: `triple` has no safety requirement.
            assert_eq!(unsafe { triple(2) }.await, 6);
            assert_eq!(later(2).await, 3);
            assert_eq!(boxed(2).await, 4);
            assert_eq!(ready(2).await, 5);
        });
    });
    root.end();
    logger.flush().unwrap();

    let rows = server.rows();
    let named = |name: &str| -> &Value {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == name)
            .unwrap_or_else(|| panic!("no span named {name:?} in {rows:#?}"))
    };
    let add = named("add");
    assert_eq!(add["span_attributes"]["type"], "llm");
    assert_eq!(add["input"], json!({"a": 1, "b": 2}));
    assert_eq!(add["output"], 3);
    assert_eq!(add["metadata"], json!({"model": "adder"}));
    assert_eq!(named("fail")["input"], json!({}));
    assert_eq!(
        named("fail")["error"],
        "an error occurred when formatting an argument"
    );
    assert_eq!(named("words")["output"], 3);
    for (name, output) in [
        ("double", 4),
        ("triple", 6),
        ("later", 3),
        ("boxed", 4),
        ("ready", 5),
    ] {
        let row = named(name);
        assert_eq!(row["span_attributes"]["type"], "function", "{name}");
        assert_eq!(row["output"], output, "{name}");
        assert_eq!(
            row["span_parents"],
            json!([named("root")["span_id"]]),
            "{name}"
        );
    }
}
