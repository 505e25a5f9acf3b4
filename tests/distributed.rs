//! Distributed tracing against the local server (spec §6.2, §7): traces that
//! cross processes over real HTTP (W3C headers and slugs), object-only and
//! name-only slugs, `propagated_event`, `update_span`, links and legacy ids.
//!
//! Every "process" is its own `State` (its own login, queue and logger
//! thread), as separate services would be.

mod common;

use std::collections::BTreeMap;

use axum::extract::State as AxState;
use axum::routing::get;
use axum::Router;
use braintrust::{
    extract, permalink, update_span, Config, Error, Event, ExperimentOptions, Logger,
    LoggerOptions, Span, SpanArgs, State, WithSpan,
};
use braintrust::{ObjectType, SpanComponents};
use braintrust_devserver::{DevServer, DevServerConfig};
use common::{config_for, logs3_bodies, row_named, setup, shape};
use serde_json::{json, Value};

const NOOP_LINK: &str = "https://www.braintrust.dev/noop-span";

fn vectors(file: &str) -> Value {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).unwrap()
}

fn misc_capture() -> Value {
    vectors("python_http_misc_capture.json")["scenarios"]["experiment_feedback"].clone()
}

fn logs3_capture_notes(scenario: &str) -> Value {
    vectors("python_logs3_capture.json")["scenarios"][scenario]["notes"].clone()
}

/// Another "process": a fresh state on the same server, and a logger there.
fn process(server: &DevServer, project: &str) -> (State, Logger) {
    process_with(server, project, |c| c)
}

fn process_with(
    server: &DevServer,
    project: &str,
    tweak: impl FnOnce(Config) -> Config,
) -> (State, Logger) {
    let state = State::new(tweak(config_for(server))).unwrap();
    let logger =
        braintrust::init_logger(LoggerOptions::new().project(project).state(state.clone()))
            .unwrap();
    (state, logger)
}

fn project_id(server: &DevServer, name: &str) -> String {
    server
        .projects()
        .into_iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no project {name}: {:?}", server.projects()))
}

fn decode(slug: &str) -> SpanComponents {
    SpanComponents::parse(slug).expect("a valid slug")
}

/// The stored row fields a later update must not touch (server bookkeeping
/// such as `_xact_id` left out).
fn without(row: &Value, keys: &[&str]) -> Value {
    let mut m = row.as_object().unwrap().clone();
    m.retain(|k, _| !k.starts_with('_') && !keys.contains(&k.as_str()));
    Value::Object(m)
}

// ---------------------------------------------------------------------------
// Three hops over real HTTP: client → (W3C) → service B → (slug) → service C.

#[derive(Clone)]
struct Hop {
    logger: Logger,
    next: Option<String>,
}

/// Service B: continues the trace from W3C headers, then calls C with the
/// slug in `x-bt-parent`.
async fn service_b(AxState(hop): AxState<Hop>, headers: axum::http::HeaderMap) -> String {
    let ctx = extract(&headers).expect("traceparent");
    let span = hop
        .logger
        .start_span(SpanArgs::new().name("service-b").parent(ctx));
    let next = hop.next.clone().unwrap();
    let reply = async {
        let span = braintrust::current_span();
        span.log(Event::new().input("from client")).unwrap();
        let child = span.start_span(SpanArgs::new().name("b-work"));
        child.end();
        let reply = reqwest::Client::new()
            .get(&next)
            .header("x-bt-parent", span.export())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        span.log(Event::new().output(reply.clone())).unwrap();
        reply
    }
    .in_span(span.clone())
    .await;
    span.end();
    format!("b({reply})")
}

/// Service C: continues the trace from the slug header.
async fn service_c(AxState(hop): AxState<Hop>, headers: axum::http::HeaderMap) -> String {
    let slug = headers
        .get("x-bt-parent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let span = hop
        .logger
        .start_span(SpanArgs::new().name("service-c").parent(slug));
    span.log(Event::new().output("c")).unwrap();
    span.end();
    "c".to_string()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hops_form_one_tree() {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    // The client sends nothing before its flush (so its project id is still
    // unknown when it calls B).
    let (state_a, logger_a) = process_with(&server, "dist", |c| c.sync_flush(true));
    let (state_b, logger_b) = process(&server, "dist");
    let (state_c, logger_c) = process(&server, "dist");

    let url_c = serve(Router::new().route("/c", get(service_c)).with_state(Hop {
        logger: logger_c,
        next: None,
    }))
    .await;
    let url_b = serve(Router::new().route("/b", get(service_b)).with_state(Hop {
        logger: logger_b,
        next: Some(format!("{url_c}/c")),
    }))
    .await;

    // The client: nothing resolved yet, so the baggage names the project by
    // name and service B registers it itself.
    let root = logger_a.start_span(SpanArgs::new().name("client"));
    let mut headers = reqwest::header::HeaderMap::new();
    root.inject(&mut headers);
    assert_eq!(
        headers["baggage"].to_str().unwrap(),
        "braintrust.parent=project_name%3Adist"
    );
    let reply = reqwest::Client::new()
        .get(format!("{url_b}/b"))
        .headers(headers)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(reply, "b(c)");
    root.end();
    for s in [&state_a, &state_b, &state_c] {
        s.flush_async().await.unwrap();
    }

    let client = row_named(&server, "client");
    let b = row_named(&server, "service-b");
    let b_work = row_named(&server, "b-work");
    let c = row_named(&server, "service-c");
    let trace = client["root_span_id"].as_str().unwrap();
    let pid = project_id(&server, "dist");
    for r in [&client, &b, &b_work, &c] {
        assert_eq!(r["root_span_id"], trace, "one trace: {r:#}");
        assert_eq!(r["project_id"], pid.as_str());
        assert_eq!(r["log_id"], "g");
    }
    assert_eq!(client["span_parents"], Value::Null);
    assert_eq!(b["span_parents"], json!([client["span_id"]]));
    assert_eq!(b_work["span_parents"], json!([b["span_id"]]));
    assert_eq!(c["span_parents"], json!([b["span_id"]]));
    // Remote children get no default type; the client root is a task.
    assert_eq!(client["span_attributes"]["type"], "task");
    assert!(b["span_attributes"].get("type").is_none());
    assert!(c["span_attributes"].get("type").is_none());
    assert_eq!(b["output"], "c");

    let tree = server.trace_tree(trace);
    let names: Vec<&str> = tree
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["client", "service-b", "b-work", "service-c"],
        "{tree}"
    );
    let depth = |name: &str| {
        let line = tree
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap();
        line.len() - line.trim_start().len()
    };
    assert_eq!(
        (
            depth("client"),
            depth("service-b"),
            depth("b-work"),
            depth("service-c")
        ),
        (0, 2, 4, 4),
        "{tree}"
    );
    // Every row of the trace is in the server, and no other trace exists.
    assert_eq!(server.rows().len(), 4, "{}", server.render_all_traces());
}

#[test]
fn w3c_forwards_inbound_flags_and_tracestate() {
    let (server, state, logger) = setup("w3c-flags", |c| c.sync_flush(true));
    let mut inbound = http::HeaderMap::new();
    inbound.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            .parse()
            .unwrap(),
    );
    inbound.insert("tracestate", "vendor=opaque".parse().unwrap());
    inbound.insert("baggage", "other=1".parse().unwrap());
    let ctx = extract(&inbound).unwrap();
    // No braintrust.parent: routed to the logger the span is started on.
    let span = logger.start_span(SpanArgs::new().name("inbound").parent(ctx));
    let child = span.start_span(SpanArgs::new().name("inbound-child"));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    out.insert("Baggage".into(), "other=1".into());
    child.inject(&mut out);
    assert_eq!(
        out["traceparent"],
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00", child.span_id())
    );
    assert_eq!(out["tracestate"], "vendor=opaque");
    assert_eq!(
        out["baggage"],
        "other=1,braintrust.parent=project_name%3Aw3c-flags"
    );
    assert!(!out.contains_key("Baggage"));
    child.end();
    span.end();
    state.flush().unwrap();
    let row = row_named(&server, "inbound");
    assert_eq!(row["root_span_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(row["span_parents"], json!(["00f067aa0ba902b7"]));
    assert_eq!(row["project_id"], project_id(&server, "w3c-flags").as_str());

    // After resolution the baggage names the project id, and a span of our
    // own trace sends flags 01 and no tracestate.
    let own = logger.start_span(SpanArgs::new().name("own"));
    let mut out = http::HeaderMap::new();
    own.inject(&mut out);
    assert!(out["traceparent"].to_str().unwrap().ends_with("-01"));
    assert!(out.get("tracestate").is_none());
    assert_eq!(
        out["baggage"].to_str().unwrap(),
        format!(
            "braintrust.parent=project_id%3A{}",
            project_id(&server, "w3c-flags")
        )
    );
}

#[test]
fn w3c_with_an_invalid_braintrust_parent_starts_a_fresh_trace() {
    let (server, state, logger) = setup("w3c-bad", |c| c);
    let mut inbound = http::HeaderMap::new();
    inbound.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    inbound.insert("baggage", "braintrust.parent=bogus".parse().unwrap());
    let span = logger.start_span(
        SpanArgs::new()
            .name("fresh")
            .parent(extract(&inbound).unwrap()),
    );
    span.end();
    state.flush().unwrap();
    let row = row_named(&server, "fresh");
    assert_ne!(row["root_span_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(row["span_parents"], Value::Null);
}

// ---------------------------------------------------------------------------
// Object-only and name-only slugs.

#[test]
fn object_only_slug_starts_a_new_trace_in_that_project() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    let (_sa, sender) = process(&server, "owner");
    let pid = sender.resolve_id().unwrap();
    let slug = sender.export();
    let c = decode(&slug);
    assert_eq!(c.object_type, ObjectType::ProjectLogs);
    assert_eq!(c.object_id.as_deref(), Some(pid.as_str()));
    assert!(!c.has_row_ids());

    // The receiver logs to another project by default; the slug wins.
    let (sr, receiver) = process(&server, "receiver");
    let span = receiver.start_span(SpanArgs::new().name("from-object-slug").parent(slug));
    assert_eq!(span.span_parents(), Vec::<String>::new());
    span.end();
    sr.flush().unwrap();
    let row = row_named(&server, "from-object-slug");
    assert_eq!(row["project_id"], pid.as_str());
    assert_eq!(row["span_parents"], Value::Null);
    assert_eq!(row["root_span_id"].as_str().unwrap().len(), 32);
    assert_eq!(row["span_attributes"]["type"], "task");
    assert!(server.projects().iter().all(|p| p["name"] != "receiver"));
}

#[test]
fn name_only_slug_registers_the_project_on_the_receiver() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    // The sender never sends: its slugs name the project by name only.
    let (_sa, sender) = process_with(&server, "named-later", |c| c.sync_flush(true));
    let parent = sender.start_span(SpanArgs::new().name("sender-root"));
    let slug = parent.export();
    let c = decode(&slug);
    assert_eq!(c.object_id, None);
    assert_eq!(
        Value::Object(c.compute_object_metadata_args.clone().unwrap()),
        json!({"project_name": "named-later", "project_id": null})
    );

    let (sr, receiver) = process(&server, "receiver-home");
    let child = receiver.start_span(
        SpanArgs::new()
            .name("name-slug-child")
            .parent(slug.as_str()),
    );
    let grandchild = child.start_span(SpanArgs::new().name("name-slug-grandchild"));
    grandchild.end();
    child.end();
    sr.flush().unwrap();

    let pid = project_id(&server, "named-later");
    let registered: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/project")
        .filter_map(|r| r.json())
        .collect();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["name"], "named-later");
    let row = row_named(&server, "name-slug-child");
    assert_eq!(row["project_id"], pid.as_str());
    assert_eq!(row["root_span_id"], parent.root_span_id().as_str());
    assert_eq!(row["span_parents"], json!([parent.span_id()]));
    let g = row_named(&server, "name-slug-grandchild");
    assert_eq!(g["project_id"], pid.as_str());
    assert_eq!(g["span_parents"], json!([child.span_id()]));
    // The receiver's own project was never needed.
    assert!(server
        .projects()
        .iter()
        .all(|p| p["name"] != "receiver-home"));
    // Once resolved, the child exports the id.
    assert_eq!(
        decode(&child.export()).object_id.as_deref(),
        Some(pid.as_str())
    );
}

#[test]
fn slug_of_the_logger_own_project_reuses_its_resolution() {
    let (server, state, logger) = setup("same-project", |c| c);
    let root = logger.start_span(SpanArgs::new().name("local-root"));
    let slug = root.export();
    for i in 0..3 {
        let s = logger.start_span(
            SpanArgs::new()
                .name(format!("remote-{i}"))
                .parent(slug.as_str()),
        );
        s.end();
    }
    root.end();
    state.flush().unwrap();
    let registrations = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/project")
        .count();
    assert_eq!(registrations, 1);
    assert_eq!(server.rows().len(), 4);
}

// ---------------------------------------------------------------------------
// propagated_event.

#[test]
fn propagated_event_reaches_first_rows_children_and_remote_children() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    let (sa, a) = process(&server, "propagate");
    let parent = a.start_span(
        SpanArgs::new()
            .name("parent-with-propagated")
            .propagated_event(json!({"metadata": {"tenant": "t-1"}}))
            .event(Event::new().metadata(json!({"tenant": "overridden", "user": "u1"}))),
    );
    let local = parent.start_span(SpanArgs::new().name("local-child"));
    local.end();
    let own = parent.start_span(
        SpanArgs::new()
            .name("own-propagated")
            .propagated_event(json!({"metadata": {"region": "eu"}})),
    );
    let own_child = own.start_span(SpanArgs::new().name("own-child"));
    own_child.end();
    own.end();
    let slug = parent.export();
    let c = decode(&slug);
    assert_eq!(
        Value::Object(c.propagated_event.clone().unwrap()),
        json!({"metadata": {"tenant": "t-1"}})
    );

    // A remote child in another process, and its child.
    let (sb, b) = process(&server, "propagate");
    let remote = b.start_span(SpanArgs::new().name("remote-child").parent(slug));
    let remote_grandchild = remote.start_span(SpanArgs::new().name("remote-grandchild"));
    remote_grandchild.end();
    // The remote child re-exports it.
    assert_eq!(
        decode(&remote.export()).propagated_event,
        c.propagated_event
    );
    remote.log(Event::new().output("ok")).unwrap();
    remote.end();
    parent.end();
    sa.flush().unwrap();
    sb.flush().unwrap();

    // Propagated values win over the first row's own on conflicts.
    assert_eq!(
        row_named(&server, "parent-with-propagated")["metadata"],
        json!({"tenant": "t-1", "user": "u1"})
    );
    for name in ["local-child", "remote-child", "remote-grandchild"] {
        assert_eq!(
            row_named(&server, name)["metadata"],
            json!({"tenant": "t-1"}),
            "{name}"
        );
    }
    // A child's own propagated_event replaces the inherited one.
    for name in ["own-propagated", "own-child"] {
        assert_eq!(
            row_named(&server, name)["metadata"],
            json!({"region": "eu"}),
            "{name}"
        );
    }

    // The same shape as the official SDK's capture: parent and remote child
    // both carry metadata.tenant; the remote child is parented by slug.
    let capture = misc_capture();
    let captured: Vec<Value> = capture["requests"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|r| r["path"] == "/logs3")
        .unwrap()["body"]["rows"]
        .as_array()
        .unwrap()
        .clone();
    let remote_row = row_named(&server, "remote-child");
    assert_eq!(captured[1]["metadata"], remote_row["metadata"]);
    assert_eq!(
        captured[1]["span_parents"].as_array().unwrap().len(),
        remote_row["span_parents"].as_array().unwrap().len()
    );
    let decoded = &capture["notes"]["propagated_event_slug_decoded"];
    assert_eq!(
        decoded["propagated_event"],
        Value::Object(c.propagated_event.unwrap())
    );
}

// ---------------------------------------------------------------------------
// update_span.

#[test]
fn update_span_by_slug_changes_exactly_the_given_fields() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    let state = State::new(config_for(&server)).unwrap();
    let exp = braintrust::init_experiment(
        ExperimentOptions::new()
            .project("update-proj")
            .name("exp-1")
            .state(state.clone()),
    )
    .unwrap();
    let span = exp.as_logger().start_span(
        SpanArgs::new().name("eval-root").event(
            Event::new()
                .input(json!({"x": 1}))
                .output(2)
                .expected(2)
                .metadata(json!({"early": 1}))
                .score("exact", 1.0),
        ),
    );
    span.end();
    let slug = span.export();
    state.flush().unwrap();
    let before = server.row(&span.id()).unwrap();
    let requests_before = logs3_bodies(&server).len();

    update_span(
        &slug,
        Event::new()
            .metadata(json!({"late": true}))
            .score("late_score", 0.5),
        Some(&state),
    )
    .unwrap();
    state.flush().unwrap();
    let after = server.row(&span.id()).unwrap();
    assert_eq!(
        without(&after, &["metadata", "scores"]),
        without(&before, &["metadata", "scores"])
    );
    assert_eq!(after["metadata"], json!({"early": 1, "late": true}));
    assert_eq!(after["scores"], json!({"exact": 1, "late_score": 0.5}));
    // The query API's span tree shows the merged fields too.
    let tree = get_json(&format!(
        "{}/dev/api/traces/{}",
        server.url(),
        span.root_span_id()
    ));
    let node = &tree["tree"][0]["span"];
    assert_eq!(node["span_id"], span.span_id().as_str());
    assert_eq!(node["metadata"], json!({"early": 1, "late": true}));
    assert_eq!(node["scores"], json!({"exact": 1, "late_score": 0.5}));
    assert_eq!(node["input"], json!({"x": 1}));

    // The row sent is the official SDK's merge row, key for key.
    let bodies = logs3_bodies(&server);
    assert_eq!(bodies.len(), requests_before + 1);
    let sent = &bodies.last().unwrap()["rows"];
    assert_eq!(sent.as_array().unwrap().len(), 1);
    let sent = &sent[0];
    let capture = misc_capture();
    let captured = capture["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/logs3")
        .nth(1)
        .unwrap()["body"]["rows"][0]
        .clone();
    assert_eq!(shape(sent), shape(&captured));
    assert!(sent.get("span_parents").is_none());
    assert_eq!(sent["_is_merge"], true);
    assert_eq!(sent["id"], span.id().as_str());
    assert_eq!(sent["span_id"], span.span_id().as_str());
    assert_eq!(sent["root_span_id"], span.root_span_id().as_str());
    assert_eq!(
        sent["experiment_id"],
        exp.as_logger().id().unwrap().as_str()
    );
    assert_eq!(sent["metadata"], captured["metadata"]);
    assert_eq!(sent["scores"], captured["scores"]);
}

#[test]
fn logger_update_span_by_id_changes_exactly_the_given_fields() {
    let (server, state, logger) = setup("update-by-id", |c| c);
    let span = logger.start_span(
        SpanArgs::new()
            .name("to-update")
            .event(Event::new().input("q").output("draft").tags(["a"])),
    );
    span.end();
    state.flush().unwrap();
    let before = server.row(&span.id()).unwrap();

    logger
        .update_span(&span.id(), Event::new().output("final").tags(["b"]))
        .unwrap();
    state.flush().unwrap();
    let after = server.row(&span.id()).unwrap();
    assert_eq!(
        without(&after, &["output", "tags"]),
        without(&before, &["output", "tags"])
    );
    assert_eq!(after["output"], "final");
    let sent = logs3_bodies(&server).last().unwrap()["rows"][0].clone();
    let mut keys: Vec<&str> = sent
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["_is_merge", "id", "log_id", "output", "project_id", "tags"]
    );
    assert_eq!(sent["_is_merge"], true);
}

#[test]
fn update_span_errors_name_the_field() {
    let (server, state, logger) = setup("update-errors", |c| c.sync_flush(true));
    let span = logger.start_span(SpanArgs::new().name("s"));
    let slug = span.export();

    match update_span(&slug, Event::new().score("quality", 1.5), Some(&state)) {
        Err(Error::Validation(e)) => {
            assert_eq!(e.field, "scores.quality");
            assert_eq!(e.rule, "score values must be between 0 and 1");
        }
        other => panic!("{other:?}"),
    }
    match update_span(&slug, Event::new().metadata(json!([1])), Some(&state)) {
        Err(Error::Validation(e)) => assert_eq!(e.field, "metadata"),
        other => panic!("{other:?}"),
    }
    let e = logger
        .update_span(&span.id(), Event::new().score("s", -0.1))
        .unwrap_err();
    assert_eq!(e.field, "scores.s");
    // An object-only slug names no span.
    match update_span(&logger.export(), Event::new().output(1), Some(&state)) {
        Err(Error::Validation(e)) => assert_eq!(e.field, "exported"),
        other => panic!("{other:?}"),
    }
    // Not a slug: the spec's decode error.
    let e = update_span("%%%", Event::new().output(1), Some(&state)).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("SpanComponents string is not properly encoded."));
    // No failed call queued anything.
    span.end();
    state.flush().unwrap();
    let sent: Vec<Value> = logs3_bodies(&server)
        .iter()
        .flat_map(|b| b["rows"].as_array().unwrap().clone())
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["span_attributes"]["name"], "s");
}

// ---------------------------------------------------------------------------
// Links.

#[test]
fn links_match_the_spec_forms() {
    let server =
        DevServer::start_blocking(DevServerConfig::for_tests().org_name("spec-org")).unwrap();
    // Nothing is sent (so no login happens) before the explicit flushes.
    let state = State::new(config_for(&server).sync_flush(true)).unwrap();
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("spec-capture")
            .state(state.clone()),
    )
    .unwrap();

    assert_eq!(Span::noop().link(), NOOP_LINK);
    assert_eq!(Span::noop().permalink(), NOOP_LINK);
    assert_eq!(permalink("", Some(&state)), NOOP_LINK);

    let root = logger.start_span(SpanArgs::new().name("root"));
    // Before login there is no org to link to.
    assert_eq!(
        root.link(),
        "https://www.braintrust.dev/error-generating-link?msg=login-or-provide-org-name"
    );
    let slug_before = root.export();
    root.end();
    state.flush().unwrap();
    let pid = project_id(&server, "spec-capture");
    let expected = format!(
        "{}/app/spec-org/object?object_type=project_logs&object_id={pid}&id={}",
        server.url(),
        root.id()
    );
    assert_eq!(root.link(), expected);
    assert_eq!(root.permalink(), expected);
    // A slug exported before the project id was known resolves it.
    assert_eq!(permalink(&slug_before, Some(&state)), expected);
    assert_eq!(permalink(&root.export(), Some(&state)), expected);

    // The official SDK's permalink, with its port, ids and org put back.
    let captured = logs3_capture_notes("batched")["permalink_of_root"]
        .as_str()
        .unwrap()
        .to_string();
    let captured_ids = decode(
        logs3_capture_notes("batched")["root_span_export"]
            .as_str()
            .unwrap(),
    );
    let captured = captured
        .replace("http://127.0.0.1:<port>", &server.url())
        .replace("5f0e4a4e-3b8a-4f55-9a53-3d4c1e1f2a01", &pid)
        .replace(captured_ids.row_id.as_deref().unwrap(), &root.id());
    assert_eq!(expected, captured);

    // Only a name known (logged in, project not resolved yet).
    let other =
        braintrust::init_logger(LoggerOptions::new().project("not yet").state(state.clone()))
            .unwrap();
    let s = other.start_span(SpanArgs::new().name("unresolved"));
    assert_eq!(
        s.link(),
        format!(
            "{}/app/spec-org/p/not%20yet/logs?oid={}",
            server.url(),
            s.id()
        )
    );
    s.end();

    // Experiments.
    let exp = braintrust::init_experiment(
        ExperimentOptions::new()
            .project("spec-capture")
            .name("e")
            .state(state.clone()),
    )
    .unwrap();
    let es = exp
        .as_logger()
        .start_span(SpanArgs::new().name("eval-root"));
    assert_eq!(
        es.link(),
        "https://www.braintrust.dev/error-generating-link?msg=resolve-experiment-id"
    );
    es.end();
    state.flush().unwrap();
    let eid = exp.as_logger().id().unwrap();
    let expected = format!(
        "{}/app/spec-org/object?object_type=experiment&object_id={eid}&id={}",
        server.url(),
        es.id()
    );
    assert_eq!(es.link(), expected);
    assert_eq!(permalink(&es.export(), Some(&state)), expected);

    // The local server answers each link with the viewer's page of the span.
    for (link, span) in [(root.link(), &root), (s.link(), &s), (es.link(), &es)] {
        assert_eq!(
            follow(&link),
            format!("/trace/{}?span={}", span.root_span_id(), span.span_id()),
            "{link}"
        );
    }

    // Bad slugs give error links, never a panic.
    assert!(permalink("not a slug", Some(&state))
        .starts_with("https://www.braintrust.dev/error-generating-link?msg="));
    assert!(permalink(&logger.export(), Some(&state))
        .starts_with("https://www.braintrust.dev/error-generating-link?msg="));
}

/// A JSON answer of the local server's query API.
fn get_json(url: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.json().await.unwrap()
    })
}

/// Where the local server redirects a link to (the `Location` of its 303).
fn follow(link: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = client.get(link).bearer_auth("k").send().await.unwrap();
        assert!(resp.status().is_redirection(), "{link}: {}", resp.status());
        resp.headers()["location"].to_str().unwrap().to_string()
    })
}

#[test]
fn permalink_without_credentials_is_the_login_error_link() {
    let state = State::new(Config::default().app_url("http://127.0.0.1:9")).unwrap();
    let slug = SpanComponents::new(ObjectType::ProjectLogs, "p")
        .with_row_ids("r", "00f067aa0ba902b7", "4bf92f3577b34da6a3ce929d0e0e4736")
        .to_v4_string();
    assert_eq!(
        permalink(&slug, Some(&state)),
        "https://www.braintrust.dev/error-generating-link?msg=login-or-provide-org-name"
    );
}

// ---------------------------------------------------------------------------
// Export formats.

#[test]
fn export_before_the_project_id_is_known_matches_the_capture() {
    for (scenario, legacy) in [("batched", false), ("legacy_ids", true)] {
        let notes = logs3_capture_notes(scenario);
        let state = State::new(
            Config::default()
                .api_key("k")
                .app_url("http://127.0.0.1:9")
                .legacy_ids(legacy)
                .sync_flush(true)
                .lifecycle(braintrust::LifecyclePolicy::Manual),
        )
        .unwrap();
        let logger = braintrust::init_logger(
            LoggerOptions::new()
                .project("spec-capture")
                .state(state.clone()),
        )
        .unwrap();
        assert_eq!(
            logger.export(),
            notes["logger_export_before_resolution"].as_str().unwrap(),
            "{scenario}"
        );
        let span = logger.start_span(SpanArgs::new().name("root"));
        let slug = span.export();
        let expected = decode(notes["root_span_export"].as_str().unwrap());
        let got = decode(&slug);
        assert_eq!(
            got.compute_object_metadata_args, expected.compute_object_metadata_args,
            "{scenario}"
        );
        assert_eq!(got.object_id, None);
        assert_eq!(got.row_id.as_deref(), Some(span.id().as_str()));
        assert_eq!(got.span_id.as_deref(), Some(span.span_id().as_str()));
        assert_eq!(
            got.root_span_id.as_deref(),
            Some(span.root_span_id().as_str())
        );
        // Same version byte as the official SDK's export.
        assert_eq!(
            &slug[..2],
            &notes["root_span_export"].as_str().unwrap()[..2]
        );
        span.end();
    }
}

#[test]
fn legacy_ids_export_v3_and_inject_nothing() {
    let (server, state, logger) = setup("legacy", |c| c.legacy_ids(true).sync_flush(true));
    let root = logger.start_span(SpanArgs::new().name("legacy-root"));
    let child = root.start_span(SpanArgs::new().name("legacy-child"));
    let slug = child.export();
    assert!(slug.starts_with("Aw"), "V3: {slug}");
    let c = decode(&slug);
    assert_eq!(c.span_id.as_deref(), Some(child.span_id().as_str()));
    assert_eq!(root.span_id(), root.root_span_id());
    assert_eq!(c.root_span_id.as_deref(), Some(root.span_id().as_str()));
    assert!(logger.export().starts_with("AwIA"));

    let mut headers = http::HeaderMap::new();
    child.inject(&mut headers);
    assert!(headers.is_empty());
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    map.insert("baggage".into(), "k=v".into());
    child.inject(&mut map);
    assert_eq!(map.len(), 1);

    // A V3 slug continues the trace in a hex-id process.
    let (sb, b) = process(&server, "legacy");
    let remote = b.start_span(SpanArgs::new().name("hex-remote").parent(slug));
    assert_eq!(remote.root_span_id(), root.span_id());
    assert_eq!(remote.span_id().len(), 16);
    // Its own export is V4 (hex process), the UUID trace id in the tail.
    let re = remote.export();
    assert!(re.starts_with("BA"), "{re}");
    assert_eq!(
        decode(&re).root_span_id.as_deref(),
        Some(root.span_id().as_str())
    );
    remote.end();
    child.end();
    root.end();
    state.flush().unwrap();
    sb.flush().unwrap();
    let r = row_named(&server, "hex-remote");
    assert_eq!(r["span_parents"], json!([child.span_id()]));
    assert_eq!(r["root_span_id"], root.span_id().as_str());
}

#[test]
fn experiment_export_resolves_the_experiment_first() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    let state = State::new(config_for(&server)).unwrap();
    let exp = braintrust::init_experiment(
        ExperimentOptions::new()
            .project("exp-export")
            .name("e1")
            .state(state.clone()),
    )
    .unwrap();
    let slug = exp.as_logger().export();
    let c = decode(&slug);
    assert_eq!(c.object_type, ObjectType::Experiment);
    assert_eq!(c.object_id, exp.as_logger().id());
    assert!(c.object_id.is_some());
    // A remote span joins the experiment; W3C baggage names it too.
    let span = exp
        .as_logger()
        .start_span(SpanArgs::new().name("eval-root"));
    let mut h = http::HeaderMap::new();
    span.inject(&mut h);
    assert_eq!(
        h["baggage"].to_str().unwrap(),
        format!(
            "braintrust.parent=experiment_id%3A{}",
            exp.as_logger().id().unwrap()
        )
    );
    let (sb, b) = process(&server, "elsewhere");
    let remote = b.start_span(
        SpanArgs::new()
            .name("remote-eval-child")
            .parent(extract(&h).unwrap()),
    );
    remote.end();
    span.end();
    state.flush().unwrap();
    sb.flush().unwrap();
    let r = row_named(&server, "remote-eval-child");
    assert_eq!(r["experiment_id"], exp.as_logger().id().unwrap().as_str());
    assert_eq!(r["span_parents"], json!([span.span_id()]));
}

#[test]
fn empty_and_invalid_slugs_fall_back_to_the_usual_parent() {
    let (server, state, logger) = setup("fallback", |c| c);
    let root = logger.start_span(SpanArgs::new().name("outer"));
    {
        let _g = root.enter();
        // The no-op span exports "": like no parent at all.
        let a = braintrust::start_span(
            SpanArgs::new()
                .name("empty-slug")
                .parent(Span::noop().export()),
        );
        a.end();
    }
    let b = logger.start_span(SpanArgs::new().name("bad-slug").parent("@@not-a-slug@@"));
    b.end();
    root.end();
    state.flush().unwrap();
    assert_eq!(
        row_named(&server, "empty-slug")["span_parents"],
        json!([root.span_id()])
    );
    assert_eq!(row_named(&server, "bad-slug")["span_parents"], Value::Null);
}
