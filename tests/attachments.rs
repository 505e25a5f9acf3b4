//! Attachments against the local server over loopback: references in rows,
//! bytes intact, uploads that never hold up ordinary spans, bounded memory
//! for large files, failures counted and told.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use braintrust::{
    Attachment, AttachmentError, AttachmentReference, Error, Event, ExternalAttachment,
    LoggerOptions, SpanArgs, State, UploadStatus,
};
use braintrust_devserver::{DevServer, DevServerConfig, RecordLimits};
use serde_json::json;

// ---------------------------------------------------------------- memory
//
// Live heap bytes allocated by threads other than the in-process server's
// (its runtime's threads are tagged), so the SDK's own memory is measured
// while the server buffers the upload it receives.

thread_local! {
    static SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn counted() -> bool {
    !SERVER_THREAD.try_with(Cell::get).unwrap_or(true)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            let now =
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests of this file run one at a time: the memory test measures the
/// whole process (server threads aside).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------ data

/// Deterministic pseudo-random bytes (xorshift), so corruption anywhere shows.
fn fill(seed: u64, buf: &mut [u8]) -> u64 {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    x
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Writes `len` pseudo-random bytes to a temp file in 1 MiB pieces; returns
/// the file and the checksum of its content.
fn temp_file(len: usize, seed: u64) -> (tempfile::NamedTempFile, u64) {
    let mut f = tempfile::Builder::new().suffix(".bin").tempfile().unwrap();
    let mut content = Vec::with_capacity(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut x = seed;
    while content.len() < len {
        let n = (len - content.len()).min(buf.len());
        x = fill(x, &mut buf[..n]);
        content.extend_from_slice(&buf[..n]);
    }
    f.write_all(&content).unwrap();
    f.flush().unwrap();
    (f, checksum(&content))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn paths(server: &DevServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

// ----------------------------------------------------------------- tests

#[test]
fn nested_attachments_become_references_and_arrive_intact() {
    let _g = serial();
    let (server, state, logger) = common::setup("attachments", |c| c);
    let (file, file_sum) = temp_file(300_000, 7);
    let image = Attachment::from_path(file.path(), "image/jpeg")
        .unwrap()
        .with_filename("user_input.jpg")
        .unwrap();
    let mut bytes = vec![0u8; 4096];
    fill(11, &mut bytes);
    let audio = Attachment::from_bytes(bytes.clone(), "clip.wav", "audio/wav").unwrap();
    let table = json!({"rows": [[1, 2], [3, 4]]});
    let data = Attachment::json(&table).unwrap();
    let external =
        ExternalAttachment::new("https://example.com/cat.png", "cat.png", "image/png").unwrap();

    let span = logger.start_span(SpanArgs::new().name("multimodal"));
    span.log(
        Event::new()
            // Through serde_json (json!), nested in arrays and objects.
            .input(json!({
                "question": "What is this?",
                "context": [image.clone(), {"deep": {"audio": audio.clone()}}],
            }))
            // Through the typed API.
            .output(data.clone())
            .metadata_entry("source", external.clone()),
    )
    .unwrap();
    span.end();
    logger.flush().unwrap();

    let row = common::row_named(&server, "multimodal");
    assert_eq!(
        row["input"]["context"][0],
        json!({"type": "braintrust_attachment", "filename": "user_input.jpg",
               "content_type": "image/jpeg", "key": image.key()})
    );
    assert_eq!(
        AttachmentReference::from_value(&row["input"]["context"][1]["deep"]["audio"]),
        Some(audio.reference())
    );
    assert_eq!(
        AttachmentReference::from_value(&row["output"]),
        Some(data.reference())
    );
    assert_eq!(
        row["metadata"]["source"],
        json!({"type": "external_attachment", "filename": "cat.png",
               "content_type": "image/png", "url": "https://example.com/cat.png"})
    );

    for a in [&image, &audio, &data] {
        assert_eq!(a.status(), UploadStatus::Done, "{a:?}");
    }
    let read = |a: &Attachment| {
        let stored = state.read_attachment(&a.reference()).unwrap();
        assert_eq!(stored.status, UploadStatus::Done);
        stored.data.expect("bytes of a done upload")
    };
    assert_eq!(checksum(&read(&image)), file_sum);
    assert_eq!(read(&audio), bytes);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&read(&data)).unwrap(),
        table
    );
    assert_eq!(external.status(), UploadStatus::Done);

    // The three-call flow per upload, after the row was posted; nothing for
    // the external one.
    let log = paths(&server);
    let first_row = log.iter().position(|p| p == "POST /logs3").unwrap();
    let count = |p: &str| log.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("POST /attachment/status"), 3, "{log:#?}");
    assert_eq!(count("PUT /dev/upload/"), 3, "{log:#?}");
    assert_eq!(count("POST /attachment") - 3, 3, "{log:#?}");
    let first_upload = log.iter().position(|p| p == "POST /attachment").unwrap();
    assert!(first_row < first_upload, "{log:#?}");
    let stats = state.stats();
    assert_eq!(
        (stats.attachments_uploaded, stats.attachments_failed),
        (3, 0)
    );
}

#[test]
fn a_large_slow_upload_does_not_delay_ordinary_spans_and_is_streamed() {
    let _g = serial();
    const SIZE: usize = 50 << 20;
    let (file, file_sum) = temp_file(SIZE, 3);

    // The server on its own runtime, whose threads are left out of the count.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| SERVER_THREAD.with(|t| t.set(true)))
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt
        .block_on(DevServer::start(
            DevServerConfig::default().record_requests(RecordLimits::OFF),
        ))
        .unwrap();
    let state = State::new(common::config_for(&server)).unwrap();
    let logger = braintrust::init_logger(
        LoggerOptions::new()
            .project("attachments-large")
            .state(state.clone()),
    )
    .unwrap();
    state.login().unwrap();
    server.faults().hold_uploads();

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    let video = Attachment::from_path(file.path(), "video/mp4").unwrap();
    let span = logger.start_span(SpanArgs::new().name("video"));
    span.log(Event::new().input(json!({"video": video.clone()})))
        .unwrap();
    span.end();
    // The video's row goes first, so its upload is under way before these.
    wait_until("the video's row", Duration::from_secs(20), || {
        video.status() == UploadStatus::Uploading
    });
    for i in 0..1_000 {
        let s = logger.start_span(SpanArgs::new().name("ordinary"));
        s.log(Event::new().output(json!(i))).unwrap();
        s.end();
    }
    wait_until("the 1,000 ordinary rows", Duration::from_secs(30), || {
        state.stats().delivered_rows == 1_001
    });
    // Delivered while the upload target still holds the video.
    assert_eq!(video.status(), UploadStatus::Uploading);
    assert_eq!(server.rows().len(), 1_001);
    // A flush whose deadline passes first says the upload is still pending.
    let _ = state.flush_with_timeout(Duration::from_millis(200));
    assert_eq!(state.stats().attachments_pending, 1);

    server.faults().release_uploads();
    logger.flush().unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    println!("SDK heap growth during a {SIZE}-byte upload: {peak} bytes");
    assert_eq!(video.status(), UploadStatus::Done);
    let stats = state.stats();
    assert_eq!(
        (stats.attachments_uploaded, stats.attachments_pending),
        (1, 0)
    );
    assert!(
        peak < (SIZE / 5) as isize,
        "the SDK's heap grew by {peak} bytes for a {SIZE}-byte file"
    );

    let stored = state.read_attachment(&video.reference()).unwrap();
    assert_eq!(checksum(stored.data.as_deref().unwrap()), file_sum);
    drop(server);
    drop(server_rt);
}

#[test]
fn a_failing_put_is_retried_then_marked_error_and_the_row_still_arrives() {
    let _g = serial();
    let (server, state, logger) = common::setup("attachments-fail", |c| c.num_retries(2));
    server.faults().fail_uploads(500);
    let a = Attachment::from_bytes(vec![1, 2, 3], "a.bin", "application/octet-stream").unwrap();
    let span = logger.start_span(SpanArgs::new().name("with-attachment"));
    span.log(Event::new().input(json!({"file": a.clone()})))
        .unwrap();
    span.end();

    let err = logger.flush().unwrap_err();
    let Error::RowsLost(report) = &err else {
        panic!("unexpected error: {err}")
    };
    assert_eq!((report.total(), report.attachments_failed), (0, 1), "{err}");
    assert!(
        err.to_string().starts_with("1 attachment upload(s) failed"),
        "{err}"
    );
    assert_eq!(server.faults().injected_upload_failures(), 3);
    let UploadStatus::Error(message) = a.status() else {
        panic!("status {:?}", a.status())
    };
    assert!(message.contains("[500]"), "{message}");
    // The signed URL's token never appears in what the user is told.
    assert!(!message.contains("token="), "{message}");

    // The row is there, with the reference; the server knows the error.
    let row = common::row_named(&server, "with-attachment");
    assert_eq!(row["input"]["file"]["key"], a.key());
    let stored = state.read_attachment(&a.reference()).unwrap();
    assert!(
        matches!(stored.status, UploadStatus::Error(_)),
        "{stored:?}"
    );
    assert_eq!(stored.data, None);
    let stats = state.stats();
    assert_eq!(
        (
            stats.delivered_rows,
            stats.failed_rows,
            stats.attachments_failed
        ),
        (1, 0, 1)
    );
    // Told once; the next flush is clean.
    logger.flush().unwrap();
}

#[test]
fn a_missing_file_is_a_clear_error_and_nothing_is_lost() {
    let _g = serial();
    let e = Attachment::from_path("no/such/dir/photo.jpg", "image/jpeg").unwrap_err();
    assert!(matches!(e, AttachmentError::Unreadable { .. }));
    assert!(
        e.to_string()
            .starts_with("attachment file no/such/dir/photo.jpg cannot be read: "),
        "{e}"
    );

    // A file deleted after construction: the upload fails with a clear
    // status, the row is delivered.
    let (server, state, logger) = common::setup("attachments-missing", |c| c);
    let (file, _) = temp_file(1000, 5);
    let a = Attachment::from_path(file.path(), "text/plain").unwrap();
    let path = file.path().to_path_buf();
    drop(file);
    let span = logger.start_span(SpanArgs::new().name("gone"));
    span.log(Event::new().input(a.clone()).output("still logged"))
        .unwrap();
    span.end();
    let err = logger.flush().unwrap_err();
    assert!(matches!(&err, Error::RowsLost(r) if r.attachments_failed == 1 && r.total() == 0));
    let UploadStatus::Error(message) = a.status() else {
        panic!("status {:?}", a.status())
    };
    assert!(
        message.contains(&format!("{} cannot be read", path.display())),
        "{message}"
    );
    assert_eq!(common::row_named(&server, "gone")["output"], "still logged");
    assert_eq!(state.stats().delivered_rows, 1);
}
