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
        /// Rare in requests: boxed, to keep every call's future small.
        trailers: Option<Box<HeaderMap>>,
    },
    Streaming(Option<Body>),
}

impl RequestBody {
    /// Takes whatever `body` has ready now; completes without waiting.
    pub(crate) fn take(mut body: Body) -> Result<RequestBody, tonic::Status> {
        // A unary body is usually one frame: it is kept as it is, and only
        // later frames are copied together with it.
        let mut first: Option<Bytes> = None;
        let mut data = BytesMut::new();
        loop {
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => {
                        let held = first.as_ref().map_or(0, Bytes::len) + data.len();
                        if held + bytes.len() > REPLAY_LIMIT {
                            let mut prefix: VecDeque<Bytes> = first.into_iter().collect();
                            if !data.is_empty() {
                                prefix.push_back(data.freeze());
                            }
                            prefix.push_back(bytes);
                            return Ok(RequestBody::Streaming(Some(Body::new(Prefixed {
                                prefix,
                                rest: body,
                            }))));
                        }
                        match &first {
                            None => first = Some(bytes),
                            Some(head) => {
                                if data.is_empty() {
                                    data.extend_from_slice(head);
                                }
                                data.extend_from_slice(&bytes);
                            }
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Ok(RequestBody::Complete {
                                data: joined(first, data),
                                trailers: Some(Box::new(trailers)),
                            });
                        }
                    }
                },
                Some(Some(Err(status))) => return Err(status),
                Some(None) => {
                    return Ok(RequestBody::Complete {
                        data: joined(first, data),
                        trailers: None,
                    });
                }
                None => {
                    let prefix: VecDeque<Bytes> = match (first, data.is_empty()) {
                        (None, _) => VecDeque::new(),
                        (Some(head), true) => VecDeque::from([head]),
                        (Some(_), false) => VecDeque::from([data.freeze()]),
                    };
                    return Ok(RequestBody::Streaming(Some(Body::new(Prefixed {
                        prefix,
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
                trailers: trailers.as_deref().cloned(),
            }),
            RequestBody::Streaming(body) => body.take().unwrap_or_else(Body::empty),
        }
    }
}

/// The whole body: the first frame alone, or all frames copied together.
fn joined(first: Option<Bytes>, data: BytesMut) -> Bytes {
    match first {
        Some(head) if data.is_empty() => head,
        Some(_) => data.freeze(),
        None => Bytes::new(),
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

    /// A lower bound only, like tonic's own request bodies: given an exact
    /// size, hyper would add a `content-length` header to every request
    /// (gRPC does not use it; it costs an allocation and HPACK work per
    /// call). The end of the body is told by `is_end_stream`.
    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(self.data.as_ref().map_or(0, |d| d.len() as u64));
        hint
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames given up front, then (optionally) a frame that is not ready.
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        then_pending: bool,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None if self.then_pending => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn body(frames: Vec<Frame<Bytes>>, then_pending: bool) -> Body {
        Body::new(Frames {
            frames: frames.into(),
            then_pending,
        })
    }

    async fn collect(mut body: Body) -> (Vec<u8>, Option<HeaderMap>) {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            match frame.expect("frame").into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn one_frame_is_kept_without_a_copy() {
        let payload = Bytes::from(vec![7u8; 64]);
        let mut taken =
            RequestBody::take(body(vec![Frame::data(payload.clone())], false)).expect("takes");
        let RequestBody::Complete { data, trailers } = &taken else {
            panic!("a complete body");
        };
        assert_eq!(data.as_ptr(), payload.as_ptr(), "same buffer, not a copy");
        assert!(trailers.is_none());
        for _ in 0..2 {
            assert_eq!(collect(taken.for_attempt()).await.0, payload.to_vec());
        }
    }

    #[tokio::test]
    async fn frames_and_trailers_are_replayed_whole() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-end", "1".parse().expect("value"));
        let frames = vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::data(Bytes::from_static(b"e")),
            Frame::trailers(trailers.clone()),
        ];
        let mut taken = RequestBody::take(body(frames, false)).expect("takes");
        assert!(taken.is_replayable());
        for _ in 0..2 {
            let (data, got) = collect(taken.for_attempt()).await;
            assert_eq!(data, b"abcde");
            assert_eq!(got, Some(trailers.clone()));
        }
    }

    #[tokio::test]
    async fn a_body_still_streaming_is_passed_through_once() {
        let frames = vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
        ];
        let mut taken = RequestBody::take(body(frames, true)).expect("takes");
        assert!(!taken.is_replayable());
        let mut first = taken.for_attempt();
        let frame = first.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data").as_ref(), b"abcd");
        assert!(
            http_body::Body::is_end_stream(&taken.for_attempt()),
            "the stream is sent once"
        );
    }
}
