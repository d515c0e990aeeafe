#!/usr/bin/env python3
"""accelwatch's three scores against the scikit-learn peers, on the same windows.

Usage: python3 scripts/quality_table.py PATH/TO/watch.csv BIN VARIANT [NORMAL...]

For each normal exercise (default: all seven) and each channel set (ax,ay,az
and ax,ay,az,wx,wy,wz): `BIN train` (accelwatch) the VARIANT with
`model.score = "combined"` on that exercise of subjects 1-7, then score every
window of every exercise of subjects 8-10 (the other exercises are the
anomalies) and print the ROC AUC of

- accelwatch's `reconstruction`, `latent` and `combined` scores of that one
  model (its outputs through onnxruntime, the formulas of docs/models.md,
  which tests/it/scores.rs checks against accelwatch's own published scores);
- the peers of scripts/baselines.py, on the same windows standardised with the
  training windows' statistics: a scikit-learn MLPRegressor autoencoder
  64-16-64, IsolationForest, PCA-16 (squared reconstruction error from the
  first 16 principal components) and the mean distance to the 5 nearest
  training windows.

Then the mean over the tasks of each column. The environment reaches `BIN
train` (ACCELWATCH__MODEL__INPUT=mix trains on the mix front end, say);
with QUALITY_PEERS_CACHE=FILE the peers' AUCs are kept in FILE and read
back on the next run (they are deterministic and take most of the time). Windows: per recording
(`series`), 128 samples every 64, as accelwatch cuts them. Needs numpy,
scikit-learn, onnx and onnxruntime (imported only to score accelwatch's
model: the reader and the peers need numpy and scikit-learn alone), and the
accelwatch binary BIN.
"""
import csv
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.neural_network import MLPRegressor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, HOP, K = 128, 64, 5
EXERCISES = ["ABD", "ER", "FEL", "IR", "PEN", "ROW", "TRAP"]
CHANNEL_SETS = [["ax", "ay", "az"], ["ax", "ay", "az", "wx", "wy", "wz"]]
ALL = ["ax", "ay", "az", "wx", "wy", "wz"]


def read_recordings(path):
    """Every recording (`series`) of watch.csv: {series: (values [T, 6], subject, exercise)}."""
    rows, meta = defaultdict(list), {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[r["series"]].append([float(r[c]) for c in ALL])
            meta[r["series"]] = (int(r["subject"]), r["exercise"])
    return {s: (np.asarray(v, dtype=np.float32), *meta[s]) for s, v in rows.items()}


def read_windows(path):
    windows, subjects, exercises = [], [], []
    for values, subject, exercise in read_recordings(path).values():
        for start in range(0, len(values) - SIZE + 1, HOP):
            windows.append(values[start:start + SIZE])
            subjects.append(subject)
            exercises.append(exercise)
    return np.stack(windows), np.asarray(subjects), np.asarray(exercises)


def accelwatch_scores(model_path, x):
    """reconstruction, latent and combined scores of raw windows [N, T, C]."""
    # Imported here, so that scripts reusing the reader need numpy and scikit-learn only.
    import onnx
    import onnxruntime as ort

    model = onnx.load(model_path)
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "accelwatch"))
    norm = meta["normalization"]
    xn = ((x - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32))
    xn = xn.reshape(len(x), -1).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {session.get_inputs()[0].name: xn})))
    # A model with a front end reconstructs the features its graph computes.
    front_end = meta.get("front_end")
    target = out[front_end.get("output", "features")] if front_end else xn
    mse = ((target - out["reconstruction"]) ** 2).mean(axis=1)
    d = out["latent_score"]
    r, l = meta["score"]["reconstruction"], meta["score"]["latent"]
    combined = 0.5 * ((mse - r["mean"]) / r["std"] + (d - l["mean"]) / l["std"])
    return {"reconstruction": mse, "latent": d, "combined": combined}


def peer_scores(train, test):
    c = train.shape[2]
    flat = train.reshape(-1, c)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    train = ((train - mean) / std).reshape(len(train), -1)
    test = ((test - mean) / std).reshape(len(test), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPRegressor(hidden_layer_sizes=(64, 16, 64), max_iter=300, random_state=0)
        mlp.fit(train, train)
    forest = IsolationForest(n_estimators=100, random_state=0).fit(train)
    pca = PCA(n_components=16, random_state=0).fit(train)
    nn = NearestNeighbors(n_neighbors=K).fit(train)
    return {
        "mlp": ((test - mlp.predict(test)) ** 2).mean(axis=1),
        "iforest": -forest.score_samples(test),
        "pca": ((test - pca.inverse_transform(pca.transform(test))) ** 2).mean(axis=1),
        "knn": nn.kneighbors(test)[0].mean(axis=1),
    }


def cached_peer_aucs(cache, key, compute):
    """The peers' AUCs of one task, from the JSON file `cache` when it has them
    (the peers do not depend on accelwatch, and are most of the run time)."""
    stored = {}
    if cache and os.path.exists(cache):
        with open(cache) as f:
            stored = json.load(f)
    if key not in stored:
        stored[key] = compute()
        if cache:
            with open(cache, "w") as f:
                json.dump(stored, f, indent=1, sort_keys=True)
    return stored[key]


def main(path, binary, variant, normals):
    cache = os.environ.get("QUALITY_PEERS_CACHE")
    windows, subjects, exercises = read_windows(path)
    test = np.isin(subjects, [8, 9, 10])
    ours = ["reconstruction", "latent", "combined"]
    peers = ["mlp", "iforest", "pca", "knn"]
    heads = [f"accelwatch {variant} {s}" for s in ours] + [
        "MLP AE 64-16-64", "IsolationForest", "PCA-16", "5-NN raw"]
    print(f"ROC AUC; train: one exercise of subjects 1-7; test: every exercise of subjects "
          f"8-10 ({test.sum()} windows); windows {SIZE}/{HOP}")
    print()
    print("| normal | channels | " + " | ".join(heads) + " | best peer |")
    print("|---|---|" + "---|" * (len(heads) + 1))
    sums = defaultdict(list)
    work = tempfile.mkdtemp()
    for channels in CHANNEL_SETS:
        idx = [ALL.index(c) for c in channels]
        for normal in normals:
            model = os.path.join(work, "model.onnx")
            env = dict(os.environ, ACCELWATCH__MODEL__SCORE="combined")
            subprocess.run(
                [binary, "train", "--config", os.path.join(REPO, "configs/default.toml"),
                 "--data", path, "--device-column", "series", "--channels", ",".join(channels),
                 "--variant", variant, "--include", "subject=1,2,3,4,5,6,7",
                 "--include", f"exercise={normal}", "--out", model],
                env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            train = np.isin(subjects, list(range(1, 8))) & (exercises == normal)
            anomalous = exercises[test] != normal
            x_test = windows[test][:, :, idx]
            scores = accelwatch_scores(model, x_test)
            aucs = {m: roc_auc_score(anomalous, scores[m]) for m in ours}
            aucs.update(cached_peer_aucs(cache, f"{normal}/{len(channels)}", lambda: {
                m: roc_auc_score(anomalous, s)
                for m, s in peer_scores(windows[train][:, :, idx], x_test).items()}))
            for m, a in aucs.items():
                sums[m].append(a)
            best = max(aucs[m] for m in peers)
            sums["best"].append(best)
            print(f"| {normal} | {len(channels)} | "
                  + " | ".join(f"{aucs[m]:.3f}" for m in ours + peers) + f" | {best:.3f} |",
                  flush=True)
    print("| **mean** | | " + " | ".join(f"**{np.mean(sums[m]):.3f}**" for m in ours + peers)
          + f" | {np.mean(sums['best']):.3f} |")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or EXERCISES)
