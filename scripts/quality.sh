#!/usr/bin/env bash
# Reproduces the README's quality table: for each normal exercise and
# channel set, train on subjects 1-7 (that exercise only) and measure the
# ROC AUC on subjects 8-10 (every exercise; the others are the anomalies).
#
# Usage: scripts/quality.sh PATH/TO/watch.csv [VARIANT...]
# watch.csv is the full smartwatch recording (see data/watch/README.md).
set -euo pipefail
data=${1:?usage: scripts/quality.sh PATH/TO/watch.csv [VARIANT...]}
shift
variants=("${@:-basic}")
bin=${ACCELWATCH_BIN:-target/release/accelwatch}
[ -x "$bin" ] || cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '| variant | normal | channels | ROC AUC | PR AUC | false alarms at threshold |\n|---|---|---|---|---|---|\n'
for variant in "${variants[@]}"; do
  for normal in PEN ABD FEL; do
    for channels in ax,ay,az ax,ay,az,wx,wy,wz; do
      model="$work/$variant-$normal-$channels.onnx"
      "$bin" train --data "$data" --device-column series --channels "$channels" --variant "$variant" \
        --include subject=1,2,3,4,5,6,7 --include exercise="$normal" --out "$model" 2>/dev/null
      "$bin" evaluate --model "$model" --data "$data" --device-column series --label exercise \
        --normal "$normal" --include subject=8,9,10 --report "$work/report" >/dev/null 2>&1
      python3 - "$work/report/report.json" "$variant" "$normal" "$channels" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n = len(sys.argv[4].split(","))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {n} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['at_threshold']['false_alarm_rate']:.3f} |")
PY
    done
  done
done
