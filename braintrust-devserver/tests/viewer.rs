//! The viewer in headless Chromium (Debian's `chromium` package): a metadata search on the
//! trace list, a deep link to a span, the tree expanded to it, and the span's error, image and
//! token metrics on screen. Screenshots go to `$BT_ARTIFACTS/viewer-screenshots/` (`.ci/run` keeps
//! them outside its temporary clone), else `$CARGO_TARGET_TMPDIR/viewer-screenshots/`.
//!
//! Skipped, with a message, when no `chromium` is found (`$CHROMIUM`, else `chromium` on `PATH`).

use std::path::{Path, PathBuf};
use std::process::Command;

use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::{json, Value};

/// The browser: `$CHROMIUM`, else the first `chromium` on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}
/// A 1×1 PNG.
const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn chromium(browser: &Path, args: &[&str], profile: &Path) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn artifacts() -> PathBuf {
    let base = std::env::var_os("BT_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join("viewer-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn store_traces(server: &DevServer) {
    let ids = json!({"project_id": "p", "log_id": "g"});
    let span = |id: &str, root: &str, parents: Value, name: &str, ty: &str, extra: Value| {
        let mut row = ids.clone();
        let m = row.as_object_mut().unwrap();
        m.extend(
            json!({"id": id, "span_id": id, "root_span_id": root, "span_parents": parents,
                   "span_attributes": {"name": name, "type": ty}})
            .as_object()
            .unwrap()
            .clone(),
        );
        m.extend(extra.as_object().unwrap().clone());
        row
    };
    let rows = json!([
        span(
            "a-root",
            "trace-a",
            Value::Null,
            "answer_question",
            "task",
            json!({"input": "What is in this picture?", "metadata": {"user": "alice"},
                    "metrics": {"start": 1000.0, "end": 1002.0}})
        ),
        span(
            "a-llm",
            "trace-a",
            json!(["a-root"]),
            "describe_image",
            "llm",
            json!({"input": [{"role": "user", "content": [
                        {"type": "text", "text": "Describe the image"},
                        {"type": "image_url", "image_url": {"url": PNG}}]}],
                    "output": [{"index": 0, "message": {"role": "assistant", "content": "A single pixel."}}],
                    "metadata": {"model": "gpt-4o-mini"},
                    "metrics": {"start": 1000.1, "end": 1001.5, "prompt_tokens": 12,
                                "completion_tokens": 7, "time_to_first_token": 0.25}})
        ),
        span(
            "a-tool",
            "trace-a",
            json!(["a-root"]),
            "lookup_catalog",
            "tool",
            json!({"error": "lookup failed: catalog timeout", "metrics": {"start": 1000.2, "end": 1001.0}})
        ),
        span(
            "a-deep",
            "trace-a",
            json!(["a-tool", "a-llm"]),
            "parse_catalog",
            "function",
            json!({"metrics": {"start": 1000.3, "end": 1000.6}})
        ),
        span(
            "b-root",
            "trace-b",
            Value::Null,
            "unrelated_request",
            "task",
            json!({"input": "hello", "metadata": {"user": "bob"},
                    "metrics": {"start": 1005.0, "end": 1005.5}})
        ),
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{}/logs3", server.url()))
            .bearer_auth("k")
            .json(&json!({"rows": rows, "api_version": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    });
}

#[test]
fn viewer_in_headless_chromium() {
    let Some(browser) = find_chromium() else {
        eprintln!("skipping viewer_in_headless_chromium: chromium is not installed (Debian: apt-get install chromium)");
        return;
    };
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    store_traces(&server);
    let profile = tempfile::tempdir().unwrap();
    let shots = artifacts();
    let url = server.url();

    // The list, searched by metadata.
    let list = chromium(
        &browser,
        &["--dump-dom", &format!("{url}/?metadata.user=alice")],
        profile.path(),
    );
    assert!(list.contains("data-ready=\"1\""), "page finished: {list}");
    assert!(list.contains(">answer_question<"), "{list}");
    assert!(
        !list.contains("unrelated_request"),
        "bob's trace filtered out"
    );
    assert!(list.contains("What is in this picture?"), "input preview");
    assert!(list.contains("19 tok"), "token total");
    assert!(list.contains("1 error"), "error count");

    // A deep link to the LLM span: its chat view, image and tokens.
    let deep = format!("{url}/trace/trace-a?span=a-llm");
    let page = chromium(&browser, &["--dump-dom", &deep], profile.path());
    assert!(page.contains("data-ready=\"1\""), "{page}");
    for name in ["answer_question", "describe_image", "lookup_catalog"] {
        assert!(page.contains(&format!(">{name}<")), "span {name} listed");
    }
    assert!(
        page.contains("class=\"wf-row sel\" data-span=\"a-llm\""),
        "span selected"
    );
    assert!(
        page.contains(&format!("<img class=\"inline\" src=\"{PNG}\"")),
        "image inline"
    );
    assert!(page.contains("A single pixel."), "assistant message");
    assert!(page.contains("gpt-4o-mini"));
    assert!(page.contains("<span>Prompt tokens</span><span>12</span>"));
    assert!(page.contains("<span>Time to first token</span><span>250.0 ms</span>"));
    // Below the root, spans with children start collapsed unless on the way to the selection.
    assert!(!page.contains("data-span=\"a-deep\""));

    // Linking the deep span expands the tree to it and shows both its parents and the error of
    // one of them is marked in the tree.
    let page = chromium(
        &browser,
        &["--dump-dom", &format!("{url}/trace/trace-a?span=a-deep")],
        profile.path(),
    );
    assert!(
        page.contains("class=\"wf-row sel\" data-span=\"a-deep\""),
        "{page}"
    );
    assert!(page.contains(">Parents<"));
    assert!(page.contains(">lookup_catalog</a>, <a") && page.contains(">describe_image</a>"));
    assert!(page.contains("badge err"));

    let page = chromium(
        &browser,
        &["--dump-dom", &format!("{url}/trace/trace-a?span=a-tool")],
        profile.path(),
    );
    assert!(page.contains("lookup failed: catalog timeout"));

    for (file, target) in [
        ("trace-list.png", format!("{url}/?metadata.user=alice")),
        ("trace-llm-span.png", deep),
    ] {
        let path = shots.join(file);
        chromium(
            &browser,
            &[
                "--window-size=1400,900",
                "--hide-scrollbars",
                &format!("--screenshot={}", path.display()),
                &target,
            ],
            profile.path(),
        );
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 5_000,
            "screenshot {} written ({size} bytes)",
            path.display()
        );
        eprintln!("screenshot: {}", path.display());
    }
}
