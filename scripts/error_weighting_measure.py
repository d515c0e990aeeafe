#!/usr/bin/env python3
"""Which reconstruction error a model with a front end should be scored by, measured.

Usage: python3 scripts/error_weighting_measure.py PATH/TO/watch.csv BIN [PEERS_CACHE]

For the 14 tasks of scripts/quality_table.py (each exercise as normal,
3 and 6 channels; train subjects 1-7, score subjects 8-10; ROC AUC), `BIN
train` the default model (mix front end, denoising), read its `features`
and `reconstruction` outputs with onnxruntime on the training and the test
windows, and score the test windows by several errors computed here from
the residuals r = features - reconstruction (so the result does not
depend on the error the binary itself publishes):

- `mean`: mean of r^2 over every value (accelwatch before error_weights);
- `features only`, `window only`: the mean over one block (the 12
  features a channel, or the weighted window of `mix`);
- `std all`: each value's r^2 over its mean square on the held-out windows
  (accelwatch's split: the last fifth of each training stream), mean;
- `std features`: the same over the feature block only;
- `std features + window` (what accelwatch now does, `error_weights`): the
  feature block as `std features` plus the window block's mean r^2 over its
  held-out mean, so each block adds about 1 on normal windows;
- `2 std features + window`: the feature block counted twice.

With PEERS_CACHE (a QUALITY_PEERS_CACHE file of quality_table.py), the
columns `IF f8` and `best raw peer` are read from it. Needs numpy,
scikit-learn, onnx, onnxruntime. Run from the repository (the training
config names data/watch/demo.csv relative to it).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from sklearn.metrics import roc_auc_score

from front_end_measure import accelwatch_split, stream_ids
from quality_table import ALL, CHANNEL_SETS, EXERCISES, REPO, accelwatch_outputs, read_windows


def outputs(model_path, x):
    """The residuals features - reconstruction of raw windows [N, T, C]."""
    _, out, _ = accelwatch_outputs(model_path, x)
    return out["features"] - out["reconstruction"]


def main(path, binary, cache):
    peers = json.load(open(cache)) if cache else {}
    windows, subjects, exercises = read_windows(path)
    streams = stream_ids(path, len(windows))
    test = np.isin(subjects, [8, 9, 10])
    work = tempfile.mkdtemp()
    rows = {}
    for channels in CHANNEL_SETS:
        idx = [ALL.index(c) for c in channels]
        for normal in EXERCISES:
            model = os.path.join(work, "model.onnx")
            subprocess.run(
                [binary, "train", "--config", os.path.join(REPO, "configs/default.toml"),
                 "--data", path, "--device-column", "series", "--channels", ",".join(channels),
                 "--variant", "denoising", "--include", "subject=1,2,3,4,5,6,7",
                 "--include", f"exercise={normal}", "--out", model],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            train = np.isin(subjects, list(range(1, 8))) & (exercises == normal)
            _, held = accelwatch_split(streams[train])
            r_held = outputs(model, windows[train][:, :, idx])[held]
            r = outputs(model, windows[test][:, :, idx])
            y = exercises[test] != normal
            nf = 12 * len(channels)
            ms = (r_held ** 2).mean(axis=0) + 1e-12
            ms_window = (r_held[:, nf:] ** 2).mean()
            std_features = (r[:, :nf] ** 2 / ms[:nf]).mean(axis=1)
            window = (r[:, nf:] ** 2).mean(axis=1) / ms_window
            scores = {
                "mean": (r ** 2).mean(axis=1),
                "features only": (r[:, :nf] ** 2).mean(axis=1),
                "window only": (r[:, nf:] ** 2).mean(axis=1),
                "std all": (r ** 2 / ms).mean(axis=1),
                "std features": std_features,
                "std features + window": std_features + window,
                "2 std features + window": 2 * std_features + window,
            }
            auc = {k: roc_auc_score(y, v) for k, v in scores.items()}
            key = f"{normal}/{len(channels)}"
            if key in peers and f"f8/{key}" in peers:
                auc["IF f8"] = peers[f"f8/{key}"]["iforest"]
                auc["best raw peer"] = max(peers[key].values())
            rows[(normal, len(channels))] = auc
            print(f"{normal} {len(channels)}: " + " ".join(f"{k} {v:.3f}" for k, v in auc.items()),
                  file=sys.stderr, flush=True)
    names = list(next(iter(rows.values())))
    print("| normal | channels | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for (normal, c), auc in rows.items():
        print(f"| {normal} | {c} | " + " | ".join(f"{auc[k]:.3f}" for k in names) + " |")
    print("| **mean** | | " + " | ".join(
        f"**{np.mean([a[k] for a in rows.values()]):.4f}**" for k in names) + " |")
    if "IF f8" in names:
        print()
        for k in names[:-2]:
            vs_raw = min(a[k] - (a["best raw peer"] - 0.01) for a in rows.values())
            vs_if = [a[k] - a["IF f8"] for a in rows.values()]
            print(f"- {k}: worst margin over (best raw peer - 0.01) {vs_raw:+.3f}; at or above "
                  f"IF f8 on {sum(m >= 0 for m in vs_if)}/14, worst {min(vs_if):+.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
