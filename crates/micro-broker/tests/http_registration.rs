//! The http broker's subscriptions stay registered as servers do, on a
//! real etcd: a registration the registry lost (etcd restarted on empty
//! data, its lease gone) is back long before the next renewal, and a
//! subscription made while etcd is down serves at once and is registered
//! once etcd answers.
//!
//! The renewal interval is set far longer than every wait here, so only
//! the repair (not the timer) can pass these tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_broker::http::{HttpBroker, HttpOptions, SERVICE_NAME};
use micro_broker::{Broker, Event, HandlerError, Message, SubscribeOptions};
use micro_registry::{Registry, SharedRegistry};
use micro_registry_etcd::EtcdRegistry;
use micro_registry_etcd::testing::EtcdCluster;
use micro_testing::nodes::wait_for_nodes;

const TOPIC: &str = "go.micro.topic.greet";
/// Longer than any wait of these tests: a renewal never comes in time.
const INTERVAL: Duration = Duration::from_secs(300);
/// What "at once" is given on a busy machine.
const SOON: Duration = Duration::from_secs(20);

fn options() -> HttpOptions {
    HttpOptions {
        address: "127.0.0.1:0".into(),
        register_ttl: INTERVAL * 2,
        register_interval: INTERVAL,
        ..HttpOptions::default()
    }
}

fn counting(count: &Arc<AtomicUsize>) -> Arc<dyn micro_broker::Handler> {
    let count = count.clone();
    Arc::new(move |_: Event| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    })
}

/// The ids of the `micro.http.broker` nodes `registry` lists now.
async fn broker_nodes(registry: &dyn Registry) -> Vec<String> {
    registry
        .get_service(SERVICE_NAME)
        .await
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.nodes)
        .map(|n| n.id)
        .collect()
}

/// Waits (bounded) until `registry` lists node `id`; how long it took.
async fn listed(registry: &dyn Registry, id: &str, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    wait_for_nodes(
        &format!("{id} registered"),
        started + within,
        || broker_nodes(registry),
        |nodes| nodes.iter().any(|n| n == id),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_registry_lost_is_back_at_once() {
    let mut etcd = EtcdCluster::single().await.expect("etcd");
    let registry: SharedRegistry = Arc::new(etcd.registry().await);
    let subscriber = HttpBroker::new(registry.clone(), options());
    let count = Arc::new(AtomicUsize::new(0));
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("subscribe");
    let id = subscription.id().to_string();
    listed(registry.as_ref(), &id, SOON).await;

    // etcd restarted on empty data: the registration and its lease are gone.
    etcd.kill(0);
    etcd.restart(0, true).await.expect("etcd back, empty");
    let reader = etcd.registry().await;
    let took = listed(&reader, &id, SOON).await;
    eprintln!("etcd back empty -> registered again: {took:?}");

    // And it takes messages again.
    let publisher = HttpBroker::new(registry.clone(), options());
    publisher
        .publish(TOPIC, Message::new("hi"))
        .await
        .expect("delivered");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    subscription.unsubscribe().await;
    assert!(
        !broker_nodes(&reader).await.contains(&id),
        "deregistered, and not put back by the repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_while_the_registry_is_down_is_registered_once_it_answers() {
    let mut etcd = EtcdCluster::single().await.expect("etcd");
    let options_etcd = etcd.options().with_request_timeout(Duration::from_secs(2));
    etcd.kill(0);
    let registry: SharedRegistry = Arc::new(
        EtcdRegistry::connect(options_etcd)
            .await
            .expect("connect needs no etcd"),
    );
    let subscriber = HttpBroker::new(registry.clone(), options());
    let count = Arc::new(AtomicUsize::new(0));
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("a registry that is down does not fail the subscription");
    let id = subscription.id().to_string();
    // The listener serves meanwhile.
    let address = subscriber.advertised().expect("listening").to_string();
    tokio::net::TcpStream::connect(&address)
        .await
        .expect("the listener accepts");

    etcd.restart(0, false).await.expect("etcd back");
    let reader = etcd.registry().await;
    let took = listed(&reader, &id, SOON).await;
    eprintln!("etcd back -> registered: {took:?}");
    let publisher = HttpBroker::new(Arc::new(reader), options());
    publisher
        .publish(TOPIC, Message::new("hi"))
        .await
        .expect("delivered");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    subscription.unsubscribe().await;
    subscriber.close().await;
}
