//! Attachments between the official TypeScript SDK (`braintrust@3.35.0`) and
//! this one through the local server: TypeScript's upload is read back by
//! Rust, and Rust's upload is read back by TypeScript.
//!
//! Skipped, with the reason printed, unless `$BRAINTRUST_TS_DIR` is a
//! directory where `npm install braintrust@3.35.0` ran and `node` is on the
//! PATH (`.ci/run` sets it up).

mod common;

use std::process::Command;

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
    let (server, state, rust_reference) = common::rust_attachment_logged();

    let arg = json!({"rust_reference": rust_reference});
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
    common::assert_foreign_attachment(
        &server,
        &state,
        &out,
        "ts-attachment",
        b"bytes from typescript",
    );
}
