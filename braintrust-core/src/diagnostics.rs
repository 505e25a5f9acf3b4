//! Reporting SDK problems to the user: loudly on stderr, once per kind, and
//! never by panicking or failing the user's code.

use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints `message` on stderr the first time `key` is seen in this process.
/// Returns true if it printed.
pub(crate) fn warn_once(key: &str, message: &str) -> bool {
    let mut g = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = g.get_or_insert_with(HashSet::new);
    if set.insert(key.to_string()) {
        eprintln!("{message}");
        true
    } else {
        false
    }
}

thread_local! {
    /// Set while [`catch_unwind_quietly`] runs on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind` whose panics print nothing: the panic hook stays silent for
/// panics on this thread while `f` runs, and other threads' panics are
/// reported as before. Used where the SDK reports the failure itself (a
/// masking function that panics on every row must not print a backtrace per
/// call, nor the panic message, which may quote the data being masked).
///
/// The first call wraps the process's panic hook once; a hook the
/// application installs later replaces the wrapper (its panics print again).
pub(crate) fn catch_unwind_quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r
}

/// Reports a value an integration (`braintrust-openai`) left out of `span`
/// because it broke a rule: `message` on stderr the first time `key` is
/// seen, and every time a count in the span's backend's
/// `Stats::rejected_logs`. Nothing for the no-op span.
pub fn report_left_out(span: &crate::Span, key: &str, message: &str) {
    if let Some(c) = span.core() {
        warn_once(key, message);
        c.object.state.pipeline().count_rejected_log();
    }
}
