//! The Kubernetes pre-stop pattern: the service owns its final flush.
//!
//! The exit-time flush is turned off (`LifecyclePolicy::Manual`, or
//! `BRAINTRUST_DISABLE_ATEXIT_FLUSH=true` without code changes). On SIGTERM
//! (or Ctrl-C) the service stops taking work and calls `shutdown_async` with a
//! bound shorter than the pod's termination grace period, so a slow backend can
//! never hold the restart hostage.
//!
//! ```sh
//! cargo run --example k8s_prestop            # runs ~1 s, then simulates SIGTERM
//! cargo run --example k8s_prestop -- --wait  # waits for a real SIGTERM / Ctrl-C
//! ```

use std::time::Duration;

use braintrust::{Config, Event, LifecyclePolicy, LoggerOptions, SpanArgs, State, WithSpan};
use serde_json::json;

async fn handle(logger: &braintrust::Logger, i: u64) {
    let span = logger.start_span(SpanArgs::new().name("request"));
    async {
        braintrust::current_span()
            .log(Event::new().input(json!({"request": i})).output("ok"))
            .expect("valid event");
    }
    .in_span(span)
    .await;
}

#[cfg(unix)]
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[cfg(not(unix))]
async fn terminated() {
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wait_for_signal = std::env::args().any(|a| a == "--wait");
    let local = match std::env::var("BRAINTRUST_API_KEY") {
        Ok(_) => None,
        Err(_) => Some(braintrust_devserver::DevServer::start(Default::default()).await?),
    };
    let mut config = Config::from_env().lifecycle(LifecyclePolicy::Manual);
    if let Some(s) = &local {
        config = config.api_key("local").app_url(s.url());
    }
    let state = State::new(config)?;
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("k8s")
            .state(state)
            .set_current(true),
    )?;

    let work = async {
        let mut i = 0;
        loop {
            handle(&logger, i).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let stop = async {
        if wait_for_signal {
            terminated().await;
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        _ = work => {},
        _ = stop => println!("SIGTERM: draining"),
    }
    // The pre-stop hook: bounded final flush, then exit.
    match braintrust::shutdown_async(Duration::from_secs(5)).await {
        Ok(()) => println!("all spans delivered"),
        Err(e) => eprintln!("shutdown: {e}"),
    }
    if let Some(s) = local {
        println!("{} requests traced", s.rows().len());
    }
    Ok(())
}
