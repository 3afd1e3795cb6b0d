//! The retry stage alone, over a stand-in for the balance stage: which
//! failures go to another node, what the budget allows, what each attempt is
//! told (nodes tried, deadline, attempt timeout), on paused time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use micro_client::call::{CallDeadline, Observed};
use micro_client::outcome::{Outcome, Sent};
use micro_client::retry::{RetryLayer, RetryOptions};
use micro_client::{
    AttemptResult, Budget, BudgetOptions, CallEnd, ClientError, Idempotent, NodeFailure,
};
use support::{Nodes, SERVICE, answered, request, status_of};
use tonic::Code;
use tower::{Layer, Service, ServiceExt};

fn layer(retries: u32, budget: BudgetOptions) -> RetryLayer {
    RetryLayer::new(
        SERVICE,
        Arc::new(Budget::new(budget)),
        RetryOptions {
            retries,
            hedge_after: None,
        },
    )
}

fn plenty() -> BudgetOptions {
    BudgetOptions::default()
}

fn connection_lost() -> Outcome {
    Outcome::Failed {
        failure: NodeFailure::Connection("reset".into()),
        sent: Sent::Maybe,
    }
}

async fn call(
    service: &mut (
             impl Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = ClientError,
    > + Send
         ),
    request: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, ClientError> {
    service.ready().await?.call(request).await
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_answer_goes_to_a_node_not_tried_yet() {
    let nodes = Nodes::new(&["a", "b"], |node, _| {
        answered((node.node.id == "a").then_some(Code::Unavailable))
    });
    let mut retry = layer(1, plenty()).layer(nodes.clone());
    let response = call(&mut retry, request()).await.expect("answered");
    assert_eq!(status_of(&response), 0, "the second node's success");
    let seen = nodes.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].node, "b");
    assert_eq!(seen[1].tried, ["a"], "the retry is told which node failed");
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_may_have_reached_the_node_is_retried_only_for_idempotent_calls() {
    let nodes = Nodes::new(&["a", "b"], |node, _| {
        if node.node.id == "a" {
            connection_lost()
        } else {
            answered(None)
        }
    });
    let mut retry = layer(1, plenty()).layer(nodes.clone());
    let error = call(&mut retry, request()).await.expect_err("not retried");
    assert!(
        matches!(
            &error,
            ClientError::NodeFailed {
                cause: NodeFailure::Connection(_),
                attempts: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(nodes.seen().len(), 1);

    let mut idempotent = request();
    idempotent.extensions_mut().insert(Idempotent);
    let response = call(&mut retry, idempotent).await.expect("retried");
    assert_eq!(status_of(&response), 0);
    assert_eq!(nodes.seen().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_policy_does_not_retry_is_the_calls_answer() {
    let nodes = Nodes::new(&["a", "b"], |_, _| answered(Some(Code::InvalidArgument)));
    let mut retry = layer(1, plenty()).layer(nodes.clone());
    let mut idempotent = request();
    idempotent.extensions_mut().insert(Idempotent);
    let response = call(&mut retry, idempotent).await.expect("answered");
    assert_eq!(status_of(&response), Code::InvalidArgument as i32);
    assert_eq!(nodes.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_ends_the_call_with_the_last_failure() {
    let none = BudgetOptions {
        ratio: 0.0,
        min_per_second: 0,
    };
    let refused = |_: &micro_client::NodeEntry, _| Outcome::Failed {
        failure: NodeFailure::Connect("refused".into()),
        sent: Sent::No,
    };
    let nodes = Nodes::new(&["a", "b"], refused);
    let mut retry = layer(1, none).layer(nodes.clone());
    let error = call(&mut retry, request()).await.expect_err("no budget");
    let ClientError::BudgetExhausted { last, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(matches!(**last, ClientError::NodeFailed { .. }), "{last:?}");
    assert_eq!(nodes.seen().len(), 1, "no second attempt");

    // An error answer stands as it is when no retry may follow.
    let nodes = Nodes::new(&["a", "b"], |_, _| answered(Some(Code::Unavailable)));
    let mut retry = layer(1, none).layer(nodes.clone());
    let response = call(&mut retry, request()).await.expect("the answer");
    assert_eq!(status_of(&response), Code::Unavailable as i32);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_the_calls_deadline_and_whether_the_attempt_timeout_bounds_it() {
    let nodes = Nodes::new(&["a", "b"], |node, _| {
        if node.node.id == "a" {
            connection_lost()
        } else {
            answered(None)
        }
    });
    let mut retry = layer(1, plenty()).layer(nodes.clone());
    let deadline = CallDeadline::after(Duration::from_secs(3));
    let mut first = request();
    first.extensions_mut().insert(deadline);
    first.extensions_mut().insert(Idempotent);
    call(&mut retry, first).await.expect("retried");
    let seen = nodes.seen();
    assert!(seen.iter().all(|s| s.deadline == deadline.at));
    assert_eq!(
        seen[0].started, deadline.started,
        "the first attempt starts with the call"
    );
    // An idempotent call's first attempt leaves time for a second; the last
    // possible one has nothing to leave time for.
    assert!(seen[0].bounded);
    assert!(!seen[1].bounded);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline() {
    let nodes = Nodes::new(&["a", "b"], |node, _| {
        if node.node.id == "a" {
            answered(Some(Code::Unavailable))
        } else {
            answered(None)
        }
    });
    let mut retry = layer(1, plenty()).layer(nodes.clone());
    let mut expired = request();
    expired
        .extensions_mut()
        .insert(CallDeadline::after(Duration::ZERO));
    let error = call(&mut retry, expired)
        .await
        .expect_err("past its deadline");
    assert!(
        matches!(error, ClientError::Deadline { attempts: 0, .. }),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn with_one_node_a_failure_is_final_and_no_node_left_says_so() {
    let nodes = Nodes::new(&["a"], |_, _| connection_lost());
    let mut retry = layer(3, plenty()).layer(nodes.clone());
    let mut idempotent = request();
    idempotent.extensions_mut().insert(Idempotent);
    let error = call(&mut retry, idempotent).await.expect_err("one node");
    assert!(matches!(error, ClientError::NodeFailed { .. }), "{error:?}");
    assert_eq!(nodes.seen().len(), 1);

    let empty = Nodes::new(&[], |_, _| answered(None));
    let mut retry = layer(1, plenty()).layer(empty);
    let error = call(&mut retry, request()).await.expect_err("no node");
    assert!(matches!(error, ClientError::NoNode { .. }), "{error:?}");
}

#[derive(Default)]
struct Results(std::sync::Mutex<Vec<AttemptResult>>);

impl CallEnd for Results {
    fn attempt(&self, result: AttemptResult) {
        self.0.lock().expect("not poisoned").push(result);
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempts_result_goes_to_the_calls_record() {
    let nodes = Nodes::new(&["a", "b"], |node, _| {
        answered((node.node.id == "a").then_some(Code::Unavailable))
    });
    let mut retry = layer(1, plenty()).layer(nodes);
    let record = Arc::new(Results::default());
    let mut observed = request();
    observed
        .extensions_mut()
        .insert(Observed(record.clone() as Arc<dyn CallEnd>));
    call(&mut retry, observed).await.expect("answered");
    assert_eq!(
        *record.0.lock().expect("not poisoned"),
        [AttemptResult::Unavailable, AttemptResult::Answered]
    );
    assert_eq!(
        Arc::strong_count(&record),
        1,
        "the stage let go of the record"
    );
}
