//! The deadline stage alone: the caller's `grpc-timeout`, or the default,
//! becomes the call's deadline, on paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_client::call::CallDeadline;
use micro_client::deadline::DeadlineLayer;
use tower::{Layer, Service, ServiceExt};

/// What the stage below saw: the deadline, and the `grpc-timeout` header.
type Seen = Arc<Mutex<Vec<(Option<CallDeadline>, Option<String>)>>>;

fn below(
    seen: Seen,
) -> impl Service<http::Request<()>, Response = (), Error = std::convert::Infallible> {
    tower::service_fn(move |request: http::Request<()>| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("not poisoned").push((
                request.extensions().get::<CallDeadline>().copied(),
                request
                    .headers()
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap_or_default().to_string()),
            ));
            Ok(())
        }
    })
}

fn with_timeout(value: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::new(());
    if let Some(value) = value {
        request
            .headers_mut()
            .insert("grpc-timeout", value.parse().expect("a header value"));
    }
    request
}

#[tokio::test(start_paused = true)]
async fn the_callers_grpc_timeout_is_the_deadline_and_leaves_the_headers() {
    let seen = Seen::default();
    let mut stage = DeadlineLayer::new(Duration::from_secs(5)).layer(below(seen.clone()));
    let cases = [
        (Some("250m"), Duration::from_millis(250)),
        (Some("2S"), Duration::from_secs(2)),
        (None, Duration::from_secs(5)),
        // Malformed: the default, as if none was sent.
        (Some("soon"), Duration::from_secs(5)),
        (Some("123456789S"), Duration::from_secs(5)),
    ];
    for (header, _) in cases {
        stage
            .ready()
            .await
            .expect("ready")
            .call(with_timeout(header))
            .await
            .expect("called");
    }
    let seen = seen.lock().expect("not poisoned");
    for ((header, budget), (deadline, forwarded)) in cases.iter().zip(seen.iter()) {
        let deadline = deadline.expect("every call gets a deadline");
        assert_eq!(deadline.budget(), *budget, "{header:?}");
        assert_eq!(*forwarded, None, "{header:?}: each attempt sets its own");
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_starts_when_the_call_does() {
    let seen = Seen::default();
    let mut stage = DeadlineLayer::new(Duration::from_secs(1)).layer(below(seen.clone()));
    tokio::time::advance(Duration::from_secs(7)).await;
    let now = tokio::time::Instant::now();
    stage
        .ready()
        .await
        .expect("ready")
        .call(with_timeout(None))
        .await
        .expect("called");
    let deadline = seen.lock().expect("not poisoned")[0].0.expect("a deadline");
    assert_eq!(deadline.started, now);
    assert_eq!(deadline.at, now + Duration::from_secs(1));
}
