//! Deadlines and redaction beyond `/logs3`: `/version`, project
//! registration, login and the attachment calls each cut by the retry
//! budget; an API key quoted back by a backend never shown; rows logged
//! after `shutdown()` counted, not left pending. Each test runs the fault
//! backend of `common::faulty` on loopback.

mod common;

use std::time::{Duration, Instant};

use braintrust::{Config, Error, Event};
use common::faulty::{self, logger, Faulty, Mode};
use serde_json::json;

const KEY: &str = "sk-REVIEWCANARY-0123456789abcdef";

/// A request timeout much longer than the retry budget, as by default
/// (60 s and 30 s), scaled down.
fn config(url: &str, budget: Duration) -> Config {
    faulty::config(url)
        .api_key(KEY)
        .http_timeout(Duration::from_secs(4))
        .retry_budget(budget)
}

/// README, "hung backend": each request is cut by the request timeout, the
/// retry budget and the caller's deadline, whichever comes first; a plain
/// `flush()` returns after at most two retry budgets. Here login answers
/// (control plane up) but the data plane hangs, `/version` included.
#[test]
fn plain_flush_with_a_hung_data_plane_ends_within_two_retry_budgets() {
    let server = Faulty::start();
    server.route("version", Mode::Hang);
    server.logs3(Mode::Hang);
    let budget = Duration::from_millis(400);
    let (state, logger) = logger(config(&server.url(), budget));
    for i in 0..10 {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    let t = Instant::now();
    let err = logger.flush().unwrap_err();
    let waited = t.elapsed();
    assert!(
        waited < budget * 2 + Duration::from_millis(700),
        "a plain flush waited {waited:?} (budget {budget:?}): {err}"
    );
    let s = state.stats();
    assert_eq!(s.pending, 0, "{s:?}");
}

/// The same promise with an attachment: its upload calls are retried "as
/// above", so each is cut by the retry budget too, and a plain flush that
/// waits for the uploads is still bounded by two budgets.
#[test]
fn plain_flush_with_a_hung_attachment_endpoint_ends_within_two_retry_budgets() {
    let server = Faulty::start();
    server.route("attachment", Mode::Hang);
    server.route("status", Mode::Hang);
    let budget = Duration::from_millis(400);
    let (state, logger) = logger(config(&server.url(), budget));
    let a =
        braintrust::Attachment::from_bytes(b"some bytes".to_vec(), "a.txt", "text/plain").unwrap();
    logger.log(Event::new().input(json!({"doc": a}))).unwrap();
    let t = Instant::now();
    let r = logger.flush();
    let waited = t.elapsed();
    assert!(
        waited < budget * 2 + Duration::from_millis(700),
        "a plain flush waited {waited:?} (budget {budget:?}): {r:?}"
    );
    assert!(r.is_err(), "the failed upload is reported: {r:?}");
    assert_eq!(state.stats().attachments_pending, 0, "{:?}", state.stats());
    // The timeout names the call that hung.
    let said = r.unwrap_err().to_string();
    assert!(
        said.contains("POST attachment: no answer in time"),
        "{said}"
    );
}

/// `Logger::resolve_id` and `State::login` wait on the network for the
/// caller: each attempt is cut by the retry budget like every other call.
#[test]
fn resolve_id_and_login_against_a_hung_backend_are_cut_by_the_retry_budget() {
    let server = Faulty::start();
    server.route("project", Mode::Hang);
    let budget = Duration::from_millis(400);
    let (_state, lg) = logger(config(&server.url(), budget));
    let t = Instant::now();
    let r = lg.resolve_id();
    let waited = t.elapsed();
    assert!(r.is_err(), "{r:?}");
    assert!(
        waited < budget + Duration::from_millis(700),
        "resolve_id waited {waited:?} (budget {budget:?}): {r:?}"
    );

    let server = Faulty::start();
    server.login(Mode::Hang);
    let (state, _logger) = logger(config(&server.url(), budget));
    let t = Instant::now();
    let r = state.login();
    let waited = t.elapsed();
    assert!(r.is_err(), "{r:?}");
    assert!(
        waited < budget + Duration::from_millis(700),
        "login waited {waited:?} (budget {budget:?}): {r:?}"
    );
}

/// `State::login` once logged in returns the login at once: it does not
/// wait for the logger thread to finish a round against a hung `/logs3`.
#[test]
fn login_when_already_logged_in_does_not_wait_for_a_hung_round() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let budget = Duration::from_millis(1500);
    let (state, lg) = logger(config(&server.url(), budget));
    lg.log(Event::new().input("x")).unwrap();
    let t = Instant::now();
    while server.logs3_calls() == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(state.login_info().is_some());
    let t = Instant::now();
    let r = state.login();
    let waited = t.elapsed();
    assert!(r.is_ok(), "{r:?}");
    assert!(
        waited < Duration::from_millis(300),
        "login() with a known login waited {waited:?} for the round"
    );
}

/// README: "The API key never appears in `Debug`, `Display`, errors, panics,
/// stderr or payload files". A backend (or a proxy in front of it) that
/// quotes the request's `authorization` header in an error body must not
/// put the key into the error `flush()` returns.
#[test]
fn a_backend_echoing_the_authorization_header_does_not_leak_the_key() {
    for route in ["logs3", "login", "project"] {
        let server = Faulty::start();
        let echo = Mode::EchoAuth(if route == "logs3" { 400 } else { 500 });
        match route {
            "logs3" => server.logs3(echo),
            "login" => server.login(echo),
            _ => server.route(route, echo),
        }
        let (_state, logger) =
            logger(config(&server.url(), Duration::from_millis(400)).num_retries(0));
        logger.log(Event::new().input("x")).unwrap();
        let err = logger.flush().unwrap_err();
        let calls = match route {
            "logs3" => server.logs3_calls(),
            "login" => server.login_calls(),
            _ => server.calls(route),
        };
        assert!(calls > 0, "{route}: {err}");
        let shown = format!("{err} / {err:?}");
        assert!(
            !shown.contains("REVIEWCANARY"),
            "{route}: the key leaked into the flush error: {shown}"
        );
        if let Error::RowsLost(l) = &err {
            assert!(l.failed > 0, "{route}: {err}");
        }
    }
}

/// A SIGTERM handler calls `shutdown` while requests still in progress log
/// their spans: those rows cannot be sent any more, but they must not wait
/// forever uncounted and unreported ("nothing is lost silently").
#[test]
fn rows_logged_after_shutdown_are_counted_not_left_pending() {
    let server = Faulty::start();
    let (state, logger) = logger(config(&server.url(), Duration::from_millis(400)));
    logger.log(Event::new().input("before")).unwrap();
    state.shutdown(Duration::from_secs(5)).unwrap();
    for i in 0..5 {
        logger.log(Event::new().input(json!({"late": i}))).unwrap();
    }
    let r = state.flush_with_timeout(Duration::from_millis(300));
    let s = state.stats();
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        s.logged,
        s.dropped_queue_full + s.delivered_rows + s.failed_rows + s.undelivered_rows,
        "rows logged after shutdown are pending forever: {s:?}; flush said {r:?}"
    );
    assert_eq!(s.delivered_rows, 1, "{s:?}");
}

/// Rows logged after `shutdown()` are counted on the caller's thread, which
/// writes no files: the failed-payload directory stays empty.
#[test]
fn rows_logged_after_shutdown_are_not_written_on_the_callers_thread() {
    let server = Faulty::start();
    let dir = tempfile::tempdir().unwrap();
    let (state, logger) =
        logger(config(&server.url(), Duration::from_millis(400)).failed_payloads_dir(dir.path()));
    state.shutdown(Duration::from_secs(5)).unwrap();
    for i in 0..5 {
        logger.log(Event::new().input(json!({"late": i}))).unwrap();
    }
    let s = state.stats();
    // Each span's start and end arrive as separate rows once nothing merges
    // them in a queue: at least one row per span, every one accounted for.
    assert!(s.logged >= 5, "{s:?}");
    assert_eq!((s.undelivered_rows, s.dumped_rows), (s.logged, 0), "{s:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// README, "login 5xx, 429, timeouts" and "hung backend": with a hung login
/// a flush takes the background round already under way, the login pause
/// (`retry_max_delay`), then its own round: two retry budgets plus the pause.
#[test]
fn plain_flush_with_a_hung_login_ends_within_two_budgets_and_the_login_pause() {
    let server = Faulty::start();
    server.login(Mode::Hang);
    let budget = Duration::from_millis(400);
    let pause = Duration::from_millis(600);
    let (state, lg) = logger(config(&server.url(), budget).retry_max_delay(pause));
    lg.log(Event::new().input("first")).unwrap();
    let t = Instant::now();
    while server.login_calls() == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Logged while the background round waits for login.
    lg.log(Event::new().input("second")).unwrap();
    let t = Instant::now();
    let r = lg.flush();
    let waited = t.elapsed();
    assert!(r.is_err(), "{r:?}");
    assert!(
        waited < budget * 2 + pause + Duration::from_millis(700),
        "a plain flush waited {waited:?} (budget {budget:?}, pause {pause:?}): {r:?}"
    );
    assert_eq!(state.stats().pending, 0, "{:?}", state.stats());
}

/// `/version` only tunes the request size: when it never answers, the round
/// that asked spends its budget there (its rows fail with that cause), and
/// later rounds do not ask again, so a backend whose `/logs3` works is not
/// made to fail every round.
#[test]
fn an_unanswered_version_is_asked_once_and_later_rounds_deliver() {
    let server = Faulty::start();
    server.route("version", Mode::Hang);
    let budget = Duration::from_millis(400);
    let (state, lg) = logger(config(&server.url(), budget));
    lg.log(Event::new().input("first")).unwrap();
    let first = lg.flush().unwrap_err();
    assert!(first.to_string().contains("version"), "{first}");
    lg.log(Event::new().input("second")).unwrap();
    let t = Instant::now();
    lg.flush().unwrap();
    assert!(
        t.elapsed() < budget,
        "the second flush waited {:?}",
        t.elapsed()
    );
    assert_eq!(server.calls("version"), 1);
    assert_eq!(server.delivered(), 1);
    let s = state.stats();
    assert_eq!((s.failed_rows, s.delivered_rows), (1, 1), "{s:?}");
}
