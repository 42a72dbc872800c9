#!/usr/bin/env bash
# Scale benchmark for the durability simulator (issue 4, item 4):
# 100,000 peers x 5 simulated years, one run, on at most 2 threads.
# Prints the wall time and peak RSS (from /usr/bin/time -v) and the
# simulator's own JSON summary (events, events/s, loss, traffic...).
#
# Usage: bench/sim-scale.sh [PEERS] [YEARS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS="${1:-100000}"
YEARS="${2:-5}"
THREADS="${3:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -j "$THREADS" -p kith-sim --bin kith-sim >&2
BIN="$CARGO_TARGET_DIR/release/kith-sim"
OUT="$(mktemp)"
TIMES="$(mktemp)"
trap 'rm -f "$OUT" "$TIMES"' EXIT
if [ -x /usr/bin/time ]; then
  RAYON_NUM_THREADS="$THREADS" /usr/bin/time -v "$BIN" scale --peers "$PEERS" --years "$YEARS" >"$OUT" 2>"$TIMES"
  WALL="$(grep 'Elapsed (wall clock)' "$TIMES" | awk '{print $NF}')"
  RSS_KB="$(grep 'Maximum resident set size' "$TIMES" | awk '{print $NF}')"
else
  START=$(date +%s.%N)
  RAYON_NUM_THREADS="$THREADS" "$BIN" scale --peers "$PEERS" --years "$YEARS" >"$OUT"
  WALL="$(echo "$(date +%s.%N) - $START" | bc)s"
  RSS_KB="unknown"
fi
python3 - "$OUT" <<'PY' || cat "$OUT"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
print(f"simulated: {d['peers']} peers x {d['years']} years, {d['runs']} run(s), {d['threads']} threads")
print(f"simulator wall time: {d['wall_seconds']:.1f} s, {d['events']} events ({d['events_per_second']:.0f}/s)")
print(f"k/n {s['k']:.1f}/{s['n']:.1f}, overhead {s['overhead']:.2f}x, availability {s['availability']:.4f}, "
      f"repair {s['repair_tb_per_tb_year']:.3f} TB per TB-year, losses {s['losses']}")
PY
echo "wall clock (time -v): $WALL"
echo "peak RSS: ${RSS_KB} KB"
