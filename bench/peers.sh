#!/usr/bin/env bash
# kith vs Tahoe-LAFS: 3-of-5 erasure-coded storage on 5 loopback peers.
#
# The same file of random data is stored (put) and read back (get) by:
#   Tahoe-LAFS: an introducer, 5 storage nodes and a client node
#               (shares.needed=3, shares.happy=5, shares.total=5), driven
#               through the client's web API (PUT /uri, GET /uri/CAP).
#   kith:       5 holder nodes and an owner node (`kith node run`), the
#               owner befriending each holder with an invite code; put is
#               `kith -r peers:// backup FILE`, get is `kith restore`.
#               With 5 usable peers and F = 2, kith cuts 3-of-5.
# Then 2 of kith's 5 holders are killed (SIGKILL) and the restore is timed
# again: it must stay bit-exact and should keep >= 80% of the all-up speed.
# Every process listens on 127.0.0.1 only. Each tool's processes are
# stopped before the next tool starts, and every timed step starts after a
# sync. The whole sequence runs BENCH_RUNS times, each round on fresh nodes
# (a second put of the same bytes would find them stored), and each step is
# reported by its median, with the fastest and slowest round beside it:
# the speed of a shared machine drifts by 10% or more within minutes.
#
# Usage: bash bench/peers.sh
# Environment:
#   BENCH_SIZE_MB=200        size of the random file in MiB
#   BENCH_RUNS=3             rounds of every tool's steps
#   BENCH_DIR=/tmp           where the work folder is made
#   BENCH_KEEP=1             keep the work folder
#   BENCH_SKIP_BUILD=1       use the existing release binary
#   BENCH_KITH_BIN=path      the kith binary (default: the release build)
#   BENCH_TAHOE_VENV=path    the venv holding tahoe-lafs (made and filled if missing)
#   BENCH_TOOLS="tahoe kith" which tools to run
#   BENCH_RESULTS=path       JSON output (default bench/results/peers-latest.json)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZE_MB="${BENCH_SIZE_MB:-200}"
RUNS="${BENCH_RUNS:-3}"
KEEP="${BENCH_KEEP:-0}"
TOOLS="${BENCH_TOOLS:-tahoe kith}"
RESULTS="${BENCH_RESULTS:-$ROOT/bench/results/peers-latest.json}"
PARENT="${BENCH_DIR:-${TMPDIR:-/tmp}}"
VENV="${BENCH_TAHOE_VENV:-$PARENT/kith-bench-tahoe-venv}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- tools -------------------------------------------------------------------
command -v curl >/dev/null 2>&1 || {
  [ "$(id -u)" = 0 ] || die "curl is missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
}
if [[ " $TOOLS " == *" tahoe "* ]] && [ ! -x "$VENV/bin/tahoe" ]; then
  log "installing tahoe-lafs from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet tahoe-lafs
fi
TAHOE="$VENV/bin/tahoe"
if [[ " $TOOLS " == *" kith "* ]]; then
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building kith (cargo build --release -p kith-cli)"
    (cd "$ROOT" && cargo build --release -p kith-cli) >&2
  fi
  KITH="${BENCH_KITH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/kith}"
  case "$KITH" in /*) ;; *) KITH="$ROOT/$KITH" ;; esac
  [ -x "$KITH" ] || die "no kith binary at $KITH"
fi

# --- work folder -------------------------------------------------------------
mkdir -p "$PARENT"
WORK="$(mktemp -d "$PARENT/kith-bench-peers.XXXXXX")"
PIDS=()
# stop_all: stops every process started so far. Each tool's processes are
# stopped once its steps are timed, so that the next tool is measured on a
# machine where only its own processes run: idle Tahoe nodes still do work
# after an upload (share crawlers) and took CPU from kith's steps.
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  rc=$?
  stop_all
  if [ "$KEEP" = 1 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
  [ "$rc" = 0 ] || log "failed (exit $rc)"
}
trap cleanup EXIT
LOGS="$WORK/logs"
TSV="$WORK/steps.tsv"
mkdir -p "$LOGS"
: >"$TSV"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local limit="$1" what="$2"
  shift 2
  for _ in $(seq $((limit * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "timed out waiting for $what"
}

DATA="$WORK/data/random.bin"
mkdir -p "$WORK/data"
log "generating ${SIZE_MB} MiB of random data"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$DATA"
DATA_BYTES="$(stat -c %s "$DATA")"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# step TOOL NAME COMMAND...: run under /usr/bin/time -v, record wall time.
step() {
  local tool="$1" name="$2"
  shift 2
  local out="$LOGS/$tool-$name.log" tv="$LOGS/$tool-$name.time" rc=0 t0 t1 wall rss
  sync
  t0="$(date +%s.%N)"
  /usr/bin/time -v -o "$tv" "$@" >"$out" 2>"$out.err" || rc=$?
  t1="$(date +%s.%N)"
  wall="$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "$ROUND" "$wall" "$rss" "$rc" >>"$TSV"
  log "$(printf 'round %s  %-6s %-16s %8ss  exit %s' "$ROUND" "$tool" "$name" "$wall" "$rc")"
  if [ "$rc" != 0 ]; then
    tail -n 30 "$out.err" >&2
    die "$tool $name failed with exit $rc (log: $out)"
  fi
}
same_as_data() { cmp -s "$DATA" "$1" || die "$2 differs from the data"; log "$2 is bit-exact"; }

# --- Tahoe-LAFS ----------------------------------------------------------------
run_tahoe() {
  local T="$WORK/tahoe$ROUND" port furl web
  mkdir -p "$T"
  port="$(free_port)"
  "$TAHOE" create-introducer --port "tcp:$port:interface=127.0.0.1" \
    --location "tcp:127.0.0.1:$port" "$T/introducer" >"$LOGS/tahoe-create.log"
  "$TAHOE" run --allow-stdin-close "$T/introducer" >"$LOGS/tahoe-introducer.log" 2>&1 &
  PIDS+=($!)
  wait_for 60 "the Tahoe introducer" test -s "$T/introducer/private/introducer.furl"
  furl="$(cat "$T/introducer/private/introducer.furl")"
  for i in 1 2 3 4 5; do
    port="$(free_port)"
    "$TAHOE" create-node --port "tcp:$port:interface=127.0.0.1" \
      --location "tcp:127.0.0.1:$port" --introducer "$furl" --nickname "storage$i" \
      --webport none "$T/storage$i" >>"$LOGS/tahoe-create.log"
    "$TAHOE" run --allow-stdin-close "$T/storage$i" >"$LOGS/tahoe-storage$i.log" 2>&1 &
    PIDS+=($!)
  done
  web="$(free_port)"
  "$TAHOE" create-client --introducer "$furl" --nickname client \
    --webport "tcp:$web:interface=127.0.0.1" \
    --shares-needed 3 --shares-happy 5 --shares-total 5 "$T/client" >>"$LOGS/tahoe-create.log"
  "$TAHOE" run --allow-stdin-close "$T/client" >"$LOGS/tahoe-client.log" 2>&1 &
  PIDS+=($!)
  TAHOE_URL="http://127.0.0.1:$web"
  tahoe_servers_up() {
    curl -fsS "$TAHOE_URL/?t=json" | python3 -c '
import json, sys
servers = json.load(sys.stdin).get("servers", [])
up = [s for s in servers if (s.get("connection_status") or "").lower().startswith("connected")]
sys.exit(0 if len(up) >= 5 else 1)'
  }
  wait_for 120 "5 Tahoe storage servers connected to the client" tahoe_servers_up
  log "Tahoe-LAFS $("$TAHOE" --version 2>&1 | head -n 1): introducer, 5 storage nodes and a client are up"
  step tahoe put curl -fsS -o "$WORK/tahoe-cap" -T "$DATA" "$TAHOE_URL/uri"
  step tahoe get curl -fsS -o "$WORK/tahoe-got" "$TAHOE_URL/uri/$(cat "$WORK/tahoe-cap")"
  same_as_data "$WORK/tahoe-got" "the Tahoe download"
  rm -f "$WORK/tahoe-got"
  stop_all
  rm -rf "$T"
}

# --- kith ----------------------------------------------------------------------
run_kith() {
  local K="$WORK/kith$ROUND" i code
  mkdir -p "$K"
  export KITH_PASSWORD="bench-password" KITH_CACHE_DIR="$K/cache"
  unset KITH_PASSWORD_FILE KITH_REPOSITORY 2>/dev/null || true
  HOLDER_PIDS=()
  for i in 1 2 3 4 5 6; do
    local dir="$K/node$i"
    "$KITH" node init --dir "$dir" --listen /ip4/127.0.0.1/tcp/0 --quota 4GiB >"$LOGS/kith-node$i-init.log" 2>&1
    "$KITH" node run --dir "$dir" >"$LOGS/kith-node$i.log" 2>&1 &
    PIDS+=($!)
    [ "$i" = 6 ] || HOLDER_PIDS+=($!)
    wait_for 60 "kith node $i" test -S "$dir/control.sock"
  done
  # node6 is the owner; nodes 1-5 hold its shards.
  export KITH_NODE_DIR="$K/node6"
  for i in 1 2 3 4 5; do
    code="$("$KITH" peer invite --node "$K/node$i")"
    "$KITH" peer add "$code" --node "$K/node6" >>"$LOGS/kith-peers.log" 2>&1
  done
  kith_peers_up() {
    [ "$("$KITH" peer list --json --node "$K/node6" | python3 -c '
import json, sys
peers = json.load(sys.stdin)
peers = peers.get("peers", peers) if isinstance(peers, dict) else peers
print(sum(1 for p in peers if str(p.get("state", "")).startswith("connected")))')" -ge 5 ]
  }
  wait_for 60 "5 kith holders connected to the owner" kith_peers_up
  log "kith: 5 holders and an owner are up"
  "$KITH" -r peers:// init --json >"$K/init.json"
  step kith put "$KITH" -r peers:// backup "$DATA" --json
  step kith get "$KITH" -r peers:// restore latest --target "$K/got"
  same_as_data "$K/got$DATA" "the kith restore"
  rm -rf "$K/got"
  kill -9 "${HOLDER_PIDS[0]}" "${HOLDER_PIDS[1]}"
  log "killed 2 of the 5 kith holders"
  step kith get-2-down "$KITH" -r peers:// restore latest --target "$K/got"
  same_as_data "$K/got$DATA" "the kith restore with 2 holders down"
  rm -rf "$K/got"
  stop_all
  rm -rf "$K"
}

for ROUND in $(seq "$RUNS"); do
  for tool in $TOOLS; do
    case "$tool" in
      tahoe) run_tahoe ;;
      kith) run_kith ;;
      *) die "unknown tool $tool (tahoe or kith)" ;;
    esac
  done
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$(dirname "$RESULTS")"
python3 - "$TSV" "$RESULTS" "$DATA_BYTES" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, statistics, sys
tsv, out, size, before, after = sys.argv[1:]
size = int(size)
mib = size / (1 << 20)
# The issue's Tahoe-LAFS figures for this kind of machine (MiB/s), the
# reference the targets are stated against.
REFERENCE = {"put": 33.0, "get": 38.0}
rounds = {}
for line in open(tsv):
    tool, name, rnd, wall, rss, rc = line.rstrip("\n").split("\t")
    rounds.setdefault(f"{tool} {name}", []).append((float(wall), int(rss or 0)))
steps = {}
for key, runs in rounds.items():
    secs = [w for w, _ in runs]
    median = statistics.median(secs)
    steps[key] = {"seconds": round(median, 3), "mib_per_s": round(mib / median, 1),
                  "fastest_seconds": min(secs), "slowest_seconds": max(secs),
                  "rounds_seconds": secs, "peak_rss_kib": max(r for _, r in runs)}
result = {"bytes": size, "rounds": max(len(r) for r in rounds.values()) if rounds else 0,
          "load": f"before: {before}, after: {after}", "steps": steps}
def ratio(a, b):
    if a in steps and b in steps:
        return round(steps[b]["seconds"] / steps[a]["seconds"], 2)
result["kith_over_tahoe"] = {"put": ratio("kith put", "tahoe put"), "get": ratio("kith get", "tahoe get")}
result["kith_over_reference"] = {
    op: round(steps[f"kith {op}"]["mib_per_s"] / REFERENCE[op], 2) if f"kith {op}" in steps else None
    for op in REFERENCE
}
if "kith get" in steps and "kith get-2-down" in steps:
    result["kith_get_2_down_share"] = round(steps["kith get"]["seconds"] / steps["kith get-2-down"]["seconds"], 2)
json.dump(result, open(out, "w"), indent=2)
print(f"{'step (median of rounds)':<24} {'seconds':>8} {'MiB/s':>8}   fastest-slowest")
for k, v in steps.items():
    print(f"{k:<24} {v['seconds']:>8.2f} {v['mib_per_s']:>8.1f}   {v['fastest_seconds']:.2f}-{v['slowest_seconds']:.2f} s")
print("kith / Tahoe speed (same run):", result["kith_over_tahoe"])
print("kith / the issue's Tahoe reference (put 33, get 38 MiB/s):", result["kith_over_reference"])
if "kith_get_2_down_share" in result:
    print("restore speed with 2 of 5 holders down, share of all-up:", result["kith_get_2_down_share"])
PY
