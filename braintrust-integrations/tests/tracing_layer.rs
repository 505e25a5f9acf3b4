//! The `tracing` layer against the local server: nesting both ways, the
//! field conventions, errors, GenAI spans and filters.
#![cfg(feature = "tracing")]

use braintrust::{init_logger, traced, Config, Logger, LoggerOptions, SpanArgs, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use braintrust_integrations::tracing_layer::BraintrustLayer;
use serde_json::{json, Value};
use tracing::instrument;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn setup(project: &str) -> (DevServer, Logger) {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger = init_logger(LoggerOptions::new().project(project).state(state)).unwrap();
    (server, logger)
}

struct Rows(Vec<Value>);

impl Rows {
    fn named(&self, name: &str) -> &Value {
        let found: Vec<_> = self
            .0
            .iter()
            .filter(|r| r["span_attributes"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "spans named {name:?} in {:#?}", self.0);
        found[0]
    }
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|r| r["span_attributes"]["name"] == name)
    }
    fn assert_child(&self, child: &str, parent: &str) {
        let (c, p) = (self.named(child), self.named(parent));
        assert_eq!(
            c["span_parents"],
            json!([p["span_id"]]),
            "{child} under {parent}"
        );
        assert_eq!(c["root_span_id"], p["root_span_id"]);
    }
}

#[derive(Debug)]
struct NotFound;
impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("user not found")
    }
}
impl std::error::Error for NotFound {}

#[instrument(fields(input = %format!("{{\"id\":{id}}}")))]
fn load_user(id: u32) -> String {
    tracing::info!(cache = "miss", "looked up user");
    normalize(format!("user-{id}"))
}

#[traced]
fn normalize(name: String) -> String {
    check(&name).unwrap_or_default();
    name.to_uppercase()
}

#[instrument(err, ret)]
fn check(name: &str) -> Result<u32, NotFound> {
    if name.ends_with('7') {
        Err(NotFound)
    } else {
        Ok(1)
    }
}

#[test]
fn tracing_spans_nest_under_braintrust_spans_and_back() {
    let (server, logger) = setup("tracing-nest");
    let subscriber = tracing_subscriber::registry().with(BraintrustLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        // Outside a Braintrust trace: not forwarded.
        tracing::info_span!("background").in_scope(|| {});
        let root = logger.start_span(SpanArgs::new().name("request"));
        root.in_scope(|| {
            load_user(3);
            load_user(7);
            let span = tracing::info_span!("typed", braintrust.type = "tool", otel.name = "renamed", output = tracing::field::Empty);
            span.record("output", "done");
            span.in_scope(|| {});
        });
        root.end();
    });
    logger.flush().unwrap();
    let rows = Rows(server.rows());
    assert!(!rows.has("background"), "{:#?}", rows.0);
    let users: Vec<&Value> = rows
        .0
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "load_user")
        .collect();
    assert_eq!(users.len(), 2);
    let request = rows.named("request");
    for u in &users {
        assert_eq!(u["span_parents"], json!([request["span_id"]]));
        assert_eq!(u["metadata"]["target"], "tracing_layer");
        assert_eq!(u["metadata"]["level"], "INFO");
        assert_eq!(u["metadata"]["events"][0]["message"], "looked up user");
        assert_eq!(u["metadata"]["events"][0]["cache"], "miss");
    }
    assert_eq!(users[0]["input"], json!({"id": 3}));
    // #[traced] inside #[instrument], and #[instrument] inside #[traced].
    let normalizes: Vec<&Value> = rows
        .0
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "normalize")
        .collect();
    let checks: Vec<&Value> = rows
        .0
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "check")
        .collect();
    assert_eq!((normalizes.len(), checks.len()), (2, 2));
    for (n, c) in normalizes.iter().zip(&checks) {
        let user = users
            .iter()
            .find(|u| n["span_parents"] == json!([u["span_id"]]))
            .expect("normalize under a load_user span");
        assert_eq!(n["root_span_id"], user["root_span_id"]);
        let n_of_c = normalizes
            .iter()
            .find(|n| c["span_parents"] == json!([n["span_id"]]))
            .expect("check under a normalize span");
        assert_eq!(n_of_c["root_span_id"], request["root_span_id"]);
    }
    let failed = checks.iter().find(|c| c["error"].is_string()).unwrap();
    assert_eq!(failed["error"], "user not found");
    let ok = checks.iter().find(|c| !c["error"].is_string()).unwrap();
    assert_eq!(ok["output"], "1");
    let typed = rows.named("renamed");
    assert_eq!(typed["span_attributes"]["type"], "tool");
    assert_eq!(typed["output"], "done");
}

/// A fake LLM client instrumented with the OpenTelemetry GenAI conventions.
#[instrument(
    name = "chat gpt-4o-mini",
    skip_all,
    fields(
        gen_ai.system = "openai",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = "gpt-4o-mini",
        gen_ai.request.temperature = 0.2,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    )
)]
fn fake_chat(system: &str, prompt: &str) -> String {
    tracing::info!(name: "gen_ai.system.message", content = system);
    tracing::info!(name: "gen_ai.user.message", content = prompt);
    let answer = format!("echo: {prompt}");
    tracing::info!(name: "gen_ai.choice", index = 0, finish_reason = "stop", content = answer.as_str());
    let span = tracing::Span::current();
    span.record("gen_ai.usage.input_tokens", 12);
    span.record("gen_ai.usage.output_tokens", 3);
    answer
}

/// The older convention: prompt and completion events holding JSON text.
#[instrument(name = "legacy chat", skip_all, fields(gen_ai.system = "openai", gen_ai.response.model = "gpt-4"))]
fn legacy_chat(prompt: &str) -> String {
    let messages = serde_json::json!([{"role": "user", "content": prompt}]).to_string();
    // The event's name as an `event.name` field (the OTel log convention).
    tracing::info!(
        event.name = "gen_ai.content.prompt",
        gen_ai.prompt = messages.as_str()
    );
    let completion = serde_json::json!([{"role": "assistant", "content": "ok"}]).to_string();
    tracing::info!(
        event.name = "gen_ai.content.completion",
        gen_ai.completion = completion.as_str()
    );
    "ok".to_string()
}

#[test]
fn genai_convention_spans_become_llm_spans() {
    let (server, logger) = setup("tracing-genai");
    let subscriber = tracing_subscriber::registry().with(BraintrustLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let root = logger.start_span(SpanArgs::new().name("ask"));
        root.in_scope(|| {
            fake_chat("be brief", "hello");
            legacy_chat("hi");
        });
        root.end();
    });
    logger.flush().unwrap();
    let rows = Rows(server.rows());
    rows.assert_child("chat gpt-4o-mini", "ask");
    let llm = rows.named("chat gpt-4o-mini");
    assert_eq!(llm["span_attributes"]["type"], "llm");
    assert_eq!(
        llm["input"],
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}
        ])
    );
    assert_eq!(
        llm["output"],
        json!([{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "echo: hello"}}])
    );
    assert_eq!(llm["metadata"]["model"], "gpt-4o-mini");
    assert_eq!(llm["metadata"]["provider"], "openai");
    assert_eq!(llm["metadata"]["temperature"], 0.2);
    assert_eq!(llm["metrics"]["prompt_tokens"], 12.0);
    assert_eq!(llm["metrics"]["completion_tokens"], 3.0);
    assert_eq!(llm["metrics"]["tokens"], 15.0);
    rows.assert_child("legacy chat", "ask");
    let legacy = rows.named("legacy chat");
    assert_eq!(legacy["span_attributes"]["type"], "llm");
    assert_eq!(legacy["input"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(
        legacy["output"],
        json!([{"role": "assistant", "content": "ok"}])
    );
    assert_eq!(legacy["metadata"]["model"], "gpt-4");
    assert!(legacy["metadata"].get("events").is_none());
}

#[test]
fn filters_drop_exactly_the_filtered_spans() {
    let (server, logger) = setup("tracing-filter");
    let layer = BraintrustLayer::new().with_targets(
        Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target("noisy", tracing::level_filters::LevelFilter::OFF)
            .with_target("chatty", tracing::Level::WARN),
    );
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let root = logger.start_span(SpanArgs::new().name("root"));
        root.in_scope(|| {
            tracing::info_span!("kept_info").in_scope(|| {
                // Events obey the filter too: only the first two are kept.
                tracing::info!(n = 1, "kept event");
                tracing::warn!(target: "chatty", n = 2, "kept chatty warning");
                tracing::debug!(n = 3, "dropped debug event");
                tracing::warn!(target: "noisy", n = 4, "dropped noisy event");
                tracing::info!(target: "chatty", n = 5, "dropped chatty info");
                // Filtered: its children hang under the nearest forwarded span.
                tracing::debug_span!("dropped_debug").in_scope(|| {
                    tracing::info_span!("kept_under_debug").in_scope(|| {});
                });
            });
            tracing::info_span!(target: "noisy", "dropped_noisy").in_scope(|| {});
            tracing::info_span!(target: "chatty", "dropped_chatty_info").in_scope(|| {});
            tracing::warn_span!(target: "chatty", "kept_chatty_warn").in_scope(|| {});
            tracing::info_span!(target: "noisy::sub", "dropped_noisy_sub").in_scope(|| {});
        });
        root.end();
    });
    logger.flush().unwrap();
    let rows = Rows(server.rows());
    let mut names: Vec<&str> = rows
        .0
        .iter()
        .map(|r| r["span_attributes"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["kept_chatty_warn", "kept_info", "kept_under_debug", "root"]
    );
    rows.assert_child("kept_info", "root");
    rows.assert_child("kept_under_debug", "kept_info");
    rows.assert_child("kept_chatty_warn", "root");
    let events = rows.named("kept_info")["metadata"]["events"]
        .as_array()
        .expect("events of kept_info")
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(events, [1, 2]);
}

#[test]
fn forward_roots_starts_traces_for_spans_outside_one() {
    let (server, logger) = setup("tracing-roots");
    let subscriber =
        tracing_subscriber::registry().with(BraintrustLayer::new().forward_roots(true));
    braintrust::set_current_logger(Some(logger.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("job").in_scope(|| {
            tracing::info_span!("step").in_scope(|| {});
        });
    });
    braintrust::set_current_logger(None);
    logger.flush().unwrap();
    let rows = Rows(server.rows());
    assert!(rows.named("job")["span_parents"].is_null());
    rows.assert_child("step", "job");
}
