//! The official Python (`braintrust==0.48.1`) and TypeScript (`braintrust@3.35.0`) SDKs as real
//! clients: each logs a nested trace, updates a span by its export, resumes the trace from the
//! export in a new span, and the stored tree is checked.
//!
//! Each test is skipped, with the reason printed, when its SDK is not installed:
//! - Python: `$BRAINTRUST_PYTHON` (else `python3`) must import `braintrust`.
//! - TypeScript: `$BRAINTRUST_TS_DIR` must be a directory where `npm install braintrust@3.35.0`
//!   ran (`node` on the PATH).

use std::path::Path;
use std::process::Command;

use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::{json, Value};

const PYTHON: &str = r#"
import json, braintrust
logger = braintrust.init_logger(project="official-py")
with logger.start_span(name="root", input={"q": "hi"}) as root:
    with root.start_span(name="child", type="llm") as child:
        child.log(output="x", metrics={"prompt_tokens": 3})
    exported = root.export()
logger.flush()
braintrust.update_span(exported, metadata={"updated": True})
with braintrust.start_span(name="resumed", parent=exported) as later:
    later.log(output="later")
logger.flush()
print(json.dumps({"root_span_id": root.root_span_id}))
"#;

const TYPESCRIPT: &str = r#"
const bt = require("braintrust");
(async () => {
  const logger = bt.initLogger({ projectName: "official-ts" });
  const root = logger.startSpan({ name: "root", event: { input: { q: "hi" } } });
  const child = root.startSpan({ name: "child", type: "llm" });
  child.log({ output: "x", metrics: { prompt_tokens: 3 } });
  child.end();
  const exported = await root.export();
  root.end();
  await logger.flush();
  bt.updateSpan({ exported, metadata: { updated: true } });
  const later = bt.startSpan({ name: "resumed", parent: exported });
  later.log({ output: "later" });
  later.end();
  await logger.flush();
  await bt.flush();
  console.log(JSON.stringify({ root_span_id: root.rootSpanId }));
})().catch(e => { console.error(e); process.exit(1); });
"#;

fn python() -> Option<String> {
    let py = std::env::var("BRAINTRUST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import braintrust.logger"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

fn ts_dir() -> Option<String> {
    let dir = std::env::var("BRAINTRUST_TS_DIR").ok()?;
    let installed = Path::new(&dir)
        .join("node_modules/braintrust/package.json")
        .exists();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (installed && node).then_some(dir)
}

/// Runs an SDK script against the server; returns the root_span_id it printed.
fn run(server: &DevServer, mut cmd: Command) -> String {
    let out = cmd
        .env("BRAINTRUST_API_KEY", "sdk-key")
        .env("BRAINTRUST_APP_URL", server.url())
        .env("BRAINTRUST_API_URL", server.url())
        .output()
        .expect("SDK script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    last["root_span_id"].as_str().unwrap().to_string()
}

fn check_tree(server: &DevServer, root_span_id: &str) {
    let rows: Vec<Value> = server
        .rows()
        .into_iter()
        .filter(|r| r["root_span_id"] == root_span_id)
        .collect();
    let tree = server.trace_tree(root_span_id);
    let named = |n: &str| {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == n)
            .unwrap_or_else(|| panic!("no span {n} in\n{tree}"))
    };
    assert_eq!(rows.len(), 3, "{tree}");
    let (root, child, later) = (named("root"), named("child"), named("resumed"));
    assert!(root["span_parents"].is_null() || root["span_parents"] == json!([]));
    assert_eq!(root["input"], json!({"q": "hi"}));
    assert_eq!(
        root["metadata"],
        json!({"updated": true}),
        "update merged in"
    );
    assert!(
        root["metrics"]["end"].is_number(),
        "the update kept the end time"
    );
    assert_eq!(child["span_parents"], json!([root["span_id"].clone()]));
    assert_eq!(child["span_attributes"]["type"], "llm");
    assert_eq!(child["output"], "x");
    assert_eq!(child["metrics"]["prompt_tokens"], 3);
    assert_eq!(later["span_parents"], json!([root["span_id"].clone()]));
    assert_eq!(later["output"], "later");
    for r in &rows {
        assert!(r["_xact_id"].is_string());
        assert!(r.get("_is_merge").is_none());
    }
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].starts_with("root"), "{tree}");
    assert!(lines[1..].iter().all(|l| l.starts_with("  ")), "{tree}");
}

#[tokio::test]
async fn python_sdk_as_a_client() {
    let Some(py) = python() else {
        eprintln!(
            "skipping python_sdk_as_a_client: no Python with `braintrust` (set BRAINTRUST_PYTHON)"
        );
        return;
    };
    let server = DevServer::start(DevServerConfig::default()).await.unwrap();
    let mut cmd = Command::new(py);
    cmd.args(["-c", PYTHON]);
    let root = tokio::task::spawn_blocking({
        let server = server.clone();
        move || run(&server, cmd)
    })
    .await
    .unwrap();
    check_tree(&server, &root);
}

#[tokio::test]
async fn typescript_sdk_as_a_client() {
    let Some(dir) = ts_dir() else {
        eprintln!(
            "skipping typescript_sdk_as_a_client: set BRAINTRUST_TS_DIR to a directory with \
             node_modules/braintrust (npm install braintrust@3.35.0) and put node on the PATH"
        );
        return;
    };
    let server = DevServer::start(DevServerConfig::default()).await.unwrap();
    let mut cmd = Command::new("node");
    cmd.current_dir(dir).args(["-e", TYPESCRIPT]);
    let root = tokio::task::spawn_blocking({
        let server = server.clone();
        move || run(&server, cmd)
    })
    .await
    .unwrap();
    check_tree(&server, &root);
}
