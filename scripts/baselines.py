#!/usr/bin/env python3
"""Reference anomaly scores on the smartwatch recordings, without accelwatch.

Usage: python3 scripts/baselines.py PATH/TO/watch.csv [NORMAL...]

For each normal exercise (default PEN ABD FEL): train on the windows of that
exercise of subjects 1-7, score every window of every exercise of subjects
8-10 (the other exercises are the anomalies) and print the ROC AUC of:

- mlp: a scikit-learn MLPRegressor autoencoder 64-16-64 (ReLU, Adam,
  max_iter 300, random_state 0) fitted X -> X; score: mean squared
  reconstruction error of the window;
- iforest: IsolationForest (100 trees, random_state 0); score:
  -score_samples;
- knn-raw: the mean Euclidean distance to the 5 nearest training windows;
- knn-code: the same on the MLP's 16-unit middle layer (its codes).

Windows are cut as accelwatch cuts them: per recording (`series`), 128
samples every 64, time-major, the three accelerometer channels ax, ay, az.
Every method sees the windows standardised per channel with the mean and
standard deviation of the training windows (as accelwatch's own models do).

Needs numpy and scikit-learn only. watch.csv: data/watch/README.md; the
shipped data/watch/train-pen.csv holds only the PEN training part.
"""
import csv
import sys
import warnings
from collections import defaultdict

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.neural_network import MLPRegressor

CHANNELS = ["ax", "ay", "az"]
SIZE, HOP = 128, 64
TRAIN_SUBJECTS = {1, 2, 3, 4, 5, 6, 7}
TEST_SUBJECTS = {8, 9, 10}
K = 5


def read_windows(path):
    """Windows of every recording: (windows [N, SIZE*C], subject [N], exercise [N])."""
    rows = defaultdict(list)
    meta = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[r["series"]].append([float(r[c]) for c in CHANNELS])
            meta[r["series"]] = (int(r["subject"]), r["exercise"])
    windows, subjects, exercises = [], [], []
    for series, values in rows.items():
        values = np.asarray(values, dtype=np.float64)
        for start in range(0, len(values) - SIZE + 1, HOP):
            windows.append(values[start:start + SIZE].reshape(-1))
            subjects.append(meta[series][0])
            exercises.append(meta[series][1])
    return np.stack(windows), np.asarray(subjects), np.asarray(exercises)


def standardise(train, test):
    """Per-channel standardisation with the training windows' statistics."""
    c = len(CHANNELS)
    per_channel = train.reshape(-1, c)
    mean, std = per_channel.mean(axis=0), per_channel.std(axis=0)
    scale = lambda x: ((x.reshape(len(x), -1, c) - mean) / std).reshape(len(x), -1)
    return scale(train), scale(test)


def knn_distance(train, test):
    nn = NearestNeighbors(n_neighbors=K).fit(train)
    distances, _ = nn.kneighbors(test)
    return distances.mean(axis=1)


def mlp_code(mlp, x):
    """The output of the 16-unit middle layer (ReLU, as the hidden layers)."""
    h = x
    for w, b in zip(mlp.coefs_[:2], mlp.intercepts_[:2]):
        h = np.maximum(h @ w + b, 0.0)
    return h


def scores(train, test):
    train, test = standardise(train, test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPRegressor(hidden_layer_sizes=(64, 16, 64), max_iter=300, random_state=0)
        mlp.fit(train, train)
    forest = IsolationForest(n_estimators=100, random_state=0).fit(train)
    return {
        "mlp": ((test - mlp.predict(test)) ** 2).mean(axis=1),
        "iforest": -forest.score_samples(test),
        "knn-raw": knn_distance(train, test),
        "knn-code": knn_distance(mlp_code(mlp, train), mlp_code(mlp, test)),
    }


def main(path, normals):
    windows, subjects, exercises = read_windows(path)
    test = np.isin(subjects, list(TEST_SUBJECTS))
    if not test.any():
        sys.exit(f"{path}: no window of subjects 8-10 to score: this needs the full watch.csv")
    print(
        f"ROC AUC; train: one exercise of subjects 1-7; test: every exercise of subjects 8-10 "
        f"({test.sum()} windows); windows {SIZE}/{HOP} of {','.join(CHANNELS)}"
    )
    print()
    methods = ["mlp", "iforest", "knn-raw", "knn-code"]
    heads = [
        "MLP autoencoder 64-16-64",
        "IsolationForest",
        f"{K}-NN distance, raw windows",
        f"{K}-NN distance, MLP codes",
    ]
    print("| normal | training windows | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for normal in normals:
        train = np.isin(subjects, list(TRAIN_SUBJECTS)) & (exercises == normal)
        anomalous = exercises[test] != normal
        if not train.any() or anomalous.all() or not anomalous.any():
            sys.exit(f"{path}: {normal}: no training windows, or test windows of one kind only")
        by_method = scores(windows[train], windows[test])
        aucs = [f"{roc_auc_score(anomalous, by_method[m]):.3f}" for m in methods]
        print(f"| {normal} | {train.sum()} | " + " | ".join(aucs) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1], sys.argv[2:] or ["PEN", "ABD", "FEL"])
