//! The evals registry loader (openai/evals' YAML layout) and the JSONL sample reader.
//!
//! Input: two parts (see [`crate::split_parts`]): YAML, written as every resource kind's file
//! of one registry root (`evals`, `eval_sets`, `completion_fns`, `solvers`, `modelgraded`),
//! so aliases, eval-set patterns and every accessor see the same entries; and JSONL, written
//! under the root's `data/` and read the way an eval's `samples_jsonl` is.

use std::path::Path;

use ferrogpt_evals::data::{self, DataAccess};
use ferrogpt_evals::Registry;

use crate::{split_parts, write_scratch};

const KINDS: [&str; 5] = ["evals", "eval_sets", "completion_fns", "solvers", "modelgraded"];

pub fn run(data: &[u8], scratch: &Path) {
    let parts = split_parts(data, 2);
    let root = scratch.join("registry");
    std::fs::create_dir_all(root.join("data")).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    for kind in KINDS {
        write_scratch(&root.join(kind), parts[0]);
    }
    write_scratch(&root.join("data/samples.jsonl"), parts[1]);
    exercise_registry(&root);
    check_jsonl(&root, parts[1]);
}

/// Every accessor on every name: errors are fine, panics and hangs are not; what resolves
/// must be consistent with the registry's own rules.
fn exercise_registry(root: &Path) {
    let Ok(registry) = Registry::load(&[root.to_path_buf()]) else {
        return;
    };
    for name in registry.eval_names() {
        if let Ok(spec) = registry.get_eval(name) {
            assert_eq!(spec.registry_path, root, "an eval resolves inside its own registry");
            if let Ok((base, split)) = spec.base_and_split() {
                assert!(spec.key.starts_with(&format!("{base}.{split}")));
            }
        }
        let _ = registry.get_completion_fn(name);
        let _ = registry.get_modelgraded_spec(name);
    }
    for name in registry.eval_set_names() {
        if let Ok(specs) = registry.get_eval_set(name) {
            let mut keys: Vec<&str> = specs.iter().map(|s| s.key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), specs.len(), "eval set {name} lists an eval twice");
        }
    }
}

fn check_jsonl(root: &Path, text: &[u8]) {
    let Ok(path) = data::resolve("samples.jsonl", root, None, DataAccess::RegistryOnly) else {
        panic!("the samples file written under data/ does not resolve");
    };
    if let Ok(rows) = data::read_jsonl(&path) {
        // Lines end at \n, \r\n or a lone \r; whitespace-only lines are skipped.
        let text = std::str::from_utf8(text).unwrap_or_else(|_| panic!("read_jsonl accepted invalid UTF-8"));
        let lines = text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()).count();
        assert_eq!(rows.len(), lines, "one row per non-blank line");
    }
}
