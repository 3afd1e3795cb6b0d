//! Readiness, and the gRPC health service (`grpc.health.v1.Health`) that
//! reports it.
//!
//! A [`Readiness`] is a set of named conditions: `registry` (is this node
//! registered?), each dependency check the service adds (user-srv: `store`),
//! and whether a graceful stop has begun. It is ready when every condition
//! holds and no stop has begun. The gRPC health service and the admin
//! listener's `/health/ready` both answer from it, so the two never disagree.
//!
//! ```
//! use micro_server::Readiness;
//! let readiness = Readiness::new();
//! readiness.set("registry", Err("not registered yet".into()));
//! assert!(!readiness.report().ready());
//! readiness.set("registry", Ok(()));
//! assert!(readiness.report().ready());
//! readiness.begin_stop();
//! assert!(!readiness.report().ready());
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A dependency check: `Ok` when the dependency answers, else why not.
pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What readiness is made of, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// A graceful stop has begun.
    pub stopping: bool,
    /// Each condition: `None` when it holds, else why not.
    pub checks: BTreeMap<String, Option<String>>,
    /// Degradations that do not make the node unready, by name (the
    /// gateway routing from its last registry listing while the registry is
    /// unreachable).
    pub notes: BTreeMap<String, String>,
    /// The server stopped: health watches end.
    #[serde(skip)]
    pub closed: bool,
}

impl Report {
    pub fn ready(&self) -> bool {
        !self.stopping && !self.closed && self.checks.values().all(Option::is_none)
    }

    /// `/health/ready`'s JSON body: `{"status":"SERVING"|"NOT_SERVING","checks":{"registry":"ok",...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut checks = serde_json::Map::new();
        for (name, failure) in &self.checks {
            let value = failure.as_deref().unwrap_or("ok");
            checks.insert(name.clone(), value.into());
        }
        if self.stopping || self.closed {
            checks.insert("shutdown".into(), "stopping".into());
        }
        let mut body = serde_json::json!({
            "status": if self.ready() { "SERVING" } else { "NOT_SERVING" },
            "checks": checks,
        });
        if !self.notes.is_empty() {
            body["degraded"] = serde_json::json!(self.notes);
        }
        body
    }
}

/// Shared readiness state; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<Report>>,
    checks: Arc<Mutex<Vec<(String, CheckFn)>>>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("report", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness {
            state: Arc::new(watch::channel(Report::default()).0),
            checks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Sets condition `name`: `Ok` holds, `Err` says why not.
    pub fn set(&self, name: &str, result: Result<(), String>) {
        let failure = result.err();
        self.state.send_if_modified(|report| {
            if report.checks.get(name) == Some(&failure) {
                return false;
            }
            report.checks.insert(name.to_string(), failure);
            true
        });
    }

    /// Sets or clears (`None`) a degradation note: shown by `/health/ready`
    /// under `degraded`, without changing readiness.
    pub fn note(&self, name: &str, note: Option<String>) {
        self.state.send_if_modified(|report| match note {
            Some(note) if report.notes.get(name) != Some(&note) => {
                report.notes.insert(name.to_string(), note);
                true
            }
            Some(_) => false,
            None => report.notes.remove(name).is_some(),
        });
    }

    /// Adds a dependency check, run by [`run_checks`](Self::run_checks); it
    /// fails until it first passes.
    pub fn add_check<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: CheckFn = Arc::new(move || Box::pin(check()));
        self.set(name, Err("not checked yet".into()));
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), check));
    }

    /// Whether dependency checks were added.
    pub fn has_checks(&self) -> bool {
        !self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Runs every dependency check once (each bounded by `timeout`) and
    /// records the results.
    pub async fn check_once(&self, timeout: Duration) {
        let checks: Vec<(String, CheckFn)> = self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, check) in checks {
            let result = match tokio::time::timeout(timeout, check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            let was_ok = self
                .state
                .borrow()
                .checks
                .get(&name)
                .is_some_and(Option::is_none);
            match (&result, was_ok) {
                (Err(why), true) => tracing::warn!("Health [{name}] check failing: {why}"),
                (Ok(()), false) => tracing::info!("Health [{name}] check passing"),
                _ => {}
            }
            self.set(&name, result);
        }
    }

    /// Runs the dependency checks every `interval` (each bounded by the
    /// interval), forever.
    pub async fn run_checks(self, interval: Duration) {
        loop {
            self.check_once(interval).await;
            tokio::time::sleep(interval).await;
        }
    }

    /// A graceful stop has begun: not ready from now on.
    pub fn begin_stop(&self) {
        self.state
            .send_if_modified(|r| !std::mem::replace(&mut r.stopping, true));
    }

    /// The server stopped: health watches end after saying so.
    pub fn close(&self) {
        self.state
            .send_if_modified(|r| !std::mem::replace(&mut r.closed, true));
    }

    pub fn report(&self) -> Report {
        self.state.borrow().clone()
    }

    /// Follows the report as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Report> {
        self.state.subscribe()
    }
}

/// `grpc.health.v1.Health` over a [`Readiness`]: every name in `services`
/// and `""` have the readiness status; other names are unknown.
#[derive(Clone, Debug)]
pub struct HealthService {
    readiness: Readiness,
    services: Arc<HashSet<String>>,
}

impl HealthService {
    pub fn new(readiness: Readiness, services: impl IntoIterator<Item = String>) -> Self {
        let mut services: HashSet<String> = services.into_iter().collect();
        services.insert(String::new());
        HealthService {
            readiness,
            services: Arc::new(services),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> HealthServer<HealthService> {
        HealthServer::new(self)
    }
}

fn status_of(report: &Report) -> ServingStatus {
    if report.ready() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        if !self.services.contains(name) {
            return Err(Status::not_found(format!(
                "service {name:?} is not served here"
            )));
        }
        Ok(Response::new(response(status_of(&self.readiness.report()))))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let name = &request.get_ref().service;
        if !self.services.contains(name) {
            let once = response(ServingStatus::ServiceUnknown);
            let pending = futures::stream::pending();
            return Ok(Response::new(Box::pin(
                futures::stream::once(async move { Ok(once) }).chain(pending),
            )));
        }
        let rx = self.readiness.subscribe();
        // Each change of status is sent once; the stream ends once the
        // server is closed, after saying NOT_SERVING.
        let stream = futures::stream::unfold(
            (rx, None::<ServingStatus>, false),
            |(mut rx, last, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let (status, closed) = {
                        let report = rx.borrow_and_update();
                        (status_of(&report), report.closed)
                    };
                    if last != Some(status) || closed {
                        if closed && last == Some(status) {
                            return None;
                        }
                        return Some((Ok(response(status)), (rx, Some(status), closed)));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn check_answers_for_known_names_only() {
        let readiness = Readiness::new();
        readiness.set("registry", Ok(()));
        let health = HealthService::new(readiness.clone(), ["go.micro.srv.x".to_string()]);
        for name in ["", "go.micro.srv.x"] {
            let reply = health
                .check(Request::new(HealthCheckRequest {
                    service: name.into(),
                }))
                .await
                .expect("known");
            assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
        }
        let err = health
            .check(Request::new(HealthCheckRequest {
                service: "other".into(),
            }))
            .await
            .expect_err("unknown");
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    async fn next(s: &mut WatchStream) -> Option<i32> {
        s.next().await.map(|r| r.expect("ok").status)
    }

    #[tokio::test]
    async fn watch_follows_changes_and_ends_when_closed() {
        let readiness = Readiness::new();
        readiness.set("registry", Err("not registered yet".into()));
        let health = HealthService::new(readiness.clone(), Vec::new());
        let mut stream = health
            .watch(Request::new(HealthCheckRequest::default()))
            .await
            .expect("watch")
            .into_inner();
        assert_eq!(
            next(&mut stream).await,
            Some(ServingStatus::NotServing as i32)
        );
        readiness.set("registry", Ok(()));
        assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving as i32));
        readiness.begin_stop();
        assert_eq!(
            next(&mut stream).await,
            Some(ServingStatus::NotServing as i32)
        );
        readiness.close();
        assert_eq!(next(&mut stream).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn checks_fail_until_they_pass_and_time_out() {
        let readiness = Readiness::new();
        readiness.add_check("store", || async { Ok(()) });
        assert!(!readiness.report().ready());
        readiness.check_once(Duration::from_secs(1)).await;
        assert!(readiness.report().ready());
        readiness.add_check("slow", futures::future::pending);
        readiness.check_once(Duration::from_secs(1)).await;
        let report = readiness.report();
        assert!(!report.ready());
        assert_eq!(report.to_json()["checks"]["slow"], "no answer within 1s");
        assert_eq!(report.to_json()["checks"]["store"], "ok");
    }

    #[test]
    fn notes_show_without_changing_readiness() {
        let readiness = Readiness::new();
        readiness.set("registry", Ok(()));
        readiness.note("registry", Some("unreachable: connection refused".into()));
        let report = readiness.report();
        assert!(report.ready());
        let json = report.to_json();
        assert_eq!(json["status"], "SERVING");
        assert_eq!(
            json["degraded"]["registry"],
            "unreachable: connection refused"
        );
        readiness.note("registry", None);
        assert!(readiness.report().to_json().get("degraded").is_none());
    }
}
