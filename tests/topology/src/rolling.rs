//! Instances for rolling restarts: each with an admin listener, so a roll
//! waits for a new instance's readiness (`/health/ready`) before it stops an
//! old one with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Process, Steady, curl, eventually, free_port, secret, steady_gets};

/// What every instance of one topology shares: registry flags, the token
/// key, the store.
#[derive(Debug)]
pub struct Fleet {
    shared: Vec<String>,
    secret: String,
    data_dir: PathBuf,
}

/// A running instance and where it answers.
#[derive(Debug)]
pub struct Instance {
    pub process: Process,
    /// Its admin listener (`/health/ready`).
    pub admin: u16,
    /// Its public address (gateways; `0.0.0.0:0` for gRPC services, which
    /// register theirs).
    pub address: SocketAddr,
}

impl Fleet {
    /// `shared`: the flags every process gets (registry, server address).
    pub fn new(shared: Vec<String>, data_dir: &Path) -> Fleet {
        Fleet {
            shared,
            secret: secret(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn start(&self, label: &str, program: &str, extra: &[String]) -> Instance {
        let admin = free_port();
        let mut args = self.shared.clone();
        args.push(format!("--admin_address=127.0.0.1:{admin}"));
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = [
            ("MICRO_AUTH_SECRET", self.secret.as_str()),
            ("RUST_LOG", "info,user_srv=debug,user_api=debug"),
        ];
        Instance {
            process: Process::start(label, program, &args, &env),
            admin,
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// A user-srv on the shared store.
    pub fn user_srv(&self, label: &str) -> Instance {
        let data = self.data_dir.display().to_string();
        self.start(label, "user-srv", &["--data_dir".into(), data])
    }

    pub fn user_api(&self) -> Instance {
        self.start("user-api", "user-api", &[])
    }

    /// `micro api --handler=api` on a free loopback port.
    pub fn gateway(&self, label: &str) -> Instance {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let extra = [
            "api".to_string(),
            "--handler=api".into(),
            "--address".into(),
            address.to_string(),
        ];
        Instance {
            address,
            ..self.start(label, "micro", &extra)
        }
    }
}

impl Instance {
    /// Waits (bounded) until `/health/ready` answers 200.
    pub fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/health/ready", self.admin);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while curl(&url, None).status != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} not ready within 60 s; log:\n{}",
                self.process.name,
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; it must exit 0 within 30 s.
    pub fn stop_gracefully(&mut self) {
        let status = self.process.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; log:\n{}",
            self.process.name,
            self.process.log()
        );
    }

    /// Calls this user-srv has logged.
    pub fn calls(&self) -> usize {
        self.process.count("User.QueryUserByName")
    }

    /// Waits (bounded) until this user-srv has served `n` calls: callers
    /// know it, and it is in the rotation.
    pub fn wait_calls(&self, n: usize) {
        eventually(
            &format!("{} serving", self.process.name),
            Duration::from_secs(60),
            || (self.calls() >= n).then_some(()),
        );
    }
}

/// The chain answers through `base` and user `huohuo` exists: the hello URL.
pub fn chain_answers(base: &str) -> String {
    eventually(
        "gateway → user-api → user-srv",
        Duration::from_secs(60),
        || {
            let reply = curl(
                &format!("{base}/user/account/register"),
                Some(r#"{"username":"huohuo","password":"correct horse battery"}"#),
            );
            (reply.status == 201 || reply.status == 409).then_some(())
        },
    );
    let hello = format!("{base}/user/say/hello?name=huohuo");
    eventually("hello answers", Duration::from_secs(30), || {
        (curl(&hello, None).status == 200).then_some(())
    });
    hello
}

/// Calls `hello` until every instance of `srvs` has taken one.
pub fn every_instance_reached(hello: &str, srvs: &[Instance]) {
    let start: Vec<usize> = srvs.iter().map(Instance::calls).collect();
    eventually("every user-srv reached", Duration::from_secs(60), || {
        let _ = curl(hello, None);
        srvs.iter()
            .zip(&start)
            .all(|(srv, before)| srv.calls() > *before)
            .then_some(())
    });
}

/// Under 8 callers GETting `hello`, replaces each of `srvs` in turn: a new
/// user-srv started, ready (`/health/ready`) and serving 20 calls (callers
/// know it; its calls are the signal, no sleep), then the old one stopped
/// with SIGTERM, exiting 0. What the callers saw.
pub fn roll_user_srvs(fleet: &Fleet, srvs: &mut [Instance], hello: &str) -> Steady {
    steady_gets(hello, 8, || {
        for (i, old) in srvs.iter_mut().enumerate() {
            let new = fleet.user_srv(&format!("user-srv-{i}'"));
            new.wait_ready();
            new.wait_calls(20);
            old.stop_gracefully();
            *old = new;
        }
    })
}
