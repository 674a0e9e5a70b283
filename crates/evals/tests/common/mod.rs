//! Shared test helpers: a scripted completion function and one-sample template runs.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferrogpt_evals::completion::{Completion, CompletionFn};
use ferrogpt_evals::data::DataAccess;
use ferrogpt_evals::registry::{EvalSpec, Registry};
use ferrogpt_evals::templates::{self, BuildCtx, ReportCtx, SampleCtx};
use ferrogpt_evals::Result;
use serde_json::{Map, Value};

/// Answers with a fixed list of replies in turn (the last one repeats) and remembers the
/// prompts and parameters it was called with.
pub struct Scripted {
    pub replies: Vec<String>,
    pub calls: Mutex<Vec<(Value, Map<String, Value>)>>,
}

impl Scripted {
    pub fn new(replies: &[&str]) -> Arc<Scripted> {
        Arc::new(Scripted {
            replies: replies.iter().map(|s| s.to_string()).collect(),
            calls: Mutex::new(Vec::new()),
        })
    }
}

impl CompletionFn for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn complete(&self, prompt: &Value, params: &Map<String, Value>) -> Result<Completion> {
        let mut calls = self.calls.lock().unwrap();
        let reply = self.replies[calls.len().min(self.replies.len() - 1)].clone();
        calls.push((prompt.clone(), params.clone()));
        Ok(Completion {
            completions: vec![reply],
            sampling: None,
        })
    }
}

/// Write `files` (relative path, contents) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

pub fn spec(cls: &str, args: Value, root: &Path) -> EvalSpec {
    EvalSpec {
        key: "conf.test.v0".into(),
        cls: cls.into(),
        args: args.as_object().cloned().unwrap_or_default(),
        registry_path: root.to_path_buf(),
        group: "conf".into(),
        metrics: vec![],
    }
}

/// Run one sample through a template; returns the recorded (type, data) events.
pub fn eval_one(registry: &Registry, spec: &EvalSpec, fns: &[Arc<dyn CompletionFn>], sample: &Value) -> Result<Vec<(String, Value)>> {
    let t = templates::build(&BuildCtx {
        spec,
        registry,
        builtin_root: None,
        data_access: DataAccess::RegistryOnly,
        n_fns: fns.len(),
    })?;
    let mut ctx = SampleCtx::new("conf.test.0".into(), fns);
    t.eval_sample(sample, &mut ctx)?;
    Ok(ctx.events.into_iter().map(|(k, d, _)| (k, d)).collect())
}

/// A report built from one sample's events.
pub fn report_of(registry: &Registry, spec: &EvalSpec, fns: &[Arc<dyn CompletionFn>], events: &[(String, Value)]) -> Value {
    let t = templates::build(&BuildCtx {
        spec,
        registry,
        builtin_root: None,
        data_access: DataAccess::RegistryOnly,
        n_fns: fns.len(),
    })
    .unwrap();
    let evs: Vec<ferrogpt_evals::log::Event> = events
        .iter()
        .enumerate()
        .map(|(i, (k, d))| ferrogpt_evals::log::Event {
            run_id: "r".into(),
            event_id: i as u64,
            sample_id: Some("s".into()),
            kind: k.clone(),
            data: d.clone(),
            created_by: String::new(),
            created_at: String::new(),
        })
        .collect();
    serde_json::to_value(t.report(&ReportCtx { events: &evs, seed: 1 })).unwrap()
}
