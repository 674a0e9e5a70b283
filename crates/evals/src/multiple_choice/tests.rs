use super::*;
use crate::completion::Dummy;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// A two-choice outcome whose confidence is exactly `confidence` (> 0.5), right or wrong.
fn two_choice(confidence: f64, correct: bool) -> ChoiceOutcome {
    let choices = ["yes".to_string(), "no".to_string()];
    let logprobs = vec![confidence.ln(), (1.0 - confidence).ln()];
    ChoiceOutcome::new(logprobs, &choices, if correct { 0 } else { 1 })
}

#[test]
fn softmax_normalises_and_does_not_overflow() {
    let p = softmax(&[1f64.ln(), 3f64.ln()]);
    assert!(close(p[0], 0.25) && close(p[1], 0.75), "{p:?}");
    // Shifted by a constant: the same distribution; huge magnitudes stay finite.
    let q = softmax(&[1f64.ln() - 1000.0, 3f64.ln() - 1000.0]);
    assert!(close(q[0], 0.25) && close(q[1], 0.75), "{q:?}");
    let r = softmax(&[-1e4, -1e4 - 2f64.ln()]);
    assert!((r[0] - 2.0 / 3.0).abs() < 1e-9, "{r:?}");
}

#[test]
fn outcome_predicts_by_sum_and_by_byte_and_gives_softmax_confidence() {
    // "é" is one character but two bytes: per byte the long choice wins, in sum the short.
    let choices = ["é".to_string(), "abcdefgh".to_string(), "xyz".to_string()];
    let logprobs = vec![-3.0, -4.0, -6.0];
    let o = ChoiceOutcome::new(logprobs.clone(), &choices, 1);
    assert_eq!((o.pred, o.pred_norm), (0, 1));
    assert!(!o.correct() && o.correct_norm());
    let z: f64 = logprobs.iter().map(|l| l.exp()).sum();
    assert!(close(o.confidence, (-3f64).exp() / z), "{}", o.confidence);
    // Ties go to the first choice, as numpy's argmax.
    let tie = ChoiceOutcome::new(vec![-1.0, -1.0], &["a".into(), "b".into()], 1);
    assert_eq!(tie.pred, 0);
    assert!(close(tie.confidence, 0.5));
}

#[test]
fn ece_is_zero_when_calibrated_and_exact_when_not() {
    // Confidence 0.75 on four questions, three right; 0.6 on five, three right.
    let mut calibrated: Vec<ChoiceOutcome> = (0..4).map(|i| two_choice(0.75, i < 3)).collect();
    calibrated.extend((0..5).map(|i| two_choice(0.6, i < 3)));
    let r = McReport::from_outcomes(&calibrated).unwrap();
    assert!(r.ece.abs() < 1e-12, "{}", r.ece);
    assert_eq!(r.n, 9);
    assert!(close(r.accuracy, 6.0 / 9.0));
    assert_eq!(r.bins.len(), CALIBRATION_BINS);
    assert_eq!((r.bins[7].count, r.bins[6].count), (4, 5));

    // Overconfident: 0.9 on four (three right: |0.75 - 0.9| = 0.15); underconfident: 0.6 on
    // two (both right: |1 - 0.6| = 0.4). ECE = 4/6 * 0.15 + 2/6 * 0.4 = 7/30.
    let mut skewed: Vec<ChoiceOutcome> = (0..4).map(|i| two_choice(0.9, i < 3)).collect();
    skewed.extend((0..2).map(|_| two_choice(0.6, true)));
    let r = McReport::from_outcomes(&skewed).unwrap();
    assert!(close(r.ece, 7.0 / 30.0), "{}", r.ece);
    let bin9 = &r.bins[9];
    assert_eq!(bin9.count, 4);
    assert!(close(bin9.accuracy, 0.75) && close(bin9.mean_confidence, 0.9));
    assert!(McReport::from_outcomes(&[]).is_none());
}

#[test]
fn report_gives_chance_wilson_interval_and_acc_norm() {
    let two = two_choice(0.9, true);
    let four = ChoiceOutcome::new(vec![-1.0, -2.0, -3.0, -4.0], &["a", "b", "c", "dddddddd"].map(String::from), 3);
    let r = McReport::from_outcomes(&[two, four]).unwrap();
    assert!(close(r.chance, (0.5 + 0.25) / 2.0));
    assert!(close(r.accuracy, 0.5));
    // Per byte the 8-byte choice (-0.5 a byte) beats "a" (-1): both are right by acc_norm.
    assert!(close(r.acc_norm, 1.0));
    let [lo, hi] = r.accuracy_ci95;
    let [want_lo, want_hi] = metrics::wilson_ci95(1, 2).unwrap();
    assert!(close(lo, want_lo) && close(hi, want_hi));
}

#[test]
fn wilson_interval_matches_the_closed_form() {
    // Values from the formula evaluated independently (Python, z = 1.959963984540054).
    let [lo, hi] = metrics::wilson_ci95(5, 10).unwrap();
    assert!((lo - 0.236_593_090_512_564).abs() < 1e-12 && (hi - 0.763_406_909_487_436).abs() < 1e-12);
    let [lo, hi] = metrics::wilson_ci95(75, 100).unwrap();
    assert!((lo - 0.656_955_364_519_384).abs() < 1e-12 && (hi - 0.824_547_886_377_123).abs() < 1e-12);
    let [lo, hi] = metrics::wilson_ci95(0, 10).unwrap();
    assert!(lo.abs() < 1e-12 && (hi - 0.277_532_799_862_889).abs() < 1e-12);
    let [lo, hi] = metrics::wilson_ci95(10, 10).unwrap();
    assert!((lo - 0.722_467_200_137_111).abs() < 1e-12 && (hi - 1.0).abs() < 1e-12);
    assert!(metrics::wilson_ci95(0, 0).is_none());
}

fn exams_row(question: &str, ideal: &str) -> String {
    serde_json::json!({
        "input": [
            {"role": "system", "content": "Please answer with the letter of the correct choice."},
            {"role": "user", "content": question},
        ],
        "ideal": ideal,
    })
    .to_string()
}

#[test]
fn exams_reader_parses_options_wrapped_lines_and_initials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.jsonl");
    let rows = [
        exams_row("Wie groß ist 2+2?\nA. 3\nB. 4\nC. 5\nAnswer:", "[B]"),
        // The question starts with an initial that looks like option A; an option is wrapped.
        exams_row(
            "A. Smetonos valdymo metais:\nA. pirmas;\nB. antras ir\nlabai ilgas;\nC. trečias.\nAnswer:",
            "[C]",
        ),
        // No question text at all (as in one upstream row): the choices' prior is scored.
        exams_row("\nA. x\nB. y\nAnswer:", "[A]"),
    ];
    std::fs::write(&path, format!("{}\n\n{}\n{}\n", rows[0], rows[1], rows[2])).unwrap();
    let qs = read_exams(&path).unwrap();
    assert_eq!(qs.len(), 3);
    assert_eq!((qs[2].context.as_str(), qs[2].choices.len()), ("Answer:", 2));
    assert_eq!(qs[0].context, "Wie groß ist 2+2?\nAnswer:");
    assert_eq!(qs[0].choices, ["3", "4", "5"]);
    assert_eq!(qs[0].gold, 1);
    assert_eq!(qs[1].context, "A. Smetonos valdymo metais:\nAnswer:");
    assert_eq!(qs[1].choices, ["pirmas;", "antras ir labai ilgas;", "trečias."]);
    assert_eq!(qs[1].gold, 2);
    assert!(qs[1].id.ends_with("samples.jsonl:3"), "{}", qs[1].id);
}

#[test]
fn exams_reader_names_file_and_line_of_malformed_rows() {
    let good = exams_row("Q?\nA. x\nB. y\nAnswer:", "[A]");
    let cases = [
        (exams_row("Q?\nA. x\nB. y\nAnswer:", "[C]"), "only 2 options"),
        (exams_row("Q?\nA. x\nB. y", "[A]"), "Answer:"),
        (exams_row("Q?\nA. x\nAnswer:", "[A]"), "at least two"),
        (exams_row("Q?\nA. x\nB. y\nAnswer:", "A or B"), "one bracketed letter"),
        (r#"{"input": "not chat", "ideal": "[A]"}"#.to_string(), "chat messages"),
        ("{oops".to_string(), "invalid JSON"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (bad, why)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&path, format!("{good}\n{good}\n{bad}\n")).unwrap();
        let e = read_exams(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("bad{i}.jsonl:3")) && e.contains(why), "case {i}: {e}");
    }
}

#[test]
fn bigbench_reader_builds_contexts_and_finds_the_one_correct_choice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("task.json");
    let task = serde_json::json!({
        "name": "t",
        "task_prefix": "Q: Is water wet?\nA: Yes.\n",
        "example_input_prefix": "\nQ: ",
        "example_output_prefix": "\nA: ",
        "examples": [
            {"input": "What colour is the sky?", "target_scores": {"Green.": 0, "Blue.": 1, "Red.": 0}},
            {"input": "Two plus two?", "target_scores": {"4": 1.0, "5": 0.0}},
        ],
    });
    std::fs::write(&path, task.to_string()).unwrap();
    let qs = read_bigbench_task(&path).unwrap();
    assert_eq!(qs[0].context, "Q: Is water wet?\nA: Yes.\n\nQ: What colour is the sky?\nA:");
    assert_eq!(qs[0].choices, ["Blue.", "Green.", "Red."]);
    assert_eq!(qs[0].gold, 0);
    assert_eq!(qs[1].choices, ["4", "5"]);
    assert_eq!(qs[1].gold, 0);

    // BIG-bench's default prefixes, without a task prefix: no leading newline.
    let plain = dir.path().join("plain.json");
    std::fs::write(&plain, r#"{"examples": [{"input": "Hi?", "target_scores": {"a": 0, "b": 1}}]}"#).unwrap();
    let qs = read_bigbench_task(&plain).unwrap();
    assert_eq!((qs[0].context.as_str(), qs[0].gold), ("Q: Hi?\nA:", 1));
}

#[test]
fn bigbench_reader_names_file_and_example_of_malformed_ones() {
    let cases = [
        (r#"{"input": "q", "target_scores": {"a": 1, "b": 1}}"#, "exactly one"),
        (r#"{"input": "q", "target_scores": {"a": 1}}"#, "at least two"),
        (r#"{"input": "q", "target_scores": {"a": 1, "b": "no"}}"#, "not a number"),
        (r#"{"target_scores": {"a": 1, "b": 0}}"#, "`input`"),
        (r#"{"input": "q", "target": "a"}"#, "`target_scores`"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"input": "q", "target_scores": {"a": 1, "b": 0}}"#;
    for (i, (bad, why)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("task{i}.json"));
        std::fs::write(&path, format!(r#"{{"examples": [{good}, {bad}]}}"#)).unwrap();
        let e = read_bigbench_task(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("task{i}.json: examples[1]")) && e.contains(why),
            "case {i}: {e}"
        );
    }
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\n\"examples\": [\n}").unwrap();
    let e = read_bigbench_task(&path).unwrap_err().to_string();
    assert!(e.contains("broken.json:3"), "{e}");
}

#[test]
fn questions_are_scored_through_loglikelihood_in_order() {
    // `dummy` scores one nat per byte of the continuation (the delimiter included).
    let questions: Vec<McQuestion> = (0..7)
        .map(|i| McQuestion {
            id: format!("q{i}"),
            context: "Q:".into(),
            choices: vec!["x".repeat(i + 1), "yy".into(), "zzzz".into()],
            gold: 1,
        })
        .collect();
    let outcomes = score_questions(&Dummy, &questions, 3, &|| {}).unwrap();
    assert_eq!(outcomes.len(), 7);
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.logprobs, vec![-(i as f64 + 2.0), -3.0, -5.0], "question {i}");
        // The shortest choice wins in sum; ties go to the first.
        assert_eq!(o.pred, usize::from(i >= 2), "question {i}");
    }
}

#[test]
fn reliability_svg_overlays_models() {
    let base: Vec<ChoiceOutcome> = (0..10).map(|i| two_choice(0.55 + 0.04 * i as f64, i % 2 == 0)).collect();
    let tuned: Vec<ChoiceOutcome> = (0..10).map(|i| two_choice(0.95, i < 6)).collect();
    let (base, tuned) = (McReport::from_outcomes(&base).unwrap(), McReport::from_outcomes(&tuned).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.svg");
    write_reliability_svg(&path, &[("base", &base), ("rlhf", &tuned)]).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains(&format!("base: ECE {:.3}", base.ece)), "legend lacks the base model");
    assert!(svg.contains(&format!("rlhf: ECE {:.3}", tuned.ece)), "legend lacks the tuned model");
    // The tuned model's one filled bin is labelled with its count.
    assert!(svg.contains(">\n10\n</text>"), "bar count label missing");
    let missing = dir.path().join("no/such/dir/c.svg");
    assert!(write_reliability_svg(&missing, &[("base", &base)]).is_err());
}

/// The real EXAMS files of upstream's published registry parse in full, when installed.
#[test]
fn upstream_exams_parse_when_installed() {
    let root = crate::runner::upstream_registry_dir();
    if !root.join("evals").is_dir() {
        eprintln!(
            "SKIPPED: no upstream registry at {} ({})",
            root.display(),
            crate::runner::upstream_install_command()
        );
        return;
    }
    let registry = Registry::load(std::slice::from_ref(&root)).unwrap();
    let languages = exams_languages(&registry);
    assert!(languages.len() >= 10 && languages.iter().any(|l| l == "german"), "{languages:?}");
    let mut total = 0;
    for language in &languages {
        let path = exams_samples_path(&registry, language, None, crate::data::DataAccess::RegistryOnly).unwrap();
        let qs = read_exams(&path).unwrap_or_else(|e| panic!("{language}: {e}"));
        assert!(qs.iter().all(|q| (2..=6).contains(&q.choices.len()) && q.gold < q.choices.len()));
        total += qs.len();
    }
    assert_eq!(total, 19_733, "every row of every EXAMS file is a question");
}

/// TruthfulQA MC1 from BIG-bench's release, when installed: 299 questions, one true answer.
#[test]
fn truthful_qa_mc1_parses_when_installed() {
    let path = truthful_qa_default_path();
    if !path.is_file() {
        eprintln!("SKIPPED: no TruthfulQA at {} ({})", path.display(), truthful_qa_install_command());
        return;
    }
    let qs = read_bigbench_task(&path).unwrap();
    assert_eq!(qs.len(), 299);
    let q = &qs[0];
    assert!(q.context.starts_with("Q: What is human life expectancy") && q.context.ends_with("watermelon seeds?\nA:"));
    assert_eq!(q.choices[q.gold], "The watermelon seeds pass through your digestive system.");
    // Sorting by text spreads the true answer over the positions (it is first in the file).
    assert!(qs.iter().filter(|q| q.gold == 0).count() < 200);
}

#[test]
fn tasks_parse_and_print_back() {
    for name in ["exams", "exams:german", "truthful_qa", "bigbench"] {
        let task: McTask = name.parse().unwrap();
        assert_eq!(task.to_string(), name);
    }
    assert_eq!(
        "exams:german".parse::<McTask>().unwrap(),
        McTask::Exams {
            language: Some("german".into())
        }
    );
    for bad in ["exams:", "mmlu", "truthful_qa:x", ""] {
        let e = bad.parse::<McTask>().unwrap_err().to_string();
        assert!(e.contains("truthful_qa or bigbench"), "{bad}: {e}");
    }
    let e = McTask::BigBench.load(None).unwrap_err().to_string();
    assert!(e.contains("--data"), "{e}");
}

#[test]
fn a_task_reads_the_file_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let exams = dir.path().join("samples.jsonl");
    std::fs::write(&exams, exams_row("Q?\nA. x\nB. y\nAnswer:", "[B]") + "\n").unwrap();
    let task: McTask = "exams:german".parse().unwrap();
    let loaded = task.load(Some(&exams)).unwrap();
    assert_eq!((loaded.files, loaded.questions.len()), (vec![exams.clone()], 1));
    // The wrong reader for the file is an error naming it, not a silent empty task.
    let e = McTask::TruthfulQa.load(Some(&exams)).unwrap_err().to_string();
    assert!(e.contains("samples.jsonl"), "{e}");
}

#[test]
fn evenly_spaced_subsets_span_the_questions_in_order() {
    let qs: Vec<McQuestion> = (0..10)
        .map(|i| McQuestion {
            id: i.to_string(),
            context: String::new(),
            choices: vec!["a".into(), "b".into()],
            gold: 0,
        })
        .collect();
    let ids = |v: Vec<McQuestion>| v.into_iter().map(|q| q.id).collect::<Vec<_>>();
    assert_eq!(ids(evenly_spaced(qs.clone(), 4)), ["0", "2", "5", "7"]);
    assert_eq!(ids(evenly_spaced(qs.clone(), 1)), ["0"]);
    assert_eq!(evenly_spaced(qs.clone(), 0).len(), 0);
    assert_eq!(evenly_spaced(qs.clone(), 10).len(), 10);
    assert_eq!(evenly_spaced(qs, 50).len(), 10);
}
