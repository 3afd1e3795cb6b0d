//! `micro list services`, `get service`, `call` in-process, through the
//! library functions the binary runs (the memory registry is per process).

use std::sync::Arc;

use micro::{Client, ClientOptions};
use micro_cli::{CliError, call, get_service, list_services};
use micro_registry::memory::MemoryRegistry;
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_get_and_call_a_running_service() {
    let registry = Arc::new(MemoryRegistry::new());
    assert_eq!(list_services(registry.as_ref()).await, Ok(String::new()));

    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("instance-0"),
        loopback_options(),
    );

    let listed = list_services(registry.as_ref()).await.expect("list");
    assert_eq!(listed, format!("{SERVICE}\n"));

    let described = get_service(registry.as_ref(), SERVICE).await.expect("get");
    for expected in [
        format!("service  {SERVICE}\n"),
        "\nversion latest\n".to_string(),
        "\nID\tAddress\tMetadata\n".to_string(),
        format!("{}\t{}\t", server.node_id, server.address),
        "protocol=grpc".to_string(),
        "\nEndpoint: Greeter.Hello\n".to_string(),
        "Request: {\n\tname string\n}\n".to_string(),
        "\nResponse: {\n\tmsg string\n}\n".to_string(),
    ] {
        assert!(
            described.contains(&expected),
            "missing {expected:?} in:\n{described}"
        );
    }

    let client = Client::new(registry.clone(), ClientOptions::default());
    let reply = call(&client, SERVICE, "Greeter.Hello", r#"{"name": "John"}"#)
        .await
        .expect("call");
    assert_eq!(reply, "{\n\t\"msg\": \"Hello John from instance-0\"\n}\n");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_classified() {
    let registry = Arc::new(MemoryRegistry::new());
    let client = Client::new(registry.clone(), ClientOptions::default());

    // Usage errors (exit code 2), found before anything is asked.
    for (endpoint, request, why) in [
        ("Hello", "{}", "Handler.Method"),
        ("Greeter.", "{}", "Handler.Method"),
        ("a.b.c", "{}", "Handler.Method"),
        ("Greeter.Hello", "{name", "not JSON"),
    ] {
        let err = call(&client, SERVICE, endpoint, request)
            .await
            .expect_err("fails");
        assert_eq!(err.exit_code(), 2, "{err:?}");
        assert!(err.message().contains(why), "{err:?}");
    }

    // Nothing registered: failures (exit code 1) naming the service.
    let err = call(&client, SERVICE, "Greeter.Hello", "{}")
        .await
        .expect_err("fails");
    assert_eq!(
        err,
        CliError::Failed(format!("service {SERVICE} not found in registry [memory]"))
    );
    let err = get_service(registry.as_ref(), SERVICE)
        .await
        .expect_err("fails");
    assert_eq!(err.exit_code(), 1);
    assert!(err.message().contains("not found"), "{err:?}");

    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("instance-0"),
        loopback_options(),
    );
    let err = call(&client, SERVICE, "Greeter.Goodbye", "{}")
        .await
        .expect_err("fails");
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.message().contains("no endpoint Greeter.Goodbye"),
        "{err:?}"
    );
    assert!(err.message().contains("404"), "{err:?}");

    let err = call(&client, SERVICE, "Greeter.Hello", r#"{"nmae": "x"}"#)
        .await
        .expect_err("fails");
    assert!(
        err.message().contains("nmae") && err.message().contains("400"),
        "{err:?}"
    );

    let err = call(&client, SERVICE, "Greeter.Hello", r#"{"name": "fail"}"#)
        .await
        .expect_err("fails");
    assert!(
        err.message().contains("failed on purpose") && err.message().contains("500"),
        "{err:?}"
    );
    server.stop();
}
