//! The SSE fuzz target's check as a short property test (run in CI; the
//! `fuzz/` directory runs the same check under cargo-fuzz).

#[path = "../../fuzz/checks/sse.rs"]
mod checks;

use proptest::prelude::*;

/// Bytes that look like an event stream: field lines, comments, blank lines,
/// every line ending, and split UTF-8.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: delta".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just("é✓".as_bytes().to_vec()),
        Just(vec![0xe2, 0x9c]),
        "[a-z{}\":, ]{0,12}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sse_any_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        checks::sse(&data);
    }

    #[test]
    fn sse_event_streams(step in any::<u8>(), body in sse_like()) {
        let mut data = vec![step];
        data.extend(body);
        checks::sse(&data);
    }
}

#[test]
fn sse_known_stream() {
    let events = braintrust_openai::decode_sse_chunks([
        &b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: [DONE]\n\ndata: cut off"[..],
    ]);
    // WHATWG: the last event, not terminated by a blank line, is discarded.
    assert_eq!(
        events,
        vec![
            (Some("a".to_string()), "1\n2".to_string()),
            (None, "[DONE]".to_string())
        ]
    );
}
