//! Child processes that cannot hang a test run: every command a test runs
//! has a deadline, past which it is killed and the test fails; a spawned
//! child is killed when its handle is dropped. Signals go through
//! `libc::kill` (no `kill` command needed).

use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a command may run when a test gives no deadline of its own.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// Runs a [`Command`] to completion with a deadline, its output captured.
pub trait Run {
    /// Runs with stdout and stderr captured (stdin closed); past `within`
    /// the child is killed and the test fails with what it printed.
    fn run_within(&mut self, within: Duration) -> std::io::Result<Output>;

    /// [`Run::run_within`] [`CHILD_DEADLINE`]; fails if it cannot start.
    fn run(&mut self) -> Output {
        self.run_within(CHILD_DEADLINE)
            .unwrap_or_else(|e| panic!("cannot start a child process: {e}"))
    }
}

impl Run for Command {
    fn run_within(&mut self, within: Duration) -> std::io::Result<Output> {
        let what = format!("{self:?}");
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Child::new(child, what).wait_with_output(within))
    }
}

/// A spawned child process, killed (and reaped) when dropped.
pub struct Child {
    inner: Option<std::process::Child>,
    what: String,
}

impl Child {
    /// Spawns `command`; fails the test if it cannot start.
    pub fn spawn(command: &mut Command) -> Self {
        let what = format!("{command:?}");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self::new(child, what)
    }

    fn new(child: std::process::Child, what: String) -> Self {
        Self {
            inner: Some(child),
            what,
        }
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.inner.as_mut().expect("a running child")
    }

    pub fn id(&self) -> u32 {
        self.inner.as_ref().expect("a running child").id()
    }

    /// Its stdin, if it was piped.
    pub fn stdin(&mut self) -> &mut Option<std::process::ChildStdin> {
        &mut self.child().stdin
    }

    /// Its stdout, if it was piped.
    pub fn stdout(&mut self) -> &mut Option<std::process::ChildStdout> {
        &mut self.child().stdout
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.id()).expect("a pid");
        // SAFETY: kill(2) with a pid this test spawned and has not reaped
        // (it is reaped only on drop or after a wait).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether it has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        self.child().try_wait().expect("try_wait").is_some()
    }

    /// Waits for the exit; past `within` the child is killed and the test
    /// fails.
    pub fn wait_with_deadline(mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.inner = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("{} did not exit within {within:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit and collects the piped stdout and stderr; past
    /// `within` the child is killed and the test fails with what it printed.
    pub fn wait_with_output(mut self, within: Duration) -> Output {
        fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        }
        drop(self.child().stdin.take());
        let stdout = drain(self.child().stdout.take());
        let stderr = drain(self.child().stderr.take());
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.inner = None;
                break Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        match status {
            Some(status) => Output {
                status,
                stdout,
                stderr,
            },
            None => panic!(
                "{} did not exit within {within:?}: killed\nstdout:\n{}\nstderr:\n{}",
                self.what,
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            ),
        }
    }

    /// Kills and reaps it now (nothing if it already exited).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.inner.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}
