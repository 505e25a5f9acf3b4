//! W3C Trace Context propagation (protocol spec §7.8): `traceparent`,
//! `tracestate` and the `braintrust.parent` member of `baggage`.
//!
//! * The trace identity (trace id = Braintrust `root_span_id`, parent span id)
//!   travels in `traceparent: 00-<trace id>-<span id>-<flags>`.
//! * The Braintrust object the trace belongs to travels in the baggage member
//!   `braintrust.parent=<percent-encoded value>`, whose value is
//!   `project_id:<id>`, `project_name:<name>` or `experiment_id:<id>`
//!   (see [`BraintrustParent`]).
//! * Other baggage members and `tracestate` are relayed untouched.
//!
//! This module is pure: it reads and writes header values on any [`Carrier`]
//! (an [`http::HeaderMap`], or a `HashMap`/`BTreeMap` of strings), and never
//! fails or panics on malformed input.
//!
//! ```
//! use std::collections::HashMap;
//! use braintrust_core::__internal::w3c::{extract, inject_into};
//!
//! let mut headers: HashMap<String, String> = HashMap::new();
//! headers.insert("Baggage".into(), "vendor=a%2Fb".into());
//! inject_into(
//!     &mut headers,
//!     "c3e23ceeaa55c045615c68ad6823ea44",
//!     "49a7dcbbc218618e",
//!     "01",
//!     Some("project_id:5f0e4a4e-3b8a-4f55-9a53-3d4c1e1f2a01"),
//! );
//! assert_eq!(headers["traceparent"], "00-c3e23ceeaa55c045615c68ad6823ea44-49a7dcbbc218618e-01");
//! assert_eq!(
//!     headers["baggage"],
//!     "vendor=a%2Fb,braintrust.parent=project_id%3A5f0e4a4e-3b8a-4f55-9a53-3d4c1e1f2a01"
//! );
//! assert!(!headers.contains_key("Baggage"));
//!
//! let ctx = extract(&headers).unwrap();
//! assert_eq!(ctx.trace_parent().unwrap().span_id, "49a7dcbbc218618e");
//! assert_eq!(
//!     ctx.braintrust_parent().as_deref(),
//!     Some("project_id:5f0e4a4e-3b8a-4f55-9a53-3d4c1e1f2a01")
//! );
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

/// Header name of the W3C `traceparent`.
pub(crate) const TRACEPARENT_HEADER: &str = "traceparent";
/// Header name of the W3C `tracestate` (relayed, never interpreted).
pub(crate) const TRACESTATE_HEADER: &str = "tracestate";
/// Header name of the W3C `baggage`.
pub(crate) const BAGGAGE_HEADER: &str = "baggage";
/// The baggage key carrying the Braintrust parent object.
pub(crate) const BRAINTRUST_PARENT_KEY: &str = "braintrust.parent";
/// Trace flags written for traces that did not come from W3C: sampled.
pub(crate) const DEFAULT_TRACE_FLAGS: &str = "01";
/// W3C baggage limit: at most this many list members.
pub const MAX_BAGGAGE_MEMBERS: usize = 64;
/// W3C baggage limit: at most this many bytes.
pub const MAX_BAGGAGE_BYTES: usize = 8192;
/// A parsed `traceparent` (version `00`); all fields are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 32 hex chars, not all zero: the Braintrust `root_span_id`.
    pub trace_id: String,
    /// 16 hex chars, not all zero: the parent span's `span_id`.
    pub span_id: String,
    /// 2 hex chars, kept raw so unknown flag bits survive a round trip.
    pub flags: String,
}

impl TraceParent {
    /// True if the sampled bit (`0x01`) of the flags is set.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|f| f & 1 == 1)
    }
}

impl fmt::Display for TraceParent {
    /// Formats as `00-<trace_id>-<span_id>-<flags>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True if `s` is a valid W3C trace id: 32 lowercase hex chars, not all zero.
pub(crate) fn is_w3c_trace_id(s: &str) -> bool {
    is_lower_hex(s, 32) && s.bytes().any(|b| b != b'0')
}

/// True if `s` is a valid W3C parent span id: 16 lowercase hex chars, not all zero.
pub(crate) fn is_w3c_span_id(s: &str) -> bool {
    is_lower_hex(s, 16) && s.bytes().any(|b| b != b'0')
}

/// Python's `str.strip()` whitespace: Unicode whitespace plus U+001C..U+001F.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Parses a `traceparent` value. Surrounding whitespace is ignored; then the
/// value must match `^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$` with a non-zero
/// trace id and span id.
///
/// A higher version (`01` to `fe`) is parsed as the W3C Trace Context spec
/// (§3.2.4, "versioning of traceparent") asks: the version-`00` fields are
/// read from their known places, and whatever follows them must start with
/// a `-` (fields a later version added, ignored). Version `ff` is invalid.
/// Written back, the context is version `00`, the one this SDK speaks. The
/// official SDKs reject every version but `00`; here the W3C spec wins.
///
/// ```
/// use braintrust_core::__internal::w3c::parse_traceparent;
/// let tp = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(tp.sampled());
/// assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
/// // A future version with an extra field: the known fields are read.
/// let future = parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds").unwrap();
/// assert_eq!(future.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
pub fn parse_traceparent(s: &str) -> Option<TraceParent> {
    let s = py_strip(s);
    let b = s.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = &s[..2];
    if !is_lower_hex(version, 2) || version == "ff" {
        return None;
    }
    // Version 00 is exactly 55 chars; a later one may add `-<fields>`.
    if b.len() > 55 && (version == "00" || b[55] != b'-') {
        return None;
    }
    let (trace_id, span_id, flags) = (&s[3..35], &s[36..52], &s[53..55]);
    if !is_w3c_trace_id(trace_id) || !is_w3c_span_id(span_id) || !is_lower_hex(flags, 2) {
        return None;
    }
    Some(TraceParent {
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
        flags: flags.to_string(),
    })
}

/// Formats `00-<trace_id>-<span_id>-<flags>`.
///
/// `flags` is forwarded verbatim when it is 2 lowercase hex chars, otherwise
/// `DEFAULT_TRACE_FLAGS` (`01`) is used. The ids are **not** validated; use
/// `is_w3c_trace_id` / `is_w3c_span_id` (as [`inject_into`] does) to avoid
/// emitting a malformed header.
pub fn format_traceparent(trace_id: &str, span_id: &str, flags: &str) -> String {
    let flags = if is_lower_hex(flags, 2) {
        flags
    } else {
        DEFAULT_TRACE_FLAGS
    };
    format!("00-{trace_id}-{span_id}-{flags}")
}

/// Percent-encodes a baggage value like Python's `urllib.parse.quote(v, safe="")`:
/// every UTF-8 byte outside `A-Za-z0-9-_.~` becomes `%XX` (uppercase hex), so
/// `:` is `%3A`, space `%20`, `+` `%2B`, `é` `%C3%A9`.
pub fn encode_baggage_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, BAGGAGE_VALUE).to_string()
}

/// What `encode_baggage_value` escapes: everything but RFC 3986 unreserved.
const BAGGAGE_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Decodes a percent-encoded baggage value like Python's `urllib.parse.unquote`:
/// `%XX` (either case) becomes that byte, malformed `%` sequences and all other
/// characters are kept as they are, and invalid UTF-8 becomes U+FFFD. `+` stays
/// `+` (this is not form encoding).
pub fn decode_baggage_value(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// The decoded key of a raw baggage member (`key=value;props`), ignoring
/// properties and surrounding whitespace.
fn member_key(member: &str) -> String {
    let without_props = member.split(';').next().unwrap_or("");
    let key = without_props.split('=').next().unwrap_or("");
    decode_baggage_value(py_strip(key))
}

/// Merges a `braintrust.parent` value into an existing `baggage` header value
/// (spec §7.8), exactly like the official Python SDK:
///
/// * every other member is relayed **byte-for-byte** (properties included), only
///   trimmed of surrounding whitespace; empty members and members without `=`
///   are dropped, and so is any existing `braintrust.parent` member;
/// * the new member `braintrust.parent=<encode_baggage_value(value)>` is
///   **appended last**, but is prioritized for the limits: its bytes and one
///   member slot are reserved first, then relayed members are kept in order until
///   the next one would exceed [`MAX_BAGGAGE_MEMBERS`] members or
///   [`MAX_BAGGAGE_BYTES`] bytes; members are never cut mid-value;
/// * an empty `braintrust_parent` adds no member (the existing members are still
///   normalized as above).
///
/// Returns the new header value; an empty string means "omit the header".
///
/// ```
/// use braintrust_core::__internal::w3c::merge_baggage;
/// assert_eq!(
///     merge_baggage(Some("foo=bar;prop=1, braintrust.parent=stale"), "project_name:Café a,b c+d"),
///     "foo=bar;prop=1,braintrust.parent=project_name%3ACaf%C3%A9%20a%2Cb%20c%2Bd"
/// );
/// ```
pub fn merge_baggage(existing: Option<&str>, braintrust_parent: &str) -> String {
    let bt_member = (!braintrust_parent.is_empty()).then(|| {
        format!(
            "{}={}",
            encode_baggage_value(BRAINTRUST_PARENT_KEY),
            encode_baggage_value(braintrust_parent)
        )
    });
    let mut byte_budget = MAX_BAGGAGE_BYTES as isize;
    let mut member_budget = MAX_BAGGAGE_MEMBERS;
    if let Some(m) = &bt_member {
        // +1 for the comma joining it to a preceding relayed member.
        byte_budget -= m.len() as isize + 1;
        member_budget -= 1;
    }
    let mut relayed: Vec<&str> = Vec::new();
    let mut length: isize = 0;
    for raw in existing.unwrap_or("").split(',') {
        let member = py_strip(raw);
        if member.is_empty() || !member.contains('=') {
            continue;
        }
        if member_key(member) == BRAINTRUST_PARENT_KEY {
            continue;
        }
        if relayed.len() >= member_budget {
            break;
        }
        let cost = member.len() as isize + isize::from(!relayed.is_empty());
        if length + cost > byte_budget {
            break;
        }
        relayed.push(member);
        length += cost;
    }
    let mut out = relayed.join(",");
    if let Some(m) = bt_member {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&m);
    }
    out
}

/// Bounds an inbound baggage value to the W3C limits on whole-member
/// boundaries (returns it unchanged when within both limits).
fn cap_baggage(value: &str) -> &str {
    let commas = value.bytes().filter(|&b| b == b',').count();
    if value.len() <= MAX_BAGGAGE_BYTES && commas < MAX_BAGGAGE_MEMBERS {
        return value;
    }
    let mut length = 0usize;
    for (kept, member) in value.split(',').enumerate() {
        if kept >= MAX_BAGGAGE_MEMBERS {
            break;
        }
        let cost = member.len() + usize::from(kept > 0);
        if length + cost > MAX_BAGGAGE_BYTES {
            break;
        }
        length += cost;
    }
    // `length` ends right before a comma (or at the end), a char boundary.
    &value[..length]
}

/// Parses a `baggage` header value into `(key, value)` pairs, keys and values
/// percent-decoded, properties (after `;`) dropped, in order of first
/// appearance; a repeated key keeps its first position and takes the last
/// value. Oversized input is first cut to the W3C limits on member boundaries.
/// Malformed members are skipped; this never fails.
pub fn parse_baggage(baggage: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in cap_baggage(baggage).split(',') {
        let member = py_strip(raw);
        if member.is_empty() || !member.contains('=') {
            continue;
        }
        let member = member.split(';').next().unwrap_or("");
        let (key, value) = member.split_once('=').unwrap_or((member, ""));
        let key = decode_baggage_value(py_strip(key));
        if key.is_empty() {
            continue;
        }
        let value = decode_baggage_value(py_strip(value));
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
    }
    out
}

/// The decoded value of the `braintrust.parent` member of a `baggage` header
/// value, if any (e.g. `"project_id:5f0e…"`).
pub fn baggage_braintrust_parent(baggage: &str) -> Option<String> {
    parse_baggage(baggage)
        .into_iter()
        .find(|(k, _)| k == BRAINTRUST_PARENT_KEY)
        .map(|(_, v)| v)
}

/// The object named by a `braintrust.parent` baggage value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum BraintrustParent {
    /// `project_id:<id>`: project logs of a known project.
    ProjectId(String),
    /// `project_name:<name>`: project logs of a project known only by name.
    ProjectName(String),
    /// `experiment_id:<id>`: an experiment.
    ExperimentId(String),
}

impl BraintrustParent {
    /// Parses `project_id:<id>`, `project_name:<name>` or `experiment_id:<id>`
    /// (the part after the first `:` is taken verbatim and must be non-empty).
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let (kind, rest) = value.split_once(':')?;
        if rest.is_empty() {
            return None;
        }
        let rest = rest.to_string();
        match kind {
            "project_id" => Some(BraintrustParent::ProjectId(rest)),
            "project_name" => Some(BraintrustParent::ProjectName(rest)),
            "experiment_id" => Some(BraintrustParent::ExperimentId(rest)),
            _ => None,
        }
    }
}

impl fmt::Display for BraintrustParent {
    /// Formats the (unencoded) baggage value, e.g. `project_id:<id>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BraintrustParent::ProjectId(v) => write!(f, "project_id:{v}"),
            BraintrustParent::ProjectName(v) => write!(f, "project_name:{v}"),
            BraintrustParent::ExperimentId(v) => write!(f, "experiment_id:{v}"),
        }
    }
}

/// Trace context extracted from inbound headers by [`extract`] (the Rust form
/// of Python's `extract_trace_context` dict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The validated `traceparent` value (canonical form, surrounding
    /// whitespace removed).
    pub traceparent: String,
    /// The raw `baggage` header value, if present and non-empty.
    pub baggage: Option<String>,
    /// The raw `tracestate` header value, if present and non-empty.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The parsed `traceparent` (always `Some` for contexts built by [`extract`]).
    pub fn trace_parent(&self) -> Option<TraceParent> {
        parse_traceparent(&self.traceparent)
    }

    /// The decoded `braintrust.parent` baggage value, if any.
    pub fn braintrust_parent(&self) -> Option<String> {
        self.baggage.as_deref().and_then(baggage_braintrust_parent)
    }
}

/// Something trace headers can be read from and written to. Header names are
/// matched case-insensitively (ASCII).
pub trait Carrier {
    /// The value of header `name`, matched ignoring ASCII case.
    fn get(&self, name: &str) -> Option<String>;
    /// Sets header `name` to `value`, replacing every case variant of the name;
    /// the name is written in lowercase.
    fn set(&mut self, name: &str, value: String);
    /// Removes header `name` in every case variant.
    fn remove(&mut self, name: &str);
}

/// For `HeaderMap` (whose names are always lowercase): [`Carrier::get`] joins
/// repeated headers with `,` (non-UTF-8 bytes are replaced by U+FFFD), and
/// [`Carrier::set`] silently does nothing if the name or value is not a valid
/// header (values written by this module always are).
impl Carrier for http::HeaderMap {
    fn get(&self, name: &str) -> Option<String> {
        let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let mut values = self
            .get_all(&name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let first = values.next()?;
        Some(values.fold(first, |mut acc, v| {
            acc.push(',');
            acc.push_str(&v);
            acc
        }))
    }

    fn set(&mut self, name: &str, value: String) {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            return;
        };
        self.insert(name, value);
    }

    fn remove(&mut self, name: &str) {
        if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            http::HeaderMap::remove(self, name);
        }
    }
}

/// For a `HashMap`: an exact match wins, else the lexicographically smallest
/// key equal to `name` ignoring ASCII case (so the choice is deterministic).
impl<S: BuildHasher> Carrier for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = HashMap::get(self, name) {
            return Some(v.clone());
        }
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, v)| v.clone())
    }

    fn set(&mut self, name: &str, value: String) {
        Carrier::remove(self, name);
        self.insert(name.to_ascii_lowercase(), value);
    }

    fn remove(&mut self, name: &str) {
        self.retain(|k, _| !k.eq_ignore_ascii_case(name));
    }
}

/// For a `BTreeMap`: an exact match wins, else the first (smallest) key equal to
/// `name` ignoring ASCII case.
impl Carrier for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = BTreeMap::get(self, name) {
            return Some(v.clone());
        }
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn set(&mut self, name: &str, value: String) {
        Carrier::remove(self, name);
        self.insert(name.to_ascii_lowercase(), value);
    }

    fn remove(&mut self, name: &str) {
        self.retain(|k, _| !k.eq_ignore_ascii_case(name));
    }
}

/// Reads the trace context from inbound headers (Python's
/// `extract_trace_context`). Returns `None` unless `traceparent` is present and
/// valid per [`parse_traceparent`]. `baggage` and `tracestate` are returned raw
/// (empty values count as absent).
pub fn extract<C: Carrier + ?Sized>(carrier: &C) -> Option<TraceContext> {
    let traceparent = parse_traceparent(&carrier.get(TRACEPARENT_HEADER)?)?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    Some(TraceContext {
        traceparent: traceparent.to_string(),
        baggage: non_empty(carrier.get(BAGGAGE_HEADER)),
        tracestate: non_empty(carrier.get(TRACESTATE_HEADER)),
    })
}

/// Writes outbound trace headers (Python's `Span.inject`):
///
/// * `traceparent: 00-<trace_id>-<span_id>-<flags>`, where `flags` falls back to
///   `01` unless it is 2 lowercase hex chars (pass the inbound flags for traces
///   that came from W3C);
/// * `baggage`: the carrier's existing baggage merged by [`merge_baggage`] with
///   `braintrust.parent=<braintrust_parent>` (`None` adds no member but still
///   drops a stale `braintrust.parent`); the header is removed if the result is
///   empty;
/// * both names lowercase, replacing any case variants already present;
///   `tracestate` and all other headers are left untouched.
///
/// Does nothing at all unless `trace_id` and `span_id` are valid W3C ids
/// (lowercase hex, non-zero): legacy UUID ids cannot be written as W3C.
pub fn inject_into<C: Carrier + ?Sized>(
    carrier: &mut C,
    trace_id: &str,
    span_id: &str,
    flags: &str,
    braintrust_parent: Option<&str>,
) {
    if !is_w3c_trace_id(trace_id) || !is_w3c_span_id(span_id) {
        return;
    }
    let existing = carrier.get(BAGGAGE_HEADER);
    let baggage = merge_baggage(existing.as_deref(), braintrust_parent.unwrap_or(""));
    carrier.set(
        TRACEPARENT_HEADER,
        format_traceparent(trace_id, span_id, flags),
    );
    if baggage.is_empty() {
        carrier.remove(BAGGAGE_HEADER);
    } else {
        carrier.set(BAGGAGE_HEADER, baggage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_edge_cases() {
        let tp = format!("00-{TRACE}-{SPAN}-01");
        assert!(parse_traceparent(&format!("  {tp}\t")).is_some());
        assert!(parse_traceparent(&format!("{tp}-extra")).is_none());
        assert!(parse_traceparent(&tp[..54]).is_none());
        assert!(parse_traceparent(&format!("00-{TRACE}-{SPAN}-0g")).is_none());
        assert!(parse_traceparent(&format!("00-{TRACE}-{SPAN}-0A")).is_none());
        assert!(parse_traceparent(&format!("00_{TRACE}-{SPAN}-01")).is_none());
        assert!(parse_traceparent("").is_none());
        assert!(parse_traceparent(&"é".repeat(30)).is_none());
        // Multi-byte chars at the delimiter positions must not panic.
        let weird = format!("00-{}é{}-01", &TRACE[..31], &SPAN[..15]);
        assert!(parse_traceparent(&weird).is_none());
        let parsed = parse_traceparent(&format!("00-{TRACE}-{SPAN}-02")).unwrap();
        assert!(!parsed.sampled());
        assert_eq!(parsed.to_string(), format!("00-{TRACE}-{SPAN}-02"));
    }

    #[test]
    fn future_versions_parse_their_known_fields() {
        let v00 = format!("00-{TRACE}-{SPAN}-01");
        // A higher version, alone or with fields it added after a `-`.
        for tp in [
            format!("01-{TRACE}-{SPAN}-01"),
            format!("cc-{TRACE}-{SPAN}-01-extra"),
            format!("fe-{TRACE}-{SPAN}-01-a-b-c"),
            format!(" 01-{TRACE}-{SPAN}-01- "),
        ] {
            let parsed = parse_traceparent(&tp).unwrap_or_else(|| panic!("{tp}"));
            assert_eq!(parsed.to_string(), v00, "{tp}");
        }
        // What stays invalid: version ff, 00 with extra text, a higher version
        // whose flags are not followed by `-`, non-hex or uppercase versions,
        // and too-short values.
        for tp in [
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("01-{TRACE}-{SPAN}-01extra"),
            format!("0g-{TRACE}-{SPAN}-01"),
            format!("0A-{TRACE}-{SPAN}-01"),
            format!("01-{TRACE}-{SPAN}-0"),
            format!("01-{TRACE}-{}-01", "0".repeat(16)),
        ] {
            assert_eq!(parse_traceparent(&tp), None, "{tp}");
        }
    }

    #[test]
    fn format_traceparent_flag_fallback() {
        assert_eq!(
            format_traceparent(TRACE, SPAN, "00"),
            format!("00-{TRACE}-{SPAN}-00")
        );
        assert_eq!(
            format_traceparent(TRACE, SPAN, "zz"),
            format!("00-{TRACE}-{SPAN}-01")
        );
        assert_eq!(
            format_traceparent(TRACE, SPAN, "1"),
            format!("00-{TRACE}-{SPAN}-01")
        );
    }

    #[test]
    fn baggage_value_codec() {
        assert_eq!(encode_baggage_value("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(
            encode_baggage_value("a:b c+d,e;f=g%/"),
            "a%3Ab%20c%2Bd%2Ce%3Bf%3Dg%25%2F"
        );
        assert_eq!(encode_baggage_value("😀"), "%F0%9F%98%80");
        assert_eq!(decode_baggage_value("%F0%9F%98%80"), "😀");
        assert_eq!(decode_baggage_value("a+b%20c%2bd"), "a+b c+d");
        assert_eq!(decode_baggage_value("100%"), "100%");
        assert_eq!(decode_baggage_value("%zz%4"), "%zz%4");
        assert_eq!(decode_baggage_value("%4"), "%4");
        assert_eq!(decode_baggage_value("%FF"), "\u{fffd}");
        assert_eq!(decode_baggage_value("é%C3%A9"), "éé");
        for s in ["project_name:Café a,b c+d", "", "%", "日本語 ;=,"] {
            assert_eq!(decode_baggage_value(&encode_baggage_value(s)), s);
        }
    }

    #[test]
    fn merge_baggage_limits() {
        // Member limit: 63 relayed + ours.
        let many: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
        let out = merge_baggage(Some(&many.join(",")), "project_id:p");
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), MAX_BAGGAGE_MEMBERS);
        assert_eq!(members[62], "k62=v");
        assert_eq!(members[63], "braintrust.parent=project_id%3Ap");
        // Byte limit: whole members only, ours always kept.
        let big: Vec<String> = (0..10)
            .map(|i| format!("k{i}={}", "x".repeat(1000)))
            .collect();
        let out = merge_baggage(Some(&big.join(",")), "project_id:p");
        assert!(out.len() <= MAX_BAGGAGE_BYTES);
        assert!(out.ends_with(",braintrust.parent=project_id%3Ap"));
        for m in out.split(',') {
            assert!(m.starts_with("braintrust.parent=") || m.len() == 1003);
        }
        // Exactly at the limit is allowed.
        let ours = "braintrust.parent=project_id%3Ap";
        let filler = format!("k={}", "x".repeat(MAX_BAGGAGE_BYTES - ours.len() - 1 - 2));
        let out = merge_baggage(Some(&filler), "project_id:p");
        assert_eq!(out.len(), MAX_BAGGAGE_BYTES);
        let filler = format!("k={}", "x".repeat(MAX_BAGGAGE_BYTES - ours.len() - 2));
        assert_eq!(merge_baggage(Some(&filler), "project_id:p"), ours);
        // A first member that does not fit stops relaying (later ones too).
        let out = merge_baggage(Some(&format!("{filler},a=b")), "project_id:p");
        assert_eq!(out, ours);
    }

    #[test]
    fn merge_baggage_normalization() {
        assert_eq!(merge_baggage(None, ""), "");
        assert_eq!(merge_baggage(Some(" , novalue ,a=b , "), ""), "a=b");
        assert_eq!(
            merge_baggage(
                Some("braintrust%2Eparent=x;p, braintrust.parent =y,k=v"),
                ""
            ),
            "k=v"
        );
        assert_eq!(
            merge_baggage(Some("k=v;braintrust.parent=z"), "x"),
            "k=v;braintrust.parent=z,braintrust.parent=x"
        );
    }

    #[test]
    fn parse_baggage_rules() {
        let parsed = parse_baggage(" a = 1 ;p=q, b=%20x ,a=2,=empty,novalue, c=");
        assert_eq!(
            parsed,
            vec![
                ("a".to_string(), "2".to_string()),
                ("b".to_string(), " x".to_string()),
                ("c".to_string(), String::new()),
            ]
        );
        // Oversized input is capped on member boundaries.
        let many: Vec<String> = (0..100).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_baggage(&many.join(",")).len(), MAX_BAGGAGE_MEMBERS);
        let huge = format!("a={},braintrust.parent=x", "y".repeat(9000));
        assert_eq!(baggage_braintrust_parent(&huge), None);
        assert_eq!(cap_baggage(&huge), "");
        assert_eq!(
            baggage_braintrust_parent("braintrust.parent=experiment_id%3Ae"),
            Some("experiment_id:e".into())
        );
    }

    #[test]
    fn braintrust_parent_values() {
        for v in ["project_id:p", "project_name:a:b c", "experiment_id:e"] {
            assert_eq!(BraintrustParent::parse(v).unwrap().to_string(), v);
        }
        assert_eq!(
            BraintrustParent::parse("project_name:a:b"),
            Some(BraintrustParent::ProjectName("a:b".into()))
        );
        assert!(BraintrustParent::parse("project_id:").is_none());
        assert!(BraintrustParent::parse("dataset_id:d").is_none());
        assert!(BraintrustParent::parse("nocolon").is_none());
    }

    #[test]
    fn header_map_carrier() {
        let mut h = http::HeaderMap::new();
        h.append("Baggage", http::HeaderValue::from_static("a=1"));
        h.append("baggage", http::HeaderValue::from_static("b=2"));
        h.insert("TraceState", http::HeaderValue::from_static("v=1"));
        assert_eq!(Carrier::get(&h, "BAGGAGE").as_deref(), Some("a=1,b=2"));
        inject_into(&mut h, TRACE, SPAN, "00", Some("experiment_id:e"));
        assert_eq!(h.get_all("baggage").iter().count(), 1);
        assert_eq!(h["baggage"], "a=1,b=2,braintrust.parent=experiment_id%3Ae");
        assert_eq!(h["traceparent"], format!("00-{TRACE}-{SPAN}-00").as_str());
        assert_eq!(h["tracestate"], "v=1");
        let ctx = extract(&h).unwrap();
        assert_eq!(ctx.tracestate.as_deref(), Some("v=1"));
        assert_eq!(ctx.braintrust_parent().as_deref(), Some("experiment_id:e"));
        Carrier::remove(&mut h, "TRACEPARENT");
        assert!(extract(&h).is_none());
        // Invalid names/values are ignored, not panics.
        Carrier::set(&mut h, "bad name", "x".into());
        Carrier::set(&mut h, "x-ok", "bad\nvalue".into());
        assert!(Carrier::get(&h, "x-ok").is_none());
        assert!(Carrier::get(&h, "bad name").is_none());
    }

    #[test]
    fn map_carriers_are_case_insensitive() {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        m.insert("TRACEPARENT".into(), format!("00-{TRACE}-{SPAN}-01"));
        m.insert("Traceparent".into(), "garbage".into());
        assert_eq!(
            Carrier::get(&m, "traceparent").unwrap(),
            format!("00-{TRACE}-{SPAN}-01")
        );
        m.insert("traceparent".into(), "exact".into());
        assert_eq!(Carrier::get(&m, "traceparent").unwrap(), "exact");
        inject_into(&mut m, TRACE, SPAN, "01", None);
        assert_eq!(m.len(), 1);
        assert_eq!(m["traceparent"], format!("00-{TRACE}-{SPAN}-01"));

        let mut h: HashMap<String, String> = HashMap::new();
        h.insert("BAGGAGE".into(), "braintrust.parent=stale".into());
        h.insert("tracestate".into(), "x=y".into());
        inject_into(&mut h, TRACE, SPAN, "01", None);
        assert!(!h.keys().any(|k| k.eq_ignore_ascii_case("baggage")));
        assert_eq!(h["tracestate"], "x=y");
        let ctx = extract(&h).unwrap();
        assert_eq!(ctx.baggage, None);
        assert_eq!(ctx.trace_parent().unwrap().trace_id, TRACE);
    }

    #[test]
    fn inject_skips_non_w3c_ids() {
        let mut h: HashMap<String, String> = HashMap::new();
        h.insert("baggage".into(), "a=b".into());
        let uuid = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
        inject_into(&mut h, uuid, uuid, "01", Some("project_id:p"));
        inject_into(&mut h, &"0".repeat(32), SPAN, "01", Some("project_id:p"));
        inject_into(&mut h, TRACE, &"0".repeat(16), "01", Some("project_id:p"));
        inject_into(
            &mut h,
            &TRACE.to_uppercase(),
            SPAN,
            "01",
            Some("project_id:p"),
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h["baggage"], "a=b");
    }

    #[test]
    fn extract_ignores_empty_optional_headers() {
        let mut h: HashMap<String, String> = HashMap::new();
        h.insert("traceparent".into(), format!(" 00-{TRACE}-{SPAN}-01 "));
        h.insert("baggage".into(), String::new());
        h.insert("tracestate".into(), String::new());
        let ctx = extract(&h).unwrap();
        assert_eq!(ctx.traceparent, format!("00-{TRACE}-{SPAN}-01"));
        assert_eq!((ctx.baggage, ctx.tracestate), (None, None));
        assert!(extract(&HashMap::<String, String>::new()).is_none());
    }
}
