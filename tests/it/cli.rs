//! The binary as a user runs it: train, score, evaluate, validate, run and
//! demo, with their exit codes and messages.

use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn train_into(dir: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let model = dir.join("pen.onnx");
    let out = accelwatch()
        .args(["train", "--data"])
        .arg(train_csv())
        .args([
            "--device-column",
            "series",
            "--epochs",
            "60",
            "--latent",
            "16",
            "--out",
        ])
        .arg(&model)
        .args(extra)
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("epoch 1/60 loss"), "progress lines: {text}");
    assert!(
        text.contains("threshold") && text.contains("wrote"),
        "summary: {text}"
    );
    model
}

#[test]
fn train_score_evaluate_on_recorded_data() {
    let dir = tempfile::tempdir().unwrap();
    let train_report = dir.path().join("training");
    let model = train_into(dir.path(), &["--report", train_report.to_str().unwrap()]);
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(train_report.join("training.json")).unwrap())
            .unwrap();
    assert!(history["epochs"].as_array().unwrap().len() >= 10);
    assert!(std::fs::read_to_string(train_report.join("loss.svg"))
        .unwrap()
        .contains("<polyline"));

    let scores = dir.path().join("scores.jsonl");
    let out = accelwatch()
        .args(["score", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(demo_csv())
        .arg("--out")
        .arg(&scores)
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&scores).unwrap();
    let windows = text
        .lines()
        .filter(|l| l.contains("\"type\":\"window\""))
        .count();
    assert_eq!(windows, 276, "every window of the two devices of demo.csv");
    assert!(stderr(&out).contains("scored 276 windows"));

    let report = dir.path().join("report");
    let out = accelwatch()
        .args(["evaluate", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(demo_csv())
        .args(["--label", "exercise", "--normal", "PEN", "--report"])
        .arg(&report)
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let auc = json["roc_auc"].as_f64().unwrap();
    assert!(
        auc > 0.9,
        "PEN against ABD/FEL/TRAP on held-out subjects: AUC {auc}"
    );
    assert_eq!(json["windows"], 276);
    assert!(String::from_utf8_lossy(&out.stdout).contains("| ROC AUC |"));
    let latent_accuracy = json["feature_quality"]["latent"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        latent_accuracy > 0.5,
        "latent codes tell 4 exercises apart across devices: {latent_accuracy}"
    );
    assert_eq!(json["feature_quality"]["latent"]["dimensions"], 16);
    for plot in ["scores.svg", "histogram.svg", "latent.svg"] {
        let svg = std::fs::read_to_string(report.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "{plot}");
    }
    assert!(std::fs::read_to_string(report.join("report.md"))
        .unwrap()
        .contains("## Feature quality"));

    let out = accelwatch()
        .args(["evaluate", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(demo_csv())
        .args(["--label", "exercise", "--normal", "PENDULUM"])
        .run();
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("\"PENDULUM\" never appears"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn training_data_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    write(&csv, "t_ms,ax,ay,az\n0,1,2,3\n20,1,oops,3\n");
    let out = accelwatch()
        .args(["train", "--data"])
        .arg(&csv)
        .arg("--out")
        .arg(dir.path().join("m.onnx"))
        .run();
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("line 3, column \"ay\": \"oops\""),
        "{}",
        stderr(&out)
    );
    write(&csv, "t_ms,ax,ay,az\n0,1,2,3\n");
    let out = accelwatch()
        .args(["train", "--data"])
        .arg(&csv)
        .arg("--out")
        .arg(dir.path().join("m.onnx"))
        .run();
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("too few windows"), "{}", stderr(&out));
    assert!(!dir.path().join("m.onnx").exists(), "no model written");
}

#[test]
fn validate_reports_every_problem_with_its_key() {
    let out = accelwatch()
        .current_dir(repo())
        .args(["validate", "--config", "configs/default.toml"])
        .run();
    assert!(
        out.status.success(),
        "the shipped config works as it is: {}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    write(&cfg, "[window]\nsize = 64\nhop = 100\n[input]\nchannels = [\"ax\", \"ax\"]\n[model]\npath = \"missing.onnx\"\n");
    let out = accelwatch().args(["validate", "--config"]).arg(&cfg).run();
    assert_eq!(out.status.code(), Some(78));
    let text = stderr(&out);
    for expected in [
        "window.hop",
        "input.channels: channel \"ax\" is listed twice",
        "model.path",
        "missing.onnx",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }

    write(&cfg, "[window]\nsize = 128\nhopp = 3\n");
    let out = accelwatch().args(["validate", "--config"]).arg(&cfg).run();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("unknown field `hopp`"),
        "{}",
        stderr(&out)
    );

    let out = accelwatch()
        .current_dir(repo())
        .env("ACCELWATCH__WINDOW__SIZE", "64")
        .args(["validate", "--config", "configs/default.toml"])
        .run();
    assert_eq!(
        out.status.code(),
        Some(78),
        "the environment overrides the file"
    );
    assert!(
        stderr(&out).contains("window.size: 64, but model"),
        "{}",
        stderr(&out)
    );

    let out = accelwatch()
        .current_dir(repo())
        .env("ACCELWATCH__WINDOW__BOGUS", "1")
        .args(["validate", "--config", "configs/default.toml"])
        .run();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("unknown field `bogus`"),
        "{}",
        stderr(&out)
    );
}

fn run_config(dir: &std::path::Path, model: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("run.toml");
    write(
        &cfg,
        &format!(
            "[input.replay]\npath = {:?}\nspeed = 0\n{extra}\n[model]\npath = {:?}\n[output]\njsonl = {:?}\n\
             [telemetry]\nlisten = \"127.0.0.1:0\"\n",
            demo_csv(),
            model,
            dir.join("out.jsonl")
        ),
    );
    cfg
}

#[test]
fn run_exits_zero_at_the_end_of_a_replay_and_78_on_a_broken_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("models/demo.onnx");
    // The same daemon run on every backend.
    for backend in backends() {
        let _ = std::fs::remove_file(dir.path().join("out.jsonl"));
        let cfg = run_config(dir.path(), &model, "");
        let out = accelwatch_on(&backend)
            .args(["run", "--config"])
            .arg(&cfg)
            .run();
        assert!(out.status.success(), "{}", stderr(&out));
        let lines = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
        assert_eq!(
            lines
                .lines()
                .filter(|l| l.contains("\"type\":\"window\""))
                .count(),
            276,
            "{}",
            backend.kind.name()
        );

        let broken = dir.path().join("broken.onnx");
        std::fs::write(&broken, &std::fs::read(&model).unwrap()[..1000]).unwrap();
        let cfg = run_config(dir.path(), &broken, "");
        let out = accelwatch_on(&backend)
            .args(["run", "--config"])
            .arg(&cfg)
            .run();
        assert_eq!(out.status.code(), Some(78));
        assert!(stderr(&out).contains("broken.onnx"), "{}", stderr(&out));
    }
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = run_config(dir.path(), &repo().join("models/demo.onnx"), "loop = true");
    let child = Child::spawn(
        accelwatch()
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(Stdio::piped()),
    );
    let out_path = dir.path().join("out.jsonl");
    wait_until_blocking(
        Duration::from_secs(60),
        "the daemon to write 200 kB of windows",
        || std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0) >= 200_000,
    );
    child.signal(libc::SIGTERM);
    let out = child.wait_with_output(Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pipeline drained"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line complete");
    }
}

#[test]
fn demo_trains_replays_and_raises_alerts() {
    let out = accelwatch()
        .args(["demo", "--once", "--speed", "0", "--listen", "127.0.0.1:0"])
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ALERT RAISED watch-9"), "{stdout}");
    assert!(stdout.contains("alert cleared"), "{stdout}");
    assert!(stdout.contains("Metrics: http://127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("on the embedded broker mqtt://127.0.0.1:"),
        "the demo goes over MQTT: {stdout}"
    );
    let windows = stdout.lines().filter(|l| l.starts_with("watch-")).count();
    assert_eq!(windows, 276, "every window came back over MQTT:\n{stdout}");
}

/// Broken configs, each broken in one place: `validate` refuses every one
/// with the key at fault (exit 78), and `run` refuses the same ones
/// (exit 78) before it reads a sample; the unbroken config passes both.
#[test]
fn validate_and_run_agree_on_broken_configs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = repo().join("models/demo.onnx");
    let broken_model = d.join("broken.onnx");
    std::fs::write(&broken_model, &std::fs::read(&model).unwrap()[..1000]).unwrap();
    std::fs::create_dir(d.join("a-directory")).unwrap();
    let not_a_dir = d.join("a-file");
    write(&not_a_dir, "not a directory");
    let empty_models = d.join("empty-models");
    std::fs::create_dir(&empty_models).unwrap();
    let bad_collection = d.join("bad-collection");
    std::fs::create_dir(&bad_collection).unwrap();
    write(&bad_collection.join("collected.awc"), "not windows");
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let base = |input: &str, model_section: &str, output: &str, rest: &str| {
        format!(
            "[input.replay]\npath = {}\nspeed = 0\n{input}\n[model]\n{model_section}\n\
             [output]\n{output}\n[telemetry]\nlisten = \"127.0.0.1:0\"\n{rest}\n",
            q(&demo_csv()),
        )
    };
    let model_path = format!("path = {}", q(&model));
    let jsonl = format!("jsonl = {}", q(&d.join("out.jsonl")));
    let online = "[training]\nmode = \"online\"\n";
    // (what is broken, the config, a text both commands' errors must hold)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "output.jsonl empty",
            base("", &model_path, "jsonl = \"\"", ""),
            "output.jsonl".into(),
        ),
        (
            "output.jsonl a directory",
            base(
                "",
                &model_path,
                &format!("jsonl = {}", q(&d.join("a-directory"))),
                "",
            ),
            "a-directory".into(),
        ),
        (
            "output.jsonl in a missing directory",
            base(
                "",
                &model_path,
                &format!("jsonl = {}", q(&d.join("nowhere/out.jsonl"))),
                "",
            ),
            "nowhere".into(),
        ),
        (
            "model.path missing",
            base(
                "",
                &format!("path = {}", q(&d.join("missing.onnx"))),
                &jsonl,
                "",
            ),
            "missing.onnx".into(),
        ),
        (
            "model.path not a model",
            base("", &format!("path = {}", q(&broken_model)), &jsonl, ""),
            "broken.onnx".into(),
        ),
        (
            "input.replay.path missing",
            format!(
                "[input.replay]\npath = {}\n[model]\n{model_path}\n[output]\n{jsonl}\n\
                 [telemetry]\nlisten = \"127.0.0.1:0\"\n",
                q(&d.join("missing.csv"))
            ),
            "missing.csv".into(),
        ),
        (
            "window.size against the model",
            base("[window]\nsize = 64\nhop = 32", &model_path, &jsonl, ""),
            "window.size".into(),
        ),
        (
            "model.dir a file",
            base("", &format!("dir = {}", q(&not_a_dir)), &jsonl, online),
            "a-file".into(),
        ),
        (
            "model.dir without a model, not training",
            base("", &format!("dir = {}", q(&empty_models)), &jsonl, ""),
            "empty-models".into(),
        ),
        (
            "model.dir with a corrupt collection",
            base("", &format!("dir = {}", q(&bad_collection)), &jsonl, online),
            "collected.awc".into(),
        ),
        (
            "detector.raise_after zero",
            base("", &model_path, &jsonl, "[detector]\nraise_after = 0"),
            "detector.raise_after".into(),
        ),
        (
            "output.mqtt.url not a URL",
            base(
                "",
                &model_path,
                &format!("{jsonl}\n[output.mqtt]\nurl = \"nope://x\""),
                "",
            ),
            "output.mqtt.url".into(),
        ),
    ];
    let cfg = d.join("case.toml");
    write(&cfg, &base("", &model_path, &jsonl, ""));
    let out = accelwatch().args(["validate", "--config"]).arg(&cfg).run();
    assert!(
        out.status.success(),
        "the unbroken config: {}",
        stderr(&out)
    );
    let out = accelwatch().args(["run", "--config"]).arg(&cfg).run();
    assert!(
        out.status.success(),
        "the unbroken config runs: {}",
        stderr(&out)
    );
    std::fs::remove_file(d.join("out.jsonl")).expect("the run wrote its windows");
    for (what, text, needle) in &cases {
        write(&cfg, text);
        let validated = accelwatch().args(["validate", "--config"]).arg(&cfg).run();
        let ran = accelwatch()
            .args(["run", "--config"])
            .arg(&cfg)
            .run_within(Duration::from_secs(60))
            .unwrap();
        for (command, out) in [("validate", &validated), ("run", &ran)] {
            assert_eq!(
                out.status.code(),
                Some(78),
                "{what}: {command} exits 78: {}",
                stderr(out)
            );
            assert!(
                stderr(out).contains(needle.as_str()),
                "{what}: {command} names {needle:?}: {}",
                stderr(out)
            );
        }
        assert!(!d.join("out.jsonl").exists(), "{what}: run scored nothing");
    }
}

/// Without `--config`, the offline commands still read the environment's
/// overrides, as README promises for every key; a bad value is exit 78
/// naming the key.
#[test]
fn train_without_a_config_reads_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let out = accelwatch()
        .env("ACCELWATCH__MODEL__SCORE", "latent")
        .env("ACCELWATCH__MODEL__VARIANT", "basic")
        .args(["train", "--data"])
        .arg(train_csv())
        .args(["--device-column", "series", "--epochs", "3", "--out"])
        .arg(&model)
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("training a basic autoencoder"), "{stderr}");
    assert!(stderr.contains("latent score threshold"), "{stderr}");
    let out = accelwatch()
        .env("ACCELWATCH__MODEL__INPUT", "bogus")
        .args(["train", "--data"])
        .arg(train_csv())
        .args(["--device-column", "series", "--out"])
        .arg(&model)
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("model.input"), "{stderr}");
}
