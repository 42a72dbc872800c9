#!/usr/bin/env bash
# kith vs restic on remote repositories: the same generated data set backed
# up to, and restored from, an SFTP server (OpenSSH's sshd) and an S3 server
# (moto), both on 127.0.0.1 and started by this script.
#
# For each backend, kith and then restic run: init, first backup, restore
# latest into an empty folder (checked bit-exact with diff -r). Each step is
# timed (wall clock) with its peak RSS; the page cache is dropped before
# each step when allowed (root). Both tools use the same servers, the same
# data and the same cache policy:
#   SFTP: kith's native client (KITH_SSH_KEY); restic through `ssh -s sftp`
#         (`-o sftp.command=...`), with the same key and known_hosts.
#   S3:   moto_server; kith with AWS_ENDPOINT_URL (path-style); restic with
#         `s3:http://127.0.0.1:PORT/bucket` and the same AWS_* keys.
#
# Usage: bash bench/remote.sh
# Environment:
#   BENCH_SIZE_MB=256        data set size in MiB (moto holds every object in memory)
#   BENCH_SEED=42            data set seed (gen-data.py)
#   BENCH_BACKENDS="sftp s3" which backends to run
#   BENCH_DIR=/tmp           where the work folder is made
#   BENCH_KEEP=1             keep the work folder
#   BENCH_DROP_CACHES=0      never drop the page cache
#   BENCH_SKIP_BUILD=1       use the existing release binary
#   BENCH_KITH_BIN=path      the kith binary to measure (default: the release build)
#   BENCH_RESULTS=path       JSON output (default bench/results/remote-latest.json)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZE_MB="${BENCH_SIZE_MB:-256}"
SEED="${BENCH_SEED:-42}"
BACKENDS="${BENCH_BACKENDS:-sftp s3}"
KEEP="${BENCH_KEEP:-0}"
DROP="${BENCH_DROP_CACHES:-auto}"
RESULTS="${BENCH_RESULTS:-$ROOT/bench/results/remote-latest.json}"
PARENT="${BENCH_DIR:-${TMPDIR:-/tmp}}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- tools -------------------------------------------------------------------
need_pkgs=()
command -v restic >/dev/null 2>&1 || need_pkgs+=(restic)
[ -x /usr/bin/time ] || need_pkgs+=(time)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}; install them or run as root"
  log "installing ${need_pkgs[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if ! command -v moto_server >/dev/null 2>&1; then
  log "installing moto[server]"
  python3 -m pip install --quiet 'moto[server]'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi
RESTIC="$(command -v restic)"

KITH_REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
KITH_DIRTY="$(cd "$ROOT" && git status --porcelain -- engine storage cli Cargo.lock 2>/dev/null | awk '{print $2}' | paste -sd' ' -)"
KITH_DIRTY="${KITH_DIRTY:+uncommitted: $KITH_DIRTY}"
KITH_DIRTY="${KITH_DIRTY:-clean}"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building kith (cargo build --release -p kith-cli)"
  (cd "$ROOT" && cargo build --release -p kith-cli) >&2
fi
KITH="${BENCH_KITH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/kith}"
case "$KITH" in /*) ;; *) KITH="$ROOT/$KITH" ;; esac
[ -x "$KITH" ] || die "no kith binary at $KITH"

# --- work folder, servers --------------------------------------------------------
mkdir -p "$PARENT"
WORK="$(mktemp -d "$PARENT/kith-bench-remote.XXXXXX")"
PIDS=()
cleanup() {
  rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
  [ "$rc" = 0 ] || log "failed (exit $rc)"
}
trap cleanup EXIT
DATA="$WORK/data"
LOGS="$WORK/logs"
TSV="$WORK/steps.tsv"
mkdir -p "$LOGS" "$WORK/ssh"
: >"$TSV"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # wait_port PORT PID WHAT
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited before listening"
    sleep 0.05
  done
  die "$3 did not listen on 127.0.0.1:$1"
}

SSH_DIR="$WORK/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/client_key"
cp "$SSH_DIR/client_key.pub" "$SSH_DIR/authorized_keys"
mkdir -p /run/sshd
SSH_PORT="$(free_port)"
USER_NAME="$(id -un)"
cat >"$SSH_DIR/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_key
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
AllowUsers $USER_NAME
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1-2 "$SSH_DIR/host_key.pub")" >"$SSH_DIR/known_hosts"
/usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config" 2>"$LOGS/sshd.log" &
PIDS+=($!)
wait_port "$SSH_PORT" "${PIDS[-1]}" sshd

S3_PORT="$(free_port)"
moto_server -H 127.0.0.1 -p "$S3_PORT" >"$LOGS/moto.log" 2>&1 &
PIDS+=($!)
wait_port "$S3_PORT" "${PIDS[-1]}" moto_server
log "sshd on 127.0.0.1:$SSH_PORT, moto on 127.0.0.1:$S3_PORT"

export KITH_PASSWORD="bench-password" RESTIC_PASSWORD="bench-password"
export KITH_SSH_KEY="$SSH_DIR/client_key" KITH_SSH_KNOWN_HOSTS="$SSH_DIR/known_hosts"
export AWS_ACCESS_KEY_ID="benchkey" AWS_SECRET_ACCESS_KEY="benchsecret" AWS_REGION="us-east-1"
unset KITH_PASSWORD_FILE RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND 2>/dev/null || true
SSH_CMD="ssh -p $SSH_PORT -i $SSH_DIR/client_key -o UserKnownHostsFile=$SSH_DIR/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes $USER_NAME@127.0.0.1 -s sftp"

CACHE_MODE=warm
drop_caches() {
  [ "$CACHE_MODE" = cold ] || return 0
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
if [ "$DROP" != 0 ] && { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  CACHE_MODE=cold
fi
log "work folder $WORK, page cache: $CACHE_MODE before each step"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

log "generating ${SIZE_MB} MiB data set (seed $SEED)"
python3 "$ROOT/bench/gen-data.py" "$DATA" --size-mb "$SIZE_MB" --seed "$SEED"
DATA_BYTES="$(du -sb --apparent-size "$DATA" | cut -f1)"
DATA_FILES="$(find "$DATA" -type f | wc -l)"

# step BACKEND TOOL NAME COMMAND...: drop caches, run under /usr/bin/time -v.
step() {
  local backend="$1" tool="$2" name="$3"
  shift 3
  local out="$LOGS/$backend-$tool-$name.log" tv="$LOGS/$backend-$tool-$name.time" rc=0 t0 t1
  drop_caches
  t0="$(date +%s.%N)"
  /usr/bin/time -v -o "$tv" "$@" >"$out" 2>&1 || rc=$?
  t1="$(date +%s.%N)"
  local wall user sys rss
  wall="$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  user="$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tv")"
  sys="$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tv")"
  rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$tool" "$name" "$wall" "$user" "$sys" "$rss" "$rc" >>"$TSV"
  log "$(printf '%-5s %-7s %-13s %8ss  user %6ss  sys %6ss  peak RSS %7s KiB  exit %s' "$backend" "$tool" "$name" "$wall" "$user" "$sys" "$rss" "$rc")"
  if [ "$rc" != 0 ]; then
    tail -n 30 "$out" >&2
    die "$backend $tool $name failed with exit $rc (log: $out)"
  fi
}

VERIFIED=()
for backend in $BACKENDS; do
  case "$backend" in
    sftp)
      export KITH_REPOSITORY="sftp://$USER_NAME@127.0.0.1:$SSH_PORT$WORK/remote/kith"
      export RESTIC_REPOSITORY="sftp:$USER_NAME@127.0.0.1:$WORK/remote/restic"
      RESTIC_OPTS=(-o "sftp.command=$SSH_CMD")
      unset AWS_ENDPOINT_URL
      ;;
    s3)
      export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
      export KITH_REPOSITORY="s3://bench-kith/repo"
      export RESTIC_REPOSITORY="s3:http://127.0.0.1:$S3_PORT/bench-restic/repo"
      RESTIC_OPTS=()
      ;;
    *) die "unknown backend $backend (sftp or s3)" ;;
  esac
  export KITH_CACHE_DIR="$WORK/cache-kith-$backend" RESTIC_CACHE_DIR="$WORK/cache-restic-$backend"
  step "$backend" kith init "$KITH" init
  step "$backend" restic init "$RESTIC" "${RESTIC_OPTS[@]}" init
  step "$backend" kith backup-first "$KITH" backup "$DATA" --json
  step "$backend" restic backup-first "$RESTIC" "${RESTIC_OPTS[@]}" backup "$DATA"
  step "$backend" kith restore "$KITH" restore latest --target "$WORK/restore-$backend-kith"
  step "$backend" restic restore "$RESTIC" "${RESTIC_OPTS[@]}" restore latest --target "$WORK/restore-$backend-restic"
  for tool in kith restic; do
    got="$WORK/restore-$backend-$tool$DATA"
    [ -d "$got" ] || die "$tool restored nothing at $got"
    if diff -r --no-dereference "$DATA" "$got" >"$LOGS/$backend-$tool-diff.log" 2>&1; then
      log "$backend: $tool restore is bit-exact"
      VERIFIED+=("$backend-$tool")
    else
      head -n 20 "$LOGS/$backend-$tool-diff.log" >&2
      die "$backend: $tool restore differs from the data set"
    fi
    rm -rf "$WORK/restore-$backend-$tool"
  done
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$(dirname "$RESULTS")"
export BENCH_TSV="$TSV" BENCH_OUT="$RESULTS" BENCH_DATA_BYTES="$DATA_BYTES" BENCH_DATA_FILES="$DATA_FILES" \
  BENCH_CACHE_MODE="$CACHE_MODE" BENCH_KITH_REV="$KITH_REV" BENCH_KITH_DIRTY="$KITH_DIRTY" \
  BENCH_RESTIC_VERSION="$("$RESTIC" version)" BENCH_SIZE_MB="$SIZE_MB" BENCH_SEED="$SEED" \
  BENCH_VERIFIED="${VERIFIED[*]}" BENCH_NPROC="$(nproc)" BENCH_LOAD="before: $LOAD_BEFORE, after: $LOAD_AFTER" \
  BENCH_SERVERS="$(/usr/sbin/sshd -V 2>&1 | head -n 1); moto $(python3 -c 'import moto; print(moto.__version__)')"
python3 "$ROOT/bench/report-remote.py"
