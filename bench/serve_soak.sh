#!/usr/bin/env bash
# Soak test of `ferrogpt serve`: 64 concurrent clients on 4 keys for minutes, mixing valid
# (streamed and buffered), invalid, cancelled (closed after the first token) and rate-limited
# requests; then SIGTERM (the server drains and exits) and a report: p50/p99 time to first token
# per key, the 5xx count (must be 0), ledger rows vs requests answered 200 (must be equal, read
# from the SQLite state file), admitted requests vs the RPM limit per key (never above), and the
# server's resident memory at start and end. Exits non-zero if a check fails.
#
# Usage: bench/serve_soak.sh [--smoke] [--duration SECONDS] [--clients N] [--rpm N]
#   env FERROGPT_MODEL_DIR (a model folder, e.g. target/ci-smoke/model after
#   `ferrogpt speedrun --preset smoke --out target/ci-smoke`, or a tiny random one),
#   FERROGPT_BIN (default: cargo build --release). Defaults: 120 s at 600 requests per minute
#   per key; --smoke runs for 8 s at 120 (both below what the clients ask for, so the rate
#   limiter refuses some).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=120
CLIENTS=64
RPM=600
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) DURATION=8; RPM=120 ;;
    --duration) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --rpm) RPM=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
SERVE_ARGS="--slots 32 --rpm $RPM --tpm 100000000 --drain-seconds 30" source "$HERE/../tests/compat/server.sh"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
STATE="$WORK/state.sqlite"
KEYS=""
NAMES=""
for i in 1 2 3 4; do
  secret=$("$FERROGPT_BIN" keys create --name "soak-$i" --state "$STATE" 2>/dev/null)
  KEYS="${KEYS:+$KEYS,}$secret"
  NAMES="${NAMES:+$NAMES,}soak-$i"
done
RSS_START=$(rss)
log "soak: $CLIENTS clients on 4 keys for ${DURATION}s (RPM $RPM per key)"
python3 "$HERE/serve_soak.py" run --base-url "$BASE_URL" --model ferrogpt --keys "$KEYS" \
  --duration "$DURATION" --concurrency "$CLIENTS" --log "$WORK/requests.jsonl"
RSS_END=$(rss)
log "stopping the server (SIGTERM: drain, then exit)"
stop_server
python3 "$HERE/serve_soak.py" report --log "$WORK/requests.jsonl" --keys "$KEYS" --names "$NAMES" \
  --state "$STATE" --rpm "$RPM" --duration "$DURATION" --concurrency "$CLIENTS" \
  --rss-start "$RSS_START" --rss-end "$RSS_END"
