//! The memory broker: the semantics every backend keeps, in one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use micro_broker::memory::MemoryBroker;
use micro_broker::{Broker, Error, Event, HandlerError, Message, SubscribeOptions};

fn counting(count: &Arc<AtomicUsize>) -> Arc<dyn micro_broker::Handler> {
    let count = count.clone();
    Arc::new(move |event: Event| {
        let count = count.clone();
        async move {
            assert_eq!(event.message().header("Micro-Topic"), Some("t"));
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    })
}

#[tokio::test]
async fn broadcast_and_queue_groups() {
    let broker = MemoryBroker::new();
    let counts: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
    let mut subs = Vec::new();
    for (i, count) in counts.iter().enumerate() {
        let options = match i {
            0 => SubscribeOptions::default(),
            _ => SubscribeOptions::queue("q"),
        };
        subs.push(
            broker
                .subscribe("t", options, counting(count))
                .await
                .expect("subscribe"),
        );
    }
    for _ in 0..30 {
        broker
            .publish("t", Message::new("x"))
            .await
            .expect("published");
    }
    broker
        .publish("other", Message::new("x"))
        .await
        .expect("nobody listens: fine");
    assert_eq!(counts[0].load(Ordering::SeqCst), 30);
    let group: usize = counts[1..].iter().map(|c| c.load(Ordering::SeqCst)).sum();
    assert_eq!(group, 30);

    // A dropped subscription gets nothing more; the group's others take over.
    drop(subs.pop());
    drop(subs.pop());
    broker
        .publish("t", Message::new("x"))
        .await
        .expect("published");
    assert_eq!(counts[0].load(Ordering::SeqCst), 31);
    assert_eq!(
        counts[1].load(Ordering::SeqCst)
            + counts[2].load(Ordering::SeqCst)
            + counts[3].load(Ordering::SeqCst),
        31
    );
}

#[tokio::test]
async fn refusals_and_panics_are_returned() {
    let broker = MemoryBroker::new();
    let _sub = broker
        .subscribe(
            "t",
            SubscribeOptions::default(),
            Arc::new(|event: Event| async move {
                match &event.message().body[..] {
                    b"panic" => panic!("boom"),
                    b"fail" => Err(HandlerError::new("nope")),
                    _ => Ok(()),
                }
            }),
        )
        .await
        .expect("subscribe");
    let err = broker
        .publish("t", Message::new("fail"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Delivery(f) if f[0].reason.contains("nope")),
        "{err}"
    );
    let err = broker
        .publish("t", Message::new("panic"))
        .await
        .expect_err("panicked");
    assert!(err.to_string().contains("boom"), "{err}");
    broker
        .publish("t", Message::new("ok"))
        .await
        .expect("still works");
    for bad in ["", "a b"] {
        assert!(matches!(
            broker.publish(bad, Message::new("x")).await,
            Err(Error::Invalid(_))
        ));
    }
}
