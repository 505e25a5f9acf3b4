//! OpenTelemetry, both ways.
//!
//! - [`BraintrustExporter`]: an OpenTelemetry SDK `SpanExporter` that sends
//!   OTel spans as OTLP/HTTP protobuf to Braintrust's OTLP endpoint
//!   (`<api url>/otel/v1/traces`, bearer key, `x-bt-parent` naming the
//!   project or experiment), as the official Python and TypeScript exporters
//!   do; the local server (`braintrust-devserver`, `braintrust::local`)
//!   accepts the same requests. [`BraintrustExporter::otlp`] sends to any
//!   OTLP/HTTP collector instead.
//! - [`OtelMirror`]: Braintrust-native spans (`#[traced]`, `start_span`,
//!   the OpenAI wrapper...) exported through any OTel `SpanExporter` as
//!   well, e.g. [`BraintrustExporter::otlp`] to a team's collector, so
//!   Jaeger/Tempo see them next to the service's other spans.
//! - Context interop: [`parent_from_otel`] parents a Braintrust span on an
//!   OTel span's W3C context, and [`otel_context`] parents OTel spans on a
//!   Braintrust span, so a mixed trace forms one tree (both use W3C ids:
//!   the trace id is the `root_span_id`).
//!
//! ```no_run
//! use braintrust_integrations::otel::BraintrustExporter;
//! use opentelemetry::trace::{Tracer, TracerProvider as _};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! // BRAINTRUST_API_KEY, BRAINTRUST_API_URL, BRAINTRUST_PARENT=project_name:my-app
//! let exporter = BraintrustExporter::from_env().unwrap();
//! let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).build();
//! provider.tracer("app").in_span("handle", |_cx| { /* ... */ });
//! provider.shutdown().unwrap();
//! ```

use std::fmt;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use braintrust_core::__internal::redact_url;
use braintrust_core::{Parent, Span, TraceContext};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prost::Message;

mod mirror;
pub use mirror::{MirrorError, MirrorStats, OtelMirror};

/// The default Braintrust API URL (as the official SDKs use).
pub const DEFAULT_API_URL: &str = "https://api.braintrust.dev";

/// A configuration mistake, naming the field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// A setting is missing or malformed.
    #[error("{field}: {rule}")]
    Config {
        /// The setting (or environment variable).
        field: &'static str,
        /// What it must be.
        rule: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One export handed to the sending thread, and where its result goes.
struct Job {
    body: Vec<u8>,
    done: tokio::sync::oneshot::Sender<OTelSdkResult>,
}

/// Sends OTel spans as OTLP/HTTP protobuf; see the [module docs](self).
pub struct BraintrustExporter {
    endpoint: String,
    resource: ResourceAttributesWithSchema,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl fmt::Debug for BraintrustExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("BraintrustExporter")
            .field("endpoint", &redact_url(&self.endpoint))
            .finish_non_exhaustive()
    }
}

fn check_parent(parent: &str) -> Result<(), ExporterError> {
    let ok = ["project_name:", "project_id:", "experiment_id:"]
        .iter()
        .any(|p| parent.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if ok {
        Ok(())
    } else {
        Err(ExporterError::Config {
            field: "parent",
            rule: format!(
                "{parent:?} must be project_name:<name>, project_id:<id> or experiment_id:<id>"
            ),
        })
    }
}

impl BraintrustExporter {
    /// An exporter to Braintrust at `api_url` (`<api_url>/otel/v1/traces`)
    /// with `api_key`, spans going to `parent` (`project_name:<name>`,
    /// `project_id:<id>` or `experiment_id:<id>`).
    ///
    /// ```
    /// use braintrust_integrations::otel::BraintrustExporter;
    /// let e = BraintrustExporter::new("http://127.0.0.1:8000", "key", "project_name:app");
    /// assert!(e.is_ok());
    /// let err = BraintrustExporter::new("http://127.0.0.1:8000", "key", "app").unwrap_err();
    /// assert!(err.to_string().starts_with("parent: "));
    /// ```
    pub fn new(api_url: &str, api_key: &str, parent: &str) -> Result<Self, ExporterError> {
        check_parent(parent)?;
        if api_key.trim().is_empty() {
            return Err(ExporterError::Config {
                field: "api_key",
                rule: "must not be empty".into(),
            });
        }
        let mut headers = http::HeaderMap::new();
        let mut auth =
            http::HeaderValue::from_str(&format!("Bearer {}", api_key.trim())).map_err(|_| {
                ExporterError::Config {
                    field: "api_key",
                    rule: "must be a valid header value".into(),
                }
            })?;
        auth.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, auth);
        headers.insert(
            "x-bt-parent",
            http::HeaderValue::from_str(parent).map_err(|_| ExporterError::Config {
                field: "parent",
                rule: "must be a valid header value".into(),
            })?,
        );
        let endpoint = format!("{}/otel/v1/traces", api_url.trim_end_matches('/'));
        Self::with_headers(endpoint, headers)
    }

    /// [`new`](Self::new) from `BRAINTRUST_API_KEY`, `BRAINTRUST_API_URL`
    /// (default [`DEFAULT_API_URL`]) and `BRAINTRUST_PARENT`.
    pub fn from_env() -> Result<Self, ExporterError> {
        let var = |k: &'static str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let key = var("BRAINTRUST_API_KEY").ok_or(ExporterError::Config {
            field: "BRAINTRUST_API_KEY",
            rule: "must be set".into(),
        })?;
        let parent = var("BRAINTRUST_PARENT").ok_or(ExporterError::Config {
            field: "BRAINTRUST_PARENT",
            rule: "must be set to project_name:<name>, project_id:<id> or experiment_id:<id>"
                .into(),
        })?;
        let url = var("BRAINTRUST_API_URL").unwrap_or_else(|| DEFAULT_API_URL.to_string());
        Self::new(&url, &key, &parent)
    }

    /// An exporter to any OTLP/HTTP collector: `endpoint` is the full URL
    /// (e.g. `http://127.0.0.1:4318/v1/traces`), `headers` are sent as given.
    pub fn otlp(endpoint: &str, headers: http::HeaderMap) -> Result<Self, ExporterError> {
        Self::with_headers(endpoint.to_string(), headers)
    }

    fn with_headers(endpoint: String, mut headers: http::HeaderMap) -> Result<Self, ExporterError> {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let url = endpoint.clone();
        // Messages name the endpoint without its credentials, if any.
        let shown = redact_url(&endpoint);
        // The SDK's processors call `export` from their own threads (or the
        // ending span's), under a plain `block_on`: the HTTP call runs on a
        // thread with its own runtime, whatever the caller runs on.
        std::thread::Builder::new()
            .name("braintrust-otlp".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                for job in rx {
                    let result = rt.block_on(send(&client, &url, &shown, job.body));
                    let _ = job.done.send(result);
                }
            })
            .map_err(|e| ExporterError::Config {
                field: "thread",
                rule: format!("could not start the export thread: {e}"),
            })?;
        Ok(BraintrustExporter {
            endpoint,
            resource: ResourceAttributesWithSchema::default(),
            jobs: Mutex::new(tx),
        })
    }
}

async fn send(client: &reqwest::Client, url: &str, shown: &str, body: Vec<u8>) -> OTelSdkResult {
    let resp = client
        .post(url)
        .body(body)
        .send()
        .await
        .map_err(|e| OTelSdkError::InternalFailure(format!("OTLP export to {shown}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(OTelSdkError::InternalFailure(format!(
        "OTLP export to {shown}: HTTP {status}: {}",
        text.chars().take(300).collect::<String>()
    )))
}

impl SpanExporter for BraintrustExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let queued = self.jobs.lock().map_err(|_| ()).and_then(|tx| {
            tx.send(Job {
                body: request.encode_to_vec(),
                done,
            })
            .map_err(|_| ())
        });
        async move {
            if queued.is_err() {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            result.await.unwrap_or(Err(OTelSdkError::AlreadyShutdown))
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}

/// The Braintrust parent for a span started under the OTel span current in
/// `cx` (`None` without a valid one). `braintrust_parent` names the
/// container (`project_name:<name>`...); without it the span goes to the
/// logger it is started on.
///
/// ```
/// let cx = opentelemetry::Context::new(); // no OTel span
/// assert!(braintrust_integrations::otel::parent_from_otel(&cx, None).is_none());
/// ```
pub fn parent_from_otel(
    cx: &opentelemetry::Context,
    braintrust_parent: Option<&str>,
) -> Option<Parent> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(Parent::W3c(TraceContext {
        traceparent: format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ),
        baggage: braintrust_parent.map(|p| {
            format!(
                "braintrust.parent={}",
                braintrust_core::__internal::w3c::encode_baggage_value(p)
            )
        }),
        tracestate: None,
    }))
}

/// An OTel context whose (remote) parent is `span`: OTel spans started with
/// it are children of the Braintrust span, in its trace. An empty context
/// for the no-op span or legacy (non-W3C) ids.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// let cx = braintrust_integrations::otel::otel_context(&braintrust_core::Span::noop());
/// assert!(!cx.span().span_context().is_valid());
/// ```
pub fn otel_context(span: &Span) -> opentelemetry::Context {
    let trace_id = TraceId::from_hex(&span.root_span_id()).ok();
    let span_id = SpanId::from_hex(&span.span_id()).ok();
    match (trace_id, span_id) {
        (Some(t), Some(s)) if t != TraceId::INVALID && s != SpanId::INVALID => {
            opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                t,
                s,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
        }
        _ => opentelemetry::Context::new(),
    }
}
