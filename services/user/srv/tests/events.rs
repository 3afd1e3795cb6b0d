//! user-srv announces each stored change on go.micro.evt.user: a
//! UserEvent (type, id, username, time) in order, never a password or a
//! hash; a refused change announces nothing.

use std::sync::Arc;
use std::time::Duration;

use micro::broker::memory::MemoryBroker;
use micro::broker::{Broker, Event, HandlerError, SubscribeOptions};
use tonic::Request;
use user_srv::events::{Events, TOPIC};
use user_srv::password::Hasher;
use user_srv::proto::user as user_pb;
use user_srv::proto::user::user_server::User;
use user_srv::srv::UserService;
use user_srv::store::Store;
use user_srv::token::Tokens;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_changes_are_published_in_order_without_secrets() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("user.db").display());
    let store = Store::open(&url).await.expect("store");
    let broker = MemoryBroker::new();
    let received = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
    let _subscription = broker
        .subscribe(TOPIC, SubscribeOptions::default(), {
            let received = received.clone();
            Arc::new(move |event: Event| {
                received.lock().expect("lock").push(event);
                async { Ok::<(), HandlerError>(()) }
            })
        })
        .await
        .expect("subscribe");
    let (events, publisher) =
        Events::start(micro::Event::new(TOPIC, Arc::new(broker)).from_service(user_srv::SRV_NAME));
    let service = UserService::new(
        store.clone(),
        Hasher::new(2, 32).expect("hasher"),
        Tokens::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(3600),
        ),
    )
    .with_events(events);
    let users = service.user_handler();

    let password = "correct horse battery";
    users
        .register(Request::new(user_pb::Request {
            user_name: "huohuo".into(),
            user_pwd: password.into(),
            ..Default::default()
        }))
        .await
        .expect("registered");
    // Refused: no event.
    users
        .register(Request::new(user_pb::Request {
            user_name: "huohuo".into(),
            user_pwd: password.into(),
            ..Default::default()
        }))
        .await
        .expect_err("exists");
    let login = |pwd: &'static str| {
        let users = users.clone();
        async move {
            users
                .login(Request::new(user_pb::LoginRequest {
                    user_name: "huohuo".into(),
                    user_pwd: pwd.into(),
                }))
                .await
                .expect("login")
                .into_inner()
                .token
        }
    };
    let new_password = "battery staple horse";
    let token = login("correct horse battery").await;
    users
        .change_password(authorized(
            token,
            Request::new(user_pb::ChangePasswordRequest {
                old_pwd: password.into(),
                new_pwd: new_password.into(),
            }),
        ))
        .await
        .expect("changed");
    let token = login("battery staple horse").await;
    users
        .delete_user(authorized(token, Request::new(user_pb::Request::default())))
        .await
        .expect("deleted");

    drop((users, service));
    publisher.finish(Duration::from_secs(10)).await;
    let received = received.lock().expect("lock");
    let bodies: Vec<serde_json::Value> = received
        .iter()
        .map(|e| serde_json::from_slice(&e.message().body).expect("JSON"))
        .collect();
    let kinds: Vec<&str> = bodies
        .iter()
        .map(|b| b["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["registered", "password_changed", "deleted"]);
    for (event, body) in received.iter().zip(&bodies) {
        assert_eq!(body["id"], "1");
        assert_eq!(body["username"], "huohuo");
        assert!(
            body["time"]
                .as_str()
                .expect("time")
                .parse::<i64>()
                .expect("seconds")
                > 0
        );
        assert_eq!(body.as_object().expect("object").len(), 4, "{body}");
        let header = &event.message().header;
        assert_eq!(header["Content-Type"], "application/json");
        assert_eq!(header["Micro-From-Service"], user_srv::SRV_NAME);
        let raw = String::from_utf8_lossy(&event.message().body);
        for secret in [password, new_password, "$argon2"] {
            assert!(!raw.contains(secret), "{raw}");
        }
    }
}

fn authorized<T>(token: String, mut request: Request<T>) -> Request<T> {
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}
