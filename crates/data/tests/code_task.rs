//! The synthetic coding task: determinism, the hold-out split, grading, and robustness of the
//! grader on arbitrary text.

use std::collections::{HashMap, HashSet};

use ferrogpt_data::code_task::{check_completion, code_task_at, heldout_tasks, is_heldout, training_task, CodeTask};
use ferrogpt_data::synthetic::{generator, sample_at};
use ferrogpt_rng::SplitMix64;

fn tasks(seed: u64, n: u64) -> Vec<CodeTask> {
    (0..n).map(|i| code_task_at(seed, i)).collect()
}

#[test]
fn tasks_are_deterministic_and_references_pass_their_tests() {
    let a = tasks(1, 2000);
    assert_eq!(a, tasks(1, 2000));
    assert_ne!(a, tasks(2, 2000));
    let mut families = HashMap::new();
    for t in &a {
        assert!(check_completion(t, &t.reference), "{t:?}");
        assert!(
            check_completion(t, &format!(" {}\nsomething else", t.reference)),
            "text after the newline is ignored"
        );
        assert!(check_completion(t, &format!("return {}", t.reference)));
        assert_eq!((t.examples.len(), t.tests.len()), (4, 6));
        let shown: HashSet<i64> = t.examples.iter().map(|e| e.0).collect();
        assert!(
            t.tests.iter().all(|(x, _)| !shown.contains(x)),
            "hidden tests must differ from the examples"
        );
        for (x, y) in &t.examples {
            assert!(t.prompt.contains(&format!("f({x})={y}")), "{}", t.prompt);
        }
        assert!(t.prompt.starts_with("# f(") && t.prompt.ends_with("\ndef f(x):") && t.model_input().ends_with("\nA:"));
        *families.entry(t.family.clone()).or_insert(0) += 1;
    }
    assert!(families.len() >= 12, "{families:?}");
    assert!(families.values().all(|&n| n > 80), "{families:?}");
    let ids: HashSet<&String> = a.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), a.len());
}

#[test]
fn wrong_and_malformed_completions_fail() {
    for t in tasks(3, 300) {
        // Off by one on every input is never right.
        assert!(!check_completion(&t, &format!("{} + 1", t.reference)), "{t:?}");
        for bad in ["", "   ", "return", "x +", "f(x)", "def f(x):", "\n", "(((", "x // 0"] {
            assert!(!check_completion(&t, bad), "{bad:?} passed {t:?}");
        }
    }
    // The hidden tests matter: a completion matching only the shown examples fails.
    let t = tasks(3, 300).into_iter().find(|t| t.family == "mod").unwrap();
    let lookup: String = t
        .examples
        .iter()
        .fold("0".to_string(), |acc, &(x, y)| format!("{acc} + {y} * (1 - min(abs(x - {x}), 1))"));
    let shown_only = CodeTask {
        tests: vec![],
        ..t.clone()
    };
    assert!(check_completion(&shown_only, &lookup), "{lookup}");
    assert!(
        !check_completion(&t, &lookup),
        "a lookup table of the examples must fail the hidden tests"
    );
}

#[test]
fn about_a_tenth_of_functions_are_held_out_and_training_never_sees_them() {
    let all = tasks(5, 5000);
    let held = all.iter().filter(|t| is_heldout(t)).count();
    assert!((300..700).contains(&held), "{held} of 5000 held out");
    // The split depends on the function's values, not on how it is written or what is shown.
    for t in &all[..500] {
        let rewritten = CodeTask {
            reference: format!("({}) * 1 + x - x", t.reference),
            examples: vec![],
            ..t.clone()
        };
        assert_eq!(is_heldout(&rewritten), is_heldout(t), "{}", t.reference);
    }
    let held: Vec<CodeTask> = heldout_tasks(5, 200);
    assert_eq!(held.len(), 200);
    assert!(held.iter().all(is_heldout));
    assert_eq!(held.iter().map(|t| &t.prompt).collect::<HashSet<_>>().len(), 200);
    assert_eq!(held, heldout_tasks(5, 200));
    let mut per_reference = HashMap::new();
    for t in &held {
        *per_reference.entry(&t.reference).or_insert(0) += 1;
    }
    assert!(per_reference
        .values()
        .all(|&n| n <= ferrogpt_data::code_task::MAX_TASKS_PER_FUNCTION));
    // Beyond the capped pool, functions repeat with other shown examples rather than run dry.
    let many = heldout_tasks(5, 1000);
    assert_eq!(many.len(), 1000);
    assert_eq!(many.iter().map(|t| &t.prompt).collect::<HashSet<_>>().len(), 1000);
    assert_eq!(many[..200], held[..]);
    let families: HashSet<&String> = held.iter().map(|t| &t.family).collect();
    assert!(
        families.len() >= 10,
        "held-out tasks should span the difficulty range: {families:?}"
    );
    let held_refs: HashSet<&String> = held.iter().map(|t| &t.reference).collect();
    let code = generator("code").unwrap();
    for i in 0..3000 {
        let s = sample_at(code, 9, i);
        assert!(!held_refs.contains(&s.answer), "training emitted held-out function {}", s.answer);
    }
    let mut rng = SplitMix64::new(1);
    assert!((0..2000).all(|_| !is_heldout(&training_task(&mut rng))));
}

/// The grader is fed arbitrary bytes, arbitrary strings over the language's alphabet and
/// mutations of real references; it must return without panicking on every one.
#[test]
fn grading_never_panics_on_arbitrary_text() {
    let task = code_task_at(7, 3);
    let mut rng = SplitMix64::new(42);
    let alphabet: Vec<char> = "x0123456789+-*/%(), maxinbsretu \t\n\u{e9}\u{1F600}".chars().collect();
    let mut passed = 0;
    for i in 0..20_000 {
        let len = rng.below(40) as usize;
        let text: String = match i % 3 {
            0 => (0..len).map(|_| *rng.choose(&alphabet)).collect(),
            1 => {
                let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => {
                let mut chars: Vec<char> = task.reference.chars().collect();
                let at = rng.below(chars.len() as u64 + 1) as usize;
                chars.insert(at, *rng.choose(&alphabet));
                chars.into_iter().collect()
            }
        };
        passed += check_completion(&task, &text) as usize;
    }
    assert!(passed < 20_000);
    let huge = "9".repeat(100) + " * x";
    assert!(!check_completion(&task, &huge));
    assert!(!check_completion(&task, &"(".repeat(100_000)));
}
