//! Hostile input at every public entry, against a real local server: what
//! the protocol forbids is rejected (the field and rule named) or replaced as
//! documented, nothing already queued is lost, and a bad event on a new span
//! costs the event, never the span and its children. The tests that read
//! stderr (one warning per kind, silent masking panics) run again in a child
//! process of this test binary, so they see exactly what a user would.

mod common;

use std::process::Command;

use braintrust::{Config, Event, HttpOptions, Logger, SpanArgs, SpanType, State};
use braintrust_devserver::DevServer;
use common::{row_named, setup};
use serde_json::{json, Value};

/// The child-process switch: set to the name of the test to run in the child.
const CHILD_ENV: &str = "BT_HOSTILE_INPUT_CHILD";

/// In the parent, runs test `name` alone in a child process of this binary
/// and returns its stdout and stderr; in that child, returns `None` (the
/// test body then runs there).
fn rerun_in_child(name: &str, env: &[(&str, &str)]) -> Option<String> {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return None;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .envs(env.iter().copied())
        .output()
        .expect("spawn the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    Some(text)
}

fn rows(server: &DevServer) -> Vec<Value> {
    server.rows()
}

fn row_with_id(server: &DevServer, id: &str) -> Value {
    rows(server)
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id}: {:#?}", server.rows()))
}

/// What every row must satisfy: a sane `created` (a four-digit year),
/// finite start/end with end ≥ start, a non-empty string name and a known
/// type, and a string (or null) `error`.
fn assert_protocol_row(r: &Value) {
    let created = r["created"].as_str().unwrap_or_default();
    assert!(
        created.len() >= 4 && created.as_bytes()[4] == b'-',
        "created {created:?} in {r:#}"
    );
    let start = r["metrics"]["start"].as_f64().expect("finite start");
    if let Some(end) = r["metrics"].get("end") {
        assert!(end.as_f64().expect("finite end") >= start, "{r:#}");
    }
    let name = r["span_attributes"]["name"].as_str().expect("string name");
    assert!(!name.is_empty(), "{r:#}");
    if let Some(t) = r["span_attributes"].get("type") {
        let t = t.as_str().expect("string type");
        assert!(SpanType::ALL.iter().any(|k| k.as_str() == t), "{r:#}");
    }
    if let Some(e) = r.get("error") {
        assert!(e.is_string() || e.is_null(), "{r:#}");
    }
}

#[test]
fn attributes_and_error_shape_are_validated_at_log() {
    let (server, _state, logger) = setup("hostile-attributes", |c| c);
    let span = logger.start_span(SpanArgs::new().name("attrs"));
    span.log(Event::new().output("kept")).unwrap();
    for (attrs, field) in [
        (json!({"name": 5}), "span_attributes.name"),
        (json!({"name": ""}), "span_attributes.name"),
        (json!({"type": "bogus"}), "span_attributes.type"),
        (json!({"type": 3}), "span_attributes.type"),
    ] {
        let err = span
            .log(Event::new().span_attributes(attrs.clone()))
            .unwrap_err();
        assert_eq!(err.field, field, "{attrs}");
        let err = Event::from_json(json!({ "span_attributes": attrs })).unwrap_err();
        assert_eq!(err.field, field);
    }
    assert!(span
        .log(Event::new().span_attributes(json!({"type": "tool", "name": "renamed"})))
        .is_ok());
    // `error` stays a string on the wire: other JSON is sent as its text.
    span.log(Event::new().error(json!({"code": 7, "why": "x"})))
        .unwrap();
    span.end();
    // set_attributes keeps the name when given an empty one, and the type.
    let other = logger.start_span(SpanArgs::new().name("kept-name"));
    other.set_attributes(Some(""), Some(SpanType::Llm));
    other.end();
    // An empty row id is rejected by update_span, and nothing is queued.
    let err = logger.update_span("", Event::new().output(1)).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.rule.as_str()),
        ("id", "the row id must not be empty")
    );
    logger.flush().unwrap();
    let row = row_named(&server, "renamed");
    assert_eq!(
        row["output"], "kept",
        "what was logged before the rejections is kept"
    );
    assert_eq!(row["span_attributes"]["type"], "tool");
    assert_eq!(row["error"], r#"{"code":7,"why":"x"}"#);
    assert_eq!(
        row_named(&server, "kept-name")["span_attributes"]["type"],
        "llm"
    );
    for r in rows(&server) {
        assert_protocol_row(&r);
    }
}

/// Every bad span argument at once, under a root whose own event and
/// propagated event are invalid (two rejected span arguments).
fn log_bad_spans(logger: &Logger) -> (String, String) {
    let root = logger.start_span(
        SpanArgs::new()
            .name("")
            .start_time(f64::NAN)
            .event(Event::new().input("lost").score("s", 1.5))
            .propagated_event(json!({"metadata": {"lost": true}, "scores": {"s": 2}})),
    );
    assert!(
        !root.is_noop(),
        "an invalid event must not turn the span into a no-op"
    );
    let child = root.start_span(SpanArgs::new().name("child").id("").start_time(1e300));
    let grandchild = child.start_span(SpanArgs::new().name("grandchild"));
    grandchild.end_at(f64::NAN);
    let early = child.start_span(SpanArgs::new().name("ends-early").start_time(2000.0));
    assert_eq!(
        early.end_at(1000.0),
        2000.0,
        "an end before the start is the start"
    );
    let inf = child.start_span(SpanArgs::new().name("inf").start_time(f64::INFINITY));
    inf.end_at(f64::NEG_INFINITY);
    child.end();
    root.end_at(f64::INFINITY);
    (root.id(), child.id())
}

#[test]
fn bad_span_arguments_are_replaced_and_the_tree_is_kept() {
    let (server, state, logger) = setup("hostile-args", |c| c);
    let before = now_secs();
    let (root_id, child_id) = log_bad_spans(&logger);
    logger.flush().unwrap();
    let after = now_secs();

    let root = row_with_id(&server, &root_id);
    assert_eq!(
        root["span_attributes"]["name"], "root",
        "empty name → default"
    );
    assert!(
        root.get("input").is_none(),
        "the rejected event is not logged"
    );
    assert!(root.get("scores").is_none());
    assert!(
        root.get("metadata").is_none(),
        "the rejected propagated event is not merged"
    );
    assert_eq!(
        state.stats().rejected_span_args,
        2,
        "the event and the propagated event"
    );
    let start = root["metrics"]["start"].as_f64().unwrap();
    assert!(
        (before..=after).contains(&start),
        "NaN start → now ({start})"
    );

    let child = row_named(&server, "child");
    assert!(!child_id.is_empty() && child["id"] == child_id.as_str());
    assert_eq!(child["span_parents"], json!([root["span_id"]]));
    let start = child["metrics"]["start"].as_f64().unwrap();
    assert!(
        (before..=after).contains(&start),
        "1e300 start → now ({start})"
    );
    assert!(child["created"].as_str().unwrap().starts_with("20"));

    let grandchild = row_named(&server, "grandchild");
    assert_eq!(grandchild["span_parents"], json!([child["span_id"]]));
    let early = row_named(&server, "ends-early");
    assert_eq!(early["metrics"]["start"].as_f64(), Some(2000.0));
    assert_eq!(early["metrics"]["end"].as_f64(), Some(2000.0));
    assert_eq!(rows(&server).len(), 5);
    for r in rows(&server) {
        assert_protocol_row(&r);
    }
}

#[test]
fn each_replacement_warns_once() {
    let Some(out) = rerun_in_child("each_replacement_warns_once", &[]) else {
        let (server, state, logger) = setup("hostile-warn-once", |c| c);
        for _ in 0..3 {
            log_bad_spans(&logger);
        }
        logger.flush().unwrap();
        assert_eq!(rows(&server).len(), 15);
        // Every rejection counted, though stderr said each kind once.
        assert_eq!(state.stats().rejected_span_args, 6);
        return;
    };
    for (what, expected) in [
        ("the event given to a new span was rejected (invalid `scores.s`: score values must be between 0 and 1)", 1),
        ("the propagated_event of a new span was rejected (invalid `propagated_event.scores.s`: score values must be between 0 and 1)", 1),
        ("ignoring an empty span name", 1),
        ("ignoring an empty span id", 1),
        ("ignoring start_time NaN", 1),
        ("ignoring end_time NaN", 1),
        ("was before its start", 1),
        ("ignoring start_time 1e300", 0), // once per kind: the NaN line came first
    ] {
        assert_eq!(out.matches(what).count(), expected, "{what:?} in:\n{out}");
    }
    assert_eq!(out.matches("braintrust:").count(), 7, "{out}");
}

/// `propagated_event` is merged into every row of a subtree, winning on
/// conflicts: given to `SpanArgs` or carried in a parent slug, it must be an
/// object of valid event fields. An invalid one is rejected and counted,
/// and the span starts as if none was given; nothing else is lost.
#[test]
fn propagated_event_is_checked_at_every_entry() {
    let (server, state, logger) = setup("hostile-propagated", |c| c);
    // Valid, normalized as an event is: `error` becomes its JSON text.
    let parent = logger.start_span(
        SpanArgs::new()
            .name("prop-parent")
            .propagated_event(json!({"metadata": {"tenant": "t-1"}, "error": {"code": 7}})),
    );
    let bad = [
        json!([1]),
        json!("tenant"),
        json!({"id": "hijack"}),
        json!({"project_id": "someone-else"}),
        json!({"scores": {"s": 5}}),
        json!({"metrics": {"tokens": "many"}}),
        json!({"span_attributes": {"type": "bogus"}}),
        json!({"tags": ["a", "a"]}),
    ];
    for (i, p) in bad.iter().enumerate() {
        // Under a parent: it inherits the parent's, as with none given.
        let s = parent.start_span(
            SpanArgs::new()
                .name(format!("bad-{i}"))
                .propagated_event(p.clone()),
        );
        s.start_span(SpanArgs::new().name(format!("bad-{i}-child")))
            .end();
        s.end();
    }
    let root = logger.start_span(
        SpanArgs::new()
            .name("bad-root")
            .propagated_event(json!({"id": "hijack"})),
    );
    root.end();
    // `null` means none: not a rejection.
    logger
        .start_span(
            SpanArgs::new()
                .name("null-prop")
                .propagated_event(Value::Null),
        )
        .end();

    // A slug (from another SDK or a hostile caller) whose propagated event
    // would overwrite the row id: the trace is continued without it.
    let mut c = braintrust::SpanComponents::parse(&parent.export()).unwrap();
    let mut hostile = serde_json::Map::new();
    hostile.insert("id".into(), json!("hijack"));
    hostile.insert("metadata".into(), json!({"tenant": "t-2"}));
    c = c.with_propagated_event(hostile);
    let remote = logger.start_span(
        SpanArgs::new()
            .name("from-bad-slug")
            .parent(c.to_export_string()),
    );
    assert!(
        braintrust::SpanComponents::parse(&remote.export())
            .unwrap()
            .propagated_event
            .is_none(),
        "the rejected event is not passed on"
    );
    remote.end();
    parent.end();
    logger.flush().unwrap();

    assert_eq!(state.stats().rejected_span_args, bad.len() as u64 + 2);
    let p = row_named(&server, "prop-parent");
    assert_eq!(p["metadata"], json!({"tenant": "t-1"}));
    assert_eq!(p["error"], r#"{"code":7}"#);
    for i in 0..bad.len() {
        for name in [format!("bad-{i}"), format!("bad-{i}-child")] {
            let r = row_named(&server, &name);
            assert_eq!(r["metadata"], json!({"tenant": "t-1"}), "{r:#}");
            assert!(
                r.get("scores").is_none() && r.get("tags").is_none(),
                "{r:#}"
            );
            assert_ne!(r["id"], "hijack");
        }
    }
    let r = row_named(&server, "bad-root");
    assert!(r.get("metadata").is_none() && r["id"] != "hijack", "{r:#}");
    let r = row_named(&server, "from-bad-slug");
    assert_eq!(r["span_parents"], json!([p["span_id"]]));
    assert_eq!(r["root_span_id"], p["root_span_id"]);
    assert!(r.get("metadata").is_none() && r["id"] != "hijack", "{r:#}");
    assert_eq!(rows(&server).len(), 2 * bad.len() + 4);
    for r in rows(&server) {
        assert_protocol_row(&r);
    }
}

#[test]
fn masking_panics_are_silent_and_counted() {
    let Some(out) = rerun_in_child(
        "masking_panics_are_silent_and_counted",
        &[("RUST_BACKTRACE", "1")],
    ) else {
        let (server, state, logger) = setup("hostile-masking", |c| c.sync_flush(true));
        state.set_masking_function(Some(std::sync::Arc::new(|v: Value| {
            if v == json!("secret output") {
                panic!("masking blew up on {v}");
            }
            Ok(v)
        })));
        for i in 0..4 {
            let s = logger.start_span(SpanArgs::new().name(format!("masked-{i}")));
            s.log(Event::new().input("fine").output("secret output"))
                .unwrap();
            s.end();
        }
        logger.flush().unwrap();
        for i in 0..4 {
            let row = row_named(&server, &format!("masked-{i}"));
            assert_eq!(row["input"], "fine");
            assert_eq!(
                row["output"],
                "ERROR: Failed to mask field 'output' - the masking function panicked"
            );
        }
        // The application's own panics elsewhere still print.
        let _ = std::thread::spawn(|| panic!("the user's own panic")).join();
        return;
    };
    assert!(!out.contains("masking blew up"), "{out}");
    assert!(!out.contains("secret output"), "{out}");
    // One backtrace: the user's own panic's, none for the masking panics.
    assert_eq!(out.matches("stack backtrace").count(), 1, "{out}");
    assert_eq!(
        out.matches("braintrust: the masking function failed on 4 field(s) (the masking function panicked); each was replaced by an error marker").count(),
        1,
        "{out}"
    );
    assert!(out.contains("the user's own panic"), "{out}");
}

/// A masking panic whose payload panics again when dropped escapes the
/// function's guard and takes the masking thread down. The rows of that
/// batch are lost: each is counted as failed, the loss is said on stderr
/// and by `flush()`, and the next batch is masked and delivered.
#[test]
fn a_masking_thread_that_panics_loses_its_rows_counted_and_said() {
    let Some(out) = rerun_in_child(
        "a_masking_thread_that_panics_loses_its_rows_counted_and_said",
        &[],
    ) else {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("the payload panicked when dropped");
            }
        }
        let (server, state, logger) = setup("hostile-masking-thread", |c| c.sync_flush(true));
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let armed_in = armed.clone();
        state.set_masking_function(Some(std::sync::Arc::new(move |v: Value| {
            if armed_in.load(std::sync::atomic::Ordering::Acquire) {
                std::panic::panic_any(Bomb);
            }
            Ok(v)
        })));
        // Three spans, the first written in two flushes (two rows).
        for i in 0..3 {
            let s = logger.start_span(SpanArgs::new().name(format!("lost-{i}")));
            s.log(Event::new().input("x")).unwrap();
            if i == 0 {
                logger.flush().unwrap_err();
                s.log(Event::new().output("y")).unwrap();
            }
            s.end();
        }
        let err = logger.flush().unwrap_err().to_string();
        assert!(err.contains("masking thread panicked"), "{err}");
        let s = state.stats();
        assert_eq!(s.failed_rows, 4, "{s:?}");
        assert_eq!(
            s.logged,
            s.dropped_queue_full + s.delivered_rows + s.failed_rows + s.undelivered_rows,
            "{s:?}"
        );
        assert!(rows(&server).is_empty());
        armed.store(false, std::sync::atomic::Ordering::Release);
        let s = logger.start_span(SpanArgs::new().name("after"));
        s.log(Event::new().input("z")).unwrap();
        s.end();
        logger.flush().unwrap();
        assert_eq!(row_named(&server, "after")["input"], "z");
        return;
    };
    assert!(
        out.contains("rows could not be masked: the masking thread panicked"),
        "{out}"
    );
}

/// A recognisable key, and its middle (a partial leak shows too).
const KEY: &str = "sk-LEAKCANARY-7f3a9c2e1d4b8a6f0e5c3b2a1d9e8f7c";
const KEY_MIDDLE: &str = "LEAKCANARY";

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_api_key_never_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let Some(out) = rerun_in_child("the_api_key_never_leaks", &[("BT_LEAK_DIR", &dir_s)]) else {
        leak_paths(std::path::Path::new(&std::env::var("BT_LEAK_DIR").unwrap()));
        return;
    };
    assert!(out.contains("KEY-PATHS-DONE"), "{out}");
    assert!(out.contains("sk-…7c"), "the masked key shows: {out}");
    assert!(
        !out.contains(KEY_MIDDLE),
        "the key leaked to stdout/stderr:\n{out}"
    );
    assert!(!out.contains("hunter2"), "URL credentials leaked:\n{out}");
    let files = files_under(dir.path());
    assert!(files.len() >= 2, "dump files were written: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(KEY_MIDDLE), "the key leaked to {f:?}");
    }
}

/// Logs with [`KEY`] through every path, printing everything a user might.
fn leak_paths(dir: &std::path::Path) {
    use common::faulty::{Faulty, Mode};
    let quick = |c: Config| {
        c.api_key(KEY)
            .num_retries(0)
            .retry_budget(std::time::Duration::from_millis(200))
            .retry_max_delay(std::time::Duration::from_millis(20))
            .failed_payloads_dir(dir.join("failed"))
            .all_payloads_dir(dir.join("all"))
    };
    // Normal logging, with a masking function that panics quoting the key.
    let (server, state, logger) = setup("leak-normal", quick);
    state.set_masking_function(Some(std::sync::Arc::new(|v: Value| {
        if v == json!("mask me") {
            panic!("mask failed with {KEY}");
        }
        Ok(v)
    })));
    let span = logger.start_span(SpanArgs::new().name("normal"));
    span.log(Event::new().input("mask me")).unwrap();
    println!("{span:?} {logger:?} {state:?} {:?}", state.config());
    span.end();
    println!("flush: {:?}", logger.flush());
    println!("login: {:?}", state.login_info());
    println!("stats: {:?}", state.stats());
    drop(server);

    // Login refused (401), and a backend that fails every /logs3 (dumps).
    for (login, logs3) in [
        (Mode::Status(401, None), Mode::Ok),
        (Mode::Ok, Mode::Status(500, None)),
        (Mode::Ok, Mode::Status(400, None)),
    ] {
        let faulty = Faulty::start();
        faulty.login(login);
        faulty.logs3(logs3);
        let state = State::new(quick(
            Config::default()
                .app_url(faulty.url())
                .lifecycle(braintrust::LifecyclePolicy::Manual),
        ))
        .unwrap();
        let login = state.login();
        println!("login: {login:?}");
        if let Err(e) = &login {
            println!("login error: {e}");
        }
        let logger = braintrust::init_logger(
            braintrust::LoggerOptions::new()
                .project("leak-failing")
                .state(state.clone()),
        )
        .unwrap();
        logger.log(Event::new().input("x")).unwrap();
        match logger.flush() {
            Ok(()) => println!("flushed"),
            Err(e) => println!("flush error: {e} / {e:?}"),
        }
        println!("{state:?}");
    }

    // Debug of configuration with credentials in URLs (never contacted).
    let c = Config::default()
        .api_key(KEY)
        .app_url("https://user:hunter2@app.example")
        .api_url("https://user:hunter2@api.example")
        .http(HttpOptions::new().proxy("http://p:hunter2@proxy.example"));
    println!("{c:?}");
    println!("{:?}", State::new(c).unwrap());
    println!("{:?}", braintrust::Error::NoApiKey);
    println!("KEY-PATHS-DONE");
}

#[test]
fn plain_http_to_a_remote_host_warns_once() {
    for (allow, expected) in [(None, 1), (Some("1"), 0)] {
        let env: Vec<(&str, &str)> = allow
            .map(|v| ("BRAINTRUST_ALLOW_PLAIN_HTTP", v))
            .into_iter()
            .collect();
        let Some(out) = rerun_in_child("plain_http_to_a_remote_host_warns_once", &env) else {
            plain_http_child();
            return;
        };
        assert_eq!(
            out.matches("sending the API key over plain http:// to http://***@bt-remote.example")
                .count(),
            expected,
            "{out}"
        );
        assert!(!out.contains("hunter2"), "{out}");
    }
}

/// Logs in twice to a plain-http host name that is not loopback. The
/// request goes through a proxy on loopback (the local server), so no
/// traffic leaves the machine.
fn plain_http_child() {
    let faulty = common::faulty::Faulty::start();
    for _ in 0..2 {
        let state = State::new(
            Config::default()
                .api_key("test-key")
                .app_url("http://user:hunter2@bt-remote.example")
                .http(HttpOptions::new().proxy(faulty.url()))
                .lifecycle(braintrust::LifecyclePolicy::Manual),
        )
        .unwrap();
        let _ = state.login();
    }
    assert!(
        faulty.login_calls() >= 1,
        "the proxy (local server) saw the login"
    );
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
