//! The crate's error type. Messages never contain an API key.

use crate::event::ValidationError;

/// Everything that can go wrong in the SDK outside the hot path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No API key was configured.
    #[error("Could not login to Braintrust. You may need to set BRAINTRUST_API_KEY in your environment or pass Config::api_key.")]
    NoApiKey,
    /// The login endpoint rejected the key.
    #[error("Invalid API key {masked_key}: [{status}] {body}")]
    InvalidApiKey {
        /// The key masked to a fixed width (`sk-…ef`), hiding its length.
        masked_key: String,
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// Login worked but no usable organization was found.
    #[error("{0}")]
    Organization(String),
    /// A network or protocol failure talking to the backend.
    #[error("{context}: {message}")]
    Http {
        /// What was being done, e.g. `POST /v1/project`.
        context: String,
        /// What went wrong.
        message: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
    },
    /// A logged value broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A span slug could not be decoded.
    #[error(transparent)]
    Slug(#[from] crate::export::SlugError),
    /// Rows were lost since the previous flush: dropped from a full queue,
    /// failed for good, or given up at a deadline. Never `Ok(())` after a loss.
    #[error("{0}")]
    RowsLost(crate::LossReport),
    /// A flush did not finish before its deadline. Rows still undelivered
    /// then were given up (counted, and written to the failed-payload
    /// directory when one is set).
    #[error(
        "flush did not finish within {waited_ms} ms; {undelivered} row(s) undelivered ({lost})"
    )]
    Timeout {
        /// How long it waited.
        waited_ms: u128,
        /// Rows given up at the deadline by this flush.
        undelivered: u64,
        /// Everything lost since the previous flush, these rows included.
        lost: crate::LossReport,
    },
    /// The background logger cannot do what was asked (stopped, or called
    /// from its own thread, where waiting would deadlock).
    #[error("background logger unavailable: {0}")]
    Logger(String),
    /// Bad configuration.
    #[error("invalid configuration `{field}`: {rule}")]
    Config {
        /// The option.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
}

impl Error {
    /// True for failures worth retrying: no answer (timeout, connection
    /// refused or reset), 408, 429 and 5xx. Everything else (an invalid key,
    /// a wrong URL, a rejected request) is permanent.
    ///
    /// ```
    /// use braintrust_core::Error;
    /// let http = |status| Error::Http { context: "POST /logs3".into(), message: "x".into(), status };
    /// assert!(http(None).is_transient());
    /// assert!(http(Some(503)).is_transient());
    /// assert!(!http(Some(400)).is_transient());
    /// assert!(!Error::NoApiKey.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { status: None, .. } => true,
            Error::Http {
                status: Some(s), ..
            } => matches!(s, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}
