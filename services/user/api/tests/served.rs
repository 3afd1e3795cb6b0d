//! user-api registers and reflects go.micro.api.user (handlers Say, Account,
//! Article) only: its descriptor set holds api.proto and the go.api proto it
//! imports, not user-srv's user.proto and post.proto.

mod support;

use std::collections::BTreeSet;

use user_api::{API_NAME, FILE_DESCRIPTOR_SET};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn the_descriptor_set_holds_the_api_proto_only() {
    assert_eq!(
        support::served::services_in(FILE_DESCRIPTOR_SET),
        set(&[
            "go.micro.api.user.Account",
            "go.micro.api.user.Article",
            "go.micro.api.user.Say",
        ])
    );
    let files = support::served::files_in(FILE_DESCRIPTOR_SET);
    assert!(files.contains("api/user/api.proto"), "{files:?}");
    assert!(!files.contains("user/user.proto"), "{files:?}");
    assert!(!files.contains("post/post.proto"), "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_record_and_reflection_name_its_own_service_only() {
    let registry = support::topology::registry();
    let api = support::topology::user_api(registry.clone()).await;

    let endpoints = support::served::registered_endpoints(&registry, API_NAME).await;
    assert!(endpoints.contains("Say.Hello"), "{endpoints:?}");
    assert!(endpoints.contains("Account.Login"), "{endpoints:?}");
    assert!(endpoints.contains("Article.Create"), "{endpoints:?}");
    for endpoint in &endpoints {
        assert!(
            ["Say.", "Account.", "Article."]
                .iter()
                .any(|handler| endpoint.starts_with(handler)),
            "{endpoint} is not user-api's: {endpoints:?}"
        );
    }

    assert!(support::served::reflection_finds(api.address, "go.micro.api.user.Say").await);
    for foreign in [
        "go.micro.srv.user.User",
        "go.micro.srv.post.Post",
        "go.micro.srv.user.LoginRequest",
    ] {
        assert!(
            !support::served::reflection_finds(api.address, foreign).await,
            "user-api's reflection knows {foreign}"
        );
    }
    api.stop().await;
}
