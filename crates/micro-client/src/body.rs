//! Request bodies that can be sent again.
//!
//! A retry needs the request body a second time. Unary (and server-streaming)
//! calls from tonic clients produce their whole body at once, so it is taken
//! without waiting and kept; a body that is still being produced (client
//! streaming) is passed through as it comes and its call is not retried.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;

/// Largest body kept for replay; a bigger one is sent once.
const REPLAY_LIMIT: usize = 4 * 1024 * 1024;

/// A request body, either complete in memory or still streaming.
pub(crate) enum RequestBody {
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    Streaming(Option<Body>),
}

impl RequestBody {
    /// Takes whatever `body` has ready now; completes without waiting.
    pub(crate) fn take(mut body: Body) -> Result<RequestBody, tonic::Status> {
        let mut data = BytesMut::new();
        let mut chunks: VecDeque<Bytes> = VecDeque::new();
        loop {
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => {
                        if data.len() + bytes.len() > REPLAY_LIMIT {
                            chunks.push_back(data.split().freeze());
                            chunks.push_back(bytes);
                            return Ok(RequestBody::Streaming(Some(Body::new(Prefixed {
                                prefix: chunks,
                                rest: body,
                            }))));
                        }
                        data.extend_from_slice(&bytes);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Ok(RequestBody::Complete {
                                data: data.freeze(),
                                trailers: Some(trailers),
                            });
                        }
                    }
                },
                Some(Some(Err(status))) => return Err(status),
                Some(None) => {
                    return Ok(RequestBody::Complete {
                        data: data.freeze(),
                        trailers: None,
                    });
                }
                None => {
                    if !data.is_empty() {
                        chunks.push_back(data.freeze());
                    }
                    return Ok(RequestBody::Streaming(Some(Body::new(Prefixed {
                        prefix: chunks,
                        rest: body,
                    }))));
                }
            }
        }
    }

    /// Whether another attempt can send this body again.
    pub(crate) fn is_replayable(&self) -> bool {
        matches!(self, RequestBody::Complete { .. })
    }

    /// A body for the next attempt: a copy, or the stream itself (once).
    pub(crate) fn for_attempt(&mut self) -> Body {
        match self {
            RequestBody::Complete { data, trailers } => Body::new(Replay {
                data: Some(data.clone()).filter(|d| !d.is_empty()),
                trailers: trailers.clone(),
            }),
            RequestBody::Streaming(body) => body.take().unwrap_or_else(Body::empty),
        }
    }
}

/// A body replayed from memory.
struct Replay {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        if self.trailers.is_none() {
            http_body::SizeHint::with_exact(len)
        } else {
            let mut hint = http_body::SizeHint::new();
            hint.set_lower(len);
            hint
        }
    }
}

/// Frames already taken, then the rest of the stream.
struct Prefixed {
    prefix: VecDeque<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}
