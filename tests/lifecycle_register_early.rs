//! `braintrust::register_exit_flush()` called before any logger exists is
//! remembered: the backend `init_logger` creates later flushes at exit, even
//! with `BRAINTRUST_DISABLE_ATEXIT_FLUSH=true` (the reported papercut: 0 of
//! 100 rows delivered before, 100 of 100 when called after `init_logger`).
//!
//! Each case is this test binary re-run as a child process (exit handlers
//! need a process that exits).

use std::process::Command;

use braintrust::{Config, LoggerOptions, SpanArgs, State};
use braintrust_devserver::{DevServer, DevServerConfig};

const CHILD: &str = "BT_TEST_REGISTER_EARLY_CHILD";
const SPANS: usize = 100;

/// The child: optionally registers first, then builds its logger from the
/// environment and logs `SPANS` spans. Sync-flush mode sends nothing in the
/// background, so whatever the server stores was sent by the exit flush.
fn child(register_first: bool) {
    if register_first {
        braintrust::register_exit_flush();
    }
    let state = State::new(Config::from_env().sync_flush(true)).unwrap();
    let logger = braintrust::init_logger(LoggerOptions::new().project("early").state(state))
        .expect("logger");
    for _ in 0..SPANS {
        logger.start_span(SpanArgs::new().name("work")).end();
    }
}

fn run_child(server: &DevServer, mode: &str) -> usize {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "register_before_init_logger_is_remembered",
            "--nocapture",
        ])
        .env(CHILD, mode)
        .env("BRAINTRUST_DISABLE_ATEXIT_FLUSH", "true")
        .env("BRAINTRUST_API_KEY", "test-key")
        .env("BRAINTRUST_APP_URL", server.url())
        .env("BRAINTRUST_API_URL", server.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
        .rows()
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "work")
        .count()
}

#[test]
fn register_before_init_logger_is_remembered() {
    match std::env::var(CHILD).as_deref() {
        Ok("register") => return child(true),
        Ok(_) => return child(false),
        Err(_) => {}
    }
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    assert_eq!(run_child(&server, "register"), SPANS);
    // The control: without the call, the environment's opt-out holds.
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    assert_eq!(run_child(&server, "none"), 0);
}
