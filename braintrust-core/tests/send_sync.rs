//! The types users share across tasks and threads are `Send + Sync`, and the
//! ones they hold in `Result`s and logs are `Debug`: a regression here breaks
//! user code that compiles today, so it is caught at compile time.

use braintrust_core::{
    Config, Error, Event, Experiment, ExperimentOptions, ExperimentSummary, HttpOptions, Logger,
    LoggerOptions, LossReport, Parent, ScoreValue, SlugError, Span, SpanArgs, SpanComponents,
    SpanType, State, Stats, TraceContext, TracedHandle, TracedThreadPool, ValidationError,
};

fn send_sync<T: Send + Sync + std::fmt::Debug>() {}

#[test]
fn shared_types_are_send_sync_and_debug() {
    send_sync::<Span>();
    send_sync::<Logger>();
    send_sync::<Experiment>();
    send_sync::<State>();
    send_sync::<Config>();
    send_sync::<HttpOptions>();
    send_sync::<LoggerOptions>();
    send_sync::<ExperimentOptions>();
    send_sync::<SpanArgs>();
    send_sync::<Parent>();
    send_sync::<SpanType>();
    send_sync::<Event>();
    send_sync::<ScoreValue>();
    send_sync::<Stats>();
    send_sync::<LossReport>();
    send_sync::<ExperimentSummary>();
    send_sync::<TraceContext>();
    send_sync::<SpanComponents>();
    send_sync::<TracedHandle>();
    send_sync::<TracedThreadPool>();
    // Errors cross threads inside `Box<dyn Error + Send + Sync>` and `anyhow`.
    send_sync::<Error>();
    send_sync::<ValidationError>();
    send_sync::<SlugError>();
}

#[test]
fn futures_of_send_work_are_send() {
    fn send<T: Send>(_: &T) {}
    use braintrust_core::WithSpan as _;
    let fut = async { 1 };
    send(&fut.in_span(Span::noop()));
    send(&braintrust_core::traced_async(SpanArgs::new(), |_| async {
        1
    }));
}
