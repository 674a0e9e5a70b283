//! Eval templates: the registry's no-code classes, implemented natively with upstream's
//! semantics and report keys, plus ferrogpt's scoring templates.

mod basic;
mod modelgraded;
/// The pure parsing helpers of `ModelBasedClassify`, for callers and conformance tests.
pub mod modelgraded_api {
    pub use super::modelgraded::{answer_prompt, choice_score, choice_strings, get_choice, MatchFn, INVALID};
}
mod scoring;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::completion::{CompletionFn, Loglikelihood};
use crate::error::{EvalError, Result};
use crate::log::{Event, Report};
use crate::registry::{EvalSpec, Registry};

pub use scoring::check_arithmetic_program;

/// What a template needs to know when it builds its final report.
pub struct ReportCtx<'a> {
    pub events: &'a [Event],
    /// Seeds the bootstrap draws.
    pub seed: u64,
}

impl ReportCtx<'_> {
    pub fn of_type<'b>(&'b self, kind: &'b str) -> impl Iterator<Item = &'b Value> + 'b {
        self.events.iter().filter(move |e| e.kind == kind).map(|e| &e.data)
    }

    /// `recorder.get_scores(key)`: `key` of every `metrics` event, as numbers.
    pub fn scores(&self, key: &str) -> Vec<f64> {
        self.of_type("metrics")
            .filter_map(|d| d.get(key))
            .filter_map(|v| v.as_f64().or_else(|| v.as_bool().map(|b| f64::from(u8::from(b)))))
            .collect()
    }

    /// `correct` of every `match` event.
    pub fn match_correct(&self) -> Vec<f64> {
        self.of_type("match")
            .map(|d| f64::from(u8::from(d.get("correct").and_then(Value::as_bool).unwrap_or(false))))
            .collect()
    }
}

/// One eval class.
pub trait Template: Send + Sync {
    /// The samples, in file order (the runner shuffles them like upstream).
    fn samples(&self) -> Result<Vec<Value>>;
    /// Evaluate one sample, recording events through `ctx`.
    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()>;
    /// Aggregate the recorded events into the final report.
    fn report(&self, ctx: &ReportCtx) -> Report;
}

/// Per-sample state: the completion functions and the events recorded so far.
pub struct SampleCtx<'a> {
    pub sample_id: String,
    pub fns: &'a [Arc<dyn CompletionFn>],
    pub events: Vec<(String, Value, String)>,
}

impl<'a> SampleCtx<'a> {
    pub fn new(sample_id: String, fns: &'a [Arc<dyn CompletionFn>]) -> Self {
        SampleCtx {
            sample_id,
            fns,
            events: Vec::new(),
        }
    }

    pub fn record(&mut self, kind: &str, data: Value) {
        self.events.push((kind.to_string(), data, crate::log::timestamp()));
    }

    /// `record_match`: a one-element `expected` list is logged as its only item.
    pub fn record_match(&mut self, correct: bool, expected: Value, picked: Value, extra: Map<String, Value>) {
        let expected = match expected {
            Value::Array(mut items) if items.len() == 1 => items.remove(0),
            other => other,
        };
        let mut data = Map::new();
        data.insert("correct".into(), Value::Bool(correct));
        data.insert("expected".into(), expected);
        data.insert("picked".into(), picked);
        data.extend(extra);
        self.record("match", Value::Object(data));
    }

    fn fn_at(&self, index: usize) -> Result<&'a Arc<dyn CompletionFn>> {
        self.fns.get(index).ok_or_else(|| EvalError::Sample {
            sample_id: self.sample_id.clone(),
            message: format!("no completion function #{index}"),
        })
    }

    /// Call completion function `index` and return its first completion, recording the
    /// `sampling` event it reports.
    pub fn complete(&mut self, index: usize, prompt: &Value, params: &Map<String, Value>) -> Result<String> {
        let f = self.fn_at(index)?;
        let out = f.complete(prompt, params)?;
        if let Some(s) = out.sampling {
            self.record("sampling", s);
        }
        out.completions.into_iter().next().ok_or_else(|| EvalError::Sample {
            sample_id: self.sample_id.clone(),
            message: format!("completion function `{}` returned no completion", f.name()),
        })
    }

    pub fn loglikelihood(&mut self, index: usize, context: &str, continuation: &str) -> Result<Loglikelihood> {
        let f = self.fn_at(index)?;
        let ll = f.loglikelihood(context, continuation)?;
        self.record(
            "cond_logp",
            serde_json::json!({"prompt": context, "completion": continuation, "logp": ll.logprob}),
        );
        Ok(ll)
    }

    pub fn error(&self, message: impl Into<String>) -> EvalError {
        EvalError::Sample {
            sample_id: self.sample_id.clone(),
            message: message.into(),
        }
    }
}

/// Where a template finds its files and settings.
pub struct BuildCtx<'a> {
    pub spec: &'a EvalSpec,
    pub registry: &'a Registry,
    pub builtin_root: Option<&'a Path>,
    /// Where the entry's data files may live.
    pub data_access: crate::data::DataAccess,
    /// How many completion functions the run was given.
    pub n_fns: usize,
}

impl BuildCtx<'_> {
    fn bad(&self, message: impl Into<String>) -> EvalError {
        EvalError::BadEntry {
            kind: "eval",
            name: self.spec.key.clone(),
            message: message.into(),
        }
    }

    fn arg(&self, key: &str) -> Option<&Value> {
        self.spec.args.get(key).filter(|v| !v.is_null())
    }

    fn str_arg(&self, key: &str) -> Result<Option<String>> {
        match self.arg(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.bad(format!("`{key}` must be a string, got {other}"))),
        }
    }

    fn usize_arg(&self, key: &str, default: usize) -> Result<usize> {
        match self.arg(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.bad(format!("`{key}` must be a non-negative integer, got {v}"))),
        }
    }

    fn bool_arg(&self, key: &str, default: bool) -> Result<bool> {
        match self.arg(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn data_path(&self, rel: &str) -> Result<PathBuf> {
        crate::data::resolve(rel, &self.spec.registry_path, self.builtin_root, self.data_access)
    }

    fn samples_path(&self) -> Result<PathBuf> {
        let rel = self
            .str_arg("samples_jsonl")?
            .ok_or_else(|| self.bad("`args.samples_jsonl` is required"))?;
        self.data_path(&rel)
    }
}

/// Build the template for an eval spec; unknown classes are custom Python evals.
pub fn build(ctx: &BuildCtx) -> Result<Box<dyn Template>> {
    let cls = ctx.spec.cls.as_str();
    let one_fn = |name: &str| -> Result<()> {
        if ctx.n_fns == 1 {
            Ok(())
        } else {
            Err(ctx.bad(format!("{name} only supports one completion fn, got {}", ctx.n_fns)))
        }
    };
    Ok(match cls {
        "evals.elsuite.basic.match:Match" => {
            one_fn("Match")?;
            Box::new(basic::Match::new(ctx, false)?)
        }
        "evals.elsuite.test.match:TestMatch" => {
            one_fn("Match")?;
            Box::new(basic::Match::new(ctx, true)?)
        }
        "evals.elsuite.basic.includes:Includes" => {
            one_fn("Includes")?;
            Box::new(basic::Includes::new(ctx)?)
        }
        "evals.elsuite.basic.fuzzy_match:FuzzyMatch" => {
            one_fn("FuzzyMatch")?;
            Box::new(basic::FuzzyMatch::new(ctx)?)
        }
        "evals.elsuite.basic.json_match:JsonMatch" => {
            one_fn("JsonMatch")?;
            Box::new(basic::JsonMatch::new(ctx)?)
        }
        "evals.elsuite.modelgraded.classify:ModelBasedClassify" => Box::new(modelgraded::ModelBasedClassify::new(ctx)?),
        "ferrogpt:MultipleChoiceLoglik" => Box::new(scoring::MultipleChoiceLoglik::new(ctx)?),
        "ferrogpt:BitsPerByte" => Box::new(scoring::BitsPerByte::new(ctx)?),
        "ferrogpt:PassAtK" => Box::new(scoring::PassAtK::new(ctx)?),
        other => return Err(EvalError::UnsupportedClass(other.to_string())),
    })
}

/// Whether `build` knows the class (without loading any data).
pub fn is_supported_class(cls: &str) -> bool {
    matches!(
        cls,
        "evals.elsuite.basic.match:Match"
            | "evals.elsuite.test.match:TestMatch"
            | "evals.elsuite.basic.includes:Includes"
            | "evals.elsuite.basic.fuzzy_match:FuzzyMatch"
            | "evals.elsuite.basic.json_match:JsonMatch"
            | "evals.elsuite.modelgraded.classify:ModelBasedClassify"
            | "ferrogpt:MultipleChoiceLoglik"
            | "ferrogpt:BitsPerByte"
            | "ferrogpt:PassAtK"
    )
}
