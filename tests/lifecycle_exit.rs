//! Exit-time behaviour, each case a real child process (the `exit_flush`
//! example) logging to a local server.

mod common;

use std::time::Duration;

use braintrust_devserver::{DevServer, DevServerConfig};
use common::child::{run_child_at, Outcome};

fn run_child(server: &DevServer, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    run_child_at(&server.url(), args, env)
}

fn stored_work_rows(server: &DevServer) -> usize {
    server
        .rows()
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "work")
        .count()
}

fn logs3_requests(server: &DevServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path == "/logs3")
        .count()
}

#[test]
fn default_policy_delivers_every_span_at_exit() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    let out = run_child(&server, &["--spans", "5000", "--policy", "default"], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(stored_work_rows(&server), 5000, "stderr: {}", out.stderr);
}

/// The user's scenario: a slow masking API and a slow backend with 20,000
/// spans queued; the exit must not wait for them.
fn slow_backend() -> DevServer {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    server.faults().logs3_delay(Duration::from_millis(1500));
    server
}

/// In sync-flush mode nothing is sent in the background, so every `/logs3`
/// request the server sees was made by the exit path, and every span is one
/// row: the counts below are exact, not racing the background sender.
const SLOW: [&str; 5] = [
    "--spans",
    "20000",
    "--mask-delay-ms",
    "1500",
    "--sync-flush",
];

#[test]
fn disabled_by_env_exits_at_once_without_an_exit_request() {
    assert_exits_at_once(&[], &[("BRAINTRUST_DISABLE_ATEXIT_FLUSH", "true")]);
}

/// Runs the slow scenario with `extra` args and checks the exit waited for
/// nothing: under 200 ms after `main` returned, and no `/logs3` request.
fn assert_exits_at_once(extra: &[&str], env: &[(&str, &str)]) {
    let server = slow_backend();
    let mut args = SLOW.to_vec();
    args.extend(extra);
    let out = run_child(&server, &args, env);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.exit_after_main < Duration::from_millis(200),
        "took {:?}",
        out.exit_after_main
    );
    assert_eq!(logs3_requests(&server), 0);
}

#[test]
fn disabled_by_builder_option_exits_at_once() {
    assert_exits_at_once(&["--policy", "manual"], &[]);
}

#[test]
fn unregistered_at_runtime_behaves_as_disabled() {
    assert_exits_at_once(&["--policy", "unregister"], &[]);
}

#[test]
fn deadline_bounds_the_exit_and_reports_what_was_not_delivered() {
    let server = slow_backend();
    let dir = tempfile::tempdir().unwrap();
    let mut args = SLOW.to_vec();
    args.extend(["--policy", "deadline:300"]);
    let out = run_child(
        &server,
        &args,
        &[(
            "BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR",
            dir.path().to_str().unwrap(),
        )],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.exit_after_main < Duration::from_millis(300 + 400),
        "took {:?}; stderr: {}",
        out.exit_after_main,
        out.stderr
    );
    // One totals line: "braintrust: at exit: N of 20,000 rows undelivered at
    // the deadline (W written to DIR)".
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("undelivered at the deadline"))
        .collect();
    assert_eq!(lines.len(), 1, "reported in one line:\n{}", out.stderr);
    let line = lines[0];
    let number_after = |marker: &str| -> usize {
        let rest = &line[line
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} in {line:?}"))
            + marker.len()..];
        rest.split_whitespace()
            .next()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap()
    };
    let undelivered = number_after("at exit: ");
    // In sync-flush mode the logger takes nothing before the exit flush, so
    // each span is one row; every one is stored or counted, exactly.
    let total = number_after(" of ");
    assert_eq!(total, 20000, "{line}");
    assert_eq!(
        undelivered + stored_work_rows(&server),
        20000,
        "{line}: stored {}",
        stored_work_rows(&server)
    );
    let said_written = number_after("(");
    // What was still queued was written to the failed-payload directory
    // (as much as the logger thread wrote before the exit's grace ran out:
    // all 19,000 queued rows on an idle machine), and the line counts
    // exactly what was written.
    let written: usize = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
            v["rows"].as_array().unwrap().len()
        })
        .sum();
    assert!(
        written <= undelivered,
        "written {written}, undelivered {undelivered}"
    );
    assert_eq!(said_written, written, "{line}");
}

#[test]
fn flush_then_exit_sends_no_row_twice() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
    let out = run_child(
        &server,
        &["--spans", "2000", "--policy", "default", "--flush-first"],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(stored_work_rows(&server), 2000);
    // One row per span on the wire, merged before sending: nothing resent.
    let sent: usize = server
        .requests()
        .iter()
        .filter(|r| r.path == "/logs3")
        .filter_map(|r| r.json())
        .map(|b| {
            b["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["_is_merge"] != true)
                .count()
        })
        .sum();
    assert_eq!(sent, 2000);
}

#[test]
fn exit_from_every_runtime_flavour_flushes_without_deadlock() {
    for runtime in ["sync", "current", "multi"] {
        for exit in [false, true] {
            let server = DevServer::start_blocking(DevServerConfig::for_tests()).unwrap();
            let mut args = vec![
                "--spans",
                "300",
                "--policy",
                "default",
                "--runtime",
                runtime,
            ];
            if exit {
                args.push("--exit");
            }
            let out = run_child(&server, &args, &[]);
            assert!(
                out.status.success(),
                "{runtime} exit={exit}: {}",
                out.stderr
            );
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
            assert_eq!(stored_work_rows(&server), 300, "{runtime} exit={exit}");
        }
    }
}
