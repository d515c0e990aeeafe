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
- the raw-window peers of scripts/baselines.py, on the same windows
  standardised with the training windows' statistics: a scikit-learn
  MLPRegressor autoencoder 64-16-64, IsolationForest, PCA-16 (squared
  reconstruction error from the first 16 principal components) and the mean
  distance to the 5 nearest training windows;
- the feature-space peers (`f8`): the same MLP autoencoder 64-16-64 (its
  reconstruction error), IsolationForest and 5-NN mean distance on the
  features of FrontEnd(bins=8) (below; accelwatch's default `mix` input
  without its raw block: per channel mean, std, min, max, log(1 + |DFT|) of
  bins 1-8, standardised), fitted on the same training windows;
- the best raw-window peer and the best of all seven peers of that task.

Then the mean over the tasks of each column, and for each of accelwatch's
scores on how many tasks it is at or above (and within 0.01 of) the best
raw peer and the best peer. The environment reaches `BIN train`
(ACCELWATCH__MODEL__INPUT=raw trains on the raw window, say); with
QUALITY_PEERS_CACHE=FILE the peers' AUCs are kept in FILE (keys `ABD/3` for
the raw-window peers, `f8/ABD/3` for the feature peers, so a file written
before the feature peers existed stays valid) and read back on the next run
(they are deterministic and take most of the time). Windows: per recording
(`series`), 128 samples every 64, as accelwatch cuts them. Needs numpy,
scikit-learn, onnx and onnxruntime (imported only to score accelwatch's
model: the reader, FrontEnd and the peers need numpy and scikit-learn alone),
and the accelwatch binary BIN. The supervised references of the activity
task are scripts/activity_references.py's.
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


def accelwatch_outputs(model_path, x):
    """(metadata, {output name: array}, normalised flat windows) of an
    accelwatch model run by onnxruntime on raw windows [N, T, C]."""
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
    return meta, out, xn


def accelwatch_scores(model_path, x):
    """reconstruction, latent and combined scores of raw windows [N, T, C]."""
    meta, out, xn = accelwatch_outputs(model_path, x)
    # A model with a front end reconstructs the features its graph computes.
    front_end = meta.get("front_end")
    target = out[front_end.get("output", "features")] if front_end else xn
    weights = meta.get("error_weights")
    if weights is None:
        mse = ((target - out["reconstruction"]) ** 2).mean(axis=1)
    else:
        # Σ w_j (x_j - x̂_j)^2: each feature by its held-out error (docs/models.md).
        mse = (np.asarray(weights, np.float32) * (target - out["reconstruction"]) ** 2).sum(axis=1)
    d = out["latent_score"]
    r, l = meta["score"]["reconstruction"], meta["score"]["latent"]
    combined = 0.5 * ((mse - r["mean"]) / r["std"] + (d - l["mean"]) / l["std"])
    return {"reconstruction": mse, "latent": d, "combined": combined}


RAW_PEERS = ["mlp", "iforest", "pca", "knn"]
FEATURE_PEERS = ["mlp", "iforest", "knn"]


def peer_scores(train, test, peers=RAW_PEERS):
    """{peer: score of each test row} of the peers fitted on the training rows.
    Windows [N, T, C] are standardised per channel with the training windows'
    statistics and flattened; feature rows [N, F] (FrontEnd's output, already
    standardised) are used as they are."""
    if train.ndim == 3:
        c = train.shape[2]
        flat = train.reshape(-1, c)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        train = ((train - mean) / std).reshape(len(train), -1)
        test = ((test - mean) / std).reshape(len(test), -1)
    out = {}
    if "mlp" in peers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = MLPRegressor(hidden_layer_sizes=(64, 16, 64), max_iter=300, random_state=0)
            mlp.fit(train, train)
        out["mlp"] = ((test - mlp.predict(test)) ** 2).mean(axis=1)
    if "iforest" in peers:
        forest = IsolationForest(n_estimators=100, random_state=0).fit(train)
        out["iforest"] = -forest.score_samples(test)
    if "pca" in peers:
        pca = PCA(n_components=16, random_state=0).fit(train)
        out["pca"] = ((test - pca.inverse_transform(pca.transform(test))) ** 2).mean(axis=1)
    if "knn" in peers:
        nn = NearestNeighbors(n_neighbors=K).fit(train)
        out["knn"] = nn.kneighbors(test)[0].mean(axis=1)
    return out


class FrontEnd:
    """accelwatch's feature front end in numpy: standardise each channel with
    the training windows' mean and std, compute per channel mean, std, min,
    max and log(1 + |DFT_k|) of bins k = 1..`bins` of the mean-removed window
    (plain DFT, no scaling), then standardise every feature with the training
    windows' statistics; feature k of channel c at k*C + c. FrontEnd(bins=8)
    is the feature part of accelwatch's default `mix` input. `mix=True`
    appends the raw standardised window scaled so both blocks carry equal
    variance; the other options are scripts/front_end_measure.py's variations."""

    def __init__(self, bins=16, log=True, stats=4, magnitude=False, mix=False, features=True):
        self.bins, self.log, self.stats = bins, log, stats
        self.magnitude, self.mix, self.features = magnitude, mix, features

    def _channels(self, w):
        if self.magnitude:
            m = np.sqrt((w[:, :, :3] ** 2).sum(axis=2, keepdims=True))
            w = np.concatenate([w, m], axis=2)
        return w

    def _features(self, z):
        mean = z.mean(axis=1)
        parts = [mean, z.std(axis=1), z.min(axis=1), z.max(axis=1)][:self.stats]
        spectrum = np.abs(np.fft.rfft(z - mean[:, None], axis=1))[:, 1:self.bins + 1]
        if self.log:
            spectrum = np.log1p(spectrum)
        f = np.concatenate([p[:, None, :] for p in parts] + [spectrum], axis=1)  # [N, K, C]
        return f.reshape(len(z), -1)  # feature k of channel c at k*C + c

    def fit(self, w):
        w = self._channels(w)
        flat = w.reshape(-1, w.shape[2])
        self.cmean, self.cstd = flat.mean(axis=0), flat.std(axis=0)
        z = (w - self.cmean) / self.cstd
        f = self._features(z)
        self.fmean, self.fstd = f.mean(axis=0), f.std(axis=0)
        self.fstd[self.fstd == 0] = 1.0
        f = (f - self.fmean) / self.fstd
        raw = z.reshape(len(z), -1)
        self.weight = np.sqrt(f.var(axis=0).sum() / raw.var(axis=0).sum())
        return self

    def __call__(self, w):
        z = (self._channels(w) - self.cmean) / self.cstd
        f = (self._features(z) - self.fmean) / self.fstd
        if self.mix:
            return np.concatenate([f, self.weight * z.reshape(len(z), -1)], axis=1)
        return f


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


NAMES = {"mlp": "MLP AE 64-16-64", "iforest": "IsolationForest", "pca": "PCA-16",
         "knn": "5-NN raw", "mlp f8": "MLP AE f8", "iforest f8": "IF f8", "knn f8": "5-NN f8"}


def main(path, binary, variant, normals):
    cache = os.environ.get("QUALITY_PEERS_CACHE")
    windows, subjects, exercises = read_windows(path)
    test = np.isin(subjects, [8, 9, 10])
    ours = ["reconstruction", "latent", "combined"]
    raw = list(RAW_PEERS)
    feat = [f"{m} f8" for m in FEATURE_PEERS]
    peers = raw + feat
    heads = [f"accelwatch {variant} {s}" for s in ours] + [NAMES[m] for m in peers]
    print(f"ROC AUC; train: one exercise of subjects 1-7; test: every exercise of subjects "
          f"8-10 ({test.sum()} windows); windows {SIZE}/{HOP}; f8: the peer on FrontEnd(bins=8)'s "
          f"features (4 statistics + log|DFT| bins 1-8 per channel) of the same windows")
    print()
    print("| normal | channels | " + " | ".join(heads) + " | best raw peer | best peer |")
    print("|---|---|" + "---|" * (len(heads) + 2))
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
            x_train, x_test = windows[train][:, :, idx], windows[test][:, :, idx]
            scores = accelwatch_scores(model, x_test)
            aucs = {m: roc_auc_score(anomalous, scores[m]) for m in ours}
            # Cache keys: "ABD/3" the raw-window peers (as before), "f8/ABD/3" the feature peers.
            aucs.update(cached_peer_aucs(cache, f"{normal}/{len(channels)}", lambda: {
                m: roc_auc_score(anomalous, s)
                for m, s in peer_scores(x_train, x_test).items()}))

            def feature_peers():
                fe = FrontEnd(bins=8).fit(x_train.astype(np.float64))
                return {m: roc_auc_score(anomalous, s) for m, s in peer_scores(
                    fe(x_train.astype(np.float64)), fe(x_test.astype(np.float64)),
                    FEATURE_PEERS).items()}
            aucs.update({f"{m} f8": a for m, a in cached_peer_aucs(
                cache, f"f8/{normal}/{len(channels)}", feature_peers).items()})
            for m, a in aucs.items():
                sums[m].append(a)
            best_raw = max(raw, key=aucs.get)
            best = max(peers, key=aucs.get)
            sums["best raw"].append(aucs[best_raw])
            sums["best"].append(aucs[best])
            print(f"| {normal} | {len(channels)} | "
                  + " | ".join(f"{aucs[m]:.3f}" for m in ours + peers)
                  + f" | {aucs[best_raw]:.3f} ({NAMES[best_raw]}) | {aucs[best]:.3f} ({NAMES[best]}) |",
                  flush=True)
    print("| **mean** | | " + " | ".join(f"**{np.mean(sums[m]):.3f}**" for m in ours + peers)
          + f" | {np.mean(sums['best raw']):.3f} | {np.mean(sums['best']):.3f} |")
    print()
    n = len(sums["best"])
    for m in ours:
        line = []
        for label, best in [("best raw peer", sums["best raw"]), ("best peer", sums["best"])]:
            margin = np.asarray(sums[m]) - np.asarray(best)
            line.append(f"at or above the {label} on {(margin >= 0).sum()}/{n} tasks, within "
                        f"0.01 on {(margin >= -0.01).sum()}/{n} (worst {margin.min():+.3f})")
        print(f"accelwatch {variant} {m}: " + "; ".join(line))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or EXERCISES)
