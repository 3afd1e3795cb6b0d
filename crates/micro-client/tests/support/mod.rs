//! Small services to test one stage of the client at a time, on paused
//! time: nodes that are never dialled, scripted answers, and a stand-in for
//! the balance stage that records what each attempt was given.

#![allow(dead_code, reason = "each test file uses a part")]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use micro_client::call::AttemptContext;
use micro_client::outcome::{Attempted, NodeCount, Outcome, Picked};
use micro_client::{ClientError, ClientOptions, NodeEntry};
use micro_registry::Node;
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;

pub const SERVICE: &str = "go.micro.srv.test";

/// A node whose connection is never used (port 1 on loopback).
pub fn node(id: &str) -> Arc<NodeEntry> {
    let node = Node {
        id: id.into(),
        address: "127.0.0.1:1".into(),
        metadata: Default::default(),
    };
    Arc::new(NodeEntry::new(node, &ClientOptions::default()).expect("a valid address"))
}

/// A unary gRPC request with a small body.
pub fn request() -> http::Request<Body> {
    http::Request::builder()
        .method("POST")
        .uri("http://go.micro.srv.test/test.Test/Call")
        .header("content-type", "application/grpc")
        .body(Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"\0\0\0\0\x02\x0a\x00"),
        )))
        .expect("a valid request")
}

/// A node's answer: a success, or a trailers-only error status.
pub fn answered(status: Option<Code>) -> Outcome {
    let mut response = http::Response::new(Body::empty());
    if let Some(code) = status {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from(code as i32));
    }
    Outcome::Answered { response, status }
}

/// The gRPC status of an answer (0 for a success).
pub fn status_of(response: &http::Response<Body>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// What one attempt was given.
#[derive(Clone, Debug)]
pub struct Seen {
    pub node: String,
    pub tried: Vec<String>,
    pub bounded: bool,
    pub deadline: Instant,
    pub started: Instant,
}

type Answer = dyn Fn(&NodeEntry, usize) -> Outcome + Send + Sync;

/// Stands in for the balance stage: each attempt goes to the first node not
/// tried yet in its call, and is answered by `answer(node, attempt number)`.
#[derive(Clone)]
pub struct Nodes {
    nodes: Vec<Arc<NodeEntry>>,
    answer: Arc<Answer>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Nodes {
    pub fn new(
        ids: &[&str],
        answer: impl Fn(&NodeEntry, usize) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        Nodes {
            nodes: ids.iter().map(|id| node(id)).collect(),
            answer: Arc::new(answer),
            seen: Arc::default(),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl NodeCount for Nodes {
    fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

impl tower::Service<http::Request<Body>> for Nodes {
    type Response = Attempted;
    type Error = ClientError;
    type Future = Scripted;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Scripted {
        let context = request
            .extensions()
            .get::<AttemptContext>()
            .cloned()
            .expect("the retry stage gives every attempt a context");
        let next = self
            .nodes
            .iter()
            .find(|n| !context.tried.iter().any(|t| t.node.id == n.node.id));
        let Some(node) = next else {
            return Scripted {
                node: Err(ClientError::NoNode {
                    service: SERVICE.into(),
                    registry: "test".into(),
                    registry_error: None,
                }),
                run: None,
            };
        };
        Scripted {
            node: Ok(node.clone()),
            run: Some(Run {
                seen: Seen {
                    node: node.node.id.clone(),
                    tried: context.tried.iter().map(|t| t.node.id.clone()).collect(),
                    bounded: context.bounded,
                    deadline: context.deadline,
                    started: context.started,
                },
                log: self.seen.clone(),
                answer: self.answer.clone(),
            }),
        }
    }
}

/// An attempt that is over as soon as it is polled: only then is it seen
/// (as the real attempt stage starts nothing before it is polled).
pub struct Scripted {
    node: Result<Arc<NodeEntry>, ClientError>,
    run: Option<Run>,
}

struct Run {
    seen: Seen,
    log: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Answer>,
}

impl Picked for Scripted {
    fn node(&self) -> Result<&Arc<NodeEntry>, &ClientError> {
        self.node.as_ref()
    }
}

impl Future for Scripted {
    type Output = Result<Attempted, ClientError>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = self.run.take().map(|run| {
            let mut log = run.log.lock().expect("not poisoned");
            log.push(run.seen);
            (log.len() - 1, run.answer)
        });
        Poll::Ready(match (&self.node, outcome) {
            (Ok(node), Some((n, answer))) => Ok(Attempted {
                outcome: answer(node, n),
                node: node.clone(),
            }),
            (Err(error), _) => Err(error.clone()),
            (Ok(_), None) => panic!("polled after it ended"),
        })
    }
}

/// The innermost stage for the balance stage's tests: records the node each
/// request was given and answers at once.
#[derive(Clone, Default)]
pub struct Recorder {
    pub nodes: Arc<Mutex<Vec<String>>>,
}

impl tower::Service<http::Request<Body>> for Recorder {
    type Response = Outcome;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let node = request
            .extensions()
            .get::<AttemptContext>()
            .and_then(|c| c.node.as_ref())
            .map(|n| n.node.id.clone())
            .expect("the balance stage names the node");
        self.nodes.lock().expect("not poisoned").push(node);
        std::future::ready(Ok(answered(None)))
    }
}
