//! Where a dynamic call goes: a service by name (the toolkit client) or one
//! address, as one tower service of gRPC requests ([`TargetChannel`]), used
//! by the calls themselves ([`crate::client`]) and by the schema look-ups
//! ([`crate::schema`]).

use futures::TryFutureExt as _;
use http::{HeaderValue, header};
use micro_client::{BoxError, Client};
use tonic::body::Body;

/// The content-type of go-micro's json codec on gRPC.
pub const GRPC_JSON: &str = "application/grpc+json";

/// Where calls go: a service by name, or one address.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Registry(Client),
    Address(tonic::transport::Channel),
}

impl Target {
    /// A channel to `service`; with `json`, its requests say
    /// `application/grpc+json` (tonic itself always writes `application/grpc`).
    pub(crate) fn channel(&self, service: &str, json: bool) -> TargetChannel {
        let inner = match self {
            Target::Registry(client) => Inner::Registry(client.service(service)),
            Target::Address(channel) => Inner::Address(channel.clone()),
        };
        TargetChannel { inner, json }
    }
}

/// A [`Target`]'s channel to one service.
#[derive(Clone, Debug)]
pub(crate) struct TargetChannel {
    inner: Inner,
    json: bool,
}

#[derive(Clone, Debug)]
enum Inner {
    Registry(micro_client::ServiceChannel),
    Address(tonic::transport::Channel),
}

impl tower::Service<http::Request<Body>> for TargetChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    /// Not boxed: the rpc handler calls through it on every request.
    type Future = futures::future::Either<
        <micro_client::ServiceChannel as tower::Service<http::Request<Body>>>::Future,
        futures::future::ErrInto<tonic::transport::channel::ResponseFuture, BoxError>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        match &mut self.inner {
            Inner::Registry(channel) => channel.poll_ready(cx),
            Inner::Address(channel) => channel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if self.json {
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(GRPC_JSON));
        }
        match &mut self.inner {
            Inner::Registry(channel) => futures::future::Either::Left(channel.call(request)),
            Inner::Address(channel) => {
                futures::future::Either::Right(channel.call(request).err_into())
            }
        }
    }
}
