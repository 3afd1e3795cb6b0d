//! The retry policy: what may go to another node.

use micro_client::outcome::Sent;
use micro_client::retry::Policy;
use tonic::Code;

#[test]
fn only_safe_failures_are_retried_unless_idempotent() {
    let plain = Policy { idempotent: false };
    let idempotent = Policy { idempotent: true };
    assert!(plain.retry_failure(Sent::No));
    assert!(!plain.retry_failure(Sent::Maybe));
    assert!(idempotent.retry_failure(Sent::Maybe));
    assert!(plain.retry_status(Code::Unavailable));
    assert!(!plain.retry_status(Code::Internal));
    assert!(idempotent.retry_status(Code::Internal));
    assert!(!idempotent.retry_status(Code::InvalidArgument));
    assert!(!idempotent.retry_status(Code::NotFound));
}
