//! Running an eval set with resume, as `oaievalset` does: each eval that finishes is appended
//! to a progress file, and a later run of the same set by the same completion functions
//! skips the evals listed there.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::completion::CompletionFn;
use crate::error::{EvalError, Result};
use crate::registry::{EvalSpec, Registry};
use crate::runner::{run_eval, RunOptions, RunOutcome};

/// How to run a set beyond each eval's [`RunOptions`].
#[derive(Debug, Clone)]
pub struct SetOptions {
    /// The progress file (see [`progress_file`]).
    pub progress_file: PathBuf,
    /// Skip the evals the progress file lists; `false` starts over and clears it.
    pub resume: bool,
    /// Go on to the next eval when one fails (its failure is in [`SetOutcome::failed`]).
    pub keep_going: bool,
}

/// What happened to one eval of the set, reported as the set runs.
#[derive(Debug)]
pub enum SetEvent<'a> {
    /// Finished by an earlier run of the set.
    Skipped {
        key: &'a str,
    },
    Finished(&'a RunOutcome),
    /// Failed with [`SetOptions::keep_going`] on.
    Failed {
        key: &'a str,
        error: &'a EvalError,
    },
}

/// A finished set.
#[derive(Debug, Default)]
pub struct SetOutcome {
    /// Evals run to the end by this run.
    pub finished: Vec<String>,
    pub skipped: Vec<String>,
    pub failed: Vec<(String, EvalError)>,
}

/// `<tmp>/ferrogpt-evalset/<fns>.<set>.progress.txt`: one per completion functions and set
/// (upstream keeps `/tmp/oaievalset/<model>.<set>.progress.txt`).
pub fn progress_file(completion_fns: &str, set: &str) -> PathBuf {
    let safe = |s: &str| s.replace(['/', ','], "_");
    std::env::temp_dir()
        .join("ferrogpt-evalset")
        .join(format!("{}.{}.progress.txt", safe(completion_fns), safe(set)))
}

/// The eval keys a progress file lists (none when it does not exist).
pub fn read_progress(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(EvalError::io(path, e)),
    }
}

/// Runs every eval of `specs` (a set from [`Registry::get_eval_set`]) in order, skipping those
/// already done and recording each that finishes. Without `keep_going` the first failure
/// ends the run with that eval named.
pub fn run_eval_set(
    registry: &Registry,
    specs: &[EvalSpec],
    fns: &[Arc<dyn CompletionFn>],
    opts: &RunOptions,
    set: &SetOptions,
    mut on_event: impl FnMut(SetEvent<'_>),
) -> Result<SetOutcome> {
    let path = &set.progress_file;
    if !set.resume && path.exists() {
        std::fs::remove_file(path).map_err(|e| EvalError::io(path, e))?;
    }
    let done = read_progress(path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| EvalError::io(parent, e))?;
    }
    let mut outcome = SetOutcome::default();
    for spec in specs {
        if done.contains(&spec.key) {
            on_event(SetEvent::Skipped { key: &spec.key });
            outcome.skipped.push(spec.key.clone());
            continue;
        }
        match run_eval(registry, spec, fns, opts) {
            Ok(run) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| EvalError::io(path, e))?;
                writeln!(f, "{}", spec.key).map_err(|e| EvalError::io(path, e))?;
                on_event(SetEvent::Finished(&run));
                outcome.finished.push(spec.key.clone());
            }
            Err(error) if set.keep_going => {
                on_event(SetEvent::Failed {
                    key: &spec.key,
                    error: &error,
                });
                outcome.failed.push((spec.key.clone(), error));
            }
            Err(error) => {
                return Err(EvalError::InSet {
                    key: spec.key.clone(),
                    source: Box::new(error),
                })
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::Dummy;

    /// A set of three evals in registry order; `second` names a samples file that does not exist.
    fn registry(dir: &Path) -> Registry {
        let files = [
            (
                "evals/first.yaml",
                "first:\n  id: first.dev.v0\n  metrics: [accuracy]\nfirst.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: s.jsonl\n",
            ),
            (
                "evals/third.yaml",
                "third:\n  id: third.dev.v0\n  metrics: [accuracy]\nthird.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: s.jsonl\n",
            ),
            (
                "evals/second.yaml",
                "second:\n  id: second.dev.v0\n  metrics: [accuracy]\nsecond.dev.v0:\n  class: evals.elsuite.basic.match:Match\n  args:\n    samples_jsonl: none.jsonl\n",
            ),
            ("eval_sets/s.yaml", "s:\n  evals: [first, second, third]\n"),
            (
                "data/s.jsonl",
                "{\"input\": [{\"role\": \"user\", \"content\": \"q\"}], \"ideal\": \"This is a dummy\"}\n",
            ),
        ];
        for (rel, text) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Registry::load(&[dir.to_path_buf()]).unwrap()
    }

    fn run(dir: &Path, resume: bool, keep_going: bool, events: &mut Vec<String>) -> Result<SetOutcome> {
        let reg = registry(&dir.join("registry"));
        let specs = reg.get_eval_set("s").unwrap();
        let fns: Vec<Arc<dyn CompletionFn>> = vec![Arc::new(Dummy)];
        let opts = RunOptions {
            record_path: Some(dir.join("log.jsonl")),
            ..RunOptions::default()
        };
        let set = SetOptions {
            progress_file: dir.join("progress/p.txt"),
            resume,
            keep_going,
        };
        run_eval_set(&reg, &specs, &fns, &opts, &set, |e| {
            events.push(match e {
                SetEvent::Skipped { key } => format!("skipped {key}"),
                SetEvent::Finished(run) => format!("finished {}", run.eval_name),
                SetEvent::Failed { key, .. } => format!("failed {key}"),
            })
        })
    }

    #[test]
    fn a_failure_stops_the_set_unless_told_to_keep_going_and_finished_evals_are_skipped_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = Vec::new();
        let e = run(dir.path(), true, false, &mut events).unwrap_err().to_string();
        assert!(e.starts_with("eval second.dev.v0: ") && e.contains("none.jsonl"), "{e}");
        assert_eq!(events, ["finished first.dev.v0"]);
        assert_eq!(read_progress(&dir.path().join("progress/p.txt")).unwrap(), ["first.dev.v0"]);

        let mut events = Vec::new();
        let out = run(dir.path(), true, true, &mut events).unwrap();
        assert_eq!(events, ["skipped first.dev.v0", "failed second.dev.v0", "finished third.dev.v0"]);
        assert_eq!((out.finished.len(), out.skipped.len(), out.failed.len()), (1, 1, 1));
        assert_eq!(out.failed[0].0, "second.dev.v0");
        assert_eq!(
            read_progress(&dir.path().join("progress/p.txt")).unwrap(),
            ["first.dev.v0", "third.dev.v0"]
        );

        // Without resume the set starts over.
        let mut events = Vec::new();
        run(dir.path(), false, true, &mut events).unwrap();
        assert_eq!(events, ["finished first.dev.v0", "failed second.dev.v0", "finished third.dev.v0"]);
    }

    #[test]
    fn progress_files_are_per_functions_and_set() {
        let p = progress_file("local:/m/x,gpt-4", "ferrogpt/set");
        assert_eq!(p.file_name().unwrap(), "local:_m_x_gpt-4.ferrogpt_set.progress.txt");
        assert_eq!(
            read_progress(&std::env::temp_dir().join("no-such-progress-file")).unwrap(),
            Vec::<String>::new()
        );
    }
}
