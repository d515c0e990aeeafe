#!/usr/bin/env python3
"""What a 16-number code would need for nearest neighbours to classify the
exercise across people, measured with scikit-learn before building
configs/activity.toml (docs/models.md, "Codes for activity recognition").

Usage: python3 scripts/activity_codes_measure.py PATH/TO/watch.csv [MODEL.onnx]

The windows of scripts/quality_table.py, 6 channels, 7 exercises; train on
subjects 1-7, test on 8-10. Prints `evaluate`'s 5-NN protocol (standardised,
folds grouped by subject among subjects 8-10) on:
- the f8 features (quality_table.FrontEnd(bins=8), 72-d);
- LDA of them (6-d), logistic regression's 7 scores (C 10);
- a 16-unit layer of MLPClassifier trained on them with the labels, ReLU
  and identity (linear), 2 seeds.
With an accelwatch model trained with --label (accelwatch train ... --label
exercise --include subject=1,...,7), also logistic regression on its code
and features, trained on every window of subjects 1-7 and on three random
four fifths of the takes (C 0.1 to 100): how much which windows the head
learns from moves it. Needs numpy, scikit-learn, onnx and onnxruntime.
"""
import sys
import warnings

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from quality_table import HOP, SIZE, FrontEnd, accelwatch_outputs, read_recordings

TRAIN, TEST = list(range(1, 8)), [8, 9, 10]


def windows_of(path):
    """Windows, subjects, exercises and each window's take (recording)."""
    w, s, y, g = [], [], [], []
    for take, (values, subject, exercise) in enumerate(read_recordings(path).values()):
        for start in range(0, len(values) - SIZE + 1, HOP):
            w.append(values[start:start + SIZE])
            s.append(subject)
            y.append(exercise)
            g.append(take)
    return np.stack(w), np.asarray(s), np.asarray(y), np.asarray(g)


def knn_by_subject(x, y, s):
    """evaluate's feature quality: 5-NN, each test subject by the others."""
    predicted = np.empty(len(x), dtype=y.dtype)
    for subject in np.unique(s):
        fit, held = s != subject, s == subject
        scaler = StandardScaler().fit(x[fit])
        knn = KNeighborsClassifier(5).fit(scaler.transform(x[fit]), y[fit])
        predicted[held] = knn.predict(scaler.transform(x[held]))
    return (predicted == y).mean()


def logistic(x_fit, y_fit, x_test, y_test, c):
    scaler = StandardScaler().fit(x_fit)
    model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x_fit), y_fit)
    return (model.predict(scaler.transform(x_test)) == y_test).mean()


def main(path, model=None):
    warnings.simplefilter("ignore")
    w, s, y, g = windows_of(path)
    tr, te = np.isin(s, TRAIN), np.isin(s, TEST)
    front = FrontEnd(bins=8).fit(w[tr].astype(np.float64))
    f = front(w.astype(np.float64))
    knn = lambda x: knn_by_subject(x[te], y[te], s[te])
    print(f"5-NN on subjects 8-10, folds by subject (evaluate's protocol)")
    print(f"- f8 features (72-d): {knn(f):.3f}")
    print(f"- LDA of them (6-d): {knn(LinearDiscriminantAnalysis().fit(f[tr], y[tr]).transform(f)):.3f}")
    scores = LogisticRegression(C=10, max_iter=5000).fit(f[tr], y[tr]).decision_function(f)
    print(f"- logistic regression's 7 scores: {knn(scores):.3f}", flush=True)
    for seed in range(2):
        for activation in ["relu", "identity"]:
            mlp = MLPClassifier(hidden_layer_sizes=(16,), activation=activation, max_iter=1000,
                                random_state=seed).fit(f[tr], y[tr])
            h = f @ mlp.coefs_[0] + mlp.intercepts_[0]
            if activation == "relu":
                h = np.maximum(h, 0)
            print(f"- a 16-unit {activation} layer trained with the labels, seed {seed}: "
                  f"{knn(h):.3f} (its classifier: {(mlp.predict(f[te]) == y[te]).mean():.3f})", flush=True)
    if model is None:
        return
    meta, out, _ = accelwatch_outputs(model, w.astype(np.float32))
    rows = meta["activity"].get("front_end_features", 0)
    x = np.hstack([out["latent"], out[meta["front_end"].get("output", "features")][:, :rows]])
    cs = [0.1, 1, 10, 100]
    print(f"\nLogistic regression on {model}'s code and {rows} front-end features, tested on subjects 8-10")
    print("- trained on every window of subjects 1-7: "
          + ", ".join(f"C {c}: {logistic(x[tr], y[tr], x[te], y[te], c):.3f}" for c in cs))
    rng = np.random.default_rng(0)
    for draw in range(3):
        takes = np.unique(g[tr])
        left = rng.choice(takes, int(0.2 * len(takes)), replace=False)
        fit = tr & ~np.isin(g, left)
        print(f"- without a random fifth of the takes ({draw}): "
              + ", ".join(f"C {c}: {logistic(x[fit], y[fit], x[te], y[te], c):.3f}" for c in cs), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__.split("\n\n")[1])
    main(args[0], args[1] if len(args) > 1 else None)
