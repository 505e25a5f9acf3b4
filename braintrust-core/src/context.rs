//! Which span is current. One thread-local slot: sync code sets it for the
//! extent of a scope ([`Span::enter`]), and futures wrapped by [`InSpan`] set it
//! around every `poll`, so the current span follows a task across `.await`
//! and worker threads, on any executor.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::span::Span;

thread_local! {
    static CURRENT: RefCell<Option<Span>> = const { RefCell::new(None) };
}

/// The span current on this thread or task, or a no-op span when none is.
///
/// ```
/// let span = braintrust_core::current_span();
/// assert!(span.is_noop());
/// ```
pub fn current_span() -> Span {
    CURRENT
        .try_with(|c| c.borrow().clone())
        .ok()
        .flatten()
        .unwrap_or_else(Span::noop)
}

/// Makes `span` current on this thread (the no-op span: none) and returns
/// the span that was current. For integrations whose enter and exit are two
/// callbacks, such as a `tracing` layer's `on_enter`/`on_exit`: call it again
/// with the returned span to restore. [`Span::enter`] is the guard form.
///
/// ```
/// use braintrust_core::{replace_current_span, Span};
/// let previous = replace_current_span(Span::noop());
/// assert!(previous.is_noop());
/// replace_current_span(previous);
/// ```
pub fn replace_current_span(span: Span) -> Span {
    let next = if span.is_noop() { None } else { Some(span) };
    if next.is_none() && !has_current() {
        return Span::noop();
    }
    set_current(next).unwrap_or_else(Span::noop)
}

/// True when some span is current here (cheaper than `current_span()`).
#[inline]
pub(crate) fn has_current() -> bool {
    CURRENT.try_with(|c| c.borrow().is_some()).unwrap_or(false)
}

/// Makes `span` current; the previous one comes back when the guard drops.
pub(crate) fn set_current(span: Option<Span>) -> Option<Span> {
    CURRENT
        .try_with(|c| std::mem::replace(&mut *c.borrow_mut(), span))
        .ok()
        .flatten()
}

/// Restores the previously current span when dropped, on every exit path,
/// unwinding included. Returned by [`Span::enter`]; not `Send`, because it
/// belongs to the thread whose slot it changed.
#[must_use = "the span is current only while the guard lives"]
pub struct SpanGuard {
    prev: Option<Span>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanGuard")
            .field("prev", &self.prev)
            .finish_non_exhaustive()
    }
}

impl SpanGuard {
    pub(crate) fn enter(span: &Span) -> SpanGuard {
        let prev = if span.is_noop() && !has_current() {
            None
        } else {
            set_current(if span.is_noop() {
                None
            } else {
                Some(span.clone())
            })
        };
        SpanGuard {
            prev,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let replaced = set_current(prev);
        drop(replaced);
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with a span current on every poll, and while it is
    /// dropped. Made by [`WithSpan::in_span`] / [`WithSpan::with_current_span`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct InSpan<F> {
        #[pin]
        inner: Option<F>,
        span: Span,
    }

    impl<F> PinnedDrop for InSpan<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _g = SpanGuard::enter(this.span);
            this.inner.set(None);
        }
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _g = SpanGuard::enter(this.span);
        match this.inner.as_pin_mut() {
            Some(f) => f.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<F> std::fmt::Debug for InSpan<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSpan")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F> InSpan<F> {
    /// The span this future runs in.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

/// Attaches a span to a future, in the spirit of `tracing::Instrument` (named apart from it, so both can be imported).
///
/// ```
/// use braintrust_core::{current_span, WithSpan};
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     // With no logger the current span is a no-op, and stays one.
///     async { assert!(current_span().is_noop()) }.with_current_span().await
/// });
/// ```
pub trait WithSpan: Future + Sized {
    /// Runs this future with `span` current on every poll.
    fn in_span(self, span: Span) -> InSpan<Self> {
        InSpan {
            inner: Some(self),
            span,
        }
    }
    /// Runs this future in the span that is current now, wherever it is polled later.
    fn with_current_span(self) -> InSpan<Self> {
        self.in_span(current_span())
    }
}

impl<F: Future> WithSpan for F {}
