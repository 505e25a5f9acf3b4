//! tower/axum middleware: one Braintrust span per HTTP request, and the
//! client-side counterpart for outgoing requests.
//!
//! [`SpanLayer`] opens a span for every request it sees:
//!
//! - **name**: `"<METHOD> <route template>"` (`GET /users/{id}`) from axum's
//!   `MatchedPath`, so raw paths do not multiply span names; `"<METHOD>"`
//!   where no route matched or outside an axum `Router`;
//! - **metadata**: `method`, `route`, `path`, `status_code`; **metrics**:
//!   `latency` (seconds until the response headers);
//! - **parent**: an incoming W3C `traceparent` (with `baggage`'s
//!   `braintrust.parent`) or an exported Braintrust slug in `x-bt-parent`
//!   continues that trace; otherwise a new root of the logger;
//! - **current for the handler**: spans the handler starts (`#[traced]`,
//!   `tracing` spans through the `tracing` layer) nest under it, including in
//!   tasks spawned with a direct traced call or `braintrust::spawn`;
//! - **errors**: a 4xx/5xx response sets `error` to `"HTTP <status>"` plus
//!   the start of the response body, so an extractor rejection (invalid JSON,
//!   422) is recorded with its reason; a service error sets `error` too, and
//!   a request dropped before its response (client gone) is `"cancelled"`.
//!
//! Add it with `Router::layer` *after* other layers (it is then the outermost
//! and its span is current when `tower_http::trace::TraceLayer` makes its
//! span) so `MatchedPath` is known:
//!
//! ```
//! use axum::{routing::get, Router};
//! use braintrust_integrations::tower::SpanLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "hi" }))
//!     .layer(tower_http::trace::TraceLayer::new_for_http())
//!     .layer(SpanLayer::new());
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use braintrust_core::{current_span, extract, Event, Logger, Parent, Span, SpanArgs};
use bytes::Buf;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Map, Value};

/// The header a Braintrust slug travels in (the official SDKs' convention).
pub const SLUG_HEADER: &str = "x-bt-parent";

/// Bytes of an error response's body kept in the span's `error`.
const ERROR_BODY_BYTES: usize = 1024;

/// A `tower::Layer` that opens one Braintrust span per request; see the
/// [module docs](self).
#[derive(Clone, Default)]
pub struct SpanLayer {
    logger: Option<Logger>,
}

impl fmt::Debug for SpanLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanLayer")
            .field("logger", &self.logger.is_some())
            .finish()
    }
}

impl SpanLayer {
    /// Spans go to the current logger (`braintrust::start_span`).
    pub fn new() -> Self {
        SpanLayer { logger: None }
    }

    /// Spans go to `logger`.
    ///
    /// ```no_run
    /// # fn f(logger: braintrust_core::Logger) {
    /// let layer = braintrust_integrations::tower::SpanLayer::with_logger(logger);
    /// # }
    /// ```
    pub fn with_logger(logger: Logger) -> Self {
        SpanLayer {
            logger: Some(logger),
        }
    }
}

impl<S> tower_layer::Layer<S> for SpanLayer {
    type Service = SpanService<S>;
    fn layer(&self, inner: S) -> SpanService<S> {
        SpanService {
            inner,
            logger: self.logger.clone(),
        }
    }
}

/// The service [`SpanLayer`] wraps around the inner one.
#[derive(Clone)]
pub struct SpanService<S> {
    inner: S,
    logger: Option<Logger>,
}

impl<S> fmt::Debug for SpanService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanService").finish_non_exhaustive()
    }
}

/// The parent an incoming request names: W3C context first, then a slug.
fn incoming_parent(headers: &HeaderMap) -> Option<Parent> {
    if let Some(ctx) = extract(headers) {
        return Some(Parent::W3c(ctx));
    }
    headers
        .get(SLUG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Parent::Slug(s.to_string()))
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for SpanService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    ResBody: Body,
{
    type Response = Response<SpanBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = req.method().as_str().to_string();
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str().to_string());
        let name = match &route {
            Some(r) => format!("{method} {r}"),
            None => method.clone(),
        };
        let mut metadata = Map::new();
        metadata.insert("method".into(), Value::String(method));
        if let Some(r) = route {
            metadata.insert("route".into(), Value::String(r));
        }
        metadata.insert("path".into(), Value::String(req.uri().path().to_string()));
        let mut args = SpanArgs::new()
            .name(name)
            .instrumentation("tower")
            .event(Event::new().metadata(Value::Object(metadata)));
        if let Some(p) = incoming_parent(req.headers()) {
            args = args.parent(p);
        }
        let span = match &self.logger {
            Some(l) => l.start_span(args),
            None => braintrust_core::start_span(args),
        };
        let inner = span.in_scope(|| self.inner.call(req));
        ResponseFuture {
            inner,
            open: Open(Some(span)),
            started: Instant::now(),
        }
    }
}

/// A request's span until its response is complete; dropped earlier, it
/// records the request as cancelled.
struct Open(Option<Span>);

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            let _ = span.log(Event::new().error(braintrust_core::__internal::CANCELLED));
            span.end();
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SpanService`]: the inner future polled with
    /// the request's span current.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        open: Open,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: fmt::Display,
    ResBody: Body,
{
    type Output = Result<Response<SpanBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match &this.open.0 {
            Some(span) => {
                let _current = span.enter();
                std::task::ready!(this.inner.poll(cx))
            }
            None => std::task::ready!(this.inner.poll(cx)),
        };
        let Some(span) = this.open.0.take() else {
            // Polled again after completion: pass through untraced.
            return Poll::Ready(result.map(|r| r.map(SpanBody::plain)));
        };
        let latency = this.started.elapsed().as_secs_f64();
        match result {
            Ok(resp) => {
                let status = resp.status();
                let _ = span.log(
                    Event::new()
                        .metadata_entry("status_code", status.as_u16())
                        .metric("latency", latency),
                );
                if status.is_client_error() || status.is_server_error() {
                    let error = format!("HTTP {status}");
                    Poll::Ready(Ok(resp.map(|b| SpanBody::error(b, span, error))))
                } else {
                    span.end();
                    Poll::Ready(Ok(resp.map(SpanBody::plain)))
                }
            }
            Err(e) => {
                let _ = span.log(Event::new().error(e.to_string()).metric("latency", latency));
                span.end();
                Poll::Ready(Err(e))
            }
        }
    }
}

/// An error response's span, ended with the start of the body in `error`
/// once the body is done (or dropped).
struct ErrorRecord {
    span: Span,
    error: String,
    body: Vec<u8>,
}

impl Drop for ErrorRecord {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let error = if text.is_empty() {
            std::mem::take(&mut self.error)
        } else {
            format!("{}: {text}", self.error)
        };
        let _ = self.span.log(Event::new().error(error));
        self.span.end();
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`SpanService`]: the inner body unchanged; for
    /// an error response it also keeps the body's first bytes for the span.
    pub struct SpanBody<B> {
        #[pin]
        inner: B,
        record: Option<ErrorRecord>,
    }
}

impl<B> SpanBody<B> {
    fn plain(inner: B) -> Self {
        SpanBody {
            inner,
            record: None,
        }
    }

    fn error(inner: B, span: Span, error: String) -> Self {
        SpanBody {
            inner,
            record: Some(ErrorRecord {
                span,
                error,
                body: Vec::new(),
            }),
        }
    }
}

impl<B: Body> Body for SpanBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match (&frame, this.record.as_mut()) {
            (Some(Ok(f)), Some(rec)) => {
                if let Some(data) = f.data_ref() {
                    let room = ERROR_BODY_BYTES.saturating_sub(rec.body.len());
                    let chunk = data.chunk();
                    rec.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            (None, Some(_)) => {
                this.record.take();
            }
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Writes the current span's W3C context (`traceparent`, `baggage`) into
/// outgoing headers; nothing when no span is current.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// braintrust_integrations::tower::inject_current(&mut headers);
/// assert!(headers.is_empty()); // no span is current here
/// ```
pub fn inject_current(headers: &mut HeaderMap) {
    current_span().inject(headers);
}

/// Adds the current span's trace context to an outgoing `reqwest` request,
/// so the service it calls continues the trace.
///
/// ```no_run
/// use braintrust_integrations::tower::TraceContextExt;
/// # async fn f() -> reqwest::Result<()> {
/// let client = reqwest::Client::new();
/// client.get("http://127.0.0.1:8080/users/7").with_trace_context().send().await?;
/// # Ok(()) }
/// ```
pub trait TraceContextExt {
    /// The request with `traceparent` and `baggage` for the current span.
    fn with_trace_context(self) -> Self;
}

impl TraceContextExt for reqwest::RequestBuilder {
    fn with_trace_context(self) -> Self {
        let mut headers = HeaderMap::new();
        inject_current(&mut headers);
        if headers.is_empty() {
            self
        } else {
            self.headers(headers)
        }
    }
}
