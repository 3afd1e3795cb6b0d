//! Password guessing against user-srv, through user-api as the gateway
//! drives it (the client's address in `Micro-Remote-Ip`): the attacker's
//! guesses are cut to a handful before waits begin, the answer is the same
//! for real and unknown accounts, and the real user, from their own
//! address, logs in at once during the attack. Also: a 16 KB unknown name
//! is a plain 404.

mod support;

use std::collections::HashMap;
use std::time::Instant;

use micro::{Client, ClientOptions};
use micro_api_proto::{Pair, Request as ApiRequest};
use serde_json::{Value, json};
use user_api::API_NAME;
use user_api::proto::api::{account_client::AccountClient, say_client::SayClient};
use user_srv::throttle::PAIR_FREE;

fn login(from: &str, username: &str, password: &str) -> ApiRequest {
    let mut header = HashMap::new();
    header.insert(
        "Content-Type".to_string(),
        Pair::new("Content-Type", vec!["application/json".into()]),
    );
    header.insert(
        "Micro-Remote-Ip".to_string(),
        Pair::new("Micro-Remote-Ip", vec![from.to_string()]),
    );
    ApiRequest {
        method: "POST".into(),
        path: "/user/account/login".into(),
        header,
        body: json!({"username": username, "password": password}).to_string(),
        url: "/user/account/login".into(),
        ..ApiRequest::default()
    }
}

/// The HTTP status and error JSON the gateway would answer.
fn outcome<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (i32, Value) {
    match result {
        Ok(_) => (200, Value::Null),
        Err(status) => {
            let err = micro_errors::MicroError::from_status(&status, API_NAME);
            let json: Value = serde_json::from_str(&err.to_json()).expect("error JSON");
            (err.code, json)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_are_throttled_and_the_owner_still_logs_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("user.db").display());
    let registry = support::topology::registry();
    let (srv, _store) = support::topology::user_srv(registry.clone(), &url).await;
    let api = support::topology::user_api(registry.clone()).await;
    let client = Client::new(registry.clone(), ClientOptions::default());
    let mut account = AccountClient::new(client.service(API_NAME));
    let mut say = SayClient::new(client.service(API_NAME));
    let password = "the owner's long password";
    let mut register = login("10.0.0.7", "alice", password);
    register.path = "/user/account/register".into();
    account.register(register).await.expect("register");

    // The attacker: 40 guesses as fast as the answers come.
    let attacker = "10.6.6.6";
    let started = Instant::now();
    let mut checked = 0;
    let mut throttled = Vec::new();
    for i in 0..40 {
        let (code, json) = outcome(
            account
                .login(login(attacker, "alice", &format!("guess number {i}")))
                .await,
        );
        match code {
            401 => checked += 1,
            429 => throttled.push(json),
            other => panic!("unexpected {other}: {json}"),
        }
    }
    let burst = started.elapsed();
    assert_eq!(checked, PAIR_FREE, "password checks allowed in a burst");
    let detail = throttled[0]["detail"].as_str().expect("detail");
    assert!(detail.starts_with("too many failed logins"), "{detail}");

    // The same answer for an account that does not exist.
    for i in 0..PAIR_FREE {
        let _ = account
            .login(login(attacker, "nobody", &format!("guess {i}")))
            .await;
    }
    let (code, unknown) = outcome(
        account
            .login(login(attacker, "nobody", "one more guess"))
            .await,
    );
    assert_eq!(code, 429);
    let strip = |mut v: Value| {
        v["detail"] = Value::Null; // the wait in seconds differs
        v
    };
    assert_eq!(strip(unknown), strip(throttled[0].clone()));

    // The owner, from their own address, logs in at once during the attack.
    let owner_started = Instant::now();
    let (code, json) = outcome(account.login(login("10.0.0.7", "alice", password)).await);
    let owner_took = owner_started.elapsed();
    assert_eq!(code, 200, "{json}");
    // Still throttled for the attacker, even with the right password.
    let (code, _) = outcome(account.login(login(attacker, "alice", password)).await);
    assert_eq!(code, 429);
    eprintln!(
        "40 guesses from one address in {burst:?}: {checked} password checks, {} refused \
         before any work; the owner from another address logged in in {owner_took:?}",
        throttled.len()
    );

    // Without the gateway and user-api: the peer address is the source.
    let mut direct =
        user_proto::user::user_client::UserClient::new(client.service(user_api::SRV_NAME));
    let mut codes = Vec::new();
    for i in 0..PAIR_FREE + 1 {
        let request = user_proto::user::LoginRequest {
            user_name: "alice".into(),
            user_pwd: format!("direct guess {i}"),
        };
        codes.push(outcome(direct.login(request).await).0);
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert!(
        codes[..PAIR_FREE as usize].iter().all(|c| *c == 401),
        "{codes:?}"
    );

    // A 16 KB unknown name: 404, not a transport failure, and not echoed.
    let name = "n".repeat(16 * 1024);
    let mut hello = login("10.0.0.7", "x", "x");
    hello.method = "GET".into();
    hello.body = String::new();
    hello
        .get
        .insert("name".into(), Pair::new("name", vec![name.clone()]));
    let (code, json) = outcome(say.hello(hello).await);
    assert_eq!(code, 404, "{json}");
    assert!(json.to_string().len() < 512, "{json}");

    api.stop().await;
    srv.stop().await;
}
