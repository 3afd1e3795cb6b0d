//! The observe stage alone: the observer's record of a call starts before
//! it goes out (and can add headers), goes down with it, and ends with the
//! call's answer or its failure, which becomes a gRPC status.

use std::sync::{Arc, Mutex};

use micro_client::call::Observed;
use micro_client::observe::ObserveLayer;
use micro_client::{CallEnd, CallObserver, Client, ClientError, ClientOptions, NodeSet};
use micro_registry::memory::MemoryRegistry;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

const SERVICE: &str = "go.micro.srv.observed";

#[derive(Debug, Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, event: impl Into<String>) {
        self.0.lock().expect("not poisoned").push(event.into());
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").clone()
    }
}

#[derive(Debug)]
struct Observer(Arc<Log>);

struct Record(Arc<Log>);

impl CallObserver for Observer {
    fn start(
        &self,
        nodes: &NodeSet,
        path: &str,
        headers: &mut http::HeaderMap,
    ) -> Arc<dyn CallEnd> {
        self.0.push(format!("start {} {path}", nodes.service()));
        headers.insert("traceparent", http::HeaderValue::from_static("00-x"));
        Arc::new(Record(self.0.clone()))
    }
}

impl CallEnd for Record {
    fn answered(self: Arc<Self>, response: http::Response<Body>) -> http::Response<Body> {
        self.0.push("answered");
        response
    }

    fn failed(self: Arc<Self>, error: &ClientError) {
        self.0.push(format!("failed {}", error.code() as i32));
    }
}

fn request() -> http::Request<Body> {
    http::Request::builder()
        .uri("http://x/observed.O/Call")
        .body(Body::empty())
        .expect("a request")
}

#[tokio::test]
async fn the_record_starts_before_the_call_goes_down_and_ends_with_it() {
    let client = Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default());
    let set = client.service(SERVICE).node_set().clone();
    let log = Arc::new(Log::default());
    let below_log = log.clone();
    let below = tower::service_fn(move |request: http::Request<Body>| {
        let log = below_log.clone();
        async move {
            assert!(request.headers().contains_key("traceparent"));
            assert!(
                request.extensions().get::<Observed>().is_some(),
                "the record goes down"
            );
            log.push("below");
            if request.uri().path().ends_with("Fail") {
                return Err(ClientError::BadRequest {
                    service: SERVICE.into(),
                    detail: "broken body".into(),
                });
            }
            Ok(http::Response::new(Body::empty()))
        }
    });
    let observer: Arc<dyn CallObserver> = Arc::new(Observer(log.clone()));
    let mut stage = ObserveLayer::new(set, Some(observer)).layer(below);
    stage
        .ready()
        .await
        .expect("ready")
        .call(request())
        .await
        .expect("answered");
    assert_eq!(
        log.events(),
        [
            format!("start {SERVICE} /observed.O/Call"),
            "below".into(),
            "answered".into()
        ]
    );

    let mut failing = request();
    *failing.uri_mut() = "http://x/observed.O/Fail".parse().expect("a uri");
    let error = stage
        .ready()
        .await
        .expect("ready")
        .call(failing)
        .await
        .expect_err("fails");
    let status = error
        .downcast_ref::<tonic::Status>()
        .expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        matches!(
            ClientError::from_status(status),
            Some(ClientError::BadRequest { .. })
        ),
        "the client error stays reachable from the status"
    );
    assert_eq!(log.events().last().map(String::as_str), Some("failed 13"));
}

#[tokio::test]
async fn without_an_observer_nothing_is_added() {
    let client = Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default());
    let set = client.service(SERVICE).node_set().clone();
    let below = tower::service_fn(|request: http::Request<Body>| async move {
        assert!(request.extensions().get::<Observed>().is_none());
        assert!(request.headers().is_empty());
        Ok::<_, ClientError>(http::Response::new(Body::empty()))
    });
    let mut stage = ObserveLayer::new(set, None).layer(below);
    stage
        .ready()
        .await
        .expect("ready")
        .call(request())
        .await
        .expect("answered");
}
