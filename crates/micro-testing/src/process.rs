//! Child processes for tests: stopped by their PID when dropped, and their
//! output read line by line with a deadline.
//!
//! ```no_run
//! use std::process::{Command, Stdio};
//! use std::time::{Duration, Instant};
//! use micro_testing::process::{ChildGuard, OutputLines};
//!
//! let mut child = ChildGuard::spawn(Command::new("my-server").stderr(Stdio::piped()))
//!     .expect("start my-server");
//! let mut log = OutputLines::read(child.stderr.take().expect("stderr"));
//! let line = log
//!     .wait_for_line("Listening on", Instant::now() + Duration::from_secs(20))
//!     .unwrap_or_else(|e| panic!("{e}"));
//! # let _ = line;
//! // `child` gets SIGTERM, then SIGKILL if still running after its grace,
//! // and is reaped when it goes out of scope, even when the test panics.
//! ```

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The signals [`ChildGuard::signal`] sends (nix's), so tests need no nix
/// of their own.
pub use nix::sys::signal::Signal;

/// How long a dropped [`ChildGuard`] waits after SIGTERM before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How often [`ChildGuard::stop`] looks whether the child has exited.
const POLL: Duration = Duration::from_millis(10);

/// A child process that is stopped by its PID when dropped: SIGTERM, then
/// SIGKILL if it is still running after a bounded grace ([`DEFAULT_GRACE`]
/// unless [`with_grace`](Self::with_grace) says otherwise), then reaped.
/// Never by name, never a process group.
///
/// Derefs to the [`Child`], so `guard.stderr.take()`, `guard.id()` and
/// `guard.wait()` work as on the child itself.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    grace: Duration,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child,
            grace: DEFAULT_GRACE,
        }
    }

    /// Spawns `command` and guards the child.
    pub fn spawn(command: &mut Command) -> std::io::Result<ChildGuard> {
        command.spawn().map(ChildGuard::new)
    }

    /// How long to wait after SIGTERM before SIGKILL (`Duration::ZERO`:
    /// SIGKILL at once).
    pub fn with_grace(mut self, grace: Duration) -> ChildGuard {
        self.grace = grace;
        self
    }

    /// Sends `signal` to the child's PID, unless it has been reaped already.
    pub fn signal(&mut self, signal: Signal) -> nix::Result<()> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return Err(nix::Error::ESRCH);
        }
        kill(pid_of(&self.child), signal)
    }

    /// Sends SIGTERM to the child's PID (a graceful stop, as `kill -TERM`).
    pub fn terminate(&mut self) -> nix::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Waits until the child exits, or `deadline` passes (`Ok(None)`).
    pub fn wait_until(&mut self, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the child if it is still running (SIGTERM, SIGKILL after the
    /// grace) and reaps it; returns how it exited (`None` if that could not
    /// be learnt). Bounded by the grace plus the time a SIGKILLed process
    /// takes to go.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if !self.grace.is_zero()
            && kill(pid_of(&self.child), Signal::SIGTERM).is_ok()
            && let Ok(Some(status)) = self.wait_until(Instant::now() + self.grace)
        {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lines a reader (a child's stdout or stderr) writes, read on a thread
/// of their own so that every wait is bounded by a deadline. Keeps every
/// line read so far ([`log`](Self::log)) for error messages.
#[derive(Debug)]
pub struct OutputLines {
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    reader: Option<JoinHandle<()>>,
}

/// Why a wait on [`OutputLines`] ended without what it waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLine {
    /// What was waited for.
    pub wanted: String,
    /// `true`: the output closed (the process exited) first; `false`: the
    /// deadline passed.
    pub closed: bool,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl fmt::Display for MissingLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = if self.closed {
            "the output closed first"
        } else {
            "the deadline passed"
        };
        write!(f, "no {}: {why}; log so far: {:?}", self.wanted, self.log)
    }
}

impl std::error::Error for MissingLine {}

impl OutputLines {
    /// Starts reading `reader` line by line, on a thread that stops at the
    /// end of the output (or at its first line that is not UTF-8).
    pub fn read(reader: impl Read + Send + 'static) -> OutputLines {
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            // Read to the end even once nobody listens: a pipe closed
            // early would make the child's next write fail (a process
            // whose stderr is gone may die on its next log line).
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        OutputLines {
            lines,
            log: Vec::new(),
            reader: Some(reader),
        }
    }

    /// Every line read so far.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// The lines read so far that contain `pattern`.
    pub fn logged(&self, pattern: &str) -> Vec<&String> {
        self.log.iter().filter(|l| l.contains(pattern)).collect()
    }

    /// The next line, by `deadline`.
    pub fn next_line(&mut self, deadline: Instant) -> Result<String, MissingLine> {
        self.wait_for("line", deadline, |_| true)
    }

    /// The next line that contains `pattern`, by `deadline`.
    pub fn wait_for_line(
        &mut self,
        pattern: &str,
        deadline: Instant,
    ) -> Result<String, MissingLine> {
        self.wait_for(&format!("line with {pattern:?}"), deadline, |line| {
            line.contains(pattern)
        })
    }

    /// The address in the next `Server [<kind>] Listening on <address>`
    /// line (`kind`: `grpc`, `http`, `https`), by `deadline`.
    pub fn wait_for_listening(
        &mut self,
        kind: &str,
        deadline: Instant,
    ) -> Result<String, MissingLine> {
        let marker = format!("Server [{kind}] Listening on ");
        let line = self.wait_for_line(&marker, deadline)?;
        Ok(line
            .split(&marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string())
    }

    /// The next line that `matches`, by `deadline`; `wanted` names it in the
    /// error.
    pub fn wait_for(
        &mut self,
        wanted: &str,
        deadline: Instant,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String, MissingLine> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if matches(&line) {
                        return Ok(line);
                    }
                }
                Err(e) => return Err(self.missing(wanted, e)),
            }
        }
    }

    /// Reads until the output closes (the process exited and its output
    /// was read whole), by `deadline`; returns the lines read meanwhile.
    pub fn wait_for_end(&mut self, deadline: Instant) -> Result<Vec<String>, MissingLine> {
        let from = self.log.len();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(reader) = self.reader.take() {
                        let _ = reader.join();
                    }
                    return Ok(self.log[from..].to_vec());
                }
                Err(e) => return Err(self.missing("end of the output", e)),
            }
        }
    }

    fn missing(&self, wanted: &str, error: RecvTimeoutError) -> MissingLine {
        MissingLine {
            wanted: wanted.to_string(),
            closed: error == RecvTimeoutError::Disconnected,
            log: self.log.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        command
    }

    /// Whether `pid` is a process of ours that has not been reaped.
    fn exists(pid: u32) -> bool {
        kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    #[test]
    fn a_dropped_child_is_terminated_and_reaped() {
        let child = ChildGuard::spawn(sh("exec sleep 30").stdout(Stdio::null())).expect("sleep");
        let pid = child.id();
        assert!(exists(pid));
        let started = Instant::now();
        drop(child);
        // SIGTERM ends `sleep` at once: no wait for the grace, and the
        // process is reaped (no zombie left: its PID is gone).
        assert!(started.elapsed() < DEFAULT_GRACE, "{:?}", started.elapsed());
        assert!(!exists(pid), "{pid} still exists after the drop");
    }

    #[test]
    fn terminate_and_wait_until() {
        let mut child =
            ChildGuard::spawn(sh("exec sleep 30").stdout(Stdio::null())).expect("sleep");
        let soon = Instant::now() + Duration::from_millis(100);
        assert!(child.wait_until(soon).expect("wait").is_none());
        child.terminate().expect("SIGTERM");
        let exit = child
            .wait_until(Instant::now() + Duration::from_secs(10))
            .expect("wait")
            .expect("exited on SIGTERM");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&exit),
            Some(15)
        );
        // Reaped: no signal reaches it any more.
        assert_eq!(child.terminate(), Err(nix::Error::ESRCH));
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut child = ChildGuard::spawn(&mut sh("trap '' TERM; echo trapped; exec sleep 30"))
            .expect("sh")
            .with_grace(Duration::from_millis(300));
        let pid = child.id();
        let mut out = OutputLines::read(child.stdout.take().expect("stdout"));
        out.wait_for_line("trapped", Instant::now() + Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let status = child.stop().expect("reaped");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < DEFAULT_GRACE, "{:?}", started.elapsed());
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!exists(pid));
    }

    #[test]
    fn a_line_is_found_and_a_missing_one_times_out() {
        let mut child = ChildGuard::spawn(&mut sh("echo one; echo 'two: ready'; exec sleep 30"))
            .expect("sh")
            .with_grace(Duration::ZERO);
        let mut out = OutputLines::read(child.stdout.take().expect("stdout"));
        let line = out
            .wait_for_line("ready", Instant::now() + Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line, "two: ready");
        assert_eq!(out.log(), ["one", "two: ready"]);

        let started = Instant::now();
        let missing = out
            .wait_for_line("never", Instant::now() + Duration::from_millis(200))
            .expect_err("no such line");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(!missing.closed);
        assert_eq!(
            missing.to_string(),
            r#"no line with "never": the deadline passed; log so far: ["one", "two: ready"]"#
        );
    }

    #[test]
    fn the_end_of_the_output_is_seen() {
        let mut child = ChildGuard::spawn(&mut sh("echo last")).expect("sh");
        let mut out = OutputLines::read(child.stdout.take().expect("stdout"));
        let missing = out
            .wait_for_line("never", Instant::now() + Duration::from_secs(10))
            .expect_err("the output closes");
        assert!(missing.closed, "{missing}");
        assert_eq!(
            out.wait_for_end(Instant::now() + Duration::from_secs(10)),
            Ok(Vec::new())
        );
        assert!(child.wait().expect("exit").success());
    }
}
