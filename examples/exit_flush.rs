//! What happens to queued spans when a process exits, under each lifecycle
//! policy. The tests run this program as a child process; you can too:
//!
//! ```sh
//! cargo run --example exit_flush -- --spans 5000 --policy default
//! cargo run --example exit_flush -- --spans 20000 --policy deadline:300
//! BRAINTRUST_DISABLE_ATEXIT_FLUSH=true cargo run --example exit_flush
//! ```
//!
//! Options: `--spans N`, `--policy env|default|manual|deadline:<ms>|unregister`,
//! `--mask-delay-ms N` (a slow masking function), `--flush-first` (flush
//! explicitly before exiting), `--runtime sync|current|multi`, `--exit`
//! (leave through `std::process::exit` instead of returning from `main`),
//! `--sync-flush` (send nothing in the background, so every request the
//! server sees was made by an explicit or exit-time flush), `--queue-size N`,
//! `--flush-timeout-ms N` (a bounded flush before returning, its result
//! printed), `--no-resolve` (do not log in before logging: the backend may
//! be down), `--backends N` (log the same spans to N separate backends,
//! each its own `State`, all flushed at exit).
//! Without `BRAINTRUST_API_KEY` it starts a local server and prints its tree.

use std::time::Duration;

use braintrust::{Config, Event, LifecyclePolicy, LoggerOptions, SpanArgs, State};
use serde_json::json;

struct Options {
    spans: usize,
    policy: String,
    mask_delay: Option<Duration>,
    flush_first: bool,
    runtime: String,
    exit: bool,
    sync_flush: bool,
    queue_size: Option<usize>,
    flush_timeout: Option<Duration>,
    resolve: bool,
    backends: usize,
}

fn parse_args() -> Options {
    let mut o = Options {
        spans: 1000,
        policy: "env".into(),
        mask_delay: None,
        flush_first: false,
        runtime: "sync".into(),
        exit: false,
        sync_flush: false,
        queue_size: None,
        flush_timeout: None,
        resolve: true,
        backends: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--spans" => o.spans = args.next().and_then(|v| v.parse().ok()).expect("--spans N"),
            "--policy" => o.policy = args.next().expect("--policy P"),
            "--mask-delay-ms" => {
                o.mask_delay = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis)
            }
            "--flush-first" => o.flush_first = true,
            "--runtime" => o.runtime = args.next().expect("--runtime R"),
            "--exit" => o.exit = true,
            "--sync-flush" => o.sync_flush = true,
            "--queue-size" => o.queue_size = args.next().and_then(|v| v.parse().ok()),
            "--flush-timeout-ms" => {
                o.flush_timeout = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis)
            }
            "--no-resolve" => o.resolve = false,
            "--backends" => {
                o.backends = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--backends N")
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn log_spans(logger: &braintrust::Logger, n: usize) {
    for i in 0..n {
        let span = logger.start_span(SpanArgs::new().name("work"));
        span.log(Event::new().input(json!({"i": i})).output(json!({"ok": i})))
            .expect("valid event");
        span.end();
    }
}

fn main() {
    let o = parse_args();
    let local = std::env::var("BRAINTRUST_API_KEY").is_err().then(|| {
        braintrust_devserver::DevServer::start_blocking(Default::default()).expect("local server")
    });
    let mut config = Config::from_env();
    if let Some(s) = &local {
        config = config.api_key("local").app_url(s.url());
    }
    if o.sync_flush {
        config = config.sync_flush(true);
    }
    if let Some(n) = o.queue_size {
        config = config.queue_size(n);
    }
    config = match o.policy.as_str() {
        "env" | "unregister" => config,
        "default" => config.lifecycle(LifecyclePolicy::FlushAtExit),
        "manual" => config.lifecycle(LifecyclePolicy::Manual),
        p if p.starts_with("deadline:") => {
            let ms: u64 = p["deadline:".len()..].parse().expect("deadline:<ms>");
            config.lifecycle(LifecyclePolicy::FlushAtExitWithin(Duration::from_millis(
                ms,
            )))
        }
        p => panic!("unknown policy {p}"),
    };
    // More backends, kept alive until exit as a service's globals would be.
    let extra: &'static [braintrust::Logger] = (1..o.backends)
        .map(|i| {
            let state = State::new(config.clone()).expect("state");
            let logger = braintrust::init_logger(
                LoggerOptions::new()
                    .project(format!("lifecycle-{i}"))
                    .state(state),
            )
            .expect("logger");
            if o.resolve {
                logger.resolve_id().expect("backend reachable");
            }
            logger
        })
        .collect::<Vec<_>>()
        .leak();
    let state = State::new(config).expect("state");
    if let Some(delay) = o.mask_delay {
        state.set_masking_function(Some(std::sync::Arc::new(move |v| {
            std::thread::sleep(delay); // an external masking API
            Ok(v)
        })));
    }
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("lifecycle")
            .state(state.clone())
            .set_current(true),
    )
    .expect("logger");
    // Log in and register before the burst, as a long-running service would have.
    if o.resolve {
        logger.resolve_id().expect("backend reachable");
    }
    if o.policy == "unregister" {
        state.register_exit_flush();
        state.unregister_exit_flush();
    }

    let run = || {
        log_spans(&logger, o.spans);
        for other in extra {
            log_spans(other, o.spans);
        }
        if o.flush_first {
            logger.flush().expect("flush");
        }
        if let Some(t) = o.flush_timeout {
            match logger.state().flush_with_timeout(t) {
                Ok(()) => println!("FLUSH ok"),
                Err(e) => println!("FLUSH error: {e}"),
            }
        }
    };
    match o.runtime.as_str() {
        "sync" => run(),
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { run() }),
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { run() }),
        r => panic!("unknown runtime {r}"),
    }
    if let Some(s) = &local {
        // The exit flush runs after main: flush here only to show the tree.
        logger.flush().expect("flush");
        println!(
            "{}",
            s.render_all_traces()
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    println!("MAIN_RETURNING {}", t.as_millis());
    if o.exit {
        std::process::exit(0);
    }
}
