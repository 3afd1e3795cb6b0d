//! Admission control in front of a server's handlers
//! ([`ServerOptions::max_concurrent`](crate::ServerOptions::max_concurrent),
//! `--server_max_concurrent`; the limiter is [`micro_serve::admission`]).
//!
//! A unary call over the limit is answered at once, without reaching its
//! handler: `RESOURCE_EXHAUSTED`, with a [`PUSHBACK`] header in the
//! trailers-only answer. That header is the mark a client trusts: a shed
//! call was not executed, so it may go to another node even when it is not
//! idempotent (`micro-client` does), where a handler's own
//! `RESOURCE_EXHAUSTED` (no mark) may have done work.
//!
//! A call whose `grpc-timeout` has already run out when it would start
//! (`0` of any unit) is answered `DEADLINE_EXCEEDED` and not started either.
//!
//! Streams, health checks and reflection are not limited: a stream's
//! length is not a measure of the server's load, and a probe must see the
//! server as it is, busy or not.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue};
use micro_serve::admission::{Admission, Permit, Refusal};
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// The mark of a shed call (gRPC's retry pushback: milliseconds after which
/// the server may have room again).
pub const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The layer; the server puts it after its path rewriting, so it sees the
/// paths it serves.
#[derive(Clone, Debug)]
pub(crate) struct AdmissionLayer {
    admission: Arc<Admission>,
    /// Paths not limited: streaming methods (health and reflection go by
    /// their prefix).
    exempt: Arc<HashSet<String>>,
}

impl AdmissionLayer {
    pub(crate) fn new(admission: Arc<Admission>, streams: HashSet<String>) -> Self {
        AdmissionLayer {
            admission,
            exempt: Arc::new(streams),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] makes.
#[derive(Clone, Debug)]
pub(crate) struct Admit<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S> Service<http::Request<Body>> for Admit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.") || self.layer.exempt.contains(path) {
            return AdmitFuture::Admitted {
                inner: self.inner.call(request),
                permit: None,
            };
        }
        if request
            .headers()
            .get(GRPC_TIMEOUT)
            .is_some_and(|timeout| expired(timeout.as_bytes()))
        {
            self.layer.admission.refused(Refusal::Expired);
            let status = Status::deadline_exceeded("the call's deadline passed before it started");
            return AdmitFuture::Refused {
                response: Some(status.into_http()),
            };
        }
        match self.layer.admission.try_acquire() {
            Ok(permit) => AdmitFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(shed) => {
                let status = Status::resource_exhausted(format!(
                    "server overloaded: {} calls in flight, the limit; not started, try another node",
                    shed.limit
                ));
                let mut response: http::Response<Body> = status.into_http();
                let millis = shed.retry_after.as_millis().max(1) as u64;
                response
                    .headers_mut()
                    .insert(PUSHBACK, HeaderValue::from(millis));
                AdmitFuture::Refused {
                    response: Some(response),
                }
            }
        }
    }
}

/// A `grpc-timeout` of nothing left: digits all zero, and a unit.
fn expired(value: &[u8]) -> bool {
    match value.split_last() {
        Some((unit, digits)) => {
            b"HMSmun".contains(unit) && !digits.is_empty() && digits.iter().all(|d| *d == b'0')
        }
        None => false,
    }
}

pin_project! {
    /// An admitted call (holding its permit until its handler answers), or
    /// a refusal.
    #[project = AdmitProj]
    pub(crate) enum AdmitFuture<F> {
        Admitted {
            #[pin]
            inner: F,
            permit: Option<Permit>,
        },
        Refused {
            response: Option<http::Response<Body>>,
        },
    }
}

impl<F, E> Future for AdmitFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Admitted { inner, permit } => {
                let answer = std::task::ready!(inner.poll(cx));
                // The handler answered: its slot is free (a unary answer's
                // body is already made).
                permit.take();
                Poll::Ready(answer)
            }
            AdmitProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("a refusal is polled once after it is ready"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use micro_serve::admission::{AdmissionObserver, ConcurrencyLimit};
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Default)]
    struct Refusals {
        shed: AtomicUsize,
        expired: AtomicUsize,
    }

    impl AdmissionObserver for Refusals {
        fn refused(&self, refusal: Refusal) {
            match refusal {
                Refusal::Shed => &self.shed,
                Refusal::Expired => &self.expired,
            }
            .fetch_add(1, Ordering::SeqCst);
        }
        fn limit(&self, _: usize) {}
        fn in_flight(&self, _: usize) {}
    }

    /// A handler that counts its calls and answers when `release` says so.
    #[derive(Clone)]
    struct Handler {
        started: Arc<AtomicUsize>,
        release: Arc<tokio::sync::Semaphore>,
    }

    impl Service<http::Request<Body>> for Handler {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<
            Box<dyn Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send>,
        >;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            self.started.fetch_add(1, Ordering::SeqCst);
            let release = self.release.clone();
            Box::pin(async move {
                if let Ok(permit) = release.acquire().await {
                    permit.forget();
                }
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    /// Until `n` calls reached the handler (a bounded wait).
    async fn started(handler: &Handler, n: usize) {
        for _ in 0..10_000 {
            if handler.started.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{n} calls did not reach the handler");
    }

    /// A refusal answers at once; a bound turns a call that reached the
    /// (held) handler into a failure rather than a hang.
    async fn answered(
        call: impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>>,
    ) -> http::Response<Body> {
        match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => panic!("not answered at once: the call reached the handler"),
        }
    }

    fn setup(limit: usize) -> (Admit<Handler>, Handler, Arc<Refusals>) {
        let refusals = Arc::new(Refusals::default());
        let admission =
            Admission::new(ConcurrencyLimit::Fixed(limit), Some(refusals.clone())).expect("on");
        let handler = Handler {
            started: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let streams = HashSet::from(["/pkg.Greeter/Stream".to_string()]);
        let layer = AdmissionLayer::new(admission, streams);
        (layer.layer(handler.clone()), handler, refusals)
    }

    fn call(path: &str, timeout: Option<&'static str>) -> http::Request<Body> {
        let mut request = http::Request::builder().uri(path);
        if let Some(timeout) = timeout {
            request = request.header("grpc-timeout", timeout);
        }
        request.body(Body::empty()).expect("request")
    }

    fn code(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_call_over_the_limit_is_refused_unstarted_with_the_mark() {
        let (service, handler, refusals) = setup(1);
        let first = tokio::spawn(service.clone().oneshot(call("/pkg.Greeter/Hello", None)));
        started(&handler, 1).await;
        let refused = answered(service.clone().oneshot(call("/pkg.Greeter/Hello", None))).await;
        assert_eq!(code(&refused), Some("8"), "RESOURCE_EXHAUSTED");
        let pushback = refused.headers().get(PUSHBACK).expect("the shed mark");
        assert!(
            pushback
                .to_str()
                .expect("ascii")
                .parse::<u64>()
                .expect("ms")
                >= 1
        );
        assert_eq!(handler.started.load(Ordering::SeqCst), 1, "not started");
        assert_eq!(refusals.shed.load(Ordering::SeqCst), 1, "counted");

        // Streams and health checks are not limited.
        let stream = tokio::spawn(service.clone().oneshot(call("/pkg.Greeter/Stream", None)));
        let health = tokio::spawn(
            service
                .clone()
                .oneshot(call("/grpc.health.v1.Health/Check", None)),
        );
        started(&handler, 3).await;
        // The first call answers: its slot is free again.
        handler.release.add_permits(3);
        for answered in [first, stream, health] {
            let response = answered.await.expect("task").expect("infallible");
            assert_eq!(code(&response), None, "answered by the handler");
        }
        let again = tokio::spawn(service.clone().oneshot(call("/pkg.Greeter/Hello", None)));
        handler.release.add_permits(1);
        let response = again.await.expect("task").expect("infallible");
        assert_eq!(code(&response), None, "admitted once a slot freed");
        assert_eq!(refusals.shed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_call_whose_deadline_passed_is_not_started() {
        let (service, handler, refusals) = setup(10);
        let response = answered(
            service
                .clone()
                .oneshot(call("/pkg.Greeter/Hello", Some("0m"))),
        )
        .await;
        assert_eq!(code(&response), Some("4"), "DEADLINE_EXCEEDED");
        assert!(response.headers().get(PUSHBACK).is_none(), "not a shed");
        assert_eq!(handler.started.load(Ordering::SeqCst), 0, "not started");
        assert_eq!(refusals.expired.load(Ordering::SeqCst), 1, "counted");
        // Time left: started.
        handler.release.add_permits(1);
        let response = service
            .oneshot(call("/pkg.Greeter/Hello", Some("5S")))
            .await
            .expect("infallible");
        assert_eq!(code(&response), None);
        assert_eq!(handler.started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_a_zero_timeout_has_expired() {
        for passed in ["0n", "0u", "0m", "0S", "00000000M", "0H"] {
            assert!(expired(passed.as_bytes()), "{passed}");
        }
        for left in ["1n", "10m", "5S", "", "m", "0x", "abc"] {
            assert!(!expired(left.as_bytes()), "{left}");
        }
    }
}
