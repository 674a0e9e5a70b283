#!/usr/bin/env bash
# ferrogpt vs PyTorch on the reference model, same thread count, one invocation.
# Prints each side's figures and the ratios ours/PyTorch for training
# (bar: >= 1.0) and batch-1 decoding (bar: >= 3.0).
#
#   bench/train_vs_pytorch.sh            # 2 threads
#   THREADS=1 bench/train_vs_pytorch.sh
#   TORCH_COMPILE=1 bench/train_vs_pytorch.sh   # also time torch.compile
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
STEPS=${STEPS:-10}

if ! python3 -c "import torch" 2>/dev/null; then
  echo "installing torch with pip (large download)..." >&2
  python3 -m pip install --quiet torch
fi
cargo build --release --quiet -p ferrogpt
BIN=${CARGO_TARGET_DIR:-target}/release/ferrogpt
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS

ours_train=$($BIN --threads "$THREADS" bench train --steps "$STEPS" --json)
ref_train=$(python3 bench/train_reference.py train --threads "$THREADS" --steps "$STEPS")
ours_gen=$($BIN --threads "$THREADS" bench generate --json)
ref_gen=$(python3 bench/train_reference.py generate --threads "$THREADS")
ref_compiled=""
if [ "${TORCH_COMPILE:-0}" = 1 ]; then
  ref_compiled=$(python3 bench/train_reference.py train --threads "$THREADS" --steps "$STEPS" --compile || echo '{"tokens_per_s": 0}')
fi

python3 - "$ours_train" "$ref_train" "$ours_gen" "$ref_gen" "$ref_compiled" <<'PY'
import json, sys
ot, rt, og, rg = (json.loads(a) for a in sys.argv[1:5])
print(f"threads: {ot['threads']}")
print(f"train    ferrogpt {ot['tokens_per_s']:8.0f} tok/s ({ot['gflops']:.1f} GFLOP/s, {100*ot['gflops']/ot['sgemm_peak_gflops']:.0f}% of measured sgemm {ot['sgemm_peak_gflops']:.0f})")
print(f"         pytorch  {rt['tokens_per_s']:8.0f} tok/s (torch {rt['torch']}, AdamW {rt['optimizer']})")
print(f"         ratio ferrogpt/pytorch = {ot['tokens_per_s']/rt['tokens_per_s']:.2f}  (bar >= 1.0)")
if sys.argv[5]:
    rc = json.loads(sys.argv[5])
    if rc["tokens_per_s"] > 0:
        print(f"         pytorch+compile {rc['tokens_per_s']:8.0f} tok/s -> ratio {ot['tokens_per_s']/rc['tokens_per_s']:.2f}")
print(f"generate ferrogpt {og['tokens_per_s']:8.0f} tok/s (batch 1, KV cache)")
print(f"         pytorch  {rg['tokens_per_s']:8.0f} tok/s")
print(f"         ratio ferrogpt/pytorch = {og['tokens_per_s']/rg['tokens_per_s']:.2f}  (bar >= 3.0)")
PY
