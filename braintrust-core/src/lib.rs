//! Runtime of the Braintrust Rust SDK: configuration, backends ([`State`]),
//! containers ([`Logger`], [`Experiment`]), spans and their context, the
//! background logger, export/propagation and the exit lifecycle.
//!
//! Most users depend on the `braintrust` facade crate, which re-exports this
//! and adds `#[traced]`.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod api;
mod attachment;
mod config;
mod context;
mod diagnostics;
mod error;
mod event;
mod export;
mod ids;
mod lifecycle;
mod logger;
mod merge;
mod pipeline;
mod propagation;
mod retry;
mod span;
mod state;
mod summary;
mod task;
mod time;
// Public only for the paths inside the `#[traced]` helper macros
// (`$crate::traced::__macro_support`); its API is re-exported below.
#[doc(hidden)]
pub mod traced;
mod w3c;

// Configuration and backends.
pub use api::LoginInfo;
pub use attachment::{
    Attachment, AttachmentError, AttachmentReference, ExternalAttachment, StoredAttachment,
    UploadStatus,
};
pub use config::{Config, HttpOptions, QueueFullPolicy};
pub use lifecycle::{ExitPolicy, LifecyclePolicy};
pub use pipeline::{LossReport, MaskingFunction, RowObserver, Stats};
pub use retry::RetryPolicy;
pub use state::State;
// Containers: where spans are logged.
pub use logger::{
    current_logger, init_experiment, init_logger, is_enabled, set_current_logger, Experiment,
    ExperimentOptions, Logger, LoggerOptions,
};
pub use summary::{ExperimentSummary, MetricSummary, ScoreSummary, SummaryTotals};
// Spans and what they log.
pub use error::Error;
pub use event::{error_string, Event, ScoreValue, ValidationError};
pub use logger::start_span;
pub use span::{Parent, Span, SpanArgs, SpanType};
// The current span, closures and futures.
pub use context::{current_span, replace_current_span, InSpan, SpanGuard, WithSpan};
pub use traced::{
    traced_async, traced_sync, wrap_traced, wrap_traced_async, EndSpan, LogOutput, OnReady,
    TracedFuture,
};
// Carrying the current span into tasks, threads and pools.
pub use task::{
    spawn, spawn_blocking, spawn_local, thread, wrap_fn, wrap_map, PoolJoinHandle, TracedHandle,
    TracedRuntime, TracedThreadPool,
};
// Across processes: exported slugs, W3C headers, permalinks.
pub use export::{ObjectType, SlugError, SpanComponents};
pub use propagation::{extract, permalink, update_span};
pub use w3c::{Carrier, TraceContext, TraceParent};

/// Plumbing shared with the other crates of this workspace (the `#[traced]`
/// expansion, `braintrust-openai`, the integrations, the benchmarks and the
/// protocol vector tests). Not part of the public API: it changes in any
/// release without notice.
#[doc(hidden)]
pub mod __internal {
    pub use crate::config::redact_url;
    pub use crate::diagnostics::report_left_out;
    pub use crate::event::json_f64;
    pub use crate::export::INVALID_ENCODING_MESSAGE;
    pub use crate::logger::start_span_at;
    pub use crate::traced::{__macro_support, CANCELLED};

    /// The client-side merge and batching of rows (protocol vectors, benchmarks).
    pub mod merge {
        pub use crate::merge::{
            batch_byte_limit, batch_partition, deep_merge_into, logs3_body, merge_row_batch,
            MergeError, Row, IS_MERGE_FIELD, LOGS3_EMPTY_ENVELOPE, LOGS3_ENVELOPE_LEN,
            MERGE_KEY_FIELDS, MERGE_ROW_SKIP_FIELDS,
        };
    }

    /// The W3C trace-context codecs (protocol vectors, OpenTelemetry interop).
    pub mod w3c {
        pub use crate::w3c::{
            baggage_braintrust_parent, decode_baggage_value, encode_baggage_value, extract,
            format_traceparent, inject_into, merge_baggage, parse_baggage, parse_traceparent,
            MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS,
        };
    }

    /// The one retry policy, for `braintrust-openai`.
    pub mod retry {
        pub use crate::retry::{parse_retry_after, retry_after_header, Retry, RetryPolicy};
    }
}

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
