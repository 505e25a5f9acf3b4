//! OpenTelemetry both ways, over loopback HTTP: OTel spans exported to the
//! local server's OTLP endpoint form the same tree as the SDK-native path,
//! a mixed OTel/Braintrust trace is one tree, and the exporter's requests to
//! a collector stand-in carry the endpoint, key, parent and a valid body.
#![cfg(feature = "opentelemetry")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use braintrust::{init_logger, Config, Event, LoggerOptions, SpanArgs, SpanType, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use braintrust_integrations::otel::{otel_context, parent_from_otel, BraintrustExporter};
use opentelemetry::trace::{Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use serde_json::{json, Value};

fn provider(exporter: BraintrustExporter) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build()
}

/// `(name, parent name, type, error)` of every span of the tree rooted at `root`.
fn shape(rows: &[Value], root_span_id: &Value) -> Vec<(String, String, Value, Value)> {
    let tree: Vec<&Value> = rows
        .iter()
        .filter(|r| &r["root_span_id"] == root_span_id)
        .collect();
    let names: HashMap<&str, &str> = tree
        .iter()
        .map(|r| {
            (
                r["span_id"].as_str().unwrap(),
                r["span_attributes"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    let mut out: Vec<_> = tree
        .iter()
        .map(|r| {
            let parent = match &r["span_parents"] {
                Value::Array(p) => names[p[0].as_str().unwrap()].to_string(),
                _ => "-".to_string(),
            };
            (
                r["span_attributes"]["name"].as_str().unwrap().to_string(),
                parent,
                r["span_attributes"]["type"].clone(),
                r["error"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn otlp_export_stores_the_same_tree_as_the_sdk_path() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let exporter = BraintrustExporter::new(&server.url(), "k", "project_name:otel-tree").unwrap();
    let provider = provider(exporter);
    let tracer = provider.tracer("test");
    tracer.in_span("handle", |cx| {
        cx.span().set_attribute(KeyValue::new(
            "braintrust.span_attributes",
            r#"{"type":"task"}"#,
        ));
        tracer.in_span("retrieve", |cx| {
            cx.span()
                .set_attribute(KeyValue::new("braintrust.input", r#"{"q":"why"}"#));
            cx.span().set_status(Status::error("index offline"));
        });
        tracer.in_span("chat", |cx| {
            let span = cx.span();
            span.set_attribute(KeyValue::new("gen_ai.system", "openai"));
            span.set_attribute(KeyValue::new("gen_ai.request.model", "gpt-4o"));
            span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 10));
            span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", 2));
        });
    });
    provider.shutdown().unwrap();

    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project("native-tree").state(state)).unwrap();
    let root = logger.start_span(SpanArgs::new().name("handle"));
    let retrieve = root.start_span(SpanArgs::new().name("retrieve"));
    retrieve
        .log(
            Event::new()
                .input(json!({"q": "why"}))
                .error("index offline"),
        )
        .unwrap();
    retrieve.end();
    let chat = root.start_span(SpanArgs::new().name("chat").span_type(SpanType::Llm));
    chat.log(Event::new().metrics([("prompt_tokens", 10.0), ("completion_tokens", 2.0)]))
        .unwrap();
    chat.end();
    root.end();
    logger.flush().unwrap();

    let rows = server.rows();
    let otel_root = rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == "handle" && r["span_id"] != root.span_id())
        .expect("the OTel root span");
    assert!(otel_root["project_id"].is_string());
    assert_eq!(otel_root["log_id"], "g");
    assert_eq!(
        shape(&rows, &otel_root["root_span_id"]),
        shape(&rows, &json!(root.root_span_id()))
    );
    let otel_chat = rows
        .iter()
        .find(|r| {
            r["span_attributes"]["name"] == "chat" && r["root_span_id"] == otel_root["root_span_id"]
        })
        .unwrap();
    assert_eq!(otel_chat["metadata"]["model"], "gpt-4o");
    assert_eq!(otel_chat["metrics"]["prompt_tokens"], 10.0);
    assert_eq!(otel_chat["metrics"]["tokens"], 12.0);
    let start = otel_chat["metrics"]["start"].as_f64().unwrap();
    let end = otel_chat["metrics"]["end"].as_f64().unwrap();
    assert!(start > 1.6e9 && end >= start, "{start} {end}");
    let otel_retrieve = rows
        .iter()
        .find(|r| {
            r["span_attributes"]["name"] == "retrieve"
                && r["root_span_id"] == otel_root["root_span_id"]
        })
        .unwrap();
    assert_eq!(otel_retrieve["input"], json!({"q": "why"}));
}

#[test]
fn a_mixed_otel_and_braintrust_trace_is_one_tree() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project("mixed").state(state)).unwrap();
    let provider =
        provider(BraintrustExporter::new(&server.url(), "k", "project_name:mixed").unwrap());
    let tracer = provider.tracer("test");

    let bt_root = logger.start_span(SpanArgs::new().name("bt-root"));
    let otel_child = tracer.start_with_context("otel-child", &otel_context(&bt_root));
    let cx = opentelemetry::Context::new().with_span(otel_child);
    let parent = parent_from_otel(&cx, Some("project_name:mixed")).unwrap();
    let bt_grandchild = logger.start_span(SpanArgs::new().name("bt-grandchild").parent(parent));
    bt_grandchild.end();
    cx.span().end();
    bt_root.end();
    provider.shutdown().unwrap();
    logger.flush().unwrap();

    let rows = server.rows();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == n)
            .unwrap_or_else(|| panic!("no {n}: {rows:#?}"))
    };
    let (root, child, grandchild) = (
        by_name("bt-root"),
        by_name("otel-child"),
        by_name("bt-grandchild"),
    );
    assert!(root["span_parents"].is_null());
    assert_eq!(child["span_parents"], json!([root["span_id"]]));
    assert_eq!(grandchild["span_parents"], json!([child["span_id"]]));
    for r in [child, grandchild] {
        assert_eq!(r["root_span_id"], root["root_span_id"]);
        assert_eq!(r["project_id"], root["project_id"]);
    }
}

/// What the collector stand-in saw: path, headers, body.
type Seen = Arc<Mutex<Vec<(String, http::HeaderMap, Vec<u8>)>>>;

/// A stand-in OTLP collector: records every request and answers 200.
struct Collector {
    url: String,
    seen: Seen,
    _rt: tokio::runtime::Runtime,
}

fn collector() -> Collector {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
            let seen = s2.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((uri.path().to_string(), headers, body.to_vec()));
                "{}"
            }
        },
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Collector { url, seen, _rt: rt }
}

fn span_names(body: &[u8]) -> Vec<String> {
    let req = ExportTraceServiceRequest::decode(body).unwrap();
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn exporter_debug_redacts_url_credentials() {
    let e = BraintrustExporter::otlp(
        "http://user:pw-secret@127.0.0.1:9/v1/traces",
        http::HeaderMap::new(),
    )
    .unwrap();
    let shown = format!("{e:?}");
    assert!(
        !shown.contains("pw-secret") && shown.contains("***@127.0.0.1:9"),
        "{shown}"
    );
}

#[test]
fn exporter_requests_carry_endpoint_key_parent_and_protobuf() {
    let c = collector();
    let p = provider(BraintrustExporter::new(&c.url, "secret-key", "project_id:p-1").unwrap());
    p.tracer("t").in_span("collected", |_| {});
    p.shutdown().unwrap();

    // The environment form, as `BRAINTRUST_PARENT` is read by the official exporters.
    std::env::set_var("BRAINTRUST_API_URL", &c.url);
    std::env::set_var("BRAINTRUST_API_KEY", "env-key");
    std::env::set_var("BRAINTRUST_PARENT", "experiment_id:e-9");
    let p = provider(BraintrustExporter::from_env().unwrap());
    p.tracer("t").in_span("from-env", |_| {});
    p.shutdown().unwrap();

    // Any OTLP/HTTP collector.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-team", http::HeaderValue::from_static("search"));
    let p = provider(BraintrustExporter::otlp(&format!("{}/v1/traces", c.url), headers).unwrap());
    p.tracer("t").in_span("generic", |_| {});
    p.shutdown().unwrap();

    let seen = c.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let (path, h, body) = &seen[0];
    assert_eq!(path, "/otel/v1/traces");
    assert_eq!(h["authorization"], "Bearer secret-key");
    assert_eq!(h["x-bt-parent"], "project_id:p-1");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(span_names(body), ["collected"]);
    let (path, h, body) = &seen[1];
    assert_eq!(path, "/otel/v1/traces");
    assert_eq!(h["authorization"], "Bearer env-key");
    assert_eq!(h["x-bt-parent"], "experiment_id:e-9");
    assert_eq!(span_names(body), ["from-env"]);
    let (path, h, body) = &seen[2];
    assert_eq!(path, "/v1/traces");
    assert_eq!(h["x-team"], "search");
    assert!(h.get("authorization").is_none());
    assert_eq!(span_names(body), ["generic"]);
    // The key never shows in the exporter's Debug text.
    let e = BraintrustExporter::new(&c.url, "secret-key", "project_name:x").unwrap();
    assert!(!format!("{e:?}").contains("secret-key"));
}

#[test]
fn the_local_server_reads_otlp_json_too() {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "braintrust.parent", "value": {"stringValue": "project_name:json"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
             "name": "root", "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
             "attributes": [{"key": "n", "value": {"intValue": "3"}}]},
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
             "parentSpanId": "eee19b7ec3c1b174", "name": "child",
             "startTimeUnixNano": "1700000000500000000", "endTimeUnixNano": "1700000000600000000",
             "status": {"code": 2, "message": "boom"}}
        ]}]
    }]});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/otel/v1/traces", server.url());
    let status = rt.block_on(async {
        let ok = client
            .post(&url)
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        let bad = client
            .post(&url)
            .bearer_auth("k")
            .header("content-type", "application/x-protobuf")
            .body(vec![0x0a, 0x05, 0x01])
            .send()
            .await
            .unwrap()
            .status();
        (ok, bad)
    });
    assert_eq!(status.0, 200);
    assert_eq!(status.1, 400);
    let rows = server.rows();
    assert_eq!(rows.len(), 2);
    let root = rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == "root")
        .unwrap();
    let child = rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == "child")
        .unwrap();
    assert_eq!(root["root_span_id"], "5b8efff798038103d269b633813fc60c");
    assert!(root["span_parents"].is_null());
    assert_eq!(root["metadata"]["n"], 3);
    assert_eq!(root["metrics"]["start"], 1.7e9);
    assert_eq!(child["span_parents"], json!(["eee19b7ec3c1b174"]));
    assert_eq!(child["error"], "boom");
}

/// Braintrust-native spans mirrored through an OTel exporter to a second
/// server's OTLP endpoint (standing in for a team's collector): the same
/// trace ids, tree, fields, error and LLM metrics arrive there as on the
/// Braintrust backend, and the mirror counts what it exported.
#[test]
fn native_spans_are_mirrored_to_an_otlp_collector() {
    let backend = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let collector = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let exporter =
        BraintrustExporter::new(&collector.url(), "k", "project_name:collector").unwrap();
    let mirror = braintrust_integrations::otel::OtelMirror::new(exporter).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(backend.url())).unwrap();
    mirror.attach(&state);
    let logger = init_logger(LoggerOptions::new().project("mirrored").state(state)).unwrap();

    let root = logger.start_span(SpanArgs::new().name("handle").span_type(SpanType::Task));
    root.log(
        Event::new()
            .input(json!({"q": "why"}))
            .metadata(json!({"user": 7})),
    )
    .unwrap();
    let retrieve = root.start_span(SpanArgs::new().name("retrieve").span_type(SpanType::Tool));
    retrieve
        .log(Event::new().output(json!(["doc1"])).error("index offline"))
        .unwrap();
    retrieve.end();
    // Flushed between its start and its end: two rows, merged by the mirror.
    let chat = root.start_span(SpanArgs::new().name("chat").span_type(SpanType::Llm));
    chat.log(Event::new().metadata(json!({"model": "gpt-4o", "provider": "openai"})))
        .unwrap();
    logger.flush().unwrap();
    chat.log(
        Event::new()
            .output(json!("because"))
            .metrics([("prompt_tokens", 10.0), ("completion_tokens", 2.0)])
            .score("relevance", 0.5),
    )
    .unwrap();
    chat.end();
    root.log(Event::new().output(json!("done"))).unwrap();
    root.end();
    logger.flush().unwrap();
    mirror.flush(std::time::Duration::from_secs(10)).unwrap();

    let stats = mirror.stats();
    assert_eq!(
        (
            stats.exported,
            stats.export_failed,
            stats.dropped_rows,
            stats.unfinished
        ),
        (3, 0, 0, 0)
    );
    let native = backend.rows();
    let mirrored = collector.rows();
    let root_id = json!(root.root_span_id());
    assert_eq!(shape(&mirrored, &root_id), shape(&native, &root_id));
    let by_name = |rows: &[Value], name: &str| -> Value {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == name && r["root_span_id"] == root_id)
            .unwrap_or_else(|| panic!("no {name} in {rows:#?}"))
            .clone()
    };
    for name in ["handle", "retrieve", "chat"] {
        let (n, m) = (by_name(&native, name), by_name(&mirrored, name));
        assert_eq!(m["span_id"], n["span_id"], "{name}");
        for field in ["input", "output", "scores", "error"] {
            assert_eq!(m[field], n[field], "{name}.{field}");
        }
        for metric in ["start", "end", "prompt_tokens", "completion_tokens"] {
            let (a, b) = (&m["metrics"][metric], &n["metrics"][metric]);
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-5, "{name}.{metric} {a} {b}"),
                _ => assert_eq!(a, b, "{name}.{metric}"),
            }
        }
    }
    assert_eq!(by_name(&mirrored, "handle")["metadata"]["user"], 7);
    assert_eq!(by_name(&mirrored, "chat")["metadata"]["model"], "gpt-4o");
    assert_eq!(by_name(&mirrored, "chat")["metrics"]["tokens"], 12.0);

    mirror.shutdown(std::time::Duration::from_secs(5)).unwrap();
    assert!(mirror.flush(std::time::Duration::from_millis(100)).is_err());
}

/// A span that never ends is exported at shutdown without an end, and
/// counted as unfinished.
#[test]
fn the_mirror_exports_open_spans_at_shutdown_and_counts_them() {
    let backend = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let collector = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let exporter =
        BraintrustExporter::new(&collector.url(), "k", "project_name:collector").unwrap();
    let mirror = braintrust_integrations::otel::OtelMirror::new(exporter).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(backend.url())).unwrap();
    mirror.attach(&state);
    let logger = init_logger(LoggerOptions::new().project("mirror-open").state(state)).unwrap();
    let open = logger.start_span(SpanArgs::new().name("still_running"));
    logger.flush().unwrap();
    mirror.flush(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(mirror.stats().exported, 0);
    mirror.shutdown(std::time::Duration::from_secs(10)).unwrap();
    let stats = mirror.stats();
    assert_eq!((stats.exported, stats.unfinished), (1, 1));
    let rows = collector.rows();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["span_id"], json!(open.span_id()));
    drop(open);
}

/// A collector that refuses the export: the spans are counted as failed,
/// and delivery to Braintrust is not affected.
#[test]
fn a_refusing_collector_is_counted_and_does_not_affect_braintrust() {
    let backend = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let collector = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    // No Authorization header: the collector answers 401.
    let exporter = BraintrustExporter::otlp(
        &format!("{}/otel/v1/traces", collector.url()),
        http::HeaderMap::new(),
    )
    .unwrap();
    let mirror = braintrust_integrations::otel::OtelMirror::new(exporter).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(backend.url())).unwrap();
    mirror.attach(&state);
    let logger = init_logger(LoggerOptions::new().project("mirror-refused").state(state)).unwrap();
    for i in 0..5 {
        logger
            .start_span(SpanArgs::new().name(format!("s{i}")))
            .end();
    }
    logger.flush().unwrap();
    mirror.flush(std::time::Duration::from_secs(10)).unwrap();
    let stats = mirror.stats();
    assert_eq!((stats.exported, stats.export_failed), (0, 5));
    assert_eq!(backend.rows().len(), 5);
    assert!(collector.rows().is_empty());
}
