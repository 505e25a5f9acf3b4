//! What the SSE fuzz target checks, shared with the property test that runs
//! in CI (`braintrust-openai/tests/sse_props.rs`): the decoder never panics,
//! and however the body is split into chunks it yields the same events.

use braintrust_openai::decode_sse_chunks;

/// The first byte picks the split points; the rest is the body.
pub fn sse(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = decode_sse_chunks([body]);
    let step = usize::from(step % 16) + 1;
    let split = decode_sse_chunks(body.chunks(step));
    assert_eq!(whole, split, "split every {step} bytes");
    let bytes = decode_sse_chunks(body.chunks(1));
    assert_eq!(whole, bytes, "split every byte");
}
