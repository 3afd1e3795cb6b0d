//! A body rewritten one gRPC message at a time, as the messages arrive: what
//! the [`Codecs`](crate::codecs) layer puts around the request and the reply
//! of a streaming method, so that each JSON message becomes protobuf (and
//! each reply message JSON) without waiting for the end of the stream.
//!
//! A [`Messages`] body splits the inner body's data into length-prefixed
//! messages (a message may span data frames, a frame may hold several),
//! passes each whole message (its 5-byte prefix included) through a
//! [`Rewrite`], and passes trailers on unchanged. It can also stop after the
//! first message: go-micro's clients never half-close a server-streaming
//! call, and tonic reads a server-streaming request to its end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

/// What happens to each whole message (prefix included).
pub(crate) type Rewrite = Box<dyn FnMut(Bytes) -> Result<Bytes, Status> + Send>;

/// Where a failed rewrite ends up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A request body: the body fails with the status, which the method's
    /// decoder reports.
    BodyError,
    /// A reply body: the call ends with trailers carrying the status.
    Trailers,
}

/// See the [module docs](self).
pub(crate) struct Messages {
    inner: Body,
    rewrite: Rewrite,
    failure: Failure,
    /// Largest message accepted (prefix excluded).
    max_message: usize,
    /// Stop after this many messages (`None`: read to the end).
    limit: Option<usize>,
    seen: usize,
    buffer: BytesMut,
    /// Frames ready to hand out, in order.
    ready: std::collections::VecDeque<Result<Frame<Bytes>, Status>>,
    done: bool,
}

impl Messages {
    pub(crate) fn new(inner: Body, rewrite: Rewrite, failure: Failure, max_message: usize) -> Self {
        Messages {
            inner,
            rewrite,
            failure,
            max_message,
            limit: None,
            seen: 0,
            buffer: BytesMut::new(),
            ready: Default::default(),
            done: false,
        }
    }

    /// Ends the body after the first message.
    pub(crate) fn first_only(mut self) -> Self {
        self.limit = Some(1);
        self
    }

    fn fail(&mut self, status: Status) {
        self.done = true;
        match self.failure {
            Failure::BodyError => self.ready.push_back(Err(status)),
            Failure::Trailers => {
                let mut trailers = HeaderMap::new();
                // A status that cannot be written as headers (it cannot
                // happen for the codes and ASCII texts made here) still
                // ends the stream as an error.
                let status = match status.add_header(&mut trailers) {
                    Ok(()) => {
                        self.ready.push_back(Ok(Frame::trailers(trailers)));
                        return;
                    }
                    Err(status) => status,
                };
                self.ready.push_back(Err(status));
            }
        }
    }

    /// Takes every whole message off the buffer, rewritten, as one data frame.
    fn drain(&mut self) {
        let mut out = BytesMut::new();
        while self.buffer.len() >= 5 && !self.done {
            let len = u32::from_be_bytes([
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
                self.buffer[4],
            ]) as usize;
            if len > self.max_message {
                self.flush(&mut out);
                self.fail(Status::resource_exhausted(format!(
                    "a message of {len} bytes is larger than the limit of {} bytes",
                    self.max_message
                )));
                return;
            }
            if self.buffer.len() < 5 + len {
                break;
            }
            let message = self.buffer.split_to(5 + len).freeze();
            match (self.rewrite)(message) {
                Ok(rewritten) => out.extend_from_slice(&rewritten),
                Err(status) => {
                    self.flush(&mut out);
                    self.fail(status);
                    return;
                }
            }
            self.seen += 1;
            if self.limit.is_some_and(|limit| self.seen >= limit) {
                self.flush(&mut out);
                self.done = true;
                return;
            }
        }
        self.flush(&mut out);
    }

    fn flush(&mut self, out: &mut BytesMut) {
        if !out.is_empty() {
            self.ready
                .push_back(Ok(Frame::data(std::mem::take(out).freeze())));
        }
    }
}

impl HttpBody for Messages {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(frame));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.done = true;
                    if !this.buffer.is_empty() {
                        this.fail(Status::invalid_argument("truncated gRPC message"));
                    }
                }
                Some(Err(status)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            this.buffer.extend_from_slice(chunk);
                            data.advance(n);
                        }
                        this.drain();
                    }
                    // Trailers (or another kind of frame): passed on.
                    Err(frame) => {
                        if !this.buffer.is_empty() {
                            this.fail(Status::invalid_argument("truncated gRPC message"));
                        } else {
                            this.ready.push_back(Ok(frame));
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// A body of the given data frames then trailers `x: 1`.
    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let mut trailers = HeaderMap::new();
        trailers.insert("x", http::HeaderValue::from_static("1"));
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))))
            .chain(std::iter::once(Ok(Frame::trailers(trailers))));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    fn upper() -> Rewrite {
        Box::new(|message: Bytes| {
            if &message[5..] == b"bad" {
                return Err(Status::invalid_argument("bad message"));
            }
            Ok(Bytes::from(framed(&message[5..].to_ascii_uppercase())))
        })
    }

    async fn collect(body: Messages) -> (Vec<u8>, Option<HeaderMap>, Option<Status>) {
        let mut body = std::pin::pin!(body);
        let (mut data, mut trailers, mut error) = (Vec::new(), None, None);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Err(status) => error = Some(status),
            }
        }
        (data, trailers, error)
    }

    #[tokio::test]
    async fn messages_split_across_and_within_frames_are_rewritten_in_order() {
        let mut all = framed(b"ab");
        all.extend(framed(b"cd"));
        all.extend(framed(b"ef"));
        // "ab" and half of "cd" in one frame, the rest in another.
        let (first, second) = all.split_at(10);
        let body = body(vec![first.to_vec(), second.to_vec()]);
        let (data, trailers, error) =
            collect(Messages::new(body, upper(), Failure::BodyError, 100)).await;
        let mut expected = framed(b"AB");
        expected.extend(framed(b"CD"));
        expected.extend(framed(b"EF"));
        assert_eq!(data, expected);
        assert_eq!(trailers.expect("trailers")["x"], "1");
        assert!(error.is_none());
    }

    #[tokio::test]
    async fn first_only_ends_after_one_message() {
        let mut all = framed(b"ab");
        all.extend(framed(b"cd"));
        let body = body(vec![all]);
        let (data, trailers, _) =
            collect(Messages::new(body, upper(), Failure::BodyError, 100).first_only()).await;
        assert_eq!(data, framed(b"AB"));
        assert!(trailers.is_none());
    }

    #[tokio::test]
    async fn failures_are_body_errors_or_trailers() {
        let mut all = framed(b"ab");
        all.extend(framed(b"bad"));
        all.extend(framed(b"cd"));
        let (data, _, error) = collect(Messages::new(
            body(vec![all.clone()]),
            upper(),
            Failure::BodyError,
            100,
        ))
        .await;
        assert_eq!(data, framed(b"AB"));
        assert_eq!(error.expect("error").code(), tonic::Code::InvalidArgument);

        let (data, trailers, error) = collect(Messages::new(
            body(vec![all]),
            upper(),
            Failure::Trailers,
            100,
        ))
        .await;
        assert_eq!(data, framed(b"AB"));
        assert!(error.is_none());
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "3");
        assert!(trailers.get("x").is_none());
    }

    #[tokio::test]
    async fn truncated_and_oversized_messages_are_errors() {
        let (_, _, error) = collect(Messages::new(
            body(vec![framed(b"abc")[..6].to_vec()]),
            upper(),
            Failure::BodyError,
            100,
        ))
        .await;
        assert_eq!(error.expect("error").code(), tonic::Code::InvalidArgument);

        // The announced length alone is refused: nothing is buffered for it.
        let (_, _, error) = collect(Messages::new(
            body(vec![vec![0, 0xff, 0xff, 0xff, 0xff]]),
            upper(),
            Failure::BodyError,
            100,
        ))
        .await;
        assert_eq!(error.expect("error").code(), tonic::Code::ResourceExhausted);
    }
}
