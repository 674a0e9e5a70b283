//! Fuzz harnesses for ferrogpt's input-facing code: one module per target, each with
//! `run(data, scratch)` that feeds the fuzzer's bytes to the library and panics when a
//! property fails. Properties are checked, not only "it did not crash": a request that parses
//! stays inside the documented bounds, text round-trips through the tokenizer, JSON mode only
//! ever produces valid JSON, loaders return errors instead of panicking or allocating what a
//! header merely claims.
//!
//! The same functions run three ways: under libFuzzer (`fuzz_targets/`, built by
//! `bench/fuzz.sh`), over the committed seeds and regression inputs in `cargo test` here
//! (`tests/corpus.rs`), and the seeds are written by `src/bin/make_seeds.rs`.
//!
//! Every allocation is capped ([`alloc_cap`]): an input of a few kilobytes that makes a loader
//! reserve gigabytes because a header says so is a finding, reported as an abort.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub mod alloc_cap;
pub mod chat_template;
pub mod eval_registry;
pub mod fixtures;
pub mod gguf;
pub mod json_mode;
pub mod model_folder;
mod request;
pub mod request_chat;
pub mod request_completion;
pub mod safetensors;
pub mod tokenizer;

#[global_allocator]
static ALLOCATOR: alloc_cap::CappedAllocator = alloc_cap::CappedAllocator;

/// A harness: the fuzzer's bytes and a folder it may write files into (its own, reused).
pub type Harness = fn(&[u8], &Path);

/// One fuzz target: its name (binary, seed and regression folder) and harness.
pub struct Target {
    pub name: &'static str,
    pub run: Harness,
}

/// Every target, in the order `bench/fuzz.sh` runs them.
pub const TARGETS: [Target; 9] = [
    Target {
        name: "request_chat",
        run: request_chat::run,
    },
    Target {
        name: "request_completion",
        run: request_completion::run,
    },
    Target {
        name: "chat_template",
        run: chat_template::run,
    },
    Target {
        name: "tokenizer",
        run: tokenizer::run,
    },
    Target {
        name: "json_mode",
        run: json_mode::run,
    },
    Target {
        name: "eval_registry",
        run: eval_registry::run,
    },
    Target {
        name: "model_folder",
        run: model_folder::run,
    },
    Target {
        name: "safetensors",
        run: safetensors::run,
    },
    Target {
        name: "gguf",
        run: gguf::run,
    },
];

/// Runs a harness with this process's scratch folder, `$TMPDIR/ferrogpt-fuzz-<pid>`
/// (`bench/fuzz.sh` points `TMPDIR` at a folder it removes afterwards).
pub fn run_in_process_scratch(harness: Harness, data: &[u8]) {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    let dir = SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferrogpt-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create scratch folder {}: {e}", dir.display()));
        dir
    });
    harness(data, dir);
}

/// Separates the parts of a multi-part input (files of a folder, sections of a registry).
/// NUL never occurs in the text formats the parts hold, so the separator does not collide with
/// realistic content, and it is short enough for mutations to create and remove.
pub const PART_SEPARATOR: &[u8] = b"\x00--\x00";

/// The first `n` parts of `data` split at [`PART_SEPARATOR`]; missing parts are empty and the
/// last part keeps any further separators.
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(PART_SEPARATOR.len()).position(|w| w == PART_SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + PART_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts.resize(n, &[]);
    parts
}

/// Joins parts with [`PART_SEPARATOR`] (the inverse of [`split_parts`], for writing seeds).
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(PART_SEPARATOR)
}

/// Writes a file the harness then hands to a loader; the scratch folder is the harness's own,
/// so failing to write it is a broken test machine, not a finding.
fn write_scratch(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write scratch file {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_and_join() {
        let joined = join_parts(&[b"a", b"", b"c\x00--\x00d"]);
        assert_eq!(split_parts(&joined, 3), vec![&b"a"[..], b"", b"c\x00--\x00d"]);
        assert_eq!(split_parts(b"only", 3), vec![&b"only"[..], b"", b""]);
        assert_eq!(split_parts(b"", 1), vec![&b""[..]]);
    }
}
