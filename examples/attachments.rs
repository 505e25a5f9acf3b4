//! "Uploading attachments" from the Customize traces guide: an `Attachment`
//! placed anywhere in an event (here nested in `input`) is replaced in the row
//! by a reference and uploaded separately, after the row, so it never slows
//! ordinary logging. Bytes in memory, JSON values and external URLs work the
//! same way.
//!
//! Run it with `cargo run --example attachments` (offline unless
//! `BRAINTRUST_API_KEY` is set; then it prints the stored trace tree).

use braintrust::{Attachment, Event, ExternalAttachment, LoggerOptions, UploadStatus};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session = braintrust::local::init_logger_or_local(
        LoggerOptions::new().project("Attachment Example"),
    )?;
    let logger = &session.logger;

    // The guide's "path/to/input_image.jpg": a small file made for the demo.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("input_image.jpg");
    std::fs::write(
        &path,
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F'],
    )?;

    let image = Attachment::from_path(&path, "image/jpeg")?.with_filename("user_input.jpg")?;
    logger.log(
        Event::new()
            .input(json!({
                "question": "What is this?",
                "context": image.clone(),
            }))
            .output("Example response."),
    )?;

    // The other kinds: bytes in memory, a JSON value, and a file that stays
    // at its URL (nothing uploaded).
    let transcript = Attachment::from_bytes(&b"user: hello"[..], "transcript.txt", "text/plain")?;
    let report = Attachment::json(&json!({"pages": 12, "flagged": false}))?;
    let external = ExternalAttachment::new("https://example.com/cat.png", "cat.png", "image/png")?;
    logger.log(
        Event::new()
            .input(json!({"files": [transcript.clone(), external]}))
            .output(report.clone()),
    )?;

    // A flush waits for the uploads too.
    logger.flush()?;
    for a in [&image, &transcript, &report] {
        let stored = logger.state().read_attachment(&a.reference())?;
        assert_eq!(stored.status, UploadStatus::Done);
        println!(
            "{} ({}): {:?}, {} bytes on the server",
            a.filename(),
            a.content_type(),
            a.status(),
            stored.data.map_or(0, |d| d.len())
        );
    }

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
