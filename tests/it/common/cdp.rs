//! A real headless chromium driven over the DevTools protocol, for tests
//! that click and type like a person: `--remote-debugging-pipe` (the
//! protocol's JSON messages, each ended by a NUL byte, on file descriptors
//! 3 and 4 of the browser), so no port is opened and no websocket crate is
//! needed. Clicks and keys are real input events at the element's place on
//! the screen, not calls into the page's script.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::browser::chromium;
use super::process::Child;

/// How long one protocol call may take.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

pub struct Browser {
    to: File,
    from: Receiver<Value>,
    next: u64,
    session: String,
    // Dropped last: the browser is killed, then its profile removed.
    child: Child,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends are closed on exec (the child gets its own copies).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both were just opened and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Opens `url` in a fresh headless chromium with a `width` x `height`
    /// window; fails the test if chromium is missing or does not answer.
    pub fn open(url: &str, (width, height): (u32, u32)) -> Self {
        let profile = tempfile::tempdir().expect("a profile directory");
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let (r, w) = (
            std::os::fd::AsRawFd::as_raw_fd(&browser_reads),
            std::os::fd::AsRawFd::as_raw_fd(&browser_writes),
        );
        let mut command = Command::new(chromium());
        command
            .args(super::browser::HEADLESS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. The
        // ends go to 3 and 4 by way of fresh numbers (>= 10), so that one
        // already numbered 3 or 4 is not closed or left close-on-exec.
        unsafe {
            command.pre_exec(move || {
                let a = libc::fcntl(r, libc::F_DUPFD, 10);
                let b = libc::fcntl(w, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                Ok(())
            });
        }
        let child = Child::spawn(&mut command);
        drop((browser_reads, browser_writes));
        let (tx, from) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(File::from(we_read));
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    break;
                };
                if tx.send(value).is_err() {
                    break;
                }
                message.clear();
            }
        });
        let mut browser = Self {
            to: File::from(we_write),
            from,
            next: 0,
            session: String::new(),
            child,
            _profile: profile,
        };
        let targets = browser.call_in(None, "Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .unwrap_or_else(|| panic!("chromium has no page: {targets}"))
            .to_string();
        let attached = browser.call_in(
            None,
            "Target.attachToTarget",
            json!({ "targetId": page, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("a session").into();
        browser.call("Page.enable", json!({}));
        browser.call("Page.navigate", json!({ "url": url }));
        browser
    }

    fn call_in(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call_in(session, method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// A protocol call; its protocol error as the `Err`.
    fn try_call_in(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium went away before {method}: {e}"));
        let deadline = Instant::now() + CALL_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(reply) if reply["id"] == id => {
                    return match reply.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(reply["result"].clone()),
                    };
                }
                // Events, and replies to nobody.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no answer to {method} in time"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited during {method}"),
            }
        }
    }

    /// One protocol call on the page; its result (a protocol error fails
    /// the test).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call_in(Some(&session), method, params)
    }

    /// The value of a JavaScript expression in the page (awaited if it is
    /// a promise); an exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page (one that throws, as
    /// while the page loads, is not), or fails saying `what`.
    pub fn wait_for(&mut self, what: &str, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let guarded = format!("(() => {{ try {{ return ({expression}) === true; }} catch (e) {{ return false; }} }})()");
        let session = self.session.clone();
        loop {
            let params =
                json!({ "expression": guarded, "returnByValue": true, "awaitPromise": true });
            match self.try_call_in(Some(&session), "Runtime.evaluate", params) {
                Ok(result) if result["result"]["value"] == json!(true) => return,
                Ok(_) => {}
                // The page navigated (a form sent) while it evaluated: it
                // is loading, so not yet.
                Err(error) if error.to_string().contains("navigated") => {}
                Err(error) => panic!("Runtime.evaluate failed: {error}"),
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A mouse click, pressed and released, in the middle of the element
    /// `selector` (a JavaScript expression giving the element), scrolled
    /// into view first.
    pub fn click(&mut self, element: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = {element}; if (!e) return null; \
               e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
               return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ));
        let (x, y) = match at.as_array().map(|a| (a[0].as_f64(), a[1].as_f64())) {
            Some((Some(x), Some(y))) => (x, y),
            _ => panic!("nothing on the page to click: {element}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Clicks the element (to focus it) and types `text` into it.
    pub fn type_into(&mut self, element: &str, text: &str) {
        self.click(element);
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// A PNG of the page as it is, written to `out`.
    pub fn screenshot(&mut self, out: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::write(out, bytes).unwrap();
    }
}

/// A JavaScript string literal holding `text` exactly.
pub fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closed politely, so that its helper processes go with it; killed
        // (when `child` is dropped) if it takes too long.
        self.next += 1;
        let mut bytes = serde_json::to_vec(&json!({ "id": self.next, "method": "Browser.close" }))
            .unwrap_or_default();
        bytes.push(0);
        if self.to.write_all(&bytes).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.child.has_exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
