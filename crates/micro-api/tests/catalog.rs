//! One rule for every registry: a service never seen registered is unknown
//! (404 at the gateway); one that was registered and has no live node now is
//! gone (503).

use std::sync::Arc;
use std::time::Duration;

use micro_api::catalog::{Catalog, Presence};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};

const BUDGET: Duration = Duration::from_secs(2);

#[tokio::test(start_paused = true)]
async fn unknown_live_and_gone_services_are_told_apart() {
    let registry = Arc::new(MemoryRegistry::new());
    let service = Service::new("go.micro.api.greeter", "latest")
        .with_node(Node::new("greeter-1", "127.0.0.1:1"));
    registry
        .register(&service, RegisterOptions::default())
        .await
        .expect("register");
    let catalog = Catalog::spawn(registry.clone());
    assert_eq!(
        catalog.presence("go.micro.api.greeter", BUDGET).await,
        Presence::Live
    );
    assert_eq!(
        catalog.presence("go.micro.api.nobody", BUDGET).await,
        Presence::Unknown
    );

    registry.deregister(&service).await.expect("deregister");
    // The watch reports the delete; paused time runs the catalog's task.
    let mut presence = Presence::Live;
    for _ in 0..100 {
        presence = catalog.presence("go.micro.api.greeter", BUDGET).await;
        if presence != Presence::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(presence, Presence::Gone);
    assert_eq!(
        catalog.presence("go.micro.api.nobody", BUDGET).await,
        Presence::Unknown
    );

    // Back: live again.
    registry
        .register(&service, RegisterOptions::default())
        .await
        .expect("register again");
    for _ in 0..100 {
        presence = catalog.presence("go.micro.api.greeter", BUDGET).await;
        if presence == Presence::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(presence, Presence::Live);
}
