#!/usr/bin/env bash
# Runs the same eval with OpenAI's `oaieval dummy EVAL` and `ferrogpt eval dummy EVAL`,
# prints both final reports (the metrics must be equal) and the wall-time ratio.
#
#   bench/evals_vs_oaieval.sh [EVAL]        default EVAL: spanish-lexicon.dev.v0 (58,037 samples)
#
# Installs Python `evals==3.0.1.post1` with pip if `oaieval` is missing. Both tools read the
# registry of that same package, so they see the same YAML and JSONL. FERROGPT (default:
# target/release/ferrogpt, built if missing) selects the binary.
set -euo pipefail

EVAL="${1:-spanish-lexicon.dev.v0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FERROGPT="${FERROGPT:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrogpt}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if ! command -v oaieval >/dev/null 2>&1; then
  # The package pins a long list of optional dependencies (langchain, mypy, ...) that make
  # pip's resolver take many minutes; `oaieval dummy` only needs these.
  echo "== installing evals==3.0.1.post1 (pip, runtime dependencies only)"
  pip install --quiet --no-deps "evals==3.0.1.post1"
  pip install --quiet openai pyyaml blobfile lz4 zstandard backoff tiktoken tqdm numpy pydantic requests
fi
# The evals package builds an OpenAI client at import time; dummy never calls it.
export OPENAI_API_KEY="${OPENAI_API_KEY:-sk-unused}"
if [ ! -x "$FERROGPT" ]; then
  echo "== building ferrogpt (release)"
  (cd "$ROOT" && cargo build --release -p ferrogpt)
fi
REGISTRY="$(python3 -c 'import evals, os; print(os.path.join(os.path.dirname(evals.__file__), "registry"))')"

now() { python3 -c 'import time; print(time.time())'; }

echo "== oaieval dummy $EVAL"
t0=$(now)
oaieval dummy "$EVAL" --record_path "$WORK/oaieval.jsonl" >"$WORK/oaieval.out" 2>&1 || { cat "$WORK/oaieval.out"; exit 1; }
t1=$(now)
echo "== ferrogpt eval dummy $EVAL"
# Only the upstream registry, as oaieval sees it (the built-in one would add names).
FERROGPT_EVALS_REGISTRY="$WORK/none" "$FERROGPT" eval dummy "$EVAL" --registry_path "$REGISTRY" \
  --record_path "$WORK/ferrogpt.jsonl" --quiet --no-cache >"$WORK/ferrogpt.out" 2>&1 || { cat "$WORK/ferrogpt.out"; exit 1; }
t2=$(now)

python3 - "$WORK/oaieval.jsonl" "$WORK/ferrogpt.jsonl" "$t0" "$t1" "$t2" <<'PY'
import json, sys
def report(path):
    for line in open(path, encoding="utf-8"):
        d = json.loads(line)
        if "final_report" in d:
            return d["final_report"]
    sys.exit(f"no final_report in {path}")
a, b = report(sys.argv[1]), report(sys.argv[2])
t0, t1, t2 = map(float, sys.argv[3:6])
print("oaieval  final report:", json.dumps(a, sort_keys=True))
print("ferrogpt final report:", json.dumps(b, sort_keys=True))
# ferrogpt adds a seeded bootstrap_ci95; every key oaieval reports must be equal.
diff = {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
print(f"oaieval {t1 - t0:.2f} s, ferrogpt {t2 - t1:.2f} s, ratio {(t1 - t0) / max(t2 - t1, 1e-9):.1f}x")
if diff:
    sys.exit(f"METRICS DIFFER: {diff}")
print("metrics equal")
PY
