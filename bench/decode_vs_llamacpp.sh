#!/usr/bin/env bash
# ferrogpt vs llama.cpp: batch-1 decode tokens/s of the same model (the reference shape),
# exported by `ferrogpt export gguf`, per weight dtype, at the same thread count, in one
# invocation; and, for f32, whether llama.cpp's greedy continuation of a prompt equals ours.
#
#   MODEL=runs/speedrun/base bench/decode_vs_llamacpp.sh     # a reference-shape model folder
#   THREADS=1 DTYPES="f32 q8_0" ROUNDS=5 MODEL=... bench/decode_vs_llamacpp.sh
#
# llama.cpp is built once from the source vendored in the `llama-cpp-python` sdist (PyPI),
# into ~/.cache/ferrogpt/llama-cpp (needs a C++ compiler; cmake comes from PyPI if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
TOKENS=${TOKENS:-255}
DTYPES=${DTYPES:-f32 f16 q8_0}
MODEL=${MODEL:?set MODEL to a model folder of the reference shape (e.g. runs/speedrun/base)}
LLAMA_VERSION=0.3.36
CACHE=${FERROGPT_CACHE:-$HOME/.cache/ferrogpt}/llama-cpp
LLAMA_BIN=$CACHE/build/bin

if [ ! -x "$LLAMA_BIN/llama-bench" ]; then
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  mkdir -p "$CACHE"
  sdist=$CACHE/llama_cpp_python-$LLAMA_VERSION.tar.gz
  if [ ! -f "$sdist" ]; then
    python3 - "$sdist" "$LLAMA_VERSION" <<'PY'
import json, sys, urllib.request
path, version = sys.argv[1:]
req = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req))["files"]
url = next(f["url"] for f in files if f["filename"] == f"llama_cpp_python-{version}.tar.gz")
urllib.request.urlretrieve(url, path)
PY
  fi
  rm -rf "$CACHE/src" && mkdir -p "$CACHE/src"
  tar xzf "$sdist" -C "$CACHE/src" --strip-components=1
  cmake -S "$CACHE/src/vendor/llama.cpp" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$CACHE/build" -j "$(nproc)" --target llama-bench llama-simple >/dev/null
fi

cargo build --release --quiet -p ferrogpt
BIN=${CARGO_TARGET_DIR:-target}/release/ferrogpt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export RAYON_NUM_THREADS=$THREADS

# Greedy continuation, f32: llama.cpp's tokens against ours, from the same prompt text.
PROMPT=${PROMPT:-NAME}
"$BIN" export gguf --model "$MODEL" --out "$WORK/f32.gguf" --dtype f32 >/dev/null
ours_text=$("$BIN" generate --model "$MODEL" --prompt "$PROMPT" --max-tokens 32 --temperature 0 2>/dev/null)
theirs_text=$("$LLAMA_BIN/llama-simple" -m "$WORK/f32.gguf" -n 32 "$PROMPT" 2>/dev/null || true)

# Speed: ours and llama.cpp's llama-bench in turn, ROUNDS times per dtype (the machine is
# shared; each round's pair runs back to back and the ratio quoted is the median of rounds).
runs=()
for dtype in $DTYPES; do
  "$BIN" export gguf --model "$MODEL" --out "$WORK/$dtype.gguf" --dtype "$dtype" >/dev/null
  for _ in $(seq "$ROUNDS"); do
    ours=$("$BIN" --threads "$THREADS" bench generate --dtype "$dtype" --tokens "$TOKENS" --runs 1 --json)
    theirs=$("$LLAMA_BIN/llama-bench" -m "$WORK/$dtype.gguf" -t "$THREADS" -p 0 -n "$TOKENS" -r 1 -o json)
    runs+=("$dtype" "$ours" "$(echo "$theirs" | tr -d '\n')")
  done
done

python3 - "$PROMPT" "$ours_text" "$theirs_text" "${runs[@]}" <<'PY'
import json, statistics, sys
prompt, ours_text, theirs_text, *rest = sys.argv[1:]
cpu = None
by_dtype = {}
for i in range(0, len(rest), 3):
    dtype, ours, theirs = rest[i], json.loads(rest[i + 1]), json.loads(rest[i + 2])
    cpu = ours["cpu"]
    tg = [r for r in theirs if r.get("n_gen", 0) > 0][0]
    by_dtype.setdefault(dtype, []).append((ours["tokens_per_s"], tg["avg_ts"], ours["kernels"]))
print(f"batch-1 decode, reference shape, {cpu}")
for dtype, rounds in by_dtype.items():
    ratios = [o / t for o, t, _ in rounds]
    print(f"  {dtype:5s} ferrogpt {statistics.median(o for o, _, _ in rounds):7.0f} tok/s ({rounds[0][2]})"
          f"  llama.cpp {statistics.median(t for _, t, _ in rounds):7.0f} tok/s"
          f"  ratio {statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
ours_cont = ours_text[len(prompt):] if ours_text.startswith(prompt) else ours_text
theirs_cont = theirs_text[theirs_text.find(prompt) + len(prompt):] if prompt in theirs_text else theirs_text
same = ours_cont.strip()[:60] == theirs_cont.strip()[:60]
print(f"greedy continuation of {prompt!r}, f32: {'equal' if same else 'DIFFERENT'}")
print(f"  ferrogpt:  {ours_cont.strip()[:80]!r}\n  llama.cpp: {theirs_cont.strip()[:80]!r}")
PY
