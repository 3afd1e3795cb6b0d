//! A response body that reports the client call's gRPC code when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// What to do once a call's outcome is known. `None`: the body was dropped
/// before the end (the peer went away).
pub(crate) trait Finish: Send + 'static {
    fn finish(self, code: Option<Code>);
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The gRPC code in `grpc-status`, if the headers carry one.
pub(crate) fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    // A `HeaderName` constant: a `&str` key is parsed and checked on each lookup.
    let value = headers.get(&GRPC_STATUS)?;
    let code = match value.as_bytes() {
        // The one answer nearly every call carries.
        b"0" => 0,
        other => std::str::from_utf8(other).ok()?.parse::<i32>().ok()?,
    };
    Some(Code::from_i32(code))
}

/// Reports at once for a trailers-only response, else when the body ends.
pub(crate) fn observe<F: Finish + Unpin>(
    response: http::Response<tonic::body::Body>,
    finish: F,
) -> http::Response<tonic::body::Body> {
    if let Some(code) = grpc_code(response.headers()) {
        finish.finish(Some(code));
        return response;
    }
    response.map(|body| tonic::body::Body::new(Observed::new(body, finish)))
}

/// Wraps a body: reports the code of its trailers (or `Unknown` if it ends
/// without any, `Internal` on an error, `None` if dropped early).
#[derive(Debug)]
pub(crate) struct Observed<B, F: Finish> {
    inner: B,
    finish: Option<F>,
}

impl<B, F: Finish> Observed<B, F> {
    pub(crate) fn new(inner: B, finish: F) -> Self {
        Observed {
            inner,
            finish: Some(finish),
        }
    }

    fn done(&mut self, code: Option<Code>) {
        if let Some(finish) = self.finish.take() {
            finish.finish(code);
        }
    }
}

impl<B, F: Finish> Drop for Observed<B, F> {
    fn drop(&mut self) {
        self.done(None);
    }
}

impl<B, F> Body for Observed<B, F>
where
    B: Body + Unpin,
    F: Finish + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_code(trailers).unwrap_or(Code::Unknown);
                    self.done(Some(code));
                }
            }
            Poll::Ready(Some(Err(_))) => self.done(Some(Code::Internal)),
            Poll::Ready(None) => self.done(Some(Code::Unknown)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
