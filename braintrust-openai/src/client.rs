//! The client, its builder, and the HTTP plumbing every endpoint shares:
//! headers, timeouts, retries and error decoding.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use braintrust_core::__internal::redact_url;
use braintrust_core::__internal::retry::retry_after_header;
use braintrust_core::RetryPolicy;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;

use crate::error::{truncate_utf8, ApiError, OpenAiError};

/// The default base URL, `https://api.openai.com/v1`.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_MAX_RETRIES: u32 = 2;
/// Longest `Retry-After` honoured and longest computed backoff, as the
/// official OpenAI SDKs have them.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// No retry starts after this long: long enough never to cut the attempts
/// short under the default timeout, short enough to bound a stuck call.
const RETRY_BUDGET: Duration = Duration::from_secs(3600);
const MAX_ERROR_BODY: usize = 8 * 1024;

/// An API key that never shows up in `Debug` output or errors.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

pub(crate) struct Inner {
    pub http: reqwest::Client,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub include_usage_in_streams: bool,
}

/// An async client for OpenAI and OpenAI-compatible servers (vLLM, Ollama,
/// llama.cpp, Together, Groq, Azure OpenAI...) whose every call is a
/// Braintrust `llm` span.
///
/// Cheap to clone (an `Arc` inside); clones share the connection pool. It can
/// be built outside a Tokio runtime; calls need one (with the time driver,
/// as `#[tokio::main]` sets up).
///
/// Tracing is on by default and costs nothing while no Braintrust logger is
/// initialized and no span is current. Turn it off per client with
/// [`with_tracing(false)`](OpenAiClient::with_tracing).
///
/// Settings live on the builder ([`OpenAiClient::builder`],
/// [`OpenAiClientBuilder::from_env`]), e.g.
/// [`include_usage_in_streams`](OpenAiClientBuilder::include_usage_in_streams),
/// the opt-in for token metrics on streaming calls.
///
/// ```no_run
/// use braintrust_openai::{OpenAiClient, ChatCompletionRequest, ChatMessage};
/// # async fn demo() -> Result<(), braintrust_openai::OpenAiError> {
/// let client = OpenAiClient::builder()
///     .base_url("http://localhost:11434/v1") // Ollama, vLLM, ...
///     .api_key("sk-...")
///     .build()?;
/// let reply = client
///     .chat()
///     .create(ChatCompletionRequest::new(
///         "llama3.2",
///         vec![ChatMessage::user("Capital of France?")],
///     ))
///     .await?;
/// println!("{}", reply.text().unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiClient {
    pub(crate) inner: Arc<Inner>,
    pub(crate) tracing: bool,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base_url", &redact_url(&self.inner.base_url))
            .field("api_key", &self.inner.api_key)
            .field("organization", &self.inner.organization)
            .field("project", &self.inner.project)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .field(
                "include_usage_in_streams",
                &self.inner.include_usage_in_streams,
            )
            .field("tracing", &self.tracing)
            .finish()
    }
}

impl OpenAiClient {
    /// A builder with the defaults: `https://api.openai.com/v1`, no key,
    /// a 600 s timeout, 2 retries, tracing on.
    pub fn builder() -> OpenAiClientBuilder {
        OpenAiClientBuilder::default()
    }

    /// A client configured from the environment: `OPENAI_API_KEY`,
    /// `OPENAI_BASE_URL` (default `https://api.openai.com/v1`),
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID`.
    pub fn from_env() -> Result<OpenAiClient, OpenAiError> {
        OpenAiClientBuilder::from_env().build()
    }

    /// The same client with tracing turned on or off. A client with tracing
    /// off never starts spans, even under a current span.
    pub fn with_tracing(&self, on: bool) -> OpenAiClient {
        OpenAiClient {
            inner: self.inner.clone(),
            tracing: on,
        }
    }

    /// Whether this client's calls become spans (when logging is enabled).
    pub fn tracing_enabled(&self) -> bool {
        self.tracing
    }

    /// The base URL requests go to (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Chat completions: `POST /chat/completions`.
    pub fn chat(&self) -> crate::chat::Chat<'_> {
        crate::chat::Chat { client: self }
    }

    /// Embeddings: `POST /embeddings`.
    pub fn embeddings(&self) -> crate::embeddings::Embeddings<'_> {
        crate::embeddings::Embeddings { client: self }
    }

    /// The Responses API: `POST /responses`.
    pub fn responses(&self) -> crate::responses::Responses<'_> {
        crate::responses::Responses { client: self }
    }

    /// True when this call should be traced: tracing is on for this client
    /// and a logger or a current span exists (one atomic load and one
    /// thread-local read).
    #[inline]
    pub(crate) fn traced(&self) -> bool {
        self.tracing && braintrust_core::is_enabled()
    }
}

/// Builds an [`OpenAiClient`]. Every setting is optional.
#[derive(Clone)]
#[must_use = "OpenAiClientBuilder is a builder: call build() to get a client"]
pub struct OpenAiClientBuilder {
    base_url: Option<String>,
    api_key: Option<Secret>,
    organization: Option<String>,
    project: Option<String>,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    stream_idle_timeout: Option<Option<Duration>>,
    retry: RetryPolicy,
    include_usage_in_streams: bool,
    tracing: bool,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for OpenAiClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClientBuilder")
            .field("base_url", &self.base_url.as_deref().map(redact_url))
            .field("api_key", &self.api_key)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Default for OpenAiClientBuilder {
    fn default() -> Self {
        OpenAiClientBuilder {
            base_url: None,
            api_key: None,
            organization: None,
            project: None,
            headers: Vec::new(),
            query: Vec::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: None,
            stream_idle_timeout: None,
            retry: RetryPolicy::new()
                .max_attempts(DEFAULT_MAX_RETRIES + 1)
                .base_delay(Duration::from_millis(500))
                .max_delay(MAX_BACKOFF)
                .retry_after_cap(RETRY_AFTER_CAP)
                .budget(RETRY_BUDGET),
            include_usage_in_streams: false,
            tracing: true,
            http: None,
        }
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl OpenAiClientBuilder {
    /// A builder pre-filled from `OPENAI_API_KEY`, `OPENAI_BASE_URL`,
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` (unset or empty ones are skipped).
    pub fn from_env() -> Self {
        let mut b = OpenAiClientBuilder::default();
        if let Some(k) = env_nonempty("OPENAI_API_KEY") {
            b = b.api_key(k);
        }
        if let Some(u) = env_nonempty("OPENAI_BASE_URL") {
            b = b.base_url(u);
        }
        if let Some(o) = env_nonempty("OPENAI_ORG_ID") {
            b = b.organization(o);
        }
        if let Some(p) = env_nonempty("OPENAI_PROJECT_ID") {
            b = b.project(p);
        }
        b
    }

    /// The base URL, including the version path (e.g. `http://localhost:8000/v1`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
    /// The API key, sent as `Authorization: Bearer <key>`. Never printed.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret(key.into()));
        self
    }
    /// The `OpenAI-Organization` header.
    pub fn organization(mut self, org: impl Into<String>) -> Self {
        self.organization = Some(org.into());
        self
    }
    /// The `OpenAI-Project` header.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }
    /// An extra header sent with every request (e.g. Azure's `api-key`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// An extra query parameter sent with every request (e.g. Azure's `api-version`).
    pub fn query_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
    /// Time limit of one attempt of a non-streaming call, and of waiting for
    /// the response headers of a streaming one (default 600 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// No time limit per attempt.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }
    /// Time limit for establishing a connection.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }
    /// Longest gap allowed between two chunks of a streaming response before
    /// it fails with [`OpenAiError::Timeout`] (default: the [`timeout`](Self::timeout)).
    pub fn stream_idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.stream_idle_timeout = Some(d);
        self
    }
    /// Retries after 408, 409, 429, 5xx, timeouts and connection failures
    /// (default 2), with the SDK's one retry policy
    /// ([`braintrust_core::RetryPolicy`]): the server's `Retry-After`
    /// (seconds or HTTP-date) or `retry-after-ms` wins, cut to 60 s;
    /// otherwise the delay doubles from [`retry_base_delay`](Self::retry_base_delay)
    /// up to 8 s, with jitter (each wait is between half and all of it).
    /// No retry starts after an hour. Retries stay inside the call's one span.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retry = self.retry.max_attempts(n.saturating_add(1));
        self
    }
    /// First retry delay when the server gave no `Retry-After` (default 500 ms).
    pub fn retry_base_delay(mut self, d: Duration) -> Self {
        self.retry = self.retry.base_delay(d);
        self
    }
    /// Replaces the whole retry policy (attempts, delays, `Retry-After` cap,
    /// total budget). [`max_retries`](Self::max_retries) and
    /// [`retry_base_delay`](Self::retry_base_delay) adjust this same policy.
    ///
    /// ```
    /// use std::time::Duration;
    /// use braintrust_core::RetryPolicy;
    /// let client = braintrust_openai::OpenAiClient::builder()
    ///     .retry_policy(RetryPolicy::new().max_attempts(5).budget(Duration::from_secs(20)))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Opt-in: on streaming chat calls whose request has no `stream_options`,
    /// send `stream_options: {"include_usage": true}` so the server reports
    /// token usage and the span gets token metrics. Off by default, because it
    /// changes the request (the stream then ends with one extra chunk whose
    /// `choices` is empty). A request that sets `stream_options` itself is
    /// never changed.
    pub fn include_usage_in_streams(mut self, on: bool) -> Self {
        self.include_usage_in_streams = on;
        self
    }
    /// Whether calls become spans (default true). See [`OpenAiClient::with_tracing`].
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }
    /// Use this `reqwest::Client` (proxies, TLS roots...). The builder's
    /// connect timeout is then ignored; the per-call timeouts still apply.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Builds the client. Fails on a malformed base URL or header. Works
    /// outside a Tokio runtime.
    pub fn build(self) -> Result<OpenAiClient, OpenAiError> {
        let base_url = self
            .base_url
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
            .trim_end_matches('/')
            .to_string();
        let parsed = reqwest::Url::parse(&base_url).map_err(|e| {
            OpenAiError::Config(format!("invalid base URL {:?}: {e}", redact_url(&base_url)))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OpenAiError::Config(format!(
                "base URL must be http or https, got {:?}",
                redact_url(&base_url)
            )));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OpenAiError::Config(format!("invalid header name {name:?}")))?;
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| OpenAiError::Config(format!("invalid value for header {name:?}")))?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        if let Some(k) = &self.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", k.0)).map_err(|_| {
                OpenAiError::Config("the API key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        for (name, value) in [
            ("openai-organization", &self.organization),
            ("openai-project", &self.project),
        ] {
            if let Some(value) = value {
                let v = HeaderValue::from_str(value)
                    .map_err(|_| OpenAiError::Config(format!("invalid value for {name}")))?;
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let http = match self.http {
            Some(c) => c,
            None => {
                let mut b = reqwest::Client::builder().user_agent(concat!(
                    "braintrust-openai-rust/",
                    env!("CARGO_PKG_VERSION")
                ));
                if let Some(d) = self.connect_timeout {
                    b = b.connect_timeout(d);
                }
                b.build().map_err(OpenAiError::Transport)?
            }
        };
        Ok(OpenAiClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_key: self.api_key,
                organization: self.organization,
                project: self.project,
                headers,
                query: self.query,
                timeout: self.timeout,
                stream_idle_timeout: self.stream_idle_timeout.unwrap_or(self.timeout),
                retry: self.retry,
                include_usage_in_streams: self.include_usage_in_streams,
            }),
            tracing: self.tracing,
        })
    }
}

impl Inner {
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// POSTs `body` as JSON and reads the whole response body, retrying per
    /// the policy. Each attempt (sending and reading) is bounded by the timeout.
    pub(crate) async fn post_json<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<bytes::Bytes, OpenAiError> {
        self.with_retries(path, body, |url, payload| async move {
            let read = async {
                let resp = self.send(&url, payload, false).await?;
                resp.bytes().await.map_err(|e| self.body_error(e))
            };
            self.bounded(read).await
        })
        .await
    }

    /// POSTs `body` as JSON for a streaming response, retrying per the
    /// policy until the response headers arrive (bounded by the timeout);
    /// the body is the caller's.
    pub(crate) async fn post_stream<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, OpenAiError> {
        self.with_retries(path, body, |url, payload| async move {
            self.bounded(self.send(&url, payload, true)).await
        })
        .await
    }

    async fn with_retries<B, T, F, Fut>(
        &self,
        path: &str,
        body: &B,
        attempt: F,
    ) -> Result<T, OpenAiError>
    where
        B: Serialize + ?Sized,
        F: Fn(String, bytes::Bytes) -> Fut,
        Fut: Future<Output = Result<T, OpenAiError>>,
    {
        let url = self.url(path);
        let payload = serde_json::to_vec(body).map_err(|e| OpenAiError::decode(e, b""))?;
        let payload = bytes::Bytes::from(payload);
        let mut retry = self.retry.start();
        loop {
            let err = match attempt(url.clone(), payload.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            let server_delay = match &err {
                OpenAiError::Http { retry_after, .. } => *retry_after,
                _ => None,
            };
            match retry.next_delay(server_delay) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(err),
            }
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, OpenAiError>>,
    ) -> Result<T, OpenAiError> {
        match self.timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .unwrap_or(Err(OpenAiError::Timeout(t))),
            None => fut.await,
        }
    }

    /// Sends one request; a non-success status becomes [`OpenAiError::Http`].
    async fn send(
        &self,
        url: &str,
        payload: bytes::Bytes,
        stream: bool,
    ) -> Result<reqwest::Response, OpenAiError> {
        let mut req = self
            .http
            .post(url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(payload);
        if !self.query.is_empty() {
            req = req.query(&self.query);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                OpenAiError::Timeout(self.timeout.unwrap_or_default())
            } else {
                OpenAiError::Transport(e)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after_header(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        let text = truncate_utf8(&body, MAX_ERROR_BODY);
        Err(OpenAiError::Http {
            status: status.as_u16(),
            error: ApiError::from_body(&text),
            body: text,
            retry_after,
        })
    }

    fn body_error(&self, e: reqwest::Error) -> OpenAiError {
        if e.is_timeout() {
            OpenAiError::Timeout(self.timeout.unwrap_or_default())
        } else {
            OpenAiError::Stream {
                message: braintrust_core::error_string(&e),
                error: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_key() {
        let b = OpenAiClient::builder().api_key("sk-secret-123");
        assert!(!format!("{b:?}").contains("sk-secret"));
        let c = b.build().unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("sk-secret"), "{s}");
        assert!(s.contains("[redacted]"));
    }

    #[test]
    fn debug_and_errors_redact_url_credentials() {
        let b = OpenAiClient::builder().base_url("http://user:pw-secret@proxy:8080/v1");
        assert!(!format!("{b:?}").contains("pw-secret"), "{b:?}");
        let c = b.build().unwrap();
        let s = format!("{c:?}");
        assert!(
            !s.contains("pw-secret") && s.contains("http://***@proxy:8080/v1"),
            "{s}"
        );
        let e = OpenAiClient::builder()
            .base_url("ftp://user:pw-secret@proxy/v1")
            .build()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw-secret") && e.contains("***@proxy"), "{e}");
    }

    #[test]
    fn builds_outside_a_runtime_and_checks_urls() {
        let c = OpenAiClient::builder()
            .base_url("http://x:1/v1/")
            .build()
            .unwrap();
        assert_eq!(c.base_url(), "http://x:1/v1");
        assert_eq!(
            c.inner.url("/chat/completions"),
            "http://x:1/v1/chat/completions"
        );
        assert!(matches!(
            OpenAiClient::builder().base_url("not a url").build(),
            Err(OpenAiError::Config(_))
        ));
        assert!(matches!(
            OpenAiClient::builder().base_url("ftp://x").build(),
            Err(OpenAiError::Config(_))
        ));
    }

    #[test]
    fn retries_use_the_core_policy() {
        let c = OpenAiClient::builder().build().unwrap();
        assert_eq!(c.inner.retry.attempts(), DEFAULT_MAX_RETRIES + 1);
        let mut r = c.inner.retry.start();
        // A server's Retry-After is honoured, cut to 60 s.
        assert_eq!(
            r.next_delay(Some(Duration::from_secs(3600))),
            Some(RETRY_AFTER_CAP)
        );
        // Otherwise 500 ms doubling, with jitter: the second retry waits 0.5–1 s.
        let d = r.next_delay(None).unwrap();
        assert!(
            d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
            "{d:?}"
        );
        assert_eq!(r.next_delay(None), None);
        let c = OpenAiClient::builder().max_retries(0).build().unwrap();
        assert_eq!(c.inner.retry.start().next_delay(None), None);
    }
}
