//! Running as a service: reloads under load lose no window, a changed model
//! file is picked up, systemd notifications arrive on a real socket, and a
//! shutdown past its grace exits non-zero saying what was in flight.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use accelwatch::config::Config;
use accelwatch::daemon::Daemon;

/// Two valid models (different seeds, so different ids), trained once.
fn models() -> &'static [(Vec<u8>, String); 2] {
    static MODELS: OnceLock<[(Vec<u8>, String); 2]> = OnceLock::new();
    MODELS.get_or_init(|| {
        let train = |seed| {
            let t = quick_model(&["ax", "ay", "az"], 30, seed);
            (t.onnx, t.meta.id)
        };
        let (a, b) = (train(1), train(2));
        assert_ne!(a.1, b.1, "different seeds give different model ids");
        [a, b]
    })
}

/// Replaces `path` the way operators should: a complete file renamed over it.
fn install(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(dir: &Path) -> Config {
    let model = dir.join("model.onnx");
    install(&model, &models()[0].0);
    let mut config = Config::default();
    config.model.path = model;
    config.model.watch_interval_ms = 0;
    config.input.replay.path = demo_csv();
    config.input.replay.speed = 0.0;
    config.input.replay.repeat = true;
    config.output.jsonl = dir.join("out.jsonl").display().to_string();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

fn window_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "window")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_no_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let model_path = config.model.path.clone();
    let daemon = Daemon::start(config, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    let reloader = daemon.reloader();
    let reload = |reloader: accelwatch::daemon::reload::Reloader| {
        tokio::task::spawn_blocking(move || reloader.reload("test"))
    };
    for i in 0..20 {
        if i == 10 {
            install(&model_path, b"not an onnx model");
            let refused = reload(reloader.clone()).await.unwrap();
            assert!(refused.is_err(), "an invalid model is refused");
        }
        let (bytes, id) = &models()[(i + 1) % 2];
        install(&model_path, bytes);
        let served = reload(reloader.clone())
            .await
            .unwrap()
            .expect("valid model");
        assert_eq!(&served, id);
        // Under load: windows are scored with each model before the next
        // reload.
        let scored = metric(&scrape(addr).await, "accelwatch_windows_total").unwrap_or(0.0);
        wait_metric(addr, "accelwatch_windows_total", AtLeast(scored + 1.0)).await;
    }
    let text = scrape(addr).await;
    daemon.shutdown();
    let summary = tokio::time::timeout(Duration::from_secs(60), daemon.wait())
        .await
        .unwrap()
        .unwrap();

    assert!(
        text.contains("accelwatch_reloads_total{result=\"ok\"} 20"),
        "{text}"
    );
    assert!(text.contains("accelwatch_reloads_total{result=\"failed\"} 1"));
    let records = window_records(&dir.path().join("out.jsonl"));
    assert_eq!(records.len() as u64, summary.windows);
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for r in &records {
        seqs.entry(r["device"].as_str().unwrap().to_string())
            .or_default()
            .push(r["seq"].as_u64().unwrap());
        ids.insert(r["model"].as_str().unwrap().to_string());
    }
    assert_eq!(seqs.len(), 2);
    for (device, seqs) in &seqs {
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "{device}: a window went missing");
        }
    }
    assert!(
        ids.contains(&models()[0].1) && ids.contains(&models()[1].1),
        "{ids:?}"
    );
    assert_eq!(ids.len(), 2, "only the two valid models scored: {ids:?}");
    assert!(
        text.contains(&format!("accelwatch_model_info{{id=\"{}\"", models()[0].1)),
        "model_info follows the served model (the last reload installed model A)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_model_file_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.model.watch_interval_ms = 100;
    config.input.replay.speed = 20.0;
    let model_path = config.model.path.clone();
    let daemon = Daemon::start(config, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    // The daemon is running (its model watcher, spawned before the
    // pipeline, has taken the file's fingerprint) once windows are scored.
    wait_metric(addr, "accelwatch_windows_total", AtLeast(1.0)).await;
    install(&model_path, &models()[1].0);
    let wanted = format!("accelwatch_model_info{{id=\"{}\"", models()[1].1);
    wait_until(Duration::from_secs(20), &wanted, || async {
        scrape(addr).await.contains(&wanted)
    })
    .await;
    let text = scrape(addr).await;
    stop(daemon).await;
    assert!(text.contains(&wanted), "{text}");
    assert!(
        text.contains("accelwatch_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
}

fn toml_config(dir: &Path, jsonl: &str, extra: &str) -> PathBuf {
    let model = dir.join("model.onnx");
    install(&model, &models()[0].0);
    let path = dir.join("accelwatch.toml");
    write(
        &path,
        &format!(
            "[input]\nkind = \"replay\"\n[input.replay]\npath = {:?}\nspeed = 0\nloop = true\n\
             [model]\npath = {:?}\n[output]\njsonl = {jsonl:?}\n[telemetry]\nlisten = \"127.0.0.1:0\"\n{extra}",
            demo_csv().display().to_string(),
            model.display().to_string(),
        ),
    );
    path
}

/// The child's stderr goes to a file: a pipe nobody reads while the test
/// waits for the child would block the child once the pipe is full.
fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("stderr.log")).unwrap()
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap()
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = toml_config(dir.path(), "off", "");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = Child::spawn(
        accelwatch()
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .stderr(log_file(dir.path())),
    );
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    let mut listen = |until: &dyn Fn(&str) -> bool, heard: &mut String| {
        let started = Instant::now();
        while !until(heard) && started.elapsed() < Duration::from_secs(30) {
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    listen(
        &|h: &str| h.contains("READY=1") && h.matches("WATCHDOG=1").count() >= 2,
        &mut heard,
    );
    child.signal(libc::SIGHUP);
    wait_until_blocking(
        Duration::from_secs(30),
        "the reload SIGHUP asks for",
        || read_log(dir.path()).contains("model reloaded"),
    );
    child.signal(libc::SIGTERM);
    listen(&|h: &str| h.contains("STOPPING=1"), &mut heard);
    let status = child.wait_with_deadline(Duration::from_secs(30));
    let log = read_log(dir.path());
    assert!(heard.contains("READY=1"), "{heard}");
    assert!(heard.contains("STATUS=running, input replay"), "{heard}");
    assert!(
        heard.matches("WATCHDOG=1").count() >= 2,
        "a watchdog ping every half interval: {heard}"
    );
    assert!(heard.contains("STOPPING=1"), "{heard}");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("model reloaded"), "SIGHUP reloads:\n{log}");
}

/// Resident kB of the executable mapping of `binary` in process `pid`.
fn resident_code_kb(pid: u32, binary: &Path) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let binary = binary.canonicalize().unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            && fields.len() >= 5
        {
            inside = fields[1] == "r-xp" && fields.get(5).map(Path::new) == Some(binary.as_path());
        } else if inside && fields.first() == Some(&"Rss:") {
            return fields[1].parse().unwrap();
        }
    }
    panic!("process {pid} maps no code of {}", binary.display())
}

/// `pipeline.release_startup_code`: a running daemon holds far less of its
/// code than one that keeps what its start touched, and goes on working.
#[test]
fn the_start_up_code_leaves_memory_once_the_pipeline_runs() {
    let binary = Path::new(env!("CARGO_BIN_EXE_accelwatch"));
    let resident_while_running = |release: bool| {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("out.jsonl");
        let config = toml_config(
            dir.path(),
            jsonl.to_str().unwrap(),
            &format!("[pipeline]\nrelease_startup_code = {release}\n"),
        );
        let child = Child::spawn(
            accelwatch()
                .args(["run", "--log", "info,accelwatch=debug", "--config"])
                .arg(&config)
                .stderr(log_file(dir.path())),
        );
        // Windows published: the pipeline's code has run since the start.
        let published = || {
            std::fs::read_to_string(&jsonl)
                .map(|text| text.matches("\"window\"").count())
                .unwrap_or(0)
        };
        wait_until_blocking(Duration::from_secs(60), "windows published", || {
            published() >= 50
        });
        std::thread::sleep(Duration::from_millis(500));
        let resident = resident_code_kb(child.id(), binary);
        // The pipeline goes on once its code has been dropped and measured.
        let measured_at = published();
        wait_until_blocking(Duration::from_secs(60), "windows after the measure", || {
            published() > measured_at
        });
        child.signal(libc::SIGTERM);
        let status = child.wait_with_deadline(Duration::from_secs(30));
        let log = read_log(dir.path());
        assert!(status.success(), "{status:?}\n{log}");
        assert_eq!(
            log.contains("the start-up code's pages left memory"),
            release,
            "{log}"
        );
        resident
    };
    let kept = resident_while_running(false);
    let released = resident_while_running(true);
    assert!(
        released * 10 < kept * 7,
        "code resident while running: {released} kB released, {kept} kB kept"
    );
    eprintln!("code resident while running: {released} kB released, {kept} kB kept");
}

/// One blocking GET of `/metrics` from the address a child daemon logged.
fn scrape_logged_metrics(log: &str) -> String {
    use std::io::{Read, Write};
    let line = log
        .lines()
        .find(|l| l.contains("serving the status page"))
        .unwrap_or_else(|| panic!("no telemetry address logged:\n{log}"));
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line:?}"));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `pipeline.io_threads`: `run` starts its runtime with that many workers
/// (one by default), read from the config before the runtime starts.
#[test]
fn the_daemon_runs_the_configured_io_threads() {
    for (extra, expected) in [("", 1), ("[pipeline]\nio_threads = 3\n", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let child = run_replay_daemon(dir.path(), extra);
        let metrics = scrape_logged_metrics(&read_log(dir.path()));
        stop_replay_daemon(dir.path(), child);
        assert!(
            metrics.contains(&format!("\naccelwatch_io_threads {expected}\n")),
            "{extra:?}: {metrics}"
        );
    }
}

/// `accelwatch run` on a looping replay of the demo recording, with
/// `extra` TOML and its log in `dir`, once it handles SIGTERM (the
/// pipeline has started by then).
fn run_replay_daemon(dir: &Path, extra: &str) -> Child {
    let jsonl = dir.join("out.jsonl");
    let config = toml_config(dir, jsonl.to_str().unwrap(), extra);
    let child = Child::spawn(
        accelwatch()
            .args(["run", "--log", "info", "--config"])
            .arg(&config)
            .stderr(log_file(dir)),
    );
    wait_until_blocking(Duration::from_secs(60), "a SIGTERM handler", || {
        catches_sigterm(child.id())
    });
    child
}

/// SIGTERM to a daemon of [`run_replay_daemon`], which must drain and exit 0.
fn stop_replay_daemon(dir: &Path, child: Child) {
    child.signal(libc::SIGTERM);
    let status = child.wait_with_deadline(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", read_log(dir));
}

/// Whether process `pid` has a handler for SIGTERM (`SigCgt` of its
/// status): `run` installs it once the pipeline has started, and a SIGTERM
/// before that kills the process.
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// The scheduling policy of each thread of process `pid` (field 41 of
/// `/proc/<pid>/task/<tid>/stat`).
fn thread_policies(pid: u32) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // After the name in parentheses come fields 3, 4, …
            let after_name = &stat[stat.rfind(')')? + 2..];
            after_name.split_whitespace().nth(41 - 3)?.parse().ok()
        })
        .collect()
}

/// `pipeline.scorer_sched_batch`: the scorer's thread runs in SCHED_BATCH
/// (by default) and every other thread in the ordinary policy; off, none
/// is a batch thread.
#[test]
fn the_scorer_runs_as_a_batch_thread_unless_told_otherwise() {
    for (extra, batch_threads) in [("", 1), ("[pipeline]\nscorer_sched_batch = false\n", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let child = run_replay_daemon(dir.path(), extra);
        // The scorer's thread sets its policy before its first batch, so
        // once a window is written it has done so (with the setting off
        // too: a scorer that had not started would pass that case).
        let jsonl = dir.path().join("out.jsonl");
        wait_until_blocking(Duration::from_secs(30), "a scored window", || {
            std::fs::metadata(&jsonl).is_ok_and(|m| m.len() > 0)
        });
        let policies = thread_policies(child.id());
        assert_eq!(
            policies.iter().filter(|&&p| p == libc::SCHED_BATCH).count(),
            batch_threads,
            "{extra:?}: {policies:?}"
        );
        assert!(
            policies
                .iter()
                .all(|&p| p == libc::SCHED_OTHER || p == libc::SCHED_BATCH),
            "{extra:?}: {policies:?}"
        );
        stop_replay_daemon(dir.path(), child);
    }
}

#[test]
fn a_shutdown_past_its_grace_exits_non_zero_saying_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // An output that stops taking data: a FIFO this test holds open and
    // never reads, so the pipeline backs up and cannot drain.
    let fifo = dir.path().join("stuck.jsonl");
    run_ok(std::process::Command::new("mkfifo").arg(&fifo));
    let _held_open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let config = toml_config(
        dir.path(),
        fifo.to_str().unwrap(),
        "[pipeline]\nshutdown_grace_ms = 500\n",
    );
    let child = Child::spawn(
        accelwatch()
            .args(["run", "--config"])
            .arg(&config)
            .stderr(log_file(dir.path())),
    );
    // Backed up: a thread of the daemon is blocked writing to the FIFO.
    let tasks = PathBuf::from(format!("/proc/{}/task", child.id()));
    wait_until_blocking(
        Duration::from_secs(30),
        "a write to the FIFO to block",
        || {
            std::fs::read_dir(&tasks).is_ok_and(|threads| {
                threads.filter_map(Result::ok).any(|t| {
                    std::fs::read_to_string(t.path().join("wchan"))
                        .is_ok_and(|w| w.contains("pipe_write"))
                })
            })
        },
    );
    child.signal(libc::SIGTERM);
    let status = child.wait_with_deadline(Duration::from_secs(30));
    let log = read_log(dir.path());
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("shutdown_grace_ms (500 ms)"), "{log}");
    assert!(log.contains("queued for"), "{log}");
}

/// A tool the test needs, or a failure saying what to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("missing {name}: install the Debian package {package} (.ci/run does)")
        })
}

fn run_ok(command: &mut std::process::Command) -> String {
    let out = command.run();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn the_systemd_unit_verifies() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("deploy/accelwatch.service")).unwrap();
    let binary = env!("CARGO_BIN_EXE_accelwatch");
    let unit_path = dir.path().join("accelwatch.service");
    write(&unit_path, &unit.replace("/usr/bin/accelwatch", binary));
    let text = run_ok(
        std::process::Command::new(analyze)
            .arg("verify")
            .arg(&unit_path),
    );
    assert!(!text.to_lowercase().contains("error"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rules_pass_promtool_and_the_scrape_is_valid() {
    let promtool = tool("promtool", "prometheus");
    let rules = repo().join("deploy/prometheus");
    run_ok(
        std::process::Command::new(&promtool)
            .args(["check", "rules"])
            .arg(rules.join("accelwatch.rules.yml")),
    );
    run_ok(
        std::process::Command::new(&promtool)
            .args(["test", "rules"])
            .arg(rules.join("accelwatch.rules.test.yml")),
    );

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config(dir.path()), Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    // A scrape with windows scored: every histogram has samples.
    wait_metric(addr, "accelwatch_windows_total", AtLeast(1.0)).await;
    let text = scrape(addr).await;
    stop(daemon).await;
    let mut child = Child::spawn(
        std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    std::io::Write::write_all(child.stdin().as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output(Duration::from_secs(60));
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_grafana_dashboard_is_valid_json_with_the_panels() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/accelwatch.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for metric in [
        "accelwatch_windows_total",
        "accelwatch_anomalous_windows_total",
        "accelwatch_alerts_active",
        "accelwatch_inference_seconds_bucket",
        "accelwatch_decode_errors_total",
        "accelwatch_mqtt_connected",
        "accelwatch_calibration_windows",
        "accelwatch_drift_ratio",
        "accelwatch_window_latency_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel shows {metric}"
        );
    }
}

/// Builds the .deb from the binary this test run built (`cargo deb
/// --no-build`), then checks what it installs, its maintainer scripts, and
/// that its config and model pass `accelwatch validate` together.
#[test]
fn the_debian_package_installs_binary_unit_config_model_and_user() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_cargo_deb = std::process::Command::new(&cargo)
        .args(["deb", "--version"])
        .run_within(Duration::from_secs(60))
        .is_ok_and(|o| o.status.success());
    assert!(
        has_cargo_deb,
        "missing cargo-deb: cargo install cargo-deb --locked --version 3.8.0 (.ci/run does)"
    );
    let dpkg_deb = tool("dpkg-deb", "dpkg");
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("accelwatch.deb");
    // The test binary's profile; the asset path target/release/accelwatch
    // follows --profile.
    run_ok(
        std::process::Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["deb", "--no-build", "--profile", "dev", "--fast", "-o"])
            .arg(&deb),
    );

    let listing = run_ok(std::process::Command::new(&dpkg_deb).arg("-c").arg(&deb));
    for path in [
        "./usr/bin/accelwatch",
        "./usr/lib/systemd/system/accelwatch.service",
        "./etc/accelwatch/accelwatch.toml",
        "./var/lib/accelwatch/models/demo.onnx",
        "./usr/share/accelwatch/prometheus/accelwatch.rules.yml",
        "./usr/share/accelwatch/grafana/accelwatch.json",
        "./usr/share/doc/accelwatch/accelwatch.toml.example",
    ] {
        assert!(listing.contains(path), "{path} missing:\n{listing}");
    }
    let info = run_ok(std::process::Command::new(&dpkg_deb).arg("-I").arg(&deb));
    assert!(info.contains("Package: accelwatch"), "{info}");
    assert!(info.contains("adduser"), "Depends on adduser:\n{info}");

    let control = dir.path().join("control");
    run_ok(
        std::process::Command::new(&dpkg_deb)
            .arg("-e")
            .arg(&deb)
            .arg(&control),
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/accelwatch/accelwatch.toml"));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper"),
        "the unit is enabled on install:\n{postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "cargo-deb filled it in");
    for script in ["postinst", "postrm", "prerm"] {
        let path = control.join(script);
        if path.exists() {
            run_ok(std::process::Command::new("sh").arg("-n").arg(&path));
        }
    }

    let root = dir.path().join("root");
    run_ok(
        std::process::Command::new(&dpkg_deb)
            .arg("-x")
            .arg(&deb)
            .arg(&root),
    );
    let out = std::process::Command::new(root.join("usr/bin/accelwatch"))
        .args(["validate", "--config"])
        .arg(root.join("etc/accelwatch/accelwatch.toml"))
        .env(
            "ACCELWATCH__MODEL__PATH",
            root.join("var/lib/accelwatch/models/demo.onnx"),
        )
        // The unit's StateDirectory, which validate checks it can write in.
        .env(
            "ACCELWATCH__PIPELINE__STATE_DIR",
            root.join("var/lib/accelwatch"),
        )
        .run();
    assert!(
        out.status.success(),
        "the packaged config and model fit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
