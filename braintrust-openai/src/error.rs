//! The errors a call can return. Every one of them is also logged to the
//! call's span as its `error` before it reaches the caller.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `error` object an OpenAI-compatible server sends with a failed call
/// (`{"error": {"message", "type", "param", "code"}}`). Unknown fields are kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ApiError {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Error type, e.g. `"invalid_request_error"` or `"server_error"`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The request parameter at fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Value>,
    /// Machine-readable code, e.g. `"rate_limit_exceeded"` (a string or a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// Reads the error object out of a response body: `{"error": {...}}`,
    /// `{"error": "text"}`, or a bare `{"message": ...}`.
    pub(crate) fn from_body(body: &str) -> Option<Box<ApiError>> {
        let v: Value = serde_json::from_str(body).ok()?;
        ApiError::from_value(&v).map(Box::new)
    }

    pub(crate) fn from_value(v: &Value) -> Option<ApiError> {
        match v.get("error") {
            Some(Value::String(s)) => Some(ApiError {
                message: s.clone(),
                ..ApiError::default()
            }),
            Some(e @ Value::Object(_)) => serde_json::from_value(e.clone()).ok(),
            _ if v.get("message").is_some_and(Value::is_string) => {
                serde_json::from_value(v.clone()).ok()
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(k) = &self.kind {
            write!(f, " (type: {k}")?;
            if let Some(c) = &self.code {
                match c {
                    Value::String(s) => write!(f, ", code: {s}")?,
                    other => write!(f, ", code: {other}")?,
                }
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong with a call. Returned to the caller and, when
/// the call is traced, logged to its span's `error`.
///
/// The API key never appears in an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// The server answered with a non-success status (after any retries).
    #[error("HTTP {status}: {}", http_message(.error.as_deref(), .body))]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The server's error object, when the body carried one.
        error: Option<Box<ApiError>>,
        /// The raw response body (truncated to 8 KiB).
        body: String,
        /// The `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The call took longer than the configured timeout, or a stream went
    /// quiet for longer than the stream idle timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The response (or one stream event) was not the JSON this client expected.
    #[error("could not decode the response: {source}; body starts with: {snippet}")]
    Decode {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
        /// The start of the offending text (at most 512 bytes).
        snippet: String,
    },
    /// A streaming response broke: the server sent an error event, or the
    /// connection failed part-way through the body.
    #[error("stream failed: {message}")]
    Stream {
        /// What went wrong.
        message: String,
        /// The server's error object, when the stream carried one.
        error: Option<Box<ApiError>>,
    },
    /// The request never got a response: connection refused, DNS, TLS, reset...
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The client was misconfigured (bad base URL, header value...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn http_message(error: Option<&ApiError>, body: &str) -> String {
    match error {
        Some(e) => e.to_string(),
        None if body.is_empty() => "(empty body)".to_string(),
        None => body.to_string(),
    }
}

impl OpenAiError {
    /// The HTTP status for [`OpenAiError::Http`], else `None`.
    pub fn status(&self) -> Option<u16> {
        match self {
            OpenAiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error object, if the failure carried one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            OpenAiError::Http { error, .. } | OpenAiError::Stream { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// True for failures worth retrying: 408, 409, 429, 5xx, timeouts and
    /// connection failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenAiError::Http { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            OpenAiError::Timeout(_) => true,
            OpenAiError::Transport(e) => e.is_connect() || e.is_request() || e.is_timeout(),
            _ => false,
        }
    }

    pub(crate) fn decode(source: serde_json::Error, text: &[u8]) -> OpenAiError {
        OpenAiError::Decode {
            source,
            snippet: truncate_utf8(text, 512),
        }
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub(crate) fn truncate_utf8(text: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&text[..text.len().min(max)]);
    s.trim_end_matches('\u{fffd}').to_string()
}
