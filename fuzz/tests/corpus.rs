//! Every harness over its committed seeds and regression inputs, without a fuzzer: keeps the
//! harness code compiling and its properties true on the inputs the fuzzer started from and
//! on every input that once broke a property.

use std::path::{Path, PathBuf};

use ferrogpt_fuzz::TARGETS;

/// The files of `fuzz/<kind>/<target>/`, sorted (an absent folder holds none).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn run_corpus(target: &str) {
    let harness = TARGETS.iter().find(|t| t.name == target).unwrap().run;
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "no seeds for {target}: run `cargo run --bin make-seeds`");
    let scratch = tempfile::tempdir().unwrap();
    for file in seeds.iter().chain(&inputs("regressions", target)) {
        eprintln!("{target}: {}", file.display());
        harness(&std::fs::read(file).unwrap(), scratch.path());
    }
}

macro_rules! corpus_tests {
    ($($target:ident),* $(,)?) => {
        $(#[test]
        fn $target() {
            run_corpus(stringify!($target));
        })*

        #[test]
        fn every_target_has_a_corpus_test() {
            let tested = [$(stringify!($target)),*];
            for t in &TARGETS {
                assert!(tested.contains(&t.name), "{} has no corpus test", t.name);
            }
        }
    };
}

corpus_tests!(
    request_chat,
    request_completion,
    chat_template,
    tokenizer,
    json_mode,
    eval_registry,
    model_folder,
    safetensors,
    gguf,
);
