#!/usr/bin/env python3
"""The pipeline a Python user would write instead of accelwatch, for the
side-by-side figures of scripts/e2e_bench.sh: paho-mqtt in, a window per
device (numpy), batch inference of an accelwatch ONNX model (onnxruntime),
`{device, score, anomaly}` published per window.

    pip install paho-mqtt numpy onnxruntime
    python3 scripts/python_pipeline.py --port 1883 [--model models/demo.onnx]

It reads the window size, hop, channels, normalisation and threshold from
the model's metadata (as accelwatch does), takes JSON samples, JSON batches
(`{"t0", "interval_ms", "values"}`) and arrays of samples on
`sensors/+/accel`, prints `ready` once subscribed, and on SIGTERM or SIGINT
prints one JSON line: samples and windows processed, when the last
message was (Unix seconds), and the latency from a
message's arrival to the publication of the window it completed (p50, p99,
max, in seconds).
"""

import argparse
import json
import select
import signal
import sys
import time

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--model", default="models/demo.onnx")
    ap.add_argument("--topic", default="sensors/+/accel")
    ap.add_argument("--max-batch", type=int, default=32)
    args = ap.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["accelwatch"])
    channels = meta["channels"]
    size, hop, threshold = meta["window"], meta["hop"], meta["threshold"]
    norm = meta.get("normalization")
    mean = np.tile(np.asarray(norm["mean"], np.float32), size) if norm else 0.0
    std = np.tile(np.asarray(norm["std"], np.float32), size) if norm else 1.0
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    # A model with a front end reconstructs the front end's rows (its
    # `features` output), not the window.
    target = outputs.index("features") if "features" in outputs else None
    c = len(channels)

    # Per device: the samples windows still need.
    buffers = {}
    pending = []  # (device, window values, arrival)
    stats = {"samples": 0, "windows": 0, "messages": 0, "errors": 0, "last_message_at": 0.0}
    latencies = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="python-pipeline")

    def flush():
        if not pending:
            return
        x = np.stack([w for _, w, _ in pending]).astype(np.float32)
        x = (x - mean) / std
        results = session.run(None, {input_name: x})
        reconstruction = results[0]
        if target is not None:
            x = results[target]
        scores = ((x - reconstruction) ** 2).mean(axis=1)
        for (device, _, arrival), score in zip(pending, scores):
            payload = json.dumps(
                {"device": device, "score": float(score), "anomaly": bool(score > threshold)}
            )
            client.publish(f"accelwatch/{device}/features", payload, qos=0)
            latencies.append(time.time() - arrival)
        stats["windows"] += len(pending)
        pending.clear()

    def samples_of(body):
        if isinstance(body, dict) and "values" in body:
            return np.asarray(body["values"], np.float32).reshape(-1, c)
        rows = body if isinstance(body, list) else [body]
        return np.asarray([[r[ch] for ch in channels] for r in rows], np.float32)

    def on_message(_client, _userdata, message):
        arrival = time.time()
        stats["messages"] += 1
        device = message.topic.split("/")[1]
        try:
            values = samples_of(json.loads(message.payload))
        except (ValueError, KeyError, TypeError):
            stats["errors"] += 1
            return
        stats["samples"] += len(values)
        buf = buffers.get(device)
        buf = values if buf is None else np.concatenate([buf, values])
        # `buf` starts at the oldest sample the next window needs, so the
        # next window ends at `size`, the ones after it every `hop`.
        ends = range(size, len(buf) + 1, hop)
        for end in ends:
            pending.append((device, buf[end - size : end].reshape(-1), arrival))
        if len(ends):
            buf = buf[ends[-1] - size + hop :]
        buffers[device] = buf
        if len(pending) >= args.max_batch:
            flush()
        stats["last_message_at"] = time.time()

    def on_connect(client_, _userdata, _flags, reason, _properties):
        client_.subscribe(args.topic, qos=0)

    def on_subscribe(*_):
        print("ready", flush=True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.max_queued_messages_set(0)
    client.connect(args.host, args.port, keepalive=30)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        client.loop(timeout=0.005)
        # A batch is whatever came in until nothing more is waiting to be
        # read (or `--max-batch` windows, see on_message).
        sock = client.socket()
        if pending and not (sock and select.select([sock], [], [], 0)[0]):
            flush()
    flush()
    client.loop(timeout=0.05)
    client.disconnect()
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    print(
        json.dumps(
            {
                **stats,
                "latency_p50_s": float(np.quantile(lat, 0.5)),
                "latency_p99_s": float(np.quantile(lat, 0.99)),
                "latency_max_s": float(lat.max()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
