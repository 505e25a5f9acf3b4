//! Attachments: files, bytes and JSON logged alongside spans and uploaded
//! separately from the rows, and external URLs (spec §10).
//!
//! An [`Attachment`] turns into its reference object when it becomes JSON
//! (through `serde` — `json!`, `serde_json::to_value` — or `Into<Value>` for
//! the typed [`Event`](crate::Event) API), so it can sit anywhere in `input`,
//! `output`, `expected` or `metadata`, nested in arrays and objects. The key is
//! generated at construction, so the reference is known before the upload.
//! Becoming JSON also registers the attachment here; after the logger thread
//! has posted a row carrying its reference, the upload thread of that backend
//! takes it from this registry and uploads it (signed URL, `PUT`, status).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// Bytes read from disk per chunk when a file attachment is streamed.
const FILE_CHUNK: usize = 64 * 1024;

/// The object a row carries in place of an attachment (spec §10).
///
/// ```
/// use braintrust_core::AttachmentReference;
/// let v = serde_json::json!({"type": "external_attachment", "filename": "cat.png",
///     "content_type": "image/png", "url": "https://example.com/cat.png"});
/// let r = AttachmentReference::from_value(&v).unwrap();
/// assert_eq!(r.filename(), "cat.png");
/// assert_eq!(serde_json::to_value(&r).unwrap(), v);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AttachmentReference {
    /// Bytes uploaded to Braintrust under `key`.
    #[serde(rename = "braintrust_attachment")]
    Braintrust {
        /// The file name shown in the UI.
        filename: String,
        /// The MIME type.
        content_type: String,
        /// The upload key (a UUID).
        key: String,
    },
    /// A file that stays where it is, at `url`.
    #[serde(rename = "external_attachment")]
    External {
        /// The file name shown in the UI.
        filename: String,
        /// The MIME type.
        content_type: String,
        /// Where the file is.
        url: String,
    },
}

impl AttachmentReference {
    /// Reads a reference out of a logged value (`None` if it is not one).
    pub fn from_value(v: &Value) -> Option<AttachmentReference> {
        AttachmentReference::deserialize(v).ok()
    }

    /// The file name.
    pub fn filename(&self) -> &str {
        match self {
            AttachmentReference::Braintrust { filename, .. }
            | AttachmentReference::External { filename, .. } => filename,
        }
    }

    /// The MIME type.
    pub fn content_type(&self) -> &str {
        match self {
            AttachmentReference::Braintrust { content_type, .. }
            | AttachmentReference::External { content_type, .. } => content_type,
        }
    }
}

/// Where an attachment's upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadStatus {
    /// Not handed to an upload thread yet: not logged, or its row is not
    /// posted yet.
    Pending,
    /// Being uploaded.
    Uploading,
    /// Uploaded (external attachments are always done).
    Done,
    /// The upload failed for good, with the reason.
    Error(String),
}

impl UploadStatus {
    /// From the server's status object (`{"upload_status": ..., "error_message"?}`).
    pub(crate) fn from_server(v: &Value) -> UploadStatus {
        match v.get("upload_status").and_then(Value::as_str) {
            Some("done") => UploadStatus::Done,
            Some("error") => UploadStatus::Error(
                v.get("error_message")
                    .and_then(Value::as_str)
                    .unwrap_or("upload failed")
                    .to_string(),
            ),
            _ => UploadStatus::Uploading,
        }
    }
}

/// An attachment that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The file does not exist or cannot be read.
    #[error("attachment file {} cannot be read: {source}", path.display())]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// The path is a directory or another non-file.
    #[error("attachment file {} is not a regular file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// A field broke a rule.
    #[error("attachment `{field}` {rule}")]
    Invalid {
        /// The field (`filename`, `content_type`, `url`).
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
    /// The value of a JSON attachment could not be serialized.
    #[error("attachment JSON could not be serialized: {0}")]
    Json(#[from] serde_json::Error),
}

fn check_filename(filename: &str) -> Result<(), AttachmentError> {
    if filename.trim().is_empty() {
        return Err(AttachmentError::Invalid {
            field: "filename",
            rule: "must not be empty".into(),
        });
    }
    Ok(())
}

fn check_content_type(ct: &str) -> Result<(), AttachmentError> {
    let ok = ct.split_once('/').is_some_and(|(t, s)| {
        !t.is_empty() && !s.is_empty() && !ct.chars().any(|c| c.is_control() || c == ' ')
    });
    if !ok {
        return Err(AttachmentError::Invalid {
            field: "content_type",
            rule: format!("must be a MIME type like `image/png`, got {ct:?}"),
        });
    }
    Ok(())
}

/// Where the bytes come from.
#[derive(Clone)]
enum Source {
    File(PathBuf),
    Bytes(Bytes),
}

struct Inner {
    key: String,
    filename: String,
    content_type: String,
    source: Source,
    status: Mutex<UploadStatus>,
}

/// A file, bytes or JSON value to upload with a span, placed anywhere in an
/// event. Cheap to clone (clones share the upload).
///
/// ```no_run
/// use braintrust_core::{Attachment, Event};
/// # fn demo(span: &braintrust_core::Span) -> Result<(), Box<dyn std::error::Error>> {
/// let image = Attachment::from_path("input_image.jpg", "image/jpeg")?.with_filename("user_input.jpg")?;
/// span.log(Event::new()
///     .input(serde_json::json!({"question": "What is this?", "context": image}))
///     .output("Example response."));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Attachment {
    inner: Arc<Inner>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.inner.source {
            Source::File(p) => format!("file {}", p.display()),
            Source::Bytes(b) => format!("{} bytes", b.len()),
        };
        f.debug_struct("Attachment")
            .field("key", &self.inner.key)
            .field("filename", &self.inner.filename)
            .field("content_type", &self.inner.content_type)
            .field("source", &source)
            .field("status", &self.status())
            .finish()
    }
}

impl Attachment {
    fn new(filename: String, content_type: String, source: Source) -> Attachment {
        Attachment {
            inner: Arc::new(Inner {
                key: uuid::Uuid::new_v4().to_string(),
                filename,
                content_type,
                source,
                status: Mutex::new(UploadStatus::Pending),
            }),
        }
    }

    /// A file on disk, streamed at upload time (never read whole into
    /// memory). The file name defaults to the path's last component. A path
    /// that does not exist, is not a file or cannot be opened is an error
    /// here, not at upload.
    ///
    /// ```
    /// use braintrust_core::{Attachment, AttachmentError};
    /// let e = Attachment::from_path("no/such/file.jpg", "image/jpeg").unwrap_err();
    /// assert!(matches!(e, AttachmentError::Unreadable { .. }));
    /// assert!(e.to_string().starts_with("attachment file no/such/file.jpg cannot be read"));
    /// ```
    pub fn from_path(
        path: impl AsRef<Path>,
        content_type: impl Into<String>,
    ) -> Result<Attachment, AttachmentError> {
        let path = path.as_ref();
        let content_type = content_type.into();
        check_content_type(&content_type)?;
        let unreadable = |source| AttachmentError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(AttachmentError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        std::fs::File::open(path).map_err(unreadable)?;
        // Absolute, so a later change of directory does not lose the file.
        let absolute = std::path::absolute(path).map_err(unreadable)?;
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        Ok(Attachment::new(
            filename,
            content_type,
            Source::File(absolute),
        ))
    }

    /// Bytes in memory.
    ///
    /// ```
    /// use braintrust_core::Attachment;
    /// let a = Attachment::from_bytes(vec![1, 2, 3], "data.bin", "application/octet-stream").unwrap();
    /// assert_eq!(serde_json::to_value(&a).unwrap()["type"], "braintrust_attachment");
    /// assert!(Attachment::from_bytes(vec![], "x", "png").is_err());
    /// ```
    pub fn from_bytes(
        bytes: impl Into<Bytes>,
        filename: impl Into<String>,
        content_type: impl Into<String>,
    ) -> Result<Attachment, AttachmentError> {
        let (filename, content_type) = (filename.into(), content_type.into());
        check_filename(&filename)?;
        check_content_type(&content_type)?;
        Ok(Attachment::new(
            filename,
            content_type,
            Source::Bytes(bytes.into()),
        ))
    }

    /// A JSON value uploaded as `data.json` (`application/json`), for large
    /// structured data that should not sit in the row.
    ///
    /// ```
    /// use braintrust_core::Attachment;
    /// let a = Attachment::json(&serde_json::json!({"rows": [1, 2, 3]})).unwrap();
    /// assert_eq!((a.filename(), a.content_type()), ("data.json", "application/json"));
    /// ```
    pub fn json(value: &impl Serialize) -> Result<Attachment, AttachmentError> {
        let bytes = serde_json::to_vec(value)?;
        Ok(Attachment::new(
            "data.json".into(),
            "application/json".into(),
            Source::Bytes(bytes.into()),
        ))
    }

    /// The same content under another file name (and a new key).
    pub fn with_filename(self, filename: impl Into<String>) -> Result<Attachment, AttachmentError> {
        let filename = filename.into();
        check_filename(&filename)?;
        Ok(Attachment::new(
            filename,
            self.inner.content_type.clone(),
            self.inner.source.clone(),
        ))
    }

    /// The upload key, generated at construction.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The file name.
    pub fn filename(&self) -> &str {
        &self.inner.filename
    }

    /// The MIME type.
    pub fn content_type(&self) -> &str {
        &self.inner.content_type
    }

    /// The reference object the row carries.
    pub fn reference(&self) -> AttachmentReference {
        AttachmentReference::Braintrust {
            filename: self.inner.filename.clone(),
            content_type: self.inner.content_type.clone(),
            key: self.inner.key.clone(),
        }
    }

    /// Where the upload stands, as this process knows it. To ask the server,
    /// see [`State::read_attachment`](crate::State::read_attachment).
    pub fn status(&self) -> UploadStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> MutexGuard<'_, UploadStatus> {
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_status(&self, s: UploadStatus) {
        *self.lock_status() = s;
    }

    /// The upload body and its length. A file is opened now and streamed in
    /// chunks (a fresh stream for each attempt).
    pub(crate) async fn body(&self) -> Result<(reqwest::Body, u64), String> {
        match &self.inner.source {
            Source::Bytes(b) => Ok((reqwest::Body::from(b.clone()), b.len() as u64)),
            Source::File(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    format!("attachment file {} cannot be read: {e}", path.display())
                })?;
                let len = file
                    .metadata()
                    .await
                    .map_err(|e| format!("attachment file {} cannot be read: {e}", path.display()))?
                    .len();
                let stream = tokio_util::io::ReaderStream::with_capacity(file, FILE_CHUNK);
                Ok((reqwest::Body::wrap_stream(stream), len))
            }
        }
    }

    /// Makes the attachment findable by the logger once a row carries its
    /// reference (only until it is taken for upload: one upload each).
    fn register(&self) {
        if *self.lock_status() != UploadStatus::Pending {
            return;
        }
        let mut map = registry();
        if map.insert(self.inner.key.clone(), self.clone()).is_none() {
            REGISTERED.store(map.len(), Ordering::Release);
        }
    }
}

impl Serialize for Attachment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.register();
        self.reference().serialize(s)
    }
}

impl From<Attachment> for Value {
    fn from(a: Attachment) -> Value {
        Value::from(&a)
    }
}

impl From<&Attachment> for Value {
    fn from(a: &Attachment) -> Value {
        a.register();
        reference_value(&a.reference())
    }
}

fn reference_value(r: &AttachmentReference) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// A file that stays at its URL: the row carries the reference, nothing is
/// uploaded, and its status is always [`UploadStatus::Done`].
///
/// ```
/// use braintrust_core::ExternalAttachment;
/// let a = ExternalAttachment::new("s3://bucket/cat.png", "cat.png", "image/png").unwrap();
/// assert_eq!(serde_json::Value::from(&a)["type"], "external_attachment");
/// assert!(ExternalAttachment::new("not a url", "cat.png", "image/png").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAttachment {
    url: String,
    filename: String,
    content_type: String,
}

impl ExternalAttachment {
    /// An attachment at `url` (any absolute URL: `https://`, `s3://`, ...).
    pub fn new(
        url: impl Into<String>,
        filename: impl Into<String>,
        content_type: impl Into<String>,
    ) -> Result<ExternalAttachment, AttachmentError> {
        let (url, filename, content_type) = (url.into(), filename.into(), content_type.into());
        if let Err(e) = reqwest::Url::parse(&url) {
            return Err(AttachmentError::Invalid {
                field: "url",
                rule: format!("must be an absolute URL ({e})"),
            });
        }
        check_filename(&filename)?;
        check_content_type(&content_type)?;
        Ok(ExternalAttachment {
            url,
            filename,
            content_type,
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The reference object the row carries.
    pub fn reference(&self) -> AttachmentReference {
        AttachmentReference::External {
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            url: self.url.clone(),
        }
    }

    /// Always [`UploadStatus::Done`]: nothing is uploaded.
    pub fn status(&self) -> UploadStatus {
        UploadStatus::Done
    }
}

impl Serialize for ExternalAttachment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.reference().serialize(s)
    }
}

impl From<ExternalAttachment> for Value {
    fn from(a: ExternalAttachment) -> Value {
        reference_value(&a.reference())
    }
}

impl From<&ExternalAttachment> for Value {
    fn from(a: &ExternalAttachment) -> Value {
        reference_value(&a.reference())
    }
}

/// What the server holds for an attachment ([`State::read_attachment`](crate::State::read_attachment)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredAttachment {
    /// The server's upload status.
    pub status: UploadStatus,
    /// The bytes, downloaded when the status is [`UploadStatus::Done`].
    pub data: Option<Vec<u8>>,
}

// ------------------------------------------------------------- registry

/// Attachments that became JSON and were not taken for upload yet.
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

fn registry() -> MutexGuard<'static, HashMap<String, Attachment>> {
    static MAP: OnceLock<Mutex<HashMap<String, Attachment>>> = OnceLock::new();
    MAP.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Takes the registered attachments whose references appear in a row's
/// JSON text (marking them uploading). One atomic load when none is waiting.
pub(crate) fn take_referenced(row: &str, out: &mut Vec<Attachment>) {
    if REGISTERED.load(Ordering::Acquire) == 0 || !row.contains("\"braintrust_attachment\"") {
        return;
    }
    const KEY: &str = "\"key\":\"";
    let mut map = registry();
    let mut rest = row;
    while let Some(at) = rest.find(KEY) {
        rest = &rest[at + KEY.len()..];
        let Some(end) = rest.find('"') else { break };
        if let Some(a) = map.remove(&rest[..end]) {
            a.set_status(UploadStatus::Uploading);
            out.push(a);
        }
        rest = &rest[end..];
    }
    REGISTERED.store(map.len(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_have_the_spec_shape() {
        let a = Attachment::from_bytes(&b"hi"[..], "a.txt", "text/plain").unwrap();
        let v = json!({"deep": [{"x": a.clone()}]});
        assert_eq!(
            v["deep"][0]["x"],
            json!({"type": "braintrust_attachment", "filename": "a.txt",
                   "content_type": "text/plain", "key": a.key()})
        );
        let text = serde_json::to_string(&json!({"input": v})).unwrap();
        let mut found = Vec::new();
        take_referenced(&text, &mut found);
        assert_eq!(found.len(), 1);
        assert_eq!(a.status(), UploadStatus::Uploading);
        // Taken once: a second row with the same reference uploads nothing.
        let mut again = Vec::new();
        take_referenced(&text, &mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn bad_fields_name_the_field() {
        let e = Attachment::from_bytes(vec![], "", "text/plain").unwrap_err();
        assert_eq!(e.to_string(), "attachment `filename` must not be empty");
        let e = Attachment::from_bytes(vec![], "a", "text").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("attachment `content_type` must be a MIME type"));
        let dir = tempfile::tempdir().unwrap();
        let e = Attachment::from_path(dir.path(), "text/plain").unwrap_err();
        assert!(matches!(e, AttachmentError::NotAFile { .. }));
    }
}
