#!/usr/bin/env bash
# Soaks through a real mosquitto (issue 18): `churn` pushes a million
# distinct device ids and prints the daemon's RSS every 100 000; `overload`
# offers five times the daemon's capacity for 60 s and times /healthz
# and /metrics, then checks it recovers. See scripts/soak.py for options.
#
# Usage: scripts/soak.sh churn [--ids 1000000] [--every 100000] [--per-second 10000]
#        scripts/soak.sh overload [--generators 5] [--duration 60] [--hop 1] [--factor 5]
# Needs mosquitto (PATH, /usr/sbin, or MOSQUITTO=...). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin accelwatch --example loadgen
exec python3 scripts/soak.py "$@"
