//! Span, trace and row identifiers. They are kept as numbers on the hot path
//! and formatted to text only on the logger thread.

use std::fmt;
use std::sync::Arc;

/// One identifier as it appears on the wire.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// 8 random bytes, written as 16 lowercase hex chars (OpenTelemetry span id).
    Hex64(u64),
    /// 16 random bytes, written as 32 lowercase hex chars (OpenTelemetry trace id).
    Hex128(u128),
    /// A UUID, written in the dashed lowercase form.
    Uuid(u128),
    /// Any other string, e.g. one given by the user or read from a slug.
    Str(Arc<str>),
}

impl Id {
    /// A new random span id in the configured format.
    pub(crate) fn new_span_id(legacy: bool) -> Id {
        if legacy {
            Id::new_uuid()
        } else {
            Id::Hex64(nonzero64())
        }
    }
    /// A new random trace id in the configured format.
    pub(crate) fn new_trace_id(legacy: bool) -> Id {
        if legacy {
            Id::new_uuid()
        } else {
            Id::Hex128(nonzero128())
        }
    }
    /// A new random version-4 UUID (row ids).
    pub(crate) fn new_uuid() -> Id {
        let mut v = fastrand::u128(..);
        v = (v & !(0xF000u128 << 64)) | (0x4000u128 << 64); // version 4
        v = (v & !(0xC000u128 << 48)) | (0x8000u128 << 48); // RFC 4122 variant
        Id::Uuid(v)
    }
    /// Parses text into the most compact form that formats back to the same text.
    pub fn parse(s: &str) -> Id {
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if s.len() == 16 && lower_hex(s) {
            if let Ok(v) = u64::from_str_radix(s, 16) {
                return Id::Hex64(v);
            }
        }
        if s.len() == 32 && lower_hex(s) {
            if let Ok(v) = u128::from_str_radix(s, 16) {
                return Id::Hex128(v);
            }
        }
        if s.len() == 36 {
            if let Ok(u) = uuid::Uuid::try_parse(s) {
                if u.hyphenated().to_string() == s {
                    return Id::Uuid(u.as_u128());
                }
            }
        }
        Id::Str(Arc::from(s))
    }
    /// True for the OpenTelemetry hex forms (these export as V4 and inject as W3C).
    pub fn is_hex(&self) -> bool {
        match self {
            Id::Hex64(_) | Id::Hex128(_) => true,
            Id::Uuid(_) => false,
            Id::Str(s) => {
                (s.len() == 16 || s.len() == 32) && s.bytes().all(|b| b.is_ascii_hexdigit())
            }
        }
    }
}

fn nonzero64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

fn nonzero128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Hex64(v) => write!(f, "{v:016x}"),
            Id::Hex128(v) => write!(f, "{v:032x}"),
            Id::Uuid(v) => write!(f, "{}", uuid::Uuid::from_u128(*v).hyphenated()),
            Id::Str(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_spec() {
        let s = Id::new_span_id(false).to_string();
        assert_eq!(s.len(), 16);
        let t = Id::new_trace_id(false).to_string();
        assert_eq!(t.len(), 32);
        let u = Id::new_uuid().to_string();
        let parsed = uuid::Uuid::parse_str(&u).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(Id::new_span_id(true).to_string().len(), 36);
    }

    #[test]
    fn parse_round_trips() {
        for s in [
            "00f067aa0ba902b7",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "9b2f3c1d-7e4a-4b6c-9d8e-1f2a3b4c5d6e",
            "ABCDEF0123456789",
            "bt-propagation",
        ] {
            assert_eq!(Id::parse(s).to_string(), s);
        }
        assert!(matches!(Id::parse("00f067aa0ba902b7"), Id::Hex64(_)));
        assert!(matches!(Id::parse("ABCDEF0123456789"), Id::Str(_)));
    }
}
