//! The whole flow through the API layer, as `micro api --handler=api` drives
//! it: 2 user-srv instances on one store + user-api, on a memory registry.
//! Every response body and every log line of the run is then searched for the
//! password, `$argon2` and the stored hash: none may appear.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use micro::{Client, ClientOptions, ServiceChannel};
use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use serde_json::{Value, json};
use user_api::API_NAME;
use user_api::proto::api::{account_client::AccountClient, say_client::SayClient};

/// Everything logged during the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Value,
    token: Option<&str>,
) -> ApiRequest {
    let mut header = HashMap::new();
    header.insert(
        "Content-Type".to_string(),
        Pair::new("Content-Type", vec!["application/json".into()]),
    );
    if let Some(token) = token {
        header.insert(
            "Authorization".to_string(),
            Pair::new("Authorization", vec![format!("Bearer {token}")]),
        );
    }
    ApiRequest {
        method: method.into(),
        path: path.into(),
        header,
        get: query
            .iter()
            .map(|(k, v)| (k.to_string(), Pair::new(*k, vec![v.to_string()])))
            .collect(),
        post: HashMap::new(),
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        url: path.into(),
    }
}

/// Status and JSON body, as the gateway would produce them.
struct Reply {
    status: i32,
    body: Value,
    raw: String,
}

fn reply(result: Result<tonic::Response<ApiResponse>, tonic::Status>) -> Reply {
    match result {
        Ok(response) => {
            let response = response.into_inner();
            let status = if response.status_code == 0 {
                200
            } else {
                response.status_code
            };
            Reply {
                status,
                body: serde_json::from_str(&response.body).expect("JSON body"),
                raw: response.body,
            }
        }
        Err(status) => {
            let err = micro_errors::MicroError::from_status(&status, API_NAME);
            Reply {
                status: err.code,
                body: serde_json::from_str(&err.to_json()).expect("error JSON"),
                raw: err.to_json(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_hello_login_change_password_delete_through_the_api_layer() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Global: the servers log from every runtime thread. This test binary
    // holds only this test.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("install the log capture");

    let dir = tempfile::tempdir().expect("tmp");
    let store_url = format!("sqlite://{}", dir.path().join("user.db").display());
    let registry = support::topology::registry();
    let (srv1, store) = support::topology::user_srv(registry.clone(), &store_url).await;
    let (srv2, _) = support::topology::user_srv(registry.clone(), &store_url).await;
    let api = support::topology::user_api(registry.clone()).await;

    let client = Client::new(registry.clone(), ClientOptions::default());
    let channel: ServiceChannel = client.service(API_NAME);
    let mut say = SayClient::new(channel.clone());
    let mut account = AccountClient::new(channel.clone());
    let mut bodies: Vec<String> = Vec::new();
    let password = "correct horse battery staple";
    let new_password = "a different long passphrase";

    // Hello without a name: the tutorial's exact error.
    let r = reply(
        say.hello(request("GET", "/user/say/hello", &[], Value::Null, None))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 400);
    assert_eq!(
        r.raw,
        r#"{"id":"go.micro.api.user","code":400,"detail":"Name cannot be blank","status":"Bad Request"}"#
    );

    // Unknown user: 404 in the same format.
    let r = reply(
        say.hello(request(
            "GET",
            "/user/say/hello",
            &[("name", "huohuo")],
            Value::Null,
            None,
        ))
        .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(r.body["id"], "go.micro.api.user");

    // Register.
    let r = reply(
        account
            .register(request(
                "POST",
                "/user/account/register",
                &[],
                json!({"username": "huohuo", "password": password, "email": "huo@example.com"}),
                None,
            ))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.body["username"], "huohuo");
    let id = r.body["id"].as_str().expect("id string").to_string();

    // Validation and duplicates.
    for (body, status) in [
        (json!({"username": "huohuo", "password": password}), 409),
        (json!({"username": "hh", "password": password}), 400),
        (json!({"username": "someone", "password": "short"}), 400),
        (
            json!({"username": "someone", "password": password, "email": "not-an-email"}),
            400,
        ),
    ] {
        let r = reply(
            account
                .register(request("POST", "/user/account/register", &[], body, None))
                .await,
        );
        bodies.push(r.raw.clone());
        assert_eq!(r.status, status, "{}", r.raw);
    }
    let r = reply(
        account
            .register(request(
                "POST",
                "/user/account/register",
                &[],
                Value::Null,
                None,
            ))
            .await,
    );
    assert_eq!(r.status, 400, "empty body: {}", r.raw);
    let mut malformed = request("POST", "/user/account/register", &[], Value::Null, None);
    malformed.body = "{not json".into();
    let r = reply(account.register(malformed).await);
    assert_eq!(r.status, 400, "{}", r.raw);

    // Hello finds the user: {"id","username"}.
    let r = reply(
        say.hello(request(
            "GET",
            "/user/say/hello",
            &[("name", "huohuo")],
            Value::Null,
            None,
        ))
        .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, json!({"id": id, "username": "huohuo"}));

    // Wrong password and unknown user: the same 401.
    let wrong = reply(
        account
            .login(request(
                "POST",
                "/user/account/login",
                &[],
                json!({"username": "huohuo", "password": "wrong password!"}),
                None,
            ))
            .await,
    );
    let unknown = reply(
        account
            .login(request(
                "POST",
                "/user/account/login",
                &[],
                json!({"username": "nobody", "password": "wrong password!"}),
                None,
            ))
            .await,
    );
    bodies.push(wrong.raw.clone());
    bodies.push(unknown.raw.clone());
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.raw, unknown.raw);
    // Both do one Argon2 verification; report the times (not asserted: the
    // machine may be noisy).
    let mut times = [Vec::new(), Vec::new()];
    // (Three more each: five failures of one account from one source are
    // allowed before the throttle makes the next one wait.)
    for _ in 0..3 {
        for (i, name) in ["huohuo", "nobody"].iter().enumerate() {
            let started = std::time::Instant::now();
            let r = reply(
                account
                    .login(request(
                        "POST",
                        "/user/account/login",
                        &[],
                        json!({"username": name, "password": "wrong password!"}),
                        None,
                    ))
                    .await,
            );
            times[i].push(started.elapsed());
            assert_eq!(r.status, 401);
        }
    }
    for t in &mut times {
        t.sort();
    }
    eprintln!(
        "login 401 median: wrong password {:?}, unknown user {:?}",
        times[0][1], times[1][1]
    );

    // Login.
    let r = reply(
        account
            .login(request(
                "POST",
                "/user/account/login",
                &[],
                json!({"username": "huohuo", "password": password}),
                None,
            ))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["user"], json!({"id": id, "username": "huohuo"}));
    let token = r.body["token"].as_str().expect("token").to_string();

    // Changing the password needs the token and the old password.
    let change = json!({"old_password": password, "new_password": new_password});
    let r = reply(
        account
            .change_password(request(
                "POST",
                "/user/account/change-password",
                &[],
                change.clone(),
                None,
            ))
            .await,
    );
    assert_eq!(r.status, 401, "{}", r.raw);
    let r = reply(
        account
            .change_password(request(
                "POST",
                "/user/account/change-password",
                &[],
                change.clone(),
                Some("forged.token.value"),
            ))
            .await,
    );
    assert_eq!(r.status, 401, "{}", r.raw);
    let r = reply(
        account
            .change_password(request(
                "POST",
                "/user/account/change-password",
                &[],
                json!({"old_password": "not it at all", "new_password": new_password}),
                Some(&token),
            ))
            .await,
    );
    assert_eq!(r.status, 401, "{}", r.raw);
    let r = reply(
        account
            .change_password(request(
                "POST",
                "/user/account/change-password",
                &[],
                change,
                Some(&token),
            ))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 200, "{}", r.raw);

    let old = reply(
        account
            .login(request(
                "POST",
                "/user/account/login",
                &[],
                json!({"username": "huohuo", "password": password}),
                None,
            ))
            .await,
    );
    assert_eq!(old.status, 401);
    let new = reply(
        account
            .login(request(
                "POST",
                "/user/account/login",
                &[],
                json!({"username": "huohuo", "password": new_password}),
                None,
            ))
            .await,
    );
    bodies.push(new.raw.clone());
    assert_eq!(new.status, 200, "{}", new.raw);
    let new_token = new.body["token"].as_str().expect("token").to_string();

    // The token from before the password change is revoked.
    let r = reply(
        account
            .list(request(
                "GET",
                "/user/account/list",
                &[],
                Value::Null,
                Some(&token),
            ))
            .await,
    );
    assert_eq!(r.status, 401, "{}", r.raw);
    assert!(r.raw.contains("revoked"), "{}", r.raw);
    let token = new_token;

    // Get: the email only for its owner.
    let r = reply(
        account
            .get(request(
                "GET",
                "/user/account/get",
                &[("id", &id)],
                Value::Null,
                None,
            ))
            .await,
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["email"], "", "anonymous callers see no email");
    let r = reply(
        account
            .get(request(
                "GET",
                "/user/account/get",
                &[("id", &id)],
                Value::Null,
                Some(&token),
            ))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["email"], "huo@example.com");
    // List: a token is needed.
    let r = reply(
        account
            .list(request(
                "GET",
                "/user/account/list",
                &[("page_size", "1000")],
                Value::Null,
                None,
            ))
            .await,
    );
    assert_eq!(r.status, 401, "{}", r.raw);
    let r = reply(
        account
            .list(request(
                "GET",
                "/user/account/list",
                &[("page_size", "1000")],
                Value::Null,
                Some(&token),
            ))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["users"].as_array().expect("users").len(), 1);

    // The stored hash, to look for below.
    let stored_hash = store
        .user_by_name("huohuo")
        .await
        .expect("get")
        .expect("found")
        .password_hash;
    assert!(stored_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));

    // Delete needs the token; then the user is gone.
    let r = reply(
        account
            .delete(request(
                "POST",
                "/user/account/delete",
                &[],
                Value::Null,
                None,
            ))
            .await,
    );
    assert_eq!(r.status, 401);
    let r = reply(
        account
            .delete(request(
                "POST",
                "/user/account/delete",
                &[],
                Value::Null,
                Some(&token),
            ))
            .await,
    );
    bodies.push(r.raw.clone());
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["deleted"], true);
    let r = reply(
        say.hello(request(
            "GET",
            "/user/say/hello",
            &[("name", "huohuo")],
            Value::Null,
            None,
        ))
        .await,
    );
    assert_eq!(r.status, 404, "{}", r.raw);

    api.stop().await;
    srv1.stop().await;
    srv2.stop().await;

    let logs = String::from_utf8_lossy(&logs.0.lock().expect("lock")).to_string();
    assert!(logs.contains("Registering node"), "log capture works");
    for secret in [password, new_password, "$argon2", &stored_hash] {
        for body in &bodies {
            assert!(
                !body.contains(secret),
                "response {body} contains {secret:?}"
            );
        }
        assert!(!logs.contains(secret), "the log contains {secret:?}");
    }
}
