//! `braintrust-devserver import` / `export` as a user runs them, checked through the server.

use std::io::Write;
use std::process::{Command, Stdio};

use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_braintrust-devserver");

/// The guide's two-question example of generated spans.
const GUIDE: &str = r#"{"input": "What is 1+1?", "output": "The sum of 1+1 is 2.", "expected": "2.", "metadata": {"template": "Answer the following question: %s"}, "children": [{"input": [{"role": "user", "content": "Answer the following question: What is 1+1?"}], "output": {"content": "The sum of 1+1 is 2.", "role": "assistant"}, "metadata": {"model": "gpt-3.5-turbo", "params": {"max_tokens": 32}}, "metrics": {"start": 1704916642.978631, "end": 1704916643.450115, "tokens": 30, "prompt_tokens": 19, "completion_tokens": 11}, "name": "OpenAI Chat Completion"}], "name": "run_input"}
{"input": "Which is larger, the sun or the moon?", "output": "The sun is larger than the moon.", "expected": "The sun.", "metadata": {"template": "Answer the following question: %s"}, "children": [{"input": [{"role": "user", "content": "Answer the following question: Which is larger, the sun or the moon?"}], "output": {"content": "The sun is larger than the moon.", "role": "assistant"}, "metadata": {"model": "gpt-3.5-turbo", "params": {"max_tokens": 32}}, "metrics": {"start": 1704916643.450675, "end": 1704916643.839096, "tokens": 30, "prompt_tokens": 22, "completion_tokens": 8}, "name": "OpenAI Chat Completion"}], "name": "run_input"}
"#;

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn guide_example_imports_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.sqlite");
    let db = db.to_str().unwrap();
    let (ok, _, err) = run(
        &[
            "import",
            "--db",
            db,
            "--project",
            "demo",
            "--experiment",
            "qa",
        ],
        GUIDE,
    );
    assert!(ok, "{err}");
    assert!(err.contains("imported 2 traces (4 spans)"), "{err}");

    let server = DevServer::start(DevServerConfig::for_tests().db_path(Some(db.into())))
        .await
        .unwrap();
    let experiment = server.experiments()[0].clone();
    assert_eq!(experiment["name"], "qa");
    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!(
            "{}/dev/api/traces?experiment_id={}",
            server.url(),
            experiment["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let traces = list["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2);
    assert_eq!(
        traces[0]["input_preview"],
        "Which is larger, the sun or the moon?"
    );
    assert_eq!(traces[0]["tokens"], 30);
    let root = traces[1]["root_span_id"].as_str().unwrap();
    let trace: Value = http
        .get(format!("{}/dev/api/traces/{root}", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let top = &trace["tree"][0]["span"];
    assert_eq!(top["span_attributes"]["name"], "run_input");
    assert_eq!(top["expected"], "2.");
    let llm = &trace["tree"][0]["children"][0]["span"];
    assert_eq!(llm["span_attributes"]["name"], "OpenAI Chat Completion");
    assert_eq!(llm["span_attributes"]["type"], "llm");
    assert_eq!(llm["metrics"]["start"], 1704916642.978631);
    assert_eq!(llm["metrics"]["end"], 1704916643.450115);
    assert_eq!(llm["metrics"]["prompt_tokens"], 19);
    assert_eq!(llm["span_parents"][0], top["span_id"]);
    server.shutdown();

    let (ok, exported, err) = run(
        &[
            "export",
            "--db",
            db,
            "--project",
            "demo",
            "--experiment",
            "qa",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(exported.lines().count(), 2);
    let (ok, _, err) = run(&["import", "--db", db, "--project", "copy"], &exported);
    assert!(ok, "{err}");
    let (ok, again, err) = run(&["export", "--db", db, "--project", "copy"], "");
    assert!(ok, "{err}");
    assert_eq!(again, exported, "export → import → export is stable");
    let first: Value = serde_json::from_str(exported.lines().next().unwrap()).unwrap();
    assert_eq!(first["children"][0]["metrics"]["completion_tokens"], 11);
}

#[test]
fn bad_lines_are_refused_with_their_number() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.sqlite");
    let db = db.to_str().unwrap();
    let input = "{\"name\": \"ok\"}\n\n{\"name\": \"x\", \"children\": 3}\n";
    let (ok, _, err) = run(&["import", "--db", db], input);
    assert!(!ok);
    assert!(
        err.contains("line 3: root: 'children' must be an array"),
        "{err}"
    );
    let (ok, _, err) = run(&["import", "--db", db], "{\"name\": \"ok\"}\nnot json\n");
    assert!(!ok);
    assert!(err.contains("line 2: invalid JSON"), "{err}");
    let (ok, out, err) = run(&["export", "--db", db, "--project", "imported"], "");
    assert!(!ok && out.is_empty(), "nothing was imported: {err}");
    assert!(err.contains("project imported not found"), "{err}");
}
