#!/usr/bin/env bash
# RUSTC_WRAPPER for fuzz builds: adds SanitizerCoverage to the crates whose code the
# harnesses test (ferrogpt's own and the parsers they call), and to nothing else. Coverage
# feedback from the rest (tokio, the tokenizers crate's BPE, regex automata, the fuzz crate's
# own checks) would guide nothing here, and its comparison callbacks and counters made every
# execution several times slower. Build scripts and proc macros are never instrumented: they
# run in the build, where libFuzzer's runtime is not linked.
set -euo pipefail
rustc=$1
shift
crate=
target=
prev=
for arg in "$@"; do
  [ "$prev" = --crate-name ] && crate=$arg
  [ "$prev" = --target ] && target=$arg
  prev=$arg
done
# Host builds (no --target: build scripts, proc macros and their dependencies) stay plain.
[ -n "$target" ] || exec "$rustc" "$@"
case $crate in
  ferrogpt_engine | ferrogpt_tokenizer | ferrogpt_infer | ferrogpt_serve | ferrogpt_evals | \
    serde_json | serde_yaml | unsafe_libyaml | safetensors | base64)
    exec "$rustc" "$@" -C passes=sancov-module \
      -C llvm-args=-sanitizer-coverage-level=4 \
      -C llvm-args=-sanitizer-coverage-inline-8bit-counters \
      -C llvm-args=-sanitizer-coverage-pc-table \
      -C llvm-args=-sanitizer-coverage-trace-compares
    ;;
  *) exec "$rustc" "$@" ;;
esac
