//! The built-in registry (`crates/evals/registry`): its generated data must equal what the
//! generators below produce (run with FERROGPT_EVALS_REGEN=1 to rewrite it), and every
//! eval in it must load and run with `dummy`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrogpt_evals::pyrandom::PyRandom;
use ferrogpt_evals::templates::check_arithmetic_program;
use ferrogpt_evals::{run_eval, CompletionFn, Dummy, Registry, RunOptions};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("registry")
}

fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn pick<'a, T>(rng: &mut PyRandom, items: &'a [T]) -> &'a T {
    &items[rng.randbelow(items.len() as u64) as usize]
}

fn arithmetic(rng: &mut PyRandom, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let (a, b) = (rng.randbelow(100) as i64, rng.randbelow(100) as i64);
            let (op, v) = match rng.randbelow(3) {
                0 => ("+", a + b),
                1 => ("-", a - b),
                _ => ("*", a % 13 * (b % 13)),
            };
            let (a, b) = if op == "*" { (a % 13, b % 13) } else { (a, b) };
            json!({"input": [
                {"role": "system", "content": "Answer with the number only."},
                {"role": "user", "content": format!("What is {a} {op} {b}?")}
            ], "ideal": v.to_string()})
        })
        .collect()
}

fn arithmetic_few_shot() -> Vec<Value> {
    [("What is 2 + 3?", "5"), ("What is 10 - 7?", "3"), ("What is 4 * 6?", "24")]
        .iter()
        .map(|(q, a)| {
            json!({"sample": [
                {"role": "system", "name": "example_user", "content": q},
                {"role": "system", "name": "example_assistant", "content": a}
            ]})
        })
        .collect()
}

fn logic(rng: &mut PyRandom, n: usize) -> Vec<Value> {
    const NAMES: [&str; 8] = ["Ana", "Ben", "Chloe", "Dev", "Emil", "Farah", "Gus", "Hana"];
    (0..n)
        .map(|_| {
            let k = 3 + rng.randbelow(2) as usize;
            let mut people: Vec<&str> = NAMES.to_vec();
            rng.shuffle(&mut people);
            people.truncate(k); // tallest first
            let mut facts: Vec<String> = people.windows(2).map(|w| format!("{} is taller than {}.", w[0], w[1])).collect();
            rng.shuffle(&mut facts);
            let tallest = rng.randbelow(2) == 0;
            let (question, answer) = if tallest {
                ("Who is the tallest?", people[0])
            } else {
                ("Who is the shortest?", people[k - 1])
            };
            json!({"input": [
                {"role": "system", "content": "Answer with a name only."},
                {"role": "user", "content": format!("{} {question}", facts.join(" "))}
            ], "ideal": answer})
        })
        .collect()
}

/// A random expression over the numbers whose value is a whole number (the target).
fn make24(rng: &mut PyRandom, n: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    while rows.len() < n {
        let count = 3 + rng.randbelow(2) as usize;
        let numbers: Vec<i64> = (0..count).map(|_| 1 + rng.randbelow(9) as i64).collect();
        let mut expr = numbers[0].to_string();
        for &x in &numbers[1..] {
            let op = *pick(rng, &["+", "-", "*"]);
            expr = if rng.randbelow(2) == 0 {
                format!("({expr}) {op} {x}")
            } else {
                format!("{x} {op} ({expr})")
            };
        }
        let Some(target) = (1..=200).find(|t| check_arithmetic_program(&expr, &numbers, *t)) else {
            continue; // keep positive targets only
        };
        let list = numbers.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        rows.push(json!({
            "input": format!("Write an arithmetic expression that uses each of the numbers {list} exactly once (with +, -, *, / and parentheses) and equals {target}. Answer with the expression only.\nExpression:"),
            "numbers": numbers,
            "target": target,
            "reference": expr,
        }));
    }
    rows
}

fn generated() -> Vec<(&'static str, String)> {
    let mut rng = PyRandom::new(2024);
    vec![
        ("data/arithmetic/samples.jsonl", jsonl(&arithmetic(&mut rng, 200))),
        ("data/arithmetic/few_shot.jsonl", jsonl(&arithmetic_few_shot())),
        ("data/logic-order/samples.jsonl", jsonl(&logic(&mut rng, 100))),
        ("data/make24/samples.jsonl", jsonl(&make24(&mut rng, 50))),
    ]
}

#[test]
fn generated_data_is_up_to_date() {
    let regen = std::env::var_os("FERROGPT_EVALS_REGEN").is_some();
    for (rel, text) in generated() {
        let path = root().join(rel);
        if regen {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == text, "{} is stale: rerun with FERROGPT_EVALS_REGEN=1", path.display());
    }
}

#[test]
fn make24_references_solve_their_problems() {
    for row in make24(&mut PyRandom::new(7), 20) {
        let numbers: Vec<i64> = row["numbers"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert!(check_arithmetic_program(
            row["reference"].as_str().unwrap(),
            &numbers,
            row["target"].as_i64().unwrap()
        ));
    }
}

fn run_all(root: &Path) -> Vec<(String, Value)> {
    let reg = Registry::load(&[root.to_path_buf()]).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let fns: Vec<Arc<dyn CompletionFn>> = vec![Arc::new(Dummy)];
    reg.get_eval_set("ferrogpt-small")
        .unwrap()
        .iter()
        .map(|spec| {
            let opts = RunOptions {
                record_path: Some(logs.path().join(format!("{}.jsonl", spec.key))),
                ..Default::default()
            };
            let out = run_eval(&reg, spec, &fns, &opts).unwrap_or_else(|e| panic!("{}: {e}", spec.key));
            (spec.key.clone(), serde_json::to_value(&out.final_report).unwrap())
        })
        .collect()
}

#[test]
fn every_builtin_eval_runs_with_dummy() {
    let reports = run_all(&root());
    let keys: Vec<&str> = reports.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 10, "{keys:?}");
    for (key, r) in &reports {
        match key.split('.').next().unwrap() {
            "make24" => assert_eq!(r["pass@5"], json!(0.0), "{key}"),
            "bits-per-byte" => {
                // dummy's stand-in scores one nat per byte.
                let bpb = r["bits_per_byte"].as_f64().unwrap();
                assert!((bpb - 1.0 / std::f64::consts::LN_2).abs() < 1e-9, "{bpb}");
            }
            "truthful-mc" | "translated-en" | "translated-fr" | "translated-es" | "translated-de" => {
                // dummy prefers the shortest choice; the report has the MC keys.
                for k in ["accuracy", "acc_norm", "ece", "bootstrap_ci95"] {
                    assert!(r.get(k).is_some(), "{key} lacks {k}: {r}");
                }
            }
            _ => assert_eq!(r["accuracy"], json!(0.0), "{key}: {r}"),
        }
    }
}
