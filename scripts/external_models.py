#!/usr/bin/env python3
"""Models made by third-party tools, for tests/it/external.rs and docs/models.md.

Trains a small scikit-learn MLPRegressor autoencoder on the shipped PEN
recordings (raw units, time-major windows, as the external-model contract
says), exports it with skl2onnx, and writes into OUT_DIR:

  sklearn_raw.onnx, .json      skl2onnx's export as it comes (output [N*T*C, 1])
  sklearn.onnx, sklearn.json   the same, its output reshaped to [N, T*C], and
                               its sidecar metadata (one output, no latent)
  sklearn_ntc.onnx             the same network taking [N, T, C] input, its
                               16-unit code exposed as the output "code" and
                               its metadata inside (ONNX metadata_props)
  nan.onnx, nan.json           a model whose answer to a zero window is NaN
  fixed_batch.onnx, .json      a model whose batch dimension is fixed at 1
  expected.json                onnxruntime's (Python) reconstruction errors,
                               and codes, for every window of data/watch/demo.csv

Usage: scripts/external_models.py OUT_DIR
Needs: pip install numpy scikit-learn skl2onnx onnx onnxruntime
"""

import csv
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.neural_network import MLPRegressor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNELS = ["ax", "ay", "az"]
WINDOW, HOP, RATE = 128, 64, 50.0
FEATURES = WINDOW * len(CHANNELS)


def windows(path, device_column):
    """Per device, in file order: windows of WINDOW samples every HOP,
    flattened time-major (t0's channels, then t1's...), in raw units."""
    streams = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            streams.setdefault(row[device_column], []).append([float(row[c]) for c in CHANNELS])
    out = []
    for device, rows in streams.items():
        data = np.asarray(rows, dtype=np.float32)
        for seq, start in enumerate(range(0, len(data) - WINDOW + 1, HOP)):
            out.append((device, seq, data[start:start + WINDOW].reshape(-1)))
    return out


def session(model_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def mse(x, r):
    """The contract's score: mean squared error over all T*C values."""
    return np.mean((x.reshape(len(x), -1) - r.reshape(len(r), -1)) ** 2, axis=1)


def sidecar(threshold, **extra):
    meta = {
        "channels": CHANNELS,
        "window": WINDOW,
        "hop": HOP,
        "sample_rate_hz": RATE,
        "normalization": None,
        "threshold": float(threshold),
    }
    meta.update(extra)
    return meta


def fix_output_shape(model):
    g = model.graph
    last = g.node[-1]
    assert last.op_type == "Reshape" and last.output[0] == g.output[0].name, "skl2onnx's graph changed"
    for i, t in enumerate(g.initializer):
        if t.name == last.input[1]:
            g.initializer[i].CopyFrom(helper.make_tensor(t.name, TensorProto.INT64, [2], [-1, FEATURES]))
    g.output[0].type.tensor_type.shape.dim[1].dim_value = FEATURES


def graph_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    train = np.stack([w for _, _, w in windows(os.path.join(REPO, "data/watch/train-pen.csv"), "series")])
    mlp = MLPRegressor(hidden_layer_sizes=(64, 16, 64), max_iter=300, random_state=0)
    mlp.fit(train, train)

    # skl2onnx names the input; the batch dimension is None (dynamic).
    onx = convert_sklearn(mlp, initial_types=[("x", FloatTensorType([None, FEATURES]))], target_opset=17)
    # skl2onnx (1.20) ends a multi-output MLPRegressor with Reshape(-1, 1):
    # N*T*C rows of one value. accelwatch refuses that as it is (the test
    # checks); reshaping to [-1, T*C] gives the contract's [N, T*C].
    with open(os.path.join(out_dir, "sklearn_raw.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
    with open(os.path.join(out_dir, "sklearn_raw.json"), "w") as f:
        json.dump(sidecar(1.0), f)
    fix_output_shape(onx)
    flat_bytes = onx.SerializeToString()
    train_scores = mse(train, session(flat_bytes).run(None, {"x": train})[0])
    threshold = np.quantile(train_scores, 0.99)
    with open(os.path.join(out_dir, "sklearn.onnx"), "wb") as f:
        f.write(flat_bytes)
    with open(os.path.join(out_dir, "sklearn.json"), "w") as f:
        json.dump(sidecar(threshold), f, indent=2)

    # The same network fed [N, T, C], its middle (code) layer a named output,
    # its metadata inside the file.
    ntc = onnx.load_from_string(flat_bytes)
    g = ntc.graph
    relus = [n for n in g.node if n.op_type == "Relu"]
    code = relus[1].output[0]
    g.input[0].name = "window"
    g.input[0].type.tensor_type.shape.Clear()
    for d in ("N", WINDOW, len(CHANNELS)):
        dim = g.input[0].type.tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    g.initializer.append(helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, FEATURES]))
    g.node.insert(0, helper.make_node("Reshape", ["window", "flat_shape"], ["x"]))
    g.node.append(helper.make_node("Identity", [code], ["code"]))
    g.output.append(helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", 16]))
    meta = sidecar(threshold, input_layout="ntc", latent_output="code")
    ntc.metadata_props.append(onnx.StringStringEntryProto(key="accelwatch", value=json.dumps(meta)))
    onnx.checker.check_model(ntc)
    ntc_bytes = ntc.SerializeToString()
    with open(os.path.join(out_dir, "sklearn_ntc.onnx"), "wb") as f:
        f.write(ntc_bytes)

    # sqrt(x - 1) is NaN for every value of a zero window.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])
    r = helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["N", FEATURES])
    nan = graph_model(
        [helper.make_node("Sub", ["x", "one"], ["shifted"]), helper.make_node("Sqrt", ["shifted"], ["reconstruction"])],
        [x],
        [r],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    onnx.save(nan, os.path.join(out_dir, "nan.onnx"))
    with open(os.path.join(out_dir, "nan.json"), "w") as f:
        json.dump(sidecar(1.0), f)

    # A graph exported for one window at a time.
    x1 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, FEATURES])
    r1 = helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, [1, FEATURES])
    fixed = graph_model([helper.make_node("Identity", ["x"], ["reconstruction"])], [x1], [r1])
    onnx.save(fixed, os.path.join(out_dir, "fixed_batch.onnx"))
    with open(os.path.join(out_dir, "fixed_batch.json"), "w") as f:
        json.dump(sidecar(1.0), f)

    # onnxruntime's answers on every window of the demo recording.
    demo = windows(os.path.join(REPO, "data/watch/demo.csv"), "device")
    batch = np.stack([w for _, _, w in demo])
    flat_scores = mse(batch, session(flat_bytes).run(None, {"x": batch})[0])
    rec, codes = session(ntc_bytes).run(None, {"window": batch.reshape(-1, WINDOW, len(CHANNELS))})
    ntc_scores = mse(batch, rec)
    expected = {
        "onnxruntime": ort.__version__,
        "threshold": float(threshold),
        "windows": [
            {"device": d, "seq": s, "sklearn": float(a), "sklearn_ntc": float(b), "code": c.tolist()}
            for (d, s, _), a, b, c in zip(demo, flat_scores, ntc_scores, codes)
        ],
    }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"{len(demo)} windows; threshold {threshold:.6f}; wrote {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
