//! `micro web` in a real browser: headless Chromium, driven over WebDriver
//! (`chromedriver`), against a real etcd and a real greeter service; and a
//! page streaming from the greeter through `micro api`'s WebSocket.
//!
//! The whole test runs in a fresh network namespace holding only loopback
//! (the test re-runs itself under `unshare --net`), so Chromium cannot reach
//! anything but the servers of the test. Every process is stopped by its
//! PID, every temporary directory removed, every wait has a deadline.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install -y chromium
//! chromium-driver`; or `$CHROMIUM_BIN` / `$CHROMEDRIVER_BIN`), `etcd`, and
//! root (for the namespace). Set `MICRO_WEB_SCREENSHOT=/path/file.png` to
//! save a screenshot of the dashboard with a service selected and a call
//! answered.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_client::{Client, ClientOptions};
use micro_registry::SharedRegistry;
use micro_registry_etcd::testing::EtcdCluster;
use micro_testing::{TestGreeter, TestServer, loopback_options};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GREETER: &str = "go.micro.srv.greeter";
const INSTALL: &str = "apt-get install -y chromium chromium-driver";
/// Longest wait for anything to show on the page.
const WAIT: Duration = Duration::from_secs(15);

#[test]
fn dashboard_shows_services_live_and_calls_them_in_chromium() {
    // Before the namespace: a missing tool fails here, naming the install line.
    let tools = Tools::find();
    if micro_registry_mdns::testing::rerun_in_netns() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scenario(tools));
}

/// The browser and its driver.
#[derive(Clone, Debug)]
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        let find = |env: &str, names: &[&str]| -> PathBuf {
            if let Some(path) = std::env::var_os(env) {
                return PathBuf::from(path);
            }
            for name in names {
                // Debian's /usr/bin/chromium is a shell wrapper; take the binary.
                if name.starts_with('/') {
                    if Path::new(name).is_file() {
                        return PathBuf::from(name);
                    }
                    continue;
                }
                for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
                    if dir.join(name).is_file() {
                        return dir.join(name);
                    }
                }
            }
            panic!(
                "{} not found (looked for {names:?} and ${env}): install it with `{INSTALL}` \
                 (scripts/test does, as root)",
                names[0]
            );
        };
        Tools {
            chromium: find(
                "CHROMIUM_BIN",
                &["/usr/lib/chromium/chromium", "chromium", "chromium-browser"],
            ),
            chromedriver: find("CHROMEDRIVER_BIN", &["chromedriver"]),
        }
    }
}

async fn scenario(tools: Tools) {
    let etcd = EtcdCluster::single()
        .await
        .expect("etcd (apt-get install etcd-server)");
    let registry: SharedRegistry = Arc::new(etcd.registry().await);

    // micro web, as `micro web` runs it, on a free loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let web = tokio::spawn(micro_web::serve(
        Client::new(registry.clone(), ClientOptions::default()),
        listener,
        micro_web::WebOptions::for_address(&address),
        async move {
            let _ = web_stopped.await;
        },
    ));

    let driver = Driver::start(&tools).await;
    let page = format!("http://{address}/");
    let result = drive(&driver, &page, registry.clone()).await;
    driver.stop().await;
    let _ = stop_web.send(());
    tokio::time::timeout(Duration::from_secs(10), web)
        .await
        .expect("micro web stops within 10 s")
        .unwrap()
        .unwrap();
    drop(etcd);
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn drive(driver: &Driver, page: &str, registry: SharedRegistry) -> Result<(), String> {
    driver.post("/url", json!({ "url": page })).await?;
    // Listed and live: no services yet.
    driver
        .wait_for("the page to follow the registry", async || {
            Ok(driver.text("#live").await? == "live" && driver.displayed("#no-services").await?)
        })
        .await?;

    // A greeter registers: it shows without a reload.
    let server = tokio::task::spawn_blocking({
        let registry = registry.clone();
        move || {
            TestServer::start(
                registry,
                GREETER,
                TestGreeter::new("browser"),
                loopback_options(),
            )
        }
    })
    .await
    .unwrap();
    let registered = Instant::now();
    let item = format!("#services li[data-service=\"{GREETER}\"]");
    driver
        .wait_for("the greeter in the list", async || {
            driver.exists(&item).await
        })
        .await?;
    println!(
        "registered → shown on the page: {:.0} ms",
        registered.elapsed().as_secs_f64() * 1000.0
    );

    // Its page: the node with its health, the endpoint.
    driver.click(&format!("{item} a")).await?;
    let node = format!("#nodes tr[data-node=\"{}\"]", server.node_id);
    driver
        .wait_for("the node, serving", async || {
            Ok(driver.exists(&node).await?
                && driver.text(&format!("{node} .badge")).await? == "SERVING")
        })
        .await?;
    let row = driver.text(&node).await?;
    if !row.contains(&server.address.to_string()) {
        return Err(format!(
            "the node row lacks the address {}: {row:?}",
            server.address
        ));
    }
    driver
        .wait_for("the endpoint's request template", async || {
            Ok(driver
                .exists("details[data-endpoint=\"Greeter.Hello\"]")
                .await?
                && driver
                    .value("#call-request")
                    .await?
                    .contains("\"name\": \"\""))
        })
        .await?;

    // The form: edit the JSON, submit, see the answer.
    driver
        .click("#call-endpoint option[value=\"Greeter.Hello\"]")
        .await?;
    driver.clear("#call-request").await?;
    driver
        .type_text("#call-request", r#"{"name": "Chromium"}"#)
        .await?;
    if !driver.displayed("#no-subscriptions").await? {
        return Err("the greeter subscribes to nothing, and its page must say so".into());
    }
    driver.click("#call-submit").await?;
    driver
        .wait_for("the call's answer", async || {
            Ok(
                driver.attribute("#call-result", "data-state").await? == "ok"
                    && driver
                        .text("#call-result")
                        .await?
                        .contains("Hello Chromium from browser"),
            )
        })
        .await?;
    if let Some(path) = std::env::var_os("MICRO_WEB_SCREENSHOT") {
        driver
            .click("details[data-endpoint=\"Greeter.Hello\"] summary")
            .await?;
        let png = driver.get("/screenshot").await?;
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or(""))
            .map_err(|e| format!("screenshot: {e}"))?;
        std::fs::write(&path, bytes).map_err(|e| format!("write screenshot: {e}"))?;
        println!("screenshot: {}", Path::new(&path).display());
    }

    // A failing call shows the service's error.
    driver.clear("#call-request").await?;
    driver
        .type_text("#call-request", r#"{"name": "fail"}"#)
        .await?;
    driver.click("#call-submit").await?;
    driver
        .wait_for("the call's error", async || {
            Ok(
                driver.attribute("#call-result", "data-state").await? == "error"
                    && driver
                        .text("#call-result")
                        .await?
                        .contains("failed on purpose"),
            )
        })
        .await?;

    // A streaming endpoint: each message shows as it arrives, then the end.
    driver
        .click("#call-endpoint option[value=\"Greeter.Stream\"]")
        .await?;
    driver.clear("#call-request").await?;
    driver
        .type_text("#call-request", r#"{"name": "Chromium", "count": 3}"#)
        .await?;
    driver.click("#call-submit").await?;
    driver
        .wait_for("the stream's three messages and its end", async || {
            let text = driver.text("#call-result").await?;
            Ok(
                driver.attribute("#call-result", "data-state").await? == "ok"
                    && driver.attribute("#call-result", "data-count").await? == "3"
                    && ["Hello Chromium 1", "Hello Chromium 2", "Hello Chromium 3"]
                        .iter()
                        .all(|m| text.contains(m)),
            )
        })
        .await?;
    // A stream that fails after a message: the message, then the error.
    driver.clear("#call-request").await?;
    driver
        .type_text("#call-request", r#"{"name": "fail", "count": 3}"#)
        .await?;
    driver.click("#call-submit").await?;
    driver
        .wait_for("the stream's message then its error", async || {
            let text = driver.text("#call-result").await?;
            Ok(
                driver.attribute("#call-result", "data-state").await? == "error"
                    && text.contains("Hello fail 1")
                    && text.contains("failed on purpose"),
            )
        })
        .await?;

    // The greeter stops (deregisters): it leaves the list, the page says so.
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let stopped = Instant::now();
    driver
        .wait_for("the greeter gone from the list", async || {
            Ok(!driver.exists(&item).await? && driver.displayed("#service-gone").await?)
        })
        .await?;
    println!(
        "deregistered → gone from the page: {:.0} ms",
        stopped.elapsed().as_secs_f64() * 1000.0
    );
    subscriptions(driver, registry.clone()).await?;
    gateway_websocket(driver, registry).await
}

/// A service that subscribes to two topics (one in a queue group): its
/// page lists each subscription (the topic, the handler, the message's
/// shape), and none of them is offered as an endpoint to call.
async fn subscriptions(driver: &Driver, registry: SharedRegistry) -> Result<(), String> {
    use micro_server::Received;
    use micro_testing::greeter::Request as Greeting;
    const EVENTS: &str = "go.micro.srv.events";
    let server = tokio::task::spawn_blocking(move || {
        let broker: micro_broker::SharedBroker =
            Arc::new(micro_broker::memory::MemoryBroker::new());
        micro_testing::Crashable::start(registry, EVENTS, loopback_options(), move |builder| {
            builder
                .broker(broker)
                .file_descriptor_set(micro_testing::FILE_DESCRIPTOR_SET)
                .subscribe("go.micro.topic.greet", |_: Received<Greeting>| async {
                    Ok::<(), micro_broker::HandlerError>(())
                })
                .subscribe_with(
                    "go.micro.topic.work",
                    micro_broker::SubscribeOptions::queue("workers"),
                    |_: Received<Greeting>| async { Ok::<(), micro_broker::HandlerError>(()) },
                )
        })
    })
    .await
    .unwrap();
    let item = format!("#services li[data-service=\"{EVENTS}\"]");
    driver
        .wait_for("the subscriber in the list", async || {
            driver.exists(&item).await
        })
        .await?;
    driver.click(&format!("{item} a")).await?;
    let greet = "#subscriptions details[data-topic=\"go.micro.topic.greet\"]";
    let work = "#subscriptions details[data-topic=\"go.micro.topic.work\"]";
    driver
        .wait_for("its two subscriptions", async || {
            Ok(driver.text("#service-name").await? == EVENTS
                && driver.exists(greet).await?
                && driver.exists(work).await?)
        })
        .await?;
    let shown = driver.text(greet).await?;
    if !shown.contains("go.micro.topic.greet") || !shown.contains("Func") {
        return Err(format!(
            "the subscription shows its topic and handler: {shown:?}"
        ));
    }
    driver.click(&format!("{greet} summary")).await?;
    driver
        .wait_for("the message's shape", async || {
            Ok(driver.text(greet).await?.contains("name string"))
        })
        .await?;
    if driver.displayed("#no-subscriptions").await? {
        return Err("\"No subscriptions.\" shown for a service with two".into());
    }
    if driver
        .exists("#call-endpoint option[value=\"Func\"]")
        .await?
        || driver.exists("details[data-endpoint=\"Func\"]").await?
    {
        return Err("a subscription is offered as an endpoint to call".into());
    }
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    driver
        .wait_for("the subscriber gone from the list", async || {
            Ok(!driver.exists(&item).await?)
        })
        .await?;
    Ok(())
}

/// What a page does with go-micro's gateway: a WebSocket to a streaming
/// endpoint through `micro api` (the query the first message; browsers send
/// no Content-Type, so the frames are binary), read until the close frame.
const WEBSOCKET_SCRIPT: &str = r#"
const [url, done] = arguments;
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const messages = [];
ws.onmessage = (event) => messages.push(
    typeof event.data === "string"
        ? "text:" + event.data
        : "binary:" + new TextDecoder().decode(event.data));
ws.onclose = (event) => done({ messages, code: event.code, reason: event.reason });
ws.onerror = () => messages.push("error");
"#;

/// A greeter behind `micro api` (the gateway in this process), streamed
/// from Chromium over a WebSocket.
async fn gateway_websocket(driver: &Driver, registry: SharedRegistry) -> Result<(), String> {
    let server = tokio::task::spawn_blocking({
        let registry = registry.clone();
        move || {
            TestServer::start(
                registry,
                GREETER,
                TestGreeter::new("ws"),
                loopback_options(),
            )
        }
    })
    .await
    .unwrap();
    let gateway = micro_api::Gateway::new(
        Client::new(registry, ClientOptions::default()),
        micro_api::ApiOptions {
            namespace: "go.micro.srv".into(),
            ..micro_api::ApiOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        gateway
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    // The gateway's own page, so the socket is same-origin.
    driver
        .post("/url", json!({ "url": format!("http://{address}/") }))
        .await?;
    driver
        .post("/timeouts", json!({ "script": WAIT.as_millis() as u64 }))
        .await?;
    let url = format!("ws://{address}/greeter/greeter/stream?name=browser&count=3");
    let mut outcome = Value::Null;
    // The gateway may not list the greeter yet: retried while it answers 404.
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        outcome = driver
            .post(
                "/execute/async",
                json!({ "script": WEBSOCKET_SCRIPT, "args": [url] }),
            )
            .await?;
        if outcome["code"] == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let expected = json!({
        "messages": [
            "binary:{\"msg\":\"Hello browser 1\"}",
            "binary:{\"msg\":\"Hello browser 2\"}",
            "binary:{\"msg\":\"Hello browser 3\"}",
        ],
        "code": 1000,
        "reason": "",
    });
    if outcome != expected {
        return Err(format!(
            "the WebSocket through micro api: {outcome}, expected {expected}"
        ));
    }
    Ok(())
}

/// A chromedriver process with one session of headless Chromium.
struct Driver {
    child: Option<Child>,
    port: u16,
    session: String,
    profile: Option<tempfile::TempDir>,
}

impl Driver {
    async fn start(tools: &Tools) -> Driver {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let profile = tempfile::tempdir().unwrap();
        // Chromium double-forks helpers (zygote, crash handler): make them
        // ours when orphaned, so they are reaped here (see `kill`).
        nix::sys::prctl::set_child_subreaper(true).expect("prctl(PR_SET_CHILD_SUBREAPER)");
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): install it with `{INSTALL}`",
                    tools.chromedriver.display()
                )
            });
        let mut driver = Driver {
            child: Some(child),
            port,
            session: String::new(),
            profile: Some(profile),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match http(port, "GET", "/status", None).await {
                Ok(status) if status["ready"] == true => break,
                _ if Instant::now() > deadline => panic!("chromedriver not ready within 20 s"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let profile_dir = driver
            .profile
            .as_ref()
            .unwrap()
            .path()
            .display()
            .to_string();
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": tools.chromium,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--disable-default-apps", "--disable-dev-shm-usage",
                            "--disable-breakpad", "--disable-crash-reporter",
                            "--window-size=1280,900", "--force-device-scale-factor=1",
                            format!("--user-data-dir={profile_dir}"),
                        ],
                    },
                },
            },
        });
        let session = http(port, "POST", "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("chromedriver cannot start Chromium: {e}"));
        driver.session = session["sessionId"].as_str().unwrap().to_string();
        driver
    }

    /// Ends the session (Chromium quits) and asks chromedriver to exit (so
    /// it reaps Chromium); kills by PID whatever is left after 10 s.
    async fn stop(mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        )
        .await;
        let _ = http(self.port, "GET", "/shutdown", None).await;
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Chromium's processes, should the session not have ended them.
            for pid in descendants(child.id()) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
            reap_orphaned_chromium();
        }
        if let Some(profile) = self.profile.take() {
            let _ = profile.close();
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        http(
            self.port,
            "POST",
            &format!("/session/{}{path}", self.session),
            Some(body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        http(
            self.port,
            "GET",
            &format!("/session/{}{path}", self.session),
            None,
        )
        .await
    }

    async fn elements(&self, css: &str) -> Result<Vec<String>, String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await?;
        Ok(found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e.as_object()?.values().next()?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn element(&self, css: &str) -> Result<String, String> {
        self.elements(css)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no element {css}"))
    }

    async fn exists(&self, css: &str) -> Result<bool, String> {
        Ok(!self.elements(css).await?.is_empty())
    }

    async fn text(&self, css: &str) -> Result<String, String> {
        let id = self.element(css).await?;
        Ok(self
            .get(&format!("/element/{id}/text"))
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    async fn value(&self, css: &str) -> Result<String, String> {
        let id = self.element(css).await?;
        Ok(self
            .get(&format!("/element/{id}/property/value"))
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    async fn attribute(&self, css: &str, name: &str) -> Result<String, String> {
        let id = self.element(css).await?;
        Ok(self
            .get(&format!("/element/{id}/attribute/{name}"))
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    async fn displayed(&self, css: &str) -> Result<bool, String> {
        let Some(id) = self.elements(css).await?.into_iter().next() else {
            return Ok(false);
        };
        Ok(self.get(&format!("/element/{id}/displayed")).await? == true)
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        let id = self.element(css).await?;
        self.post(&format!("/element/{id}/click"), json!({}))
            .await
            .map(drop)
    }

    async fn clear(&self, css: &str) -> Result<(), String> {
        let id = self.element(css).await?;
        self.post(&format!("/element/{id}/clear"), json!({}))
            .await
            .map(drop)
    }

    async fn type_text(&self, css: &str, text: &str) -> Result<(), String> {
        let id = self.element(css).await?;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await
            .map(drop)
    }

    /// Polls `check` every 100 ms until it is true, for at most [`WAIT`].
    async fn wait_for(
        &self,
        what: &str,
        mut check: impl AsyncFnMut() -> Result<bool, String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                let body = self.text("body").await.unwrap_or_default();
                return Err(format!(
                    "waited {WAIT:?} for {what}; last error: {last:?}; the page reads:\n{body}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Chromium helpers handed to this process (the subreaper) when their
/// parent quit: each killed if still running, and waited for, by PID.
/// Bounded: five seconds at most.
fn reap_orphaned_chromium() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::Pid;
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let orphans: Vec<u32> = processes()
            .into_iter()
            .filter(|p| {
                p.ppid == me && (p.comm.starts_with("chrom") || p.comm.starts_with("chrome"))
            })
            .map(|p| p.pid)
            .collect();
        if orphans.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in orphans {
            let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line of `ps`: pid, parent, command name.
struct Proc {
    pid: u32,
    ppid: u32,
    comm: String,
}

/// Every process (from /proc).
fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            out.push(Proc {
                pid,
                ppid,
                comm: stat[open + 1..close].to_string(),
            });
        }
    }
    out
}

/// Every process below `pid`, deepest first (from /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let all = processes();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in &all {
            if p.ppid == parent && !out.contains(&p.pid) {
                out.push(p.pid);
                frontier.push(p.pid);
            }
        }
    }
    out.reverse();
    out
}

/// One WebDriver command: HTTP/1.1 to chromedriver on loopback; its `value`.
async fn http(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect to chromedriver: {e}"))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // Read the head, then exactly Content-Length bytes (chromedriver may
        // keep the connection open), or to the end without one.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| raw.len() >= end + 4 + n) {
                    break;
                }
            }
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| format!("chromedriver did not answer {method} {path} within 60 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, mut body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .ok_or_else(|| format!("not HTTP: {text}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let value: Value =
        serde_json::from_str(&body).map_err(|e| format!("{method} {path}: {e}: {body}"))?;
    if status != 200 {
        return Err(format!("{method} {path}: {status} {}", value["value"]));
    }
    Ok(value["value"].clone())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
