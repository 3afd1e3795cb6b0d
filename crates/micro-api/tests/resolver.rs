//! Path → (service, endpoint): go-micro's `micro` resolver rules, as a table,
//! and properties: resolution and request conversion never panic.

use micro_api::convert::to_api_request;
use micro_api::{ResolveError, Resolver};
use proptest::prelude::*;

/// (path, service, endpoint) with namespace `go.micro.api`.
const TABLE: &[(&str, &str, &str)] = &[
    // One part: Name.Call.
    ("/foo", "go.micro.api.foo", "Foo.Call"),
    ("/foo/", "go.micro.api.foo", "Foo.Call"),
    // Two parts: service = first, endpoint = both.
    ("/foo/bar", "go.micro.api.foo", "Foo.Bar"),
    ("/greeter/hello", "go.micro.api.greeter", "Greeter.Hello"),
    // Three parts: service = first, endpoint = last two.
    ("/user/say/hello", "go.micro.api.user", "Say.Hello"),
    ("/foo/bar/baz", "go.micro.api.foo", "Bar.Baz"),
    // A version first: service = version.name, endpoint = last two.
    ("/v1/foo/bar", "go.micro.api.v1.foo", "Foo.Bar"),
    ("/v2/user/hello", "go.micro.api.v2.user", "User.Hello"),
    ("/v10/foo/bar", "go.micro.api.v10.foo", "Foo.Bar"),
    // Not a version (v alone, letters after v): the three-part rule.
    ("/v/foo/bar", "go.micro.api.v", "Foo.Bar"),
    ("/vx1/foo/bar", "go.micro.api.vx1", "Foo.Bar"),
    // A version in a two-part path is just a service name, as in go-micro.
    ("/v1/foo", "go.micro.api.v1", "V1.Foo"),
    // Longer: all but the last two parts joined by '.', endpoint = last two.
    ("/a/b/c/d", "go.micro.api.a.b", "C.D"),
    ("/a/b/c/d/e", "go.micro.api.a.b.c", "D.E"),
    ("/v1/a/b/c", "go.micro.api.v1.a", "B.C"),
    // Dashes: each word capitalised, joined.
    ("/user/say-hello", "go.micro.api.user", "User.SayHello"),
    (
        "/user/user/query-user-by-name",
        "go.micro.api.user",
        "User.QueryUserByName",
    ),
    ("/my-svc/say/hello", "go.micro.api.my-svc", "Say.Hello"),
    ("/foo-bar", "go.micro.api.foo-bar", "FooBar.Call"),
    // Only the first letter of a word changes.
    ("/foo/getUser", "go.micro.api.foo", "Foo.GetUser"),
    ("/foo/bar_baz", "go.micro.api.foo", "Foo.Bar_baz"),
    // Cleaned first, as Go's path.Clean: duplicate slashes, dot parts.
    ("//foo//bar", "go.micro.api.foo", "Foo.Bar"),
    ("/foo/./bar", "go.micro.api.foo", "Foo.Bar"),
    ("/x/../foo/bar", "go.micro.api.foo", "Foo.Bar"),
    ("/../../foo", "go.micro.api.foo", "Foo.Call"),
    // Percent-decoded, as Go's URL.Path (an encoded '/' splits too).
    ("/f%6Fo/bar", "go.micro.api.foo", "Foo.Bar"),
    ("/foo/b%2Fr/x/y/z/..%2F", "go.micro.api.foo.b.r", "X.Y"),
];

#[test]
fn go_micro_path_rules() {
    let resolver = Resolver::new("go.micro.api");
    for (path, service, endpoint) in TABLE {
        let route = resolver
            .resolve(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            (route.service.as_str(), route.endpoint().as_str()),
            (*service, *endpoint),
            "{path}"
        );
        let (handler, method) = endpoint.split_once('.').expect("endpoint");
        assert_eq!(
            route.grpc_path(),
            format!("/{service}.{handler}/{method}"),
            "{path}"
        );
    }
}

#[test]
fn namespace_prefixes_the_service() {
    let route = Resolver::new("go.micro.srv")
        .resolve("/greeter/greeter/hello")
        .expect("resolves");
    assert_eq!(route.service, "go.micro.srv.greeter");
    assert_eq!(route.endpoint(), "Greeter.Hello");
    assert_eq!(route.grpc_path(), "/go.micro.srv.greeter.Greeter/Hello");

    let bare = Resolver::new("")
        .resolve("/greeter/hello")
        .expect("resolves");
    assert_eq!(bare.service, "greeter");
    let dotted = Resolver::new("go.micro.api.")
        .resolve("/x")
        .expect("resolves");
    assert_eq!(dotted.service, "go.micro.api.x");
}

#[test]
fn paths_naming_no_endpoint_are_rejected() {
    let resolver = Resolver::new("go.micro.api");
    for path in [
        "",
        "/",
        "//",
        "/..",
        "/favicon.ico",
        "/foo/bar.baz",
        "/foo/-",
        "/foo/bar/b%20z",
        "/foo bar/x",
        "/ü/bar",
        "/foo/%FF",
    ] {
        assert!(resolver.resolve(path).is_err(), "{path:?} resolved");
    }
    assert_eq!(resolver.resolve("/foo/%FF"), Err(ResolveError::NotUtf8));
}

#[test]
fn proxy_routes_use_the_first_part_or_a_version() {
    let resolver = Resolver::new("go.micro.api");
    for (path, service) in [
        ("/foo", "go.micro.api.foo"),
        ("/foo/", "go.micro.api.foo"),
        ("/foo/bar/baz?x=1", "go.micro.api.foo"),
        ("/v1/foo/bar", "go.micro.api.v1.foo"),
        ("/v1/foo", "go.micro.api.v1.foo"),
        ("/v1", "go.micro.api.v1"),
        ("/my-site/index.html", "go.micro.api.my-site"),
    ] {
        let path = path.split('?').next().unwrap_or(path);
        assert_eq!(
            resolver.resolve_proxy(path).as_deref(),
            Ok(service),
            "{path}"
        );
    }
    for bad in [
        "/",
        "",
        "/-foo/x",
        "/foo-/x",
        "/foo_bar/x",
        "/foo.bar/x",
        "/v1/-x/y",
    ] {
        assert!(resolver.resolve_proxy(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn many_query_and_form_pairs_encode_as_the_message_says() {
    // More pairs than the few grouped in place (16): the map path, for a
    // query and for a form body, repeated keys included.
    let pairs: Vec<String> = (0..40).map(|i| format!("k{}=v{i}", i % 7)).collect();
    let text = pairs.join("&");
    for form in [false, true] {
        let mut builder = http::Request::builder().method("POST");
        builder = if form {
            builder
                .uri("/greeter/hello")
                .header("content-type", "application/x-www-form-urlencoded")
        } else {
            builder.uri(format!("/greeter/hello?{text}"))
        };
        let (parts, ()) = builder.body(()).expect("request").into_parts();
        let body = if form { text.as_bytes() } else { &b""[..] };
        let peer = Some(([127, 0, 0, 1], 4242).into());
        let converted = to_api_request(&parts, body, peer);
        let map = if form {
            &converted.post
        } else {
            &converted.get
        };
        assert_eq!(map.len(), 7, "form {form}");
        assert_eq!(map["k0"].values, ["v0", "v7", "v14", "v21", "v28", "v35"]);
        let encoded = micro_api::convert::encode_api_request(&parts, body, peer);
        let decoded = <micro_api_proto::Request as prost::Message>::decode(encoded.as_slice());
        assert_eq!(decoded.ok(), Some(converted), "form {form}");
    }
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary text.
        any::<String>(),
        // Path-like: parts of path characters, dots, dashes, percents.
        proptest::collection::vec("[a-zA-Z0-9._~%-]{0,12}", 0..8)
            .prop_map(|parts| format!("/{}", parts.join("/"))),
        // Percent-encoded bytes of anything.
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            format!("/{encoded}")
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn resolution_never_panics_and_yields_callable_routes(path in any_path()) {
        let resolver = Resolver::new("go.micro.api");
        if let Ok(route) = resolver.resolve(&path) {
            // Whatever resolves can be called: a valid gRPC path.
            prop_assert!(http::uri::PathAndQuery::try_from(route.grpc_path()).is_ok());
            prop_assert!(route.service.starts_with("go.micro.api."));
            prop_assert!(!route.handler.is_empty() && !route.method.is_empty());
        }
        let _ = resolver.resolve_proxy(&path);
    }

    #[test]
    fn request_conversion_never_panics(
        path in "/[a-zA-Z0-9/%._-]{0,40}",
        query in proptest::option::of("[a-zA-Z0-9=&%+._-]{0,60}"),
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE")],
        headers in proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", proptest::collection::vec(any::<u8>(), 0..24)), 0..8),
        form in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let uri = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let Ok(uri) = uri.parse::<http::Uri>() else { return Ok(()); };
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in &headers {
            if let Ok(value) = http::HeaderValue::from_bytes(value) {
                builder = builder.header(name.as_str(), value);
            }
        }
        if form {
            builder = builder.header("content-type", "application/x-www-form-urlencoded; charset=utf-8");
        }
        let Ok(request) = builder.body(()) else { return Ok(()); };
        let (parts, ()) = request.into_parts();
        let converted = to_api_request(&parts, &body, Some(([127, 0, 0, 1], 4242).into()));
        prop_assert_eq!(converted.method.as_str(), method);
        prop_assert!(converted.header.contains_key("Host"));
        prop_assert!(converted.header.contains_key("X-Forwarded-For"));
        // The message always encodes (every string is valid UTF-8).
        let _ = prost::Message::encode_to_vec(&converted);
        // What the api handler sends, written directly, is the same message.
        let encoded = micro_api::convert::encode_api_request(&parts, &body, Some(([127, 0, 0, 1], 4242).into()));
        let decoded = <micro_api_proto::Request as prost::Message>::decode(encoded.as_slice());
        prop_assert_eq!(decoded.ok(), Some(converted));
    }

    #[test]
    fn query_to_json_never_panics(query in "[a-zA-Z0-9=&%+.\\[\\]{}\":,_-]{0,80}") {
        let descriptor = greeter_request();
        let _ = micro_api::dynamic::query_to_json(&descriptor, &query);
        let _ = micro_api::dynamic::query_to_message(descriptor, &query);
    }

    #[test]
    fn json_to_message_never_panics(body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = micro_api::dynamic::json_to_message(greeter_request(), &body);
    }
}

fn greeter_request() -> prost_reflect::MessageDescriptor {
    let pool = prost_reflect::DescriptorPool::decode(micro_testing::FILE_DESCRIPTOR_SET)
        .expect("greeter descriptors");
    pool.get_message_by_name("go.micro.srv.greeter.Request")
        .expect("Request")
}
