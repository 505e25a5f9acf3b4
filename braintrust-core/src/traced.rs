//! Runtime of `#[traced]` and of the closure forms [`traced_sync`], [`traced_async`],
//! [`wrap_traced`] and [`wrap_traced_async`].
//!
//! The attribute macro only rearranges the user's function; everything it
//! does at run time is an ordinary function or type of this module, so it is
//! tested here as ordinary code.
//!
//! What a traced call records:
//!
//! - **input**: an object `{arg_name: value}`. A value that implements
//!   `Serialize` is serialized; one that only implements `Debug` is logged as
//!   its `Debug` text; anything else as `"<unserializable TYPE>"`. No bound is
//!   needed on the user's types: the choice is made by autoref dispatch at the
//!   call site (the hidden `__macro_support` module documents it). In a generic function the choice
//!   follows the bounds the function declares: `T: Serialize` serializes, an
//!   unbounded `T` gets the placeholder.
//! - **output**: the return value, likewise (with the `axum` feature,
//!   `axum::Json<T>` and `(StatusCode, Json<T>)` log their inner value). A `Result` logs `Ok` as `output`
//!   and `Err` as `error` (see [`error_string`](crate::error_string): the
//!   error's `Display`, then its `source()` chain). `None` is a normal output
//!   (`null`).
//! - **panics**: the span gets `error = "panicked: <message>"`, ends, and the
//!   panic keeps unwinding with its original payload.
//! - **cancellation**: a traced future dropped before it completes (by
//!   `select!`, a timeout, an aborted task) gets `error = "cancelled"`
//!   ([`CANCELLED`]) and ends. The error marker follows the Python SDK, where
//!   the `CancelledError` raised into a traced coroutine is logged as the
//!   span's error.
//!
//! With no logger and no current span ([`is_enabled`] is false) none of this
//! happens: one check, no allocation, and the body runs as written.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use serde_json::Value;

use crate::event::Event;
use crate::logger::{is_enabled, start_span_at};
use crate::span::{Span, SpanArgs};

/// The `error` logged on a span whose future was dropped before completing.
pub const CANCELLED: &str = "cancelled";

/// The `error` text for a panic payload: `"panicked: <message>"`, where the
/// message is the `&str` or `String` given to `panic!`, or `Box<dyn Any>`
/// for other payloads (as the standard panic hook prints it).
pub(crate) fn panic_error(payload: &(dyn Any + Send)) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "Box<dyn Any>"
    };
    format!("panicked: {message}")
}

/// Logs the panic on `span` and ends it.
fn record_panic(span: &Span, payload: &(dyn Any + Send)) {
    let _ = span.log(Event::new().error(panic_error(payload)));
    span.end();
}

/// Logs the cancelled marker on `span` and ends it.
fn record_cancelled(span: &Span) {
    let _ = span.log(Event::new().error(CANCELLED));
    span.end();
}

/// Runs `f` with `span` current. A panic is logged on the span (which then
/// ends) and resumed unchanged. Does not end the span otherwise.
#[inline]
fn run_in<R>(span: &Span, f: impl FnOnce() -> R) -> R {
    if span.is_noop() {
        return f();
    }
    let guard = span.enter();
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            record_panic(span, &*payload);
            drop(guard);
            panic::resume_unwind(payload)
        }
    }
}

/// Runs `f` in a new span, the closure form of `#[traced]` (TypeScript's
/// `traced(callback, args)`).
///
/// The span starts under the current span (or as a root of the current
/// logger), is current while `f` runs, and ends when `f` returns. A panic in
/// `f` is logged as the span's `error` and keeps unwinding. The return value
/// is not logged: log what you want with `span.log(...)`.
///
/// ```
/// use braintrust_core::{traced_sync, Event, SpanArgs, SpanType};
/// let answer = traced_sync(SpanArgs::new().name("add").span_type(SpanType::Tool), |span| {
///     let sum = 1 + 1;
///     span.log(Event::new().input("1+1").output(sum)).unwrap();
///     sum
/// });
/// assert_eq!(answer, 2);
/// ```
#[track_caller]
pub fn traced_sync<R>(args: SpanArgs, f: impl FnOnce(&Span) -> R) -> R {
    let span = start_span_at(args, Location::caller());
    let r = run_in(&span, || f(&span));
    span.end();
    r
}

/// The async closure form: starts a span now and returns a future that runs
/// the future `f` builds with that span current on every poll.
///
/// `f` receives the span by value so the `async move` block can own it. The
/// span ends when the future completes; a panic while polling is logged as
/// its `error`; dropping the future before it completes logs
/// `error = "cancelled"` and ends the span.
///
/// ```
/// use braintrust_core::{traced_async, Event, SpanArgs, SpanType};
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let content = traced_async(SpanArgs::new().name("Custom LLM").span_type(SpanType::Llm), |span| async move {
///     let content = String::from("Hello, world!");
///     span.log(Event::new().output(content.as_str()).metric("prompt_tokens", 5.0)).unwrap();
///     content
/// })
/// .await;
/// assert_eq!(content, "Hello, world!");
/// # });
/// ```
#[track_caller]
pub fn traced_async<F, Fut>(args: SpanArgs, f: F) -> TracedFuture<Fut>
where
    F: FnOnce(Span) -> Fut,
    Fut: Future,
{
    let span = start_span_at(args, Location::caller());
    let fut = run_in(&span, || f(span.clone()));
    TracedFuture::new(span, fut, EndSpan)
}

/// Wraps a function value so that every call runs in a new span that logs the
/// argument as `input` and the return value as `output` (TypeScript's
/// `wrapTraced`). Pass several arguments as a tuple; they are logged as an
/// array.
///
/// The bounds are what the logging needs. For functions whose arguments or
/// results are not `Serialize` (or are `Result`s whose `Err` should become the
/// span's `error`), put `#[traced]` on a small wrapper function instead.
///
/// ```
/// use braintrust_core::{wrap_traced, SpanArgs};
/// fn add((a, b): (i32, i32)) -> i32 { a + b }
/// let add = wrap_traced(SpanArgs::new().name("add"), add);
/// assert_eq!(add((2, 3)), 5);
/// ```
#[track_caller]
pub fn wrap_traced<A, R, F>(args: SpanArgs, f: F) -> impl Fn(A) -> R
where
    F: Fn(A) -> R,
    A: Serialize,
    R: Serialize,
{
    let location = Location::caller();
    move |a: A| {
        if !is_enabled() {
            return f(a);
        }
        let event = Event::new().input(json_or_placeholder(&a));
        let span = start_span_at(args.clone().event(event), location);
        let r = run_in(&span, || f(a));
        let _ = span.log(Event::new().output(json_or_placeholder(&r)));
        span.end();
        r
    }
}

/// [`wrap_traced`] for functions that return a future: every call starts a
/// span and returns a [`TracedFuture`] that logs the future's output when it
/// completes.
///
/// ```
/// use braintrust_core::{wrap_traced_async, SpanArgs};
/// async fn shout(s: String) -> String { s.to_uppercase() }
/// let shout = wrap_traced_async(SpanArgs::new().name("shout"), shout);
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(shout("hi".into())), "HI");
/// ```
#[track_caller]
pub fn wrap_traced_async<A, Fut, F>(
    args: SpanArgs,
    f: F,
) -> impl Fn(A) -> TracedFuture<Fut, LogOutput>
where
    F: Fn(A) -> Fut,
    Fut: Future,
    A: Serialize,
    Fut::Output: Serialize,
{
    let location = Location::caller();
    move |a: A| {
        if !is_enabled() {
            return TracedFuture::new(Span::noop(), f(a), LogOutput);
        }
        let event = Event::new().input(json_or_placeholder(&a));
        let span = start_span_at(args.clone().event(event), location);
        let fut = run_in(&span, || f(a));
        TracedFuture::new(span, fut, LogOutput)
    }
}

fn json_or_placeholder<T: Serialize + ?Sized>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| {
        Value::String(format!(
            "<unserializable {}: {e}>",
            std::any::type_name::<T>()
        ))
    })
}

/// What a [`TracedFuture`] does with its output when the inner future
/// completes: log it (or not) and end the span.
pub trait OnReady<T> {
    /// Called once, with the span still current, when the inner future is ready.
    fn on_ready(self, span: &Span, output: &T);
}

/// [`OnReady`] that only ends the span (the output is not logged).
#[derive(Debug, Clone, Copy, Default)]
pub struct EndSpan;

impl<T> OnReady<T> for EndSpan {
    fn on_ready(self, span: &Span, _output: &T) {
        span.end();
    }
}

/// [`OnReady`] that logs a `Serialize` output as the span's `output`, then
/// ends the span.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOutput;

impl<T: Serialize> OnReady<T> for LogOutput {
    fn on_ready(self, span: &Span, output: &T) {
        if !span.is_noop() {
            let _ = span.log(Event::new().output(json_or_placeholder(output)));
        }
        span.end();
    }
}

pin_project_lite::pin_project! {
    /// A future running in a span: the span is current on every poll (and
    /// while the inner future is dropped), a panic while polling is logged as
    /// the span's `error` and resumed, completion calls the [`OnReady`]
    /// policy (by default: end the span), and dropping the future before it
    /// completes logs `error = "cancelled"` and ends the span.
    ///
    /// With a no-op span it polls the inner future and does nothing else.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct TracedFuture<F, R = EndSpan> {
        #[pin]
        inner: Option<F>,
        span: Span,
        on_ready: Option<R>,
    }

    impl<F, R> PinnedDrop for TracedFuture<F, R> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.inner.is_some() {
                if this.span.is_noop() {
                    this.inner.set(None);
                    return;
                }
                let guard = this.span.enter();
                this.inner.set(None);
                drop(guard);
                // `on_ready` is taken on completion and on panic: still
                // present means the future was dropped half-way.
                if this.on_ready.is_some() {
                    record_cancelled(this.span);
                }
            }
        }
    }
}

impl<F, R> std::fmt::Debug for TracedFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, R> TracedFuture<F, R> {
    /// Runs `inner` in `span`, calling `on_ready` with its output on completion.
    pub fn new(span: Span, inner: F, on_ready: R) -> Self {
        TracedFuture {
            inner: Some(inner),
            span,
            on_ready: Some(on_ready),
        }
    }

    /// The span this future runs in.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

impl<F: Future, R: OnReady<F::Output>> Future for TracedFuture<F, R> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("`TracedFuture` polled after completion");
        };
        if this.span.is_noop() {
            let out = std::task::ready!(inner.poll(cx));
            this.inner.set(None);
            if let Some(r) = this.on_ready.take() {
                r.on_ready(this.span, &out);
            }
            return Poll::Ready(out);
        }
        let guard = this.span.enter();
        match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                this.inner.set(None);
                if let Some(r) = this.on_ready.take() {
                    r.on_ready(this.span, &out);
                }
                drop(guard);
                Poll::Ready(out)
            }
            Err(payload) => {
                this.on_ready.take();
                record_panic(this.span, &*payload);
                drop(guard);
                panic::resume_unwind(payload)
            }
        }
    }
}

/// Items the code generated by `#[traced]` calls. Not a stable API.
///
/// Value capture uses autoref dispatch: `(&&&&Capture(&v)).__bt_capture()`
/// finds the first of these impls that applies to `v`'s type, at the call
/// site, where the concrete type (or the generic function's bounds) is known:
///
/// | receiver        | bound on `T`      | logged as                   |
/// |-----------------|-------------------|-----------------------------|
/// | `&&&Capture<W>` | `W` a wrapper of a `Serialize` value (`axum::Json<T>`, `(StatusCode, Json<T>)`; feature `axum`) | the inner value's JSON |
/// | `&&Capture<T>`  | `Serialize`       | its JSON                    |
/// | `&Capture<T>`   | `Debug`           | its `Debug` text            |
/// | `Capture<T>`    | none              | `"<unserializable T>"`      |
///
/// Return values are first viewed as a `Result` or not (`(&&Ret(&r)).__bt_view()`),
/// then the `Ok`/plain value is captured as above and the `Err` is rendered by
/// `error_text!`: `std::error::Error` (with its
/// source chain), then `AsRef<dyn Error>` (`anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`), then `Display`, then `Debug`, then a
/// placeholder.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub mod __macro_support {
    use std::error::Error as StdError;
    use std::fmt::{Debug, Display};
    use std::panic::Location;

    use serde::Serialize;
    use serde_json::{Map, Value};

    pub use super::{OnReady, TracedFuture};
    use crate::event::{error_string, Event};
    use crate::logger::{is_enabled, start_span_at};
    use crate::span::{Span, SpanArgs, SpanType};
    pub use crate::{
        __traced_capture as capture, __traced_error_text as error_text,
        __traced_record_return as record_return,
    };

    /// The caller's location. The traced function is `#[track_caller]`, so
    /// this is where it was called; where it cannot be (`fn main`, a non-Rust
    /// ABI, an `async fn` kept as such) the macro emits this call with the
    /// span of the function's name, which makes it the definition.
    #[track_caller]
    #[inline]
    pub fn caller_location() -> &'static Location<'static> {
        Location::caller()
    }

    /// What a traced function's span is made of.
    pub struct SpanMeta {
        /// Display name (the function name unless `name = ...`).
        pub name: &'static str,
        /// Span type (`function` unless `type = ...`).
        pub span_type: SpanType,
        /// The function's name (for diagnostics).
        pub function_name: &'static str,
        /// Where the function was called (`context.caller_filename` /
        /// `caller_lineno`); see [`caller_location`].
        pub location: &'static Location<'static>,
    }

    /// The span type named `name` (`"llm"` → [`SpanType::Llm`]), looked up in
    /// [`SpanType::ALL`], the one list of span types; for an unknown name,
    /// the message naming the known ones. `#[traced(type = "...")]` calls it
    /// in a `const` spanned at the user's literal and panics with the
    /// message, so a mistake is a compile error there: "evaluation panicked:
    /// unknown span type "model"; expected one of: llm, score, ...".
    // Evaluated only at compile time: the error's size costs nothing.
    #[allow(clippy::result_large_err)]
    pub const fn span_type(name: &str) -> Result<SpanType, ConstText> {
        let mut i = 0;
        while i < SpanType::ALL.len() {
            if str_eq(SpanType::ALL[i].as_str(), name) {
                return Ok(SpanType::ALL[i]);
            }
            i += 1;
        }
        let mut message = ConstText::new();
        message.push("unknown span type \"");
        // A name too long for the message is left out (the error points at it).
        if name.len() <= 64 {
            message.push(name);
        } else {
            message.push("...");
        }
        message.push("\"; expected one of: ");
        let mut i = 0;
        while i < SpanType::ALL.len() {
            if i > 0 {
                message.push(", ");
            }
            message.push(SpanType::ALL[i].as_str());
            i += 1;
        }
        Err(message)
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// A string built in a `const fn` (for [`span_type`]'s message): whole
    /// `&str`s only, so the bytes stay UTF-8.
    pub struct ConstText {
        bytes: [u8; 256],
        len: usize,
    }

    impl ConstText {
        const fn new() -> Self {
            ConstText {
                bytes: [0; 256],
                len: 0,
            }
        }

        const fn push(&mut self, s: &str) {
            let s = s.as_bytes();
            let mut i = 0;
            while i < s.len() && self.len < self.bytes.len() {
                self.bytes[self.len] = s[i];
                self.len += 1;
                i += 1;
            }
        }

        /// The text.
        pub const fn as_str(&self) -> &str {
            let (text, _) = self.bytes.split_at(self.len);
            match std::str::from_utf8(text) {
                Ok(s) => s,
                Err(_) => "unknown span type",
            }
        }
    }

    /// Starts the span of a traced call. `capture` returns the captured
    /// arguments (`None` when none are captured) and the `metadata = ...`
    /// value; it runs here, out of line, so the traced function's own code
    /// stays small on the path where tracing is off.
    #[inline(never)]
    pub fn start<F>(meta: SpanMeta, capture: F) -> Span
    where
        F: FnOnce() -> (Option<Value>, Option<Value>),
    {
        let (input, metadata) = capture();
        start_span_with(meta, input, metadata, None)
    }

    /// The span current where a traced `async fn` is called (`None` when
    /// none is: no allocation). Its future keeps it as the parent to use if
    /// nothing is current at its first poll, so `tokio::spawn(f(x))` nests
    /// under the caller's span (as Python's `create_task` copies the context).
    #[inline]
    pub fn call_parent() -> Option<Span> {
        if crate::context::has_current() {
            Some(crate::context::current_span())
        } else {
            None
        }
    }

    /// Whether a traced `async fn` called with `parent` records a span.
    #[inline]
    pub fn enabled_with(parent: &Option<Span>) -> bool {
        parent.is_some() || is_enabled()
    }

    /// [`start`] at the first poll of a traced `async fn`: under the span
    /// current now if there is one (an explicit `.in_span(..)` wins), else
    /// under `parent`, the span current at the call.
    #[inline(never)]
    pub fn start_in<F>(meta: SpanMeta, parent: Option<Span>, capture: F) -> Span
    where
        F: FnOnce() -> (Option<Value>, Option<Value>),
    {
        let (input, metadata) = capture();
        let parent = parent.filter(|_| !crate::context::has_current());
        start_span_with(meta, input, metadata, parent)
    }

    fn start_span_with(
        meta: SpanMeta,
        input: Option<Value>,
        metadata: Option<Value>,
        parent: Option<Span>,
    ) -> Span {
        let mut event = Event::new();
        if let Some(input) = input {
            event = event.input(input);
        }
        match metadata {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => event = event.metadata(Value::Object(m)),
            Some(_) => {
                crate::diagnostics::warn_once(
                    &format!("traced-metadata-{}", meta.function_name),
                    &format!(
                        "braintrust: #[traced] on `{}`: `metadata` must be a JSON object; ignored",
                        meta.function_name
                    ),
                );
            }
        }
        // No `caller_functionname`: Python records the *caller's* function,
        // which Rust cannot know (the location is the call site).
        let mut args = SpanArgs::new()
            .name(meta.name)
            .span_type(meta.span_type)
            .event(event);
        if let Some(p) = parent {
            args = args.parent(p);
        }
        start_span_at(args, meta.location)
    }

    /// Logs a sync call's return value with `record` (which runs the
    /// dispatch at the macro's call site, where the type is known) and ends
    /// the span. Out of line, like [`start`].
    #[inline(never)]
    pub fn finish<R: ?Sized, C: FnOnce(&Span, &R)>(span: Span, ret: &R, record: C) {
        record(&span, ret);
        span.end();
    }

    /// The `input` object from `(name, value)` pairs.
    pub fn input<const N: usize>(args: [(&'static str, Value); N]) -> Value {
        let mut m = Map::with_capacity(N);
        for (k, v) in args {
            m.insert(k.to_string(), v);
        }
        Value::Object(m)
    }

    /// Serializes a `metadata = ...` value.
    pub fn to_json<T: Serialize + ?Sized>(v: &T) -> Option<Value> {
        match serde_json::to_value(v) {
            Ok(v) => Some(v),
            Err(e) => {
                crate::diagnostics::warn_once(
                    "traced-metadata-serialize",
                    &format!("braintrust: #[traced] `metadata` could not be serialized: {e}"),
                );
                None
            }
        }
    }

    /// Runs a sync body with `span` current (`None`: tracing is off, just
    /// run it); see the module docs for panics.
    #[inline(always)]
    pub fn run_sync<R>(span: Option<&Span>, f: impl FnOnce() -> R) -> R {
        match span {
            None => f(),
            Some(span) => run_in_span(span, f),
        }
    }

    #[inline(never)]
    fn run_in_span<R>(span: &Span, f: impl FnOnce() -> R) -> R {
        super::run_in(span, f)
    }

    /// [`run_sync`] for `-> !` functions.
    pub fn run_never<R>(span: Option<&Span>, f: impl FnOnce() -> R) -> ! {
        let _ = run_sync(span, f);
        unreachable!("a `-> !` function returned")
    }

    /// Runs `fut` in `span`; on completion calls `on_ready` (which logs the
    /// output at the macro's call site, where its type is known), then ends
    /// the span. With `None` it only polls `fut`.
    pub fn traced_future<F, C>(
        span: Option<Span>,
        fut: F,
        on_ready: C,
    ) -> TracedFuture<F, RecordWith<C>>
    where
        F: std::future::Future,
        C: FnOnce(&Span, &F::Output),
    {
        TracedFuture::new(span.unwrap_or(Span::noop()), fut, RecordWith(on_ready))
    }

    /// [`OnReady`] that runs a closure, then ends the span.
    pub struct RecordWith<C>(C);

    impl<T, C: FnOnce(&Span, &T)> OnReady<T> for RecordWith<C> {
        fn on_ready(self, span: &Span, output: &T) {
            if !span.is_noop() {
                (self.0)(span, output);
            }
            span.end();
        }
    }

    /// Logs an output value.
    pub fn log_output(span: &Span, v: Value) {
        let _ = span.log(Event::new().output(v));
    }

    /// Logs an error text.
    pub fn log_error(span: &Span, e: String) {
        let _ = span.log(Event::new().error(e));
    }

    // ----- value capture -------------------------------------------------

    /// A borrowed value to capture; see the module docs.
    pub struct Capture<'a, T: ?Sized>(pub &'a T);

    /// Capture of a transparent wrapper (highest priority): its inner value,
    /// as JSON. With the `axum` feature: `axum::Json<T>` and
    /// `(StatusCode, Json<T>)` (a `Result<Json<T>, E>` is viewed as a
    /// `Result` first, so its `Ok` lands here too).
    pub trait CaptureWrapper {
        /// The inner value as JSON.
        fn __bt_capture(&self) -> Value;
    }
    #[cfg(feature = "axum")]
    impl<T: Serialize> CaptureWrapper for &&&Capture<'_, axum::Json<T>> {
        fn __bt_capture(&self) -> Value {
            super::json_or_placeholder(&self.0 .0)
        }
    }
    #[cfg(feature = "axum")]
    impl<T: Serialize> CaptureWrapper for &&&Capture<'_, (http::StatusCode, axum::Json<T>)> {
        fn __bt_capture(&self) -> Value {
            super::json_or_placeholder(&self.0 .1 .0)
        }
    }

    /// Capture by `Serialize`.
    pub trait CaptureSerialize {
        /// The value as JSON.
        fn __bt_capture(&self) -> Value;
    }
    impl<T: Serialize + ?Sized> CaptureSerialize for &&Capture<'_, T> {
        fn __bt_capture(&self) -> Value {
            serde_json::to_value(self.0).unwrap_or_else(|e| {
                Value::String(format!(
                    "<unserializable {}: {e}>",
                    std::any::type_name::<T>()
                ))
            })
        }
    }

    /// Capture by `Debug`.
    pub trait CaptureDebug {
        /// The value as its `Debug` text.
        fn __bt_capture(&self) -> Value;
    }
    impl<T: Debug + ?Sized> CaptureDebug for &Capture<'_, T> {
        fn __bt_capture(&self) -> Value {
            Value::String(format!("{:?}", self.0))
        }
    }

    /// Capture of anything else: a placeholder naming the type.
    pub trait CaptureOpaque {
        /// `"<unserializable T>"`.
        fn __bt_capture(&self) -> Value;
    }
    impl<T: ?Sized> CaptureOpaque for Capture<'_, T> {
        fn __bt_capture(&self) -> Value {
            Value::String(format!("<unserializable {}>", std::any::type_name::<T>()))
        }
    }

    // ----- return values -------------------------------------------------

    /// A borrowed return value to view as a `Result` or a plain value.
    pub struct Ret<'a, T: ?Sized>(pub &'a T);

    /// A return value: a plain value (or `Ok`), or an `Err`.
    pub enum View<'a, T: ?Sized, E: ?Sized> {
        /// A plain value or the `Ok` of a `Result`.
        Value(&'a T),
        /// The `Err` of a `Result`.
        Err(&'a E),
    }

    /// The error type of the view of a non-`Result` value.
    pub enum NoError {}

    /// Views a `Result` (higher priority).
    pub trait ViewResult<'a, T, E> {
        /// The view.
        fn __bt_view(&self) -> View<'a, T, E>;
    }
    impl<'a, T, E> ViewResult<'a, T, E> for &Ret<'a, Result<T, E>> {
        fn __bt_view(&self) -> View<'a, T, E> {
            match self.0 {
                Ok(v) => View::Value(v),
                Err(e) => View::Err(e),
            }
        }
    }

    /// Views anything else as a plain value.
    pub trait ViewValue<'a, T: ?Sized> {
        /// The view.
        fn __bt_view(&self) -> View<'a, T, NoError>;
    }
    impl<'a, T: ?Sized> ViewValue<'a, T> for Ret<'a, T> {
        fn __bt_view(&self) -> View<'a, T, NoError> {
            View::Value(self.0)
        }
    }

    /// A borrowed error to render as the span's `error` text.
    pub struct ErrorText<'a, E: ?Sized>(pub &'a E);

    /// `std::error::Error`: `Display` and the `source()` chain.
    pub trait ErrorStd {
        /// The text.
        fn __bt_error(&self) -> String;
    }
    impl<E: StdError + 'static> ErrorStd for &&&&&ErrorText<'_, E> {
        fn __bt_error(&self) -> String {
            error_string(self.0)
        }
    }

    /// `AsRef<dyn Error + Send + Sync>` (`anyhow::Error`, `Box<dyn Error + Send + Sync>`).
    pub trait ErrorAsRefSendSync {
        /// The text.
        fn __bt_error(&self) -> String;
    }
    impl<E: AsRef<dyn StdError + Send + Sync + 'static> + ?Sized> ErrorAsRefSendSync
        for &&&&ErrorText<'_, E>
    {
        fn __bt_error(&self) -> String {
            let e: &(dyn StdError + 'static) = self.0.as_ref();
            error_string(e)
        }
    }

    /// `AsRef<dyn Error>` (`Box<dyn Error>`).
    pub trait ErrorAsRef {
        /// The text.
        fn __bt_error(&self) -> String;
    }
    impl<E: AsRef<dyn StdError + 'static> + ?Sized> ErrorAsRef for &&&ErrorText<'_, E> {
        fn __bt_error(&self) -> String {
            error_string(self.0.as_ref())
        }
    }

    /// `Display` (e.g. `String`).
    pub trait ErrorDisplay {
        /// The text.
        fn __bt_error(&self) -> String;
    }
    impl<E: Display + ?Sized> ErrorDisplay for &&ErrorText<'_, E> {
        fn __bt_error(&self) -> String {
            self.0.to_string()
        }
    }

    /// `Debug`.
    pub trait ErrorDebug {
        /// The text.
        fn __bt_error(&self) -> String;
    }
    impl<E: Debug + ?Sized> ErrorDebug for &ErrorText<'_, E> {
        fn __bt_error(&self) -> String {
            format!("{:?}", self.0)
        }
    }

    /// Anything else.
    pub trait ErrorOpaque {
        /// The text.
        fn __bt_error(&self) -> String;
    }
    impl<E: ?Sized> ErrorOpaque for ErrorText<'_, E> {
        fn __bt_error(&self) -> String {
            format!("<error of type {}>", std::any::type_name::<E>())
        }
    }
}

/// `capture!(&value)`: the JSON `#[traced]` logs for a value (see
/// `__macro_support`).
#[doc(hidden)]
#[macro_export]
macro_rules! __traced_capture {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::traced::__macro_support::{
            CaptureDebug as _, CaptureOpaque as _, CaptureSerialize as _, CaptureWrapper as _,
        };
        (&&&&$crate::traced::__macro_support::Capture($value)).__bt_capture()
    }};
}

/// `error_text!(&err)`: the `error` text `#[traced]` logs for an `Err`.
#[doc(hidden)]
#[macro_export]
macro_rules! __traced_error_text {
    ($err:expr) => {{
        #[allow(unused_imports)]
        use $crate::traced::__macro_support::{
            ErrorAsRef as _, ErrorAsRefSendSync as _, ErrorDebug as _, ErrorDisplay as _,
            ErrorOpaque as _, ErrorStd as _,
        };
        (&&&&&&$crate::traced::__macro_support::ErrorText($err)).__bt_error()
    }};
}

/// `record_return!(span, &ret, output)` logs a return value (`Ok`/plain as
/// `output`, `Err` as `error`); `record_return!(span, &ret, map(v => expr))`
/// logs `expr` (with `v` bound to the `Ok`/plain value) as `output` instead;
/// `record_return!(span, &ret, error_only)` logs only an `Err`.
#[doc(hidden)]
#[macro_export]
macro_rules! __traced_record_return {
    ($span:expr, $ret:expr, output) => {{
        #[allow(unused_imports)]
        use $crate::traced::__macro_support::{ViewResult as _, ViewValue as _};
        match (&&$crate::traced::__macro_support::Ret($ret)).__bt_view() {
            $crate::traced::__macro_support::View::Value(__bt_v) => {
                $crate::traced::__macro_support::log_output(
                    $span,
                    $crate::__traced_capture!(__bt_v),
                )
            }
            $crate::traced::__macro_support::View::Err(__bt_e) => {
                $crate::traced::__macro_support::log_error(
                    $span,
                    $crate::__traced_error_text!(__bt_e),
                )
            }
        }
    }};
    ($span:expr, $ret:expr, map($v:ident => $mapped:expr)) => {{
        #[allow(unused_imports)]
        use $crate::traced::__macro_support::{ViewResult as _, ViewValue as _};
        match (&&$crate::traced::__macro_support::Ret($ret)).__bt_view() {
            $crate::traced::__macro_support::View::Value($v) => {
                $crate::traced::__macro_support::log_output(
                    $span,
                    $crate::__traced_capture!(&$mapped),
                )
            }
            $crate::traced::__macro_support::View::Err(__bt_e) => {
                $crate::traced::__macro_support::log_error(
                    $span,
                    $crate::__traced_error_text!(__bt_e),
                )
            }
        }
    }};
    ($span:expr, $ret:expr, error_only) => {{
        #[allow(unused_imports)]
        use $crate::traced::__macro_support::{ViewResult as _, ViewValue as _};
        match (&&$crate::traced::__macro_support::Ret($ret)).__bt_view() {
            $crate::traced::__macro_support::View::Value(_) => {}
            $crate::traced::__macro_support::View::Err(__bt_e) => {
                $crate::traced::__macro_support::log_error(
                    $span,
                    $crate::__traced_error_text!(__bt_e),
                )
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{init_logger, Config, LoggerOptions, State};
    use braintrust_devserver::{DevServer, DevServerConfig};
    use serde_json::json;
    use std::fmt;

    #[derive(Serialize, Debug)]
    struct Both {
        a: u8,
    }
    #[derive(Debug)]
    struct DebugOnly(#[allow(dead_code)] u8);
    struct Neither;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn traced_span_types_are_span_type_all() {
        use crate::span::SpanType;
        use __macro_support::span_type;
        for t in SpanType::ALL {
            assert_eq!(span_type(t.as_str()).ok(), Some(t));
        }
        let message = |name: &str| match span_type(name) {
            Ok(t) => panic!("{name:?} is {t:?}"),
            Err(m) => m.as_str().to_string(),
        };
        // The same text as `SpanType::from_str`'s error.
        let expected = "model".parse::<SpanType>().unwrap_err().to_string();
        assert!(expected.ends_with(&message("model")), "{expected}");
        assert!(message("Llm").starts_with("unknown span type \"Llm\"; expected one of: llm, "));
        let long = "x".repeat(100);
        assert!(message(&long).starts_with("unknown span type \"...\"; expected one of:"));
    }

    #[test]
    fn capture_prefers_serialize_then_debug_then_placeholder() {
        assert_eq!(crate::__traced_capture!(&Both { a: 1 }), json!({"a": 1}));
        assert_eq!(
            crate::__traced_capture!(&DebugOnly(2)),
            json!("DebugOnly(2)")
        );
        assert_eq!(
            crate::__traced_capture!(&Neither),
            json!(format!(
                "<unserializable {}>",
                std::any::type_name::<Neither>()
            ))
        );
        let s: &str = "hi";
        assert_eq!(crate::__traced_capture!(&s), json!("hi"));
        let mut v = vec![1, 2];
        let m: &mut Vec<i32> = &mut v;
        assert_eq!(crate::__traced_capture!(&m), json!([1, 2]));
        assert_eq!(crate::__traced_capture!(&None::<u8>), Value::Null);
        assert_eq!(crate::__traced_capture!(&()), Value::Null);
    }

    #[cfg(feature = "axum")]
    #[test]
    fn capture_unwraps_axum_json() {
        let j = axum::Json(Both { a: 1 });
        assert_eq!(crate::__traced_capture!(&j), json!({"a": 1}));
        let t = (http::StatusCode::CREATED, axum::Json(Both { a: 2 }));
        assert_eq!(crate::__traced_capture!(&t), json!({"a": 2}));
        // Nothing to serialize inside: the wrapper's Debug text, as before.
        let d = axum::Json(DebugOnly(3));
        assert_eq!(crate::__traced_capture!(&d), json!("Json(DebugOnly(3))"));
    }

    #[test]
    fn capture_in_generic_code_follows_the_declared_bounds() {
        fn bounded<T: Serialize>(t: &T) -> Value {
            crate::__traced_capture!(t)
        }
        fn debug<T: fmt::Debug>(t: &T) -> Value {
            crate::__traced_capture!(t)
        }
        fn unbounded<T>(t: &T) -> Value {
            crate::__traced_capture!(t)
        }
        assert_eq!(bounded(&3), json!(3));
        assert_eq!(debug(&Both { a: 1 }), json!("Both { a: 1 }"));
        assert_eq!(unbounded(&3), json!("<unserializable i32>"));
    }

    #[test]
    fn capture_reports_serialize_failures() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let v = crate::__traced_capture!(&Fails);
        assert!(v.as_str().unwrap().starts_with("<unserializable "), "{v}");
        assert!(v.as_str().unwrap().ends_with(": nope>"), "{v}");
    }

    #[test]
    fn error_text_dispatch() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(
            crate::__traced_error_text!(&e),
            "outer failed\n\nCaused by:\n    0: disk on fire"
        );
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Outer(std::io::Error::other("x")));
        assert_eq!(
            crate::__traced_error_text!(&boxed),
            "outer failed\n\nCaused by:\n    0: x"
        );
        let boxed: Box<dyn std::error::Error> = "plain".into();
        assert_eq!(crate::__traced_error_text!(&boxed), "plain");
        assert_eq!(crate::__traced_error_text!(&String::from("bad")), "bad");
        assert_eq!(crate::__traced_error_text!(&DebugOnly(1)), "DebugOnly(1)");
        assert!(crate::__traced_error_text!(&Neither).starts_with("<error of type "));
    }

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows pick the impl; that is the point
    fn result_view_splits_ok_and_err() {
        use __macro_support::{ViewResult as _, ViewValue as _};
        let ok: Result<u8, String> = Ok(1);
        assert!(matches!(
            (&&__macro_support::Ret(&ok)).__bt_view(),
            __macro_support::View::Value(1)
        ));
        let err: Result<u8, String> = Err("e".into());
        assert!(
            matches!((&&__macro_support::Ret(&err)).__bt_view(), __macro_support::View::Err(e) if e == "e")
        );
        let plain = Some(3u8);
        assert!(matches!(
            (&&__macro_support::Ret(&plain)).__bt_view(),
            __macro_support::View::Value(Some(3))
        ));
    }

    #[test]
    fn panic_error_reads_str_and_string_payloads() {
        let p = panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_error(&*p), "panicked: static");
        let p = panic::catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_error(&*p), "panicked: Box<dyn Any>");
    }

    #[test]
    fn noop_span_runs_the_body_and_touches_nothing() {
        assert_eq!(__macro_support::run_sync(None, || 41 + 1), 42);
        assert_eq!(__macro_support::run_sync(Some(&Span::noop()), || 1), 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let fut = TracedFuture::new(Span::noop(), async { 7 }, EndSpan);
        assert_eq!(rt.block_on(fut), 7);
        // Dropped half-way with a no-op span: nothing to record, no panic.
        drop(TracedFuture::new(
            Span::noop(),
            std::future::pending::<()>(),
            EndSpan,
        ));
    }

    /// A logger on a fresh devserver, not the current logger, so tests run in parallel.
    fn setup() -> (DevServer, crate::Logger) {
        let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
        let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
        let logger = init_logger(LoggerOptions::new().project("traced-unit").state(state)).unwrap();
        (server, logger)
    }

    fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == name)
            .unwrap_or_else(|| panic!("no row named {name}: {rows:#?}"))
    }

    #[test]
    fn closure_forms_nest_and_record_panics() {
        let (server, logger) = setup();
        let root = logger.start_span(SpanArgs::new().name("root"));
        root.in_scope(|| {
            traced_sync(SpanArgs::new().name("outer"), |outer| {
                assert!(outer.is_current());
                traced_sync(SpanArgs::new().name("inner"), |_| ());
            });
            let r = panic::catch_unwind(|| {
                traced_sync(SpanArgs::new().name("boom"), |_| panic!("kaboom"))
            });
            assert!(r.is_err());
            let add = wrap_traced(SpanArgs::new().name("add"), |(a, b): (i32, i32)| a + b);
            assert_eq!(add((1, 2)), 3);
        });
        root.end();
        logger.flush().unwrap();
        let rows = server.rows();
        let outer = row(&rows, "outer");
        let inner = row(&rows, "inner");
        assert_eq!(inner["span_parents"], json!([outer["span_id"]]));
        assert_eq!(outer["span_parents"], json!([root.span_id()]));
        assert_eq!(row(&rows, "boom")["error"], "panicked: kaboom");
        let add = row(&rows, "add");
        assert_eq!(add["input"], json!([1, 2]));
        assert_eq!(add["output"], json!(3));
        assert!(add["metrics"]["end"].is_number());
    }

    #[test]
    fn traced_future_records_cancellation_panics_and_completion() {
        let (server, logger) = setup();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let root = logger.start_span(SpanArgs::new().name("root"));
        let root2 = root.clone();
        rt.block_on(async move {
            let _g = root2.enter();
            let done = traced_async(SpanArgs::new().name("done"), |span| async move {
                tokio::task::yield_now().await;
                assert!(span.is_current());
                7
            });
            drop(_g);
            assert_eq!(done.await, 7);
            let slow = root2.in_scope(|| {
                traced_async(SpanArgs::new().name("slow"), |_| async {
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                })
            });
            let r = tokio::time::timeout(std::time::Duration::from_millis(10), slow).await;
            assert!(r.is_err());
            let bad = root2.in_scope(|| {
                traced_async(SpanArgs::new().name("bad"), |_| async {
                    tokio::task::yield_now().await;
                    panic!("async boom")
                })
            });
            let r = futures_util::FutureExt::catch_unwind(AssertUnwindSafe(bad)).await;
            assert!(r.is_err());
            let shout = root2.in_scope(|| {
                wrap_traced_async(SpanArgs::new().name("shout"), |s: String| async move {
                    s.to_uppercase()
                })
            });
            let fut = root2.in_scope(|| shout("hi".to_string()));
            assert_eq!(fut.await, "HI");
        });
        root.end();
        logger.flush().unwrap();
        let rows = server.rows();
        let done = row(&rows, "done");
        assert!(done["metrics"]["end"].is_number());
        assert!(done.get("error").is_none_or(|e| e.is_null()));
        assert_eq!(done["span_parents"], json!([root.span_id()]));
        let slow = row(&rows, "slow");
        assert_eq!(slow["error"], CANCELLED);
        assert!(slow["metrics"]["end"].is_number());
        assert_eq!(row(&rows, "bad")["error"], "panicked: async boom");
        assert_eq!(row(&rows, "shout")["output"], "HI");
        assert_eq!(row(&rows, "shout")["input"], "hi");
    }
}
