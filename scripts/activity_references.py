#!/usr/bin/env python3
"""Supervised references for the activity (exercise) task, with scikit-learn.

Usage: python3 scripts/activity_references.py PATH/TO/watch.csv [SEEDS]

The windows of scripts/quality_table.py (per recording, 128 samples every
64), 6 channels, 7 classes (the exercises): train on every window of
subjects 1-7, test on every window of subjects 8-10, and print the accuracy
and macro-F1 of classifiers trained with the labels, on

- `f8`: the features of quality_table.FrontEnd(bins=8) fitted on the
  training windows (per channel mean, std, min, max, log(1 + |DFT|) of bins
  1-8, standardised; 72-d): MLPClassifier (64 hidden, ReLU, Adam, max_iter
  500), RandomForestClassifier (300 trees) and the 5-NN vote;
- the raw window, each channel standardised with the training windows'
  statistics, flattened (768-d): MLPClassifier (64 hidden).

What labels reach, against which to read the unsupervised codes of
scripts/front_end_measure.py's part `features` (this split) and of
scripts/quality.sh's feature table (which cross-validates by subject
instead). SEEDS (default 3) seeds 0, 1, ... of the MLPs and
the forest: the accuracy and macro-F1 printed are the means over them, with
the accuracy's smallest and largest (5-NN is deterministic). Needs numpy and
scikit-learn only.
"""
import sys
import time
import warnings

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier

from quality_table import K, FrontEnd, read_windows

TRAIN_SUBJECTS, TEST_SUBJECTS = list(range(1, 8)), [8, 9, 10]


def mlp_classifier(seed):
    return MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed)


def activity_references(windows, subjects, exercises, seeds=3):
    """[(input, classifier, [(accuracy, macro-F1) per seed])] on the 6-channel windows."""
    train = np.isin(subjects, TRAIN_SUBJECTS)
    test = np.isin(subjects, TEST_SUBJECTS)
    w_train, w_test = windows[train].astype(np.float64), windows[test].astype(np.float64)
    y_train, y_test = exercises[train], exercises[test]
    fe = FrontEnd(bins=8).fit(w_train)
    f_train, f_test = fe(w_train), fe(w_test)
    flat = w_train.reshape(-1, w_train.shape[2])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    r_train = ((w_train - mean) / std).reshape(len(w_train), -1)
    r_test = ((w_test - mean) / std).reshape(len(w_test), -1)
    f8 = f"f8 features ({f_train.shape[1]}-d)"
    raw = f"raw standardised window ({r_train.shape[1]}-d)"
    rows = [
        (f8, "MLPClassifier (64)", f_train, f_test, mlp_classifier, seeds),
        (f8, "RandomForest (300)", f_train, f_test,
         lambda s: RandomForestClassifier(n_estimators=300, random_state=s, n_jobs=1), seeds),
        (raw, "MLPClassifier (64)", r_train, r_test, mlp_classifier, seeds),
        (f8, "5-NN", f_train, f_test, lambda s: KNeighborsClassifier(K), 1),
    ]
    out = []
    for name, model, x_train, x_test, make, n in rows:
        runs = []
        for seed in range(n):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                predicted = make(seed).fit(x_train, y_train).predict(x_test)
            runs.append(((predicted == y_test).mean(), f1_score(y_test, predicted, average="macro")))
        out.append((name, model, runs))
    return out, int(train.sum()), int(test.sum())


def main(path, seeds):
    t0 = time.time()
    windows, subjects, exercises = read_windows(path)
    rows, n_train, n_test = activity_references(windows, subjects, exercises, seeds)
    print(f"Exercise accuracy (7 classes), supervised; train: every window of subjects 1-7 "
          f"({n_train}), test: subjects 8-10 ({n_test}); 6 channels; mean over {seeds} seed(s)")
    print()
    print("| input | classifier | accuracy | accuracy min-max over seeds | macro-F1 |")
    print("|---|---|---|---|---|")
    for name, model, runs in rows:
        acc = [a for a, _ in runs]
        spread = f"{min(acc):.3f}-{max(acc):.3f}" if len(runs) > 1 else "- (deterministic)"
        print(f"| {name} | {model} | {np.mean(acc):.3f} | {spread} | "
              f"{np.mean([f for _, f in runs]):.3f} |", flush=True)
    print()
    print(f"run time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__.split("\n\n")[1])
    main(args[0], int(args[1]) if len(args) > 1 else 3)
