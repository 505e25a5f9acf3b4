//! What happens to queued rows when the process exits.
//!
//! Rust runs no destructors for statics, so the exit flush is a C `atexit`
//! handler, registered once per process when the first state asks for it.
//! It runs on a normal return from `main`, on `std::process::exit`, and after
//! a panic in `main` (the runtime then exits through `exit`). It does not run
//! on `abort`, on a panic with `panic = "abort"`, on signals whose default
//! action kills the process (SIGTERM, SIGINT, SIGKILL), or when the process
//! is killed: handle SIGTERM yourself and call [`State::shutdown`] (see the
//! README's "Shutdown and Kubernetes").
//!
//! The states are flushed concurrently, so the exit bound holds for the
//! whole process, not once per backend.
//!
//! The handler never deadlocks: it does nothing on a logger thread, the
//! logger has its own thread and runtime (the user's runtime may be gone),
//! and a deadline policy bounds the wait on the caller's side as well.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::time::Duration;

use crate::config::{env_bool, env_str};
use crate::state::State;

/// A user-defined exit behaviour.
pub trait ExitPolicy: Send + Sync {
    /// Called once at process exit for each state that uses this policy.
    fn on_exit(&self, state: &State);
}

/// The default exit flush gives up after this long without any row reaching
/// an outcome (a hung backend), ...
pub(crate) const DEFAULT_EXIT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and after this long in all, even while rows are still moving. Both
/// fit a Kubernetes pod's default 30 s termination grace period.
pub(crate) const DEFAULT_EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a state does at process exit.
///
/// ```
/// use std::time::Duration;
/// use braintrust_core::{Config, LifecyclePolicy};
/// assert_eq!(format!("{:?}", LifecyclePolicy::default()), "FlushAtExit");
/// let config = Config::default().lifecycle(LifecyclePolicy::FlushAtExitWithin(Duration::from_secs(5)));
/// assert!(format!("{config:?}").contains("lifecycle: FlushAtExitWithin(5s)"));
/// ```
#[derive(Clone, Default)]
pub enum LifecyclePolicy {
    /// Deliver what is queued before exiting, within a bound: at most
    /// 20 s in all, and at most the configured `exit_idle_timeout`
    /// (default 10 s) without progress.
    /// Rows still undelivered then are given up: counted, written to the
    /// failed-payload directory when set, and reported in one stderr line.
    #[default]
    FlushAtExit,
    /// The same with another total bound (the idle bound still applies).
    FlushAtExitWithin(Duration),
    /// Deliver everything queued, however long it takes (each batch is still
    /// bounded by the retry budget).
    FlushAtExitUnbounded,
    /// Register nothing: the application calls `flush()` or `shutdown()`
    /// itself (e.g. in a Kubernetes pre-stop hook).
    Manual,
    /// Your own behaviour.
    Custom(Arc<dyn ExitPolicy>),
}

impl fmt::Debug for LifecyclePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecyclePolicy::FlushAtExit => f.write_str("FlushAtExit"),
            LifecyclePolicy::FlushAtExitWithin(d) => write!(f, "FlushAtExitWithin({d:?})"),
            LifecyclePolicy::FlushAtExitUnbounded => f.write_str("FlushAtExitUnbounded"),
            LifecyclePolicy::Manual => f.write_str("Manual"),
            LifecyclePolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl LifecyclePolicy {
    /// `BRAINTRUST_DISABLE_ATEXIT_FLUSH=true` gives [`Manual`](Self::Manual);
    /// `BRAINTRUST_EXIT_FLUSH_TIMEOUT=<seconds>` gives
    /// [`FlushAtExitWithin`](Self::FlushAtExitWithin) (`inf` gives
    /// [`FlushAtExitUnbounded`](Self::FlushAtExitUnbounded)); otherwise the default.
    pub fn from_env() -> LifecyclePolicy {
        if env_bool("BRAINTRUST_DISABLE_ATEXIT_FLUSH") == Some(true) {
            return LifecyclePolicy::Manual;
        }
        if let Some(v) = env_str("BRAINTRUST_EXIT_FLUSH_TIMEOUT") {
            match v.trim().parse::<f64>() {
                Ok(s) if s == f64::INFINITY => return LifecyclePolicy::FlushAtExitUnbounded,
                Ok(s) if s.is_finite() && s >= 0.0 => {
                    return LifecyclePolicy::FlushAtExitWithin(Duration::from_secs_f64(s))
                }
                _ => eprintln!(
                    "braintrust: ignoring BRAINTRUST_EXIT_FLUSH_TIMEOUT={v:?}: expected a number of seconds"
                ),
            }
        }
        LifecyclePolicy::FlushAtExit
    }
}

static INSTALL: Once = Once::new();

extern "C" fn run_exit_flush() {
    // Never unwind across the C boundary, never wait on ourselves.
    let _ = std::panic::catch_unwind(|| {
        if crate::pipeline::on_worker_thread() {
            return;
        }
        let states: Vec<State> = State::all()
            .into_iter()
            .filter(|s| s.0.exit_flush.load(Ordering::Acquire))
            .collect();
        flush_all_at_once(&states);
    });
}

/// Flushes the states concurrently, so the exit bound holds for the
/// process and not per backend (N hung backends take one bound, not N).
fn flush_all_at_once(states: &[State]) {
    if let [only] = states {
        return exit_flush(only);
    }
    std::thread::scope(|scope| {
        for state in states {
            let spawned = std::thread::Builder::new()
                .name("braintrust-exit".into())
                .spawn_scoped(scope, move || exit_flush(state));
            if spawned.is_err() {
                // No thread: flush this one here; the others still run.
                exit_flush(state);
            }
        }
    });
}

fn exit_flush(state: &State) {
    let pipeline = state.pipeline();
    if !pipeline.started() {
        return; // never logged anything
    }
    let idle = Some(state.config().exit_idle_timeout);
    let r = match &state.config().lifecycle {
        // Manual states get here only when registered explicitly at runtime.
        LifecyclePolicy::Manual | LifecyclePolicy::FlushAtExit => {
            state.flush_bounded(Some(DEFAULT_EXIT_TIMEOUT), idle)
        }
        LifecyclePolicy::FlushAtExitWithin(d) => state.flush_bounded(Some(*d), idle),
        LifecyclePolicy::FlushAtExitUnbounded => state.flush_bounded(None, None),
        LifecyclePolicy::Custom(p) => {
            p.on_exit(state);
            Ok(())
        }
    };
    if let Err(e) = r {
        if !matches!(e, crate::Error::RowsLost(_) | crate::Error::Timeout { .. }) {
            eprintln!("braintrust: exit flush failed: {e}");
        }
    }
    // The totals of the whole run, whatever the flush already said.
    pipeline.print_totals("at exit");
}

/// Applies a new state's policy: registers its exit flush unless `Manual`.
pub(crate) fn apply_policy(state: &State) {
    let wanted = match PROCESS_WIDE.load(Ordering::Acquire) {
        1 => true,
        2 => false,
        _ => !matches!(state.config().lifecycle, LifecyclePolicy::Manual),
    };
    if wanted {
        register_exit_flush_for(state);
    }
}

/// The last process-wide `register_exit_flush()` (1) or
/// `unregister_exit_flush()` (2), applied to states created after it; 0 when
/// neither was called.
static PROCESS_WIDE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

pub(crate) fn set_process_wide_exit_flush(on: bool) {
    PROCESS_WIDE.store(if on { 1 } else { 2 }, Ordering::Release);
}

pub(crate) fn register_exit_flush_for(state: &State) {
    state.0.exit_flush.store(true, Ordering::Release);
    INSTALL.call_once(|| {
        // SAFETY: `run_exit_flush` is an `extern "C" fn()` that never unwinds.
        unsafe {
            libc::atexit(run_exit_flush);
        }
    });
}

pub(crate) fn unregister_exit_flush_for(state: &State) {
    state.0.exit_flush.store(false, Ordering::Release);
}

impl State {
    /// Registers this state's exit flush (idempotent, thread-safe). With the
    /// `Manual` policy this makes it behave like `FlushAtExit`.
    pub fn register_exit_flush(&self) {
        register_exit_flush_for(self);
    }
    /// Unregisters this state's exit flush (idempotent, thread-safe): the
    /// process then exits without waiting for queued rows.
    pub fn unregister_exit_flush(&self) {
        unregister_exit_flush_for(self);
    }
    /// True when this state flushes at exit.
    pub fn exit_flush_registered(&self) -> bool {
        self.0.exit_flush.load(Ordering::Acquire)
    }
}
