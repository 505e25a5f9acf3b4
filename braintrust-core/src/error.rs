//! The crate's error type. Messages never contain an API key.

use crate::event::ValidationError;

/// Everything that can go wrong in the SDK outside the hot path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No API key was configured.
    #[error("Could not login to Braintrust. You may need to set BRAINTRUST_API_KEY in your environment or pass Config::api_key.")]
    NoApiKey,
    /// The login endpoint rejected the key.
    #[error("Invalid API key {masked_key}: [{status}] {body}")]
    InvalidApiKey {
        /// The key masked to its first and last two characters.
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
    },
    /// A logged value broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A span slug could not be decoded.
    #[error(transparent)]
    Slug(#[from] crate::export::SlugError),
    /// Rows were dropped for good during a flush.
    #[error("{rows} row(s) could not be delivered: {message}")]
    Delivery {
        /// How many rows were lost (or written to the failed-payload directory).
        rows: u64,
        /// The last failure.
        message: String,
    },
    /// A flush did not finish before its deadline.
    #[error("flush did not finish within {waited_ms} ms; {undelivered} row(s) undelivered")]
    Timeout {
        /// How long it waited.
        waited_ms: u128,
        /// Rows still undelivered at the deadline.
        undelivered: u64,
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
