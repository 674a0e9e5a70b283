//! ModelBasedClassify against `classify_utils.py`'s parsing rules and prompt assembly.

mod common;

use std::sync::Arc;

use common::{eval_one, report_of, spec, write_tree, Scripted};
use ferrogpt_evals::completion::CompletionFn;
use ferrogpt_evals::templates::modelgraded_api::{choice_score, choice_strings, get_choice, MatchFn, INVALID};
use ferrogpt_evals::Registry;
use serde_json::json;

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn get_choice_follows_upstream() {
    let yn = strs(&["Y", "N"]);
    let m = MatchFn::StartsOrEndsWith;
    assert_eq!(get_choice("Y", "classify", m, &yn), "Y");
    assert_eq!(get_choice("  \"N\".  ", "classify", m, &yn), "N");
    // cot_classify reads the last line first.
    assert_eq!(get_choice("Y is tempting\nreasoning...\nN", "cot_classify", m, &yn), "N");
    assert_eq!(get_choice("Y is tempting\nreasoning...\nN", "classify_cot", m, &yn), "Y");
    // Punctuation-only lines are skipped; choice order decides ties.
    assert_eq!(get_choice("...\nYes, N", "classify", m, &yn), "Y");
    assert_eq!(get_choice("maybe", "classify", m, &yn), INVALID);
    assert_eq!(
        get_choice("This is a dummy response.", "classify", m, &strs(&["A", "B", "C", "D", "E"])),
        INVALID
    );
    assert_eq!(get_choice("xYx", "classify", MatchFn::Include, &strs(&["xYxz"])), "xYxz");
    assert_eq!(get_choice("aY", "classify", MatchFn::EndsWith, &yn), "Y");
    assert_eq!(get_choice("Yes", "classify", MatchFn::Exact, &yn), INVALID);
}

#[test]
fn choice_strings_and_scores() {
    assert_eq!(choice_strings(&json!("YN"), 1).unwrap(), strs(&["Y", "N"]));
    assert_eq!(choice_strings(&json!("from_n"), 3).unwrap(), strs(&["1", "2", "3"]));
    assert_eq!(choice_strings(&json!("from_n_abc"), 2).unwrap(), strs(&["a", "b"]));
    assert_eq!(choice_strings(&json!("from_n_ABC"), 2).unwrap(), strs(&["A", "B"]));
    assert!(choice_strings(&json!(["Y.", "N"]), 1).is_err());
    let yn = strs(&["Y", "N"]);
    let scores = json!({"Y": 1.0, "N": 0.0});
    assert_eq!(choice_score("Y", &yn, Some(&scores)).unwrap(), Some(1.0));
    assert_eq!(choice_score(INVALID, &yn, Some(&scores)).unwrap(), Some(0.0));
    assert_eq!(choice_score("Y", &yn, None).unwrap(), None);
    let likert = strs(&["1", "2", "3"]);
    assert_eq!(choice_score("2", &likert, Some(&json!("from_strings"))).unwrap(), Some(2.0));
}

const CLOSEDQA: &str = r#"closedqa:
  prompt: |-
    Data: {input} / {completion} / {criteria}
  choice_scores:
    "Y": 1.0
    "N": 0.0
  choice_strings: 'YN'
  input_outputs:
    input: "completion"
"#;

#[test]
fn classify_builds_prompts_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("modelgraded/closedqa.yaml", CLOSEDQA), ("data/s.jsonl", "")]);
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let s = spec(
        "evals.elsuite.modelgraded.classify:ModelBasedClassify",
        json!({"samples_jsonl": "s.jsonl", "modelgraded_spec": "closedqa", "eval_type": "cot_classify", "modelgraded_spec_args": {"criteria": "correct?"}}),
        dir.path(),
    );
    // One fn: it answers first (policy), then grades.
    let f = Scripted::new(&["Paris {x}", "The answer names the capital.\nY"]);
    let fns: Vec<Arc<dyn CompletionFn>> = vec![f.clone()];
    let sample = json!({"input": [{"role": "user", "content": "Capital of {France}?"}]});
    let events = eval_one(&reg, &s, &fns, &sample).unwrap();
    let calls = f.calls.lock().unwrap();
    // The policy sees the input with braces intact and PromptFn's parameters.
    assert_eq!(calls[0].0, json!([{"role": "user", "content": "Capital of {France}?"}]));
    assert_eq!(
        calls[0].1,
        *json!({"max_tokens": 1024, "temperature": 0, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0, "n": 1})
            .as_object()
            .unwrap()
    );
    // The grader prompt: a user message, input rendered as text (braces doubled by the
    // scrubbing, as upstream), the completion verbatim, and the cot_classify instructions.
    let grader = calls[1].0[0]["content"].as_str().unwrap();
    assert!(
        grader.starts_with("Data: Capital of {{France}}? / Paris {x} / correct?\n\nFirst, write out"),
        "{grader}"
    );
    assert!(grader.contains("from \"Y\" or \"N\" (without quotes"), "{grader}");
    assert!(grader.ends_with("Reasoning:"), "{grader}");
    let metrics: Vec<_> = events.iter().filter(|(k, _)| k == "metrics").collect();
    assert_eq!(metrics[0].1, json!({"choice": "Y", "score": 1.0}));
    drop(calls);
    let r = report_of(&reg, &s, &fns, &events);
    assert_eq!(r["counts/Y"], json!(1));
    assert_eq!(r["score"], json!(1.0));
    assert!(r.get("accuracy").is_none(), "upstream reports no accuracy for model-graded evals");
}

#[test]
fn precomputed_completions_and_metaeval() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("modelgraded/closedqa.yaml", CLOSEDQA), ("data/s.jsonl", "")]);
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let s = spec(
        "evals.elsuite.modelgraded.classify:ModelBasedClassify",
        json!({"samples_jsonl": "s.jsonl", "modelgraded_spec": "closedqa", "eval_type": "classify", "metaeval": true, "modelgraded_spec_args": {"criteria": "c"}}),
        dir.path(),
    );
    let f = Scripted::new(&["N"]);
    let fns: Vec<Arc<dyn CompletionFn>> = vec![f.clone()];
    let sample = json!({"input": "q", "completion": "given", "choice": "Y"});
    let events = eval_one(&reg, &s, &fns, &sample).unwrap();
    assert_eq!(
        f.calls.lock().unwrap().len(),
        1,
        "no policy call when the sample has the completion"
    );
    let m = &events.iter().find(|(k, _)| k == "metrics").unwrap().1;
    assert_eq!(*m, json!({"choice": "N", "score": 0.0, "metascore": false}));
    // A missing template key is an error naming the keys.
    let s2 = spec(
        "evals.elsuite.modelgraded.classify:ModelBasedClassify",
        json!({"samples_jsonl": "s.jsonl", "modelgraded_spec": "closedqa", "eval_type": "classify"}),
        dir.path(),
    );
    let err = eval_one(&reg, &s2, &fns, &sample).unwrap_err().to_string();
    assert!(err.contains("criteria"), "{err}");
}

#[test]
fn multicomp_from_models_uses_each_policy_then_the_grader() {
    let dir = tempfile::tempdir().unwrap();
    let best = "best:\n  prompt: \"Pick the best of {n}:\\n{completion}\"\n  choice_strings: from_n\n  input_outputs:\n    input: completion\n  output_template: \"{i}. {output}\\n\"\n  eval_type: classify\n";
    write_tree(dir.path(), &[("modelgraded/best.yaml", best), ("data/s.jsonl", "")]);
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let s = spec(
        "evals.elsuite.modelgraded.classify:ModelBasedClassify",
        json!({"samples_jsonl": "s.jsonl", "modelgraded_spec": "best", "multicomp_n": "from_models"}),
        dir.path(),
    );
    let (a, b, g) = (Scripted::new(&["alpha"]), Scripted::new(&["beta"]), Scripted::new(&["2"]));
    let fns: Vec<Arc<dyn CompletionFn>> = vec![a.clone(), b.clone(), g.clone()];
    let events = eval_one(&reg, &s, &fns, &json!({"input": "say hi"})).unwrap();
    assert_eq!(
        g.calls.lock().unwrap()[0].0[0]["content"],
        json!("Pick the best of 2:\n1. alpha\n2. beta")
    );
    let m = &events.iter().find(|(k, _)| k == "metrics").unwrap().1;
    assert_eq!(m["choice"], json!("2"));
}
