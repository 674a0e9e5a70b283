# Shared by tests/compat/run.sh, tests/e2e/run.sh and bench/serve_load.sh (sourced, not run):
# builds ferrogpt, finds or makes a model folder, creates a key in a throw-away state file and
# starts `ferrogpt serve` on a free loopback port. Sets FERROGPT_BIN, MODEL_DIR, WORK, PORT,
# BASE_URL, API_KEY, SERVER_PID; `stop_server` shuts it down gracefully and checks the exit.
#
# Inputs (environment): FERROGPT_MODEL_DIR (a model folder; default: build one with
# `ferrogpt speedrun --preset smoke`), FERROGPT_BIN (default: cargo build --release),
# SERVE_ARGS (extra `ferrogpt serve` flags), NEED_MODERATION (set: serve a moderation classifier,
# the model folder's moderation/ or else one trained here in a few steps).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrogpt-serve-test.XXXXXX")

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ -z "${FERROGPT_BIN:-}" ]; then
  log "building ferrogpt (release)"
  (cd "$ROOT" && cargo build --release -q -p ferrogpt)
  FERROGPT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrogpt"
fi

MODEL_DIR=${FERROGPT_MODEL_DIR:-}
if [ -z "$MODEL_DIR" ]; then
  log "no FERROGPT_MODEL_DIR: training the smoke model"
  "$FERROGPT_BIN" speedrun --preset smoke --out "$WORK/run" >&2
  MODEL_DIR="$WORK/run/model"
fi
[ -d "$MODEL_DIR" ] || { echo "model folder $MODEL_DIR does not exist" >&2; exit 2; }

# `ferrogpt serve --model` loads MODEL_DIR/moderation/ by itself; a model folder without one
# gets a classifier trained for a few steps (its verdicts are noise, its shapes are real).
if [ -n "${NEED_MODERATION:-}" ] && [ ! -d "$MODEL_DIR/moderation" ]; then
  log "no moderation classifier in $MODEL_DIR: training one for a few steps"
  "$FERROGPT_BIN" rm train --kind moderation --model "$MODEL_DIR" --out "$WORK/moderation" \
    --steps 5 --examples 200 --test-examples 50 --quiet >&2
  SERVE_ARGS="${SERVE_ARGS:-} --moderation-model $WORK/moderation/model"
fi

STATE="$WORK/state.sqlite"
API_KEY=$("$FERROGPT_BIN" keys create --name tests --state "$STATE" 2>/dev/null)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE_URL="http://127.0.0.1:$PORT"

# shellcheck disable=SC2086
"$FERROGPT_BIN" serve --model "$MODEL_DIR" --host 127.0.0.1 --port "$PORT" --state "$STATE" ${SERVE_ARGS:-} \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

stop_server() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    local rc=0
    wait "$SERVER_PID" || rc=$?
    if [ "$rc" -ne 0 ]; then
      echo "server exited with status $rc after SIGTERM; log:" >&2
      tail -n 50 "$WORK/server.log" >&2
      return 1
    fi
  fi
}
trap 'kill -TERM "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

for _ in $(seq 1 600); do
  if python3 - "$BASE_URL" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/health", timeout=1)
PY
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "server failed to start; log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
  fi
  sleep 0.2
done
log "server up at $BASE_URL (model $MODEL_DIR)"
export BASE_URL API_KEY
