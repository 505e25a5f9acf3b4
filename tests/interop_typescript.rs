//! Attachments between the official TypeScript SDK (`braintrust@3.35.0`) and
//! this one through the local server: TypeScript's upload is read back by
//! Rust, and Rust's upload is read back by TypeScript.
//!
//! Skipped, with the reason printed, unless `$BRAINTRUST_TS_DIR` is a
//! directory where `npm install braintrust@3.35.0` ran and `node` is on the
//! PATH (`.ci/run` sets it up).

mod common;

use std::process::Command;

use braintrust::{Event, LoggerOptions, SpanArgs, State};
use braintrust_devserver::{DevServer, DevServerConfig};
use common::{config_for, row_named};
use serde_json::{json, Value};

const TS_ATTACH: &str = r#"
const bt = require("braintrust");
(async () => {
  const data = JSON.parse(process.argv[1]);
  const logger = bt.initLogger({ projectName: "interop-attachments" });
  const att = new bt.Attachment({
    data: new Blob(["bytes from typescript"]), filename: "ts.txt", contentType: "text/plain",
  });
  const span = logger.startSpan({ name: "ts-attachment", event: { input: { doc: att } } });
  span.end();
  await logger.flush();
  const ours = await new bt.ReadonlyAttachment(data.rust_reference).data();
  console.log(JSON.stringify({ reference: att.reference, rust_bytes: await ours.text() }));
})().catch(e => { console.error(e); process.exit(1); });
"#;

fn ts_dir() -> Option<String> {
    let dir = std::env::var("BRAINTRUST_TS_DIR").ok()?;
    let installed = std::path::Path::new(&dir)
        .join("node_modules/braintrust")
        .is_dir();
    let node = Command::new("node").arg("--version").output().is_ok();
    (installed && node).then_some(dir)
}

#[test]
fn attachments_cross_between_typescript_and_rust() {
    let Some(dir) = ts_dir() else {
        println!("skipped: no TypeScript SDK (set BRAINTRUST_TS_DIR; see this file's header)");
        return;
    };
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(config_for(&server)).unwrap();
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("interop-attachments")
            .state(state.clone()),
    )
    .unwrap();
    let ours =
        braintrust::Attachment::from_bytes(b"bytes from rust".to_vec(), "rust.txt", "text/plain")
            .unwrap();
    let span = logger.start_span(SpanArgs::new().name("rust-attachment"));
    span.log(Event::new().input(json!({"doc": ours.clone()})))
        .unwrap();
    span.end();
    state.flush().unwrap();

    let arg = json!({"rust_reference": serde_json::to_value(ours.reference()).unwrap()});
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("-e")
        .arg(TS_ATTACH)
        .arg(arg.to_string())
        .env("BRAINTRUST_API_KEY", "local")
        .env("BRAINTRUST_APP_URL", server.url())
        .env("BRAINTRUST_API_URL", server.url())
        .env_remove("BRAINTRUST_ORG_NAME")
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let out: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("json from node");
    assert_eq!(out["rust_bytes"], "bytes from rust");
    let theirs: braintrust::AttachmentReference =
        serde_json::from_value(out["reference"].clone()).expect("typescript's reference");
    let stored = state.read_attachment(&theirs).unwrap();
    assert_eq!(stored.status, braintrust::UploadStatus::Done);
    assert_eq!(stored.data.as_deref(), Some(&b"bytes from typescript"[..]));
    let row = row_named(&server, "ts-attachment");
    assert_eq!(row["input"]["doc"], out["reference"]);
}
