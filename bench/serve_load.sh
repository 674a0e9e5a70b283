#!/usr/bin/env bash
# Load benchmark of `ferrogpt serve`: 1 and 32 concurrent streaming clients against a small
# model; prints aggregate generated tokens/s for both, their ratio (the batching gain) and
# p50/p99 time to first token.
# Usage: FERROGPT_MODEL_DIR=out/model bench/serve_load.sh   (env: REQUESTS_1, REQUESTS_32, MAX_TOKENS)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SERVE_ARGS="--slots 32 --rpm 1000000 --tpm 1000000000" source "$HERE/../tests/compat/server.sh"
MODEL=$(python3 - "$BASE_URL" "$API_KEY" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/models", headers={"Authorization": "Bearer " + sys.argv[2]})
models = json.load(urllib.request.urlopen(req))["data"]
print(next(m["id"] for m in models if m.get("snapshot")))
PY
)
MAX_TOKENS=${MAX_TOKENS:-64}
run() { python3 "$HERE/serve_load.py" --base-url "$BASE_URL" --key "$API_KEY" --model "$MODEL" --max-tokens "$MAX_TOKENS" -c "$1" -n "$2"; }
log "warm-up"
run 4 4 >/dev/null
log "1 client"
ONE=$(run 1 "${REQUESTS_1:-6}")
log "32 clients"
MANY=$(run 32 "${REQUESTS_32:-96}")
python3 - "$ONE" "$MANY" <<'PY'
import json, sys
one, many = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for r in (one, many):
    print(f"{r['concurrency']:>3} clients: {r['tokens_per_s']:8.1f} generated tok/s  {r['requests']:>4} requests  "
          f"TTFT p50 {r['ttft_p50_s']*1000:8.1f} ms  p99 {r['ttft_p99_s']*1000:8.1f} ms")
print(f"batching gain (32 vs 1 clients): {many['tokens_per_s'] / one['tokens_per_s']:.2f}x")
PY
stop_server
