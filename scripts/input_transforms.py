#!/usr/bin/env python3
"""How far an input transformation alone takes exercise recognition.

Usage: python3 scripts/input_transforms.py PATH/TO/watch.csv

Before building a spectral input or a normalisation into training (issue
14, item 2), this measures what each would give a 5-NN classifier at best:
the exercise (7 classes) of every window, 5-fold cross-validated by
subject, on the transformed windows themselves and on their first 16
principal components (an upper-bound stand-in for a 16-number code made
from them). Windows: per recording, 128 samples every 64, as accelwatch
cuts them; standardised per channel on all windows, then each feature
standardised on the training folds.

Transformations:
- raw: the standardised window (T·C values);
- spectrum+mean: per channel, the window's mean and the magnitudes of
  its DFT bins 1-32 (phase dropped: a shift in time changes nothing);
- stats: per channel, mean, standard deviation, min, max, quartiles and
  mean absolute difference, and the correlation of every channel pair.
Normalisations of the recording (`device`), applied before the window:
- none;
- mean: the recording's mean per channel subtracted (what a per-device
  running mean would converge to);
- standard: the recording's mean and standard deviation per channel.

Needs numpy and scikit-learn only (it shares scripts/quality_table.py's
reader, which imports onnx only to score accelwatch's models).
"""
import sys

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import KNeighborsClassifier

# The same recordings and windows as the quality table's.
from quality_table import HOP, SIZE, read_recordings


def windows(recordings, device):
    out, subjects, exercises = [], [], []
    for values, subject, exercise in recordings.values():
        if device == "mean":
            values = values - values.mean(axis=0)
        elif device == "standard":
            values = (values - values.mean(axis=0)) / values.std(axis=0)
        for start in range(0, len(values) - SIZE + 1, HOP):
            out.append(values[start:start + SIZE])
            subjects.append(subject)
            exercises.append(exercise)
    return np.stack(out), np.asarray(subjects), np.asarray(exercises)


def transform(kind, w):
    flat = w.reshape(-1, w.shape[2])
    z = (w - flat.mean(axis=0)) / flat.std(axis=0)
    if kind == "raw":
        return z.reshape(len(z), -1)
    if kind == "spectrum+mean":
        mean = z.mean(axis=1)
        spectrum = np.abs(np.fft.rfft(z - mean[:, None], axis=1))[:, 1:33] / np.sqrt(SIZE)
        return np.concatenate([spectrum.reshape(len(z), -1), mean * 2], axis=1)
    if kind == "stats":
        centred = z - z.mean(axis=1, keepdims=True)
        parts = [z.mean(1), z.std(1), z.min(1), z.max(1), np.percentile(z, 25, axis=1),
                 np.percentile(z, 75, axis=1), np.abs(np.diff(z, axis=1)).mean(1)]
        c = z.shape[2]
        pairs = [(centred[:, :, i] * centred[:, :, j]).mean(1)
                 / (centred[:, :, i].std(1) * centred[:, :, j].std(1) + 1e-6)
                 for i in range(c) for j in range(i + 1, c)]
        return np.concatenate(parts + [np.stack(pairs, axis=1)], axis=1)
    raise ValueError(kind)


def accuracy(x, exercises, subjects):
    knn, pca = [], []
    for train, test in GroupKFold(5).split(x, exercises, subjects):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        xs = (x - mean) / std
        knn.append((KNeighborsClassifier(5).fit(xs[train], exercises[train])
                    .predict(xs[test]) == exercises[test]).mean())
        codes = PCA(16, random_state=0).fit(xs[train]).transform(xs)
        pca.append((KNeighborsClassifier(5).fit(codes[train], exercises[train])
                    .predict(codes[test]) == exercises[test]).mean())
    return np.mean(knn), np.mean(pca)


def main(path):
    recordings = read_recordings(path)
    print("| device normalisation | channels | transformation | 5-NN accuracy | 5-NN on PCA-16 |")
    print("|---|---|---|---|---|")
    for device in ["none", "mean", "standard"]:
        w, subjects, exercises = windows(recordings, device)
        for channels in (3, 6):
            for kind in ["raw", "spectrum+mean", "stats"]:
                knn, pca = accuracy(transform(kind, w[:, :, :channels]), exercises, subjects)
                print(f"| {device} | {channels} | {kind} | {knn:.3f} | {pca:.3f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1])
