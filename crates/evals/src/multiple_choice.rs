//! Multiple-choice evals scored by log-likelihood, lm-evaluation-harness style, with
//! calibration: the readers of the datasets (EXAMS from the openai/evals registry, BIG-bench
//! JSON multiple-choice tasks such as TruthfulQA MC1), the scoring of one question through a
//! [`CompletionFn`]'s `loglikelihood`, the aggregate [`McReport`] (accuracy with a Wilson
//! interval, `acc_norm`, the chance baseline, expected calibration error) and an SVG
//! reliability diagram overlaying several models, like the GPT-4 report's calibration figure.
//!
//! Each choice is scored as the continuation `" " + choice` of the question's context: the
//! leading space belongs to the continuation because BPE tokens carry their leading space.
//! The prediction is the choice with the highest summed log-probability (`acc`), or the
//! highest log-probability per UTF-8 byte of the choice (`acc_norm`); ties go to the first
//! choice, as numpy's argmax does. The confidence is the softmax over the choices' summed
//! log-probabilities, taken at the predicted choice.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::completion::CompletionFn;
use crate::error::{EvalError, Result};
use crate::metrics::{self, CalibrationBin};
use crate::registry::Registry;

/// Text between the context and each scored choice.
pub const CHOICE_DELIMITER: &str = " ";
/// Equal-width confidence bins of the calibration error and the reliability diagram.
pub const CALIBRATION_BINS: usize = 10;

/// One multiple-choice question, ready to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McQuestion {
    /// Where it came from: `file:line` or `file#index`.
    pub id: String,
    /// The text every choice continues.
    pub context: String,
    pub choices: Vec<String>,
    /// The index of the correct choice.
    pub gold: usize,
}

fn bad_line(path: &Path, line: usize, message: impl Into<String>) -> EvalError {
    EvalError::BadSampleLine {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// The EXAMS samples of the openai/evals registry (`*-exams-qa/samples.jsonl`): a chat
/// `input` whose last message is the question, its options as lines `A. ...`, `B. ...` and a
/// final `Answer:`, and `ideal` the correct letter in brackets (`[C]`).
///
/// The system message (which asks for reasoning, then a bracketed letter) is dropped: the
/// choices are scored as continuations of `question + "\nAnswer:"`, not generated. The
/// options are the lines from the last line starting `A. ` on (the question itself may start
/// with an initial such as `A. Smetonos ...`); a line that does not start with the next
/// letter continues the option before it (some options are wrapped over two lines). A row
/// with options but no question text (one Turkish row) keeps the bare `Answer:` context, so
/// it measures the choices' prior, as it would for a reader of upstream's prompt.
pub fn read_exams(path: &Path) -> Result<Vec<McQuestion>> {
    crate::data::read_jsonl_lines(path)?
        .into_iter()
        .map(|(line, row)| {
            parse_exams_row(&row)
                .map_err(|m| bad_line(path, line, m))
                .map(|(context, choices, gold)| McQuestion {
                    id: format!("{}:{line}", path.display()),
                    context,
                    choices,
                    gold,
                })
        })
        .collect()
}

/// `(context, choices, gold)` of one EXAMS row, or why it is malformed.
fn parse_exams_row(row: &Value) -> std::result::Result<(String, Vec<String>, usize), String> {
    let question = row
        .get("input")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .ok_or("`input` must be a list of chat messages whose last one has a string `content`")?;
    let ideal = row
        .get("ideal")
        .and_then(Value::as_str)
        .ok_or("`ideal` must be a string such as \"[A]\"")?;
    let body = question
        .trim_end()
        .strip_suffix("Answer:")
        .ok_or("the question must end with `Answer:`")?
        .trim_end();
    let lines: Vec<&str> = body.lines().collect();
    let first_option = lines
        .iter()
        .rposition(|l| l.starts_with("A. "))
        .ok_or("no option line starting with `A. `")?;
    let stem = lines[..first_option].join("\n");
    let mut choices: Vec<String> = Vec::new();
    for line in &lines[first_option..] {
        let next_prefix = (choices.len() < 26).then(|| format!("{}. ", char::from(b'A' + choices.len() as u8)));
        match next_prefix.as_deref().and_then(|p| line.strip_prefix(p)) {
            Some(text) => choices.push(text.trim().to_string()),
            None => match choices.last_mut() {
                Some(last) => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                None => return Err(format!("option line `{line}` comes before option A")),
            },
        }
    }
    if choices.len() < 2 {
        return Err(format!("{} option(s); a question needs at least two", choices.len()));
    }
    if let Some(empty) = choices.iter().position(String::is_empty) {
        return Err(format!("option {} is empty", char::from(b'A' + empty as u8)));
    }
    let letter = ideal.trim().trim_start_matches('[').trim_end_matches(']').trim();
    let gold = match letter.as_bytes() {
        [l @ b'A'..=b'Z'] => usize::from(l - b'A'),
        _ => return Err(format!("`ideal` is {ideal:?}, not one bracketed letter")),
    };
    if gold >= choices.len() {
        return Err(format!("`ideal` is {ideal:?} but there are only {} options", choices.len()));
    }
    let context = if stem.trim().is_empty() {
        "Answer:".to_string()
    } else {
        format!("{stem}\nAnswer:")
    };
    Ok((context, choices, gold))
}

/// The EXAMS languages the registry has (`<language>-exams-qa` evals), sorted.
pub fn exams_languages(registry: &Registry) -> Vec<String> {
    let mut langs: Vec<String> = registry
        .eval_names()
        .iter()
        .filter_map(|n| n.strip_suffix("-exams-qa"))
        .map(str::to_string)
        .collect();
    langs.sort();
    langs.dedup();
    langs
}

/// The samples file of the registry's `<language>-exams-qa` eval, resolved as the eval
/// runner resolves data paths.
pub fn exams_samples_path(
    registry: &Registry,
    language: &str,
    builtin_root: Option<&Path>,
    access: crate::data::DataAccess,
) -> Result<PathBuf> {
    let spec = registry.get_eval(&format!("{language}-exams-qa"))?;
    let samples = spec
        .args
        .get("samples_jsonl")
        .and_then(Value::as_str)
        .ok_or_else(|| EvalError::BadEntry {
            kind: "eval",
            name: spec.key.clone(),
            message: "has no string `samples_jsonl`".into(),
        })?;
    crate::data::resolve(samples, &spec.registry_path, builtin_root, access)
}

/// A BIG-bench JSON multiple-choice task (`task.json`, or TruthfulQA's `task_mc.json`):
/// `examples[].input` and `examples[].target_scores` (choice → score). The context is the
/// task's `task_prefix`, `example_input_prefix` (default `"\nQ: "`), the input and
/// `example_output_prefix` (default `"\nA: "`) without its trailing whitespace, which the
/// choice delimiter supplies. Exactly one choice must score highest (for TruthfulQA MC1 the
/// one true answer scores 1); the choices are ordered by text, so the correct one is not
/// always first and argmax's tie-break does not favour it.
pub fn read_bigbench_task(path: &Path) -> Result<Vec<McQuestion>> {
    let text = crate::data::read_text(path)?;
    let task: Value = serde_json::from_str(&text).map_err(|e| EvalError::JsonLine {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let bad_task = |message: &str| EvalError::BadEntry {
        kind: "BIG-bench task",
        name: path.display().to_string(),
        message: message.to_string(),
    };
    let prefix_field = |key: &str, default: &str| -> Result<String> {
        match task.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad_task(&format!("`{key}` must be a string"))),
        }
    };
    let task_prefix = prefix_field("task_prefix", "")?;
    let input_prefix = prefix_field("example_input_prefix", "\nQ: ")?;
    let output_prefix = prefix_field("example_output_prefix", "\nA: ")?;
    let examples = task
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_task("`examples` must be a list"))?;
    examples
        .iter()
        .enumerate()
        .map(|(index, example)| {
            let bad = |message: String| EvalError::BadExample {
                path: path.to_path_buf(),
                index,
                message,
            };
            let (input, choices, gold) = parse_bigbench_example(example).map_err(bad)?;
            let context = format!("{task_prefix}{input_prefix}{input}{}", output_prefix.trim_end());
            Ok(McQuestion {
                id: format!("{}#{index}", path.display()),
                context: context.trim_start().to_string(),
                choices,
                gold,
            })
        })
        .collect()
}

/// The BIG-bench release TruthfulQA is read from (a PyPI sdist, 358 MB).
const BIGBENCH_SDIST: &str = "bigbench-1.0.0";

/// Where [`truthful_qa_install_command`] puts TruthfulQA's multiple-choice task:
/// `<cache>/bigbench/bigbench-1.0.0/bigbench/benchmark_tasks/truthful_qa/task_mc.json`.
pub fn truthful_qa_default_path() -> PathBuf {
    crate::runner::cache_root()
        .join("bigbench")
        .join(BIGBENCH_SDIST)
        .join("bigbench/benchmark_tasks/truthful_qa/task_mc.json")
}

/// The shell commands that fetch BIG-bench's sdist and unpack only the TruthfulQA task.
pub fn truthful_qa_install_command() -> String {
    let dir = crate::runner::cache_root().join("bigbench");
    format!(
        "pip download --no-deps --no-binary :all: bigbench==1.0.0 -d {d} && tar -xzf {d}/{BIGBENCH_SDIST}.tar.gz -C {d} --wildcards '*/benchmark_tasks/truthful_qa/*'",
        d = dir.display()
    )
}

/// `(input, choices sorted by text, gold)` of one BIG-bench example, or why it is malformed.
fn parse_bigbench_example(example: &Value) -> std::result::Result<(String, Vec<String>, usize), String> {
    let input = example.get("input").and_then(Value::as_str).ok_or("`input` must be a string")?;
    let scores = example
        .get("target_scores")
        .and_then(Value::as_object)
        .ok_or("`target_scores` must be an object of choice: score")?;
    let mut scored: Vec<(String, f64)> = scores
        .iter()
        .map(|(choice, score)| {
            score
                .as_f64()
                .map(|s| (choice.clone(), s))
                .ok_or_else(|| format!("the score of {choice:?} is not a number"))
        })
        .collect::<std::result::Result<_, _>>()?;
    if scored.len() < 2 {
        return Err(format!("{} choice(s); a question needs at least two", scored.len()));
    }
    scored.sort_by(|a, b| a.0.cmp(&b.0));
    let best = scored.iter().map(|(_, s)| *s).fold(f64::NEG_INFINITY, f64::max);
    let winners: Vec<usize> = (0..scored.len()).filter(|&i| scored[i].1 == best).collect();
    let [gold] = winners[..] else {
        return Err(format!(
            "{} choices share the top score {best}; exactly one must be correct",
            winners.len()
        ));
    };
    Ok((input.to_string(), scored.into_iter().map(|(c, _)| c).collect(), gold))
}

/// A multiple-choice task by name, as `ferrogpt eval mc --task` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McTask {
    /// EXAMS from upstream's registry: one language, or every language (`None`).
    Exams { language: Option<String> },
    /// TruthfulQA MC1 from BIG-bench's release.
    TruthfulQa,
    /// Any BIG-bench JSON multiple-choice task (its file must be given).
    BigBench,
}

impl std::str::FromStr for McTask {
    type Err = EvalError;

    /// `exams`, `exams:LANGUAGE`, `truthful_qa` or `bigbench`.
    fn from_str(s: &str) -> Result<McTask> {
        match s.split_once(':') {
            Some(("exams", language)) if !language.is_empty() => Ok(McTask::Exams {
                language: Some(language.to_string()),
            }),
            None if s == "exams" => Ok(McTask::Exams { language: None }),
            None if s == "truthful_qa" => Ok(McTask::TruthfulQa),
            None if s == "bigbench" => Ok(McTask::BigBench),
            _ => Err(EvalError::Setting {
                name: "task",
                message: format!("`{s}`: expected exams, exams:LANGUAGE, truthful_qa or bigbench"),
            }),
        }
    }
}

impl std::fmt::Display for McTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McTask::Exams { language: None } => f.write_str("exams"),
            McTask::Exams { language: Some(l) } => write!(f, "exams:{l}"),
            McTask::TruthfulQa => f.write_str("truthful_qa"),
            McTask::BigBench => f.write_str("bigbench"),
        }
    }
}

/// A task's questions and the files they were read from.
#[derive(Debug, Clone)]
pub struct LoadedTask {
    pub files: Vec<PathBuf>,
    pub questions: Vec<McQuestion>,
}

impl McTask {
    /// Reads the task's questions: from `data` when given (an EXAMS `samples.jsonl` or a
    /// BIG-bench task JSON), else from where the install commands put them; a missing
    /// dataset is [`EvalError::DataNotInstalled`] with the command that installs it.
    pub fn load(&self, data: Option<&Path>) -> Result<LoadedTask> {
        let (files, questions) = match (self, data) {
            (McTask::Exams { .. }, Some(path)) => (vec![path.to_path_buf()], read_exams(path)?),
            (McTask::TruthfulQa | McTask::BigBench, Some(path)) => (vec![path.to_path_buf()], read_bigbench_task(path)?),
            (McTask::Exams { language }, None) => {
                let root = crate::runner::upstream_registry_dir();
                if !root.join("evals").is_dir() {
                    return Err(EvalError::DataNotInstalled {
                        what: "EXAMS (openai/evals' published registry)".into(),
                        path: root,
                        install: crate::runner::upstream_install_command(),
                    });
                }
                let registry = Registry::load(std::slice::from_ref(&root))?;
                let languages = match language {
                    Some(l) => vec![l.clone()],
                    None => exams_languages(&registry),
                };
                let mut files = Vec::new();
                let mut questions = Vec::new();
                for language in &languages {
                    let path =
                        exams_samples_path(&registry, language, None, crate::data::DataAccess::RegistryOnly).map_err(|e| match e {
                            EvalError::NotFound { .. } => EvalError::Setting {
                                name: "task",
                                message: format!("no EXAMS language `{language}` (have: {})", exams_languages(&registry).join(", ")),
                            },
                            other => other,
                        })?;
                    questions.extend(read_exams(&path)?);
                    files.push(path);
                }
                (files, questions)
            }
            (McTask::TruthfulQa, None) => {
                let path = truthful_qa_default_path();
                if !path.is_file() {
                    return Err(EvalError::DataNotInstalled {
                        what: "TruthfulQA (BIG-bench 1.0.0)".into(),
                        path,
                        install: truthful_qa_install_command(),
                    });
                }
                (vec![path.clone()], read_bigbench_task(&path)?)
            }
            (McTask::BigBench, None) => {
                return Err(EvalError::Setting {
                    name: "task",
                    message: "bigbench needs the task's JSON file (--data PATH)".into(),
                })
            }
        };
        Ok(LoadedTask { files, questions })
    }
}

/// At most `max` questions, evenly spaced through `questions` (so a subset of every EXAMS
/// language spans all languages), in their order; deterministic, so runs compare.
pub fn evenly_spaced(questions: Vec<McQuestion>, max: usize) -> Vec<McQuestion> {
    let n = questions.len();
    if max >= n {
        return questions;
    }
    let mut picks = (0..max).map(|i| i * n / max).peekable();
    questions
        .into_iter()
        .enumerate()
        .filter_map(|(i, q)| (picks.next_if_eq(&i).is_some()).then_some(q))
        .collect()
}

/// Softmax of log-probabilities (stable: shifted by the maximum).
pub fn softmax(logprobs: &[f64]) -> Vec<f64> {
    let max = logprobs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logprobs.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / z).collect()
}

/// The first index of the largest value (numpy's argmax); 0 for an empty slice.
fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) })
        .0
}

/// The outcome of one question: the choices' log-probabilities and what they predict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceOutcome {
    /// Summed log-probability of each choice's continuation.
    pub logprobs: Vec<f64>,
    /// The highest `logprobs`.
    pub pred: usize,
    /// The highest log-probability per UTF-8 byte of the choice.
    pub pred_norm: usize,
    pub gold: usize,
    /// Softmax over `logprobs`, at `pred`.
    pub confidence: f64,
}

impl ChoiceOutcome {
    /// Predictions from the choices' summed log-probabilities (`logprobs[i]` for `choices[i]`).
    pub fn new(logprobs: Vec<f64>, choices: &[String], gold: usize) -> ChoiceOutcome {
        let per_byte: Vec<f64> = logprobs.iter().zip(choices).map(|(l, c)| l / c.len().max(1) as f64).collect();
        let pred = argmax(&logprobs);
        let confidence = softmax(&logprobs).get(pred).copied().unwrap_or(f64::NAN);
        ChoiceOutcome {
            pred,
            pred_norm: argmax(&per_byte),
            gold,
            confidence,
            logprobs,
        }
    }

    pub fn correct(&self) -> bool {
        self.pred == self.gold
    }

    pub fn correct_norm(&self) -> bool {
        self.pred_norm == self.gold
    }
}

/// Scores every choice of `question` as a continuation of its context.
pub fn score_question(model: &dyn CompletionFn, question: &McQuestion) -> Result<ChoiceOutcome> {
    let logprobs = question
        .choices
        .iter()
        .map(|c| {
            model
                .loglikelihood(&question.context, &format!("{CHOICE_DELIMITER}{c}"))
                .map(|ll| ll.logprob)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(ChoiceOutcome::new(logprobs, &question.choices, question.gold))
}

/// Scores `questions` on `threads` threads; outcomes in the questions' order. `on_done` is
/// called once per scored question (for progress), from the scoring threads.
pub fn score_questions(
    model: &dyn CompletionFn,
    questions: &[McQuestion],
    threads: usize,
    on_done: &(dyn Fn() + Sync),
) -> Result<Vec<ChoiceOutcome>> {
    let chunk = questions.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = questions
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|q| {
                            let outcome = score_question(model, q)?;
                            on_done();
                            Ok(outcome)
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(questions.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => all.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(all)
    })
}

/// The aggregate of a multiple-choice eval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McReport {
    pub n: usize,
    pub accuracy: f64,
    /// Wilson score 95% interval of `accuracy`.
    pub accuracy_ci95: [f64; 2],
    pub acc_norm: f64,
    /// Expected accuracy of guessing uniformly: the mean of 1 / number of choices.
    pub chance: f64,
    /// Expected calibration error over [`CALIBRATION_BINS`] equal-width confidence bins.
    pub ece: f64,
    pub bins: Vec<CalibrationBin>,
}

impl McReport {
    /// `None` without outcomes (no accuracy to report).
    pub fn from_outcomes(outcomes: &[ChoiceOutcome]) -> Option<McReport> {
        let n = outcomes.len();
        let hits = outcomes.iter().filter(|o| o.correct()).count();
        let accuracy_ci95 = metrics::wilson_ci95(hits, n)?;
        let confidence: Vec<f64> = outcomes.iter().map(|o| o.confidence).collect();
        let correct: Vec<bool> = outcomes.iter().map(ChoiceOutcome::correct).collect();
        let (ece, bins) = metrics::calibration(&confidence, &correct, CALIBRATION_BINS);
        Some(McReport {
            n,
            accuracy: hits as f64 / n as f64,
            accuracy_ci95,
            acc_norm: outcomes.iter().filter(|o| o.correct_norm()).count() as f64 / n as f64,
            chance: metrics::mean(&outcomes.iter().map(|o| 1.0 / o.logprobs.len().max(1) as f64).collect::<Vec<_>>()),
            ece,
            bins,
        })
    }
}

/// One model's results on a task.
#[derive(Debug, Clone)]
pub struct ModelRun {
    /// Names the model in the report, the diagram's legend and its outcomes file.
    pub label: String,
    /// What was scored (a completion function's name, e.g. `local:runs/sft`).
    pub model: String,
    /// One per question, in the questions' order.
    pub outcomes: Vec<ChoiceOutcome>,
    pub report: McReport,
}

/// Writes a task's results for one or more models into `out`: `report.json` (the task, its
/// files and each model's [`McReport`]), `<label>.outcomes.jsonl` (each question with its
/// outcome) and `calibration.svg` (one reliability diagram overlaying the models).
pub fn write_outputs(out: &Path, task: &McTask, loaded: &LoadedTask, questions: &[McQuestion], runs: &[ModelRun]) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| EvalError::io(out, e))?;
    for run in runs {
        let path = out.join(format!("{}.outcomes.jsonl", run.label));
        let mut lines = String::new();
        for (question, outcome) in questions.iter().zip(&run.outcomes) {
            lines.push_str(&serde_json::json!({"question": question, "outcome": outcome}).to_string());
            lines.push('\n');
        }
        std::fs::write(&path, lines).map_err(|e| EvalError::io(&path, e))?;
    }
    let report = serde_json::json!({
        "task": task.to_string(),
        "files": loaded.files,
        "questions_in_task": loaded.questions.len(),
        "models": runs
            .iter()
            .map(|r| serde_json::json!({"label": r.label, "model": r.model, "report": r.report}))
            .collect::<Vec<_>>(),
    });
    let path = out.join("report.json");
    std::fs::write(&path, format!("{report:#}\n")).map_err(|e| EvalError::io(&path, e))?;
    let overlay: Vec<(&str, &McReport)> = runs.iter().map(|r| (r.label.as_str(), &r.report)).collect();
    write_reliability_svg(&out.join("calibration.svg"), &overlay)
}

/// Colours of the models overlaid on a reliability diagram, in order (then repeated).
const SERIES_COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
];

/// A reliability diagram as SVG: for each model, its accuracy in each confidence bin as a
/// bar (the bars of a bin side by side, each labelled with its question count), against the
/// diagonal of perfect calibration; the legend gives each model's ECE and accuracy.
pub fn write_reliability_svg(path: &Path, reports: &[(&str, &McReport)]) -> Result<()> {
    let plot_err = |e: &dyn std::fmt::Display| EvalError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (800, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Calibration: accuracy per confidence bin (numbers: questions in the bin)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..1.0, 0.0..1.05)
        .map_err(|e| plot_err(&e))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("confidence (softmax over the choices, at the prediction)")
        .y_desc("accuracy")
        .draw()
        .map_err(|e| plot_err(&e))?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.5).stroke_width(1)))
        .map_err(|e| plot_err(&e))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.5)));
    let slots = reports.len().max(1) as f64;
    for (series, (label, report)) in reports.iter().enumerate() {
        let colour = SERIES_COLOURS[series % SERIES_COLOURS.len()];
        let bar = |b: &CalibrationBin| {
            let width = (b.hi - b.lo) / slots;
            let x0 = b.lo + width * series as f64;
            (x0 + width * 0.08, x0 + width * 0.92)
        };
        let filled = || report.bins.iter().filter(|b| b.count > 0);
        chart
            .draw_series(filled().map(|b| {
                let (x0, x1) = bar(b);
                Rectangle::new([(x0, 0.0), (x1, b.accuracy)], colour.mix(0.75).filled())
            }))
            .map_err(|e| plot_err(&e))?
            .label(format!(
                "{label}: ECE {:.3}, accuracy {:.3} (n={})",
                report.ece, report.accuracy, report.n
            ))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
        chart
            .draw_series(filled().map(|b| {
                let (x0, x1) = bar(b);
                Text::new(
                    b.count.to_string(),
                    ((x0 + x1) / 2.0, b.accuracy + 0.035),
                    ("sans-serif", 11)
                        .into_font()
                        .color(&colour)
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        )),
                )
            }))
            .map_err(|e| plot_err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
