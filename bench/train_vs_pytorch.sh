#!/usr/bin/env bash
# ferrogpt vs PyTorch on the reference model, same thread count, one invocation.
# Prints each side's figures and the ratios ours/PyTorch for training
# (bar: >= 1.0) and batch-1 decoding (bar: >= 3.0).
#
#   bench/train_vs_pytorch.sh            # 2 threads
#   THREADS=1 bench/train_vs_pytorch.sh
#   ROUNDS=5 bench/train_vs_pytorch.sh          # more alternating rounds (default 3)
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

# The machine is shared: its speed drifts by tens of percent over minutes.
# Ours and PyTorch therefore run in turn, ROUNDS times, and the ratio quoted
# is the median of the per-round ratios (each round's pair ran back to back).
ROUNDS=${ROUNDS:-3}
runs=()
for _ in $(seq "$ROUNDS"); do
  runs+=("$($BIN --threads "$THREADS" bench train --steps "$STEPS" --json)")
  runs+=("$(python3 bench/train_reference.py train --threads "$THREADS" --steps "$STEPS")")
  runs+=("$($BIN --threads "$THREADS" bench generate --json)")
  runs+=("$(python3 bench/train_reference.py generate --threads "$THREADS")")
done
ref_compiled=""
if [ "${TORCH_COMPILE:-0}" = 1 ]; then
  ref_compiled=$(python3 bench/train_reference.py train --threads "$THREADS" --steps "$STEPS" --compile || echo '{"tokens_per_s": 0}')
fi

python3 - "$ref_compiled" "${runs[@]}" <<'PY'
import json, statistics, sys
compiled, runs = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
ot, rt, og, rg = (runs[i::4] for i in range(4))
med = lambda rs: statistics.median(r["tokens_per_s"] for r in rs)
def ratios(ours, ref):
    rs = [o["tokens_per_s"] / r["tokens_per_s"] for o, r in zip(ours, ref)]
    return statistics.median(rs), " ".join(f"{r:.2f}" for r in rs)
print(f"threads: {ot[0]['threads']}, rounds: {len(ot)} (ours and PyTorch in turn; medians)")
gflops = statistics.median(r["gflops"] for r in ot)
peak = statistics.median(r["sgemm_peak_gflops"] for r in ot)
print(f"train    ferrogpt {med(ot):8.0f} tok/s ({gflops:.1f} GFLOP/s, {100*gflops/peak:.0f}% of measured sgemm {peak:.0f})")
print(f"         pytorch  {med(rt):8.0f} tok/s (torch {rt[0]['torch']}, AdamW {rt[0]['optimizer']})")
r, each = ratios(ot, rt)
print(f"         ratio ferrogpt/pytorch = {r:.2f}  (bar >= 1.0; per round: {each})")
if compiled:
    rc = json.loads(compiled)
    if rc["tokens_per_s"] > 0:
        print(f"         pytorch+compile {rc['tokens_per_s']:8.0f} tok/s -> ratio {med(ot)/rc['tokens_per_s']:.2f}")
print(f"generate ferrogpt {med(og):8.0f} tok/s (batch 1, KV cache)")
print(f"         pytorch  {med(rg):8.0f} tok/s")
r, each = ratios(og, rg)
print(f"         ratio ferrogpt/pytorch = {r:.2f}  (bar >= 3.0; per round: {each})")
PY
