#!/usr/bin/env bash
# The official `openai` Python client against a running `ferrogpt serve`.
# Usage: FERROGPT_MODEL_DIR=out/model tests/compat/run.sh   (exits non-zero on any failure)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
python3 -c 'import openai' 2>/dev/null || python3 -m pip install -q openai
# A low TPM limit lets one oversized request show the RateLimitError path.
SERVE_ARGS="--tpm 4000" NEED_MODERATION=1 source "$HERE/server.sh"
python3 "$HERE/test_openai_compat.py" -v
stop_server
