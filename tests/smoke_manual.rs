use braintrust::{Config, Event, LoggerOptions, SpanArgs, SpanType, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::json;

#[test]
fn manual_spans_reach_the_server() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("test-key").app_url(server.url())).unwrap();
    let logger =
        braintrust::init_logger(LoggerOptions::new().project("smoke").state(state)).unwrap();
    let root = logger.start_span(SpanArgs::new().name("handle_request"));
    root.log(
        Event::new()
            .input(json!({"q": "What is 1+1?"}))
            .metadata(json!({"user": 7})),
    )
    .unwrap();
    let child = root.start_span(SpanArgs::new().name("retrieve").span_type(SpanType::Tool));
    child
        .log(Event::new().output(json!(["doc1"])).score("relevance", 0.8))
        .unwrap();
    child.end();
    root.end();
    logger.flush().unwrap();
    let rows = server.rows();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    println!("{}", server.render_all_traces());
}
