//! A small server-sent-events decoder (the WHATWG rules OpenAI streams use)
//! and the byte stream it reads, with an idle timeout between chunks.
//!
//! As WHATWG's "interpreting an event stream" says, and as the official
//! OpenAI SDKs decode: one leading UTF-8 BOM is stripped, an event is
//! dispatched only by the blank line that ends it (an event cut off by the
//! end of the body is discarded), and `id`, `retry` and unknown fields are
//! ignored (nothing here reconnects).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;

use crate::error::OpenAiError;

/// One dispatched event: its `event:` name (if any) and its `data:` lines
/// joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental decoder: feed bytes, take complete events. Handles a leading
/// BOM, `\n`, `\r\n` and `\r` line ends, comments, multi-line data and
/// UTF-8 split across chunks. Bytes after the last blank line are an
/// incomplete event: never dispatched.
#[derive(Default)]
pub(crate) struct SseDecoder {
    buf: BytesMut,
    /// The start of the stream was checked for a BOM (and it was stripped).
    bom_checked: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The last byte seen was a `\r` ending a line; a following `\n` belongs to it.
    after_cr: bool,
}

impl SseDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event in what was pushed, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        if !self.bom_checked {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return None; // maybe a BOM split across chunks: wait for more
            }
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
            }
            self.bom_checked = true;
        }
        loop {
            if self.after_cr && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
                self.after_cr = false;
            }
            let pos = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let line = self.buf.split_to(pos);
            let end = self.buf[0];
            self.buf.advance(1);
            if end == b'\r' {
                self.after_cr = true;
            }
            if let Some(ev) = self.line(&line) {
                return Some(ev);
            }
        }
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            _ => {} // id, retry and unknown fields do not matter here
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The events of one streaming response body. Fails with
/// [`OpenAiError::Timeout`] when no bytes arrive for `idle`.
pub(crate) struct EventStream {
    body: ByteStream,
    decoder: SseDecoder,
    idle: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer counts from the last bytes received.
    armed: bool,
    ended: bool,
}

impl EventStream {
    pub fn new(response: reqwest::Response, idle: Option<Duration>) -> EventStream {
        EventStream {
            body: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::default(),
            idle,
            timer: None,
            armed: false,
            ended: false,
        }
    }
}

impl Stream for EventStream {
    type Item = Result<SseEvent, OpenAiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.decoder.next_event() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.ended {
                // What is left is an event without its blank line: discarded.
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    this.armed = false;
                    this.decoder.push(&bytes);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.decoder = SseDecoder::default();
                    let err = if e.is_timeout() {
                        OpenAiError::Timeout(this.idle.unwrap_or_default())
                    } else {
                        OpenAiError::Stream {
                            message: braintrust_core::error_string(&e),
                            error: None,
                        }
                    };
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    let Some(idle) = this.idle else {
                        return Poll::Pending;
                    };
                    let deadline = tokio::time::Instant::now() + idle;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if !std::mem::replace(&mut this.armed, true) {
                        // Bytes arrived since the timer was set: restart it.
                        timer.as_mut().reset(deadline);
                    }
                    return match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            this.ended = true;
                            this.decoder = SseDecoder::default();
                            Poll::Ready(Some(Err(OpenAiError::Timeout(idle))))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for chunk in input {
            d.push(chunk);
            while let Some(e) = d.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn line_endings_comments_and_multiline() {
        let got = all(&[
            b": keepalive\n\ndata: a\r\ndata:b\r\rev",
            b"ent: x\ndata: {\"k\":1}\n\n",
        ]);
        assert_eq!(got, vec![ev(None, "a\nb"), ev(Some("x"), "{\"k\":1}")]);
    }

    #[test]
    fn split_crlf_and_utf8_across_chunks() {
        let text = "data: héllo\r\n\r\n".as_bytes();
        let (a, b) = text.split_at(8); // inside the two-byte 'é'
        let (b, c) = b.split_at(b.len() - 1); // between \r and \n
        assert_eq!(all(&[a, b, c]), vec![ev(None, "héllo")]);
    }

    #[test]
    fn unterminated_last_event_is_discarded() {
        assert_eq!(all(&[b"data: [DONE]"]), vec![]);
        assert_eq!(all(&[b"data: [DONE]\n"]), vec![]);
        assert_eq!(all(&[b"event: e\n"]), vec![]);
        assert_eq!(all(&[b"data: a\n\ndata: cut off"]), vec![ev(None, "a")]);
    }

    #[test]
    fn one_leading_bom_is_stripped() {
        assert_eq!(all(&[b"\xEF\xBB\xBFdata: a\n\n"]), vec![ev(None, "a")]);
        // Split across chunks.
        assert_eq!(
            all(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]),
            vec![ev(None, "a")]
        );
        // Only one, and only at the start: a second BOM is part of the
        // first line's field name, so that line is an unknown field.
        assert_eq!(
            all(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"]),
            vec![ev(None, "b")]
        );
        assert_eq!(
            all(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]),
            vec![ev(None, "a")]
        );
    }
}
