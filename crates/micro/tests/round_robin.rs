//! With `--selector=roundrobin`, calls take turns across instances: a true
//! round robin across calls.

use std::sync::Arc;

use micro::registry::memory::MemoryRegistry;
use micro::selector::Strategy;
use micro::{Client, ClientOptions};
use micro_testing::TestServer;
use micro_testing::greeter::{Request, greeter_client::GreeterClient};

const SERVICE: &str = "go.micro.srv.greeter";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_share_100_calls_evenly() {
    let registry = Arc::new(MemoryRegistry::new());
    let servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 4);

    let client = Client::new(registry.clone(), round_robin());
    // TestServer::start returns once registered: the first lookup sees all.
    assert_eq!(client.nodes(SERVICE).await.len(), 4);

    let mut greeter = GreeterClient::new(client.service(SERVICE));
    for i in 0..100 {
        let reply = greeter
            .hello(Request {
                name: format!("call-{i}"),
                ..Default::default()
            })
            .await
            .expect("call succeeds");
        assert!(
            reply
                .get_ref()
                .msg
                .starts_with(&format!("Hello call-{i} from instance-"))
        );
    }

    let counts: Vec<usize> = servers.iter().map(|s| s.greeter.hits()).collect();
    eprintln!("round robin: 100 calls over 4 instances → {counts:?}");
    for count in &counts {
        assert!((24..=26).contains(count), "uneven spread: {counts:?}");
    }
    assert_eq!(counts.iter().sum::<usize>(), 100);
    for server in servers {
        server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_channel_share_the_rotation() {
    let registry = Arc::new(MemoryRegistry::new());
    let servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 2);
    let client = Client::new(registry.clone(), round_robin());
    assert_eq!(client.nodes(SERVICE).await.len(), 2);
    // A fresh generated client per call, as handlers often do: still alternates.
    for i in 0..10 {
        let mut greeter = GreeterClient::new(client.service(SERVICE));
        greeter
            .hello(Request {
                name: format!("{i}"),
                ..Default::default()
            })
            .await
            .expect("call succeeds");
    }
    let counts: Vec<usize> = servers.iter().map(|s| s.greeter.hits()).collect();
    assert_eq!(counts, [5, 5]);
    for server in servers {
        server.stop();
    }
}

fn round_robin() -> ClientOptions {
    ClientOptions {
        selector: Strategy::RoundRobin,
        ..ClientOptions::default()
    }
}
