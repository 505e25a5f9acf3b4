//! Braintrust for Rust services as they are already instrumented, each part
//! behind a cargo feature (none enabled by default):
//!
//! - `tracing`: [`tracing_layer::BraintrustLayer`], a `tracing-subscriber`
//!   layer that turns `tracing` spans inside a Braintrust trace into
//!   Braintrust spans (GenAI semantic-convention spans become `llm` spans);
//! - `tower`: [`tower::SpanLayer`], one Braintrust span per HTTP request for
//!   tower/axum services, continuing incoming W3C or slug context, and
//!   [`tower::inject_current`] / [`tower::TraceContextExt`] for outgoing
//!   requests;
//! - `opentelemetry`: [`otel::BraintrustExporter`], an OTel `SpanExporter` to
//!   Braintrust's OTLP endpoint (or any OTLP/HTTP collector), and W3C
//!   context interop between OTel and Braintrust spans.
//!
//! Use them through the `braintrust` facade's features of the same names
//! (`braintrust::tracing_layer`, `braintrust::tower`, `braintrust::otel`).

#![warn(missing_docs)]

#[cfg(feature = "opentelemetry")]
pub mod otel;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "tracing")]
pub mod tracing_layer;
