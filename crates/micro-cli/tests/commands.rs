//! `micro list services`, `get service`, `call` in-process, through the
//! library functions the binary runs (the memory registry is per process).

use std::sync::Arc;

use micro::{Client, ClientOptions};
use micro_cli::{CallArgs, CliError, Output, call, call_with, get_service, list_services};
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
        "Request: {\n\tname string\n\tcount int32\n}\n".to_string(),
        "\nResponse: {\n\tmsg string\n}\n".to_string(),
        // Streaming endpoints say so, as go-micro's do.
        "\nEndpoint: Greeter.Stream\nMetadata: stream=true\n".to_string(),
        "\nEndpoint: Greeter.PingPong\nMetadata: stream=true\n".to_string(),
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

/// A greeter that serves no reflection, as a go-micro v2 service.
fn start_without_reflection(
    registry: micro_registry::SharedRegistry,
    greeter: TestGreeter,
) -> micro_testing::Crashable {
    micro_testing::Crashable::start(registry, SERVICE, loopback_options(), move |builder| {
        builder
            .reflection(false)
            .file_descriptor_set(micro_testing::FILE_DESCRIPTOR_SET)
            .add_service(micro_testing::greeter::greeter_server::GreeterServer::new(
                greeter,
            ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_metadata_one_address_and_text_output() {
    let registry = Arc::new(MemoryRegistry::new());
    let reflected = TestGreeter::new("reflected");
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        reflected.clone(),
        loopback_options(),
    );
    let client = Client::new(registry.clone(), ClientOptions::default());

    let mut args = CallArgs::new(SERVICE, "Greeter.Hello", r#"{"name": "John"}"#);
    args.metadata = vec!["Authorization=Bearer t0ken".into(), "x-trace=a=b".into()];
    args.output = Output::Text;
    let reply = call_with(&client, &args).await.expect("call");
    assert_eq!(reply, "{\"msg\":\"Hello John from reflected\"}\n");
    let metadata = reflected.last_metadata().expect("metadata").into_headers();
    assert_eq!(metadata["authorization"], "Bearer t0ken");
    assert_eq!(metadata["x-trace"], "a=b");

    // --address: that node, found in no registry.
    let other = TestGreeter::new("direct");
    let direct = start_without_reflection(Arc::new(MemoryRegistry::new()), other.clone());
    let mut args = CallArgs::new(SERVICE, "Greeter.Hello", r#"{"name": "Jo"}"#);
    args.address = Some(direct.address.to_string());
    let reply = call_with(&client, &args).await.expect("call by address");
    assert_eq!(reply, "{\n\t\"msg\": \"Hello Jo from direct\"\n}\n");
    assert_eq!(other.hits(), 1);

    // Bad flags are usage errors.
    for (metadata, address) in [
        (vec!["no-equals".to_string()], None),
        (vec!["grpc-timeout=1S".to_string()], None),
        (vec!["bad key=1".to_string()], None),
        (vec!["k=caf\u{e9}".to_string()], None),
        (Vec::new(), Some("no-port".to_string())),
        (Vec::new(), Some("host:0".to_string())),
        (Vec::new(), Some("http://h:1/x".to_string())),
    ] {
        let mut args = CallArgs::new(SERVICE, "Greeter.Hello", "{}");
        args.metadata = metadata.clone();
        args.address = address.clone();
        let err = call_with(&client, &args).await.expect_err("usage error");
        assert!(
            matches!(err, CliError::Usage(_)),
            "{metadata:?} {address:?}: {err:?}"
        );
    }
    direct.stop();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reaches_a_service_without_reflection_with_json() {
    let registry = Arc::new(MemoryRegistry::new());
    let greeter = TestGreeter::new("gm");
    let server = start_without_reflection(registry.clone(), greeter.clone());
    let client = Client::new(registry.clone(), ClientOptions::default());
    let reply = call(&client, SERVICE, "Greeter.Hello", r#"{"name": "John"}"#)
        .await
        .expect("call");
    assert_eq!(reply, "{\n\t\"msg\": \"Hello John from gm\"\n}\n");
    // The service's own validation answers field errors.
    let err = call(&client, SERVICE, "Greeter.Hello", r#"{"nmae": "x"}"#)
        .await
        .expect_err("unknown field");
    assert!(err.message().contains("nmae"), "{err:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_service_shows_names_that_call_accepts() {
    // Registered as go-micro does: the proto field name, `userName`.
    let registry = Arc::new(MemoryRegistry::new());
    let mut request = micro_registry::Value::new("Request", "Request");
    request.values = vec![micro_registry::Value::new("userName", "string")];
    let service = micro_registry::Service {
        name: "go.micro.srv.user".into(),
        version: "latest".into(),
        metadata: Default::default(),
        endpoints: vec![micro_registry::Endpoint {
            name: "User.QueryUserByName".into(),
            request: Some(request),
            response: None,
            metadata: Default::default(),
        }],
        nodes: vec![micro_registry::Node {
            id: "go.micro.srv.user-1".into(),
            address: "127.0.0.1:1".into(),
            metadata: Default::default(),
        }],
    };
    micro_registry::Registry::register(
        registry.as_ref(),
        &service,
        micro_registry::RegisterOptions::default(),
    )
    .await
    .expect("register");
    let described = get_service(registry.as_ref(), "go.micro.srv.user")
        .await
        .expect("get");
    assert!(
        described.contains("Request: {\n\tuserName string\n}"),
        "{described}"
    );
}
