#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ on the stable toolchain, then one line of
# figures per target: executions, executions per second, coverage, crashes.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 420 s each, every target)
#
# The engine is libFuzzer, from the libfuzzer-sys crate (its build script compiles libFuzzer
# with the system C++ compiler). Coverage comes from rustc's SanitizerCoverage pass through
# the stable `-C passes` and `-C llvm-args` options, so no nightly and no RUSTC_BOOTSTRAP; no
# sanitizer runs (they need -Z flags), but the build keeps overflow checks and debug
# assertions, and the harnesses cap every allocation (fuzz/src/alloc_cap.rs).
#
# The default time gives every target at least a million executions on a 2-core machine
# shared with other builds (the slowest, model_folder, runs ~3,000/s there).
#
# Each target runs alone, on one core, with its corpus in fuzz/corpus/<target> (kept between
# runs), the committed seeds and regression inputs as extra read-only corpora, and a
# libFuzzer dictionary where one helps. A target stops at its first crash, timeout (10 s) or
# out-of-memory (2 GiB); the input lands in fuzz/artifacts/<target>/. Exits non-zero if any
# target crashed. Turn a crash into a regression: copy it to fuzz/regressions/<target>/
# (`cargo test --manifest-path fuzz/Cargo.toml` replays those) and add a test with the input
# to the owning crate.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-420}
shift || true
all_targets=(request_chat request_completion chat_template tokenizer json_mode eval_registry model_folder safetensors gguf)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

dict_for() {
  case $1 in
    request_chat | request_completion) echo fuzz/dicts/request.dict ;;
    eval_registry) echo fuzz/dicts/registry.dict ;;
    model_folder | safetensors | gguf) echo fuzz/dicts/weights.dict ;;
  esac
}

# Longest input per target: text harnesses cost time linear in the input, and their bugs
# show on short inputs; the file loaders keep libFuzzer's default (the largest seed).
max_len_for() {
  case $1 in
    tokenizer | chat_template) echo 1024 ;;
    json_mode) echo 512 ;;
  esac
}

if ! command -v c++ >/dev/null; then
  echo "== installing a C++ compiler (libFuzzer is built from source)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# Coverage instrumentation goes only to the crates under test (fuzz/instrument-rustc.sh);
# the explicit --target keeps it off build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-C target-cpu=native --cfg fuzzing"
export RUSTC_WRAPPER=$PWD/fuzz/instrument-rustc.sh
export CARGO_TARGET_DIR=$PWD/fuzz/target
echo "== building the fuzz targets ($host)"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --release --manifest-path fuzz/Cargo.toml --features libfuzzer --target "$host" "${bins[@]}"
bin=$CARGO_TARGET_DIR/$host/release

# Harnesses write the files they hand to loaders: in memory (tmpfs) that is ten times
# faster than on a disk shared with builds.
if [ -w /dev/shm ]; then scratch=$(mktemp -d -p /dev/shm); else scratch=$(mktemp -d); fi
trap 'rm -rf "$scratch"' EXIT
results=()
failed=0
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts" "$scratch/$t"
  extra=(fuzz/seeds/"$t")
  [ -d fuzz/regressions/"$t" ] && extra+=(fuzz/regressions/"$t")
  dict=$(dict_for "$t")
  max_len=$(max_len_for "$t")
  log=$scratch/$t.log
  before=$(find "$artifacts" -type f | wc -l)
  echo "== $t: ${seconds}s"
  set +e
  TMPDIR=$scratch/$t RAYON_NUM_THREADS=1 "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" ${dict:+-dict="$dict"} ${max_len:+-max_len="$max_len"} \
    "$corpus" "${extra[@]}" >"$log" 2>&1
  status=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # The last status line: "#N <event> cov: C ft: F corp: ..."
  last=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  crashes=$(($(find "$artifacts" -type f | wc -l) - before))
  rate=$(awk -v n="${execs:-0}" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "   FAILED (exit $status); log tail:"
    tail -n 40 "$log" | sed 's/^/   | /'
    # A crash ends the run early: the rate over the planned time would understate it.
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  fi
  results+=("$(printf '%-20s %12s %10s %8s %8s %8s %8s %8s' "$t" "${execs:-0}" "${rate:-0}" "${cov:--}" "${ft:--}" "${corp:--}" "${rss:--}" "$crashes")")
done

echo
printf '%-20s %12s %10s %8s %8s %8s %8s %8s\n' target execs execs/s cov ft corpus rss_mb crashes
printf '%s\n' "${results[@]}"
[ "$failed" -eq 0 ] || {
  echo "crash inputs are in fuzz/artifacts/<target>/"
  exit 1
}
