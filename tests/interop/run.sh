#!/usr/bin/env bash
# A model exported by `ferrogpt export hf` in Hugging Face `transformers`: the same logits
# (within 1e-4) on several prompts, and `apply_chat_template` giving our chat tokens. Then
# `ferrogpt export gguf` (f32 and q8_0) read by llama.cpp's `gguf` package: metadata,
# vocabulary, and every tensor against the Hugging Face weights.
# Usage: FERROGPT_MODEL_DIR=out/model [FERROGPT_BIN=target/debug/ferrogpt] tests/interop/run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${FERROGPT_BIN:-ferrogpt}
MODEL=${FERROGPT_MODEL_DIR:?set FERROGPT_MODEL_DIR to a model folder}
# torch is large; pip keeps its wheels in ~/.cache/pip, so a second run downloads nothing.
python3 -c 'import torch, transformers, gguf, safetensors' 2>/dev/null || python3 -m pip install -q torch transformers gguf safetensors
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" export hf --model "$MODEL" --out "$WORK/hf"
python3 "$HERE/hf_check.py" "$BIN" "$MODEL" "$WORK"
for dtype in f32 q8_0; do
  "$BIN" export gguf --model "$MODEL" --out "$WORK/model-$dtype.gguf" --dtype "$dtype"
done
python3 "$HERE/gguf_check.py" "$WORK"
