//! The upload thread of one backend: attachments whose rows were posted are
//! uploaded here (spec §10: signed URL, `PUT`, status), a few at a time, each
//! call under the one retry policy. It has its own thread and runtime, so a
//! large or slow upload never holds up the logger thread's rows.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use serde_json::{json, Value};

use super::rows::Prepared;
use super::Pipeline;
use crate::api::{describe_reqwest, LoginInfo};
use crate::attachment::{
    take_referenced, Attachment, AttachmentReference, StoredAttachment, UploadStatus,
};
use crate::retry::retry_after_header;
use crate::Error;

/// Uploads in flight at once per backend: enough to overlap a few files,
/// few enough not to compete with `/logs3` for the uplink.
const MAX_CONCURRENT_UPLOADS: usize = 4;

/// Extra time a `PUT` gets per MiB on top of the request timeout, so large
/// files are not cut off by a timeout sized for JSON requests.
const PUT_TIME_PER_MIB: Duration = Duration::from_secs(1);

/// Someone waiting for the uploads handed over before they asked.
enum Waiter {
    Sync(std::sync::mpsc::SyncSender<()>),
    Async(tokio::sync::oneshot::Sender<()>),
}

impl Waiter {
    fn answer(self) {
        match self {
            Waiter::Sync(tx) => {
                let _ = tx.send(());
            }
            Waiter::Async(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

enum Job {
    Upload(Attachment),
    Idle(Waiter),
    Read(
        AttachmentReference,
        std::sync::mpsc::SyncSender<Result<StoredAttachment, Error>>,
    ),
}

/// The handle the pipeline keeps; the thread starts with the first job.
#[derive(Default)]
pub(super) struct Uploads {
    tx: OnceLock<Option<tokio::sync::mpsc::UnboundedSender<Job>>>,
}

impl Uploads {
    fn send(&self, p: &Arc<Pipeline>, job: Job) -> bool {
        let tx = self.tx.get_or_init(|| start(p));
        tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Blocks until the uploads handed over so far have ended, or `deadline`
    /// passes (then they go on in the background). True if they ended.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> bool {
        let Some(Some(tx)) = self.tx.get() else {
            return true;
        };
        let (done, rx) = std::sync::mpsc::sync_channel(1);
        if tx.send(Job::Idle(Waiter::Sync(done))).is_err() {
            return true;
        }
        match deadline {
            None => rx.recv().is_ok(),
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .is_ok(),
        }
    }

    /// The async form of [`wait`](Self::wait), for any executor.
    pub(super) async fn wait_async(&self, deadline: Option<Instant>) -> bool {
        let Some(Some(tx)) = self.tx.get() else {
            return true;
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        if tx.send(Job::Idle(Waiter::Async(done))).is_err() {
            return true;
        }
        match deadline {
            None => rx.await.is_ok(),
            Some(d) => {
                use futures_util::future::{select, Either};
                matches!(
                    select(rx, super::Timer::until(d).fired).await,
                    Either::Left((Ok(()), _))
                )
            }
        }
    }

    /// Reports uploads still running when a flush gave up waiting for them,
    /// with their number; at exit they are lost, and the line says so.
    pub(super) fn warn_pending(&self, when: &str, pending: u64) {
        if pending == 0 {
            return;
        }
        if when == "at exit" {
            eprintln!(
                "braintrust: at exit: {pending} attachment upload(s) not finished at the deadline; they are lost (their rows were delivered)"
            );
        } else {
            eprintln!(
                "braintrust: {when}: {pending} attachment upload(s) still in progress at the deadline; they continue in the background"
            );
        }
    }
}

/// After rows were posted: hands the attachments they reference to the
/// upload thread. One atomic load per row when no attachment is waiting.
pub(super) fn after_rows(p: &Arc<Pipeline>, prepared: &Prepared) {
    let mut found = Vec::new();
    for i in 0..prepared.len() {
        take_referenced(prepared.row(i), &mut found);
    }
    for a in found {
        p.counters
            .attachments_queued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if !p.uploads.send(p, Job::Upload(a.clone())) {
            fail(p, &a, "the upload thread could not start".into());
        }
    }
}

/// Asks the server for an attachment's status and, once uploaded, its bytes
/// (`GET /attachment`, then the download URL). Blocks.
pub(crate) fn read_attachment(
    p: &Arc<Pipeline>,
    reference: &AttachmentReference,
) -> Result<StoredAttachment, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let stopped = || Error::Logger("the upload thread is not running".into());
    if !p.uploads.send(p, Job::Read(reference.clone(), tx)) {
        return Err(stopped());
    }
    rx.recv().map_err(|_| stopped())?
}

fn start(p: &Arc<Pipeline>) -> Option<tokio::sync::mpsc::UnboundedSender<Job>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // Weak: the thread ends when the backend is dropped (its sender with it).
    let weak = Arc::downgrade(p);
    let spawned = std::thread::Builder::new()
        .name("braintrust-uploads".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(weak, rx)),
                Err(e) => eprintln!("braintrust: cannot start the upload runtime: {e}"),
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            eprintln!(
                "braintrust: cannot start the upload thread: {e}; attachments are not uploaded"
            );
            None
        }
    }
}

/// Uploads in flight and who waits for them to end.
#[derive(Default)]
struct InFlight {
    n: usize,
    waiters: Vec<Waiter>,
}

async fn run(p: Weak<Pipeline>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS));
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    while let Some(job) = rx.recv().await {
        let Some(p) = p.upgrade() else { break };
        match job {
            Job::Upload(a) => {
                lock(&in_flight).n += 1;
                let (permits, in_flight) = (permits.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let permit = permits.acquire_owned().await;
                    upload(&p, &a).await;
                    drop(permit);
                    let waiters = {
                        let mut f = lock(&in_flight);
                        f.n -= 1;
                        if f.n == 0 {
                            std::mem::take(&mut f.waiters)
                        } else {
                            Vec::new()
                        }
                    };
                    waiters.into_iter().for_each(Waiter::answer);
                });
            }
            Job::Idle(w) => {
                let mut f = lock(&in_flight);
                if f.n == 0 {
                    drop(f);
                    w.answer();
                } else {
                    f.waiters.push(w);
                }
            }
            Job::Read(r, tx) => {
                tokio::spawn(async move {
                    let _ = tx.send(read(&p, &r).await);
                });
            }
        }
    }
}

fn lock(m: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One failed attempt: the error and the server's `Retry-After`, if any.
struct Failure {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// Runs `op` under the backend's retry policy (transient errors only).
/// Each attempt of a JSON call is cut by the request timeout or the retry
/// budget, whichever comes first, like every other call of the backend;
/// a `PUT` (`cut: false`) keeps its own timeout, sized for its body.
/// `what` names the call in a timeout's message.
async fn with_retries<T, F, Fut>(p: &Pipeline, what: &str, cut: bool, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut retry = super::worker::retry_policy(&p.config).start();
    loop {
        let attempt = if cut {
            let deadline = retry.budget_deadline();
            super::worker::attempt_within(&p.config, deadline, what, op()).await
        } else {
            op().await
        };
        match attempt {
            Ok(v) => return Ok(v),
            Err(f) if f.error.is_transient() => match retry.next_delay(f.retry_after) {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(f.error),
            },
            Err(f) => return Err(f.error),
        }
    }
}

/// Uploads one attachment and records the outcome (status on the server,
/// in the attachment, in the counters).
async fn upload(p: &Arc<Pipeline>, a: &Attachment) {
    let login = match with_retries(p, "login", true, || async {
        Ok(p.api.ensure_login().await?)
    })
    .await
    {
        Ok(l) => l,
        Err(e) => return fail(p, a, format!("could not log in: {e}")),
    };
    let outcome = transfer(p, &login, a).await;
    let status = match &outcome {
        Ok(()) => json!({"upload_status": "done"}),
        Err(e) => json!({"upload_status": "error", "error_message": e}),
    };
    let body = json!({"key": a.key(), "org_id": login.org_id, "status": status});
    let reported = with_retries(p, "POST attachment/status", true, || async {
        p.api
            .api_json(
                &login,
                reqwest::Method::POST,
                "attachment/status",
                Some(body.clone()),
            )
            .await
            .map_err(Failure::from)
    })
    .await;
    match (outcome, reported) {
        (Ok(()), Ok(_)) => {
            a.set_status(UploadStatus::Done);
            p.counters
                .attachments_uploaded
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        (Err(e), _) => fail(p, a, e),
        (Ok(()), Err(e)) => fail(
            p,
            a,
            format!("uploaded, but the status could not be set: {e}"),
        ),
    }
}

fn fail(p: &Pipeline, a: &Attachment, cause: String) {
    p.counters
        .attachments_failed
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    p.reporter
        .attachment_failed(&p.counters, a.filename(), &cause);
    a.set_status(UploadStatus::Error(cause));
}

/// Steps 1 and 2: a signed URL, then the bytes.
async fn transfer(p: &Pipeline, login: &LoginInfo, a: &Attachment) -> Result<(), String> {
    let request = json!({
        "key": a.key(),
        "filename": a.filename(),
        "content_type": a.content_type(),
        "org_id": login.org_id,
    });
    let signed = with_retries(p, "POST attachment", true, || async {
        p.api
            .api_json(
                login,
                reqwest::Method::POST,
                "attachment",
                Some(request.clone()),
            )
            .await
            .map_err(Failure::from)
    })
    .await
    .map_err(|e| format!("could not get an upload URL: {e}"))?;
    let url = signed
        .get("signedUrl")
        .and_then(Value::as_str)
        .ok_or("the upload URL answer has no signedUrl")?
        .to_string();
    let mut headers = HeaderMap::new();
    for (k, v) in signed
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) else {
            return Err(format!("the upload URL answer has a bad header {k:?}"));
        };
        headers.insert(name, value);
    }
    if is_azure(&url) {
        headers.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
    }
    let http = p.api.http().map_err(|e| e.to_string())?;
    // Signed URLs carry credentials in the query: errors name host and path only.
    let shown = reqwest::Url::parse(&url)
        .map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
        .unwrap_or_else(|_| "the signed URL".into());
    let context = format!("PUT {shown}");
    with_retries(p, &context, false, || async {
        let (body, len) = a.body().await.map_err(|message| Error::Http {
            context: context.clone(),
            message,
            // Not a transport failure: reading the file again would fail again.
            status: Some(0),
        })?;
        let mib = u32::try_from(len >> 20).unwrap_or(u32::MAX);
        let resp = http
            .put(&url)
            .headers(headers.clone())
            .header(CONTENT_LENGTH, len)
            .body(body)
            .timeout(p.config.effective_timeout() + PUT_TIME_PER_MIB.saturating_mul(mib))
            .send()
            .await
            .map_err(|e| Error::Http {
                context: context.clone(),
                message: describe_reqwest(&e),
                status: None,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after_header(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        Err(Failure {
            error: Error::Http {
                context: context.clone(),
                message: format!("[{}] {}", status.as_u16(), crate::api::truncate(&text, 300)),
                status: Some(status.as_u16()),
            },
            retry_after,
        })
    })
    .await
    .map_err(|e| e.to_string())
}

fn is_azure(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        u.host_str()
            .is_some_and(|h| h.ends_with(".blob.core.windows.net"))
    })
}

/// `GET /attachment`, then the bytes when the upload is done.
async fn read(p: &Pipeline, r: &AttachmentReference) -> Result<StoredAttachment, Error> {
    let login = p.api.ensure_login().await?;
    let mut query = reqwest::Url::parse("http://query/").expect("a valid URL");
    {
        let mut q = query.query_pairs_mut();
        q.append_pair("filename", r.filename())
            .append_pair("content_type", r.content_type())
            .append_pair("org_id", &login.org_id);
        match r {
            AttachmentReference::Braintrust { key, .. } => q.append_pair("key", key),
            AttachmentReference::External { url, .. } => q.append_pair("url", url),
        };
    }
    let path = format!("attachment?{}", query.query().unwrap_or_default());
    let v = p
        .api
        .api_json(&login, reqwest::Method::GET, &path, None)
        .await?;
    let status = UploadStatus::from_server(v.get("status").unwrap_or(&Value::Null));
    if status != UploadStatus::Done {
        return Ok(StoredAttachment { status, data: None });
    }
    let url = v
        .get("downloadUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Http {
            context: "GET attachment".into(),
            message: "the answer has no downloadUrl".into(),
            status: None,
        })?;
    let http = p.api.http()?;
    let failed = |message: String, status: Option<u16>| Error::Http {
        context: "GET attachment download URL".into(),
        message,
        status,
    };
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| failed(describe_reqwest(&e), None))?;
    let code = resp.status();
    if !code.is_success() {
        return Err(failed(format!("[{}]", code.as_u16()), Some(code.as_u16())));
    }
    let data = resp
        .bytes()
        .await
        .map_err(|e| failed(describe_reqwest(&e), None))?;
    Ok(StoredAttachment {
        status,
        data: Some(data.to_vec()),
    })
}
