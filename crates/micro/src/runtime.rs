//! The tokio runtime the toolkit's binaries run on.
//!
//! [`block_on`] runs a binary's `async` main on a `current_thread` runtime
//! when the process may use one CPU (pinned with `taskset`, or a container
//! limited to one CPU: what [`std::thread::available_parallelism`] sees),
//! else on a `multi_thread` runtime with a worker per CPU.
//!
//! Why not always `multi_thread`: on one CPU it only adds a cost. Its LIFO
//! slot runs the connection task that a finished response wakes right
//! away, so HTTP/2 writes each response on its own; on `current_thread` the
//! responses ready together go out in one write. Measured on a greeter
//! server at 10 connections × 10 calls in flight: 0.64 → 0.10 `writev` per
//! call, and 9.1–9.4 instead of 13.4–15.5 µs of CPU per call under h2load
//! (13.4 instead of 15.4 µs in the benchmark's R2; docs/benchmarks.md).
//!
//! `MICRO_RUNTIME` overrides the choice: `current_thread`, `multi_thread`
//! or `auto` (the default). Blocking work belongs in `spawn_blocking` on
//! either (the toolkit's own does: password hashing, SQLite).
//!
//! ```no_run
//! // fn main() {
//! micro::runtime::block_on(async {
//!     // micro::Service::new(...).await ...
//! });
//! // }
//! ```

use std::future::Future;

/// Which runtime a binary runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    /// `MICRO_RUNTIME` (`auto`, `current_thread`, `multi_thread`; unset:
    /// `auto`), with `cpus` the CPUs the process may use.
    pub fn choose(setting: Option<&str>, cpus: usize) -> Result<Flavor, String> {
        match setting.map(str::trim).unwrap_or("auto") {
            "" | "auto" if cpus <= 1 => Ok(Flavor::CurrentThread),
            "" | "auto" => Ok(Flavor::MultiThread),
            "current_thread" => Ok(Flavor::CurrentThread),
            "multi_thread" => Ok(Flavor::MultiThread),
            other => Err(format!(
                "MICRO_RUNTIME={other}: expected auto, current_thread or multi_thread"
            )),
        }
    }
}

/// The runtime [`block_on`] uses (see the module docs).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let setting = std::env::var("MICRO_RUNTIME").ok();
    let mut builder = match Flavor::choose(setting.as_deref(), cpus)? {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))
}

/// Runs `future` (a binary's main) to completion on [`runtime`]; exits with
/// status 2 and a message if the runtime cannot be made (a bad
/// `MICRO_RUNTIME`).
pub fn block_on<F: Future>(future: F) -> F::Output {
    match runtime() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_gets_current_thread_unless_told() {
        assert_eq!(Flavor::choose(None, 1), Ok(Flavor::CurrentThread));
        assert_eq!(Flavor::choose(None, 2), Ok(Flavor::MultiThread));
        assert_eq!(Flavor::choose(Some("auto"), 8), Ok(Flavor::MultiThread));
        assert_eq!(Flavor::choose(Some(""), 1), Ok(Flavor::CurrentThread));
        assert_eq!(
            Flavor::choose(Some("multi_thread"), 1),
            Ok(Flavor::MultiThread)
        );
        assert_eq!(
            Flavor::choose(Some(" current_thread "), 4),
            Ok(Flavor::CurrentThread)
        );
        let Err(err) = Flavor::choose(Some("fast"), 1) else {
            panic!("a bad value is refused");
        };
        assert!(err.contains("MICRO_RUNTIME=fast"), "{err}");
    }
}
