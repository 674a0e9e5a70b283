//! `ferrogpt eval` (oaieval's command line, plus `report` and `show`) and
//! `ferrogpt evalset` (oaievalset's). Argument parsing only; the work is in ferrogpt-evals.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use ferrogpt_evals::completion::{Completion, CompletionFn, HttpConfig, Loglikelihood};
use ferrogpt_evals::data::DataAccess;
use ferrogpt_evals::evalset::{self, SetEvent, SetOptions};
use ferrogpt_evals::log::RunLog;
use ferrogpt_evals::registry::Registry;
use ferrogpt_evals::runner::{self, Resolver, RunOptions};
use ferrogpt_evals::EvalError;
use serde_json::{Map, Value};

/// Options shared by `eval` and `evalset` (spelled as oaieval spells them; dashed aliases too).
#[derive(clap::Args, Clone)]
pub struct RunFlags {
    /// Extra registry root (repeatable), after the built-in one and ~/.evals
    #[arg(long = "registry_path", visible_alias = "registry-path")]
    registry_path: Vec<PathBuf>,
    /// Evaluate only the first N samples of the shuffled order (the same subset oaieval picks)
    #[arg(long = "max_samples", visible_alias = "max-samples")]
    max_samples: Option<usize>,
    /// Seed recorded in the spec and used for the bootstrap
    #[arg(long, default_value_t = 20_220_722)]
    seed: u64,
    /// Recorded as created_by
    #[arg(long, default_value = "")]
    user: String,
    /// Merged into the eval's args: k=v,k2=v2 (numbers parsed as in oaieval)
    #[arg(long = "extra_eval_params", visible_alias = "extra-eval-params", default_value = "")]
    extra_eval_params: String,
    /// Samples evaluated concurrently
    #[arg(long, env = "EVALS_THREADS", default_value_t = 10)]
    threads: usize,
    /// OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1
    #[arg(long = "api-base", visible_alias = "api_base", env = "OPENAI_BASE_URL")]
    api_base: Option<String>,
    /// Per-request timeout in seconds
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Retries per request on 408/409/429/5xx and network errors
    #[arg(long = "max-retries", default_value_t = 8)]
    max_retries: u32,
    /// Do not read or write the request cache
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Request cache folder (default $FERROGPT_CACHE/evals-requests or ~/.cache/ferrogpt/evals-requests)
    #[arg(long = "cache-dir")]
    cache_dir: Option<PathBuf>,
    /// Let registry entries read data files outside their registry's data/ folder (absolute
    /// paths, `..`), as upstream does; only for registries you trust
    #[arg(long = "allow-data-outside-registry")]
    allow_data_outside_registry: bool,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Write a self-contained HTML page comparing run logs side by side
    Report {
        /// Run logs (JSONL from ferrogpt eval or oaieval)
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
    },
    /// Print a run log's final report and per-sample outcomes
    Show {
        log: PathBuf,
        /// Sample rows to print
        #[arg(long, default_value_t = 50)]
        rows: usize,
    },
    /// Multiple-choice accuracy and calibration by log-likelihood (EXAMS, TruthfulQA MC1,
    /// BIG-bench MC tasks): report JSON, per-question outcomes and a reliability diagram
    Mc(McArgs),
    /// Chat models' behaviour on held-out generated requests, side by side: responses to
    /// disallowed requests, over-refusal, sensitive-request compliance, system-message
    /// adherence, helpfulness and manual-page questions, with 95% intervals
    Policy(PolicyArgs),
    /// List the evals (or eval sets) in the registry
    List {
        #[arg(long = "registry_path", visible_alias = "registry-path")]
        registry_path: Vec<PathBuf>,
        #[arg(long)]
        sets: bool,
    },
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Chat model folders, all answering the same requests
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Held-out requests (the generators' test templates and wording)
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Longest reply, in tokens
    #[arg(long, default_value_t = 96)]
    reply_tokens: usize,
    /// Seed of the requests
    #[arg(long, default_value_t = 2)]
    seed: u64,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    /// Completion function(s), comma-separated: dummy, local:PATH, gpt-4, chat:MODEL,
    /// completions:MODEL, or a completion_fns registry entry (the last one grades model-graded evals)
    #[arg(required = true)]
    completion_fn: Option<String>,
    /// Eval name (base name or full key)
    #[arg(required = true)]
    eval: Option<String>,
    /// Log file (default <tmp>/evallogs/<run_id>_<fn>_<eval>.jsonl)
    #[arg(long = "record_path", visible_alias = "record-path")]
    record_path: Option<PathBuf>,
    #[command(flatten)]
    flags: RunFlags,
}

#[derive(clap::Args)]
pub struct McArgs {
    /// Model to score, repeatable (one diagram overlays them): [LABEL=]SPEC, where SPEC is a
    /// model folder, local:PATH, completions:MODEL (an OpenAI-compatible endpoint with
    /// echo+logprobs, see --api-base) or dummy; LABEL defaults to the folder's name
    #[arg(long, required = true)]
    model: Vec<String>,
    /// exams (every language), exams:LANGUAGE, truthful_qa (MC1) or bigbench (with --data); a missing dataset's error names its install command
    #[arg(long)]
    task: ferrogpt_evals::multiple_choice::McTask,
    /// The task's file instead of the installed one: an EXAMS samples.jsonl or a BIG-bench task JSON
    #[arg(long)]
    data: Option<PathBuf>,
    /// Score at most N questions, evenly spaced through the task
    #[arg(long = "max-samples", visible_alias = "max_samples")]
    max_samples: Option<usize>,
    /// Folder for report.json, <label>.outcomes.jsonl and calibration.svg
    #[arg(long, default_value = "mc-eval")]
    out: PathBuf,
    /// Questions scored concurrently (for endpoints; a local model already uses every core per forward pass)
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// OpenAI-compatible endpoint for completions:MODEL, e.g. http://127.0.0.1:8080/v1
    #[arg(long = "api-base", visible_alias = "api_base", env = "OPENAI_BASE_URL")]
    api_base: Option<String>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct EvalsetArgs {
    /// Completion function(s), as for `ferrogpt eval`
    completion_fn: String,
    /// Eval set name
    eval_set: String,
    /// Start over instead of skipping evals finished by an earlier run of this set
    #[arg(long = "no-resume")]
    no_resume: bool,
    /// Keep going when an eval fails
    #[arg(long = "no-exit-on-error")]
    no_exit_on_error: bool,
    #[command(flatten)]
    flags: RunFlags,
}

/// oaieval's `--extra_eval_params`: int, else float, else string.
fn parse_extra(s: &str) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for kv in s.split(',').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--extra_eval_params: `{kv}` is not key=value"))?;
        let value = if let Ok(i) = v.parse::<i64>() {
            Value::from(i)
        } else if let Some(f) = v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            Value::Number(f)
        } else {
            Value::String(v.to_string())
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn http_config(flags: &RunFlags) -> anyhow::Result<HttpConfig> {
    let mut http = HttpConfig::from_env();
    if let Some(b) = &flags.api_base {
        http.base_url = b.clone();
    }
    http.set_timeout_secs(flags.timeout).context("--timeout")?;
    http.max_retries = flags.max_retries;
    http.cache_dir = (!flags.no_cache).then(|| {
        flags
            .cache_dir
            .clone()
            .unwrap_or_else(|| runner::cache_root().join("evals-requests"))
    });
    Ok(http)
}

fn load_registry(extra: &[PathBuf]) -> anyhow::Result<Registry> {
    Ok(Registry::load(&runner::registry_roots(extra))?)
}

/// `local:PATH`: a model folder run in-process through ferrogpt-infer. Prompts and parameters
/// are read by the same translation as the server's (`ferrogpt_infer::request`): chat prompts
/// use the model's chat template, string prompts are raw text under the BOS policy.
struct LocalFn {
    name: String,
    model: ferrogpt_infer::LocalModel,
}

/// Completion tokens when the eval does not say (the rest of the context is far more than any
/// eval's answer needs, and a small model rarely ends on its own).
const LOCAL_DEFAULT_MAX_TOKENS: usize = 256;

fn infer_err(name: &str, e: ferrogpt_infer::InferError) -> EvalError {
    EvalError::Other(format!("{name}: {e}"))
}

impl LocalFn {
    fn prompt_ids(&self, prompt: &Value) -> ferrogpt_evals::Result<Vec<u32>> {
        let tok = self.model.tokenizer();
        if ferrogpt_evals::prompt::is_chat(prompt) {
            let messages = ferrogpt_infer::request::messages(Some(prompt)).map_err(|e| infer_err(&self.name, e.into()))?;
            ferrogpt_infer::render_chat(tok, &messages).map_err(|e| infer_err(&self.name, e))
        } else {
            Ok(ferrogpt_infer::text_prompt(tok, &ferrogpt_evals::prompt::to_text(prompt)).ids)
        }
    }
}

impl CompletionFn for LocalFn {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete(&self, prompt: &Value, params: &Map<String, Value>) -> ferrogpt_evals::Result<Completion> {
        use ferrogpt_infer::request::{sampling, Endpoint, Sampling};
        let Sampling { mut params, n } = sampling(params, Endpoint::Chat).map_err(|e| infer_err(&self.name, e.into()))?;
        params.max_tokens.get_or_insert(LOCAL_DEFAULT_MAX_TOKENS);
        // Evals are reproducible: an unseeded eval samples with seed 0, choice `i` with seed + i.
        let seed = params.seed.unwrap_or(0);
        let ids = self.prompt_ids(prompt)?;
        let requests: Vec<ferrogpt_infer::GenerationRequest> = (0..n)
            .map(|i| {
                let params = ferrogpt_infer::SamplingParams {
                    seed: Some(seed.wrapping_add(i as u64)),
                    ..params.clone()
                };
                ferrogpt_infer::GenerationRequest::new(ids.clone(), params)
            })
            .collect();
        let outs = self.model.generate(&requests).map_err(|e| infer_err(&self.name, e))?;
        let completion_tokens: usize = outs.iter().map(|c| c.completion_tokens).sum();
        let texts: Vec<String> = outs.into_iter().map(|c| c.text).collect();
        let sampling = serde_json::json!({
            "prompt": prompt,
            "sampled": texts,
            "model": self.name,
            "usage": {"prompt_tokens": ids.len(), "completion_tokens": completion_tokens, "total_tokens": ids.len() + completion_tokens},
        });
        Ok(Completion {
            completions: texts,
            sampling: Some(sampling),
        })
    }

    /// Scores `continuation` after `context`, raw text under the BOS policy as for prompts;
    /// texts longer than the model's context are scored in windows (`score_windowed`).
    fn loglikelihood(&self, context: &str, continuation: &str) -> ferrogpt_evals::Result<Loglikelihood> {
        let tok = self.model.tokenizer();
        let s = self
            .model
            .score_windowed(&ferrogpt_infer::text_prompt(tok, context).ids, &tok.encode(continuation))
            .map_err(|e| infer_err(&self.name, e))?;
        Ok(Loglikelihood {
            logprob: s.logprob,
            is_greedy: s.is_greedy,
        })
    }
}

pub(crate) fn load_local(path: &Path) -> ferrogpt_evals::Result<Arc<dyn CompletionFn>> {
    let model = ferrogpt_infer::LocalModel::load(path).map_err(|e| infer_err(&format!("local:{}", path.display()), e))?;
    Ok(Arc::new(LocalFn {
        name: format!("local:{}", path.display()),
        model,
    }))
}

/// The names as given and the completion functions they resolved to.
type ResolvedFns = (Vec<String>, Vec<Arc<dyn CompletionFn>>);

fn resolve_fns(registry: &Registry, flags: &RunFlags, names: &str) -> anyhow::Result<ResolvedFns> {
    let resolver = Resolver {
        registry,
        http: http_config(flags)?,
        local: Some(&load_local),
    };
    let names: Vec<String> = names.split(',').map(str::to_string).collect();
    let fns = names
        .iter()
        .map(|n| resolver.resolve(n).with_context(|| format!("completion function `{n}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((names, fns))
}

fn options(flags: &RunFlags, names: Vec<String>, record_path: Option<PathBuf>) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        completion_fns: names,
        max_samples: flags.max_samples,
        seed: flags.seed,
        threads: flags.threads.max(1),
        record_path,
        created_by: flags.user.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        builtin_root: runner::builtin_registry(),
        data_access: if flags.allow_data_outside_registry {
            DataAccess::Anywhere
        } else {
            DataAccess::RegistryOnly
        },
        show_progress: !flags.quiet,
        extra_eval_params: parse_extra(&flags.extra_eval_params)?,
    })
}

fn print_report(outcome: &runner::RunOutcome) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Final report ({}, {} samples):", outcome.eval_name, outcome.n_samples);
    for (k, v) in &outcome.final_report.0 {
        let _ = writeln!(out, "{k}: {v}");
    }
    let _ = writeln!(out, "Log: {}", outcome.record_path.display());
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        Some(EvalCommand::Report { logs, output }) => {
            let runs = logs.iter().map(|p| RunLog::read(p)).collect::<Result<Vec<_>, _>>()?;
            let html = ferrogpt_evals::report::html_report(&runs);
            std::fs::write(&output, html).with_context(|| format!("writing {}", output.display()))?;
            println!("wrote {} ({} runs)", output.display(), runs.len());
            Ok(())
        }
        Some(EvalCommand::Show { log, rows }) => {
            let run = RunLog::read(&log)?;
            print!("{}", ferrogpt_evals::report::show(&run, rows));
            Ok(())
        }
        Some(EvalCommand::Mc(mc)) => run_mc(mc),
        Some(EvalCommand::Policy(policy)) => run_policy(policy),
        Some(EvalCommand::List { registry_path, sets }) => {
            let reg = load_registry(&registry_path)?;
            let names = if sets { reg.eval_set_names() } else { reg.eval_names() };
            for n in names.iter().filter(|n| sets || !n.contains('.')) {
                println!("{n}");
            }
            Ok(())
        }
        None => {
            let (Some(fn_names), Some(eval)) = (args.completion_fn, args.eval) else {
                anyhow::bail!("usage: ferrogpt eval COMPLETION_FN EVAL [options]");
            };
            let registry = load_registry(&args.flags.registry_path)?;
            let spec = registry.get_eval(&eval)?;
            let (names, fns) = resolve_fns(&registry, &args.flags, &fn_names)?;
            let opts = options(&args.flags, names, args.record_path)?;
            let outcome = runner::run_eval(&registry, &spec, &fns, &opts)?;
            print_report(&outcome);
            Ok(())
        }
    }
}

/// `LABEL=SPEC` or `SPEC`: the label and the completion function's name (a folder is `local:`).
fn mc_model(arg: &str) -> (String, String) {
    let (label, spec) = match arg.split_once('=') {
        Some((label, spec)) if !label.is_empty() && !label.contains('/') => (Some(label.to_string()), spec),
        _ => (None, arg),
    };
    let spec = if Path::new(spec).is_dir() {
        format!("local:{spec}")
    } else {
        spec.to_string()
    };
    let label = label.unwrap_or_else(|| {
        let path = spec.strip_prefix("local:").unwrap_or(&spec);
        Path::new(path)
            .file_name()
            .map_or_else(|| spec.clone(), |n| n.to_string_lossy().into_owned())
    });
    (label, spec)
}

fn run_policy(args: PolicyArgs) -> anyhow::Result<()> {
    let requests = ferrogpt_train::examples::chat_examples(ferrogpt_chatdata::Split::Test, args.requests, args.seed)?;
    let mut cards = Vec::new();
    for model in &args.model {
        let (card, replies) = ferrogpt_train::sft::behaviour(model, &requests, args.reply_tokens)
            .with_context(|| format!("answering with {}", model.display()))?;
        let unread = replies.iter().filter(|r| r.is_none()).count();
        if unread > 0 {
            println!(
                "{}: {unread} of {} requests do not fit its context and are not scored",
                model.display(),
                requests.len()
            );
        }
        cards.push((model.display().to_string(), card));
    }
    let columns: Vec<(&str, &ferrogpt_chatdata::Scorecard)> = cards.iter().map(|(name, card)| (name.as_str(), card)).collect();
    print!("{}", ferrogpt_chatdata::score::table(&columns));
    Ok(())
}

/// Completion functions by name (`chat:MODEL`, `local:PATH`, a completion_fns registry
/// entry), with the API base from the environment unless `api_base` is given.
pub(crate) fn resolve_completion_fns(names: &[String], api_base: Option<&str>) -> anyhow::Result<Vec<Arc<dyn CompletionFn>>> {
    let registry = load_registry(&[])?;
    let mut http = HttpConfig::from_env();
    if let Some(base) = api_base {
        http.base_url = base.to_string();
    }
    let resolver = Resolver {
        registry: &registry,
        http,
        local: Some(&load_local),
    };
    names
        .iter()
        .map(|name| resolver.resolve(name).with_context(|| format!("completion function `{name}`")))
        .collect()
}

fn run_mc(args: McArgs) -> anyhow::Result<()> {
    use ferrogpt_evals::multiple_choice::{evenly_spaced, write_outputs};
    let loaded = args.task.load(args.data.as_deref())?;
    let questions = match args.max_samples {
        Some(max) => evenly_spaced(loaded.questions.clone(), max),
        None => loaded.questions.clone(),
    };
    anyhow::ensure!(!questions.is_empty(), "task {} has no questions to score", args.task);
    let source = match &loaded.files[..] {
        [one] => one.display().to_string(),
        [first, ..] => format!("{} files ({} first)", loaded.files.len(), first.display()),
        [] => "no files".to_string(),
    };
    println!(
        "{}: {} of {} questions from {source}",
        args.task,
        questions.len(),
        loaded.questions.len()
    );
    let mut labelled: Vec<(String, String)> = Vec::new();
    for arg in &args.model {
        let (label, spec) = mc_model(arg);
        anyhow::ensure!(
            labelled.iter().all(|(l, _)| *l != label),
            "two models are labelled `{label}`: name them LABEL=SPEC"
        );
        labelled.push((label, spec));
    }
    let specs: Vec<String> = labelled.iter().map(|(_, spec)| spec.clone()).collect();
    let fns = resolve_completion_fns(&specs, args.api_base.as_deref())?;
    let models: Vec<(String, String, Arc<dyn CompletionFn>)> = labelled
        .into_iter()
        .zip(fns)
        .map(|((label, spec), model)| (label, spec, model))
        .collect();
    let runs = score_mc_models(&questions, models, args.jobs, !args.quiet)?;
    write_outputs(&args.out, &args.task, &loaded, &questions, &runs)?;
    println!(
        "wrote {} and {}",
        args.out.join("report.json").display(),
        args.out.join("calibration.svg").display()
    );
    Ok(())
}

/// Scores `questions` with each `(label, spec, completion function)` in turn, printing each
/// model's figures.
pub(crate) fn score_mc_models(
    questions: &[ferrogpt_evals::multiple_choice::McQuestion],
    models: Vec<(String, String, Arc<dyn CompletionFn>)>,
    jobs: usize,
    progress: bool,
) -> anyhow::Result<Vec<ferrogpt_evals::multiple_choice::ModelRun>> {
    use ferrogpt_evals::multiple_choice::{score_questions, McReport, ModelRun};
    let mut runs = Vec::new();
    for (label, spec, model) in models {
        let bar = ferrogpt_progress::Progress::bar(
            progress,
            &label,
            questions.len() as u64,
            ferrogpt_progress::Counter::Count("questions"),
        );
        let outcomes = score_questions(model.as_ref(), questions, jobs, &|| bar.inc(1))?;
        bar.finish();
        let report = McReport::from_outcomes(&outcomes).context("no outcomes")?;
        let [lo, hi] = report.accuracy_ci95;
        println!(
            "{label}: n={} accuracy {:.3} (95% CI {lo:.3}-{hi:.3}) acc_norm {:.3} chance {:.3} ECE {:.3}",
            report.n, report.accuracy, report.acc_norm, report.chance, report.ece
        );
        runs.push(ModelRun {
            label,
            model: spec,
            outcomes,
            report,
        });
    }
    Ok(runs)
}

pub fn run_set(args: EvalsetArgs) -> anyhow::Result<()> {
    let registry = load_registry(&args.flags.registry_path)?;
    let specs = registry.get_eval_set(&args.eval_set)?;
    let (names, fns) = resolve_fns(&registry, &args.flags, &args.completion_fn)?;
    let opts = options(&args.flags, names, None)?;
    let set = SetOptions {
        progress_file: evalset::progress_file(&args.completion_fn, &args.eval_set),
        resume: !args.no_resume,
        keep_going: args.no_exit_on_error,
    };
    let outcome = evalset::run_eval_set(&registry, &specs, &fns, &opts, &set, |event| match event {
        SetEvent::Skipped { key } => println!("skipping {key} (done in an earlier run; --no-resume to redo)"),
        SetEvent::Finished(run) => print_report(run),
        SetEvent::Failed { key, error } => eprintln!("{key}: {error}"),
    })?;
    let failed: Vec<&str> = outcome.failed.iter().map(|(key, _)| key.as_str()).collect();
    anyhow::ensure!(failed.is_empty(), "{} evals failed: {}", failed.len(), failed.join(", "));
    println!("eval set {}: {} evals done", args.eval_set, specs.len());
    Ok(())
}
