//! Where every logged row ends, and what the user is told about it.
//!
//! A row given to the pipeline ends in exactly one of: delivered, dropped
//! because the queue was full, failed for good, or undelivered at a deadline;
//! until then it is pending. Independently it may have been written to a
//! payload directory. The counters make that invariant checkable at any
//! time; the [`Reporter`] turns them into a few stderr lines (the first drop
//! and the first failure at once, then at most one summary per period, and
//! the totals at flush, shutdown and exit).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Counters of one pipeline.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub logged: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub undelivered: AtomicU64,
    pub dumped: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Rows a caller counted as undelivered while the worker still held
    /// them (it did not answer in time); the worker does not count them
    /// again when it gets to abandon them. Both sides count under this lock.
    pub written_off: std::sync::Mutex<u64>,
    pub rejected_logs: AtomicU64,
    pub rejected_span_args: AtomicU64,
    /// Rows application threads wrote themselves (see `spill`).
    pub spilled: AtomicU64,
    /// Estimated payload bytes of the entries waiting in the queue.
    pub payload_bytes: AtomicU64,
    pub attachments_queued: AtomicU64,
    pub attachments_uploaded: AtomicU64,
    pub attachments_failed: AtomicU64,
}

impl Counters {
    /// Attachments handed to the upload thread without an outcome yet.
    pub(super) fn attachments_pending(&self) -> u64 {
        let ended = self.attachments_uploaded.load(Ordering::Acquire)
            + self.attachments_failed.load(Ordering::Acquire);
        self.attachments_queued
            .load(Ordering::Acquire)
            .saturating_sub(ended)
    }

    /// Rows that reached an outcome after being queued (progress, as the
    /// exit deadline measures it).
    pub(super) fn settled(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
            + self.failed.load(Ordering::Acquire)
            + self.undelivered.load(Ordering::Acquire)
    }

    pub(super) fn snapshot(&self) -> Stats {
        // Outcomes first, `logged` last: a row counted in an outcome was
        // logged before, so `pending` never goes negative.
        let dropped_queue_full = self.dropped_queue_full.load(Ordering::Acquire);
        let delivered_rows = self.delivered.load(Ordering::Acquire);
        let failed_rows = self.failed.load(Ordering::Acquire);
        let undelivered_rows = self.undelivered.load(Ordering::Acquire);
        let logged = self.logged.load(Ordering::Acquire);
        Stats {
            logged,
            dropped_queue_full,
            delivered_rows,
            failed_rows,
            undelivered_rows,
            pending: logged.saturating_sub(
                dropped_queue_full + delivered_rows + failed_rows + undelivered_rows,
            ),
            dumped_rows: self.dumped.load(Ordering::Acquire),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            rejected_logs: self.rejected_logs.load(Ordering::Relaxed),
            rejected_span_args: self.rejected_span_args.load(Ordering::Relaxed),
            rows_written_by_callers: self.spilled.load(Ordering::Relaxed),
            queued_payload_bytes: self.payload_bytes.load(Ordering::Relaxed),
            attachments_uploaded: self.attachments_uploaded.load(Ordering::Acquire),
            attachments_failed: self.attachments_failed.load(Ordering::Acquire),
            attachments_pending: self.attachments_pending(),
        }
    }
}

/// A snapshot of a backend's counters ([`State::stats`](crate::State::stats)).
///
/// A row is one queue entry: the writes a span makes (start, logs, end)
/// while it waits in the queue, merged into one; or a ready row
/// (`update_span`, feedback). A span whose writes the logger thread took
/// before it ended queues again for its later writes, and that second entry
/// is a second row (sent as a merge the server folds into the first). Each
/// row is counted once, in one outcome, however many times it was sent
/// (delivery is at-least-once). At every moment
/// `logged == dropped_queue_full + delivered_rows + failed_rows +
/// undelivered_rows + pending`; after a flush that returned `Ok`, `pending`
/// is 0 for what was logged before it.
///
/// ```
/// use braintrust_core::{Config, State};
/// let state = State::new(Config::default().api_key("k").app_url("http://127.0.0.1:9")).unwrap();
/// let s = state.stats();
/// assert_eq!(s.logged, s.dropped_queue_full + s.delivered_rows + s.failed_rows
///     + s.undelivered_rows + s.pending);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Rows given to the pipeline (queued or dropped).
    pub logged: u64,
    /// Rows dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Rows the backend acknowledged.
    pub delivered_rows: u64,
    /// Rows that failed for good (permanent error, or retries spent).
    pub failed_rows: u64,
    /// Rows given up at a flush, shutdown or exit deadline.
    pub undelivered_rows: u64,
    /// Rows queued or in flight, without an outcome yet.
    pub pending: u64,
    /// Rows written to the failed-payload directory (of the failed and
    /// undelivered ones).
    pub dumped_rows: u64,
    /// `/logs3` requests sent, retries included.
    pub requests: u64,
    /// Request body bytes sent to `/logs3`.
    pub bytes_sent: u64,
    /// Events given to [`Span::log_or_report`](crate::Span::log_or_report)
    /// that failed validation and were not logged, and values the OpenAI
    /// wrapper (`braintrust-openai`) left out of its spans for breaking a
    /// rule (a negative token count, a reserved metric name). They never
    /// became rows, so they are outside the row invariant above.
    pub rejected_logs: u64,
    /// Span arguments rejected when a span started, the span itself being
    /// started without them: an invalid [`SpanArgs::event`](crate::SpanArgs::event)
    /// or [`SpanArgs::propagated_event`](crate::SpanArgs::propagated_event),
    /// or an invalid `propagated_event` in a parent slug. Like
    /// `rejected_logs`, outside the row invariant. Replaced arguments (an
    /// empty name, a bad start time) are not counted.
    pub rejected_span_args: u64,
    /// Rows written by the logging (application) threads themselves rather
    /// than by the logger thread: past a quarter of the queue's capacity (in
    /// entries or payload bytes), each new
    /// entry first turns the oldest waiting span into its row text. Nonzero
    /// means the logger thread fell behind and the application paid for
    /// writing rows instead of losing them (backpressure without waiting).
    pub rows_written_by_callers: u64,
    /// Estimated payload bytes (logged values) of the spans waiting in the
    /// queue, and the text of the waiting rows application threads wrote,
    /// which `BRAINTRUST_QUEUE_MAX_BYTES` bounds.
    pub queued_payload_bytes: u64,
    /// Attachments uploaded (their status set to `done`).
    pub attachments_uploaded: u64,
    /// Attachment uploads that failed for good (their status set to
    /// `error`). Their rows are counted with the rows, as delivered.
    pub attachments_failed: u64,
    /// Attachment uploads under way or waiting (not yet uploaded or
    /// failed). Still nonzero after a flush deadline means they go on in
    /// the background and are lost if the process exits.
    pub attachments_pending: u64,
}

/// Rows lost since the previous flush, as a failed flush reports them.
///
/// ```
/// use braintrust_core::LossReport;
/// let r = LossReport { dropped_queue_full: 21_000, ..LossReport::default() };
/// assert_eq!(r.total(), 21_000);
/// assert!(r.to_string().contains("21,000 dropped because the queue was full"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LossReport {
    /// Dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Failed for good.
    pub failed: u64,
    /// Given up at a deadline.
    pub undelivered: u64,
    /// Of the failed and undelivered rows, those written to the
    /// failed-payload directory.
    pub dumped: u64,
    /// Attachment uploads that failed for good (their rows were delivered).
    pub attachments_failed: u64,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

impl LossReport {
    /// Rows lost in all (dropped + failed + undelivered).
    pub fn total(&self) -> u64 {
        self.dropped_queue_full + self.failed + self.undelivered
    }

    /// True when nothing was lost: no row and no attachment upload.
    pub fn is_empty(&self) -> bool {
        self.total() == 0 && self.attachments_failed == 0
    }
}

impl fmt::Display for LossReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = " ";
        if self.total() > 0 || self.attachments_failed == 0 {
            write!(f, "{} row(s) lost:", thousands(self.total()))?;
        } else {
            sep = "";
        }
        for (n, what) in [
            (
                self.dropped_queue_full,
                "dropped because the queue was full",
            ),
            (self.failed, "failed for good"),
            (self.undelivered, "undelivered at the deadline"),
        ] {
            if n > 0 {
                write!(f, "{sep}{} {what}", thousands(n))?;
                sep = ", ";
            }
        }
        if self.dumped > 0 {
            write!(
                f,
                " ({} written to the failed-payload directory)",
                thousands(self.dumped)
            )?;
        }
        if self.attachments_failed > 0 {
            if self.total() > 0 {
                write!(f, ";")?;
            }
            write!(
                f,
                "{sep}{} attachment upload(s) failed",
                thousands(self.attachments_failed)
            )?;
        }
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {e}")?;
        }
        Ok(())
    }
}

/// `1234567` → `"1,234,567"`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds since a process-wide origin (for lock-free throttles).
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// At most one line per period, the first at once.
#[derive(Debug, Default)]
struct Throttle {
    /// `now_ms` before which nothing is printed; 0 = never printed.
    next_ms: AtomicU64,
}

impl Throttle {
    /// True if a line may be printed now (and claims the slot).
    fn claim(&self, period: Duration) -> bool {
        let now = now_ms().max(1);
        let next = self.next_ms.load(Ordering::Relaxed);
        if next != 0 && now < next {
            return false;
        }
        let until = now.saturating_add(period.as_millis() as u64).max(1);
        self.next_ms
            .compare_exchange(next, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// What was lost at the last report (for "since the previous flush" and
/// for not repeating a final line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Losses {
    dropped: u64,
    failed: u64,
    undelivered: u64,
    dumped: u64,
    attachments: u64,
}

impl Losses {
    fn of(c: &Counters) -> Losses {
        Losses {
            dropped: c.dropped_queue_full.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
            undelivered: c.undelivered.load(Ordering::Acquire),
            dumped: c.dumped.load(Ordering::Acquire),
            attachments: c.attachments_failed.load(Ordering::Acquire),
        }
    }
}

/// The pipeline's voice on stderr, throttled by `period`
/// (`BRAINTRUST_QUEUE_DROP_LOGGING_PERIOD`).
#[derive(Debug)]
pub(crate) struct Reporter {
    period: Duration,
    capacity: usize,
    max_bytes: usize,
    drops: Throttle,
    failures: Throttle,
    attachment_failures: Throttle,
    masking: Throttle,
    /// Rows logged after the logger was shut down, and how many were told.
    after_stop: Throttle,
    after_stop_rows: AtomicU64,
    /// Fields the masking function failed on, and how many were told.
    mask_failures: AtomicU64,
    mask_told: AtomicU64,
    /// Failed rows already mentioned on stderr.
    failures_told: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Losses when `flush()` last reported.
    at_last_flush: Mutex<Losses>,
    /// Losses when the last totals line was printed.
    at_last_totals: Mutex<Losses>,
}

impl Reporter {
    pub(super) fn new(period: Duration, capacity: usize, max_bytes: usize) -> Reporter {
        Reporter {
            period,
            capacity,
            max_bytes,
            drops: Throttle::default(),
            failures: Throttle::default(),
            attachment_failures: Throttle::default(),
            masking: Throttle::default(),
            after_stop: Throttle::default(),
            after_stop_rows: AtomicU64::new(0),
            mask_failures: AtomicU64::new(0),
            mask_told: AtomicU64::new(0),
            failures_told: AtomicU64::new(0),
            last_error: Mutex::new(None),
            at_last_flush: Mutex::new(Losses::default()),
            at_last_totals: Mutex::new(Losses::default()),
        }
    }

    /// After a queue drop (application thread: one atomic load when quiet).
    /// `by_bytes`: the byte budget was the limit reached, not the entries.
    pub(super) fn dropped(&self, counters: &Counters, by_bytes: bool) {
        if !self.drops.claim(self.period) {
            return;
        }
        let n = counters.dropped_queue_full.load(Ordering::Relaxed);
        if n <= 1 {
            let limit = if by_bytes {
                format!(
                    "{} bytes of waiting payload, BRAINTRUST_QUEUE_MAX_BYTES",
                    thousands(self.max_bytes as u64)
                )
            } else {
                format!(
                    "{} entries, BRAINTRUST_QUEUE_SIZE",
                    thousands(self.capacity as u64)
                )
            };
            eprintln!(
                "braintrust: the logging queue is full ({limit}); dropping rows. Totals follow at most every {} s and at flush and exit; raise that limit or flush more often",
                self.period.as_secs()
            );
        } else {
            eprintln!(
                "braintrust: dropped {} row(s) so far because the logging queue was full",
                thousands(n)
            );
        }
    }

    /// After rows failed for good (logger thread).
    pub(super) fn failed(&self, counters: &Counters, rows: u64, cause: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(cause.to_string());
        if !self.failures.claim(self.period) {
            return;
        }
        let total = counters.failed.load(Ordering::Acquire);
        let told = self.failures_told.swap(total, Ordering::AcqRel);
        if told == 0 {
            eprintln!(
                "braintrust: failed to deliver {} row(s): {cause}. Further failures are summarized at most every {} s",
                thousands(rows),
                self.period.as_secs()
            );
        } else {
            eprintln!(
                "braintrust: {} more row(s) failed for good ({} in all); last error: {cause}",
                thousands(total.saturating_sub(told)),
                thousands(total)
            );
        }
    }

    /// After an attachment upload failed for good (upload thread): the
    /// first at once, then at most one line per period.
    pub(super) fn attachment_failed(&self, counters: &Counters, filename: &str, cause: &str) {
        let cause = format!("attachment {filename}: {cause}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(cause.clone());
        if !self.attachment_failures.claim(self.period) {
            return;
        }
        let total = counters.attachments_failed.load(Ordering::Acquire);
        eprintln!(
            "braintrust: failed to upload {} attachment(s) in all; last error: {cause}",
            thousands(total)
        );
    }

    /// After rows were logged once the logger had been shut down: they
    /// are counted undelivered, the first at once, then one line per period.
    pub(super) fn after_shutdown(&self, rows: u64) {
        let total = self.after_stop_rows.fetch_add(rows, Ordering::AcqRel) + rows;
        if !self.after_stop.claim(self.period) {
            return;
        }
        eprintln!(
            "braintrust: {} row(s) logged after shutdown() are not sent; counted as undelivered (later ones too: Stats::undelivered_rows has the total, this line comes at most once per {} s)",
            thousands(total),
            self.period.as_secs()
        );
    }

    /// After the masking function failed (erred or panicked) on `fields`
    /// fields of one batch, each replaced by an error marker (logger thread).
    /// One line per period with the count, never one per call.
    pub(super) fn masking_failed(&self, fields: u64, cause: &str) {
        let total = self.mask_failures.fetch_add(fields, Ordering::AcqRel) + fields;
        if !self.masking.claim(self.period) {
            return;
        }
        let told = self.mask_told.swap(total, Ordering::AcqRel);
        if told == 0 {
            eprintln!(
                "braintrust: the masking function failed on {} field(s) ({cause}); each was replaced by an error marker. Further failures are summarized at most every {} s",
                thousands(total),
                self.period.as_secs()
            );
        } else {
            eprintln!(
                "braintrust: the masking function failed on {} more field(s) ({} in all); last: {cause}",
                thousands(total.saturating_sub(told)),
                thousands(total)
            );
        }
    }

    /// One warning that is not about rows (e.g. a payload directory that
    /// cannot be written), throttled with the failures.
    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What was lost since the previous call (what `flush()` reports).
    pub(super) fn take_losses(&self, counters: &Counters) -> Option<LossReport> {
        let now = Losses::of(counters);
        let mut last = self.at_last_flush.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::replace(&mut *last, now);
        let report = LossReport {
            dropped_queue_full: now.dropped - before.dropped,
            failed: now.failed - before.failed,
            undelivered: now.undelivered - before.undelivered,
            dumped: now.dumped - before.dumped,
            attachments_failed: now.attachments - before.attachments,
            last_error: None,
        };
        if report.is_empty() {
            return None;
        }
        Some(LossReport {
            last_error: (report.failed > 0
                || report.undelivered > 0
                || report.attachments_failed > 0)
                .then(|| self.last_error())
                .flatten(),
            ..report
        })
    }

    /// The totals line at flush, shutdown and exit, when anything was lost
    /// since the last one: "dropped 968,585 of 1,000,000 rows because the
    /// queue was full".
    pub(super) fn totals(
        &self,
        counters: &Counters,
        when: &str,
        dump_dir: Option<&std::path::Path>,
    ) {
        let now = Losses::of(counters);
        {
            let mut last = self
                .at_last_totals
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return;
            }
            *last = now;
        }
        if now.dropped + now.failed + now.undelivered + now.attachments == 0 {
            return;
        }
        let logged = thousands(counters.logged.load(Ordering::Acquire));
        let mut parts = Vec::new();
        if now.dropped > 0 {
            parts.push(format!(
                "dropped {} of {logged} rows because the queue was full",
                thousands(now.dropped)
            ));
        }
        if now.failed > 0 {
            parts.push(format!(
                "{} of {logged} rows failed for good",
                thousands(now.failed)
            ));
        }
        if now.undelivered > 0 {
            parts.push(format!(
                "{} of {logged} rows undelivered at the deadline",
                thousands(now.undelivered)
            ));
        }
        if now.attachments > 0 {
            parts.push(format!(
                "{} attachment upload(s) failed",
                thousands(now.attachments)
            ));
        }
        let mut line = format!("braintrust: {when}: {}", parts.join("; "));
        if let Some(dir) = dump_dir.filter(|_| now.dropped + now.failed + now.undelivered > 0) {
            line.push_str(&format!(
                " ({} written to {})",
                thousands(now.dumped),
                dir.display()
            ));
        }
        if now.failed + now.undelivered + now.attachments > 0 {
            if let Some(e) = self.last_error() {
                line.push_str(&format!("; last error: {e}"));
            }
        }
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(968_585), "968,585");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn throttle_lets_one_line_through_per_period() {
        let t = Throttle::default();
        assert!(t.claim(Duration::from_secs(60)));
        assert!(!t.claim(Duration::from_secs(60)));
        let t = Throttle::default();
        assert!(t.claim(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(2));
        assert!(t.claim(Duration::ZERO));
    }

    #[test]
    fn losses_are_reported_once_per_flush() {
        let c = Counters::default();
        let r = Reporter::new(Duration::from_secs(60), 10, 1 << 20);
        assert_eq!(r.take_losses(&c), None);
        c.dropped_queue_full.fetch_add(5, Ordering::Relaxed);
        c.failed.fetch_add(2, Ordering::Relaxed);
        r.failed(&c, 2, "boom");
        let l = r.take_losses(&c).unwrap();
        assert_eq!((l.dropped_queue_full, l.failed, l.total()), (5, 2, 7));
        assert_eq!(l.last_error.as_deref(), Some("boom"));
        assert_eq!(r.take_losses(&c), None);
    }
}
