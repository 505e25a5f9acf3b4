//! The fields a user logs on a span ([`Event`]) and their validation (spec §6.3).
//!
//! Validation happens at the call, on the application thread, so a mistake is
//! reported where it was made; a rejected event queues nothing.

use std::sync::Arc;

use serde_json::{Map, Value};
use smallvec::SmallVec;

/// A logged value broke a rule of the protocol. Names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {rule}")]
pub struct ValidationError {
    /// The offending field, e.g. `scores` or `metrics.tokens`.
    pub field: String,
    /// The rule it broke, in the official SDKs' words where they have some.
    pub rule: String,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// A score value: a number in `[0, 1]`, or null for "not scored".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreValue(pub Option<f64>);

impl From<f64> for ScoreValue {
    fn from(v: f64) -> Self {
        ScoreValue(Some(v))
    }
}
impl From<f32> for ScoreValue {
    fn from(v: f32) -> Self {
        ScoreValue(Some(v as f64))
    }
}
impl From<bool> for ScoreValue {
    fn from(v: bool) -> Self {
        ScoreValue(Some(if v { 1.0 } else { 0.0 }))
    }
}
impl From<Option<f64>> for ScoreValue {
    fn from(v: Option<f64>) -> Self {
        ScoreValue(v)
    }
}
impl From<i32> for ScoreValue {
    fn from(v: i32) -> Self {
        ScoreValue(Some(v as f64))
    }
}

/// Converts a float to JSON the way the protocol wants non-finite numbers:
/// the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
pub fn json_f64(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v == f64::INFINITY {
        Value::String("Infinity".into())
    } else if v == f64::NEG_INFINITY {
        Value::String("-Infinity".into())
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// What a span logs: input, output, expected, error, scores, metrics,
/// metadata, tags and span attributes. A builder; every setter validates.
///
/// ```
/// use braintrust_core::Event;
/// use serde_json::json;
/// let e = Event::new()
///     .input(json!({"q": "What is 1+1?"}))
///     .output("2")
///     .score("correct", 1.0)
///     .metric("tokens", 12.0)
///     .metadata(json!({"user": 7}));
/// assert!(e.validate().is_ok());
/// let bad = Event::new().score("quality", 1.5);
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "invalid `scores.quality`: score values must be between 0 and 1"
/// );
/// ```
#[derive(Clone, Default)]
#[must_use = "Event is a builder: pass it to Span::log"]
pub struct Event {
    /// The set fields, each at most once, in [`Field`] order. Object fields
    /// hold a `Value::Object`, `tags` a `Value::Array` of strings. A short
    /// list instead of one slot per field keeps an event small to move
    /// through the builder and to hold while it waits for the logger thread;
    /// the first field is stored inline, so the common one-field event
    /// (an input, an output) allocates nothing of its own.
    pub(crate) fields: SmallVec<[(Field, Value); 1]>,
    /// The rarely set parts, boxed so a plain event stays small.
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Default)]
struct Extra {
    /// Values shared with the caller and serialized on the logger thread
    /// ([`Event::input_shared`], [`Event::metadata_shared`]): `input`,
    /// `output`, `expected` or `metadata`, each at most once and never also
    /// in `fields`.
    shared: Vec<(Field, Arc<dyn SharedJson>)>,
    invalid: Option<ValidationError>,
}

/// A value [`Event::input_shared`] and friends log: anything `Serialize`,
/// serialized when its row is written.
pub(crate) trait SharedJson: Send + Sync {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
    fn to_json(&self) -> serde_json::Result<Value>;
    /// The value as a JSON object, when it is one already
    /// ([`Event::metadata_shared`]): merged without serializing it.
    fn as_map(&self) -> Option<&Map<String, Value>>;
}

impl<T: serde::Serialize + Send + Sync + 'static> SharedJson for T {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
    fn to_json(&self) -> serde_json::Result<Value> {
        serde_json::to_value(self)
    }
    fn as_map(&self) -> Option<&Map<String, Value>> {
        (self as &dyn std::any::Any).downcast_ref()
    }
}

/// The shared value of an object field (`metadata_shared`) as the object it
/// is; `None` for any other field, whose values replace rather than merge
/// even when they are maps.
pub(crate) fn shared_object(f: Field, v: &dyn SharedJson) -> Option<&Map<String, Value>> {
    if f.is_object() {
        v.as_map()
    } else {
        None
    }
}

/// A shared value as JSON; one that fails to serialize becomes a string
/// that says so (the row is still written).
pub(crate) fn shared_to_value(f: Field, v: &dyn SharedJson) -> Value {
    if let Some(m) = v.as_map() {
        return Value::Object(m.clone());
    }
    v.to_json().unwrap_or_else(|e| {
        Value::String(format!("ERROR: could not serialize `{}`: {e}", f.name()))
    })
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
            && self.invalid() == other.invalid()
            && self.shared().len() == other.shared().len()
            && self
                .shared()
                .iter()
                .zip(other.shared())
                .all(|((f, a), (g, b))| f == g && std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)))
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared: Vec<&str> = self.shared().iter().map(|(k, _)| k.name()).collect();
        f.debug_struct("Event")
            .field("fields", &self.fields)
            .field("shared", &shared)
            .field("invalid", &self.invalid())
            .finish()
    }
}

/// A field of an [`Event`], in the order rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Field {
    Input,
    Output,
    Expected,
    Error,
    Scores,
    Metrics,
    Metadata,
    SpanAttributes,
    Tags,
}

impl Field {
    /// The row key.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Field::Input => "input",
            Field::Output => "output",
            Field::Expected => "expected",
            Field::Error => "error",
            Field::Scores => "scores",
            Field::Metrics => "metrics",
            Field::Metadata => "metadata",
            Field::SpanAttributes => "span_attributes",
            Field::Tags => "tags",
        }
    }

    /// Objects deep-merge over what a row has; other fields replace.
    pub(crate) const fn is_object(self) -> bool {
        matches!(
            self,
            Field::Scores | Field::Metrics | Field::Metadata | Field::SpanAttributes
        )
    }
}

impl Event {
    /// An empty event.
    pub fn new() -> Self {
        Self::default()
    }

    fn reject(mut self, e: ValidationError) -> Self {
        let extra = self.extra.get_or_insert_with(Box::default);
        if extra.invalid.is_none() {
            extra.invalid = Some(e);
        }
        self
    }

    fn position(&self, f: Field) -> Result<usize, usize> {
        self.fields.binary_search_by(|(k, _)| k.cmp(&f))
    }

    /// The value of a field, if set.
    pub(crate) fn get(&self, f: Field) -> Option<&Value> {
        self.position(f).ok().map(|i| &self.fields[i].1)
    }

    /// An object field, if set.
    pub(crate) fn map(&self, f: Field) -> Option<&Map<String, Value>> {
        self.get(f).and_then(Value::as_object)
    }

    /// Sets a field, replacing what it held.
    pub(crate) fn put(&mut self, f: Field, v: Value) {
        if let Some(x) = &mut self.extra {
            x.shared.retain(|(k, _)| *k != f);
        }
        match self.position(f) {
            Ok(i) => self.fields[i].1 = v,
            Err(i) => self.insert_at(i, f, v),
        }
    }

    /// Inserts a new field. Grows one slot at a time: most events set one
    /// or two fields, and a vector's first growth would make room for four.
    fn insert_at(&mut self, i: usize, f: Field, v: Value) {
        self.fields.reserve_exact(1);
        self.fields.insert(i, (f, v));
    }

    /// The object of an object field, created empty when unset.
    fn map_mut(&mut self, f: Field) -> &mut Map<String, Value> {
        self.unshare(f);
        let i = match self.position(f) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, f, Value::Object(Map::new()));
                i
            }
        };
        let slot = &mut self.fields[i].1;
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        slot.as_object_mut().expect("an object was just put here")
    }

    /// The tag list, created empty when unset.
    fn tag_list(&mut self) -> &mut Vec<Value> {
        let i = match self.position(Field::Tags) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, Field::Tags, Value::Array(Vec::new()));
                i
            }
        };
        let slot = &mut self.fields[i].1;
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        slot.as_array_mut().expect("an array was just put here")
    }

    /// The span's input (any JSON).
    pub fn input(mut self, v: impl Into<Value>) -> Self {
        self.put(Field::Input, v.into());
        self
    }
    /// The span's output (any JSON).
    pub fn output(mut self, v: impl Into<Value>) -> Self {
        self.put(Field::Output, v.into());
        self
    }
    /// The expected output, for evaluation.
    pub fn expected(mut self, v: impl Into<Value>) -> Self {
        self.put(Field::Expected, v.into());
        self
    }

    /// The span's input, shared with the caller instead of copied: the
    /// value is serialized on the logger thread when its row is written.
    /// For large values (documents, images, long conversations) the
    /// application thread does no copy and no serialization. The value must
    /// not change meaning later (it is read when the row is written), and
    /// the queue's byte budget does not count it (the caller holds it).
    /// A value that fails to serialize is logged as a string saying so.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use braintrust_core::Event;
    /// #[derive(serde::Serialize)]
    /// struct Doc { pages: Vec<String> }
    /// let doc = Arc::new(Doc { pages: vec!["a long page".into(); 100] });
    /// let e = Event::new().input_shared(doc.clone()).output("summary");
    /// // The event holds the caller's value itself, not a copy of it.
    /// assert_eq!(Arc::strong_count(&doc), 2);
    /// drop(e);
    /// assert_eq!(Arc::strong_count(&doc), 1);
    /// ```
    pub fn input_shared<T: serde::Serialize + Send + Sync + 'static>(self, v: Arc<T>) -> Self {
        self.with_shared(Field::Input, v)
    }
    /// The span's output, shared instead of copied (see [`Event::input_shared`]).
    pub fn output_shared<T: serde::Serialize + Send + Sync + 'static>(self, v: Arc<T>) -> Self {
        self.with_shared(Field::Output, v)
    }
    /// The expected output, shared instead of copied (see [`Event::input_shared`]).
    pub fn expected_shared<T: serde::Serialize + Send + Sync + 'static>(self, v: Arc<T>) -> Self {
        self.with_shared(Field::Expected, v)
    }

    /// Metadata shared with the caller instead of copied: the same
    /// dictionary logged on many spans (a request's context, a model's
    /// settings) is held once. It is written into the row on the logger
    /// thread and merged with the span's other metadata exactly as
    /// [`Event::metadata`] would. Like [`Event::input_shared`], it must not
    /// change meaning later, and the queue's byte budget does not count it.
    /// Merging needs a copy: adding keys to it in the same event
    /// (`metadata`, `metadata_entry`), or logging more metadata on the span
    /// before the logger thread has taken this write, merges into a copy of
    /// the map (counted against the byte budget); your map is never changed.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use braintrust_core::Event;
    /// use serde_json::{json, Map, Value};
    /// let context: Map<String, Value> = (0..50)
    ///     .map(|k| (format!("key_{k}"), json!(k)))
    ///     .collect();
    /// let context = Arc::new(context);
    /// let e = Event::new().metadata_shared(context.clone()).output("ok");
    /// // Shared, not copied: the event holds the same map.
    /// assert_eq!(Arc::strong_count(&context), 2);
    /// # drop(e);
    /// ```
    pub fn metadata_shared(self, m: Arc<Map<String, Value>>) -> Self {
        if self.get(Field::Metadata).is_some() || self.shared_of(Field::Metadata).is_some() {
            // Added to metadata already set, as `metadata` adds: a copy.
            return self.metadata(Value::Object((*m).clone()));
        }
        self.with_shared(Field::Metadata, m)
    }

    fn with_shared(mut self, f: Field, v: Arc<dyn SharedJson>) -> Self {
        self.set_shared(f, v);
        self
    }

    fn shared_of(&self, f: Field) -> Option<&Arc<dyn SharedJson>> {
        self.shared().iter().find(|(k, _)| *k == f).map(|(_, v)| v)
    }

    /// Turns a shared object of `f` into a field of its own (a copy), so
    /// it can be changed in place: `metadata` after `metadata_shared`, or a
    /// merge of two writes of one span before the logger thread takes them.
    /// Returns the copy's estimated bytes (0 when nothing was copied), for
    /// the queue's byte budget. Shared values of other fields are replaced,
    /// never changed in place, so they are left alone.
    fn unshare(&mut self, f: Field) -> usize {
        let Some(x) = &mut self.extra else { return 0 };
        let Some(i) = x
            .shared
            .iter()
            .position(|(k, v)| *k == f && shared_object(f, &**v).is_some())
        else {
            return 0;
        };
        let (_, v) = x.shared.remove(i);
        let value = shared_to_value(f, &*v);
        let bytes = std::mem::size_of::<(Field, Value)>() + approx_json_bytes(&value, 0);
        let at = self
            .position(f)
            .expect_err("a field is never both set and shared");
        self.insert_at(at, f, value);
        bytes
    }

    fn set_shared(&mut self, f: Field, v: Arc<dyn SharedJson>) {
        if let Ok(i) = self.position(f) {
            self.fields.remove(i);
        }
        let shared = &mut self.extra.get_or_insert_with(Box::default).shared;
        match shared.iter_mut().find(|(k, _)| *k == f) {
            Some(slot) => slot.1 = v,
            None => shared.push((f, v)),
        }
    }
    /// An error. The protocol keeps `error` a string (spec §8), so any other
    /// JSON value (an object, a number) is sent as its compact JSON text;
    /// `null` stays `null`.
    ///
    /// ```
    /// use braintrust_core::Event;
    /// use serde_json::json;
    /// // Both log the string `{"code":7}`.
    /// let a = Event::new().error(json!({"code": 7}));
    /// let b = Event::new().error(r#"{"code":7}"#);
    /// assert_eq!(a, b);
    /// ```
    pub fn error(mut self, v: impl Into<Value>) -> Self {
        let v = match v.into() {
            v @ (Value::String(_) | Value::Null) => v,
            other => Value::String(other.to_string()),
        };
        self.put(Field::Error, v);
        self
    }
    /// An error from a Rust error value: its `Display`, then its `source()` chain.
    pub fn error_from(self, err: &(dyn std::error::Error + 'static)) -> Self {
        self.error(error_string(err))
    }
    /// Metadata: must be a JSON object.
    pub fn metadata(mut self, v: impl Into<Value>) -> Self {
        match v.into() {
            Value::Object(m) => {
                self.unshare(Field::Metadata);
                match self.position(Field::Metadata) {
                    Ok(_) => self.map_mut(Field::Metadata).extend(m),
                    Err(_) => self.put(Field::Metadata, Value::Object(m)),
                }
                self
            }
            Value::Null => self,
            _ => self.reject(ValidationError::new(
                "metadata",
                "metadata must be a dictionary or serialize to a dictionary",
            )),
        }
    }
    /// One metadata entry.
    pub fn metadata_entry(mut self, key: impl Into<String>, v: impl Into<Value>) -> Self {
        self.map_mut(Field::Metadata).insert(key.into(), v.into());
        self
    }
    /// One score: a number in `[0, 1]`, a bool (1/0), or `None`.
    pub fn score(mut self, name: impl Into<String>, v: impl Into<ScoreValue>) -> Self {
        let name = name.into();
        let value = match v.into().0 {
            None => Value::Null,
            Some(x) if (0.0..=1.0).contains(&x) => json_f64(x),
            Some(_) => {
                return self.reject(ValidationError::new(
                    format!("scores.{name}"),
                    "score values must be between 0 and 1",
                ))
            }
        };
        self.map_mut(Field::Scores).insert(name, value);
        self
    }
    /// Several scores.
    pub fn scores<K: Into<String>, V: Into<ScoreValue>>(
        mut self,
        scores: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in scores {
            self = self.score(k, v);
        }
        self
    }
    /// One metric (e.g. `prompt_tokens`). Non-finite values are sent as strings.
    pub fn metric(mut self, name: impl Into<String>, v: f64) -> Self {
        self.map_mut(Field::Metrics)
            .insert(name.into(), json_f64(v));
        self
    }
    /// Several metrics.
    pub fn metrics<K: Into<String>>(mut self, metrics: impl IntoIterator<Item = (K, f64)>) -> Self {
        for (k, v) in metrics {
            self = self.metric(k, v);
        }
        self
    }
    /// Tags: unique strings, set-unioned with tags logged earlier.
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        let list = self.tag_list();
        let mut dup = None;
        for t in tags {
            let t = t.into();
            if list.iter().any(|v| v.as_str() == Some(t.as_str())) {
                dup = Some(t);
                break;
            }
            list.push(Value::String(t));
        }
        match dup {
            Some(t) => self.reject(ValidationError::new("tags", format!("duplicate tag: {t}"))),
            None => self,
        }
    }
    /// Extra span attributes (merged into `span_attributes`): must be an
    /// object. `name`, when present, must be a non-empty string and `type`
    /// one of the [`SpanType`](crate::SpanType) wire names.
    ///
    /// ```
    /// use braintrust_core::Event;
    /// use serde_json::json;
    /// let err = Event::new().span_attributes(json!({"type": "bogus"})).validate().unwrap_err();
    /// assert_eq!(err.field, "span_attributes.type");
    /// ```
    pub fn span_attributes(mut self, v: impl Into<Value>) -> Self {
        match v.into() {
            Value::Object(m) => {
                if let Err(e) = check_span_attributes(&m) {
                    return self.reject(e);
                }
                self.map_mut(Field::SpanAttributes).extend(m);
                self
            }
            _ => self.reject(ValidationError::new(
                "span_attributes",
                "span_attributes must be a dictionary",
            )),
        }
    }

    /// Builds an event from a JSON object with the protocol's field names
    /// (`input`, `output`, `expected`, `error`, `scores`, `metrics`,
    /// `metadata`, `tags`, `span_attributes`; `inputs` as a deprecated alias).
    /// `id` and unknown fields are rejected.
    pub fn from_json(v: Value) -> Result<Event, ValidationError> {
        let Value::Object(map) = v else {
            return Err(ValidationError::new(
                "event",
                "an event must be a JSON object",
            ));
        };
        if map.contains_key("input") && map.contains_key("inputs") {
            return Err(ValidationError::new(
                "input",
                "Only one of input or inputs (deprecated) can be specified. Prefer input.",
            ));
        }
        let mut e = Event::new();
        for (k, v) in map {
            e = match k.as_str() {
                "input" | "inputs" => e.input(v),
                "output" => e.output(v),
                "expected" => e.expected(v),
                "error" => e.error(v),
                "metadata" => e.metadata(v),
                "span_attributes" => e.span_attributes(v),
                "scores" => e.scores_json(v),
                "metrics" => e.metrics_json(v),
                "tags" => e.tags_json(v),
                "id" => e.reject(ValidationError::new(
                    "id",
                    "id cannot be logged on a span; it is set when the span starts",
                )),
                other => e.reject(ValidationError::new(
                    other,
                    "unknown field; allowed: input, output, expected, error, scores, metrics, metadata, tags, span_attributes",
                )),
            };
        }
        e.validate()
    }

    fn scores_json(self, v: Value) -> Self {
        match v {
            Value::Object(m) => {
                let mut e = self;
                for (k, v) in m {
                    e = match v {
                        Value::Null => e.score(k, None::<f64>),
                        Value::Bool(b) => e.score(k, b),
                        Value::Number(n) => e.score(k, n.as_f64().unwrap_or(f64::NAN)),
                        _ => e.reject(ValidationError::new(
                            format!("scores.{k}"),
                            "score values must be numbers",
                        )),
                    };
                }
                e
            }
            Value::Array(_) => self.reject(ValidationError::new(
                "scores",
                "scores must be an object, not an array",
            )),
            _ => self.reject(ValidationError::new("scores", "scores must be an object")),
        }
    }

    fn metrics_json(self, v: Value) -> Self {
        match v {
            Value::Object(m) => {
                let mut e = self;
                for (k, v) in m {
                    e = match v {
                        Value::Number(n) => e.metric(k, n.as_f64().unwrap_or(f64::NAN)),
                        Value::String(s)
                            if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") =>
                        {
                            e.map_mut(Field::Metrics).insert(k, Value::String(s));
                            e
                        }
                        _ => e.reject(ValidationError::new(
                            format!("metrics.{k}"),
                            "metric values must be numbers",
                        )),
                    };
                }
                e
            }
            _ => self.reject(ValidationError::new(
                "metrics",
                "metrics must be a dictionary",
            )),
        }
    }

    fn tags_json(self, v: Value) -> Self {
        match v {
            Value::Array(items) => {
                let mut strings = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => strings.push(s),
                        _ => {
                            return self
                                .reject(ValidationError::new("tags", "tags must be strings"))
                        }
                    }
                }
                self.tags(strings)
            }
            Value::Null => self,
            _ => self.reject(ValidationError::new(
                "tags",
                "tags must be a list, set, or tuple of strings",
            )),
        }
    }

    /// Returns the first rule this event broke, or the event itself.
    pub fn validate(mut self) -> Result<Event, ValidationError> {
        match self.extra.as_mut().and_then(|x| x.invalid.take()) {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// The values shared with the caller (see [`Event::input_shared`]).
    pub(crate) fn shared(&self) -> &[(Field, Arc<dyn SharedJson>)] {
        self.extra.as_ref().map_or(&[], |x| &x.shared)
    }

    fn invalid(&self) -> Option<&ValidationError> {
        self.extra.as_ref().and_then(|x| x.invalid.as_ref())
    }

    /// Roughly the heap bytes the set fields hold: what the queue's byte
    /// budget counts (`BRAINTRUST_QUEUE_MAX_BYTES`).
    pub(crate) fn approx_bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|(_, v)| std::mem::size_of::<(Field, Value)>() + approx_json_bytes(v, 0))
            .sum()
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.shared().is_empty()
    }

    /// Merges a later event into this one with the row-merge rules: values
    /// replace, objects deep-merge, tags union. Returns the estimated bytes
    /// of shared objects copied to merge them (see `unshare`).
    pub(crate) fn merge_from(&mut self, later: Event) -> usize {
        let (fields, shared) = (later.fields, later.extra.map(|x| x.shared));
        let mut copied = 0;
        for (f, v) in fields {
            if f.is_object() {
                copied += self.unshare(f);
            }
            match (f, v) {
                (Field::Tags, Value::Array(tags)) => {
                    let list = self.tag_list();
                    for t in tags {
                        if !list.contains(&t) {
                            list.push(t);
                        }
                    }
                }
                (f, Value::Object(m)) if f.is_object() && self.map(f).is_some() => {
                    deep_merge(self.map_mut(f), m);
                }
                (f, v) => self.put(f, v),
            }
        }
        for (f, v) in shared.unwrap_or_default() {
            match shared_object(f, &*v) {
                Some(m) if self.get(f).is_some() || self.shared_of(f).is_some() => {
                    copied += self.unshare(f);
                    copied += std::mem::size_of::<(Field, Value)>() + approx_map_bytes(m, 0);
                    deep_merge(self.map_mut(f), m.clone());
                }
                _ => self.set_shared(f, v),
            }
        }
        copied
    }

    /// Writes the set fields into a row (logger thread). Nested objects in
    /// `metrics`, `metadata` and `span_attributes` are merged over what the
    /// row already has, so user metrics merge with `metrics.start`.
    pub(crate) fn write_into(self, row: &mut Map<String, Value>) {
        for (f, v) in self.fields {
            match (row.get_mut(f.name()), v) {
                (Some(Value::Object(existing)), Value::Object(m)) if f.is_object() => {
                    deep_merge(existing, m)
                }
                (_, v) => {
                    row.insert(f.name().into(), v);
                }
            }
        }
        for (f, v) in self.extra.map(|x| x.shared).unwrap_or_default() {
            match (row.get_mut(f.name()), shared_object(f, &*v)) {
                (Some(Value::Object(existing)), Some(m)) => deep_merge(existing, m.clone()),
                _ => {
                    row.insert(f.name().into(), shared_to_value(f, &*v));
                }
            }
        }
    }
}

/// Checks a `propagated_event` (spec §7.6) and returns it as the row fields
/// it adds. It is deep-merged into the first row of a span and of every
/// descendant, winning on conflicts, so it must be an object of event fields
/// that [`Event::from_json`] accepts (no `id`, no row or object ids); it is
/// normalized as an event is (`inputs` → `input`, `error` a string, boolean
/// scores 1/0). An error names `field` (e.g. `propagated_event.scores.s`).
pub(crate) fn check_propagated_event(
    field: &str,
    v: Value,
) -> Result<Map<String, Value>, ValidationError> {
    if !v.is_object() {
        return Err(ValidationError::new(
            field,
            format!("{field} must be a JSON object of event fields"),
        ));
    }
    let event = Event::from_json(v)
        .map_err(|e| ValidationError::new(format!("{field}.{}", e.field), e.rule))?;
    let mut fields = Map::new();
    event.write_into(&mut fields);
    Ok(fields)
}

/// The rules on the attributes the backend reads: `name` a non-empty string,
/// `type` a known span type.
fn check_span_attributes(m: &Map<String, Value>) -> Result<(), ValidationError> {
    match m.get("name") {
        None => {}
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => {
            return Err(ValidationError::new(
                "span_attributes.name",
                "the span name must be a non-empty string",
            ))
        }
    }
    match m.get("type") {
        None => Ok(()),
        Some(Value::String(s)) => s
            .parse::<crate::SpanType>()
            .map(|_| ())
            .map_err(|e| ValidationError::new("span_attributes.type", e.rule)),
        Some(_) => Err(ValidationError::new(
            "span_attributes.type",
            "the span type must be a string",
        )),
    }
}

/// Roughly the heap bytes below a JSON value (strings, arrays, maps). Past
/// a depth of 64 a value counts as 64 bytes, so the walk is bounded.
fn approx_json_bytes(v: &Value, depth: usize) -> usize {
    const VALUE: usize = std::mem::size_of::<Value>();
    if depth > 64 {
        return 64;
    }
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.len(),
        Value::Array(a) => a
            .iter()
            .map(|x| VALUE + approx_json_bytes(x, depth + 1))
            .sum(),
        Value::Object(m) => approx_map_bytes(m, depth),
    }
}

/// [`approx_json_bytes`] of an object's entries.
fn approx_map_bytes(m: &Map<String, Value>, depth: usize) -> usize {
    const VALUE: usize = std::mem::size_of::<Value>();
    // An index-map entry besides its key and value: the hash and index.
    const ENTRY: usize = 16;
    m.iter()
        .map(|(k, x)| {
            std::mem::size_of::<String>()
                + k.len()
                + VALUE
                + ENTRY
                + approx_json_bytes(x, depth + 1)
        })
        .sum()
}

/// Deep-merges `update` into `target`: objects merge recursively, anything
/// else (arrays and null included) replaces.
pub(crate) fn deep_merge(target: &mut Map<String, Value>, update: Map<String, Value>) {
    for (k, v) in update {
        match (target.get_mut(&k), v) {
            (Some(Value::Object(t)), Value::Object(u)) => deep_merge(t, u),
            (_, v) => {
                target.insert(k, v);
            }
        }
    }
}

/// Formats a Rust error as the span's `error` string: its `Display`, then each
/// `source()` on its own line, following the JS SDK's `message\n\nstack` form.
///
/// ```
/// use braintrust_core::error_string;
/// // No source: the `Display` alone.
/// assert_eq!(error_string(&std::io::Error::other("disk full")), "disk full");
/// // With a source chain: one numbered line per cause.
/// #[derive(Debug)]
/// struct Wrap(std::io::Error);
/// impl std::fmt::Display for Wrap {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("save failed") }
/// }
/// impl std::error::Error for Wrap {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
/// }
/// let e = Wrap(std::io::Error::other("disk full"));
/// assert_eq!(error_string(&e), "save failed\n\nCaused by:\n    0: disk full");
/// ```
pub fn error_string(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    if source.is_some() {
        s.push_str("\n\nCaused by:");
        let mut i = 0;
        while let Some(e) = source {
            s.push_str(&format!("\n    {i}: {e}"));
            source = e.source();
            i += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scores_follow_the_rules() {
        let e = Event::new()
            .score("a", true)
            .score("b", None::<f64>)
            .score("c", 0.5)
            .validate()
            .unwrap();
        assert_eq!(
            e.get(Field::Scores).unwrap(),
            &json!({"a":1,"b":null,"c":0.5})
        );
        let err = Event::new().score("x", f64::NAN).validate().unwrap_err();
        assert_eq!(err.field, "scores.x");
        let err = Event::from_json(json!({"scores": {"x": "high"}})).unwrap_err();
        assert_eq!(err.rule, "score values must be numbers");
        let err = Event::from_json(json!({"scores": [1]})).unwrap_err();
        assert_eq!(err.rule, "scores must be an object, not an array");
    }

    #[test]
    fn metrics_metadata_tags_and_id() {
        let err = Event::from_json(json!({"metrics": {"t": "x"}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `metrics.t`: metric values must be numbers"
        );
        let err = Event::new().metadata(json!([1])).validate().unwrap_err();
        assert_eq!(err.field, "metadata");
        let err = Event::new().tags(["a", "a"]).validate().unwrap_err();
        assert_eq!(err.rule, "duplicate tag: a");
        let err = Event::from_json(json!({"tags": [1]})).unwrap_err();
        assert_eq!(err.rule, "tags must be strings");
        let err = Event::from_json(json!({"id": "x"})).unwrap_err();
        assert_eq!(err.field, "id");
        let err = Event::from_json(json!({"input": 1, "inputs": 2})).unwrap_err();
        assert!(err.rule.starts_with("Only one of input or inputs"));
        let e = Event::from_json(json!({"inputs": 2})).unwrap();
        assert_eq!(e.get(Field::Input), Some(&json!(2)));
    }

    #[test]
    fn non_finite_numbers_become_strings() {
        let e = Event::new()
            .metric("a", f64::NAN)
            .metric("b", f64::INFINITY)
            .metric("c", f64::NEG_INFINITY)
            .metric("d", 1.5)
            .metric("e", 3.0);
        assert_eq!(
            e.get(Field::Metrics).unwrap(),
            &json!({"a":"NaN","b":"Infinity","c":"-Infinity","d":1.5,"e":3})
        );
    }

    #[test]
    fn error_chain_is_written() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_string(&e), "outer\n\nCaused by:\n    0: inner");
    }

    /// Two writes of one span merged before the logger thread takes them
    /// give the row the two written one after the other give, whichever of
    /// them shares its metadata.
    #[test]
    fn shared_metadata_merges_like_copied_metadata() {
        let ctx: Map<String, Value> =
            serde_json::from_value(json!({"a": {"x": 1}, "k": 1})).unwrap();
        let ctx = Arc::new(ctx);
        let later = json!({"a": {"y": 2}, "k": 2});
        let row_of = |events: Vec<Event>| {
            let mut row = Map::new();
            for e in events {
                e.write_into(&mut row);
            }
            Value::Object(row)
        };
        let pairs = [
            (
                Event::new().metadata_shared(ctx.clone()),
                Event::new().metadata(later.clone()),
            ),
            (
                Event::new().metadata(later.clone()),
                Event::new().metadata_shared(ctx.clone()),
            ),
            (
                Event::new().metadata_shared(ctx.clone()),
                Event::new().metadata_shared(ctx.clone()),
            ),
            (
                Event::new().metadata_shared(ctx.clone()),
                Event::new().input("only input"),
            ),
            // A shared map is merged only where maps merge: an input is replaced.
            (
                Event::new().input(later.clone()),
                Event::new().input_shared(ctx.clone()),
            ),
            (
                Event::new().input_shared(ctx.clone()),
                Event::new().input(later.clone()),
            ),
        ];
        for (first, second) in pairs {
            let sequential = row_of(vec![first.clone(), second.clone()]);
            let mut merged = first;
            merged.merge_from(second);
            assert_eq!(row_of(vec![merged]), sequential);
        }
        let mut e = Event::new().input(later.clone());
        e.merge_from(Event::new().input_shared(ctx.clone()));
        assert_eq!(row_of(vec![e])["input"], json!({"a": {"x": 1}, "k": 1}));
        // Merging copies a shared map and says how much it copied (the byte
        // budget counts it); replacing copies nothing.
        let mut e = Event::new().metadata_shared(ctx.clone());
        assert!(e.merge_from(Event::new().metadata(json!({"k": 2}))) > 0);
        let mut e = Event::new().input_shared(ctx.clone());
        assert_eq!(e.merge_from(Event::new().input("x")), 0);
        // Within one event, `metadata` adds to shared metadata (a copy).
        let e = Event::new()
            .metadata_shared(ctx.clone())
            .metadata(json!({"k": 3}));
        assert!(e.shared().is_empty());
        assert_eq!(
            e.get(Field::Metadata),
            Some(&json!({"a": {"x": 1}, "k": 3}))
        );
        let e = Event::new()
            .metadata_entry("z", 0)
            .metadata_shared(ctx.clone());
        assert_eq!(
            e.get(Field::Metadata),
            Some(&json!({"z": 0, "a": {"x": 1}, "k": 1}))
        );
        assert_eq!(ctx["k"], json!(1));
    }
}
