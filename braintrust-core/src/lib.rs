//! Runtime of the Braintrust Rust SDK: configuration, backends ([`State`]),
//! containers ([`Logger`], [`Experiment`]), spans and their context, the
//! background logger, export/propagation and the exit lifecycle.
//!
//! Most users depend on the `braintrust` facade crate, which re-exports this
//! and adds `#[traced]`.

#![warn(missing_docs)]

mod api;
mod attachment;
pub mod config;
mod context;
mod diagnostics;
mod error;
mod event;
pub mod export;
mod ids;
mod lifecycle;
mod logger;
pub mod merge;
mod pipeline;
mod propagation;
pub mod retry;
mod span;
mod state;
mod summary;
pub mod task;
mod time;
pub mod traced;
pub mod w3c;

pub use api::LoginInfo;
pub use attachment::{
    Attachment, AttachmentError, AttachmentReference, ExternalAttachment, StoredAttachment,
    UploadStatus,
};
pub use config::{Config, HttpOptions, QueueFullPolicy};
pub use context::{current_span, replace_current_span, InSpan, Instrument, SpanGuard};
pub use error::Error;
pub use event::{error_string, json_f64, Event, ScoreValue, ValidationError};
pub use export::{ObjectType, SlugError, SpanComponents};
pub use ids::Id;
pub use lifecycle::{ExitPolicy, LifecyclePolicy};
pub use logger::{
    current_logger, init, init_logger, is_enabled, set_current_logger, start_span, start_span_at,
    Experiment, ExperimentOptions, Logger, LoggerOptions,
};
pub use pipeline::{LossReport, MaskingFunction, RowObserver, Stats};
pub use propagation::{extract, permalink, update_span};
pub use span::{Parent, Span, SpanArgs, SpanType};
pub use state::State;
pub use summary::{ExperimentSummary, MetricSummary, ScoreSummary, SummaryTotals};
pub use time::now_secs;
pub use w3c::{Carrier, TraceContext};
// Re-exports of the `task` and `traced` modules (owned by their modules).
pub use task::*;
pub use traced::*;

/// Flushes every backend in the process: blocks until everything queued
/// before the call is delivered or has failed for good (the error).
pub fn flush() -> Result<(), Error> {
    let mut result = Ok(());
    for s in State::all() {
        if s.pipeline().started() {
            if let Err(e) = s.flush() {
                result = Err(e);
            }
        }
    }
    result
}

/// The async form of [`flush`]; never blocks the executor.
pub async fn flush_async() -> Result<(), Error> {
    let mut result = Ok(());
    for s in State::all() {
        if s.pipeline().started() {
            if let Err(e) = s.flush_async().await {
                result = Err(e);
            }
        }
    }
    result
}

/// Flushes every backend, giving up at `timeout` (see [`State::flush_with_timeout`]).
pub fn flush_with_timeout(timeout: std::time::Duration) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + timeout;
    let mut result = Ok(());
    for s in State::all() {
        if s.pipeline().started() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = s.flush_with_timeout(left) {
                result = Err(e);
            }
        }
    }
    result
}

/// Final flush of every backend bounded by `timeout`, then stops their
/// logger threads and exit handlers: the SIGTERM / pre-stop call.
pub fn shutdown(timeout: std::time::Duration) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + timeout;
    let mut result = Ok(());
    for s in State::all() {
        if s.pipeline().started() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = s.shutdown(left) {
                result = Err(e);
            }
        } else {
            s.unregister_exit_flush();
        }
    }
    result
}

/// The async form of [`shutdown`].
pub async fn shutdown_async(timeout: std::time::Duration) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + timeout;
    let mut result = Ok(());
    for s in State::all() {
        if s.pipeline().started() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = s.shutdown_async(left).await {
                result = Err(e);
            }
        } else {
            s.unregister_exit_flush();
        }
    }
    result
}

/// Registers the exit flush of every backend (idempotent), including the
/// backends created later in the process: calling it before `init_logger`
/// is not lost.
///
/// ```
/// braintrust_core::register_exit_flush();
/// let state = braintrust_core::State::new(
///     braintrust_core::Config::default().lifecycle(braintrust_core::LifecyclePolicy::Manual),
/// ).unwrap();
/// assert!(state.exit_flush_registered());
/// # braintrust_core::unregister_exit_flush();
/// ```
pub fn register_exit_flush() {
    lifecycle::set_process_wide_exit_flush(true);
    for s in State::all() {
        s.register_exit_flush();
    }
}

/// Unregisters the exit flush of every backend (idempotent), including the
/// backends created later: the process then exits without waiting for
/// queued rows.
pub fn unregister_exit_flush() {
    lifecycle::set_process_wide_exit_flush(false);
    for s in State::all() {
        s.unregister_exit_flush();
    }
}
