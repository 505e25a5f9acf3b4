//! Span export strings ("slugs"): the opaque base64 strings produced by
//! `Span::export()`, `Logger::export()` and `Experiment::export()`, and accepted
//! by `start_span(parent = ...)` (protocol spec §7).
//!
//! A slug is **standard** base64 (alphabet `+/`, `=` padded) of a small binary
//! header followed by an optional compact JSON tail:
//!
//! * byte 0 is the format version (1 to 4);
//! * byte 1 is the [`ObjectType`] (1 experiment, 2 project_logs, 3 playground_logs);
//! * V3/V4: byte 2 is a count of packed id entries, each a field id byte followed
//!   by the raw id bytes, then the JSON tail.
//!
//! Writers: [`SpanComponents::to_v4_string`] (the default, for OpenTelemetry hex
//! ids) and [`SpanComponents::to_v3_string`] (for legacy UUID ids).
//! Reader: [`SpanComponents::parse`], which accepts V1 to V4.
//!
//! The JSON tail is written exactly as the official Python SDK writes it
//! (`json.dumps(obj, separators=(",", ":"))`): non-ASCII characters as `\uXXXX`
//! escapes with lowercase hex (surrogate pairs above U+FFFF), DEL as `\u007f`,
//! and floats in Python `repr` form (`1e-05`, `1e+16`, `1.0`). So encoding gives
//! byte-identical slugs to the Python SDK.
//!
//! ```
//! use braintrust_core::{ObjectType, SpanComponents};
//!
//! let slug = SpanComponents::new(ObjectType::ProjectLogs, "5f0e4a4e-3b8a-4f55-9a53-3d4c1e1f2a01")
//!     .with_row_ids(
//!         "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e",
//!         "00f067aa0ba902b7",
//!         "4bf92f3577b34da6a3ce929d0e0e4736",
//!     )
//!     .to_v4_string();
//! assert!(slug.starts_with("BAICAwDwZ6oLqQK3BEv5"));
//!
//! let back = SpanComponents::parse(&slug).unwrap();
//! assert_eq!(back.span_id.as_deref(), Some("00f067aa0ba902b7"));
//! assert_eq!(back.object_id_fields()["log_id"], "g");
//! ```

use std::fmt;
use std::io;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::{Map, Value};

/// The error message of every slug decode failure, identical to the official SDKs'.
pub const INVALID_ENCODING_MESSAGE: &str = "SpanComponents string is not properly encoded. This library only supports encoding versions up to 4. Please make sure the SDK library used to decode the SpanComponents is at least as new as any library used to encode it.";

/// Version byte of the V3 format (legacy UUID ids).
pub(crate) const ENCODING_VERSION_V3: u8 = 3;
/// Version byte of the V4 format (the default; OpenTelemetry hex ids).
pub(crate) const ENCODING_VERSION_V4: u8 = 4;

/// Packed field id of `object_id` (V3; V4 decoders accept it as 16 bytes of hex).
const FIELD_OBJECT_ID: u8 = 1;
/// Packed field id of `row_id` (V3; V4 decoders accept it as 16 bytes of hex).
const FIELD_ROW_ID: u8 = 2;
/// Packed field id of `span_id` (V3: 16-byte UUID; V4: 8 bytes of hex).
const FIELD_SPAN_ID: u8 = 3;
/// Packed field id of `root_span_id` (V3: 16-byte UUID; V4: 16 bytes of hex).
const FIELD_ROOT_SPAN_ID: u8 = 4;

/// Base64 decoder: standard alphabet, padding optional, non-zero trailing bits
/// tolerated (Python's `base64.b64decode` is equally lenient about those bits).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The kind of object a span belongs to (byte 1 of a slug).
///
/// `Default` is [`ObjectType::ProjectLogs`], the object of `init_logger`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    /// An experiment (`1`); rows carry `experiment_id`.
    Experiment,
    /// Project logs (`2`); rows carry `project_id` and `log_id: "g"`.
    #[default]
    ProjectLogs,
    /// Playground logs (`3`, V3 and later only); rows carry `prompt_session_id`
    /// and `log_id: "x"`.
    PlaygroundLogs,
}

impl ObjectType {
    /// The wire name: `"experiment"`, `"project_logs"` or `"playground_logs"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectType::Experiment => "experiment",
            ObjectType::ProjectLogs => "project_logs",
            ObjectType::PlaygroundLogs => "playground_logs",
        }
    }

    /// The byte written into slugs: 1, 2 or 3.
    pub const fn as_u8(self) -> u8 {
        match self {
            ObjectType::Experiment => 1,
            ObjectType::ProjectLogs => 2,
            ObjectType::PlaygroundLogs => 3,
        }
    }

    /// The inverse of [`ObjectType::as_u8`].
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(ObjectType::Experiment),
            2 => Some(ObjectType::ProjectLogs),
            3 => Some(ObjectType::PlaygroundLogs),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectType {
    type Err = SlugError;

    /// Parses the wire name (`"experiment"`, `"project_logs"`, `"playground_logs"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "experiment" => Ok(ObjectType::Experiment),
            "project_logs" => Ok(ObjectType::ProjectLogs),
            "playground_logs" => Ok(ObjectType::PlaygroundLogs),
            other => Err(SlugError::UnknownObjectType(other.to_string())),
        }
    }
}

impl TryFrom<u8> for ObjectType {
    type Error = SlugError;

    /// Converts the slug byte (1, 2, 3).
    fn try_from(b: u8) -> Result<Self, Self::Error> {
        ObjectType::from_u8(b).ok_or_else(|| SlugError::UnknownObjectType(b.to_string()))
    }
}

impl From<ObjectType> for u8 {
    fn from(t: ObjectType) -> u8 {
        t.as_u8()
    }
}

/// Errors of slug decoding, validation and object-id mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    /// The string is not a valid slug (bad base64, truncated, unknown version or
    /// object type, malformed JSON tail, or decoded fields that fail
    /// [`SpanComponents::validate`]). `Display` is exactly the official SDKs'
    /// message; `reason` says what went wrong, for debugging.
    #[error("{}", INVALID_ENCODING_MESSAGE)]
    InvalidEncoding {
        /// What exactly failed (not part of the displayed message).
        reason: &'static str,
    },
    /// Not exactly one of `object_id` and `compute_object_metadata_args` is set
    /// (empty strings and empty maps count as unset).
    #[error("span components must set exactly one of object_id and compute_object_metadata_args")]
    InvalidObjectIdentity,
    /// `row_id`, `span_id` and `root_span_id` are not all set or all unset.
    #[error("row_id, span_id and root_span_id must be all set or all unset")]
    IncompleteRowIds,
    /// [`SpanComponents::try_object_id_fields`] was called on components that
    /// carry `compute_object_metadata_args` instead of an `object_id`.
    #[error("cannot compute object id fields: the span components have no object_id (only compute_object_metadata_args)")]
    MissingObjectId,
    /// An object type name or byte that is not experiment/project_logs/playground_logs.
    #[error(
        "unknown span object type {0:?}; expected experiment, project_logs or playground_logs"
    )]
    UnknownObjectType(String),
}

impl SlugError {
    fn invalid(reason: &'static str) -> Self {
        SlugError::InvalidEncoding { reason }
    }
}

/// The decoded content of a slug (spec §7.1).
///
/// Invariants (checked by [`SpanComponents::validate`], and by
/// [`SpanComponents::parse`] on everything it decodes):
/// * exactly one of `object_id` and `compute_object_metadata_args` is set;
/// * `row_id`, `span_id` and `root_span_id` are all set or all unset.
///
/// As in the official SDKs, an empty string or an empty map counts as unset.
/// The encoders do not validate; call [`SpanComponents::validate`] first if the
/// value comes from untrusted input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanComponents {
    /// The kind of object the span belongs to.
    pub object_type: ObjectType,
    /// The resolved object id (project id, experiment id or prompt session id).
    pub object_id: Option<String>,
    /// Arguments to resolve the object lazily, used instead of `object_id`
    /// before the project is known, e.g. `{"project_name": "x", "project_id": null}`.
    pub compute_object_metadata_args: Option<Map<String, Value>>,
    /// The row id (`id` field) of the span's row.
    pub row_id: Option<String>,
    /// The span id (16 hex chars by default, a UUID in legacy mode).
    pub span_id: Option<String>,
    /// The trace id (32 hex chars by default, a UUID in legacy mode).
    pub root_span_id: Option<String>,
    /// Event fields deep-merged into every span started under this parent.
    pub propagated_event: Option<Map<String, Value>>,
}

impl SpanComponents {
    /// Components for a resolved object, without a span (e.g. `Logger::export()`
    /// once the project id is known).
    pub fn new(object_type: ObjectType, object_id: impl Into<String>) -> Self {
        SpanComponents {
            object_type,
            object_id: Some(object_id.into()),
            ..SpanComponents::default()
        }
    }

    /// Components for an object that is not resolved yet (spec §7.5), e.g.
    /// `{"project_name": "my-project", "project_id": null}`.
    pub fn with_compute_args(object_type: ObjectType, args: Map<String, Value>) -> Self {
        SpanComponents {
            object_type,
            compute_object_metadata_args: Some(args),
            ..SpanComponents::default()
        }
    }

    /// Sets the row triple: the span's row id, span id and trace (root span) id.
    pub fn with_row_ids(
        mut self,
        row_id: impl Into<String>,
        span_id: impl Into<String>,
        root_span_id: impl Into<String>,
    ) -> Self {
        self.row_id = Some(row_id.into());
        self.span_id = Some(span_id.into());
        self.root_span_id = Some(root_span_id.into());
        self
    }

    /// Sets the `propagated_event`.
    pub fn with_propagated_event(mut self, event: Map<String, Value>) -> Self {
        self.propagated_event = Some(event);
        self
    }

    /// True if `row_id`, `span_id` and `root_span_id` are all set and non-empty,
    /// i.e. a child started from this slug joins the span's trace.
    pub fn has_row_ids(&self) -> bool {
        present(&self.row_id).is_some()
            && present(&self.span_id).is_some()
            && present(&self.root_span_id).is_some()
    }

    /// Encodes as V4 (spec §7.2), the default format.
    ///
    /// `span_id` is packed as 8 bytes (field 3) only if it is exactly 16
    /// lowercase hex chars, `root_span_id` as 16 bytes (field 4) only if it is
    /// exactly 32 lowercase hex chars. Everything else goes into the JSON tail in
    /// the order `compute_object_metadata_args`, `propagated_event`, `object_id`,
    /// `row_id`, `span_id`, `root_span_id`. Unset or empty values are omitted
    /// (including empty maps); if nothing remains there is no tail.
    ///
    /// ```
    /// use braintrust_core::{ObjectType, SpanComponents};
    /// let s = SpanComponents::new(ObjectType::Experiment, "0c8d7c0e-9f1b-4a7e-8b1c-6a2d3e4f5a6b");
    /// assert_eq!(
    ///     s.to_v4_string(),
    ///     "BAEAeyJvYmplY3RfaWQiOiIwYzhkN2MwZS05ZjFiLTRhN2UtOGIxYy02YTJkM2U0ZjVhNmIifQ=="
    /// );
    /// ```
    pub fn to_v4_string(&self) -> String {
        let mut tail = self.tail_base();
        let mut packed: Vec<u8> = Vec::with_capacity(26);
        let mut n: u8 = 0;
        if let Some(v) = present(&self.object_id) {
            tail.insert("object_id".into(), Value::String(v.to_string()));
        }
        if let Some(v) = present(&self.row_id) {
            tail.insert("row_id".into(), Value::String(v.to_string()));
        }
        if let Some(v) = present(&self.span_id) {
            match lower_hex_bytes::<8>(v) {
                Some(b) => {
                    packed.push(FIELD_SPAN_ID);
                    packed.extend_from_slice(&b);
                    n += 1;
                }
                None => {
                    tail.insert("span_id".into(), Value::String(v.to_string()));
                }
            }
        }
        if let Some(v) = present(&self.root_span_id) {
            match lower_hex_bytes::<16>(v) {
                Some(b) => {
                    packed.push(FIELD_ROOT_SPAN_ID);
                    packed.extend_from_slice(&b);
                    n += 1;
                }
                None => {
                    tail.insert("root_span_id".into(), Value::String(v.to_string()));
                }
            }
        }
        self.finish(ENCODING_VERSION_V4, n, packed, tail)
    }

    /// Encodes as V3 (spec §7.3), the format for legacy UUID ids.
    ///
    /// Each of `object_id`, `row_id`, `span_id`, `root_span_id` (field ids 1 to 4)
    /// is packed as 16 raw bytes only if it is a canonical lowercase dashed UUID
    /// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), so decoding always gives back the
    /// same string. Unlike Python, a 32-hex trace id is **not** packed (Python
    /// packs it and it comes back dashed). Other values go into the JSON tail as
    /// in [`SpanComponents::to_v4_string`].
    pub fn to_v3_string(&self) -> String {
        let mut tail = self.tail_base();
        let mut packed: Vec<u8> = Vec::with_capacity(68);
        let mut n: u8 = 0;
        let fields = [
            (FIELD_OBJECT_ID, "object_id", &self.object_id),
            (FIELD_ROW_ID, "row_id", &self.row_id),
            (FIELD_SPAN_ID, "span_id", &self.span_id),
            (FIELD_ROOT_SPAN_ID, "root_span_id", &self.root_span_id),
        ];
        for (field_id, name, value) in fields {
            if let Some(v) = present(value) {
                match canonical_uuid_bytes(v) {
                    Some(b) => {
                        packed.push(field_id);
                        packed.extend_from_slice(&b);
                        n += 1;
                    }
                    None => {
                        tail.insert(name.into(), Value::String(v.to_string()));
                    }
                }
            }
        }
        self.finish(ENCODING_VERSION_V3, n, packed, tail)
    }

    /// Encodes with the writer the spec prescribes for these ids (§7.1): V3 if
    /// `span_id` and `root_span_id` are both canonical UUIDs (legacy id mode),
    /// otherwise V4.
    pub fn to_export_string(&self) -> String {
        let is_uuid = |v: &Option<String>| present(v).and_then(canonical_uuid_bytes).is_some();
        if is_uuid(&self.span_id) && is_uuid(&self.root_span_id) {
            self.to_v3_string()
        } else {
            self.to_v4_string()
        }
    }

    /// Decodes a slug of any version 1 to 4 and validates it.
    ///
    /// * Versions above 4 (and 0) are rejected.
    /// * Unknown JSON tail keys are ignored (so are `object_type` keys in the tail).
    /// * Packed V4 ids come back as lowercase hex, packed V1 to V3 ids as
    ///   lowercase dashed UUIDs.
    /// * ASCII whitespace anywhere in the input is ignored, and `=` padding is
    ///   optional.
    ///
    /// Never panics: every failure is [`SlugError::InvalidEncoding`], whose
    /// `Display` is exactly [`INVALID_ENCODING_MESSAGE`].
    ///
    /// ```
    /// use braintrust_core::{ObjectType, SlugError, SpanComponents};
    /// let c = SpanComponents::parse("AwEBAQyNfA6fG0p+ixxqLT5PWms=").unwrap();
    /// assert_eq!(c.object_type, ObjectType::Experiment);
    /// assert_eq!(c.object_id.as_deref(), Some("0c8d7c0e-9f1b-4a7e-8b1c-6a2d3e4f5a6b"));
    ///
    /// let err = SpanComponents::parse("not-base64!!").unwrap_err();
    /// assert!(matches!(err, SlugError::InvalidEncoding { .. }));
    /// ```
    pub fn parse(s: &str) -> Result<SpanComponents, SlugError> {
        let bytes = decode_base64(s).ok_or(SlugError::invalid("not valid base64"))?;
        let components = match bytes.first().copied() {
            None => return Err(SlugError::invalid("empty")),
            Some(1) => decode_v1(&bytes)?,
            Some(2) => decode_v2(&bytes)?,
            Some(3) => decode_v3_v4(&bytes, false)?,
            Some(4) => decode_v3_v4(&bytes, true)?,
            Some(_) => return Err(SlugError::invalid("unsupported encoding version")),
        };
        components
            .validate()
            .map_err(|_| SlugError::invalid("decoded components fail validation"))?;
        Ok(components)
    }

    /// The object-id fields these components put on rows (spec §7.5a):
    ///
    /// | object_type | fields |
    /// |---|---|
    /// | experiment | `{"experiment_id": object_id}` |
    /// | project_logs | `{"project_id": object_id, "log_id": "g"}` |
    /// | playground_logs | `{"prompt_session_id": object_id, "log_id": "x"}` |
    ///
    /// Returns an **empty map** if there is no (non-empty) `object_id`, i.e. the
    /// components carry `compute_object_metadata_args`, which must be resolved to
    /// an id first. Use [`SpanComponents::try_object_id_fields`] to get an error
    /// instead.
    pub fn object_id_fields(&self) -> Map<String, Value> {
        self.try_object_id_fields().unwrap_or_default()
    }

    /// Like [`SpanComponents::object_id_fields`], but fails with
    /// [`SlugError::MissingObjectId`] when there is no `object_id`.
    pub fn try_object_id_fields(&self) -> Result<Map<String, Value>, SlugError> {
        let id = present(&self.object_id).ok_or(SlugError::MissingObjectId)?;
        let mut m = Map::new();
        match self.object_type {
            ObjectType::Experiment => {
                m.insert("experiment_id".into(), Value::String(id.to_string()));
            }
            ObjectType::ProjectLogs => {
                m.insert("project_id".into(), Value::String(id.to_string()));
                m.insert("log_id".into(), Value::String("g".into()));
            }
            ObjectType::PlaygroundLogs => {
                m.insert("prompt_session_id".into(), Value::String(id.to_string()));
                m.insert("log_id".into(), Value::String("x".into()));
            }
        }
        Ok(m)
    }

    /// Checks the invariants of the official SDKs (empty strings and empty maps
    /// count as unset):
    /// * exactly one of `object_id` and `compute_object_metadata_args`
    ///   ([`SlugError::InvalidObjectIdentity`]);
    /// * `row_id`, `span_id`, `root_span_id` all set or all unset
    ///   ([`SlugError::IncompleteRowIds`]).
    pub fn validate(&self) -> Result<(), SlugError> {
        let has_object_id = present(&self.object_id).is_some();
        let has_args = self
            .compute_object_metadata_args
            .as_ref()
            .is_some_and(|m| !m.is_empty());
        if has_object_id == has_args {
            return Err(SlugError::InvalidObjectIdentity);
        }
        let row = present(&self.row_id).is_some();
        let span = present(&self.span_id).is_some();
        let root = present(&self.root_span_id).is_some();
        if !(row == span && span == root) {
            return Err(SlugError::IncompleteRowIds);
        }
        Ok(())
    }

    /// The JSON tail's leading keys: compute args, then propagated_event (each
    /// only when non-empty).
    fn tail_base(&self) -> Map<String, Value> {
        let mut tail = Map::new();
        if let Some(args) = self
            .compute_object_metadata_args
            .as_ref()
            .filter(|m| !m.is_empty())
        {
            tail.insert(
                "compute_object_metadata_args".into(),
                Value::Object(args.clone()),
            );
        }
        if let Some(ev) = self.propagated_event.as_ref().filter(|m| !m.is_empty()) {
            tail.insert("propagated_event".into(), Value::Object(ev.clone()));
        }
        tail
    }

    fn finish(&self, version: u8, n: u8, packed: Vec<u8>, tail: Map<String, Value>) -> String {
        let mut raw = Vec::with_capacity(3 + packed.len() + 64);
        raw.push(version);
        raw.push(self.object_type.as_u8());
        raw.push(n);
        raw.extend_from_slice(&packed);
        if !tail.is_empty() {
            raw.extend_from_slice(python_compact_json(&Value::Object(tail)).as_bytes());
        }
        STANDARD.encode(raw)
    }
}

impl FromStr for SpanComponents {
    type Err = SlugError;

    /// Same as [`SpanComponents::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpanComponents::parse(s)
    }
}

/// `Some(s)` if the option holds a non-empty string (the SDKs' truthiness).
fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        LENIENT_BASE64.decode(compact).ok()
    } else {
        LENIENT_BASE64.decode(s).ok()
    }
}

/// A bounds-checked reader over the decoded bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SlugError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(SlugError::invalid("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, SlugError> {
        Ok(self.take(1)?[0])
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos.min(self.bytes.len())..];
        self.pos = self.bytes.len();
        out
    }
}

fn flag(b: u8) -> Result<bool, SlugError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(SlugError::invalid("flag byte is not 0 or 1")),
    }
}

/// V1 and V2 only know experiment (1) and project_logs (2).
fn legacy_object_type(b: u8) -> Result<ObjectType, SlugError> {
    match b {
        1 => Ok(ObjectType::Experiment),
        2 => Ok(ObjectType::ProjectLogs),
        _ => Err(SlugError::invalid("unknown object type")),
    }
}

fn uuid_from(bytes: &[u8]) -> Result<String, SlugError> {
    let arr: &[u8; 16] = bytes
        .try_into()
        .map_err(|_| SlugError::invalid("uuid is not 16 bytes"))?;
    Ok(format_uuid(arr))
}

/// Row id of V1/V2: a 16-byte UUID or UTF-8 text, in all remaining bytes.
fn legacy_row_id(rest: &[u8], is_uuid: bool) -> Result<String, SlugError> {
    let row_id = if is_uuid {
        uuid_from(rest)?
    } else {
        std::str::from_utf8(rest)
            .map_err(|_| SlugError::invalid("row id is not utf-8"))?
            .to_string()
    };
    if row_id.is_empty() {
        return Err(SlugError::invalid("empty row id"));
    }
    Ok(row_id)
}

fn decode_v1(bytes: &[u8]) -> Result<SpanComponents, SlugError> {
    let mut c = Cursor::new(bytes, 1);
    let object_type = legacy_object_type(c.byte()?)?;
    let has_row = flag(c.byte()?)?;
    let row_is_uuid = flag(c.byte()?)?;
    let object_id = uuid_from(c.take(16)?)?;
    let mut out = SpanComponents::new(object_type, object_id);
    if has_row {
        let span_id = uuid_from(c.take(16)?)?;
        let root_span_id = uuid_from(c.take(16)?)?;
        let row_id = legacy_row_id(c.rest(), row_is_uuid)?;
        out = out.with_row_ids(row_id, span_id, root_span_id);
    }
    Ok(out)
}

fn decode_v2(bytes: &[u8]) -> Result<SpanComponents, SlugError> {
    let mut c = Cursor::new(bytes, 1);
    let object_type = legacy_object_type(c.byte()?)?;
    let has_object_id = flag(c.byte()?)?;
    let has_args = flag(c.byte()?)?;
    let has_row = flag(c.byte()?)?;
    let row_is_uuid = flag(c.byte()?)?;
    let mut out = SpanComponents {
        object_type,
        ..SpanComponents::default()
    };
    if has_object_id {
        out.object_id = Some(uuid_from(c.take(16)?)?);
    }
    if has_args {
        let len_bytes: [u8; 4] = c
            .take(4)?
            .try_into()
            .map_err(|_| SlugError::invalid("truncated"))?;
        let len = usize::try_from(u32::from_be_bytes(len_bytes))
            .map_err(|_| SlugError::invalid("length overflow"))?;
        let json = c.take(len)?;
        match serde_json::from_slice::<Value>(json) {
            Ok(Value::Object(m)) => out.compute_object_metadata_args = Some(m),
            Ok(Value::Null) => {}
            _ => return Err(SlugError::invalid("compute args are not a JSON object")),
        }
    }
    if has_row {
        let span_id = uuid_from(c.take(16)?)?;
        let root_span_id = uuid_from(c.take(16)?)?;
        let row_id = legacy_row_id(c.rest(), row_is_uuid)?;
        out = out.with_row_ids(row_id, span_id, root_span_id);
    }
    Ok(out)
}

fn decode_v3_v4(bytes: &[u8], v4: bool) -> Result<SpanComponents, SlugError> {
    let mut c = Cursor::new(bytes, 1);
    let object_type =
        ObjectType::from_u8(c.byte()?).ok_or(SlugError::invalid("unknown object type"))?;
    let n = c.byte()?;
    let mut out = SpanComponents {
        object_type,
        ..SpanComponents::default()
    };
    for _ in 0..n {
        let field_id = c.byte()?;
        let value = if v4 {
            match field_id {
                FIELD_SPAN_ID => hex_lower(c.take(8)?),
                FIELD_OBJECT_ID | FIELD_ROW_ID | FIELD_ROOT_SPAN_ID => hex_lower(c.take(16)?),
                _ => return Err(SlugError::invalid("unknown packed field id")),
            }
        } else {
            match field_id {
                FIELD_OBJECT_ID..=FIELD_ROOT_SPAN_ID => uuid_from(c.take(16)?)?,
                _ => return Err(SlugError::invalid("unknown packed field id")),
            }
        };
        let slot = match field_id {
            FIELD_OBJECT_ID => &mut out.object_id,
            FIELD_ROW_ID => &mut out.row_id,
            FIELD_SPAN_ID => &mut out.span_id,
            _ => &mut out.root_span_id,
        };
        *slot = Some(value);
    }
    let rest = c.rest();
    if !rest.is_empty() {
        apply_tail(&mut out, rest)?;
    }
    Ok(out)
}

/// Copies the known keys of a JSON tail into `out` (tail values win over packed
/// ones, `null` unsets). Unknown keys are ignored.
fn apply_tail(out: &mut SpanComponents, tail: &[u8]) -> Result<(), SlugError> {
    let value: Value = serde_json::from_slice(tail)
        .map_err(|_| SlugError::invalid("JSON tail is not valid JSON"))?;
    let Value::Object(map) = value else {
        return Err(SlugError::invalid("JSON tail is not an object"));
    };
    for (key, value) in map {
        match key.as_str() {
            "object_id" | "row_id" | "span_id" | "root_span_id" => {
                let v = match value {
                    Value::String(s) => Some(s),
                    Value::Null => None,
                    _ => return Err(SlugError::invalid("id in JSON tail is not a string")),
                };
                match key.as_str() {
                    "object_id" => out.object_id = v,
                    "row_id" => out.row_id = v,
                    "span_id" => out.span_id = v,
                    _ => out.root_span_id = v,
                }
            }
            "compute_object_metadata_args" | "propagated_event" => {
                let v = match value {
                    Value::Object(m) => Some(m),
                    Value::Null => None,
                    _ => return Err(SlugError::invalid("JSON tail field is not an object")),
                };
                if key == "propagated_event" {
                    out.propagated_event = v;
                } else {
                    out.compute_object_metadata_args = v;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Id helpers
// ---------------------------------------------------------------------------

// The hex codec is the `hex` crate's, the UUID one uuid's.

/// Parses exactly `2 * N` lowercase hex chars (`N` is 8 or 16).
fn lower_hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    // `hex` also reads uppercase, which does not round-trip.
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parses a canonical lowercase dashed UUID (`8-4-4-4-12`).
fn canonical_uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let u = uuid::Uuid::try_parse(s).ok()?;
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    (u.hyphenated().encode_lower(&mut buf) == s).then(|| *u.as_bytes())
}

/// Lowercase hex of 8 or 16 bytes (the ids' one encoder).
fn hex_lower(bytes: &[u8]) -> String {
    crate::ids::hex_string(bytes)
}

/// Dashed lowercase UUID text (the ids' one encoder).
fn format_uuid(b: &[u8; 16]) -> String {
    crate::ids::Id::Uuid(u128::from_be_bytes(*b).into()).to_string()
}

// ---------------------------------------------------------------------------
// Python-compatible JSON
// ---------------------------------------------------------------------------

/// Serializes like Python's `json.dumps(value, separators=(",", ":"))` with the
/// default `ensure_ascii=True`: compact, insertion order kept, every char
/// outside `' '..='~'` escaped as `\uXXXX` (lowercase hex, surrogate pairs above
/// U+FFFF), and floats in Python `repr` form.
fn python_compact_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing a `Value` into a Vec cannot fail.
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return String::new();
    }
    // The formatter only ever writes ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json formatter emulating Python's `json.dumps` with `ensure_ascii`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if (ch as u32) < 0x7f {
                continue;
            }
            writer.write_all(&bytes[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{:04x}", unit)?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }

    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W>(&mut self, writer: &mut W, value: f32) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(python_float_repr(f64::from(value)).as_bytes())
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation when the
/// decimal exponent is in `-5 < e < 16` (with a trailing `.0` for integral
/// values), else `d.ddde±XX` with at least two exponent digits.
fn python_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sign = if v.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e[-]E`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.unsigned_abs())
    } else {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
        } else {
            let point = point as usize;
            if point >= digits.len() {
                format!("{}{}.0", digits, "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        };
        format!("{sign}{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn raw(slug: &str) -> Vec<u8> {
        STANDARD.decode(slug).unwrap()
    }

    #[test]
    fn python_float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (100.0, "100.0"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e100, "1e+100"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.00001234, "1.234e-05"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-2.5e-7, "-2.5e-07"),
            (1795460068.7891695, "1795460068.7891695"),
        ];
        for (v, want) in cases {
            assert_eq!(python_float_repr(v), want, "{v:?}");
        }
    }

    #[test]
    fn python_json_escapes_like_python() {
        let v = json!({"a": "Café ☃ 😀\u{7f}\u{1}\n\"\\/", "n": [1, -2, 1.5, true, null]});
        assert_eq!(
            python_compact_json(&v),
            r#"{"a":"Caf\u00e9 \u2603 \ud83d\ude00\u007f\u0001\n\"\\/","n":[1,-2,1.5,true,null]}"#
        );
    }

    #[test]
    fn object_type_conversions() {
        for t in [
            ObjectType::Experiment,
            ObjectType::ProjectLogs,
            ObjectType::PlaygroundLogs,
        ] {
            assert_eq!(ObjectType::try_from(t.as_u8()).unwrap(), t);
            assert_eq!(t.as_str().parse::<ObjectType>().unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
            assert_eq!(u8::from(t), t.as_u8());
        }
        assert!(ObjectType::try_from(0).is_err());
        assert!(ObjectType::try_from(4).is_err());
        assert!("logs".parse::<ObjectType>().is_err());
        assert_eq!(
            serde_json::to_value(ObjectType::PlaygroundLogs).unwrap(),
            json!("playground_logs")
        );
    }

    #[test]
    fn v4_packs_only_lowercase_hex() {
        let c = SpanComponents::new(ObjectType::ProjectLogs, "p").with_row_ids(
            "r",
            "00F067AA0BA902B7",
            "4bf92f3577b34da6a3ce929d0e0e473",
        );
        let bytes = raw(&c.to_v4_string());
        assert_eq!(&bytes[..3], &[4, 2, 0]);
        let back = SpanComponents::parse(&c.to_v4_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn v3_packs_only_canonical_uuids() {
        let c = SpanComponents::new(
            ObjectType::ProjectLogs,
            "5F0E4A4E-3B8A-4F55-9A53-3D4C1E1F2A01",
        )
        .with_row_ids(
            "9b2f3c1d7e4a4b6c9d8e1f2a3b4c5d6e",
            "{1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f}",
            "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f60",
        );
        let bytes = raw(&c.to_v3_string());
        assert_eq!(&bytes[..4], &[3, 2, 1, FIELD_ROOT_SPAN_ID]);
        assert_eq!(SpanComponents::parse(&c.to_v3_string()).unwrap(), c);
    }

    #[test]
    fn export_string_picks_writer_by_id_shape() {
        let hex = SpanComponents::new(ObjectType::ProjectLogs, "p").with_row_ids(
            "r",
            "00f067aa0ba902b7",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        assert_eq!(raw(&hex.to_export_string())[0], 4);
        let uuid = SpanComponents::new(ObjectType::ProjectLogs, "p").with_row_ids(
            "r",
            "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
            "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
        );
        assert_eq!(raw(&uuid.to_export_string())[0], 3);
        let object_only = SpanComponents::new(ObjectType::ProjectLogs, "p");
        assert_eq!(raw(&object_only.to_export_string())[0], 4);
    }

    #[test]
    fn empty_values_are_left_out() {
        let mut c = SpanComponents::new(ObjectType::Experiment, "e");
        c.propagated_event = Some(Map::new());
        c.row_id = Some(String::new());
        let s = c.to_v4_string();
        assert_eq!(raw(&s), b"\x04\x01\x00{\"object_id\":\"e\"}".to_vec());
        // No tail at all.
        let mut c = SpanComponents::new(
            ObjectType::Experiment,
            "0c8d7c0e-9f1b-4a7e-8b1c-6a2d3e4f5a6b",
        );
        c.row_id = None;
        assert_eq!(raw(&c.to_v3_string()).len(), 20);
    }

    #[test]
    fn validate_rules() {
        let ok = SpanComponents::new(ObjectType::ProjectLogs, "p");
        assert!(ok.validate().is_ok());
        let mut both = ok.clone();
        both.compute_object_metadata_args = Some(obj(json!({"project_name": "x"})));
        assert_eq!(both.validate(), Err(SlugError::InvalidObjectIdentity));
        let neither = SpanComponents::default();
        assert_eq!(neither.validate(), Err(SlugError::InvalidObjectIdentity));
        // Empty object id + args is fine (truthiness, as in the SDKs).
        let mut empty_id = both.clone();
        empty_id.object_id = Some(String::new());
        assert!(empty_id.validate().is_ok());
        let mut partial = ok.clone();
        partial.row_id = Some("r".into());
        assert_eq!(partial.validate(), Err(SlugError::IncompleteRowIds));
        partial.span_id = Some("s".into());
        assert_eq!(partial.validate(), Err(SlugError::IncompleteRowIds));
        partial.root_span_id = Some("t".into());
        assert!(partial.validate().is_ok());
        assert!(partial.has_row_ids());
        let mut orphan_span = ok.clone();
        orphan_span.span_id = Some("s".into());
        assert_eq!(orphan_span.validate(), Err(SlugError::IncompleteRowIds));
    }

    #[test]
    fn object_id_fields_without_object_id() {
        let c = SpanComponents::with_compute_args(
            ObjectType::ProjectLogs,
            obj(json!({"project_name": "x"})),
        );
        assert!(c.object_id_fields().is_empty());
        assert_eq!(c.try_object_id_fields(), Err(SlugError::MissingObjectId));
        let p = SpanComponents::new(ObjectType::PlaygroundLogs, "ps");
        assert_eq!(
            Value::Object(p.object_id_fields()),
            json!({"prompt_session_id": "ps", "log_id": "x"})
        );
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn assert_invalid(slug: &str) {
        match SpanComponents::parse(slug) {
            Err(e @ SlugError::InvalidEncoding { .. }) => {
                assert_eq!(e.to_string(), INVALID_ENCODING_MESSAGE)
            }
            other => panic!("{slug:?} gave {other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_binary() {
        // Version 0 and versions above 4.
        assert_invalid(&b64(&[0, 2, 0]));
        assert_invalid(&b64(&[5, 2, 0, b'{', b'}']));
        assert_invalid(&b64(&[255]));
        // Unknown object type.
        assert_invalid(&b64(b"\x04\x04\x00{\"object_id\":\"x\"}"));
        // Truncated header and packed entries.
        assert_invalid(&b64(&[4]));
        assert_invalid(&b64(&[4, 2]));
        assert_invalid(&b64(&[4, 2, 1, 3, 0, 1, 2]));
        assert_invalid(&b64(&[3, 2, 1, 1, 0, 1, 2, 3]));
        assert_invalid(&b64(&[4, 2, 255]));
        // Unknown packed field id.
        assert_invalid(&b64(&[4, 2, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0]));
        // Object only via packed fields is fine, but nothing at all is not.
        assert_invalid(&b64(&[4, 2, 0]));
        // Tail that is not an object / not JSON / wrong types.
        assert_invalid(&b64(b"\x04\x02\x00[1]"));
        assert_invalid(&b64(b"\x04\x02\x00{\"object_id\":"));
        assert_invalid(&b64(b"\x04\x02\x00{\"object_id\":5}"));
        assert_invalid(&b64(
            b"\x04\x02\x00{\"object_id\":\"x\",\"propagated_event\":[1]}",
        ));
        assert_invalid(&b64(b"\x04\x02\x00\xff\xfe"));
        // Row triple incomplete.
        assert_invalid(&b64(b"\x04\x02\x00{\"object_id\":\"x\",\"row_id\":\"r\"}"));
        // V2: huge compute-args length, bad flags, object type 3.
        assert_invalid(&b64(&[
            2, 2, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, b'{', b'}',
        ]));
        assert_invalid(&b64(&[2, 2, 2, 0, 0, 0]));
        assert_invalid(&b64(&[
            2, 3, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ]));
        // V1: truncated object id, bad uuid row id length, empty utf-8 row id.
        assert_invalid(&b64(&[1, 1, 0, 0, 1, 2, 3]));
        let mut v1 = vec![1, 1, 1, 1];
        v1.extend_from_slice(&[7; 48]);
        v1.extend_from_slice(&[1, 2, 3]);
        assert_invalid(&b64(&v1));
        let mut v1 = vec![1, 1, 1, 0];
        v1.extend_from_slice(&[7; 48]);
        assert_invalid(&b64(&v1));
    }

    #[test]
    fn tail_rules() {
        // Unknown keys and an `object_type` key are ignored; null unsets.
        let slug = b64(b"\x04\x01\x00{\"object_id\":\"e\",\"future\":{\"x\":1},\"object_type\":2,\"row_id\":null}");
        let c = SpanComponents::parse(&slug).unwrap();
        assert_eq!(c, SpanComponents::new(ObjectType::Experiment, "e"));
        // Tail wins over packed values.
        let mut bytes = vec![4, 2, 1, 3, 0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        bytes.extend_from_slice(
            b"{\"object_id\":\"p\",\"row_id\":\"r\",\"span_id\":\"s\",\"root_span_id\":\"t\"}",
        );
        let c = SpanComponents::parse(&b64(&bytes)).unwrap();
        assert_eq!(c.span_id.as_deref(), Some("s"));
        // V4 packed object/row ids decode as 32 hex chars.
        let mut bytes = vec![4, 2, 1, 1];
        bytes.extend_from_slice(&[0xab; 16]);
        let c = SpanComponents::parse(&b64(&bytes)).unwrap();
        assert_eq!(
            c.object_id.as_deref(),
            Some("abababababababababababababababab")
        );
        // Raw UTF-8 in the tail (as JS writes it) decodes too.
        let slug = b64(
            "\u{4}\u{2}\u{0}{\"compute_object_metadata_args\":{\"project_name\":\"Café\"}}"
                .as_bytes(),
        );
        let c = SpanComponents::parse(&slug).unwrap();
        assert_eq!(
            c.compute_object_metadata_args.unwrap()["project_name"],
            json!("Café")
        );
    }

    #[test]
    fn lenient_base64_input() {
        let slug = SpanComponents::new(ObjectType::Experiment, "e").to_v4_string();
        assert!(slug.ends_with('='));
        let unpadded = slug.trim_end_matches('=');
        assert!(SpanComponents::parse(unpadded).is_ok());
        let spaced = format!("  {}\n{} ", &slug[..8], &slug[8..]);
        assert!(SpanComponents::parse(&spaced).is_ok());
        assert_invalid(&format!("-{}", &slug[1..]));
        assert_invalid(&format!("_{}", &slug[1..]));
    }

    #[test]
    fn v2_null_compute_args_and_object_id() {
        let mut bytes = vec![2, 1, 1, 1, 0, 0];
        bytes.extend_from_slice(&[0x11; 16]);
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.extend_from_slice(b"null");
        let c = SpanComponents::parse(&b64(&bytes)).unwrap();
        assert_eq!(
            c.object_id.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(c.compute_object_metadata_args, None);
    }
}
