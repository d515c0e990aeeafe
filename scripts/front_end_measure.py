#!/usr/bin/env python3
"""Which feature front end the autoencoder should get (issue 28), measured with scikit-learn.

Usage: python3 scripts/front_end_measure.py PATH/TO/watch.csv [SEEDS] [PART...]

SEEDS (default 3) is how many seeds (0, 1, ...) each model is trained with;
every AUC and accuracy printed is the mean over them (columns marked
"seed 0" are one run). PART (default: all, in this order): `main` (A-E
below), `bins8` (the same with 4 statistics and bins 1-8, the raw 5-NN
distance as a second score, more variations), `mix8` (the bins 1-8 mix over
every seed), `features` (F). Needs numpy and scikit-learn only. With 3
seeds on 2 cores a part takes 1-5 minutes when the machine is quiet and up
to 26 minutes beside other builds (load 9; times in docs/measured.md): run
one part at a time, under `nice -n 10` and OMP_NUM_THREADS=1.

Protocol (as scripts/quality_table.py, whose reader and peers it imports, so
the windows are identical): windows of 128 samples every 64 per recording
(`series`); for each of the 7 exercises as normal and each channel set
(ax,ay,az; ax..wz): train on that exercise of subjects 1-7, score every
window of every exercise of subjects 8-10 (the other exercises are the
anomalies), ROC AUC. The reference per task is the best of quality_table's
raw-window peers (MLP AE 64-16-64, IsolationForest, PCA-16, 5-NN raw).

The front end (quality_table.FrontEnd), per channel c of the window z
(each channel first standardised with the training windows' per-channel
mean and std): mean, std, min, max, and log(1 + |DFT_k|) of bins k = 1..16
of z - mean(z) (the plain DFT, sum over the 128 samples, no scaling); then
every feature standardised with the training windows' mean and std. Layout: feature k of channel c at k*C + c.

Part `main`, candidates (columns of the per-task table):
- A  `feat MLP`: the issue's model: MLPRegressor 64-16-64 (ReLU, Adam,
  max_iter 300) fitted on the features of all training windows, score: mean
  squared reconstruction error (MSE).
- A' `feat MLP split rec` / C `feat MLP split comb`: the same network fitted
  on accelwatch's split (per training stream the last ceil(20%) of windows
  held out, the one window overlapping them dropped; standardisation from
  the fitted windows): MSE, and `combined` = 1/2 (z(MSE) + z(latent)), latent =
  mean Euclidean distance of the 16-d code to its 5 nearest codes of the
  fitted windows, each z-scored with mean/std over the held-out tail windows.
- B  `feat deep-dn` rec / lat / comb: accelwatch's default network shape
  (`denoising`: hidden [128, 64], latent 16, ReLU, linear output), trained as
  accelwatch trains: batches of 32, Adam lr 1e-3, L2 1e-4, fresh Gaussian
  noise sigma 0.3 on the standardised input each epoch (clean targets),
  early stopping on the held-out tail's clean MSE with patience 20, best
  epoch kept, at most 300 epochs. Difference: scikit-learn puts ReLU on the
  code layer too (accelwatch's code is linear).
- D  `mix` (seed 0 only: 5-7 times wider): the features concatenated with
  the raw standardised window, the raw block scaled by w = sqrt(total variance of the features / total
  variance of the raw block) on the fitted windows (both blocks carry equal
  variance); MLP 64-16-64 split (rec, comb) and deep-dn (comb).
- E  variations, each on A's model, one seed (seed 0): bins 1-32; |DFT|
  without log; the magnitude sqrt(ax^2+ay^2+az^2) (in g, standardised like a
  channel) as one more channel; 4 statistics + bins 1-8.

Part `bins8`: as `main` with 4 statistics and bins 1-8 (`f8`, `mix8`),
plus `+ 5-NN raw` = 1/2 (z(MSE) + z(5-NN distance on the raw standardised
window to the fitted windows)), both z-scored on the held-out tail, and
variations E with bins 1-12, 1-4, none, and bins 1-8 with the magnitude.

Feature quality (F): 7-exercise classification, train on every window of
subjects 1-7, test on subjects 8-10, 6 channels: the 16-d codes of an
autoencoder fitted on the training windows' features (MLP 64-16-64, and the
deep-dn network with the last 20% of each stream held out for early
stopping), then an MLPClassifier (64 hidden, ReLU, Adam, max_iter 500, on
codes standardised with the training codes' statistics) and the 5-NN vote
on the raw codes; and the same two classifiers on the features themselves;
the same for the bins 1-8 features (`f8`); and, as references (seed 0
only), the MLP codes of the mix and of the raw standardised window.
"""
import copy
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.neural_network import MLPClassifier, MLPRegressor

# The same recordings, windows, peers and front end as the quality table's.
from quality_table import (ALL, CHANNEL_SETS, EXERCISES, HOP, K, SIZE, FrontEnd, peer_scores,
                           read_recordings, read_windows)

TRAIN_SUBJECTS, TEST_SUBJECTS = list(range(1, 8)), [8, 9, 10]
SIGMA, PATIENCE, MAX_EPOCHS, BATCH = 0.3, 20, 300, 32
HELD = 0.2


def stream_ids(path, n):
    """The recording of each window, in read_windows' order."""
    ids = []
    for i, (values, _, _) in enumerate(read_recordings(path).values()):
        ids += [i] * len(range(0, len(values) - SIZE + 1, HOP))
    assert len(ids) == n
    return np.asarray(ids)


def accelwatch_split(streams, fraction=HELD):
    """Indices into `streams` (one window per entry, in order): accelwatch's
    train/validation split: per stream the last ceil(fraction*n) windows held
    out, the windows overlapping them (ceil(SIZE/HOP) - 1) left out of both."""
    overlap = -(-SIZE // HOP) - 1
    fit, held = [], []
    start = 0
    while start < len(streams):
        end = start
        while end < len(streams) and streams[end] == streams[start]:
            end += 1
        n = end - start
        h = int(np.ceil(n * fraction))
        if n > h + overlap and h > 0:
            fit += range(start, end - h - overlap)
            held += range(end - h, end)
        else:
            fit += range(start, end)
        start = end
    return np.asarray(fit), np.asarray(held)


# ---------------------------------------------------------------- models
def mlp(x, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPRegressor(hidden_layer_sizes=(64, 16, 64), max_iter=300,
                            random_state=seed).fit(x, x)


def deep_denoising(x, validation, seed):
    """accelwatch's default network and training, as near as scikit-learn gets."""
    rng = np.random.default_rng(seed)
    net = MLPRegressor(hidden_layer_sizes=(128, 64, 16, 64, 128), batch_size=BATCH,
                       learning_rate_init=1e-3, alpha=1e-4, random_state=seed)
    best, best_loss, waited = None, np.inf, 0
    for _ in range(MAX_EPOCHS):
        net.partial_fit(x + SIGMA * rng.standard_normal(x.shape), x)
        loss = ((net.predict(validation) - validation) ** 2).mean()
        if loss < best_loss:
            best_loss, waited = loss, 0
            best = (copy.deepcopy(net.coefs_), copy.deepcopy(net.intercepts_))
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    net.coefs_, net.intercepts_ = best
    return net


def codes(net, x):
    """The middle (16-unit) layer: ReLU after every hidden layer, as scikit-learn."""
    h = x
    for w, b in list(zip(net.coefs_, net.intercepts_))[:len(net.coefs_) // 2]:
        h = np.maximum(h @ w + b, 0.0)
    return h


def mse(net, x):
    return ((x - net.predict(x)) ** 2).mean(axis=1)


def latent(net, fit, x):
    nn = NearestNeighbors(n_neighbors=K).fit(codes(net, fit))
    return nn.kneighbors(codes(net, x))[0].mean(axis=1)


def split_scores(net, fit, held, test):
    """reconstruction, latent and combined (z-scored on the held-out windows)."""
    r, l = mse(net, test), latent(net, fit, test)
    rh, lh = mse(net, held), latent(net, fit, held)
    comb = 0.5 * ((r - rh.mean()) / rh.std() + (l - lh.mean()) / lh.std())
    return {"rec": r, "lat": l, "comb": comb}


# ---------------------------------------------------------------- anomaly tasks
def knn_raw(w_fit, w):
    """The 5-NN distance on the raw standardised window (quality_table's peer)."""
    flat = w_fit.reshape(-1, w_fit.shape[2])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    z = lambda x: ((x - mean) / std).reshape(len(x), -1)
    return NearestNeighbors(n_neighbors=K).fit(z(w_fit)).kneighbors(z(w))[0].mean(axis=1)


def zsum(a, a_held, b, b_held):
    return 0.5 * ((a - a_held.mean()) / a_held.std() + (b - b_held.mean()) / b_held.std())


def run_columns(part, w_train, w_fit, w_held, w_test, seed):
    """{column: score of the test windows} of one part for one seed (None: skip)."""
    out = {}
    if part == "main":
        fe = FrontEnd().fit(w_train)
        out["A"] = mse(mlp(fe(w_train), seed), fe(w_test))
        fe = FrontEnd().fit(w_fit)
        fit, held, x = fe(w_fit), fe(w_held), fe(w_test)
        s = split_scores(mlp(fit, seed), fit, held, x)
        out["A'"], out["C"] = s["rec"], s["comb"]
        s = split_scores(deep_denoising(fit, held, seed), fit, held, x)
        out["B"], out["B lat"], out["BC"] = s["rec"], s["lat"], s["comb"]
        if seed == 0:  # the mix is 5-7 times wider than the features alone: seed 0 only
            fe = FrontEnd(mix=True).fit(w_fit)
            fit, held, x = fe(w_fit), fe(w_held), fe(w_test)
            s = split_scores(mlp(fit, 0), fit, held, x)
            out["D"], out["DC"] = s["rec"], s["comb"]
            s = split_scores(deep_denoising(fit, held, 0), fit, held, x)
            out["DB"] = s["comb"]
            for key, _, kw in VARIATIONS["main"]:
                fe = FrontEnd(**kw).fit(w_train)
                out[key] = mse(mlp(fe(w_train), 0), fe(w_test))
    elif part == "bins8":
        fe = FrontEnd(bins=8).fit(w_train)
        out["A8"] = mse(mlp(fe(w_train), seed), fe(w_test))
        nn_held, nn_test = knn_raw(w_fit, w_held), knn_raw(w_fit, w_test)
        fe = FrontEnd(bins=8).fit(w_fit)
        fit, held, x = fe(w_fit), fe(w_held), fe(w_test)
        net = mlp(fit, seed)
        s = split_scores(net, fit, held, x)
        out["A8'"], out["C8"] = s["rec"], s["comb"]
        out["A8+NN"] = zsum(s["rec"], mse(net, held), nn_test, nn_held)
        net = deep_denoising(fit, held, seed)
        s = split_scores(net, fit, held, x)
        out["B8"], out["BC8"] = s["rec"], s["comb"]
        out["B8+NN"] = zsum(s["rec"], mse(net, held), nn_test, nn_held)
        fe = FrontEnd().fit(w_fit)
        fit, held, x = fe(w_fit), fe(w_held), fe(w_test)
        net = mlp(fit, seed)
        out["A16+NN"] = zsum(mse(net, x), mse(net, held), nn_test, nn_held)
        if seed == 0:
            fe = FrontEnd(bins=8, mix=True).fit(w_fit)
            fit, held, x = fe(w_fit), fe(w_held), fe(w_test)
            s = split_scores(mlp(fit, 0), fit, held, x)
            out["D8"], out["DC8"] = s["rec"], s["comb"]
            for key, _, kw in VARIATIONS["bins8"]:
                fe = FrontEnd(**kw).fit(w_train)
                out[key] = mse(mlp(fe(w_train), 0), fe(w_test))
    elif part == "mix8":  # the mix of bins 1-8 over every seed
        fe = FrontEnd(bins=8, mix=True).fit(w_fit)
        fit, held, x = fe(w_fit), fe(w_held), fe(w_test)
        s = split_scores(mlp(fit, seed), fit, held, x)
        out["D8"], out["DC8"] = s["rec"], s["comb"]
    return out


COLUMNS = {
    "main": [
        ("A", "feat MLP (A)"),
        ("A'", "feat MLP split rec"),
        ("C", "feat MLP split comb (C)"),
        ("B", "feat deep-dn rec (B)"),
        ("B lat", "feat deep-dn lat"),
        ("BC", "feat deep-dn comb (B+C)"),
        ("D", "mix MLP split rec (D)"),
        ("DC", "mix MLP split comb (D)"),
        ("DB", "mix deep-dn comb (D)"),
    ],
    "bins8": [
        ("A8", "f8 MLP"),
        ("A8'", "f8 MLP split rec"),
        ("C8", "f8 MLP split comb"),
        ("A8+NN", "f8 MLP split rec + 5-NN raw"),
        ("B8", "f8 deep-dn rec"),
        ("BC8", "f8 deep-dn comb"),
        ("B8+NN", "f8 deep-dn rec + 5-NN raw"),
        ("A16+NN", "feat MLP split rec + 5-NN raw"),
        ("D8", "mix8 MLP split rec"),
        ("DC8", "mix8 MLP split comb"),
    ],
    "mix8": [
        ("D8", "mix8 MLP split rec"),
        ("DC8", "mix8 MLP split comb"),
    ],
}
VARIATIONS = {
    "main": [
        ("E32", "bins 1-32", dict(bins=32)),
        ("Enolog", "no log", dict(log=False)),
        ("Emag", "+ magnitude ch.", dict(magnitude=True)),
        ("E4x8", "4 stats + bins 1-8", dict(bins=8)),
    ],
    "bins8": [
        ("E12", "4 stats + bins 1-12", dict(bins=12)),
        ("E4", "4 stats + bins 1-4", dict(bins=4)),
        ("E0", "4 stats, no DFT", dict(bins=0)),
        ("E8mag", "4 stats + bins 1-8 + magnitude ch.", dict(bins=8, magnitude=True)),
    ],
    "mix8": [],
}
SEED0 = {"D", "DC", "DB", "D8", "DC8"}  # in parts main and bins8


def task(part, windows, subjects, exercises, streams, normal, idx, seeds):
    train = np.isin(subjects, TRAIN_SUBJECTS) & (exercises == normal)
    test = np.isin(subjects, TEST_SUBJECTS)
    anomalous = exercises[test] != normal
    w_train, w_test = windows[train][:, :, idx], windows[test][:, :, idx]
    peers = peer_scores(w_train.astype(np.float32), w_test.astype(np.float32))
    peer_auc = {m: roc_auc_score(anomalous, s) for m, s in peers.items()}
    fit_i, held_i = accelwatch_split(streams[train])
    auc = defaultdict(list)
    for seed in range(seeds):
        for key, score in run_columns(part, w_train, w_train[fit_i], w_train[held_i],
                                      w_test, seed).items():
            auc[key].append(roc_auc_score(anomalous, score))
    return peer_auc, {k: float(np.mean(v)) for k, v in auc.items()}, \
        {k: float(np.std(v)) if len(v) > 1 else None for k, v in auc.items()}, int(train.sum())


def targets(name, values, best):
    """Issue 28's targets: mean >= 0.955, every task >= best raw peer - 0.01."""
    mean = np.mean(values)
    short = [(t, v - (b - 0.01)) for t, v, b in zip(TASK_NAMES, values, best) if v < b - 0.01]
    margin = min(v - (b - 0.01) for v, b in zip(values, best))
    ok = mean >= 0.955 and not short
    text = ", ".join(f"{t} {m:+.3f}" for t, m in short) or "none"
    return (f"| {name} | {mean:.4f} | {mean - 0.955:+.4f} | {margin:+.3f} | {len(short)} | {text} | "
            f"{'**yes**' if ok else 'no'} |")


TASK_NAMES = []


def anomaly_tables(part, windows, subjects, exercises, streams, seeds):
    keys = [k for k, _ in COLUMNS[part]] + [k for k, _, _ in VARIATIONS[part]]
    heads = [h + (" (seed 0)" if k in SEED0 and part != "mix8" else "")
             for k, h in COLUMNS[part]] + [
        f"E: {h} (seed 0)" for _, h, _ in VARIATIONS[part]]
    TASK_NAMES.clear()
    print(f"Part `{part}`. ROC AUC, mean over {seeds} seed(s) unless marked seed 0; train: one exercise of subjects "
          f"1-7; test: every exercise of subjects 8-10 ({np.isin(subjects, TEST_SUBJECTS).sum()} "
          f"windows); windows {SIZE}/{HOP}")
    print()
    print("| normal | ch | train windows | best raw peer | " + " | ".join(heads) + " |")
    print("|---|---|---|---|" + "---|" * len(heads))
    cols, best, spread = defaultdict(list), [], defaultdict(list)
    peer_names = {"mlp": "MLP AE", "iforest": "IForest", "pca": "PCA-16", "knn": "5-NN raw"}
    for channels in CHANNEL_SETS:
        idx = [ALL.index(c) for c in channels]
        for normal in EXERCISES:
            t0 = time.time()
            peers, auc, sd, n = task(part, windows, subjects, exercises, streams, normal, idx, seeds)
            top = max(peers, key=peers.get)
            best.append(peers[top])
            TASK_NAMES.append(f"{normal}/{len(channels)}")
            for k in keys:
                cols[k].append(auc[k])
                spread[k].append(sd[k])
            print(f"| {normal} | {len(channels)} | {n} | {peers[top]:.3f} ({peer_names[top]}) | "
                  + " | ".join(f"{auc[k]:.3f}" for k in keys) + " |", flush=True)
            print(f"{normal}/{len(channels)}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    for label, sl in [("mean, 3 ch", slice(0, 7)), ("mean, 6 ch", slice(7, 14)),
                      ("**mean, 14**", slice(0, 14))]:
        print(f"| {label} | | | {np.mean(best[sl]):.3f} | "
              + " | ".join(f"{np.mean(cols[k][sl]):.3f}" for k in keys) + " |")
    if seeds > 1:
        print(f"| std over seeds, mean of tasks | | | | " + " | ".join(
            "-" if spread[k][0] is None else f"{np.mean(spread[k]):.3f}" for k in keys) + " |")
    print()
    print("Issue 28's targets: mean over the 14 tasks >= 0.955; every task >= best raw peer - 0.01 "
          "(margin: the worst task's AUC minus that bound)")
    print()
    print("| candidate | mean | mean - 0.955 | worst margin | tasks short | short by | meets both |")
    print("|---|---|---|---|---|---|---|")
    for k, h in zip(keys, heads):
        print(targets(h, cols[k], best))
    print()


# ---------------------------------------------------------------- feature quality
def feature_quality(windows, subjects, exercises, streams, seeds):
    train = np.isin(subjects, TRAIN_SUBJECTS)
    test = np.isin(subjects, TEST_SUBJECTS)
    w_train, w_test = windows[train], windows[test]
    y_train, y_test = exercises[train], exercises[test]
    fit_i, held_i = accelwatch_split(streams[train])
    results = defaultdict(list)

    def classify(name, c_train, c_test, seed):
        mean, std = c_train.mean(axis=0), c_train.std(axis=0)
        std[std == 0] = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            head = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed)
            head.fit((c_train - mean) / std, y_train)
        results[(name, "MLP head (64)")].append(
            (head.predict((c_test - mean) / std) == y_test).mean())
        knn = KNeighborsClassifier(K).fit(c_train, y_train)
        results[(name, "5-NN")].append((knn.predict(c_test) == y_test).mean())

    for seed in range(seeds):
        fe = FrontEnd().fit(w_train)
        x_train, x_test = fe(w_train), fe(w_test)
        classify("features themselves (120-d)", x_train, x_test, seed)
        net = mlp(x_train, seed)
        classify("codes of feat MLP 64-16-64", codes(net, x_train), codes(net, x_test), seed)
        net = deep_denoising(x_train[fit_i], x_train[held_i], seed)
        classify("codes of feat deep-dn", codes(net, x_train), codes(net, x_test), seed)
        fe = FrontEnd(bins=8).fit(w_train)
        x_train, x_test = fe(w_train), fe(w_test)
        classify("features 4 stats + bins 1-8 themselves (72-d)", x_train, x_test, seed)
        net = mlp(x_train, seed)
        classify("codes of f8 MLP 64-16-64", codes(net, x_train), codes(net, x_test), seed)
        net = deep_denoising(x_train[fit_i], x_train[held_i], seed)
        classify("codes of f8 deep-dn", codes(net, x_train), codes(net, x_test), seed)
    # The wide inputs (mix, raw window): seed 0 only.
    fe = FrontEnd(mix=True).fit(w_train)
    x_train, x_test = fe(w_train), fe(w_test)
    net = mlp(x_train, 0)
    classify("codes of mix MLP 64-16-64 (seed 0)", codes(net, x_train), codes(net, x_test), 0)
    raw_mean = w_train.reshape(-1, 6).mean(axis=0)
    raw_std = w_train.reshape(-1, 6).std(axis=0)
    r_train = ((w_train - raw_mean) / raw_std).reshape(len(w_train), -1)
    r_test = ((w_test - raw_mean) / raw_std).reshape(len(w_test), -1)
    net = mlp(r_train, 0)
    classify("codes of raw-window MLP 64-16-64 (seed 0)", codes(net, r_train), codes(net, r_test), 0)
    print(f"Exercise accuracy (7 classes), train: subjects 1-7 ({train.sum()} windows), test: "
          f"subjects 8-10 ({test.sum()} windows), 6 channels, mean over {seeds} seed(s); "
          f"targets: head >= 0.84, 5-NN on codes >= 0.80")
    print()
    print("| input | MLP head (64) | 5-NN |")
    print("|---|---|---|")
    for name in dict.fromkeys(n for n, _ in results):
        print(f"| {name} | {np.mean(results[(name, 'MLP head (64)')]):.3f} | "
              f"{np.mean(results[(name, '5-NN')]):.3f} |")


PARTS = ["main", "bins8", "mix8", "features"]


def main(path, seeds, parts):
    t0 = time.time()
    windows, subjects, exercises = read_windows(path)
    windows = windows.astype(np.float64)
    streams = stream_ids(path, len(windows))
    print(f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, python "
          f"{sys.version.split()[0]}; {seeds} seed(s)")
    print()
    for part in parts:
        t1 = time.time()
        if part == "features":
            feature_quality(windows, subjects, exercises, streams, seeds)
        else:
            anomaly_tables(part, windows, subjects, exercises, streams, seeds)
        print(f"part `{part}`: {time.time() - t1:.0f} s")
        print()
    print(f"run time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__.split("\n\n")[1])
    seeds = next((int(a) for a in args[1:] if a.isdigit()), 3)
    parts = [a for a in args[1:] if not a.isdigit()] or PARTS
    if set(parts) - set(PARTS):
        sys.exit(f"parts: {' '.join(PARTS)}")
    main(args[0], seeds, parts)
