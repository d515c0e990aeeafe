#!/usr/bin/env python3
"""The README's path with the binary users run: train, score and evaluate
every `model.score` with every variant on the shipped data, then the demo.

Usage: python3 scripts/release_path.py [BINARY] [--epochs N] [--only SCORE/VARIANT]

BINARY defaults to target/release/accelwatch (`cargo build --release`, as the
README builds it). For each of the 3 scores x 6 variants: `train` on
data/watch/train-pen.csv (3 channels), `score` data/watch/demo.csv (every
window line must carry a finite score), and `evaluate` it with PEN as normal
(the report must hold a ROC AUC); then `demo --once --speed 0 --no-mqtt`.
Prints one row per model (seconds to train, threshold, ROC AUC) and exits
non-zero, naming the model and the command's stderr, on the first failure:
.ci/run calls it, so a failure of the README's path fails CI. Training is
seeded: the figures are the same on every run of one build.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = ["reconstruction", "latent", "combined"]
VARIANTS = ["basic", "deep", "denoising", "sparse", "vae", "conv"]


def run(args, env=None, what=""):
    started = time.monotonic()
    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        sys.exit(f"FAILED ({what}): {' '.join(args)}\nexit {out.returncode}\n{out.stderr[-4000:]}")
    return out, time.monotonic() - started


def main():
    args = sys.argv[1:]
    epochs = None
    only = None
    if "--epochs" in args:
        i = args.index("--epochs")
        epochs = args[i + 1]
        del args[i:i + 2]
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i:i + 2]
    binary = os.path.abspath(args[0]) if args else os.path.join(REPO, "target/release/accelwatch")
    if not os.path.exists(binary):
        sys.exit(f"{binary} is missing: build it with `cargo build --release` first")
    print(f"binary: {binary}")
    print("| score | variant | train s | threshold | ROC AUC (PEN normal, demo.csv) | windows scored |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for score in SCORES:
            for variant in VARIANTS:
                name = f"{score}/{variant}"
                if only and only != name:
                    continue
                model = os.path.join(tmp, f"{score}-{variant}.onnx")
                env = dict(os.environ, ACCELWATCH__MODEL__SCORE=score)
                train = [binary, "train", "--data", "data/watch/train-pen.csv",
                         "--device-column", "series", "--variant", variant, "--out", model]
                if epochs:
                    train += ["--epochs", epochs]
                trained, seconds = run(train, env, f"train {name}")
                # The score asked for is the one the model was calibrated for.
                if score != "reconstruction" and f"{score} score threshold" not in trained.stderr:
                    sys.exit(f"FAILED (train {name}): not calibrated for {score}:\n"
                             f"{trained.stderr[-2000:]}")
                out, _ = run([binary, "score", "--model", model, "--data", "data/watch/demo.csv"],
                             env, f"score {name}")
                windows = [json.loads(line) for line in out.stdout.splitlines()]
                windows = [w for w in windows if w.get("type") == "window"]
                bad = [w for w in windows if not math.isfinite(w["score"])]
                if not windows or bad:
                    sys.exit(f"FAILED (score {name}): {len(windows)} windows, "
                             f"{len(bad)} without a finite score")
                report = os.path.join(tmp, f"report-{score}-{variant}")
                run([binary, "evaluate", "--model", model, "--data", "data/watch/demo.csv",
                     "--label", "exercise", "--normal", "PEN", "--report", report],
                    env, f"evaluate {name}")
                with open(os.path.join(report, "report.json")) as f:
                    evaluated = json.load(f)
                auc = find(evaluated, "roc_auc")
                if auc is None or not 0.0 <= auc <= 1.0:
                    sys.exit(f"FAILED (evaluate {name}): no ROC AUC in report.json")
                meta_threshold = find(evaluated, "threshold")
                print(f"| {score} | {variant} | {seconds:.1f} | {fmt(meta_threshold)} | {auc:.3f} "
                      f"| {len(windows)} |", flush=True)
    if not only:
        _, seconds = run([binary, "demo", "--once", "--speed", "0", "--no-mqtt"],
                         what="demo --once --speed 0 --no-mqtt")
        print(f"demo --once --speed 0 --no-mqtt: exit 0 in {seconds:.1f} s")
    print("the README's path passed")


def find(value, key):
    """The first number under `key` anywhere in a JSON document."""
    if isinstance(value, dict):
        if isinstance(value.get(key), (int, float)):
            return float(value[key])
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        found = find(item, key)
        if found is not None:
            return found
    return None


def fmt(value):
    return "-" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    main()
