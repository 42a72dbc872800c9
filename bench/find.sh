#!/usr/bin/env bash
# kith find on a repository of many files: cold (no cache: the index and
# the name index are rebuilt from the repository) and warm (names from the
# name index in the cache), each timed with its peak RSS.
#
# Usage: bash bench/find.sh
# Environment:
#   BENCH_FIND_FILES=1000000  files in the data set (1000 per folder)
#   BENCH_DIR=/tmp            where the work folder is made
#   BENCH_KEEP=1              keep the work folder (default: removed)
#   BENCH_SKIP_BUILD=1        use the existing release binary
#   BENCH_KITH=path           use this kith binary (implies BENCH_SKIP_BUILD=1)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FILES="${BENCH_FILES:-${BENCH_FIND_FILES:-1000000}}"
PARENT="${BENCH_DIR:-${TMPDIR:-/tmp}}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
KITH="${BENCH_KITH:-$TARGET/release/kith}"
[ -z "${BENCH_KITH:-}" ] || BENCH_SKIP_BUILD=1

log() { printf '[find-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building kith (release)"
    (cd "$ROOT" && cargo build --release --bin kith --locked)
fi

WORK="$(mktemp -d "$PARENT/kith-find-bench.XXXXXX")"
[ "${BENCH_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
export KITH_REPOSITORY="$WORK/repo" KITH_CACHE_DIR="$WORK/cache" KITH_PASSWORD=bench

log "making $FILES files in $WORK/data"
python3 - "$WORK/data" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
words = ["report", "invoice", "photo", "holiday", "budget", "notes", "draft", "résumé",
         "scan", "letter", "backup", "archive", "summary", "agenda", "minutes", "plan"]
rng = random.Random(42)
for d in range((n + 999) // 1000):
    folder = os.path.join(root, f"{d // 100:03d}", f"{d % 100:02d}")
    os.makedirs(folder, exist_ok=True)
    for i in range(min(1000, n - d * 1000)):
        name = f"{rng.choice(words)} {rng.choice(words)} {d:04d}-{i:03d}.{rng.choice(['txt', 'pdf', 'jpg', 'ods'])}"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"%d" % (d * 1000 + i))
PY

timed() { # label, command...
    local label="$1"; shift
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" > "$WORK/out" 2> "$WORK/err" || {
        cat "$WORK/err" >&2; exit 1; }
    read -r secs kib < "$WORK/time"
    printf '%-28s %8.2f s  %7d MiB peak RSS\n' "$label" "$secs" "$((kib / 1024))"
}

"$KITH" init --kdf-memory 64 --kdf-iterations 1 > /dev/null 2>&1
timed "backup ($FILES files)" "$KITH" backup -q "$WORK/data"
rm -rf "$WORK/cache"
timed "find, cold (no cache)" "$KITH" find 'holliday' --limit 20
timed "find, warm" "$KITH" find 'holliday' --limit 20
timed "find glob, warm" "$KITH" find '*minutes*0042-*' --limit 20
"$KITH" backup -q "$WORK/data"
timed "find, warm, 2 snapshots" "$KITH" find 'holliday' --limit 20
log "done"
