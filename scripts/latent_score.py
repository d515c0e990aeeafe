#!/usr/bin/env python3
"""A model's anomaly scores from the ONNX file alone, with onnxruntime and numpy.

Usage: python3 scripts/latent_score.py MODEL.onnx DATA.csv DEVICE_COLUMN

Prints one JSON object: {"score": KIND, "classes": [...] or null, "windows":
[{"device", "seq", "score", "reconstruction", "latent", "activity"}...]} for
every window of DATA.csv (per
device, in file order, the model's window and hop, its channels), where
`score` is what accelwatch publishes, computed as docs/models.md (The model
file: scores) says:

- reconstruction: mean squared error over the window's T*C values, in the
  model's normalised units (for a model with a front end, over the features
  its graph gives as the front end's output; with the metadata's
  `error_weights`, the weighted sum of the squares instead);
- latent: the graph's `latent_score` output, which must equal the mean of the
  k smallest Euclidean distances of the `latent` output to the rows of the
  initializer `latent_references` (checked here, to the bound float32
  rounding of the graph's expansion allows: docs/models.md, Scores);
- combined: 0.5 * ((mse - mu_r) / sigma_r + (d - mu_l) / sigma_l), with the
  moments of the metadata's score;

and `activity`, for a model with an activity head (metadata `activity`), the
window's class probabilities from the head's output, in the order of
`classes` (null without a head).

Needs numpy, onnx and onnxruntime (tests/it/scores.rs runs it).
"""
import csv
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def windows(path, device_column, channels, size, hop):
    streams = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            streams.setdefault(row[device_column], []).append([float(row[c]) for c in channels])
    out = []
    for device, rows in streams.items():
        data = np.asarray(rows, dtype=np.float32)
        for seq, start in enumerate(range(0, len(data) - size + 1, hop)):
            out.append((device, seq, data[start:start + size].reshape(-1)))
    return out


def distance_with_tolerance(z, refs, k):
    """The mean distance to the k nearest references, exactly, and how far a
    float32 graph may lie from it (src/model/latent.rs, distance_with_tolerance):
    the graph's expansion cancels terms of size (|z - c| + |R_j - c|)^2, each
    d^2 off by (2D + 8) float32 ulps of that, and sqrt turns an error e into at
    most min(sqrt(e), e / 2d)."""
    d = np.sqrt(((z[:, None, :] - refs[None, :, :]) ** 2).sum(axis=2))
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    dk = np.take_along_axis(d, nearest, axis=1)
    c = refs.mean(axis=0)
    z_norm = np.linalg.norm(z - c, axis=1)[:, None]
    r_norm = np.linalg.norm(refs - c, axis=1)[nearest]
    eps = float(np.finfo(np.float32).eps)
    e = (2 * z.shape[1] + 8) * eps * (z_norm + r_norm) ** 2
    with np.errstate(divide="ignore"):
        rounding = np.where(dk > 0, np.minimum(np.sqrt(e), e / (2 * dk)), np.sqrt(e))
    allowed = rounding + 4 * eps * dk
    return dk.mean(axis=1), allowed.mean(axis=1)


def main(model_path, data_path, device_column):
    model = onnx.load(model_path)
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == "accelwatch"))
    c = len(meta["channels"])
    found = windows(data_path, device_column, meta["channels"], meta["window"], meta["hop"])
    x = np.stack([w for _, _, w in found])
    norm = meta.get("normalization")
    if norm:
        x = ((x.reshape(len(x), -1, c) - np.asarray(norm["mean"], np.float32))
             / np.asarray(norm["std"], np.float32)).reshape(len(x), -1).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
    # A model with a front end reconstructs the features its graph computes
    # from the window (metadata front_end), not the window.
    front_end = meta.get("front_end")
    target = out[front_end.get("output", "features")] if front_end else x
    weights = meta.get("error_weights")
    if weights is None:
        mse = ((target - out["reconstruction"]) ** 2).mean(axis=1)
    else:
        # Σ w_j (x_j - x̂_j)^2: each feature by its held-out error (docs/models.md).
        mse = (np.asarray(weights, np.float32) * (target - out["reconstruction"]) ** 2).sum(axis=1)
    kind = meta["score"]["kind"]
    distance = None
    if kind in ("latent", "combined"):
        refs = next(numpy_helper.to_array(t) for t in model.graph.initializer
                    if t.name == "latent_references").astype(np.float64)
        k = meta["score"]["k"]
        z = out["latent"].astype(np.float64)
        distance, allowed = distance_with_tolerance(z, refs, k)
        ratio = (np.abs(out["latent_score"] - distance) / allowed).max()
        if not ratio <= 1.0:
            sys.exit(f"latent_score output differs from numpy's k-NN distance by {ratio:.2f} "
                     "times what float32 rounding explains")
    if kind == "latent":
        score = distance
    elif kind == "combined":
        r, l = meta["score"]["reconstruction"], meta["score"]["latent"]
        score = 0.5 * ((mse - r["mean"]) / r["std"] + (distance - l["mean"]) / l["std"])
    else:
        score = mse
    head = meta.get("activity")
    probs = out[head.get("output", "activity_probs")] if head else None
    print(json.dumps({
        "score": kind,
        "classes": head["classes"] if head else None,
        "windows": [
            {"device": dev, "seq": seq, "score": float(s), "reconstruction": float(e),
             "latent": None if distance is None else float(distance[i]),
             "activity": None if probs is None else [float(p) for p in probs[i]]}
            for i, ((dev, seq, _), s, e) in enumerate(zip(found, score, mse))
        ],
    }))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    main(*sys.argv[1:])
