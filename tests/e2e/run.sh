#!/usr/bin/env bash
# Drives the chat page in headless Chromium (Debian's package, through playwright-core) against
# a running `ferrogpt serve`: connect with a key, pick a model, set a system message, send a
# message, watch the reply stream in, and hit the per-user message cap.
# Usage: FERROGPT_MODEL_DIR=out/model tests/e2e/run.sh   (exits non-zero on any failure)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  (cd "$HERE" && npm install --silent --no-audit --no-fund)
fi
SERVE_ARGS="--chat-cap 2" source "$HERE/server.sh"
SCREENSHOT_DIR=${SCREENSHOT_DIR:-$WORK} node "$HERE/chat_page.mjs"
stop_server
