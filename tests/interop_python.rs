//! Interop with the official Python SDK (`braintrust==0.48.1`) through the
//! local server: a trace started in Python continues in Rust (slug and W3C)
//! and back in Python, forming one tree; each SDK updates the other's span
//! by slug and they agree on permalinks.
//!
//! Skipped, with the reason printed, unless a Python with `braintrust`
//! importable is found: `$BRAINTRUST_PYTHON`, else `python3`. To run it:
//!
//! ```sh
//! python3 -m venv /tmp/bt && /tmp/bt/bin/pip install --no-deps braintrust==0.48.1
//! /tmp/bt/bin/pip install certifi requests chevron tqdm "exceptiongroup>=1.2.0" jsonschema \
//!     packaging sseclient-py python-slugify "typing_extensions>=4.1.0" wrapt
//! BRAINTRUST_PYTHON=/tmp/bt/bin/python cargo test -p braintrust --test interop_python -- --nocapture
//! ```

mod common;

use std::collections::HashMap;
use std::process::Command;

use braintrust::{extract, permalink, update_span, Event, LoggerOptions, SpanArgs, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use common::{config_for, row_named};
use serde_json::{json, Value};

const START: &str = r#"
import json, braintrust
logger = braintrust.init_logger(project="interop")
with logger.start_span(name="py-root") as span:
    out = {"slug": span.export(), "headers": span.inject({}),
           "span_id": span.span_id, "root_span_id": span.root_span_id, "id": span.id}
logger.flush()
print(json.dumps(out))
"#;

const CONTINUE: &str = r#"
import json, sys, braintrust
data = json.loads(sys.argv[1])
logger = braintrust.init_logger(project="interop")
with braintrust.start_span(name="py-from-rust-slug", parent=data["slug"]):
    pass
ctx = braintrust.extract_trace_context(data["headers"])
with braintrust.start_span(name="py-from-rust-w3c", parent=ctx):
    pass
braintrust.update_span(data["slug"], metadata={"updated_by": "python"})
link = braintrust.permalink(data["slug"])
logger.flush()
print(json.dumps({"permalink": link}))
"#;

fn python() -> Option<String> {
    let py = std::env::var("BRAINTRUST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import braintrust.logger"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(py)
}

fn run_python(py: &str, server: &DevServer, script: &str, arg: Option<&str>) -> Value {
    let mut cmd = Command::new(py);
    cmd.arg("-c").arg(script);
    if let Some(a) = arg {
        cmd.arg(a);
    }
    let out = cmd
        .env("BRAINTRUST_API_KEY", "local")
        .env("BRAINTRUST_APP_URL", server.url())
        .env("BRAINTRUST_API_URL", server.url())
        .env_remove("BRAINTRUST_ORG_NAME")
        .env_remove("BRAINTRUST_LEGACY_IDS")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("json from python")
}

#[test]
fn python_rust_python_is_one_trace() {
    let Some(py) = python() else {
        println!(
            "skipped: no Python with the official `braintrust` SDK (set BRAINTRUST_PYTHON; see this file's header)"
        );
        return;
    };
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();

    // Python starts the trace.
    let started = run_python(&py, &server, START, None);
    let py_slug = started["slug"].as_str().unwrap();
    let headers: HashMap<String, String> =
        serde_json::from_value(started["headers"].clone()).unwrap();

    // Rust continues it twice: from the slug and from the W3C headers.
    let state = State::new(config_for(&server)).unwrap();
    let logger =
        braintrust::init_logger(LoggerOptions::new().project("interop").state(state.clone()))
            .unwrap();
    let from_slug = logger.start_span(SpanArgs::new().name("rust-from-slug").parent(py_slug));
    let from_w3c = logger.start_span(
        SpanArgs::new()
            .name("rust-from-w3c")
            .parent(extract(&headers).expect("python's traceparent")),
    );
    from_slug.end();
    from_w3c.end();
    update_span(
        py_slug,
        Event::new().metadata(json!({"updated_by": "rust"})),
        Some(&state),
    )
    .unwrap();
    state.flush().unwrap();
    let mut back: HashMap<String, String> = HashMap::new();
    from_w3c.inject(&mut back);
    let rust_slug = from_slug.export();

    // Python continues from Rust, updates Rust's span and links to it.
    let done = run_python(
        &py,
        &server,
        CONTINUE,
        Some(&json!({"slug": rust_slug, "headers": back}).to_string()),
    );
    assert_eq!(done["permalink"], permalink(&rust_slug, Some(&state)));

    let trace = started["root_span_id"].as_str().unwrap();
    let root_span = started["span_id"].as_str().unwrap();
    let expect = [
        ("py-root", Value::Null),
        ("rust-from-slug", json!([root_span])),
        ("rust-from-w3c", json!([root_span])),
        ("py-from-rust-slug", json!([from_slug.span_id()])),
        ("py-from-rust-w3c", json!([from_w3c.span_id()])),
    ];
    let project = row_named(&server, "py-root")["project_id"].clone();
    for (name, parents) in expect {
        let row = row_named(&server, name);
        assert_eq!(row["root_span_id"], trace, "{name}");
        assert_eq!(row["span_parents"], parents, "{name}");
        assert_eq!(row["project_id"], project, "{name}");
    }
    assert_eq!(server.rows().len(), 5, "{}", server.render_all_traces());
    assert_eq!(
        row_named(&server, "py-root")["metadata"],
        json!({"updated_by": "rust"})
    );
    assert_eq!(
        row_named(&server, "rust-from-slug")["metadata"],
        json!({"updated_by": "python"})
    );
    println!("{}", server.trace_tree(trace));
}

const PY_ATTACH: &str = r#"
import json, sys, braintrust
from braintrust import Attachment, ReadonlyAttachment
data = json.loads(sys.argv[1])
logger = braintrust.init_logger(project="interop-attachments")
att = Attachment(data=b"bytes from python", filename="py.txt", content_type="text/plain")
with logger.start_span(name="py-attachment", input={"doc": att}):
    pass
logger.flush()
ours = ReadonlyAttachment(data["rust_reference"]).data
print(json.dumps({"reference": att.reference, "rust_bytes": ours.decode()}))
"#;

/// Attachments cross both ways through the local server: Python's upload is
/// read back by Rust, and Rust's upload is read back by Python.
#[test]
fn attachments_cross_between_python_and_rust() {
    let Some(py) = python() else {
        println!("skipped: no Python with the official `braintrust` SDK (set BRAINTRUST_PYTHON)");
        return;
    };
    let (server, state, rust_reference) = common::rust_attachment_logged();

    let out = run_python(
        &py,
        &server,
        PY_ATTACH,
        Some(&json!({"rust_reference": rust_reference}).to_string()),
    );
    common::assert_foreign_attachment(&server, &state, &out, "py-attachment", b"bytes from python");
}
