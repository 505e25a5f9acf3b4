//! The delivery pipeline against faulty backends on loopback: hung,
//! refusing, failing and size-limited. Each test bounds its own time with
//! short timeouts and asserts what a user would check: how long the
//! application waited, which rows arrived, what `flush()` and `stats()`
//! said, and what stderr said.

mod common;

use std::time::{Duration, Instant};

use braintrust::{Error, Event, Logger};
use common::child::run_child_at;
use common::faulty::{assert_accounted, config, logger, refusing_url, Faulty, Mode};
use serde_json::json;

/// Logs `n` rows and returns how many rows the pipeline counted for them:
/// `n`, or a few more when the logger thread took a row's start before its
/// end (a second row; see the README's reliability section).
fn log_rows(logger: &Logger, n: usize) -> u64 {
    let before = logger.state().stats().logged;
    for i in 0..n {
        logger.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    logger.state().stats().logged - before
}

#[test]
fn hung_logs3_flush_with_timeout_returns_on_time_and_counts_every_row() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let (state, logger) = logger(config(&server.url()).failed_payloads_dir(dir.path()));
    let n = log_rows(&logger, 100);
    let t = Instant::now();
    let err = state
        .flush_with_timeout(Duration::from_millis(500))
        .unwrap_err();
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_millis(500 + 400),
        "waited {waited:?}"
    );
    match &err {
        Error::Timeout {
            waited_ms,
            undelivered,
            lost,
        } => {
            assert!(*waited_ms >= 500, "{err}");
            assert_eq!(*undelivered, n, "{err}");
            assert_eq!(lost.undelivered, n, "{err}");
            assert_eq!(lost.dumped, n, "{err}");
        }
        other => panic!("{other:?}"),
    }
    let s = state.stats();
    assert_eq!((s.undelivered_rows, s.pending, s.dumped_rows), (n, 0, n));
    assert_accounted(s);
    // The dump holds exactly the rows it says, in private files.
    let mut rows = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        rows += v["rows"].as_array().unwrap().len();
    }
    assert_eq!(rows as u64, n);
}

#[test]
fn plain_flush_against_a_hung_logs3_ends_within_the_round_budget() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    // 4,000 rows are 40 batches, 4 in flight at a time: with a budget per
    // batch the flush would take ten budgets.
    let budget = Duration::from_millis(800);
    let (state, logger) = logger(config(&server.url()).retry_budget(budget));
    let n = log_rows(&logger, 4_000);
    let t = Instant::now();
    let err = logger.flush().unwrap_err();
    let waited = t.elapsed();
    // At most the round already in progress plus the flush's own round.
    assert!(
        waited < budget * 2 + Duration::from_millis(700),
        "waited {waited:?}"
    );
    let msg = err.to_string();
    assert!(matches!(&err, Error::RowsLost(l) if l.failed == n), "{msg}");
    assert!(msg.contains("no answer within"), "{msg}");
    let s = state.stats();
    assert_eq!((s.failed_rows, s.pending), (n, 0));
    assert_accounted(s);
    assert!(
        server.logs3_calls() <= 8,
        "{} requests",
        server.logs3_calls()
    );
}

#[test]
fn async_flush_with_timeout_is_bounded_on_the_callers_side() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let (state, logger) = logger(config(&server.url()));
    let n = log_rows(&logger, 10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let r = rt.block_on(state.flush_with_timeout_async(Duration::from_millis(300)));
    assert!(
        t.elapsed() < Duration::from_millis(300 + 400),
        "{:?}",
        t.elapsed()
    );
    match &r {
        Err(Error::Timeout {
            undelivered,
            waited_ms,
            ..
        }) => assert!(*undelivered == n && (300..700).contains(waited_ms), "{r:?}"),
        other => panic!("{other:?}"),
    }
    // shutdown_async is bounded the same way.
    let n = log_rows(&logger, 5);
    let t = Instant::now();
    let r = rt.block_on(state.shutdown_async(Duration::from_millis(200)));
    assert!(
        t.elapsed() < Duration::from_millis(200 + 400),
        "{:?}",
        t.elapsed()
    );
    assert!(
        matches!(r, Err(Error::Timeout { undelivered, .. }) if undelivered == n),
        "{r:?}"
    );
    assert_accounted(state.stats());
}

#[test]
fn login_503_then_200_delivers_everything() {
    let server = Faulty::start();
    server.login(Mode::StatusTimes(503, 2));
    let (state, logger) = logger(config(&server.url()).num_retries(4));
    let n = log_rows(&logger, 300);
    logger.flush().unwrap();
    assert_eq!(server.delivered(), 300);
    assert_eq!(server.login_calls(), 3);
    let s = state.stats();
    assert_eq!((s.delivered_rows, s.failed_rows, s.pending), (n, 0, 0));
}

#[test]
fn rows_logged_while_login_is_paused_wait_for_the_pause_to_end() {
    let server = Faulty::start();
    server.login(Mode::Status(503, None));
    let pause = Duration::from_millis(400);
    let (state, logger) = logger(
        config(&server.url())
            .num_retries(0)
            .retry_max_delay(pause)
            .sync_flush(true),
    );
    log_rows(&logger, 10);
    // The round's rows fail once login has spent its tries ...
    match logger.flush() {
        Err(Error::RowsLost(l)) => assert_eq!(l.failed, 10),
        other => panic!("{other:?}"),
    }
    // ... but rows logged during the pause are kept: a flush shorter than
    // the pause gives them up at its deadline (not failed) ...
    log_rows(&logger, 5);
    match state.flush_with_timeout(Duration::from_millis(100)) {
        Err(Error::Timeout { undelivered, .. }) => assert_eq!(undelivered, 5),
        other => panic!("{other:?}"),
    }
    // ... and a flush waits for the pause to end, then logs in again.
    server.login(Mode::Ok);
    log_rows(&logger, 20);
    logger.flush().unwrap();
    assert_eq!(server.delivered(), 20);
    assert_eq!(server.login_calls(), 2);
    let s = state.stats();
    assert_eq!(
        (
            s.failed_rows,
            s.undelivered_rows,
            s.delivered_rows,
            s.pending
        ),
        (10, 5, 20, 0)
    );
    assert_accounted(s);
}

#[test]
fn login_401_is_an_invalid_key_and_is_tried_once() {
    let server = Faulty::start();
    server.login(Mode::Status(401, None));
    let (state, logger) = logger(config(&server.url()).num_retries(4));
    let n = log_rows(&logger, 50);
    let err = logger.flush().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, Error::RowsLost(l) if l.failed == n), "{msg}");
    assert!(msg.contains("Invalid API key"), "{msg}");
    assert!(!msg.contains("test-key"), "the key leaked: {msg}");
    assert_eq!(server.login_calls(), 1, "401 is permanent");
    assert_accounted(state.stats());
}

#[test]
fn login_404_names_the_wrong_url() {
    let server = Faulty::start();
    server.login(Mode::Status(404, None));
    let (_state, logger) = logger(config(&server.url()));
    log_rows(&logger, 3);
    let msg = logger.flush().unwrap_err().to_string();
    assert!(msg.contains("404") && msg.contains(&server.url()), "{msg}");
    assert!(msg.contains("BRAINTRUST_APP_URL"), "{msg}");
    assert_eq!(server.login_calls(), 1);
}

#[test]
fn refusing_backend_fails_fast_with_the_real_number_of_tries() {
    let url = refusing_url();
    let (state, logger) = logger(config(&url).num_retries(2));
    let n = log_rows(&logger, 2_000);
    let t = Instant::now();
    let err = logger.flush().unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(matches!(&err, Error::RowsLost(l) if l.failed == n), "{msg}");
    assert!(msg.contains("after 3 tries"), "{msg}");
    assert_accounted(state.stats());
}

#[test]
fn a_413_splits_the_batch_down_to_single_rows() {
    let server = Faulty::start();
    // Each row is ~300 bytes: a body over 1 KB is refused.
    server.logs3(Mode::TooLargeOver(1_000));
    let dir = tempfile::tempdir().unwrap();
    let (state, logger) = logger(config(&server.url()).failed_payloads_dir(dir.path()));
    for i in 0..40 {
        logger
            .log(Event::new().input(json!({"i": i, "pad": "x".repeat(100)})))
            .unwrap();
    }
    // And one row that no split can make small enough.
    logger
        .log(Event::new().input(json!({"big": "y".repeat(5_000)})))
        .unwrap();
    let err = logger.flush().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::RowsLost(l) if l.failed == 1 && l.dumped == 1),
        "{msg}"
    );
    assert!(msg.contains("413") && msg.contains("single row"), "{msg}");
    assert_eq!(server.delivered(), 40);
    let s = state.stats();
    assert_eq!((s.failed_rows, s.dumped_rows, s.pending), (1, 1, 0));
    assert_eq!(s.delivered_rows + s.failed_rows, s.logged);
}

#[test]
fn request_bodies_never_exceed_the_configured_limit() {
    let server = Faulty::start();
    let (state, logger) = logger(config(&server.url()).max_request_size(20_000));
    log_rows(&logger, 500);
    logger.log(Event::new().input("z".repeat(100_000))).unwrap();
    let err = logger.flush().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("exceeds the request size limit of 20000 bytes"),
        "{msg}"
    );
    assert!(
        server.largest_body() <= 20_000,
        "sent {}",
        server.largest_body()
    );
    assert_eq!(server.delivered(), 500);
    assert_eq!(state.stats().failed_rows, 1);
}

#[test]
fn a_huge_retry_after_fails_at_once_instead_of_blocking() {
    let server = Faulty::start();
    server.logs3(Mode::Status(503, Some("100000".into())));
    let (_state, logger) = logger(config(&server.url()).retry_budget(Duration::from_secs(5)));
    log_rows(&logger, 10);
    let t = Instant::now();
    let msg = logger.flush().unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(msg.contains("beyond the retry budget"), "{msg}");
    assert!(msg.contains("after 1 try"), "{msg}");
}

/// A `Retry-After` that fits the budget is waited; one that no longer fits
/// what is left of it ends the tries at once, and the message says why.
#[test]
fn a_retry_after_past_what_is_left_of_the_budget_says_so() {
    let server = Faulty::start();
    server.logs3(Mode::Status(503, Some("0.6".into())));
    let (_state, logger) = logger(
        config(&server.url())
            .num_retries(5)
            .retry_budget(Duration::from_secs(1)),
    );
    log_rows(&logger, 3);
    let t = Instant::now();
    let msg = logger.flush().unwrap_err().to_string();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        msg.contains("retry after 0.6 s, beyond what is left of the retry budget"),
        "{msg}"
    );
    assert!(msg.contains("after 2 tries"), "{msg}");
    assert_eq!(server.logs3_calls(), 2);
}

#[test]
fn transient_503s_are_retried_and_delivered_once() {
    let server = Faulty::start();
    server.logs3(Mode::StatusTimes(503, 2));
    // Sync flush: one batch, so the request count is the try count.
    let (state, logger) = logger(config(&server.url()).num_retries(3).sync_flush(true));
    log_rows(&logger, 100);
    logger.flush().unwrap();
    assert_eq!(server.delivered(), 100);
    assert_eq!(server.logs3_calls(), 3);
    let s = state.stats();
    assert_eq!((s.delivered_rows, s.pending), (100, 0));
    assert_accounted(s);
}

#[test]
fn reset_connections_are_retried_and_rows_may_arrive_twice() {
    let server = Faulty::start();
    // The server stores the rows, then resets the connection: the answer is
    // lost, so the same rows are sent again (at-least-once).
    server.logs3(Mode::ResetAfterStoring(2));
    let (state, logger) = logger(config(&server.url()).num_retries(3).sync_flush(true));
    log_rows(&logger, 100);
    logger.flush().unwrap();
    assert_eq!(server.delivered(), 100);
    assert_eq!(server.rows_received(), 300, "stored on each of the 3 tries");
    let s = state.stats();
    assert_eq!((s.delivered_rows, s.pending), (100, 0));
    assert_accounted(s);

    // A reset on every try: the rows fail for good, with the real cause.
    server.logs3(Mode::Reset);
    log_rows(&logger, 10);
    let err = logger.flush().unwrap_err();
    assert!(
        matches!(&err, Error::RowsLost(l) if l.failed == 10),
        "{err}"
    );
    assert!(err.to_string().contains("after 4 tries"), "{err}");
    assert_eq!(server.delivered(), 100);
    assert_accounted(state.stats());
}

#[test]
fn server_killed_mid_flush_and_restarted_gets_every_row() {
    let server = Faulty::start();
    server.logs3(Mode::Delay(Duration::from_millis(20)));
    let (state, logger) = logger(
        config(&server.url())
            .num_retries(50)
            .retry_budget(Duration::from_secs(20))
            .sync_flush(true)
            .batch_size(50),
    );
    log_rows(&logger, 2_000);
    std::thread::scope(|scope| {
        let flush = scope.spawn(|| logger.flush());
        // Kill the server once it has stored some of the rows ...
        let t = Instant::now();
        while server.rows_received() == 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "nothing arrived");
            std::thread::yield_now();
        }
        server.stop();
        let stopped_at = server.rows_received();
        // ... and bring it back once the client has seen it down.
        let calls = server.logs3_calls();
        let t = Instant::now();
        while state.stats().requests < calls as u64 + 4 && t.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        server.restart();
        flush.join().unwrap().unwrap();
        assert!(
            stopped_at < 2_000,
            "the kill came too late to test anything"
        );
    });
    let s = state.stats();
    assert_eq!((s.delivered_rows, s.failed_rows, s.pending), (2_000, 0, 0));
    assert_accounted(s);
    // Every row arrived; some may have arrived twice (their answer was lost
    // in the kill).
    assert_eq!(server.delivered(), 2_000);
    assert!(server.rows_received() >= 2_000);
}

#[test]
fn async_flush_reports_rows_lost_to_a_full_queue() {
    let server = Faulty::start();
    let (state, logger) = logger(config(&server.url()).sync_flush(true).queue_size(1_000));
    log_rows(&logger, 3_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(state.flush_async()) {
        Err(Error::RowsLost(l)) => assert_eq!(l.dropped_queue_full, 2_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.delivered(), 1_000);
    // Reported once: the next flush has nothing new to say.
    rt.block_on(state.flush_async()).unwrap();
    assert_accounted(state.stats());
}

#[test]
fn flush_after_queue_overflow_reports_the_drops() {
    let server = Faulty::start();
    let (state, logger) = logger(config(&server.url()).sync_flush(true).queue_size(1_000));
    log_rows(&logger, 22_000);
    match logger.flush() {
        Err(Error::RowsLost(l)) => assert_eq!(l.dropped_queue_full, 21_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.delivered(), 1_000);
    let s = state.stats();
    assert_accounted(s);
    // Seen from the server: nothing lost silently.
    assert_eq!(
        server.rows_received() as u64 + s.dropped_queue_full,
        s.logged
    );
}

#[test]
fn the_byte_budget_bounds_payload_memory_and_counts_what_it_drops() {
    let server = Faulty::start();
    // The logger thread takes nothing before the flush: everything waits.
    let (state, logger) = logger(
        config(&server.url())
            .sync_flush(true)
            .queue_max_bytes(200_000),
    );
    let big = "x".repeat(10_000);
    for i in 0..100 {
        logger
            .log(Event::new().input(json!({"i": i, "text": big})))
            .unwrap();
    }
    let s = state.stats();
    // About 20 spans of 10 KB fit; what waits stays within the budget plus
    // the one entry that crossed it.
    assert!(
        (15..=25).contains(&(s.logged - s.dropped_queue_full)),
        "{s:?}"
    );
    assert!(s.queued_payload_bytes <= 200_000 + 12_000, "{s:?}");
    match logger.flush() {
        Err(Error::RowsLost(l)) => assert_eq!(l.dropped_queue_full, s.dropped_queue_full),
        other => panic!("{other:?}"),
    }
    let s = state.stats();
    assert_eq!(s.queued_payload_bytes, 0, "{s:?}");
    assert_accounted(s);
    assert_eq!(
        server.rows_received() as u64 + s.dropped_queue_full,
        s.logged
    );
    // One entry larger than the whole budget is taken when nothing waits.
    let huge = "y".repeat(300_000);
    logger
        .log(Event::new().input(json!({"huge": huge})))
        .unwrap();
    logger.flush().unwrap();
    assert_eq!(state.stats().dropped_queue_full, s.dropped_queue_full);
}

#[test]
fn blocking_mode_waits_for_the_byte_budget_and_loses_nothing() {
    let server = Faulty::start();
    let (state, logger) = logger(
        config(&server.url())
            .queue_full(braintrust::QueueFullPolicy::Block)
            .queue_max_bytes(50_000),
    );
    let big = "z".repeat(10_000);
    for i in 0..200 {
        logger
            .log(Event::new().input(json!({"i": i, "text": big})))
            .unwrap();
        // What waits never passes the budget by more than one entry.
        assert!(state.stats().queued_payload_bytes <= 50_000 + 12_000);
    }
    logger.flush().unwrap();
    let s = state.stats();
    assert_eq!(s.dropped_queue_full, 0, "{s:?}");
    assert_accounted(s);
    assert_eq!(server.delivered(), 200);
}

// ----- exit timing, in child processes (the exit_flush example) -----

/// Children run one at a time, so their timings measure the child and not
/// how busy two cores are with its siblings.
static ONE_CHILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exit_after(url: &str, args: &[&str], env: &[(&str, &str)]) -> common::child::Outcome {
    let _one = ONE_CHILD.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_child_at(url, args, env);
    assert!(out.status.success(), "{}", out.stderr);
    out
}

#[test]
fn default_exit_policy_gives_up_on_a_hung_logs3_within_its_deadline() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    // The real default: 10 s without progress, 20 s in all.
    let out = exit_after(
        &server.url(),
        &["--spans", "2000", "--policy", "default"],
        &[],
    );
    assert!(
        out.exit_after_main >= Duration::from_secs(9)
            && out.exit_after_main < Duration::from_secs(13),
        "exit took {:?}; stderr:\n{}",
        out.exit_after_main,
        out.stderr
    );
    // Every row logged is named, and none reached the server. (A span whose
    // start the logger took before its end is two rows: at least 2,000.)
    let t = totals_at(&out.stderr, "at exit");
    assert_eq!(t.undelivered, t.logged, "{}", out.stderr);
    assert!(t.logged >= 2000, "{}", out.stderr);
    assert_eq!(server.rows_received(), 0);
    assert!(out.stderr.lines().count() <= 3, "{}", out.stderr);
}

#[test]
fn several_hung_backends_share_one_exit_bound() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    // Three backends, each hung: flushed one after another they would take
    // three idle bounds.
    let out = exit_after(
        &server.url(),
        &["--spans", "200", "--backends", "3", "--policy", "default"],
        &[("BRAINTRUST_EXIT_FLUSH_IDLE_TIMEOUT", "1")],
    );
    assert!(
        out.exit_after_main < Duration::from_millis(1_800),
        "exit took {:?}; stderr:\n{}",
        out.exit_after_main,
        out.stderr
    );
    let lines = out
        .stderr
        .lines()
        .filter(|l| l.contains("at exit: ") && l.contains(" rows undelivered at the deadline"))
        .count();
    assert_eq!(lines, 3, "one totals line per backend:\n{}", out.stderr);
}

#[test]
fn a_20000_row_outage_is_told_in_a_handful_of_lines() {
    let server = Faulty::start();
    server.logs3(Mode::Status(503, None));
    let out = exit_after(
        &server.url(),
        &["--spans", "20000", "--policy", "default"],
        &[("BRAINTRUST_NUM_RETRIES", "1")],
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() <= 4, "{}", out.stderr);
    assert!(
        lines[0].starts_with("braintrust: failed to deliver "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("rows failed for good"),
        "{}",
        out.stderr
    );
}

#[test]
fn exit_after_a_timed_out_flush_does_not_wait_for_the_hung_request() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let out = exit_after(
        &server.url(),
        &[
            "--spans",
            "500",
            "--policy",
            "default",
            "--flush-timeout-ms",
            "500",
        ],
        &[],
    );
    // The flush gave everything up; the exit has nothing left to wait for.
    assert!(
        out.exit_after_main < Duration::from_millis(500),
        "exit took {:?}; stderr:\n{}",
        out.exit_after_main,
        out.stderr
    );
    // Told once, by the flush; the exit has nothing new to add.
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let t = totals_at(&out.stderr, "flush");
    assert_eq!(t.undelivered, t.logged, "{}", out.stderr);
    assert!(t.logged >= 500, "{}", out.stderr);
}

#[test]
fn exit_flush_timeout_env_sets_the_exit_bound() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let out = exit_after(
        &server.url(),
        &["--spans", "100", "--policy", "env"],
        &[("BRAINTRUST_EXIT_FLUSH_TIMEOUT", "0.5")],
    );
    assert!(
        out.exit_after_main >= Duration::from_millis(450)
            && out.exit_after_main < Duration::from_millis(500 + 400),
        "exit took {:?}; stderr:\n{}",
        out.exit_after_main,
        out.stderr
    );
    let (undelivered, total) = undelivered_at_exit(&out.stderr);
    assert_eq!(undelivered, total, "{}", out.stderr);
}

/// The counts of a totals line ("braintrust: at exit: dropped A of N rows
/// because the queue was full; B of N rows failed for good; C of N rows
/// undelivered at the deadline ...").
#[derive(Debug, Default, PartialEq)]
struct Totals {
    logged: u64,
    dropped: u64,
    failed: u64,
    undelivered: u64,
}

fn totals_at(stderr: &str, when: &str) -> Totals {
    let prefix = format!("braintrust: {when}: ");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {when:?} totals line in:\n{stderr}"));
    let number = |w: &str| -> u64 { w.replace(',', "").parse().unwrap() };
    let mut t = Totals::default();
    for part in line[prefix.len()..].split("; ") {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (n, of, rest) = match words.as_slice() {
            ["dropped", n, "of", of, rest @ ..] => (n, of, rest),
            [n, "of", of, rest @ ..] => (n, of, rest),
            _ => continue, // "last error: ..."
        };
        t.logged = number(of);
        match rest.get(1) {
            Some(&"because") => t.dropped = number(n),
            Some(&"failed") => t.failed = number(n),
            Some(&"undelivered") => t.undelivered = number(n),
            _ => panic!("unknown totals part {part:?}"),
        }
    }
    t
}

/// The `X of Y` of the "at exit: X of Y rows undelivered at the deadline" line.
fn undelivered_at_exit(stderr: &str) -> (u64, u64) {
    let t = totals_at(stderr, "at exit");
    (t.undelivered, t.logged)
}

#[test]
fn hung_login_refusing_backend_and_slow_masking_exit_within_the_idle_bound() {
    let hung = Faulty::start();
    hung.login(Mode::Hang);
    let idle = [
        ("BRAINTRUST_EXIT_FLUSH_IDLE_TIMEOUT", "1"),
        ("BRAINTRUST_HTTP_TIMEOUT", "30"),
    ];
    let out = exit_after(&hung.url(), &["--spans", "5000", "--no-resolve"], &idle);
    assert!(
        out.exit_after_main < Duration::from_millis(1_800),
        "{:?}\n{}",
        out.exit_after_main,
        out.stderr
    );
    // Login never answered: every row is named, none reached the server.
    let t = totals_at(&out.stderr, "at exit");
    assert_eq!(t.undelivered, t.logged, "{}", out.stderr);
    assert!(t.logged >= 5000, "{}", out.stderr);
    assert_eq!(hung.rows_received(), 0);
    assert!(
        hung.login_calls() <= 1,
        "login attempted {} times",
        hung.login_calls()
    );

    // Refused: the first round's rows fail (one try); the rest wait for the
    // login pause and are given up at the idle bound.
    let out = exit_after(
        &refusing_url(),
        &["--spans", "20000", "--no-resolve"],
        &[idle[0], idle[1], ("BRAINTRUST_NUM_RETRIES", "0")],
    );
    assert!(
        out.exit_after_main < Duration::from_millis(1_800),
        "{:?}\n{}",
        out.exit_after_main,
        out.stderr
    );
    let t = totals_at(&out.stderr, "at exit");
    assert_eq!(t.failed + t.undelivered, t.logged, "{}", out.stderr);
    assert!(t.logged >= 20000, "{}", out.stderr);

    // A masking function slower than any deadline: a bounded flush, then exit.
    let ok = Faulty::start();
    let out = exit_after(
        &ok.url(),
        &[
            "--spans",
            "4",
            "--mask-delay-ms",
            "1500",
            "--flush-timeout-ms",
            "500",
        ],
        &idle,
    );
    assert!(
        out.exit_after_main < Duration::from_millis(1_800),
        "{:?}\n{}",
        out.exit_after_main,
        out.stderr
    );
    assert!(
        out.stderr.contains("undelivered at the deadline"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_flood_is_told_in_a_few_exact_lines() {
    let server = Faulty::start();
    server.logs3(Mode::Delay(Duration::from_millis(50)));
    let out = exit_after(
        &server.url(),
        &[
            "--spans",
            "200000",
            "--queue-size",
            "1000",
            "--policy",
            "default",
        ],
        &[],
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() <= 3, "{}", out.stderr);
    assert!(
        lines[0]
            .starts_with("braintrust: the logging queue is full (1,000 entries, BRAINTRUST_QUEUE_SIZE); dropping rows"),
        "{}",
        out.stderr
    );
    // Nothing lost silently: every row the pipeline counted either reached
    // the server (each exactly once: no fault, no retry) or was dropped.
    let t = totals_at(&out.stderr, "at exit");
    assert_eq!((t.failed, t.undelivered), (0, 0), "{}", out.stderr);
    assert_eq!(
        server.rows_received() as u64 + t.dropped,
        t.logged,
        "{}",
        out.stderr
    );
    assert!(t.logged >= 200_000, "{}", out.stderr);
}

#[test]
fn a_flood_past_the_byte_budget_names_that_limit() {
    let server = Faulty::start();
    server.logs3(Mode::Delay(Duration::from_millis(50)));
    let out = exit_after(
        &server.url(),
        &["--spans", "20000", "--policy", "default"],
        &[("BRAINTRUST_QUEUE_MAX_BYTES", "2000")],
    );
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(
            "braintrust: the logging queue is full (2,000 bytes of waiting payload, BRAINTRUST_QUEUE_MAX_BYTES); dropping rows"
        ),
        "{}",
        out.stderr
    );
    let t = totals_at(&out.stderr, "at exit");
    assert!(t.dropped > 0, "{}", out.stderr);
    assert_eq!(
        server.rows_received() as u64 + t.dropped,
        t.logged,
        "{}",
        out.stderr
    );
}

#[test]
fn a_span_is_sent_promptly_without_a_flush() {
    // Producers wake the logger thread only when it waits: each row below
    // is logged while it waits, so each must wake it. Without the wake-up
    // every row would wait for the 250 ms timer (~2.5 s for 20 rows).
    let server = Faulty::start();
    let (state, logger) = logger(config(&server.url()));
    logger.log(Event::new().input("warm-up")).unwrap();
    logger.flush().unwrap();
    let t = Instant::now();
    for i in 0..20u64 {
        let before = state.stats().delivered_rows;
        logger.log(Event::new().input(json!({ "i": i }))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.stats().delivered_rows == before {
            assert!(Instant::now() < deadline, "row {i} was not sent");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // A few ms per row when woken; 250 ms per row when left to the timer.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "20 rows took {:?}",
        t.elapsed()
    );
    assert_eq!(server.delivered(), 21);
}

/// `Logger::log` writes one complete row per call, even when the logger
/// thread wakes for the call's entry at once: a start and an end taken
/// apart would be two rows (two outcomes to count) for one call. Each call
/// here is the only entry, so the logger thread is woken for each.
#[test]
fn logger_log_is_one_row_per_call_while_the_logger_thread_takes_rows() {
    let server = Faulty::start();
    let (state, lg) = logger(config(&server.url()));
    let n: u64 = 6_000;
    for i in 0..n {
        lg.log(Event::new().input(json!(i))).unwrap();
        if i % 3 == 0 {
            lg.flush().unwrap();
        }
    }
    lg.flush().unwrap();
    let s = state.stats();
    assert_eq!((s.logged, s.delivered_rows), (n, n), "{s:?}");
    assert_eq!(server.rows_received(), n as usize);
    assert_eq!(server.delivered(), n as usize);
}

/// A flush whose deadline passes while the masking function runs counts
/// every entry of the batch being masked, not the merged rows: two writes
/// of one row id are two logged rows, and both end undelivered (nothing is
/// left pending for good).
#[test]
fn a_deadline_during_masking_counts_every_entry_of_the_batch() {
    let server = Faulty::start();
    let (state, lg) = logger(config(&server.url()).sync_flush(true));
    // Logged in and registered first, so the timed flush reaches masking.
    lg.log(Event::new().input("warm")).unwrap();
    state.flush().unwrap();
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let slow_in = slow.clone();
    state.set_masking_function(Some(std::sync::Arc::new(move |v: serde_json::Value| {
        if slow_in.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(v)
    })));
    for e in [Event::new().input("a"), Event::new().output("b")] {
        lg.start_span(braintrust::SpanArgs::new().id("dup").event(e))
            .end();
    }
    let r = state.flush_with_timeout(Duration::from_millis(100));
    assert!(r.is_err(), "{r:?}");
    // Once the masking thread is done, every row has its one outcome.
    let t = Instant::now();
    while state.stats().pending > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    slow.store(false, std::sync::atomic::Ordering::Release);
    let s = state.stats();
    assert_accounted(s);
    assert_eq!(
        (s.logged, s.delivered_rows, s.undelivered_rows, s.pending),
        (3, 1, 2, 0),
        "{s:?}"
    );
}

/// A plain flush covers what was logged before it. Another thread that
/// keeps logging against a hung `/logs3` (each round failing after its
/// budget, a new one starting on the new rows) does not hold it past the
/// round under way and the flush's own.
#[test]
fn plain_flush_returns_while_another_thread_keeps_logging_against_a_hung_backend() {
    let server = Faulty::start();
    server.logs3(Mode::Hang);
    let budget = Duration::from_millis(400);
    let (state, lg) = logger(config(&server.url()).retry_budget(budget));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (stop, lg) = (stop.clone(), lg.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                lg.log(Event::new().input("more")).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = std::sync::mpsc::channel();
    let flusher = lg.clone();
    let t = Instant::now();
    std::thread::spawn(move || tx.send(flusher.flush()).unwrap());
    let r = rx.recv_timeout(budget * 2 + Duration::from_millis(1_500));
    let waited = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Release);
    producer.join().unwrap();
    let r = r.unwrap_or_else(|_| panic!("the flush had not returned after {waited:?}"));
    assert!(r.is_err(), "rows failed against the hung backend: {r:?}");
    assert!(
        waited < budget * 2 + Duration::from_millis(700),
        "waited {waited:?}"
    );
    assert!(state.stats().failed_rows > 0, "{:?}", state.stats());
}
