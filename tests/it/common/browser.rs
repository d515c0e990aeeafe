//! A real headless browser: Debian's `chromium`, which `.ci/run` installs.
//! A test that needs it fails (never skips) when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::Run;

/// How long one browser run may take.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

/// The `chromium` binary on PATH (or /usr/bin/chromium); fails the test
/// saying how to install it.
pub fn chromium() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("chromium"));
    on_path
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test opens the status page in a real browser and needs chromium: \
                 install Debian's chromium (apt-get install chromium; .ci/run does)"
            )
        })
}

/// Chromium's flags for a test: headless, and nothing the page did not ask
/// for (no network of its own, no first-run or sync work).
pub const HEADLESS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// Runs headless chromium on `url` with `extra` arguments, a fresh profile,
/// no network beyond the page, and `budget_ms` of virtual time for the
/// page's scripts; its stdout.
fn run(url: &str, budget_ms: u64, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = Command::new(chromium())
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg(url)
        .run_within(BROWSER_DEADLINE)
        .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
    assert!(
        out.status.success(),
        "chromium failed on {url}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM after its scripts ran for `budget_ms` (virtual time).
pub fn dump_dom(url: &str, budget_ms: u64) -> String {
    run(url, budget_ms, &["--dump-dom".to_string()])
}

/// A PNG of the page at `width` x `height` after `budget_ms` (virtual
/// time), written to `out`.
pub fn screenshot(url: &str, out: &Path, (width, height): (u32, u32), budget_ms: u64) {
    run(
        url,
        budget_ms,
        &[
            format!("--screenshot={}", out.display()),
            format!("--window-size={width},{height}"),
        ],
    );
    let bytes = std::fs::read(out)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot {}: {e}", out.display()));
    assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", out.display());
}
