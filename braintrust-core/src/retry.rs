//! The one retry policy of the SDK: capped exponential backoff with jitter,
//! the server's `Retry-After` (seconds or HTTP-date, capped), a maximum
//! number of attempts and a total time budget. The background logger and
//! `braintrust-openai` both use it, so they cannot drift apart.

use std::time::{Duration, Instant, SystemTime};

/// How a failing operation is retried.
///
/// ```
/// use std::time::Duration;
/// use braintrust_core::RetryPolicy;
/// // The defaults: 500 ms doubling per retry, capped at 10 s.
/// assert_eq!(RetryPolicy::new().backoff(0), Duration::from_millis(500));
/// assert_eq!(RetryPolicy::new().backoff(1), Duration::from_secs(1));
/// assert_eq!(RetryPolicy::new().backoff(10), Duration::from_secs(10));
/// let policy = RetryPolicy::new()
///     .max_attempts(3)
///     .base_delay(Duration::from_millis(100))
///     .budget(Duration::from_secs(5));
/// let mut retry = policy.start();
/// // After a first failure, with no Retry-After: wait about 50–100 ms.
/// let wait = retry.next_delay(None).expect("a second attempt is allowed");
/// assert!(wait <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    retry_after_cap: Duration,
    budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            retry_after_cap: Duration::from_secs(30),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The defaults: 3 attempts, 500 ms base delay doubling up to 10 s,
    /// `Retry-After` honoured up to 30 s, 30 s total budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in all, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Delay before the first retry; it doubles each time.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// Longest computed backoff delay.
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Longest `Retry-After` honoured; a longer one is cut to this.
    #[must_use]
    pub fn retry_after_cap(mut self, d: Duration) -> Self {
        self.retry_after_cap = d;
        self
    }

    /// Total time from the first attempt after which no retry starts.
    #[must_use]
    pub fn budget(mut self, d: Duration) -> Self {
        self.budget = d;
        self
    }

    /// The configured attempt count.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured total budget.
    pub fn total_budget(&self) -> Duration {
        self.budget
    }

    /// The computed backoff before retry number `retry` (0 = the first
    /// retry), before jitter: `base × 2^retry`, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Starts retrying an operation now.
    pub fn start(&self) -> Retry {
        Retry {
            policy: *self,
            started: Instant::now(),
            attempts: 1,
        }
    }
}

/// The retry state of one operation (see [`RetryPolicy::start`]).
#[derive(Debug, Clone)]
pub struct Retry {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
}

impl Retry {
    /// Attempts made so far (1 after the first).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the budget runs out.
    pub fn budget_deadline(&self) -> Instant {
        self.started + self.policy.budget
    }

    /// After a failed attempt: how long to wait before the next one, or
    /// `None` when no attempt is left or the wait would end past the budget.
    /// `server` is the server's `Retry-After`, if it sent one; it wins over
    /// the computed backoff, capped by the policy's `retry_after_cap`.
    pub fn next_delay(&mut self, server: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let delay = match server {
            Some(d) => d.min(self.policy.retry_after_cap),
            None => jitter(self.policy.backoff(self.attempts - 1)),
        };
        if Instant::now() + delay >= self.budget_deadline() {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }
}

/// "Equal jitter": a delay in `[d/2, d]`, so concurrent clients spread out
/// but none retries much sooner than asked.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The delay a `Retry-After` header value asks for: delta-seconds
/// (fractions accepted) or an HTTP-date (RFC 9110 §10.2.3). `None` for
/// anything else or a negative number.
///
/// ```
/// use std::time::Duration;
/// use braintrust_core::__internal::retry::parse_retry_after;
/// assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after("soon"), None);
/// ```
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The `Retry-After` (or OpenAI's `retry-after-ms`) of a response's headers.
pub fn retry_after_header(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms.min(1e12) / 1000.0));
    }
    parse_retry_after(headers.get("retry-after")?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::new()
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(350));
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn attempts_and_budget_bound_the_retries() {
        let p = RetryPolicy::new()
            .max_attempts(3)
            .base_delay(Duration::from_millis(1));
        let mut r = p.start();
        assert!(r.next_delay(None).is_some());
        assert!(r.next_delay(None).is_some());
        assert_eq!(r.attempts(), 3);
        assert_eq!(r.next_delay(None), None);

        // A Retry-After that ends past the budget stops the retries at once.
        let p = RetryPolicy::new()
            .max_attempts(10)
            .budget(Duration::from_secs(5));
        let mut r = p.start();
        assert_eq!(r.next_delay(Some(Duration::from_secs(100_000))), None);
        // Within the cap and the budget, it is honoured exactly.
        assert_eq!(
            r.next_delay(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        // The cap applies before the budget check.
        let p = RetryPolicy::new()
            .retry_after_cap(Duration::from_millis(10))
            .budget(Duration::from_secs(5));
        assert_eq!(
            p.start().next_delay(Some(Duration::from_secs(100_000))),
            Some(Duration::from_millis(10))
        );
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        let future = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", http::HeaderValue::from_static("3"));
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", http::HeaderValue::from_static("250"));
        assert_eq!(retry_after_header(&h), Some(Duration::from_millis(250)));
    }
}
