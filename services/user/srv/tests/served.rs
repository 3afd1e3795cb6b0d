//! user-srv registers and reflects go.micro.srv.user (handlers User and
//! Post) only: its descriptor set holds user.proto and post.proto, not the
//! API layer's api.proto.

mod support;

use std::collections::BTreeSet;

use user_srv::{FILE_DESCRIPTOR_SET, SRV_NAME};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn the_descriptor_set_holds_user_srvs_protos_only() {
    assert_eq!(
        support::served::services_in(FILE_DESCRIPTOR_SET),
        set(&["go.micro.srv.post.Post", "go.micro.srv.user.User"])
    );
    assert_eq!(
        support::served::files_in(FILE_DESCRIPTOR_SET),
        set(&["post/post.proto", "user/user.proto"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_record_and_reflection_name_its_own_service_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("user.db").display());
    let registry = support::topology::registry();
    let (srv, _store) = support::topology::user_srv(registry.clone(), &url).await;

    let endpoints = support::served::registered_endpoints(&registry, SRV_NAME).await;
    assert!(endpoints.contains("User.Login"), "{endpoints:?}");
    assert!(endpoints.contains("Post.CreatePost"), "{endpoints:?}");
    for endpoint in &endpoints {
        assert!(
            endpoint.starts_with("User.") || endpoint.starts_with("Post."),
            "{endpoint} is not user-srv's: {endpoints:?}"
        );
    }

    assert!(support::served::reflection_finds(srv.address, "go.micro.srv.user.User").await);
    assert!(support::served::reflection_finds(srv.address, "go.micro.srv.post.Post").await);
    for foreign in [
        "go.micro.api.user.Say",
        "go.micro.api.user.Account",
        "go.api.Request",
    ] {
        assert!(
            !support::served::reflection_finds(srv.address, foreign).await,
            "user-srv's reflection knows {foreign}"
        );
    }
    srv.stop().await;
}
