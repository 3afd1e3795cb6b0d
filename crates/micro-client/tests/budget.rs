//! The retry budget, on paused time.

use micro_client::{Budget, BudgetOptions};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_by_a_share_of_calls_plus_a_floor() {
    let budget = Budget::new(BudgetOptions {
        ratio: 0.2,
        min_per_second: 1,
    });
    // First second: the floor allows one retry.
    assert!(budget.withdraw());
    assert!(!budget.withdraw());
    for _ in 0..100 {
        budget.deposit(Instant::now());
    }
    // 100 calls: 20 more retries.
    let granted = (0..50).filter(|_| budget.withdraw()).count();
    assert_eq!(granted, 20);
    // Ten seconds on, the old calls and retries are forgotten; the floor
    // has grown to ten.
    tokio::time::advance(Budget::WINDOW).await;
    let granted = (0..50).filter(|_| budget.withdraw()).count();
    assert_eq!(granted, 10);
}

#[tokio::test(start_paused = true)]
async fn a_budget_without_a_floor_or_calls_allows_nothing() {
    let budget = Budget::new(BudgetOptions {
        ratio: 0.5,
        min_per_second: 0,
    });
    assert!(!budget.withdraw());
    budget.deposit(Instant::now());
    budget.deposit(Instant::now());
    assert!(budget.withdraw(), "half of two calls");
    assert!(!budget.withdraw());
}
