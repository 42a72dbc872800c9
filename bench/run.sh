#!/usr/bin/env bash
# kith vs restic, side by side, on one generated data set (~1 GiB by default).
#
# Steps, each run for kith and then restic on the same data folder:
#   init, first backup, unchanged re-backup, [1% change applied once],
#   re-backup after the change, restore latest into an empty folder
#   (checked bit-exact against the data folder with diff -r).
# Each step is timed (wall clock) and its peak RSS taken from /usr/bin/time -v.
# The page cache is dropped before each step when that is allowed (root);
# otherwise every step of both tools runs warm, and the report says so.
#
# Usage: bash bench/run.sh
# Environment:
#   BENCH_SIZE_MB=1024      size of the data set in MiB (e.g. 64 for a quick run)
#   BENCH_SEED=42           data set seed
#   BENCH_CHANGE_PERCENT=1  share of bytes changed before the third backup
#   BENCH_DIR=/tmp          where the work folder is made (data, repos, restores)
#   BENCH_KEEP=1            keep the work folder at the end (default: removed)
#   BENCH_DROP_CACHES=0     never drop the page cache (default: try, fall back to warm)
#   BENCH_SKIP_BUILD=1      use the existing target/release/kith
#   BENCH_RESULTS=path      JSON output (default bench/results/latest.json)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZE_MB="${BENCH_SIZE_MB:-1024}"
SEED="${BENCH_SEED:-42}"
CHANGE="${BENCH_CHANGE_PERCENT:-1}"
KEEP="${BENCH_KEEP:-0}"
DROP="${BENCH_DROP_CACHES:-auto}"
RESULTS="${BENCH_RESULTS:-$ROOT/bench/results/latest.json}"
PARENT="${BENCH_DIR:-${TMPDIR:-/tmp}}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- tools -------------------------------------------------------------------
need_pkgs=()
command -v restic >/dev/null 2>&1 || need_pkgs+=(restic)
[ -x /usr/bin/time ] || need_pkgs+=(time)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v diff >/dev/null 2>&1 || need_pkgs+=(diffutils)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}; install them (apt-get install ${need_pkgs[*]}) or run as root"
  log "installing ${need_pkgs[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
RESTIC="$(command -v restic)"

# The source the binary is built from: HEAD plus any uncommitted changes to the engine.
KITH_REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
KITH_DIRTY="$(cd "$ROOT" && git status --porcelain -- engine storage cli Cargo.lock 2>/dev/null | awk '{print $2}' | paste -sd' ' -)"
KITH_DIRTY="${KITH_DIRTY:+uncommitted: $KITH_DIRTY}"
KITH_DIRTY="${KITH_DIRTY:-clean}"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building kith (cargo build --release -p kith-cli)"
  (cd "$ROOT" && cargo build --release -p kith-cli) >&2
fi
KITH="${CARGO_TARGET_DIR:-$ROOT/target}/release/kith"
case "$KITH" in /*) ;; *) KITH="$ROOT/$KITH" ;; esac
[ -x "$KITH" ] || die "no kith binary at $KITH"

# --- work folder ---------------------------------------------------------------
mkdir -p "$PARENT"
WORK="$(mktemp -d "$PARENT/kith-bench.XXXXXX")"
cleanup() {
  rc=$?
  if [ "$KEEP" = 1 ]; then
    log "work folder kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  [ "$rc" = 0 ] || log "failed (exit $rc)"
}
trap cleanup EXIT
DATA="$WORK/data"
LOGS="$WORK/logs"
TSV="$WORK/steps.tsv"
mkdir -p "$LOGS"
: >"$TSV"

export KITH_REPOSITORY="$WORK/repo-kith" KITH_PASSWORD="bench-password" KITH_CACHE_DIR="$WORK/cache-kith"
export RESTIC_REPOSITORY="$WORK/repo-restic" RESTIC_PASSWORD="bench-password" RESTIC_CACHE_DIR="$WORK/cache-restic"
unset KITH_PASSWORD_FILE RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND 2>/dev/null || true

CACHE_MODE=warm
drop_caches() {
  [ "$CACHE_MODE" = cold ] || return 0
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
if [ "$DROP" != 0 ]; then
  if { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    CACHE_MODE=cold
  else
    log "cannot drop the page cache (not root?): all steps run warm-cache for both tools"
  fi
fi
log "work folder $WORK, page cache: $CACHE_MODE before each step"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- data ----------------------------------------------------------------------
log "generating ${SIZE_MB} MiB data set (seed $SEED)"
python3 "$ROOT/bench/gen-data.py" "$DATA" --size-mb "$SIZE_MB" --seed "$SEED"
DATA_BYTES="$(du -sb --apparent-size "$DATA" | cut -f1)"
DATA_FILES="$(find "$DATA" -type f | wc -l)"

# --- measuring -----------------------------------------------------------------
# step TOOL NAME COMMAND...: drop caches, run under /usr/bin/time -v, append a TSV row.
step() {
  local tool="$1" name="$2"
  shift 2
  local out="$LOGS/$tool-$name.log" tv="$LOGS/$tool-$name.time" rc=0 t0 t1
  drop_caches
  t0="$(date +%s.%N)"
  /usr/bin/time -v -o "$tv" "$@" >"$out" 2>&1 || rc=$?
  t1="$(date +%s.%N)"
  local wall user sys rss
  wall="$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  user="$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tv")"
  sys="$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tv")"
  rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")"
  local repo_bytes=0
  case "$tool" in
    kith) [ -d "$KITH_REPOSITORY" ] && repo_bytes="$(du -sb "$KITH_REPOSITORY" | cut -f1)" ;;
    restic) [ -d "$RESTIC_REPOSITORY" ] && repo_bytes="$(du -sb "$RESTIC_REPOSITORY" | cut -f1)" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "$wall" "$user" "$sys" "$rss" "$rc" "$repo_bytes" >>"$TSV"
  log "$(printf '%-7s %-16s %8ss  user %6ss  sys %6ss  peak RSS %7s KiB  exit %s' "$tool" "$name" "$wall" "$user" "$sys" "$rss" "$rc")"
  if [ "$rc" != 0 ]; then
    tail -n 30 "$out" >&2
    die "$tool $name failed with exit $rc (log: $out)"
  fi
}

both() { # both NAME: run step NAME for kith, then restic
  local name="$1"
  case "$name" in
    init)
      step kith init "$KITH" init
      step restic init "$RESTIC" init
      ;;
    backup-*)
      step kith "$name" "$KITH" backup "$DATA" --json
      step restic "$name" "$RESTIC" backup "$DATA"
      ;;
    restore)
      step kith restore "$KITH" restore latest --target "$WORK/restore-kith"
      step restic restore "$RESTIC" restore latest --target "$WORK/restore-restic"
      ;;
  esac
}

both init
both backup-first
both backup-unchanged
log "applying a ${CHANGE}% change to the data set"
python3 "$ROOT/bench/gen-data.py" "$DATA" --change-percent "$CHANGE" --size-mb "$SIZE_MB" --seed "$SEED" 2>&1 | tee "$LOGS/change.log" >&2
CHANGED_BYTES_NOTE="$(tail -n 1 "$LOGS/change.log")"
DATA_BYTES_CHANGED="$(du -sb --apparent-size "$DATA" | cut -f1)"
both backup-changed
both restore

# --- verify --------------------------------------------------------------------
VERIFIED=()
for tool in kith restic; do
  got="$WORK/restore-$tool$DATA"
  [ -d "$got" ] || die "$tool restored nothing at $got"
  if diff -r --no-dereference "$DATA" "$got" >"$LOGS/$tool-diff.log" 2>&1; then
    log "$tool restore is bit-exact ($(find "$got" -type f | wc -l) files)"
    VERIFIED+=("$tool")
  else
    head -n 20 "$LOGS/$tool-diff.log" >&2
    die "$tool restore differs from the data set"
  fi
done

# --- report --------------------------------------------------------------------
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$(dirname "$RESULTS")"
export BENCH_TSV="$TSV" BENCH_OUT="$RESULTS" BENCH_DATA_BYTES="$DATA_BYTES" BENCH_DATA_FILES="$DATA_FILES" \
  BENCH_DATA_BYTES_CHANGED="$DATA_BYTES_CHANGED" \
  BENCH_CACHE_MODE="$CACHE_MODE" BENCH_KITH_REV="$KITH_REV" BENCH_KITH_DIRTY="$KITH_DIRTY" \
  BENCH_RESTIC_VERSION="$("$RESTIC" version)" BENCH_KITH_VERSION="$("$KITH" --version 2>/dev/null || echo kith)" \
  BENCH_SIZE_MB="$SIZE_MB" BENCH_SEED="$SEED" BENCH_CHANGE_PERCENT="$CHANGE" BENCH_CHANGE_NOTE="$CHANGED_BYTES_NOTE" \
  BENCH_VERIFIED="${VERIFIED[*]}" BENCH_CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)" \
  BENCH_NPROC="$(nproc)" BENCH_KERNEL="$(uname -r)" BENCH_LOAD="before: $LOAD_BEFORE, after: $LOAD_AFTER" BENCH_MEM="$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
python3 "$ROOT/bench/report.py"
