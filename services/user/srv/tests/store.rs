//! The store against embedded SQLite and a real PostgreSQL: the same checks.

mod support;

use user_srv::store::{Store, StoreError};

async fn exercise(store: &Store) {
    let a = store
        .create_user("alice", Some("alice@example.com"), "$argon2id$fake-a", 100)
        .await
        .expect("create alice");
    assert!(a.id > 0);
    assert_eq!(a.created_time, 100);
    assert_eq!(a.email.as_deref(), Some("alice@example.com"));
    let b = store
        .create_user("bob", None, "$argon2id$fake-b", 101)
        .await
        .expect("create bob");
    assert!(b.id > a.id);

    match store.create_user("alice", None, "x", 102).await {
        Err(StoreError::DuplicateName(name)) => assert_eq!(name, "alice"),
        other => panic!("duplicate name accepted: {other:?}"),
    }

    // Parameterised: a hostile name is just a name.
    let hostile = "x'); DROP TABLE users; --";
    let h = store
        .create_user(hostile, None, "$argon2id$fake-h", 103)
        .await
        .expect("stored literally");
    assert_eq!(
        store
            .user_by_name(hostile)
            .await
            .expect("get")
            .expect("found")
            .id,
        h.id
    );

    assert_eq!(
        store
            .user_by_name("alice")
            .await
            .expect("get")
            .expect("found"),
        a
    );
    assert_eq!(
        store.user_by_id(b.id).await.expect("get").expect("found"),
        b
    );
    assert!(store.user_by_name("carol").await.expect("get").is_none());
    assert!(store.user_by_id(999_999).await.expect("get").is_none());

    assert!(
        store
            .update_password(a.id, "$argon2id$new", 200)
            .await
            .expect("update")
    );
    let a2 = store.user_by_id(a.id).await.expect("get").expect("found");
    assert_eq!(a2.password_hash, "$argon2id$new");
    assert_eq!(a2.updated_time, 200);
    assert_eq!(
        a2.token_version,
        a.token_version + 1,
        "a password change revokes earlier tokens"
    );
    assert!(
        !store
            .update_password(999_999, "x", 200)
            .await
            .expect("update")
    );

    let page = store.list_users(0, 2).await.expect("list");
    assert_eq!(page.iter().map(|u| u.id).collect::<Vec<_>>(), [a.id, b.id]);
    let rest = store.list_users(b.id, 10).await.expect("list");
    assert_eq!(rest.iter().map(|u| u.id).collect::<Vec<_>>(), [h.id]);

    let p1 = store
        .create_post(a.id, "first", "hello", 300)
        .await
        .expect("post");
    let p2 = store
        .create_post(a.id, "second", "again", 301)
        .await
        .expect("post");
    assert_eq!(
        store.post_by_id(p1.id).await.expect("get").expect("found"),
        p1
    );
    let posts = store.posts_by_user(a.id, 10).await.expect("posts");
    assert_eq!(
        posts.iter().map(|p| p.id).collect::<Vec<_>>(),
        [p2.id, p1.id]
    );
    match store.create_post(999_999, "t", "c", 302).await {
        Err(StoreError::NoSuchUser(999_999)) => {}
        other => panic!("post for nobody: {other:?}"),
    }

    assert!(store.delete_user(a.id).await.expect("delete"));
    assert!(store.user_by_id(a.id).await.expect("get").is_none());
    assert!(
        store.post_by_id(p1.id).await.expect("get").is_none(),
        "posts go with their user"
    );
    assert!(!store.delete_user(a.id).await.expect("delete again"));
}

/// Two instances on one store: concurrent registrations all land.
async fn shared_by_two_instances(url: &str) {
    let one = Store::open(url).await.expect("open one");
    let two = Store::open(url)
        .await
        .expect("open two (migrations are idempotent)");
    let writes = (0..20).map(|i| {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        async move { store.create_user(&format!("user{i}"), None, "h", i).await }
    });
    for result in futures::future::join_all(writes).await {
        result.expect("concurrent create");
    }
    let all = one.list_users(0, 100).await.expect("list");
    assert_eq!(all.len(), 20);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/user.db").display()
    );
    let store = Store::open(&url)
        .await
        .expect("open creates the file and schema");
    exercise(&store).await;
    store.close().await;
    // Reopening keeps the data and does not re-run migrations destructively.
    let again = Store::open(&url).await.expect("reopen");
    assert!(again.user_by_name("bob").await.expect("get").is_some());
    again.close().await;
}

#[tokio::test]
async fn sqlite_store_shared_by_two_instances() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("user.db").display());
    shared_by_two_instances(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_share_a_fresh_sqlite_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("user.db").display());
    let opens = (0..4).map(|_| Store::open(&url));
    let stores: Vec<Store> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.expect("every instance opens the store"))
        .collect();
    for (i, store) in stores.iter().enumerate() {
        store
            .create_user(&format!("user{i}"), None, "h", 1)
            .await
            .expect("write");
    }
    assert_eq!(stores[0].list_users(0, 10).await.expect("list").len(), 4);
}

#[tokio::test]
async fn postgres_store() {
    let pg = support::postgres::Postgres::start().await;
    let url = pg.database("users_a").await;
    let store = Store::open(&url).await.expect("open postgres");
    exercise(&store).await;
    store.close().await;
    let url = pg.database("users_b").await;
    shared_by_two_instances(&url).await;
}

#[tokio::test]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    user_srv::store::prepare_data_dir(&data).expect("data dir");
    let url = user_srv::store::default_url(&data);
    let store = Store::open(&url).await.expect("open");
    store
        .create_user("alice", Some("a@example.com"), "$argon2id$x", 1)
        .await
        .expect("write");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    for name in ["user.db", "user.db-wal", "user.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    store.close().await;

    // A file left readable by others (an older version, a copy) is fixed.
    std::fs::set_permissions(data.join("user.db"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let store = Store::open(&url).await.expect("reopen");
    assert_eq!(mode(&data.join("user.db")), 0o600);
    store.close().await;
}

#[tokio::test]
async fn a_corrupt_store_says_so_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("user.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).expect("garbage");
    let started = std::time::Instant::now();
    let err = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect_err("corrupt");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unusable { .. }), "{text}");
    assert!(text.contains("not a database"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!err.is_usage());
    eprintln!("corrupt store refused in {:?}: {text}", started.elapsed());
}

#[tokio::test]
async fn a_bad_data_dir_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("file");
    let err = user_srv::store::prepare_data_dir(&file).expect_err("not a dir");
    assert!(err.is_usage());
    assert!(err.to_string().contains("--data_dir"), "{err}");
    let err = user_srv::store::prepare_data_dir(&file.join("below")).expect_err("below a file");
    assert!(err.to_string().contains("--data_dir"), "{err}");
    let err = Store::open("mysql://h/db").await.expect_err("bad url");
    assert!(
        err.is_usage() && err.to_string().contains("--database_url"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_urls_are_clear_errors() {
    for (url, wanted) in [
        ("mysql://h/db", "expected sqlite://PATH or postgres://"),
        ("sqlite://", "no file path"),
    ] {
        let err = Store::open(url).await.expect_err("refused").to_string();
        assert!(err.contains(wanted), "{url}: {err}");
    }
    let err = Store::open("postgres://bob:s3cret@127.0.0.1:1/db")
        .await
        .expect_err("unreachable")
        .to_string();
    assert!(!err.contains("s3cret"), "password in error: {err}");
}
