#!/usr/bin/env python3
"""onnxruntime's own (Python) inference time per window, for benches/backends.rs.

Usage: scripts/bench_onnxruntime.py SECONDS MODEL.onnx [MODEL.onnx ...]
Prints one JSON object: {model path: {batch: microseconds per window}} for
batches 1, 8, 32 and 128, one intra-op thread as accelwatch's ort backend
uses, on random windows (the time of these dense graphs does not depend on
the values).
Needs: pip install numpy onnxruntime
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort

BATCHES = (1, 8, 32, 128)


def per_window(session, name, shape, batch, seconds):
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    for _ in range(20):
        session.run(None, {name: x})
    calls, start = 0, time.perf_counter()
    while True:
        session.run(None, {name: x})
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / (calls * batch) * 1e6


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    seconds = float(sys.argv[1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    out = {}
    for path in sys.argv[2:]:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [int(d) for d in inp.shape[1:]]
        out[path] = {b: per_window(session, inp.name, shape, b, seconds) for b in BATCHES}
    print(json.dumps({"onnxruntime": ort.__version__, "models": out}))


if __name__ == "__main__":
    main()
