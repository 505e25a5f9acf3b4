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

/// `log_or_report` never fails: valid events are logged, invalid ones are
/// not, every rejection is counted in `Stats::rejected_logs`, and stderr gets
/// one line per field (checked in a child process, whose stderr is its own).
#[test]
fn log_or_report_logs_valid_events_and_counts_the_rest() {
    const CHILD: &str = "BT_TEST_LOG_OR_REPORT_CHILD";
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("test-key").app_url(server.url())).unwrap();
    let logger =
        braintrust::init_logger(LoggerOptions::new().project("smoke").state(state.clone()))
            .unwrap();
    let span = logger.start_span(SpanArgs::new().name("lenient"));
    span.in_scope(|| {
        let current = braintrust::current_span();
        current.log_or_report(Event::new().output("kept").score("accuracy", 0.5));
        for _ in 0..3 {
            current.log_or_report(Event::new().output("dropped").score("accuracy", 2.0));
        }
        current.log_or_report(Event::new().tags(["a", "a"]));
    });
    span.end();
    logger.flush().unwrap();
    assert_eq!(state.stats().rejected_logs, 4);
    let rows = server.rows();
    let row = rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == "lenient")
        .unwrap();
    assert_eq!(row["output"], "kept");
    assert_eq!(row["scores"], json!({"accuracy": 0.5}));

    if std::env::var_os(CHILD).is_some() {
        return; // the child only produces the stderr checked below
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "log_or_report_logs_valid_events_and_counts_the_rest",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("braintrust: span.log_or_report"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("invalid `scores.accuracy`: score values must be between 0 and 1"),
        "{stderr}"
    );
    assert!(lines[1].contains("invalid `tags`"), "{stderr}");
}
