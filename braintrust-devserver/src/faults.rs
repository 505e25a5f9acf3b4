//! Fault injection for `POST /logs3`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Default)]
struct FaultState {
    fail_next: usize,
    fail_next_status: u16,
    fail_all: Option<u16>,
    retry_after: Option<u64>,
    delay: Duration,
    injected: usize,
}

/// What the `/logs3` handler must do for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logs3Plan {
    /// Sleep this long before answering.
    pub delay: Duration,
    /// Answer with this status (and optional `Retry-After` seconds) instead of storing.
    pub fail: Option<(u16, Option<u64>)>,
}

/// Scripted misbehaviour of `POST /logs3`, for testing client retries and back-pressure.
///
/// Cheap to clone; all clones (and the server) share one state. Obtain it with
/// [`DevServer::faults`](crate::DevServer::faults).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` `/logs3` requests answer `status` with a JSON error body and are not stored.
    /// Replaces any earlier `fail_next_logs3` count. Takes precedence over
    /// [`fail_all_logs3`](Self::fail_all_logs3).
    pub fn fail_next_logs3(&self, n: usize, status: u16) {
        let mut s = self.lock();
        s.fail_next = n;
        s.fail_next_status = status;
    }

    /// Every `/logs3` request answers `status` (not stored) until [`reset`](Self::reset).
    pub fn fail_all_logs3(&self, status: u16) {
        self.lock().fail_all = Some(status);
    }

    /// Adds a `Retry-After: <secs>` header to injected failures.
    pub fn retry_after(&self, secs: u64) {
        self.lock().retry_after = Some(secs);
    }

    /// Delays every `/logs3` answer (successful or injected failure) by `delay`.
    pub fn logs3_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Number of `/logs3` failures injected so far.
    pub fn injected_failures(&self) -> usize {
        self.lock().injected
    }

    /// Clears every scripted fault (failures, `Retry-After`, delay) and the injected count.
    pub fn reset(&self) {
        *self.lock() = FaultState::default();
    }

    /// Decides the fate of one incoming `/logs3` request.
    pub(crate) fn plan_logs3(&self) -> Logs3Plan {
        let mut s = self.lock();
        let status = if s.fail_next > 0 {
            s.fail_next -= 1;
            Some(s.fail_next_status)
        } else {
            s.fail_all
        };
        if status.is_some() {
            s.injected += 1;
        }
        Logs3Plan {
            delay: s.delay,
            fail: status.map(|st| (st, s.retry_after)),
        }
    }
}
