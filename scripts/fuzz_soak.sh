#!/usr/bin/env bash
# The fuzz soak: every fuzz target (or those named) for RUNS inputs each.
#
# usage: scripts/fuzz_soak.sh [TARGET...]
# env:   RUNS       inputs per target (default 10000000)
#        RSS_MB     libFuzzer's -rss_limit_mb: over it is a finding (default 1024)
#        TIMEOUT_S  libFuzzer's -timeout: one input slower is a finding (default 10)
#        MAX_LEN    libFuzzer's -max_len for generated inputs (default 4096)
#        MAX_TIME_S stop a target after this many seconds, RUNS reached or not
#                   (libFuzzer's -max_total_time; default 0: no limit)
#        SEED_TIMEOUT_S  the timeout for the seeds run once each (default 120:
#                   the 46 MB seeds take seconds through instrumented code)
#        NO_BUILD=1 use the targets already built
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz
# --locked`). Builds the targets without a sanitizer (safe Rust: the
# sanitizers would find little and cost 3x the speed) but with debug
# assertions and overflow checks, then per target: runs every seed once,
# the large generated ones included (fuzz/make_seeds.py), under the RSS
# limit and the timeout, and fuzzes from the seeds for RUNS inputs. Prints
# a line per target: executions, coverage (libFuzzer's cov and ft), the
# corpus it grew, peak RSS, seconds, and findings (a crash, an input over
# the RSS limit or the timeout; the input is in fuzz/artifacts/<target>/).
# The grown corpus stays in fuzz/corpus/ (ignored by git). Run it niced:
# `nice -n 10 scripts/fuzz_soak.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-10000000}"
RSS_MB="${RSS_MB:-1024}"
TIMEOUT_S="${TIMEOUT_S:-10}"
MAX_LEN="${MAX_LEN:-4096}"
MAX_TIME_S="${MAX_TIME_S:-0}"
SEED_TIMEOUT_S="${SEED_TIMEOUT_S:-120}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN="fuzz/target/$TRIPLE/release"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "missing cargo-fuzz on the nightly toolchain: rustup toolchain install nightly; cargo install cargo-fuzz --locked" >&2
  exit 1
fi
if [ "${NO_BUILD:-}" != 1 ]; then
  (cd fuzz && cargo +nightly fuzz build -O -a -s none --codegen-units 16)
fi
[ -d fuzz/seeds-large ] || python3 fuzz/make_seeds.py --large-only

if [ $# -eq 0 ]; then
  set -- $(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^accelwatch-fuzz$')
fi

mkdir -p fuzz/target/soak
printf '%-14s %12s %7s %7s %7s %8s %8s  %s\n' target executions cov ft corpus rss_mb seconds findings
status=0
for target in "$@"; do
  bin="$BIN/$target"
  [ -x "$bin" ] || { echo "no fuzz target $target ($bin)" >&2; exit 1; }
  log="fuzz/target/soak/$target.log"
  artifacts="fuzz/artifacts/$target/"
  mkdir -p "fuzz/corpus/$target" "$artifacts"
  findings=()
  started=$(date +%s)
  # Every seed once, whole (max_len only bounds what libFuzzer makes).
  seeds=(fuzz/seeds/"$target"/*)
  if [ -d "fuzz/seeds-large/$target" ]; then
    seeds+=(fuzz/seeds-large/"$target"/*)
  fi
  if ! "$bin" -rss_limit_mb="$RSS_MB" -timeout="$SEED_TIMEOUT_S" \
      -artifact_prefix="$artifacts" "${seeds[@]}" >"$log.seeds" 2>&1; then
    findings+=("a seed failed: see $log.seeds")
  fi
  if ! "$bin" "fuzz/corpus/$target" "fuzz/seeds/$target" -runs="$RUNS" \
      -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT_S" -max_len="$MAX_LEN" \
      -max_total_time="$MAX_TIME_S" -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
    findings+=("$(grep -m1 -E '^==[0-9]+== ERROR|panicked at|deadly signal|out-of-memory|timeout' "$log" || echo "exit status: see $log")")
  fi
  seconds=$(( $(date +%s) - started ))
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  for f in "$artifacts"*; do
    [ -e "$f" ] && findings+=("$f")
  done
  [ ${#findings[@]} -eq 0 ] || status=1
  printf '%-14s %12s %7s %7s %7s %8s %8s  %s\n' "$target" "$(stat number_of_executed_units)" \
    "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$(stat peak_rss_mb)" "$seconds" \
    "$([ ${#findings[@]} -eq 0 ] && echo none || printf '%s; ' "${findings[@]}")"
done
exit "$status"
