#!/usr/bin/env bash
# End-to-end speed through a real broker (issue 15): a real mosquitto on a
# free loopback port, the release `accelwatch run` (output.jsonl = "off",
# features over MQTT, models/demo.onnx or --model) or the Python pipeline
# (scripts/python_pipeline.py), and the load generator (examples/loadgen.rs) and the counting consumer (examples/mqtt_count.rs).
# Prints one table: samples/s processed, CPU per 1000 samples, latency from
# a frame's arrival to its window's publication, peak RSS.
#
# Usage: scripts/e2e_bench.sh [--duration 12] [--only json-100,binary-100,json-1000-50hz,python-json-100] [--repeat 3]
#        [--model my.onnx] [--connections 1]
# Needs mosquitto (PATH, /usr/sbin, or MOSQUITTO=...), python3 with numpy,
# onnxruntime and paho-mqtt (pip install paho-mqtt numpy onnxruntime) for
# the Python run. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin accelwatch --example loadgen --example mqtt_count
exec python3 scripts/e2e_bench.py "$@"
