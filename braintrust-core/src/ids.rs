//! Span, trace and row identifiers. They are kept as numbers on the hot path
//! and formatted to text only on the logger thread.

use std::fmt;
use std::sync::Arc;

/// One identifier as it appears on the wire.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Id {
    /// 8 random bytes, written as 16 lowercase hex chars (OpenTelemetry span id).
    Hex64(u64),
    /// 16 random bytes, written as 32 lowercase hex chars (OpenTelemetry trace id).
    Hex128(U128),
    /// A UUID, written in the dashed lowercase form.
    Uuid(U128),
    /// Any other string, e.g. one given by the user or read from a slug.
    Str(Arc<str>),
}

/// A 128-bit value stored as two words: 8-byte aligned, so an [`Id`] takes
/// 24 bytes instead of the 32 a 16-byte-aligned `u128` needs (every span
/// holds three).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct U128([u64; 2]);

impl U128 {
    pub(crate) const fn get(self) -> u128 {
        ((self.0[0] as u128) << 64) | self.0[1] as u128
    }
}

impl From<u128> for U128 {
    fn from(v: u128) -> Self {
        U128([(v >> 64) as u64, v as u64])
    }
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
            Id::Hex128(nonzero128().into())
        }
    }
    /// A new random version-4 UUID (row ids).
    pub(crate) fn new_uuid() -> Id {
        let mut v = fastrand::u128(..);
        v = (v & !(0xF000u128 << 64)) | (0x4000u128 << 64); // version 4
        v = (v & !(0xC000u128 << 48)) | (0x8000u128 << 48); // RFC 4122 variant
        Id::Uuid(v.into())
    }
    /// Parses text into the most compact form that formats back to the same text.
    pub(crate) fn parse(s: &str) -> Id {
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if s.len() == 16 && lower_hex(s) {
            let mut b = [0u8; 8];
            if hex::decode_to_slice(s, &mut b).is_ok() {
                return Id::Hex64(u64::from_be_bytes(b));
            }
        }
        if s.len() == 32 && lower_hex(s) {
            let mut b = [0u8; 16];
            if hex::decode_to_slice(s, &mut b).is_ok() {
                return Id::Hex128(u128::from_be_bytes(b).into());
            }
        }
        if s.len() == 36 {
            if let Ok(u) = uuid::Uuid::try_parse(s) {
                if u.hyphenated().to_string() == s {
                    return Id::Uuid(u.as_u128().into());
                }
            }
        }
        Id::Str(Arc::from(s))
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

impl Id {
    /// The wire text into a stack buffer (no formatting machinery: ids are
    /// formatted once per row on the logger thread); 0 for [`Id::Str`],
    /// which is written as it is. Hex is written a byte (two digits) per
    /// table lookup: this runs three times per row, and the `hex` and
    /// `uuid` encoders took three times the instructions (BENCHMARKS.md,
    /// fifth pass). A test checks both forms against those crates.
    pub(crate) fn encode(&self, buf: &mut [u8; 36]) -> usize {
        match self {
            Id::Hex64(v) => {
                hex_bytes(&v.to_be_bytes(), &mut buf[..16]);
                16
            }
            Id::Hex128(v) => {
                hex_bytes(&v.get().to_be_bytes(), &mut buf[..32]);
                32
            }
            Id::Uuid(v) => {
                // 8-4-4-4-12 digits: bytes 0..4, 4..6, 6..8, 8..10, 10..16.
                let b = v.get().to_be_bytes();
                hex_bytes(&b[..4], &mut buf[..8]);
                buf[8] = b'-';
                hex_bytes(&b[4..6], &mut buf[9..13]);
                buf[13] = b'-';
                hex_bytes(&b[6..8], &mut buf[14..18]);
                buf[18] = b'-';
                hex_bytes(&b[8..10], &mut buf[19..23]);
                buf[23] = b'-';
                hex_bytes(&b[10..], &mut buf[24..36]);
                36
            }
            Id::Str(_) => 0,
        }
    }
}

/// Two lowercase hex digits per byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};

/// `bytes` as lowercase hex text.
pub(crate) fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_bytes(bytes, &mut out);
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex into `out` (twice their length).
fn hex_bytes(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Str(s) => f.write_str(s),
            _ => {
                let mut buf = [0u8; 36];
                let n = self.encode(&mut buf);
                // Only ASCII hex digits and dashes were written.
                f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
            }
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

    /// The table encoder writes what the `hex` and `uuid` crates write.
    #[test]
    fn encode_matches_the_hex_and_uuid_crates() {
        let mut values: Vec<u128> =
            vec![0, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210];
        values.extend((0..1000).map(|_| fastrand::u128(..)));
        for v in values {
            let mut buf = [0u8; 36];
            let hi = (v >> 64) as u64;
            let n = Id::Hex64(hi).encode(&mut buf);
            assert_eq!(&buf[..n], hex::encode(hi.to_be_bytes()).as_bytes());
            let n = Id::Hex128(v.into()).encode(&mut buf);
            assert_eq!(&buf[..n], hex::encode(v.to_be_bytes()).as_bytes());
            let n = Id::Uuid(v.into()).encode(&mut buf);
            assert_eq!(
                &buf[..n],
                uuid::Uuid::from_u128(v).hyphenated().to_string().as_bytes()
            );
        }
    }

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
    fn fast_formatting_matches_the_reference_formats() {
        for _ in 0..1000 {
            let (a, b) = (fastrand::u64(..), fastrand::u128(..));
            assert_eq!(Id::Hex64(a).to_string(), format!("{a:016x}"));
            assert_eq!(Id::Hex128(b.into()).to_string(), format!("{b:032x}"));
            assert_eq!(
                Id::Uuid(b.into()).to_string(),
                uuid::Uuid::from_u128(b).hyphenated().to_string()
            );
        }
        for (v, s) in [
            (0u128, "00000000-0000-0000-0000-000000000000"),
            (u128::MAX, "ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ] {
            assert_eq!(Id::Uuid(v.into()).to_string(), s);
        }
        assert_eq!(Id::Hex64(1).to_string(), "0000000000000001");
        assert_eq!(Id::Str("x-y".into()).to_string(), "x-y");
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
