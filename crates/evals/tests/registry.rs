//! Registry loading as openai/evals does it.

mod common;

use common::write_tree;
use ferrogpt_evals::{EvalError, Registry};

const BASIC: &str = r#"
test-match:
  id: test-match.s1.simple-v0
  description: Example
  metrics: [accuracy]
test-match.s1.simple-v0:
  class: evals.elsuite.basic.match:Match
  args:
    samples_jsonl: test_match/samples.jsonl
short-alias: test-match
"#;

#[test]
fn follows_aliases_and_keeps_base_metadata() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("evals/basic.yaml", BASIC), ("evals/ignored.yml", "x:\n  class: y\n")],
    );
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let spec = reg.get_eval("test-match").unwrap();
    assert_eq!(spec.key, "test-match.s1.simple-v0");
    assert_eq!(spec.cls, "evals.elsuite.basic.match:Match");
    assert_eq!(spec.args["samples_jsonl"], "test_match/samples.jsonl");
    assert_eq!(spec.metrics, vec!["accuracy".to_string()]);
    assert_eq!(spec.group, "basic");
    assert_eq!(spec.base_and_split().unwrap(), ("test-match".into(), "s1".into()));
    assert_eq!(reg.get_eval("short-alias").unwrap().key, "test-match.s1.simple-v0");
    // Only top-level *.yaml files are read.
    assert!(matches!(reg.get_eval("x"), Err(EvalError::NotFound { .. })));
}

#[test]
fn unknown_names_suggest_close_matches() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("evals/basic.yaml", BASIC)]);
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let err = reg.get_eval("test-mach").unwrap_err().to_string();
    assert!(err.contains("test-match"), "{err}");
}

#[test]
fn duplicates_across_roots_are_errors() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_tree(a.path(), &[("evals/basic.yaml", BASIC)]);
    write_tree(b.path(), &[("evals/other.yaml", "test-match:\n  id: x.y\n")]);
    let err = Registry::load(&[a.path().to_path_buf(), b.path().to_path_buf()]).unwrap_err();
    assert!(
        matches!(err, EvalError::Duplicate { ref name, .. } if name == "test-match"),
        "{err}"
    );
}

#[test]
fn reserved_keywords_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("evals/bad.yaml", "e.s.v:\n  class: a:B\n  group: nope\n")]);
    let err = Registry::load(&[dir.path().to_path_buf()]).unwrap_err().to_string();
    assert!(err.contains("`group` is a reserved keyword"), "{err}");
}

#[test]
fn eval_sets_expand_star_patterns_in_registry_order() {
    let dir = tempfile::tempdir().unwrap();
    let evals = "\
mmlu-a:\n  id: mmlu-a.val.v0\nmmlu-a.val.v0:\n  class: evals.elsuite.basic.match:Match\n\
mmlu-b:\n  id: mmlu-b.val.v0\nmmlu-b.val.v0:\n  class: evals.elsuite.basic.match:Match\n\
other:\n  id: other.dev.v0\nother.dev.v0:\n  class: evals.elsuite.basic.match:Match\n";
    write_tree(
        dir.path(),
        &[
            ("evals/e.yaml", evals),
            ("eval_sets/s.yaml", "mmlu:\n  evals:\n    - mmlu-*\n    - other\n"),
        ],
    );
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let keys: Vec<String> = reg.get_eval_set("mmlu").unwrap().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["mmlu-a.val.v0", "mmlu-b.val.v0", "other.dev.v0"]);
}

#[test]
fn resource_kind_may_be_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("evals", BASIC)]);
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    assert!(reg.get_eval("test-match").is_ok());
}

#[test]
fn custom_classes_and_lfs_pointers_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("evals/e.yaml", "c.dev.v0:\n  class: evals.elsuite.mmmu.eval:MMMU\nl.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: l.jsonl\n"),
            ("data/l.jsonl", "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"),
        ],
    );
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let opts = ferrogpt_evals::RunOptions {
        record_path: Some(dir.path().join("log.jsonl")),
        ..Default::default()
    };
    let fns: Vec<std::sync::Arc<dyn ferrogpt_evals::CompletionFn>> = vec![std::sync::Arc::new(ferrogpt_evals::Dummy)];
    let err = ferrogpt_evals::run_eval(&reg, &reg.get_eval("c.dev.v0").unwrap(), &fns, &opts).unwrap_err();
    assert_eq!(
        err.to_string().split(" (").next().unwrap(),
        "custom Python eval class evals.elsuite.mmmu.eval:MMMU is not supported"
    );
    let err = ferrogpt_evals::run_eval(&reg, &reg.get_eval("l.dev.v0").unwrap(), &fns, &opts).unwrap_err();
    assert!(err.to_string().contains("git lfs pull"), "{err}");
}

#[test]
fn modelgraded_specs_load() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("modelgraded/fact.yaml", "fact:\n  prompt: \"Q {input} A {completion}\"\n  choice_strings: ABC\n  input_outputs:\n    input: completion\n  choice_scores:\n    \"A\": 1.0\n")],
    );
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let mg = reg.get_modelgraded_spec("fact").unwrap();
    assert_eq!(mg.input_outputs, vec![("input".to_string(), "completion".to_string())]);
    assert_eq!(mg.choice_strings, "ABC");
    assert!(reg.get_modelgraded_spec("nope").is_err());
}
