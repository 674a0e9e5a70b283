//! Conformance with openai/evals' own template tests (`evals/elsuite/basic/*_test.py`,
//! `modelgraded/classify_utils.py`): the same vectors, the same recorded events.

mod common;

use std::sync::Arc;

use common::{eval_one, report_of, spec, write_tree, Scripted};
use ferrogpt_evals::completion::CompletionFn;
use ferrogpt_evals::Registry;
use serde_json::{json, Value};

const MATCH: &str = "evals.elsuite.basic.match:Match";
const INCLUDES: &str = "evals.elsuite.basic.includes:Includes";
const FUZZY: &str = "evals.elsuite.basic.fuzzy_match:FuzzyMatch";
const JSON: &str = "evals.elsuite.basic.json_match:JsonMatch";

fn setup() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("data/s.jsonl", "")]);
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    (dir, reg)
}

fn run(cls: &str, args: Value, completion: &str, sample: Value) -> ferrogpt_evals::Result<Vec<(String, Value)>> {
    let (dir, reg) = setup();
    let mut a = args;
    a["samples_jsonl"] = json!("s.jsonl");
    let s = spec(cls, a, dir.path());
    let f: Arc<dyn CompletionFn> = Scripted::new(&[completion]);
    eval_one(&reg, &s, &[f], &sample)
}

fn only(events: &[(String, Value)], kind: &str) -> Value {
    let found: Vec<&Value> = events.iter().filter(|(k, _)| k == kind).map(|(_, d)| d).collect();
    assert_eq!(found.len(), 1, "expected one {kind} event in {events:?}");
    found[0].clone()
}

#[test]
fn match_records_like_upstream() {
    // match_test.py: ideal "world" is logged as expected=["world"] collapsed to "world".
    let ev = run(MATCH, json!({}), "world", json!({"input": "Hello", "ideal": "world"})).unwrap();
    assert_eq!(
        only(&ev, "match"),
        json!({"correct": true, "expected": "world", "picked": "world", "sampled": "world", "options": ["world"]})
    );
    let ev = run(MATCH, json!({}), "world", json!({"input": "Hello", "ideal": ["world"]})).unwrap();
    assert_eq!(only(&ev, "match")["correct"], json!(true));
    // No normalisation: leading whitespace or case changes fail.
    for sampled in [" world", "World"] {
        let ev = run(MATCH, json!({}), sampled, json!({"input": "Hello", "ideal": "world"})).unwrap();
        assert_eq!(only(&ev, "match")["picked"], Value::Null);
        assert_eq!(only(&ev, "match")["correct"], json!(false));
    }
    // Prefix semantics and first-option-wins.
    let ev = run(
        MATCH,
        json!({}),
        "George Washington!",
        json!({"input": "x", "ideal": ["Wash", "George", "George W"]}),
    )
    .unwrap();
    assert_eq!(only(&ev, "match")["picked"], json!("George"));
}

#[test]
fn templates_reject_malformed_samples() {
    // *_test.py `test_eval_sample_raises`: None, "", missing input, missing ideal.
    for cls in [MATCH, INCLUDES, FUZZY, JSON] {
        for sample in [Value::Null, json!(""), json!({"ideal": "world"}), json!({"input": "world"})] {
            assert!(run(cls, json!({}), "x", sample.clone()).is_err(), "{cls} accepted {sample}");
        }
    }
    assert!(run(MATCH, json!({}), "x", json!({"input": "a", "ideal": 3})).is_err());
}

#[test]
fn includes_vectors() {
    let cases = [
        ("world", json!("world"), true, false),
        ("world", json!("wOrLd"), true, true),
        ("world", json!(["world"]), true, false),
        ("world", json!(["foo", "bar"]), false, false),
        ("world", json!(["worldfoo", "worldbar"]), false, false),
        ("hello world", json!(""), true, false),
    ];
    for (completion, ideal, expected, ignore_case) in cases {
        let ev = run(
            INCLUDES,
            json!({"ignore_case": ignore_case}),
            completion,
            json!({"input": "Hello", "ideal": ideal.clone()}),
        )
        .unwrap();
        let m = only(&ev, "match");
        assert_eq!(m["correct"], json!(expected), "{completion} vs {ideal}");
        assert_eq!(m["picked"], json!(completion));
        assert_eq!(m["sampled"], json!(completion));
        let logged = match &ideal {
            Value::Array(a) if a.len() == 1 => a[0].clone(),
            other => other.clone(),
        };
        assert_eq!(m["expected"], logged);
    }
}

#[test]
fn fuzzy_match_vectors() {
    let cases = [
        ("world", json!("world"), 1.0, 1.0),
        ("world", json!("foo"), 0.0, 0.0),
        ("world", json!(["some foo world", "dummy"]), 1.0, 0.5),
        ("The answer is: Paris.", json!("paris"), 1.0, 0.5),
        ("", json!(""), 1.0, 0.0),
        ("a", json!("the"), 1.0, 0.0),
    ];
    for (completion, ideal, acc, f1) in cases {
        let ev = run(FUZZY, json!({}), completion, json!({"input": "Hello", "ideal": ideal.clone()})).unwrap();
        let m = only(&ev, "metrics");
        assert_eq!(m, json!({"accuracy": acc, "f1_score": f1}), "{completion} vs {ideal}");
    }
}

#[test]
fn fuzzy_match_sends_upstream_parameters() {
    let (dir, reg) = setup();
    let s = spec(FUZZY, json!({"samples_jsonl": "s.jsonl", "max_tokens": 7}), dir.path());
    let f = Scripted::new(&["x"]);
    let fns: Vec<Arc<dyn CompletionFn>> = vec![f.clone()];
    eval_one(&reg, &s, &fns, &json!({"input": "Hi", "ideal": "x"})).unwrap();
    let calls = f.calls.lock().unwrap();
    assert_eq!(calls[0].1, *json!({"temperature": 0.0, "max_tokens": 7}).as_object().unwrap());
}

#[test]
fn json_match_vectors() {
    let cases: Vec<(&str, Value, f64)> = vec![
        (r#"{ "key": "value" }"#, json!(r#"{ "key": "value" }"#), 1.0),
        ("{\n   \"key\":\"value\"\n   }\n", json!(r#"{ "key": "value" }"#), 1.0),
        (
            r#"{ "key2": "foo", "key1": "bar" }"#,
            json!(r#"{ "key1": "bar", "key2": "foo" }"#),
            1.0,
        ),
        (r#"{ "key": "value" }"#, json!(r#"{ "key": "notvalue" }"#), 0.0),
        (r#"{ "key": 100 }"#, json!(r#"{ "key": 100 }"#), 1.0),
        (r#"{ "key": 100 }"#, json!(r#"{ "key": 100.1 }"#), 0.0),
        (r#"{ "key": 100 }"#, json!([r#"{ "key": 100.1 }"#, r#"{ "key": 100 }"#]), 1.0),
        (r#"{ "key": 100 }"#, json!([r#"{ "key": 100.1 }"#, r#"{ "key": 99.9 }"#]), 0.0),
        (r#"{ "key": "value" }"#, json!(r#"{ "anotherkey": "value" }"#), 0.0),
        (r#"{ "key": "value" }"#, json!(r#"{ "key": "value", "anotherkey": "value" }"#), 0.0),
        (r#"{ "key": "value", "anotherkey": "value" }"#, json!(r#"{ "key": "value" }"#), 0.0),
        (r#"{ "key": [1.0,2.0,3.0] }"#, json!(r#"{ "key": [1, 2, 3] }"#), 1.0),
        (r#"{ "key": [1, 2, 3] }"#, json!(r#"{ "key": [1, 2, 3, 3] }"#), 0.0),
        (r#"{ "key": [1, 2, 3] }"#, json!(r#"{ "key": [1, 3, 2] }"#), 0.0),
        (r#"{ "key": [] }"#, json!(r#"{ "key": [1] }"#), 0.0),
        (r#"{ "key": "value }"#, json!(r#"{ "key": "value" }"#), 0.0),
        // Beyond the upstream file, from the same code: null never matches, True == 1.
        (r#"{ "key": null }"#, json!(r#"{ "key": null }"#), 0.0),
        (r#"{ "key": true }"#, json!(r#"{ "key": 1 }"#), 1.0),
    ];
    for (completion, ideal, acc) in cases {
        let ev = run(JSON, json!({}), completion, json!({"input": completion, "ideal": ideal.clone()})).unwrap();
        assert_eq!(only(&ev, "metrics"), json!({"accuracy": acc}), "{completion} vs {ideal}");
    }
    assert!(run(JSON, json!({}), "{}", json!({"input": "x", "ideal": "{not json"})).is_err());
}

#[test]
fn few_shot_goes_before_the_last_message() {
    let dir = tempfile::tempdir().unwrap();
    let shot = |q: &str, a: &str| {
        json!({"sample": [{"role": "system", "name": "example_user", "content": q}, {"role": "system", "name": "example_assistant", "content": a}]}).to_string()
    };
    write_tree(
        dir.path(),
        &[
            ("data/s.jsonl", ""),
            (
                "data/fs.jsonl",
                &format!("{}\n{}\n{}\n", shot("1+1", "2"), shot("2+2", "4"), shot("3+3", "6")),
            ),
        ],
    );
    let reg = Registry::load(&[dir.path().to_path_buf()]).unwrap();
    let s = spec(
        MATCH,
        json!({"samples_jsonl": "s.jsonl", "few_shot_jsonl": "fs.jsonl", "num_few_shot": 2}),
        dir.path(),
    );
    let f = Scripted::new(&["8"]);
    let fns: Vec<Arc<dyn CompletionFn>> = vec![f.clone()];
    let sample = json!({"input": [{"role": "system", "content": "Add."}, {"role": "user", "content": "4+4"}], "ideal": "8"});
    let ev = eval_one(&reg, &s, &fns, &sample).unwrap();
    assert_eq!(only(&ev, "match")["correct"], json!(true));
    let sent = &f.calls.lock().unwrap()[0].0;
    let contents: Vec<&str> = sent.as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["Add.", "1+1", "2", "2+2", "4", "4+4"]);
    assert!(
        eval_one(&reg, &s, &fns, &json!({"input": "plain", "ideal": "8"})).is_err(),
        "few-shot needs chat input"
    );
}

#[test]
fn reports_use_upstream_keys() {
    let (dir, reg) = setup();
    let f: Arc<dyn CompletionFn> = Scripted::new(&["x"]);
    let fns = [f];
    let m = spec(MATCH, json!({"samples_jsonl": "s.jsonl"}), dir.path());
    let events = vec![
        ("match".to_string(), json!({"correct": true})),
        ("match".to_string(), json!({"correct": false})),
    ];
    let r = report_of(&reg, &m, &fns, &events);
    assert_eq!(r["accuracy"], json!(0.5));
    assert!(r["boostrap_std"].is_number());
    assert_eq!(r["bootstrap_ci95"].as_array().unwrap().len(), 2);
    let fz = spec(FUZZY, json!({"samples_jsonl": "s.jsonl"}), dir.path());
    let events = vec![("metrics".to_string(), json!({"accuracy": 1.0, "f1_score": 0.5}))];
    let r = report_of(&reg, &fz, &fns, &events);
    assert_eq!((r["accuracy"].clone(), r["f1_score"].clone()), (json!(1.0), json!(0.5)));
}
