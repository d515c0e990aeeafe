#!/usr/bin/env bash
# Reproduces the quality tables of docs/measured.md on the full smartwatch recording.
#
# Anomaly quality: for each normal exercise and channel set, train on
# subjects 1-7 (that exercise only) and measure on subjects 8-10 (every
# exercise; the others are the anomalies).
# Feature quality: train on every window of every subject without labels,
# then classify the exercise from the latent codes with 5-NN, 5-fold
# cross-validated by subject (no subject in both training and test), next to
# PCA codes of the same size and the raw windows.
#
# Scores against the peers (first): for each variant, every exercise in turn
# as normal with 3 and 6 channels (14 tasks), the ROC AUC of accelwatch's
# reconstruction, latent and combined scores (one model trained with
# model.score = "combined" carries all three) next to scikit-learn's peers on
# the same windows and split: on the raw standardised window, MLP autoencoder
# 64-16-64, IsolationForest, PCA-16 and 5-NN distance; on the f8 features
# (per channel mean, std, min, max, log(1 + |DFT|) bins 1-8: the feature part
# of accelwatch's default mix input), MLP autoencoder 64-16-64,
# IsolationForest and 5-NN distance; per task the best raw-window peer and
# the best of all peers; the means; and for each score on how many tasks it
# reaches them (scripts/quality_table.py; needs numpy, scikit-learn, onnx,
# onnxruntime; QUALITY_PEERS_CACHE=FILE keeps the peers' AUCs).
# Supervised references (last): the exercise (7 classes) with its labels,
# train subjects 1-7, test 8-10, 6 channels, same windows: MLPClassifier (64)
# and RandomForest (300) and 5-NN on the f8 features, MLPClassifier (64) on
# the raw standardised window: what labels reach, against which to read the
# unsupervised codes of the feature table (that table cross-validates by
# subject instead) and of scripts/front_end_measure.py's part `features`
# (this split) (scripts/activity_references.py; numpy, scikit-learn).
#
# Usage: scripts/quality.sh PATH/TO/watch.csv [VARIANT...]
# watch.csv is the full recording (see data/watch/README.md).
# FEATURE_EPOCHS (default 200) caps training for the feature table;
# SKIP_PEERS=1 leaves out the first table, SKIP_ANOMALY=1 the anomaly table,
# SKIP_FEATURES=1 the feature table, SKIP_REFERENCES=1 the supervised
# references.
set -euo pipefail
data=${1:?usage: scripts/quality.sh PATH/TO/watch.csv [VARIANT...]}
shift
variants=("${@:-basic}")
bin=${ACCELWATCH_BIN:-target/release/accelwatch}
[ -x "$bin" ] || cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

if [ -z "${SKIP_PEERS:-}" ]; then
for variant in "${variants[@]}"; do
  echo "Scores against the peers, variant $variant"
  echo
  python3 "$(dirname "$0")/quality_table.py" "$data" "$bin" "$variant"
  echo
done
fi

if [ -z "${SKIP_ANOMALY:-}" ]; then
echo "Anomaly quality (ROC AUC; normal exercise of subjects 1-7, scored on subjects 8-10)"
echo
printf '| variant | normal | channels | ROC AUC | PR AUC | false alarms at threshold | training time |\n|---|---|---|---|---|---|---|\n'
for variant in "${variants[@]}"; do
  for normal in PEN ABD FEL; do
    for channels in ax,ay,az ax,ay,az,wx,wy,wz; do
      model="$work/model.onnx"
      start=$(date +%s.%N)
      "$bin" train --data "$data" --device-column series --channels "$channels" --variant "$variant" \
        --include subject=1,2,3,4,5,6,7 --include exercise="$normal" --out "$model" 2>/dev/null
      took=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f} s')")
      "$bin" evaluate --model "$model" --data "$data" --device-column series --label exercise \
        --normal "$normal" --include subject=8,9,10 --report "$work/report" >/dev/null 2>&1
      r="$work/report/report.json"
      n=$(echo "$channels" | tr ',' '\n' | wc -l)
      echo "| $variant | $normal | $n | $(field "$r" "f\"{r['roc_auc']:.3f}\"") | $(field "$r" "f\"{r['pr_auc']:.3f}\"") | $(field "$r" "f\"{r['at_threshold']['false_alarm_rate']:.3f}\"") | $took |"
    done
  done
done

fi

if [ -z "${SKIP_FEATURES:-}" ]; then
echo
echo "Feature quality (exercise from 5-NN on standardised features, 5-fold CV grouped by subject)"
echo
printf '| variant | channels | latent dims | latent accuracy | latent macro-F1 | PCA accuracy | raw accuracy |\n|---|---|---|---|---|---|---|\n'
for variant in "${variants[@]}"; do
  for channels in ax,ay,az ax,ay,az,wx,wy,wz; do
    model="$work/model.onnx"
    "$bin" train --data "$data" --device-column series --channels "$channels" --variant "$variant" \
      --epochs "${FEATURE_EPOCHS:-200}" --out "$model" 2>/dev/null
    "$bin" evaluate --model "$model" --data "$data" --device-column series --label exercise \
      --normal PEN --group subject --report "$work/report" >/dev/null 2>&1
    r="$work/report/report.json"
    n=$(echo "$channels" | tr ',' '\n' | wc -l)
    f="r['feature_quality']"
    echo "| $variant | $n | $(field "$r" "$f['latent']['dimensions']") | $(field "$r" "f\"{$f['latent']['accuracy']:.3f}\"") | $(field "$r" "f\"{$f['latent']['macro_f1']:.3f}\"") | $(field "$r" "f\"{$f['pca']['accuracy']:.3f}\"") | $(field "$r" "f\"{$f['raw']['accuracy']:.3f}\"") |"
  done
done
fi

if [ -z "${SKIP_REFERENCES:-}" ]; then
echo
echo "Supervised references for the activity task (exercise, 7 classes; train subjects 1-7, test 8-10)"
echo
python3 "$(dirname "$0")/activity_references.py" "$data"
fi
