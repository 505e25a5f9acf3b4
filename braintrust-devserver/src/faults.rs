//! Fault injection for `POST /logs3` and for signed-URL uploads (`PUT /dev/upload/...`).

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
    upload_fail: Option<u16>,
    upload_injected: usize,
}

/// What the `/logs3` handler must do for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logs3Plan {
    /// Sleep this long before answering.
    pub delay: Duration,
    /// Answer with this status (and optional `Retry-After` seconds) instead of storing.
    pub fail: Option<(u16, Option<u64>)>,
}

/// Scripted misbehaviour of `POST /logs3` and of the signed upload target, for testing client
/// retries and back-pressure.
///
/// Cheap to clone; all clones (and the server) share one state. Obtain it with
/// [`DevServer::faults`](crate::DevServer::faults).
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    /// True while uploads are held (a watch, so waiting uploads wake on release).
    uploads_held: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Arc::default(),
            uploads_held: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
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

    /// Every upload to a signed URL (`PUT /dev/upload/...`, attachments and overflow payloads)
    /// answers `status` and stores nothing, until [`reset`](Self::reset). The body is read
    /// first, as a real store would.
    pub fn fail_uploads(&self, status: u16) {
        self.lock().upload_fail = Some(status);
    }

    /// Holds every upload to a signed URL before its body is read, until
    /// [`release_uploads`](Self::release_uploads) (or [`reset`](Self::reset)): the slowest
    /// upload target. The client's sends stall on a full socket meanwhile, so a client that
    /// buffered the whole file would show it in its memory.
    pub fn hold_uploads(&self) {
        self.uploads_held.send_replace(true);
    }

    /// Lets held uploads (and later ones) proceed.
    pub fn release_uploads(&self) {
        self.uploads_held.send_replace(false);
    }

    /// Number of upload failures injected so far.
    pub fn injected_upload_failures(&self) -> usize {
        self.lock().upload_injected
    }

    /// Clears every scripted fault (failures, `Retry-After`, delays) and the injected counts.
    pub fn reset(&self) {
        *self.lock() = FaultState::default();
        self.release_uploads();
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

    /// Returns once uploads are not held.
    pub(crate) async fn upload_gate(&self) {
        let mut rx = self.uploads_held.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    /// The injected status for one upload, if it must fail.
    pub(crate) fn plan_upload(&self) -> Option<u16> {
        let mut s = self.lock();
        let status = s.upload_fail;
        if status.is_some() {
            s.upload_injected += 1;
        }
        status
    }
}
