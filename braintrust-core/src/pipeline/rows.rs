//! Row serialization: a pending span's writes become one `/logs3` row.
//!
//! Two writers produce the same bytes: [`span_row`] builds the row as a map
//! (the general path: merging, masking, propagated events), and
//! [`write_span_row`] writes the JSON text directly from the span's fields
//! (the common path, about six times fewer instructions per span). Tests,
//! including property tests over random events, prove them byte-identical.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::{deep_merge, Event, Field, SharedJson};
use crate::ids::Id;
use crate::logger::ObjectInner;
use crate::merge::Row;
use crate::pipeline::spill::Written;
use crate::pipeline::Op;
use crate::span::{Pending, SpanCore, StartInfo};
use crate::time::{format_rfc3339, write_rfc3339};

/// The rows of a round serialized back to back, in one buffer per thread
/// that wrote them (no allocation per row, no copy to join them).
pub(crate) struct Prepared {
    parts: Vec<Part>,
    /// How many logged rows (queue entries) each row stands for: more than
    /// one when the general path merged several writes of one id.
    weights: Vec<u32>,
}

/// One buffer of rows: row `first + i` is `text[ends[i - 1]..ends[i]]`.
struct Part {
    first: usize,
    text: String,
    ends: Vec<usize>,
}

/// Builds a [`Prepared`]: rows serialized one after the other.
pub(crate) struct RowsText {
    buf: Vec<u8>,
    ends: Vec<usize>,
    weights: Vec<u32>,
}

impl RowsText {
    pub(crate) fn with_capacity(rows: usize) -> RowsText {
        RowsText {
            buf: Vec::with_capacity(rows.saturating_mul(640)),
            ends: Vec::with_capacity(rows),
            weights: Vec::with_capacity(rows),
        }
    }

    /// Appends a row map standing for `weight` logged rows.
    pub(crate) fn push_row(&mut self, row: &Row, weight: u32) {
        let start = self.buf.len();
        if serde_json::to_writer(&mut self.buf, row).is_err() {
            self.buf.truncate(start);
            self.buf.extend_from_slice(b"{}");
        }
        self.ends.push(self.buf.len());
        self.weights.push(weight);
    }

    /// Appends a span's row from its unsent writes (nothing when it has none).
    pub(crate) fn push_span(&mut self, core: &SpanCore, p: Pending, ids: &IdFields) {
        let start = self.buf.len();
        if write_span_row(core, &p, &ids.text, &mut self.buf) {
            self.ends.push(self.buf.len());
            self.weights.push(1);
            return;
        }
        self.buf.truncate(start);
        if let Some(mut row) = span_row(core, p) {
            ids.object.id_fields(&ids.id, &mut row);
            self.push_row(&row, 1);
        }
    }

    /// Appends a row an application thread wrote, with its container's ids.
    pub(crate) fn push_written(&mut self, w: &Written, ids: &IdFields) {
        splice_ids(&w.text, &ids.text, &mut self.buf);
        self.ends.push(self.buf.len());
        self.weights.push(1);
    }

    pub(crate) fn finish(self) -> Prepared {
        // serde_json writes UTF-8 only; the check is one fast pass.
        let text = String::from_utf8(self.buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Prepared {
            parts: vec![Part {
                first: 0,
                text,
                ends: self.ends,
            }],
            weights: self.weights,
        }
    }
}

impl Prepared {
    /// Appends the rows of `other` after these (its buffers are moved, not
    /// copied).
    pub(crate) fn append(&mut self, other: Prepared) {
        let base = self.len();
        self.parts.extend(other.parts.into_iter().map(|p| Part {
            first: p.first + base,
            ..p
        }));
        self.weights.extend(other.weights);
    }

    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    /// Bytes of row text.
    pub(crate) fn text_len(&self) -> usize {
        self.parts.iter().map(|p| p.text.len()).sum()
    }

    pub(crate) fn row(&self, i: usize) -> &str {
        // A round has one or two parts: the last one starting at or before `i`.
        let part = self
            .parts
            .iter()
            .rev()
            .find(|p| p.first <= i)
            .expect("the first part starts at row 0");
        let j = i - part.first;
        let start = if j == 0 { 0 } else { part.ends[j - 1] };
        &part.text[start..part.ends[j]]
    }

    pub(crate) fn sizes(&self) -> Vec<usize> {
        self.parts
            .iter()
            .flat_map(|p| {
                p.ends
                    .iter()
                    .scan(0, |prev, &end| Some(end - std::mem::replace(prev, end)))
            })
            .collect()
    }

    /// The logged rows row `i` stands for.
    pub(crate) fn weight(&self, i: usize) -> u64 {
        u64::from(self.weights[i])
    }
}

/// Converts a queue entry into a row (without container ids).
pub(crate) fn op_to_row(op: Op) -> Option<(Arc<ObjectInner>, Row)> {
    match op {
        Op::Row(obj, row) => Some((obj, *row)),
        Op::Span(core) => {
            let pending = core.take_pending();
            let row = span_row(&core, pending)?;
            Some((core.object.clone(), row))
        }
        // Text this crate wrote from a row map parses back into it.
        Op::Text(w) => {
            let row = serde_json::from_str(&w.text).ok()?;
            Some((w.object.clone(), row))
        }
    }
}

/// Lets go of a queue entry that will not be sent or written anywhere,
/// releasing what it counted against the byte budget.
pub(crate) fn discard(op: Op) {
    if let Op::Span(core) = op {
        drop(core.take_pending());
    }
}

/// A queue entry as row text, with its container ids when they are known
/// (for the failed-payload directory).
pub(crate) fn op_text(op: Op) -> Option<String> {
    if let Op::Text(w) = &op {
        let ids = w
            .object
            .resolved
            .get()
            .map(|r| IdFields::new(&w.object, &r.id));
        let mut b = Vec::with_capacity(w.text.len() + 128);
        splice_ids(
            &w.text,
            ids.as_ref().map_or("", |i| i.text.as_str()),
            &mut b,
        );
        return String::from_utf8(b).ok();
    }
    let (obj, mut row) = op_to_row(op)?;
    if let Some(r) = obj.resolved.get() {
        obj.id_fields(&r.id, &mut row);
    }
    serde_json::to_string(&row).ok()
}

/// Writes a span's row text without container id fields: what
/// [`write_span_row`] writes, or the general path's row serialized. False
/// when the span has no writes or its row could not be serialized.
pub(crate) fn write_span_text(core: &SpanCore, p: Pending, b: &mut Vec<u8>) -> bool {
    let start = b.len();
    if write_span_row(core, &p, "", b) {
        return true;
    }
    b.truncate(start);
    let Some(row) = span_row(core, p) else {
        return false;
    };
    if serde_json::to_writer(&mut *b, &row).is_ok() {
        return true;
    }
    b.truncate(start);
    false
}

/// Appends `ids` (`"k":"v",...`) to a row's text, before its closing brace:
/// the bytes the writers give when the ids are known from the start.
fn splice_ids(text: &str, ids: &str, b: &mut Vec<u8>) {
    let body = text.strip_suffix('}').unwrap_or(text);
    b.extend_from_slice(body.as_bytes());
    if !ids.is_empty() {
        if body.len() > 1 {
            b.push(b',');
        }
        b.extend_from_slice(ids.as_bytes());
    }
    b.push(b'}');
}

/// `span_attributes.name` of a span started without a name: `file:line` of
/// the caller, prefixed by the function name when known.
pub(crate) fn default_name(start: &StartInfo) -> String {
    let file = Path::new(start.caller.file())
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("unknown");
    match start.function_name {
        Some(f) => format!("{f}:{file}:{}", start.caller.line()),
        None => format!("{file}:{}", start.caller.line()),
    }
}

pub(crate) fn span_row(core: &SpanCore, p: Pending) -> Option<Row> {
    if p.start.is_none() && p.event.is_none() && p.end.is_none() {
        return None;
    }
    // Room for every field a span row gets, so the map never regrows.
    let mut row = Map::with_capacity(16);
    row.insert("id".into(), Value::String(core.row_id.to_string()));
    row.insert("span_id".into(), Value::String(core.span_id.to_string()));
    row.insert(
        "root_span_id".into(),
        Value::String(core.root_span_id.to_string()),
    );
    row.insert(
        "span_parents".into(),
        if core.parents.is_empty() {
            Value::Null
        } else {
            Value::Array(
                core.parents
                    .iter()
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            )
        },
    );
    let merged_into_first = p.event.is_some() || p.end.is_some();
    match p.start {
        Some(start) => {
            // A first write merged with later ones is a full row, which the
            // client merge marks by leaving `_is_merge` out (spec §4.5).
            if !merged_into_first {
                row.insert("_is_merge".into(), Value::Bool(false));
            }
            row.insert("created".into(), Value::String(format_rfc3339(start.start)));
            let mut metrics = Map::new();
            metrics.insert("start".into(), Value::from(start.start));
            row.insert("metrics".into(), Value::Object(metrics));
            let mut attrs = Map::new();
            let name = match start.name {
                Some(n) => n.into_owned(),
                None => default_name(&start),
            };
            attrs.insert("name".into(), Value::String(name));
            if let Some(t) = start.span_type {
                attrs.insert("type".into(), Value::String(t.as_str().into()));
            }
            attrs.insert("exec_counter".into(), Value::from(start.exec_counter));
            row.insert("span_attributes".into(), Value::Object(attrs));
            let mut ctx = Map::new();
            if let Some(f) = start.function_name {
                ctx.insert("caller_functionname".into(), Value::String(f.into()));
            }
            ctx.insert(
                "caller_filename".into(),
                Value::String(start.caller.file().into()),
            );
            ctx.insert("caller_lineno".into(), Value::from(start.caller.line()));
            ctx.insert(
                "span_origin".into(),
                serde_json::json!({
                    "name": "braintrust.sdk.rust",
                    "version": env!("CARGO_PKG_VERSION"),
                    "instrumentation": {"name": start.instrumentation.unwrap_or("braintrust-rust-logger")},
                }),
            );
            row.insert("context".into(), Value::Object(ctx));
            if let Some(e) = start.event {
                e.write_into(&mut row);
            }
            if let Some(prop) = &core.propagated {
                deep_merge(&mut row, (**prop).clone());
            }
        }
        None => {
            row.insert("_is_merge".into(), Value::Bool(true));
        }
    }
    if let Some(e) = p.event {
        e.write_into(&mut row);
    }
    if let Some(end) = p.end {
        match row.get_mut("metrics") {
            Some(Value::Object(m)) => {
                m.insert("end".into(), Value::from(end));
            }
            _ => {
                let mut m = Map::new();
                m.insert("end".into(), Value::from(end));
                row.insert("metrics".into(), Value::Object(m));
            }
        }
    }
    Some(row)
}

/// A container's id fields (`project_id`, `log_id`, ...) as JSON text, made
/// once per container and round and appended to each span row.
pub(crate) struct IdFields {
    object: Arc<ObjectInner>,
    id: String,
    /// `"k":"v",...` without braces (empty when there are none).
    text: String,
}

impl IdFields {
    /// True when these are the fields of `object`.
    pub(crate) fn is_for(&self, object: &Arc<ObjectInner>) -> bool {
        Arc::ptr_eq(&self.object, object)
    }

    pub(crate) fn new(object: &Arc<ObjectInner>, id: &str) -> IdFields {
        let mut m = Map::new();
        object.id_fields(id, &mut m);
        let whole = serde_json::to_string(&m).unwrap_or_else(|_| "{}".into());
        IdFields {
            object: object.clone(),
            id: id.to_string(),
            text: whole[1..whole.len() - 1].to_string(),
        }
    }
}

/// A top-level user field of a row being written by [`write_span_row`].
enum Slot<'a> {
    Value(&'a Value),
    Map(&'a Map<String, Value>),
    Shared(&'a dyn SharedJson),
    Owned(Value),
}

impl Slot<'_> {
    fn to_owned_map(&self) -> Option<Map<String, Value>> {
        match self {
            Slot::Map(m) => Some((*m).clone()),
            Slot::Value(Value::Object(m)) | Slot::Owned(Value::Object(m)) => Some(m.clone()),
            _ => None,
        }
    }

    fn write(&self, b: &mut Vec<u8>) -> bool {
        match self {
            Slot::Value(v) => write_value(b, v),
            Slot::Owned(v) => write_value(b, v),
            Slot::Map(m) => write_map(b, m),
            // Only a user's `Serialize` can fail.
            Slot::Shared(v) => return v.write_json(b).is_ok(),
        }
        true
    }
}

/// The top-level user fields of a row, in row order: what
/// `Event::write_into` does to a row map, on a short list of borrowed values
/// (inline up to four: an input, an output, metadata and one more, without
/// an allocation per row).
#[derive(Default)]
struct Slots<'a>(smallvec::SmallVec<[(&'static str, Slot<'a>); 4]>);

impl<'a> Slots<'a> {
    fn find(&mut self, key: &str) -> Option<&mut Slot<'a>> {
        self.0.iter_mut().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    /// `row.insert(key, v)`: replaces in place, or appends.
    fn put(&mut self, key: &'static str, v: Slot<'a>) {
        match self.find(key) {
            Some(s) => *s = v,
            None => self.0.push((key, v)),
        }
    }

    /// Deep-merges `m` into an object already there, else inserts it.
    fn merge(&mut self, key: &'static str, m: &'a Map<String, Value>) {
        match self.find(key) {
            Some(s) => match s.to_owned_map() {
                Some(mut existing) => {
                    deep_merge(&mut existing, m.clone());
                    *s = Slot::Owned(Value::Object(existing));
                }
                None => *s = Slot::Map(m),
            },
            None => self.0.push((key, Slot::Map(m))),
        }
    }

    /// `Event::write_into`, leaving out `metrics` and `span_attributes`
    /// when `skip_fixed` (a start row holds them already).
    fn write_event(&mut self, e: &'a Event, skip_fixed: bool) {
        for (f, v) in &e.fields {
            match (f, v) {
                (Field::Metrics | Field::SpanAttributes, _) if skip_fixed => {}
                (f, Value::Object(m)) if f.is_object() => self.merge(f.name(), m),
                (f, v) => self.put(f.name(), Slot::Value(v)),
            }
        }
        for (f, v) in e.shared() {
            match crate::event::shared_object(*f, &**v) {
                Some(m) => self.merge(f.name(), m),
                None => self.put(f.name(), Slot::Shared(&**v)),
            }
        }
    }
}

/// Writes a JSON string. Most strings in rows (keys, names, file paths)
/// need no escaping and are copied whole; serde_json escapes through its
/// formatter a byte at a time, which was 7 % of the pipeline's
/// instructions (BENCHMARKS.md, fifth pass).
fn write_str(b: &mut Vec<u8>, s: &str) {
    if needs_no_escape(s.as_bytes()) {
        b.reserve(s.len() + 2);
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, s);
    }
}

/// True when no byte is one serde_json escapes (quote, backslash, control).
/// Eight bytes at a time: a byte below `n` exists in `w` exactly when
/// `(w - n·0x01…) & !w & 0x80…` is not zero (n ≤ 128); quote and backslash
/// are found as zero bytes of `w ^ c·0x01…`.
fn needs_no_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u64| w.wrapping_sub(n * ONES) & !w & HIGH;
    let mut words = s.chunks_exact(8);
    for c in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        let found = below(w, 0x20)
            | below(w ^ (u64::from(b'"') * ONES), 1)
            | below(w ^ (u64::from(b'\\') * ONES), 1);
        if found != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
}

/// Writes `v` as compact JSON, byte for byte what `serde_json::to_writer`
/// writes (numbers are serde_json's own), with [`write_str`]'s strings.
fn write_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => b.extend_from_slice(b"null"),
        Value::Bool(true) => b.extend_from_slice(b"true"),
        Value::Bool(false) => b.extend_from_slice(b"false"),
        // Writing a number into a Vec cannot fail.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *b, n);
        }
        Value::String(s) => write_str(b, s),
        Value::Array(a) => {
            b.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                write_value(b, x);
            }
            b.push(b']');
        }
        Value::Object(m) => write_map(b, m),
    }
}

/// Writes a JSON object, as [`write_value`] does.
fn write_map(b: &mut Vec<u8>, m: &Map<String, Value>) {
    b.push(b'{');
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        write_str(b, k);
        b.push(b':');
        write_value(b, x);
    }
    b.push(b'}');
}

/// Writes an id as a JSON string.
fn write_id(b: &mut Vec<u8>, id: &Id) {
    match id {
        Id::Str(s) => write_str(b, s),
        _ => {
            let mut buf = [0u8; 36];
            let n = id.encode(&mut buf);
            b.push(b'"');
            b.extend_from_slice(&buf[..n]);
            b.push(b'"');
        }
    }
}

/// Writes a float as `Value::from(f64)` serializes (null when not finite).
fn write_f64(b: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *b, &v);
}

fn key(b: &mut Vec<u8>, k: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(k.as_bytes());
    b.extend_from_slice(b"\":");
}

/// Writes the JSON text of a span's row, exactly as serializing
/// `span_row(core, p)` with the container's id fields (`ids`) appended would,
/// without building the row map. Returns false, having written garbage to
/// truncate, when the span has no writes or carries a propagated event (the
/// general path handles those).
pub(crate) fn write_span_row(core: &SpanCore, p: &Pending, ids: &str, b: &mut Vec<u8>) -> bool {
    if (p.start.is_none() && p.event.is_none() && p.end.is_none()) || core.propagated.is_some() {
        return false;
    }
    b.extend_from_slice(b"{\"id\":");
    write_id(b, &core.row_id);
    key(b, "span_id");
    write_id(b, &core.span_id);
    key(b, "root_span_id");
    write_id(b, &core.root_span_id);
    key(b, "span_parents");
    if core.parents.is_empty() {
        b.extend_from_slice(b"null");
    } else {
        b.push(b'[');
        for (i, id) in core.parents.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            write_id(b, id);
        }
        b.push(b']');
    }
    let mut slots = Slots::default();
    match &p.start {
        Some(start) => {
            let first = start.event.as_ref();
            let later = p.event.as_ref();
            let events = [first, later];
            if p.event.is_none() && p.end.is_none() {
                key(b, "_is_merge");
                b.extend_from_slice(b"false");
            }
            key(b, "created");
            // Digits and separators only: no escaping needed.
            b.push(b'"');
            write_rfc3339(start.start, b);
            b.push(b'"');
            key(b, "metrics");
            if events
                .iter()
                .flatten()
                .any(|e| e.get(Field::Metrics).is_some())
            {
                let mut m = Map::new();
                m.insert("start".into(), Value::from(start.start));
                for e in events.iter().flatten() {
                    if let Some(x) = e.map(Field::Metrics) {
                        deep_merge(&mut m, x.clone());
                    }
                }
                if let Some(end) = p.end {
                    m.insert("end".into(), Value::from(end));
                }
                write_map(b, &m);
            } else {
                b.extend_from_slice(b"{\"start\":");
                write_f64(b, start.start);
                if let Some(end) = p.end {
                    b.extend_from_slice(b",\"end\":");
                    write_f64(b, end);
                }
                b.push(b'}');
            }
            key(b, "span_attributes");
            let name: std::borrow::Cow<'_, str> = match &start.name {
                Some(n) => std::borrow::Cow::Borrowed(n.as_ref()),
                None => std::borrow::Cow::Owned(default_name(start)),
            };
            if events
                .iter()
                .flatten()
                .any(|e| e.get(Field::SpanAttributes).is_some())
            {
                let mut m = Map::new();
                m.insert("name".into(), Value::String(name.into_owned()));
                if let Some(t) = start.span_type {
                    m.insert("type".into(), Value::String(t.as_str().into()));
                }
                m.insert("exec_counter".into(), Value::from(start.exec_counter));
                for e in events.iter().flatten() {
                    if let Some(x) = e.map(Field::SpanAttributes) {
                        deep_merge(&mut m, x.clone());
                    }
                }
                write_map(b, &m);
            } else {
                b.extend_from_slice(b"{\"name\":");
                write_str(b, &name);
                if let Some(t) = start.span_type {
                    key(b, "type");
                    write_str(b, t.as_str());
                }
                key(b, "exec_counter");
                let _ = serde_json::to_writer(&mut *b, &start.exec_counter);
                b.push(b'}');
            }
            key(b, "context");
            b.push(b'{');
            if let Some(f) = start.function_name {
                b.extend_from_slice(b"\"caller_functionname\":");
                write_str(b, f);
                b.push(b',');
            }
            b.extend_from_slice(b"\"caller_filename\":");
            write_str(b, start.caller.file());
            key(b, "caller_lineno");
            let _ = serde_json::to_writer(&mut *b, &start.caller.line());
            // A crate version is semver: nothing in it is escaped.
            b.extend_from_slice(
                concat!(
                    ",\"span_origin\":{\"name\":\"braintrust.sdk.rust\",\"version\":\"",
                    env!("CARGO_PKG_VERSION"),
                    "\",\"instrumentation\":{\"name\":"
                )
                .as_bytes(),
            );
            write_str(b, start.instrumentation.unwrap_or("braintrust-rust-logger"));
            b.extend_from_slice(b"}}}");
            for e in events.iter().flatten() {
                slots.write_event(e, true);
            }
        }
        None => {
            key(b, "_is_merge");
            b.extend_from_slice(b"true");
            if let Some(e) = &p.event {
                slots.write_event(e, false);
            }
            if let Some(end) = p.end {
                match slots.find("metrics").and_then(|s| s.to_owned_map()) {
                    Some(mut m) => {
                        m.insert("end".into(), Value::from(end));
                        slots.put("metrics", Slot::Owned(Value::Object(m)));
                    }
                    None => {
                        let mut m = Map::new();
                        m.insert("end".into(), Value::from(end));
                        slots.put("metrics", Slot::Owned(Value::Object(m)));
                    }
                }
            }
        }
    }
    for (k, v) in &slots.0 {
        key(b, k);
        if !v.write(b) {
            return false;
        }
    }
    if !ids.is_empty() {
        b.push(b',');
        b.extend_from_slice(ids.as_bytes());
    }
    b.push(b'}');
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::export::ObjectType;
    use crate::logger::ObjectSpec;
    use crate::span::{Span, SpanArgs, SpanType};
    use crate::State;
    use serde_json::json;
    use std::panic::Location;

    /// The row writer's JSON is serde_json's, byte for byte: escapes,
    /// non-ASCII text, every number form, nesting, key order.
    #[test]
    fn no_escape_scan_finds_every_escaped_byte_at_every_position() {
        for len in 0..20 {
            let plain = "aé/~ z".repeat(4);
            let plain = &plain.as_bytes()[..len.min(plain.len())];
            assert!(needs_no_escape(plain), "{plain:?}");
            for at in 0..len {
                for c in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut s = vec![b'a'; len];
                    s[at] = c;
                    assert!(!needs_no_escape(&s), "{c:#x} at {at} of {len}");
                }
                for c in [0x20u8, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                    let mut s = vec![b'a'; len];
                    s[at] = c;
                    assert!(needs_no_escape(&s), "{c:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn write_value_writes_what_serde_json_writes() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        let values = [
            json!(null),
            json!(true),
            json!([
                false,
                0,
                -1,
                u64::MAX,
                i64::MIN,
                1.5,
                -0.0,
                1e300,
                5e-324,
                0.1
            ]),
            json!("plain"),
            json!(""),
            json!("quote \" backslash \\ slash / tab \t"),
            json!(controls),
            json!("ünïcødé 🦀 \u{7f} \u{2028}"),
            json!({"z": 1, "a": {"nested": [{"k": "v"}, [], {}]}, "é\"": null}),
            json!([[[[["deep"]]]]]),
        ];
        for v in &values {
            let mut ours = Vec::new();
            write_value(&mut ours, v);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(v).unwrap()
            );
        }
    }

    /// A container on a state whose logger thread never takes entries on
    /// its own, so the test can take them.
    fn container(kind: ObjectType) -> Arc<ObjectInner> {
        let state = State::new(
            Config::default()
                .api_key("k")
                .app_url("http://127.0.0.1:9")
                .sync_flush(true)
                .lifecycle(crate::LifecyclePolicy::Manual),
        )
        .unwrap();
        ObjectInner::new(
            state,
            kind,
            ObjectSpec::Known {
                id: "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e".into(),
            },
        )
    }

    /// Takes every queued span and checks that the direct writer produces
    /// exactly the text of the general path (row map + id fields, serialized).
    fn check_queue(obj: &Arc<ObjectInner>) -> usize {
        let ids = IdFields::new(obj, &obj.resolved.get().unwrap().id);
        let mut n = 0;
        while let Some(op) = obj.state.pipeline().pop_for_test() {
            let Op::Span(core) = op else {
                panic!("a row entry")
            };
            let p = core.take_pending();
            let mut fast = Vec::new();
            let ok = write_span_row(&core, &p, &ids.text, &mut fast);
            // Written without ids (as an application thread does, see
            // `spill`), then given them: the same bytes.
            let mut early = Vec::new();
            if write_span_row(&core, &p, "", &mut early) {
                let mut spliced = Vec::new();
                splice_ids(
                    std::str::from_utf8(&early).unwrap(),
                    &ids.text,
                    &mut spliced,
                );
                assert_eq!(spliced, fast);
            }
            let slow = span_row(&core, p).map(|mut row| {
                let without = serde_json::to_string(&row).unwrap();
                obj.id_fields(&ids.id, &mut row);
                let slow = serde_json::to_string(&row).unwrap();
                let mut spliced = Vec::new();
                splice_ids(&without, &ids.text, &mut spliced);
                assert_eq!(String::from_utf8(spliced).unwrap(), slow);
                slow
            });
            match slow {
                None => assert!(!ok, "a span without writes wrote a row"),
                Some(slow) if core.propagated.is_some() => assert!(!ok, "{slow}"),
                Some(slow) => {
                    assert!(ok, "fell back on {slow}");
                    assert_eq!(String::from_utf8(fast).unwrap(), slow);
                    n += 1;
                }
            }
        }
        n
    }

    fn start(obj: &Arc<ObjectInner>, parent: Option<&Span>, args: SpanArgs) -> Span {
        Span::start(
            obj,
            parent.and_then(|p| p.child_lineage()),
            args,
            Location::caller(),
        )
    }

    #[test]
    fn appended_rows_are_read_in_order_without_copying() {
        let rows = |texts: &[&str]| {
            let mut t = RowsText::with_capacity(texts.len());
            for (i, text) in texts.iter().enumerate() {
                let mut row = Map::new();
                row.insert("r".into(), Value::String((*text).into()));
                t.push_row(&row, i as u32 + 1);
            }
            t.finish()
        };
        let mut p = rows(&["a", "bb"]);
        p.append(rows(&[]));
        p.append(rows(&["ccc"]));
        assert_eq!(p.len(), 3);
        assert_eq!(
            (0..3).map(|i| p.row(i)).collect::<Vec<_>>(),
            [r#"{"r":"a"}"#, r#"{"r":"bb"}"#, r#"{"r":"ccc"}"#]
        );
        assert_eq!(p.sizes(), [9, 10, 11]);
        assert_eq!(p.text_len(), 30);
        assert_eq!((p.weight(0), p.weight(1), p.weight(2)), (1, 2, 1));
        let mut empty_first = rows(&[]);
        empty_first.append(rows(&["x"]));
        assert_eq!((empty_first.len(), empty_first.row(0)), (1, r#"{"r":"x"}"#));
    }

    #[test]
    fn direct_rows_are_the_general_rows_text() {
        let mut checked = 0;
        for kind in [
            ObjectType::ProjectLogs,
            ObjectType::Experiment,
            ObjectType::PlaygroundLogs,
        ] {
            let obj = container(kind);
            // The workload's shape: input at start, output logged, ended.
            let root = start(
                &obj,
                None,
                SpanArgs::new()
                    .name("l1")
                    .event(Event::new().input(json!({"i": 1}))),
            );
            let child = start(&obj, Some(&root), SpanArgs::new().name("l2 \"quoted\"\n"));
            child.log(Event::new().output(json!({"ok": 1}))).unwrap();
            child.end();
            root.log(Event::new().output("done")).unwrap();
            root.end();
            // Started only (no later writes): `_is_merge: false`.
            let open = start(&obj, Some(&root), SpanArgs::new().span_type(SpanType::Tool));
            // Default name, function name, instrumentation, user row id.
            let _f = start(
                &obj,
                None,
                SpanArgs::new()
                    .function_name("my_fn")
                    .instrumentation("openai")
                    .id("user-row-\u{e9}"),
            );
            // Every field, twice, including the merged objects.
            let full = start(
                &obj,
                Some(&root),
                SpanArgs::new().start_time(1.5).event(
                    Event::new()
                        .input(json!([1, 2]))
                        .metadata(json!({"a": {"x": 1}, "b": 2}))
                        .score("s", 0.5)
                        .metric("tokens", 3.0)
                        .tags(["t1"])
                        .span_attributes(json!({"name": "renamed", "extra": true})),
                ),
            );
            full.log(
                Event::new()
                    .input(json!({"again": null}))
                    .expected(1)
                    .error("boom")
                    .metadata(json!({"a": {"y": 2}}))
                    .score("s2", 1.0)
                    .metric("end", 7.0)
                    .metric("tokens", f64::NAN)
                    .tags(["t2"])
                    .span_attributes(json!({"type": "llm"})),
            )
            .unwrap();
            full.end_at(2.25);
            // Non-finite start time.
            start(&obj, None, SpanArgs::new().start_time(f64::INFINITY)).end_at(f64::NAN);
            checked += check_queue(&obj);
            // Writes after the logger took the first row: merge rows.
            open.log(Event::new().output(1).metric("m", 1.0)).unwrap();
            checked += check_queue(&obj);
            open.log(Event::new().metadata(json!({"k": 1}))).unwrap();
            open.end_at(3.0);
            checked += check_queue(&obj);
            open.end();
            root.log(Event::new().tags(["late"])).unwrap();
            checked += check_queue(&obj);
            // A propagated event takes the general path.
            let prop = start(
                &obj,
                None,
                SpanArgs::new().propagated_event(json!({"metadata": {"p": 1}})),
            );
            start(&obj, Some(&prop), SpanArgs::new()).end();
            prop.end();
            check_queue(&obj);
            drop((root, child, full, _f));
            check_queue(&obj);
        }
        assert_eq!(checked, 3 * 9);
    }

    #[test]
    fn legacy_ids_write_the_same() {
        let state = State::new(
            Config::default()
                .api_key("k")
                .app_url("http://127.0.0.1:9")
                .sync_flush(true)
                .legacy_ids(true)
                .lifecycle(crate::LifecyclePolicy::Manual),
        )
        .unwrap();
        let obj = ObjectInner::new(
            state,
            ObjectType::ProjectLogs,
            ObjectSpec::Known { id: "p".into() },
        );
        let root = start(&obj, None, SpanArgs::new());
        start(&obj, Some(&root), SpanArgs::new().name("c")).end();
        root.end();
        assert_eq!(check_queue(&obj), 2);
    }

    /// Random JSON values: scalars, strings with escapes, nested arrays and objects.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e12f64..1e12).prop_map(|f| json!(f)),
            "[a-z\"\\\n\u{e9}\u{1F600}]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An event with any subset of fields, random contents.
    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        (
            proptest::option::of(json_value()),
            proptest::option::of(json_value()),
            proptest::option::of(proptest::collection::btree_map(
                "[a-z]{1,5}",
                json_value(),
                0..4,
            )),
            proptest::option::of((0.0f64..=1.0, "[a-z]{1,4}")),
            proptest::option::of((-1e6f64..1e6, "[a-z]{1,4}")),
            proptest::option::of(proptest::collection::btree_set("[a-z]{1,4}", 0..3)),
            proptest::option::of("[a-z ]{1,8}"),
        )
            .prop_map(|(input, output, metadata, score, metric, tags, error)| {
                let mut e = Event::new();
                if let Some(v) = input {
                    e = e.input(v);
                }
                if let Some(v) = output {
                    e = e.output(v);
                }
                if let Some(m) = metadata {
                    e = e.metadata(Value::Object(m.into_iter().collect()));
                }
                if let Some((v, k)) = score {
                    e = e.score(k, v);
                }
                if let Some((v, k)) = metric {
                    e = e.metric(k, v);
                }
                if let Some(t) = tags {
                    e = e.tags(t);
                }
                if let Some(err) = error {
                    e = e.error(err);
                }
                e
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Over random events and write sequences, the direct writer and the
        /// row map serialize to the same bytes.
        #[test]
        fn direct_writer_matches_the_row_map_on_random_events(
            first in proptest::option::of(event()),
            later in proptest::collection::vec(event(), 0..3),
            name in proptest::option::of("[a-zA-Z0-9 _\"]{0,10}"),
            start_time in proptest::option::of(0.0f64..4e9),
            taken_between in proptest::bool::ANY,
            end in proptest::bool::ANY,
        ) {
            let obj = container(ObjectType::ProjectLogs);
            let mut args = SpanArgs::new();
            if let Some(n) = name { args = args.name(n); }
            if let Some(t) = start_time { args = args.start_time(t); }
            if let Some(e) = first { args = args.event(e); }
            let span = start(&obj, None, args);
            for (i, e) in later.into_iter().enumerate() {
                if taken_between && i == 1 {
                    check_queue(&obj);
                }
                if let Ok(e) = e.validate() {
                    span.log(e).unwrap();
                }
            }
            if end { span.end_at(4e9 + 1.0); }
            check_queue(&obj);
            drop(span);
            check_queue(&obj);
        }
    }
}
