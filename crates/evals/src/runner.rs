//! Running an eval: resolve completion functions by name as `oaieval` does, visit the
//! samples in upstream's shuffled order with bounded parallelism, record the events and
//! write the log with the final report last.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrogpt_progress::{Counter, Progress};
use serde_json::{json, Map, Value};

use crate::completion::{is_chat_model, ApiKind, CompletionFn, Dummy, HttpClient, HttpConfig, OpenAiFn};
use crate::data::DataAccess;
use crate::error::{EvalError, Result};
use crate::log::{Event, LogWriter, Report};
use crate::registry::{EvalSpec, Registry};
use crate::templates::{self, BuildCtx, ReportCtx, SampleCtx};

/// Builds the in-process local-model completion function for `local:PATH` names.
pub type LocalLoader = dyn Fn(&Path) -> Result<Arc<dyn CompletionFn>> + Send + Sync;

/// Turns completion-function names into completion functions.
pub struct Resolver<'a> {
    pub registry: &'a Registry,
    pub http: HttpConfig,
    pub local: Option<&'a LocalLoader>,
}

fn openai_class(cls: &str) -> Option<ApiKind> {
    match cls {
        "evals.completion_fns.openai:OpenAIChatCompletionFn" => Some(ApiKind::Chat),
        "evals.completion_fns.openai:OpenAICompletionFn" => Some(ApiKind::Completions),
        _ => None,
    }
}

impl Resolver<'_> {
    fn client(&self, api_base: Option<&str>, api_key: Option<&str>) -> Arc<HttpClient> {
        let mut cfg = self.http.clone();
        if let Some(b) = api_base {
            cfg.base_url = b.to_string();
        }
        if let Some(k) = api_key {
            cfg.api_key = Some(k.to_string());
        }
        Arc::new(HttpClient::new(cfg))
    }

    /// Resolve one name: `dummy`; `local:PATH`; `chat:MODEL` / `completions:MODEL`; an
    /// OpenAI chat model name (`gpt-4`, `gpt-3.5-turbo`, ...); a `completion_fns` registry
    /// entry; otherwise a model the endpoint lists under `/models` (completions API).
    pub fn resolve(&self, name: &str) -> Result<Arc<dyn CompletionFn>> {
        if name == "dummy" {
            return Ok(Arc::new(Dummy));
        }
        if let Some(path) = name.strip_prefix("local:") {
            let loader = self
                .local
                .ok_or_else(|| EvalError::Other(format!("`{name}`: this build has no local-model support")))?;
            return loader(Path::new(path));
        }
        let plain = |kind, model: &str| -> Arc<dyn CompletionFn> {
            Arc::new(OpenAiFn::new(name, model, kind, self.client(None, None), Map::new()))
        };
        if let Some(model) = name.strip_prefix("chat:") {
            return Ok(plain(ApiKind::Chat, model));
        }
        if let Some(model) = name.strip_prefix("completions:") {
            return Ok(plain(ApiKind::Completions, model));
        }
        if is_chat_model(name) {
            return Ok(plain(ApiKind::Chat, name));
        }
        if let Some(spec) = self.registry.get_completion_fn(name) {
            let spec = spec?;
            let kind = openai_class(&spec.cls).ok_or_else(|| EvalError::UnsupportedCompletionFn(spec.cls.clone()))?;
            let s = |k: &str| spec.args.get(k).and_then(Value::as_str);
            let model = s("model").ok_or_else(|| EvalError::BadEntry {
                kind: "completion fn",
                name: spec.key.clone(),
                message: "`args.model` is required".into(),
            })?;
            let extra = spec
                .args
                .get("extra_options")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            return Ok(Arc::new(OpenAiFn::new(
                name,
                model,
                kind,
                self.client(s("api_base"), s("api_key")),
                extra,
            )));
        }
        let listed = self.client(None, None).get_json("models")?;
        let known = listed
            .get("data")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|m| m.get("id").and_then(Value::as_str) == Some(name)));
        if known {
            return Ok(plain(ApiKind::Completions, name));
        }
        Err(EvalError::Other(format!(
            "could not find CompletionFn `{name}`: not dummy, local:PATH, a chat model name, a completion_fns registry entry, or a model listed by {}/models",
            self.http.base_url
        )))
    }
}

/// Settings for one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Names as given on the command line (recorded in the spec).
    pub completion_fns: Vec<String>,
    pub max_samples: Option<usize>,
    /// Upstream's `--seed` (default 20220722); also seeds the bootstrap.
    pub seed: u64,
    /// Concurrent samples (upstream's `EVALS_THREADS`, default 10).
    pub threads: usize,
    pub record_path: Option<PathBuf>,
    pub created_by: String,
    pub command: String,
    pub builtin_root: Option<PathBuf>,
    /// Where registry entries' data files may live (confined to their registry by default).
    pub data_access: DataAccess,
    pub show_progress: bool,
    /// Merged into the eval's `args` (upstream's `--extra_eval_params`).
    pub extra_eval_params: Map<String, Value>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            completion_fns: vec!["dummy".into()],
            max_samples: None,
            seed: 20_220_722,
            threads: 10,
            record_path: None,
            created_by: String::new(),
            command: String::new(),
            builtin_root: None,
            data_access: DataAccess::default(),
            show_progress: false,
            extra_eval_params: Map::new(),
        }
    }
}

/// What a finished run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub eval_name: String,
    pub final_report: Report,
    pub record_path: PathBuf,
    pub events: Vec<Event>,
    pub n_samples: usize,
}

/// Python's `str(datetime.utcnow())` (no offset) for the spec's `created_at`.
fn naive_timestamp() -> String {
    let t = crate::log::timestamp();
    t.trim_end_matches("+00:00").to_string()
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c == '/' || c == ',' { '_' } else { c }).collect()
}

/// Run one eval end to end and write its log.
pub fn run_eval(registry: &Registry, spec: &EvalSpec, fns: &[Arc<dyn CompletionFn>], opts: &RunOptions) -> Result<RunOutcome> {
    let mut spec = spec.clone();
    for (k, v) in &opts.extra_eval_params {
        spec.args.insert(k.clone(), v.clone());
    }
    let (base, split) = spec.base_and_split()?;
    let template = templates::build(&BuildCtx {
        spec: &spec,
        registry,
        builtin_root: opts.builtin_root.as_deref(),
        data_access: opts.data_access,
        n_fns: fns.len(),
    })?;
    let samples = template.samples()?;
    let mut order = crate::pyrandom::sample_order(samples.len());
    if let Some(n) = opts.max_samples {
        order.truncate(n);
    }

    let run_id = crate::log::new_run_id();
    let record_path = opts.record_path.clone().unwrap_or_else(|| {
        std::env::temp_dir().join("evallogs").join(format!(
            "{run_id}_{}_{}.jsonl",
            sanitize(&opts.completion_fns.join(",")),
            sanitize(&spec.key)
        ))
    });
    let run_spec = json!({
        "completion_fns": opts.completion_fns,
        "eval_name": spec.key,
        "base_eval": base,
        "split": split,
        "run_config": {
            "completion_fns": opts.completion_fns,
            "eval_spec": {
                "cls": spec.cls,
                "registry_path": spec.registry_path.display().to_string(),
                "args": spec.args,
                "key": spec.key,
                "group": spec.group,
            },
            "seed": opts.seed,
            "max_samples": opts.max_samples,
            "command": opts.command,
            "initial_settings": {"visible": opts.max_samples.is_none()},
        },
        "created_by": opts.created_by,
        "run_id": run_id,
        "created_at": naive_timestamp(),
    });
    let mut writer = LogWriter::create(&record_path, &run_spec)?;

    let per_sample = run_samples(template.as_ref(), &samples, &order, fns, opts, &base, &split)?;

    let mut events = Vec::new();
    for (sample_id, recorded) in per_sample {
        for (kind, data, created_at) in recorded {
            let ev = Event {
                run_id: run_id.clone(),
                event_id: events.len() as u64,
                sample_id: Some(sample_id.clone()),
                kind,
                data,
                created_by: opts.created_by.clone(),
                created_at,
            };
            writer.event(&ev)?;
            events.push(ev);
        }
    }
    let mut report = template.report(&ReportCtx {
        events: &events,
        seed: opts.seed,
    });
    add_usage(&mut report, &events);
    writer.finish(&report, &run_id)?;
    Ok(RunOutcome {
        run_id,
        eval_name: spec.key.clone(),
        final_report: report,
        record_path,
        events,
        n_samples: order.len(),
    })
}

type SampleEvents = (String, Vec<(String, Value, String)>);

/// Evaluate the samples in `order` on `opts.threads` workers; results come back in `order`.
/// The first failing sample stops the run (completed requests stay in the cache).
fn run_samples(
    template: &dyn templates::Template,
    samples: &[Value],
    order: &[usize],
    fns: &[Arc<dyn CompletionFn>],
    opts: &RunOptions,
    base: &str,
    split: &str,
) -> Result<Vec<SampleEvents>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<SampleEvents>>> = order.iter().map(|_| Mutex::new(None)).collect();
    let first_error: Mutex<Option<EvalError>> = Mutex::new(None);
    let bar = Progress::bar(opts.show_progress, base, order.len() as u64, Counter::Count("samples"));
    let workers = opts.threads.clamp(1, order.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let pos = next.fetch_add(1, Ordering::Relaxed);
                let Some(&idx) = order.get(pos) else { return };
                let sample_id = format!("{base}.{split}.{idx}");
                let mut ctx = SampleCtx::new(sample_id.clone(), fns);
                match template.eval_sample(&samples[idx], &mut ctx) {
                    Ok(()) => {
                        if let Ok(mut slot) = slots[pos].lock() {
                            *slot = Some((sample_id, ctx.events));
                        }
                        bar.inc(1);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    bar.finish();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| EvalError::Other("a worker thread died".into()))
        })
        .collect()
}

/// Upstream's `add_token_usage_to_result`: sum the `usage` of `sampling` events.
fn add_usage(report: &mut Report, events: &[Event]) {
    let mut totals: Vec<(String, i64)> = Vec::new();
    for ev in events.iter().filter(|e| e.kind == "sampling") {
        let Some(usage) = ev.data.get("usage").and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in usage {
            let Some(n) = v.as_i64().or_else(|| v.is_null().then_some(0)) else {
                continue;
            };
            match totals.iter_mut().find(|(key, _)| key == k) {
                Some((_, t)) => *t += n,
                None => totals.push((k.clone(), n)),
            }
        }
    }
    for (k, t) in totals {
        let key = format!("usage_{k}");
        if report.get(&key).is_none() {
            report.push(&key, t);
        }
    }
}

/// The built-in registry shipped with this crate, if its folder exists: the
/// `FERROGPT_EVALS_REGISTRY` variable, else the source tree's `crates/evals/registry`.
pub fn builtin_registry() -> Option<PathBuf> {
    std::env::var_os("FERROGPT_EVALS_REGISTRY")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/registry"))))
        .filter(|p| p.is_dir())
}

/// ferrogpt's download cache: `$FERROGPT_CACHE`, else `~/.cache/ferrogpt`.
pub fn cache_root() -> PathBuf {
    if let Some(c) = std::env::var_os("FERROGPT_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("ferrogpt")
}

/// The PyPI wheel whose `evals/registry` is upstream's published registry.
pub const UPSTREAM_WHEEL: &str = "evals-3.0.1.post1-py3-none-any.whl";

/// Where upstream's wheel is kept: `$FERROGPT_EVALS_WHEEL_DIR`, else `<cache>/evals-wheel`.
pub fn upstream_wheel_dir() -> PathBuf {
    std::env::var_os("FERROGPT_EVALS_WHEEL_DIR").map_or_else(|| cache_root().join("evals-wheel"), PathBuf::from)
}

/// Upstream's registry as unpacked from its wheel, under [`upstream_wheel_dir`].
pub fn upstream_registry_dir() -> PathBuf {
    upstream_wheel_dir().join("unpacked/evals/registry")
}

/// The shell commands that download and unpack upstream's wheel where
/// [`upstream_registry_dir`] looks.
pub fn upstream_install_command() -> String {
    let dir = upstream_wheel_dir();
    format!(
        "pip download --no-deps evals==3.0.1.post1 -d {d} && unzip -q -o {d}/{UPSTREAM_WHEEL} -d {d}/unpacked",
        d = dir.display()
    )
}

/// The registry roots for a run: the built-in one, `~/.evals` if present (as upstream),
/// then each `--registry_path` in order.
pub fn registry_roots(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = builtin_registry().into_iter().collect();
    if let Some(home) = std::env::var_os("HOME") {
        let dot = PathBuf::from(home).join(".evals");
        if dot.is_dir() {
            roots.push(dot);
        }
    }
    roots.extend(extra.iter().cloned());
    roots
}
