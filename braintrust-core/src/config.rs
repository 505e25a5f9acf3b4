//! Configuration: the documented `BRAINTRUST_*` environment variables and a
//! builder over them. The builder always wins over the environment, so code and
//! env agree on one set of names.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::lifecycle::LifecyclePolicy;

/// Default app (control-plane) URL.
pub(crate) const DEFAULT_APP_URL: &str = "https://www.braintrust.dev";
/// Default maximum `/logs3` request body, 6 MiB (spec §1).
pub(crate) const DEFAULT_MAX_REQUEST_SIZE: usize = 6 * 1024 * 1024;
/// Default queue capacity in rows (spec §5.1, Python's value).
pub(crate) const DEFAULT_QUEUE_SIZE: usize = 25_000;
/// `BRAINTRUST_QUEUE_MAX_BYTES`: payload bytes the queue may hold.
pub(crate) const DEFAULT_QUEUE_MAX_BYTES: usize = 64 << 20;

/// What happens when the background queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// Drop the newest row, count it and report it on stderr (the default:
    /// logging never blocks the application).
    Drop,
    /// Block the caller until the flusher has made room (the old Python
    /// `BRAINTRUST_QUEUE_DROP_WHEN_FULL=false` behaviour).
    Block,
}

/// Connection-level HTTP settings of one [`State`](crate::State).
///
/// There is deliberately no per-log-call header: rows are queued and sent
/// later in batches that mix many calls, so a header could not be attributed
/// to one call. Route by logger/state instead (one `State` per backend).
#[derive(Clone, Default)]
#[must_use = "HttpOptions is a builder: pass it to Config::http"]
pub struct HttpOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) proxy: Option<String>,
    pub(crate) root_certificates_pem: Vec<Vec<u8>>,
    pub(crate) identity_pem: Option<Vec<u8>>,
    pub(crate) default_headers: Vec<(String, String)>,
    pub(crate) user_agent_suffix: Option<String>,
    pub(crate) client: Option<reqwest::Client>,
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("proxy", &self.proxy.as_ref().map(|_| "<set>"))
            .field("root_certificates", &self.root_certificates_pem.len())
            .field(
                "identity",
                &self.identity_pem.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "default_headers",
                &self
                    .default_headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("user_agent_suffix", &self.user_agent_suffix)
            .field("custom_client", &self.client.is_some())
            .finish()
    }
}

impl HttpOptions {
    /// Empty options: reqwest defaults plus the configured HTTP timeout.
    pub fn new() -> Self {
        Self::default()
    }
    /// Per-request timeout (overrides `BRAINTRUST_HTTP_TIMEOUT`).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// TCP connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }
    /// Route every request of this state through a proxy URL.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }
    /// Trust an extra root certificate (PEM), e.g. a private CA of a BYOC deployment.
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates_pem.push(pem.into());
        self
    }
    /// Client identity for mutual TLS: PEM with the certificate chain and the private key.
    pub fn identity_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some(pem.into());
        self
    }
    /// A header sent on every request of this state (login, registration, `/logs3`).
    pub fn default_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.default_headers.push((name.into(), value.into()));
        self
    }
    /// Appended to the `User-Agent` (`braintrust-rust/<version> <suffix>`).
    pub fn user_agent_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.user_agent_suffix = Some(suffix.into());
        self
    }
    /// Use this client as is; the other connection options are then ignored.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }
}

/// Everything a [`State`](crate::State) is configured with.
///
/// Build with [`Config::from_env`] (what the process-wide default state uses)
/// and override with the builder methods; builder values win over the
/// environment.
#[derive(Clone)]
#[must_use = "Config is a builder: pass it to State::new"]
pub struct Config {
    pub(crate) api_key: Option<String>,
    pub(crate) app_url: String,
    pub(crate) api_url: Option<String>,
    pub(crate) org_name: Option<String>,
    pub(crate) http_timeout: Duration,
    pub(crate) legacy_ids: bool,
    pub(crate) sync_flush: bool,
    pub(crate) batch_size: usize,
    pub(crate) max_request_size: Option<usize>,
    pub(crate) num_retries: u32,
    pub(crate) queue_size: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) queue_full: QueueFullPolicy,
    pub(crate) drop_logging_period: Duration,
    pub(crate) failed_payloads_dir: Option<PathBuf>,
    pub(crate) all_payloads_dir: Option<PathBuf>,
    pub(crate) lifecycle: LifecyclePolicy,
    pub(crate) http: HttpOptions,
    pub(crate) retry_base_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) retry_after_cap: Duration,
    pub(crate) retry_budget: Duration,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) exit_idle_timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key.as_deref().map(mask_key))
            .field("app_url", &redact_url(&self.app_url))
            .field("api_url", &self.api_url.as_deref().map(redact_url))
            .field("org_name", &self.org_name)
            .field("http_timeout", &self.http_timeout)
            .field("legacy_ids", &self.legacy_ids)
            .field("sync_flush", &self.sync_flush)
            .field("batch_size", &self.batch_size)
            .field("max_request_size", &self.max_request_size)
            .field("num_retries", &self.num_retries)
            .field("queue_size", &self.queue_size)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("queue_full", &self.queue_full)
            .field("drop_logging_period", &self.drop_logging_period)
            .field("failed_payloads_dir", &self.failed_payloads_dir)
            .field("all_payloads_dir", &self.all_payloads_dir)
            .field("lifecycle", &self.lifecycle)
            .field("http", &self.http)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("retry_budget", &self.retry_budget)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("exit_idle_timeout", &self.exit_idle_timeout)
            .finish()
    }
}

/// Masks an API key for messages: its first 3 and last 2 characters around
/// a fixed `…`, so neither the key nor its length shows (the official SDKs
/// print one `*` per hidden character). A key under 16 characters is not a
/// Braintrust key and shows as `…` alone.
pub(crate) fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 16 {
        return "…".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

/// `url` with any `user:password@` replaced by `***@`, for `Debug` output and
/// error messages (a proxy or self-hosted URL may carry credentials).
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// Set to a true value to silence the warning about sending the API key over
/// plain `http://` to a host that is not loopback (a deliberate setup, e.g.
/// a TLS-terminating sidecar on a private network).
pub(crate) const ALLOW_PLAIN_HTTP_ENV: &str = "BRAINTRUST_ALLOW_PLAIN_HTTP";

/// Warns once per process when the API key is about to be sent in clear:
/// `url` is plain `http://` and its host is not loopback.
pub(crate) fn warn_if_plain_http(url: &str) {
    if !is_plain_http_to_remote(url) || env_bool(ALLOW_PLAIN_HTTP_ENV) == Some(true) {
        return;
    }
    crate::diagnostics::warn_once(
        "plain-http",
        &format!(
            "braintrust: sending the API key over plain http:// to {}, readable by anyone on the way; use https:// (set {ALLOW_PLAIN_HTTP_ENV}=1 if this is deliberate)",
            redact_url(url)
        ),
    );
}

/// True for `http://` URLs whose host is not `localhost`, `*.localhost` or a
/// loopback address.
fn is_plain_http_to_remote(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if u.scheme() != "http" {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return !ip.is_loopback();
    }
    let d = host.trim_end_matches('.').to_ascii_lowercase();
    d != "localhost" && !d.ends_with(".localhost")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_key: None,
            app_url: DEFAULT_APP_URL.to_string(),
            api_url: None,
            org_name: None,
            http_timeout: Duration::from_secs(60),
            legacy_ids: false,
            sync_flush: false,
            batch_size: 100,
            max_request_size: None,
            num_retries: 2,
            queue_size: DEFAULT_QUEUE_SIZE,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            queue_full: QueueFullPolicy::Drop,
            drop_logging_period: Duration::from_secs(60),
            failed_payloads_dir: None,
            all_payloads_dir: None,
            lifecycle: LifecyclePolicy::FlushAtExit,
            http: HttpOptions::default(),
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(10),
            retry_after_cap: Duration::from_secs(30),
            retry_budget: Duration::from_secs(30),
            max_concurrent_requests: 4,
            exit_idle_timeout: crate::lifecycle::DEFAULT_EXIT_IDLE_TIMEOUT,
        }
    }
}

/// Reads one variable: empty or whitespace-only counts as unset (spec §1).
pub(crate) fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Parses a boolean the way both official SDKs together do: `true/1/yes/y/on`
/// and `false/0/no/n/off`, case-insensitive; anything else is `None`.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

pub(crate) fn env_bool(name: &str) -> Option<bool> {
    env_str(name).and_then(|v| {
        let parsed = parse_bool(&v);
        if parsed.is_none() {
            warn_bad_env(name, &v, "a boolean (true/1/yes/on or false/0/no/off)");
        }
        parsed
    })
}

fn env_num<T: std::str::FromStr>(name: &str, what: &str) -> Option<T> {
    env_str(name).and_then(|v| {
        let parsed = v.trim().parse::<T>().ok();
        if parsed.is_none() {
            warn_bad_env(name, &v, what);
        }
        parsed
    })
}

fn env_secs(name: &str) -> Option<Duration> {
    env_num::<f64>(name, "a number of seconds")
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn warn_bad_env(name: &str, value: &str, what: &str) {
    eprintln!("braintrust: ignoring {name}={value:?}: expected {what}; using the default");
}

impl Config {
    /// Defaults, then every documented environment variable that is set.
    /// A builder method called afterwards wins over the variable.
    ///
    /// ```
    /// use braintrust_core::Config;
    /// std::env::set_var("BRAINTRUST_DEFAULT_BATCH_SIZE", "250");
    /// let c = Config::from_env();
    /// assert!(format!("{c:?}").contains("batch_size: 250"));
    /// let c = c.batch_size(10);
    /// assert!(format!("{c:?}").contains("batch_size: 10,"));
    /// ```
    pub fn from_env() -> Self {
        let mut c = Config {
            api_key: env_str("BRAINTRUST_API_KEY")
                .map(|k| k.trim_end_matches(['\n', '\r']).to_string()),
            ..Config::default()
        };
        if let Some(v) = env_str("BRAINTRUST_APP_URL") {
            c.app_url = v;
        }
        c.api_url = env_str("BRAINTRUST_API_URL");
        c.org_name = env_str("BRAINTRUST_ORG_NAME");
        if let Some(d) = env_secs("BRAINTRUST_HTTP_TIMEOUT") {
            c.http_timeout = d;
        }
        if let Some(b) = env_bool("BRAINTRUST_LEGACY_IDS") {
            c.legacy_ids = b;
        }
        if env_bool("BRAINTRUST_OTEL_COMPAT") == Some(true) {
            c.legacy_ids = false;
        }
        if let Some(b) = env_bool("BRAINTRUST_SYNC_FLUSH") {
            c.sync_flush = b;
        }
        if let Some(n) = env_num::<usize>("BRAINTRUST_DEFAULT_BATCH_SIZE", "a positive integer") {
            if n >= 1 {
                c.batch_size = n;
            }
        }
        c.max_request_size = env_num::<usize>("BRAINTRUST_MAX_REQUEST_SIZE", "a number of bytes");
        if let Some(n) = env_num::<u32>("BRAINTRUST_NUM_RETRIES", "a non-negative integer") {
            c.num_retries = n;
        }
        let queue = env_num::<i64>("BRAINTRUST_QUEUE_SIZE", "an integer")
            .or_else(|| env_num::<i64>("BRAINTRUST_QUEUE_DROP_EXCEEDING_MAXSIZE", "an integer"));
        if let Some(n) = queue {
            if n >= 1 {
                c.queue_size = n as usize;
            } else {
                eprintln!(
                    "braintrust: queue size must be at least 1 (got {n}); using the default {DEFAULT_QUEUE_SIZE}"
                );
            }
        }
        if let Some(n) = env_num::<usize>("BRAINTRUST_QUEUE_MAX_BYTES", "a number of bytes") {
            c.queue_max_bytes = n.max(1);
        }
        if let Some(false) = env_bool("BRAINTRUST_QUEUE_DROP_WHEN_FULL") {
            c.queue_full = QueueFullPolicy::Block;
        }
        if let Some(d) = env_secs("BRAINTRUST_QUEUE_DROP_LOGGING_PERIOD") {
            c.drop_logging_period = d;
        }
        c.failed_payloads_dir =
            env_str("BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR").map(PathBuf::from);
        c.all_payloads_dir = env_str("BRAINTRUST_ALL_PUBLISH_PAYLOADS_DIR").map(PathBuf::from);
        c.lifecycle = LifecyclePolicy::from_env();
        if let Some(d) = env_secs("BRAINTRUST_EXIT_FLUSH_IDLE_TIMEOUT") {
            c.exit_idle_timeout = d;
        }
        if let Some(d) = env_secs("BRAINTRUST_RETRY_BUDGET") {
            c.retry_budget = d;
        }
        if let Some(n) = env_num::<usize>(
            "BRAINTRUST_MAX_CONCURRENT_LOG_REQUESTS",
            "a positive integer",
        ) {
            c.max_concurrent_requests = n.max(1);
        }
        c
    }

    /// The API key (never printed: `Debug` masks it).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
    /// Control-plane URL used for login and links.
    pub fn app_url(mut self, url: impl Into<String>) -> Self {
        self.app_url = url.into();
        self
    }
    /// Data-plane URL; overrides what login returns.
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }
    /// Organization to pick from the login response.
    pub fn org_name(mut self, name: impl Into<String>) -> Self {
        self.org_name = Some(name.into());
        self
    }
    /// Per-request timeout of data-plane calls.
    pub fn http_timeout(mut self, d: Duration) -> Self {
        self.http_timeout = d;
        self
    }
    /// UUID ids and V3 export instead of OpenTelemetry hex ids and V4.
    pub fn legacy_ids(mut self, on: bool) -> Self {
        self.legacy_ids = on;
        self
    }
    /// Send nothing until [`flush`](crate::flush); then return its error.
    pub fn sync_flush(mut self, on: bool) -> Self {
        self.sync_flush = on;
        self
    }
    /// Maximum rows per `/logs3` request.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Maximum `/logs3` request body in bytes.
    pub fn max_request_size(mut self, n: usize) -> Self {
        self.max_request_size = Some(n);
        self
    }
    /// Retries after the first try of a request.
    pub fn num_retries(mut self, n: u32) -> Self {
        self.num_retries = n;
        self
    }
    /// Queue capacity in rows (at least 1; default 25,000,
    /// `BRAINTRUST_QUEUE_SIZE`). Past a quarter of it, each logging call first
    /// writes the oldest waiting span's row itself instead of leaving it to
    /// the logger thread ([`Stats::rows_written_by_callers`](crate::Stats::rows_written_by_callers)).
    ///
    /// ```
    /// use braintrust_core::Config;
    /// let c = Config::default().queue_size(100_000);
    /// assert!(format!("{c:?}").contains("queue_size: 100000"));
    /// // At least 1.
    /// assert!(format!("{:?}", c.queue_size(0)).contains("queue_size: 1,"));
    /// ```
    pub fn queue_size(mut self, n: usize) -> Self {
        self.queue_size = n.max(1);
        self
    }
    /// Payload bytes the queue may hold (default 64 MiB,
    /// `BRAINTRUST_QUEUE_MAX_BYTES`): the logged values of the spans waiting
    /// for the logger thread, estimated as they are logged. Past it the
    /// queue is full, as past [`queue_size`](Config::queue_size) entries;
    /// past a quarter of it, logging calls write the oldest waiting rows
    /// themselves, as past a quarter of the entries. One entry is always
    /// taken when nothing else waits, however large.
    ///
    /// ```
    /// use braintrust_core::Config;
    /// assert!(format!("{:?}", Config::default()).contains("queue_max_bytes: 67108864"));
    /// let c = Config::default().queue_max_bytes(16 << 20);
    /// assert!(format!("{c:?}").contains("queue_max_bytes: 16777216"));
    /// ```
    pub fn queue_max_bytes(mut self, n: usize) -> Self {
        self.queue_max_bytes = n.max(1);
        self
    }
    /// What to do when the queue is full.
    pub fn queue_full(mut self, policy: QueueFullPolicy) -> Self {
        self.queue_full = policy;
        self
    }
    /// Minimum interval between two "dropped N rows" reports.
    pub fn drop_logging_period(mut self, d: Duration) -> Self {
        self.drop_logging_period = d;
        self
    }
    /// Where payloads that failed for good are written.
    pub fn failed_payloads_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.failed_payloads_dir = Some(dir.into());
        self
    }
    /// Where every payload is written before it is sent.
    pub fn all_payloads_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.all_payloads_dir = Some(dir.into());
        self
    }
    /// What happens at process exit (see [`LifecyclePolicy`]).
    pub fn lifecycle(mut self, policy: LifecyclePolicy) -> Self {
        self.lifecycle = policy;
        self
    }
    /// Connection-level HTTP settings.
    pub fn http(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }
    /// Base of the retry backoff (500 ms by default, doubling per try up to
    /// 10 s, with jitter). Tests shorten it; production code rarely needs to.
    pub fn retry_base_delay(mut self, d: Duration) -> Self {
        self.retry_base_delay = d;
        self
    }
    /// Longest backoff between two tries (10 s by default); also how long a
    /// failed login is remembered before the next attempt.
    pub fn retry_max_delay(mut self, d: Duration) -> Self {
        self.retry_max_delay = d;
        self
    }
    /// Longest `Retry-After` honoured (30 s by default); a longer one is cut.
    pub fn retry_after_cap(mut self, d: Duration) -> Self {
        self.retry_after_cap = d;
        self
    }
    /// Total time a batch (or a login) may spend on tries and waits before
    /// its rows fail for good (30 s by default; `BRAINTRUST_RETRY_BUDGET`).
    pub fn retry_budget(mut self, d: Duration) -> Self {
        self.retry_budget = d;
        self
    }
    /// `/logs3` requests in flight at once (4 by default;
    /// `BRAINTRUST_MAX_CONCURRENT_LOG_REQUESTS`).
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n.max(1);
        self
    }
    /// How long the exit flush waits without any row reaching an outcome
    /// before it gives up (10 s by default;
    /// `BRAINTRUST_EXIT_FLUSH_IDLE_TIMEOUT`).
    pub fn exit_idle_timeout(mut self, d: Duration) -> Self {
        self.exit_idle_timeout = d;
        self
    }

    pub(crate) fn effective_timeout(&self) -> Duration {
        self.http.timeout.unwrap_or(self.http_timeout)
    }

    /// `text` (a server's answer quoted in a message) with the API key
    /// masked wherever it occurs: a backend or proxy may echo the request's
    /// `authorization` header in an error body.
    pub(crate) fn redact_key(&self, text: &str) -> String {
        match self.api_key.as_deref() {
            Some(k) if !k.is_empty() && text.contains(k) => text.replace(k, &mask_key(k)),
            _ => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn echoed_keys_are_masked() {
        let key = "sk-0123456789abcdefghij";
        let body = format!("bad gateway for Bearer {key} ({key})");
        let cfg = super::Config::default().api_key(key);
        assert_eq!(
            cfg.redact_key(&body),
            "bad gateway for Bearer sk-…ij (sk-…ij)"
        );
        assert_eq!(
            super::Config::default().api_key("").redact_key("as is"),
            "as is"
        );
        assert_eq!(super::Config::default().redact_key("as is"), "as is");
    }

    use super::*;

    #[test]
    fn booleans_accept_both_sdk_forms() {
        for t in ["true", "1", "YES", "y", "On", " true "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "0", "no", "N", "OFF"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = Config::default().api_key("sk-supersecret-1234");
        let s = format!("{c:?}");
        assert!(!s.contains("supersecret"), "{s}");
        assert!(s.contains("sk-…34"), "{s}");
    }

    #[test]
    fn the_mask_hides_the_length() {
        let short = mask_key("sk-0123456789abcdefghij");
        let long = mask_key(&format!("sk-{}ef", "x".repeat(60)));
        assert_eq!(short, "sk-…ij");
        assert_eq!(long, "sk-…ef");
        assert_eq!(short.chars().count(), long.chars().count());
        for k in ["", "abc", "abcdefgh", "sk-123456789abc"] {
            assert_eq!(mask_key(k), "…", "{k}");
        }
    }

    #[test]
    fn urls_with_credentials_are_redacted() {
        assert_eq!(
            redact_url("https://user:pa55@host.example:8443/v1?q=1"),
            "https://***@host.example:8443/v1?q=1"
        );
        assert_eq!(redact_url("http://a@b@host/p@q"), "http://***@host/p@q");
        assert_eq!(redact_url("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        let c = Config::default()
            .app_url("https://me:hunter2@app.example")
            .api_url("http://k:hunter2@api.example");
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("https://***@app.example"), "{s}");
    }

    #[test]
    fn plain_http_to_a_remote_host_is_detected() {
        for remote in [
            "http://api.example.com",
            "http://10.0.0.8:8000/x",
            "http://[2001:db8::1]/",
            "HTTP://Example.com",
        ] {
            assert!(is_plain_http_to_remote(remote), "{remote}");
        }
        for fine in [
            "https://api.example.com",
            "http://localhost:8000",
            "http://LOCALHOST.",
            "http://app.localhost",
            "http://127.0.0.1:9",
            "http://127.8.9.10",
            "http://[::1]:8000",
            "garbage",
        ] {
            assert!(!is_plain_http_to_remote(fine), "{fine}");
        }
    }

    #[test]
    fn builder_wins_over_defaults() {
        let c = Config::default().batch_size(0).queue_size(0).num_retries(5);
        assert_eq!(c.batch_size, 1);
        assert_eq!(c.queue_size, 1);
        assert_eq!(c.num_retries, 5);
    }
}
