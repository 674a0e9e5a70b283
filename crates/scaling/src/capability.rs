//! Capability prediction in the manner of the GPT-4 report's HumanEval figure: pass rates on
//! held-out synthetic coding tasks ([`ferrogpt_data::code_task`]) measured by sampling, then
//! `-E[log pass_rate] = α·C^(−k)` fitted per difficulty bucket and extrapolated in compute.
//!
//! Method (GPT-4 technical report, section 3.1): keep only the tasks whose pass rate every
//! fitted model has above zero (a log pass rate must be finite), sort them by how well the
//! smallest models do, cut them into buckets of equal size, and fit the power law to each
//! bucket's mean log pass rate. The fit is ordinary least squares of `ln(−E[log p])` on `ln C`,
//! which is exact and closed-form; a bootstrap over tasks within each bucket and over the fitted
//! runs gives the 90% interval.
//!
//! Pass-rate estimator. The GPT-4 report needed models big enough to solve each kept problem at
//! least once in its samples; the models of a laptop ladder at 1/1,000 of its target's compute
//! solve a held-out task once in 10^5 to 10^13 samples, so sample frequencies are zero and the
//! report's filter keeps nothing. The pass probability is instead computed exactly over the passing completions we
//! know: `p̂ = Σ_c P(the sampler emits the tokens of c, then stops)` over the task's reference
//! (which passes by construction) and every distinct passing completion the samples found,
//! each along its canonical tokenization and stopped by `<|end|>` or a token that starts with a
//! newline. Distinct completions are disjoint events, so `p̂` is a lower bound of the true pass
//! rate that is exact once the samples have found every passing completion; on the ladder's
//! largest run the mean of `p̂` over tasks was within 2% of the sampled pass rate (0.0685 vs
//! 0.0699 with 256 samples). It has no sampling noise and never underflows to zero, so every
//! model of a ladder gets a finite `log p̂` for every task. Fits and verification use the same
//! estimator, so predicted and measured values are comparable.

use crate::ScalingError;
use ferrogpt_data::code_task::{check_completion, CodeTask};
use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::KvCache;
use ferrogpt_infer::{text_prompt, GenerationRequest, LocalModel, SamplingParams};
use ferrogpt_rng::{mix, SplitMix64};
use ferrogpt_tokenizer::Special;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples of the tasks and runs for the 90% interval.
const BOOTSTRAP_DRAWS: usize = 200;
/// Fixed seed of the bootstrap, so a fit is reproducible.
const BOOTSTRAP_SEED: u64 = 0xB007_57AB;

/// How many of `samples` completions passed, and the exact probability of the passing
/// completions found, per task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassRates {
    pub task_ids: Vec<String>,
    pub samples: usize,
    pub passes: Vec<usize>,
    /// `ln p̂` per task (see the module documentation). Empty in measurements made before the
    /// estimator existed, which [`PassRates::is_complete`] reports so they are measured again.
    #[serde(default)]
    pub log_pass_probability: Vec<f64>,
}

impl PassRates {
    /// The raw fraction of samples of task `i` that passed.
    pub fn pass_rate(&self, i: usize) -> f64 {
        self.passes[i] as f64 / self.samples as f64
    }

    /// `ln p̂` of task `i`, the estimator the fits use (see the module documentation).
    pub fn log_pass_rate(&self, i: usize) -> f64 {
        self.log_pass_probability[i]
    }

    /// The mean over all tasks of `ln p̂`; `None` for a measurement without `p̂`.
    pub fn mean_log_pass_rate(&self) -> Option<f64> {
        (self.is_complete() && !self.task_ids.is_empty())
            .then(|| self.log_pass_probability.iter().sum::<f64>() / self.task_ids.len() as f64)
    }

    /// Whether every task has its sample count and its `ln p̂`.
    pub fn is_complete(&self) -> bool {
        self.passes.len() == self.task_ids.len() && self.log_pass_probability.len() == self.task_ids.len()
    }

    /// The mean over all tasks of the raw pass rate.
    pub fn mean_pass_rate(&self) -> f64 {
        if self.passes.is_empty() {
            return 0.0;
        }
        (0..self.passes.len()).map(|i| self.pass_rate(i)).sum::<f64>() / self.passes.len() as f64
    }
}

/// Samples `samples` completions of every task at `temperature`, counts those that pass
/// ([`check_completion`]) and computes `ln p̂` over the reference and the distinct passing
/// completions (see the module documentation). Deterministic for a given `seed`, model and
/// task list; see [`sample_completions`] for how completions are decoded.
pub fn measure_pass_rates(
    model: &LocalModel,
    tasks: &[CodeTask],
    samples: usize,
    temperature: f32,
    seed: u64,
) -> Result<PassRates, ScalingError> {
    let prompts = task_prompts(model, tasks)?;
    let completions = sample_prompts(model, &prompts, samples, temperature, seed)?;
    let stops = stop_tokens(model);
    let mut passes = Vec::with_capacity(tasks.len());
    let mut log_pass_probability = Vec::with_capacity(tasks.len());
    for ((task, sampled), prompt) in tasks.iter().zip(&completions).zip(&prompts) {
        let passing: Vec<&String> = sampled.iter().filter(|c| check_completion(task, c)).collect();
        passes.push(passing.len());
        // The reference as the sampler would write it: the space after `A:` is the model's.
        let mut known = vec![format!(" {}", task.reference)];
        for c in passing {
            if !known.contains(c) {
                known.push(c.clone());
            }
        }
        log_pass_probability.push(log_probability_of_any(model, prompt, &known, &stops, temperature)?);
    }
    Ok(PassRates {
        task_ids: tasks.iter().map(|t| t.id.clone()).collect(),
        samples,
        passes,
        log_pass_probability,
    })
}

/// Tokens after which [`sample_completions`] ends a completion without adding to its text:
/// `<|end|>` and every token whose text starts with a newline (the completion stops at a
/// newline, [`COMPLETION_STOP`]; a token with text before its newline keeps that text, and
/// its probability is not a stop's).
fn stop_tokens(model: &LocalModel) -> Vec<usize> {
    let tok = model.tokenizer();
    let end = tok.special_id(Special::End);
    (0..tok.vocab_size() as u32)
        .filter(|&t| t == end || (!tok.is_special(t) && tok.token_bytes(t).first() == Some(&b'\n')))
        .map(|t| t as usize)
        .collect()
}

/// `ln Σ_c P(c, then a stop token | prompt)` at `temperature` over `completions`, each along
/// its canonical tokenization; completions the sampler could not produce within the prompt's
/// token budget count zero. The completions must be distinct, so the events are disjoint.
fn log_probability_of_any(
    model: &LocalModel,
    prompt: &TaskPrompt,
    completions: &[String],
    stops: &[usize],
    temperature: f32,
) -> Result<f64, ScalingError> {
    let tok = model.tokenizer();
    let engine = model.model();
    let vocab = engine.cfg.vocab_size;
    let sequences: Vec<Vec<u32>> = completions
        .iter()
        .map(|c| tok.encode(c))
        // The stop is generated after the completion's tokens, within the budget.
        .filter(|c| !c.is_empty() && c.len() < prompt.budget)
        .map(|c| prompt.tokens.iter().copied().chain(c).collect())
        .collect();
    if sequences.is_empty() {
        return Ok(f64::NEG_INFINITY);
    }
    let max_len = sequences.iter().map(Vec::len).max().unwrap_or(1);
    let mut cache = KvCache::<f32>::new(&engine.cfg, sequences.len(), max_len);
    let chunks: Vec<SeqChunk> = sequences
        .iter()
        .enumerate()
        .map(|(slot, tokens)| SeqChunk { slot, tokens })
        .collect();
    let mut logits = Vec::new();
    engine.forward_cached(&mut cache, &chunks, LogitsFor::All, &mut logits)?;
    let inv_t = 1.0 / temperature as f64;
    let mut rows = logits.chunks_exact(vocab);
    let mut per_completion = Vec::with_capacity(sequences.len());
    for seq in &sequences {
        let mut log_p = 0.0;
        // Row `i` of a sequence predicts its token `i + 1`; the last row predicts the stop.
        for (i, row) in rows.by_ref().take(seq.len()).enumerate() {
            if i + 1 < prompt.tokens.len() {
                continue;
            }
            let scaled = |t: usize| row[t] as f64 * inv_t;
            log_p += match seq.get(i + 1) {
                Some(&next) => scaled(next as usize),
                None => log_sum_exp(stops.iter().map(|&t| scaled(t))),
            } - log_sum_exp((0..vocab).map(scaled));
        }
        per_completion.push(log_p);
    }
    Ok(log_sum_exp(per_completion.into_iter()))
}

/// `ln Σ exp(x)`, stable for large and for infinitely negative terms.
fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// A completion ends at a newline (not included), as a one-line answer does.
const COMPLETION_STOP: &str = "\n";

/// `samples` completions of every task at `temperature`, per task in order, decoded together
/// by [`LocalModel::generate`]. A completion stops at a newline (not included), `<|end|>`, or a
/// budget of twice the reference's length in tokens plus four. Sample `j` of task `t` draws
/// with seed `mix(seed ^ mix(t·samples + j))`, so the result is deterministic for a given
/// `seed`, model and task list.
pub fn sample_completions(
    model: &LocalModel,
    tasks: &[CodeTask],
    samples: usize,
    temperature: f32,
    seed: u64,
) -> Result<Vec<Vec<String>>, ScalingError> {
    sample_prompts(model, &task_prompts(model, tasks)?, samples, temperature, seed)
}

fn task_prompts(model: &LocalModel, tasks: &[CodeTask]) -> Result<Vec<TaskPrompt>, ScalingError> {
    tasks.iter().map(|t| TaskPrompt::new(model, t)).collect()
}

/// [`sample_completions`] of already tokenized tasks.
fn sample_prompts(
    model: &LocalModel,
    prompts: &[TaskPrompt],
    samples: usize,
    temperature: f32,
    seed: u64,
) -> Result<Vec<Vec<String>>, ScalingError> {
    if samples == 0 {
        return Err(ScalingError::Capability("samples must be at least 1".into()));
    }
    if !(temperature > 0.0 && temperature <= 2.0) {
        return Err(ScalingError::Capability(format!(
            "temperature {temperature} must be in (0, 2]: pass rates need varied samples"
        )));
    }
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .enumerate()
        .flat_map(|(t, prompt)| {
            (0..samples).map(move |j| {
                let params = SamplingParams {
                    temperature,
                    max_tokens: Some(prompt.budget),
                    seed: Some(mix(seed ^ mix((t * samples + j) as u64))),
                    stop: vec![COMPLETION_STOP.to_string()],
                    ..SamplingParams::default()
                };
                GenerationRequest::new(prompt.tokens.clone(), params)
            })
        })
        .collect();
    let completions = model.generate(&requests)?;
    // Requests were made task by task, `samples` per task.
    Ok(completions
        .chunks(samples)
        .map(|task| task.iter().map(|c| c.text.clone()).collect())
        .collect())
}

/// A task's tokenized model input and completion budget.
struct TaskPrompt {
    tokens: Vec<u32>,
    budget: usize,
}

impl TaskPrompt {
    fn new(model: &LocalModel, task: &CodeTask) -> Result<TaskPrompt, ScalingError> {
        let tok = model.tokenizer();
        let tokens = text_prompt(tok, &task.model_input()).ids;
        let context = model.context_length();
        if tokens.len() >= context {
            return Err(ScalingError::PromptTooLong {
                what: format!("task {}", task.id),
                tokens: tokens.len(),
                context,
            });
        }
        let reference = tok.encode(&format!(" {}", task.reference)).len();
        Ok(TaskPrompt {
            budget: (2 * reference + 4).min(context - tokens.len()),
            tokens,
        })
    }
}

/// `y = α·C^(−k)`, the law of `−E[log pass_rate]` in training compute `C`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    pub alpha: f64,
    pub k: f64,
}

impl PowerLaw {
    /// `−E[log pass_rate]` at `compute`.
    pub fn eval(&self, compute: f64) -> f64 {
        self.alpha * compute.powf(-self.k)
    }

    /// Least squares of `ln y` on `ln C`; `None` when the compute values do not vary or a `y`
    /// is not positive.
    fn fit(points: &[(f64, f64)]) -> Option<PowerLaw> {
        if points.iter().any(|&(c, y)| !(c > 0.0 && y > 0.0 && c.is_finite() && y.is_finite())) {
            return None;
        }
        let n = points.len() as f64;
        let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), &(c, y)| (a + c.ln(), b + y.ln()));
        let (mx, my) = (sx / n, sy / n);
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for &(c, y) in points {
            let dx = c.ln() - mx;
            sxx += dx * dx;
            sxy += dx * (y.ln() - my);
        }
        if sxx <= 1e-12 {
            return None;
        }
        let slope = sxy / sxx;
        Some(PowerLaw {
            alpha: (my - slope * mx).exp(),
            k: -slope,
        })
    }
}

/// The fit of one difficulty bucket (or of all kept tasks together).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketFit {
    /// 0 is the easiest bucket; the aggregate has `None`.
    pub bucket: Option<usize>,
    pub task_ids: Vec<String>,
    /// Geometric mean of `p̂` over these tasks under the smallest fitted model(s).
    pub smallest_pass_rate: f64,
    /// `(compute, −E[log pass_rate])` per fitted model.
    pub points: Vec<(f64, f64)>,
    pub law: PowerLaw,
    /// The law refitted on task resamples, for intervals.
    pub bootstrap: Vec<PowerLaw>,
}

impl BucketFit {
    fn predict(&self, compute: f64) -> BucketPrediction {
        let y = self.law.eval(compute);
        let mut draws: Vec<f64> = self.bootstrap.iter().map(|l| -l.eval(compute)).collect();
        draws.sort_by(f64::total_cmp);
        let interval90 = if draws.is_empty() {
            (-y, -y)
        } else {
            (quantile(&draws, 0.05), quantile(&draws, 0.95))
        };
        BucketPrediction {
            bucket: self.bucket,
            mean_log_pass_rate: -y,
            pass_rate: (-y).exp(),
            interval90,
        }
    }
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Per-bucket and aggregate power laws of `−E[log pass_rate]` in compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityFit {
    pub buckets: Vec<BucketFit>,
    pub aggregate: BucketFit,
    /// Tasks measured, and those dropped because some fitted model gives them no passing
    /// probability (only when `ln p̂` underflows, or a reference is longer than its token budget).
    pub tasks_measured: usize,
    pub tasks_dropped: usize,
    /// Compute of the fitted models.
    pub fit_compute: Vec<f64>,
}

/// Predicted `E[log pass_rate]` of one bucket at a compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketPrediction {
    pub bucket: Option<usize>,
    pub mean_log_pass_rate: f64,
    /// `exp(E[log pass_rate])`: the geometric-mean pass rate.
    pub pass_rate: f64,
    /// Bootstrap 90% interval of `mean_log_pass_rate`.
    pub interval90: (f64, f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityPrediction {
    pub compute: f64,
    pub buckets: Vec<BucketPrediction>,
    pub aggregate: BucketPrediction,
}

/// Prediction against measurement for one bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketCheck {
    pub bucket: Option<usize>,
    pub predicted_mean_log_pass_rate: f64,
    pub actual_mean_log_pass_rate: f64,
    pub predicted_pass_rate: f64,
    pub actual_pass_rate: f64,
    pub interval90: (f64, f64),
    pub inside_interval: bool,
    /// Tasks of the bucket found in the measurement.
    pub tasks: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityVerification {
    pub compute: f64,
    pub buckets: Vec<BucketCheck>,
    pub aggregate: BucketCheck,
    /// Mean over buckets of `|predicted − actual|` in `E[log pass_rate]`.
    pub mean_abs_error: f64,
    /// `|predicted − actual| / actual` of the aggregate `−E[log pass_rate]`.
    pub relative_error: f64,
    /// Fitted tasks absent from the measurement (left out of the actual values).
    pub missing_tasks: usize,
}

/// `points` with the runs of equal compute merged: passes and samples summed per task, and
/// `p̂` averaged over the runs (weighted by their samples), so a compute's pass probability is
/// that of a model drawn from its seeds.
fn pool_seeds(points: &[(f64, PassRates)]) -> Vec<(f64, PassRates)> {
    let mut pooled: Vec<(f64, PassRates)> = Vec::new();
    for (c, rates) in points {
        match pooled.iter_mut().find(|(pc, _)| (pc - c).abs() <= 1e-9 * pc) {
            Some((_, p)) => {
                let (w_pooled, w_new) = ((p.samples as f64).ln(), (rates.samples as f64).ln());
                p.samples += rates.samples;
                let w_total = (p.samples as f64).ln();
                for (sum, n) in p.passes.iter_mut().zip(&rates.passes) {
                    *sum += n;
                }
                for (mean, &new) in p.log_pass_probability.iter_mut().zip(&rates.log_pass_probability) {
                    *mean = log_sum_exp([w_pooled + *mean, w_new + new].into_iter()) - w_total;
                }
            }
            None => pooled.push((*c, rates.clone())),
        }
    }
    pooled
}

/// Fits the capability laws to `(training compute, pass rates)` of several models measured on
/// the same tasks, with `buckets` difficulty buckets.
pub fn fit_capability(points: &[(f64, PassRates)], buckets: usize) -> Result<CapabilityFit, ScalingError> {
    let Some((_, first)) = points.first() else {
        return Err(ScalingError::TooFewPoints { need: 2, got: 0 });
    };
    if buckets == 0 {
        return Err(ScalingError::Capability("buckets must be at least 1".into()));
    }
    for (i, (c, rates)) in points.iter().enumerate() {
        if !(c.is_finite() && *c > 0.0) {
            return Err(ScalingError::BadPoint { index: i, value: *c });
        }
        if rates.task_ids != first.task_ids || !rates.is_complete() || rates.samples == 0 {
            return Err(ScalingError::Capability(format!(
                "pass rates {i} must cover the same tasks as pass rates 0, one count and one log pass probability per task, \
                 with samples > 0"
            )));
        }
    }
    // Seeds of one rung are one model size: pooled, the filter and every pass rate are per
    // training compute.
    let runs = points;
    let pooled = pool_seeds(runs);
    let points = pooled.as_slice();
    let min_c = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let max_c = points.iter().map(|p| p.0).fold(0.0, f64::max);
    if max_c <= min_c * (1.0 + 1e-9) {
        return Err(ScalingError::Capability("the fitted models must differ in compute".into()));
    }
    let n_tasks = first.task_ids.len();
    let kept: Vec<usize> = (0..n_tasks)
        .filter(|&t| points.iter().all(|(_, r)| r.log_pass_rate(t).is_finite()))
        .collect();
    if kept.len() < buckets {
        return Err(ScalingError::Capability(format!(
            "only {} of {n_tasks} tasks have a pass probability above zero under every fitted model; {buckets} buckets need at least \
             {buckets}",
            kept.len()
        )));
    }
    // Difficulty from the smallest compute (one pooled point).
    let smallest = points.iter().find(|p| p.0 <= min_c * (1.0 + 1e-9)).map(|p| &p.1).unwrap_or(first);
    let small_log_p = |t: usize| smallest.log_pass_rate(t);
    let mut order = kept.clone();
    order.sort_by(|&a, &b| small_log_p(b).total_cmp(&small_log_p(a)).then(a.cmp(&b)));
    let groups: Vec<Vec<usize>> = (0..buckets)
        .map(|b| order[b * order.len() / buckets..(b + 1) * order.len() / buckets].to_vec())
        .collect();
    let fit_group = |bucket: Option<usize>, strata: &[Vec<usize>]| -> Result<BucketFit, ScalingError> {
        let tasks: Vec<usize> = strata.concat();
        let pts = bucket_points(points, &tasks);
        let what = bucket.map_or("the aggregate".to_string(), |b| format!("bucket {b}"));
        let law = PowerLaw::fit(&pts).ok_or_else(|| ScalingError::Capability(format!("cannot fit {what}: {pts:?}")))?;
        let mut rng = SplitMix64::new(BOOTSTRAP_SEED ^ mix(bucket.map_or(u64::MAX, |b| b as u64)));
        let bootstrap = (0..BOOTSTRAP_DRAWS)
            .filter_map(|_| {
                // Resample the tasks within each stratum, so the aggregate keeps its difficulty
                // mix, and the runs, so seed-to-seed and run-to-run variation widens the interval.
                let draw: Vec<usize> = strata
                    .iter()
                    .flat_map(|s| (0..s.len()).map(|_| *rng.choose(s)).collect::<Vec<_>>())
                    .collect();
                let run_draw: Vec<(f64, PassRates)> = (0..runs.len()).map(|_| rng.choose(runs).clone()).collect();
                PowerLaw::fit(&bucket_points(&pool_seeds(&run_draw), &draw))
            })
            .collect();
        Ok(BucketFit {
            bucket,
            task_ids: tasks.iter().map(|&t| first.task_ids[t].clone()).collect(),
            smallest_pass_rate: (tasks.iter().map(|&t| small_log_p(t)).sum::<f64>() / tasks.len() as f64).exp(),
            points: pts,
            law,
            bootstrap,
        })
    };
    let fits = groups
        .iter()
        .enumerate()
        .map(|(b, g)| fit_group(Some(b), std::slice::from_ref(g)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CapabilityFit {
        aggregate: fit_group(None, &groups)?,
        buckets: fits,
        tasks_measured: n_tasks,
        tasks_dropped: n_tasks - kept.len(),
        fit_compute: points.iter().map(|p| p.0).collect(),
    })
}

/// `(compute, −mean log pass rate over tasks)` per model.
fn bucket_points(points: &[(f64, PassRates)], tasks: &[usize]) -> Vec<(f64, f64)> {
    points
        .iter()
        .map(|(c, r)| (*c, -tasks.iter().map(|&t| r.log_pass_rate(t)).sum::<f64>() / tasks.len() as f64))
        .collect()
}

impl CapabilityFit {
    /// The laws evaluated at `compute`.
    pub fn predict(&self, compute: f64) -> CapabilityPrediction {
        CapabilityPrediction {
            compute,
            buckets: self.buckets.iter().map(|b| b.predict(compute)).collect(),
            aggregate: self.aggregate.predict(compute),
        }
    }

    /// The prediction at `compute` against pass rates measured there (on the same tasks).
    pub fn verify(&self, compute: f64, truth: &PassRates) -> CapabilityVerification {
        let index: std::collections::HashMap<&str, usize> = truth.task_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let check = |fit: &BucketFit| {
            let pred = fit.predict(compute);
            let found: Vec<usize> = fit
                .task_ids
                .iter()
                .filter_map(|id| index.get(id.as_str()).copied())
                .filter(|&i| i < truth.passes.len())
                .collect();
            let actual = if found.is_empty() {
                f64::NAN
            } else {
                found.iter().map(|&i| truth.log_pass_rate(i)).sum::<f64>() / found.len() as f64
            };
            BucketCheck {
                bucket: fit.bucket,
                predicted_mean_log_pass_rate: pred.mean_log_pass_rate,
                actual_mean_log_pass_rate: actual,
                predicted_pass_rate: pred.pass_rate,
                actual_pass_rate: actual.exp(),
                interval90: pred.interval90,
                inside_interval: pred.interval90.0 <= actual && actual <= pred.interval90.1,
                tasks: found.len(),
            }
        };
        let buckets: Vec<BucketCheck> = self.buckets.iter().map(check).collect();
        let aggregate = check(&self.aggregate);
        let mean_abs_error = buckets
            .iter()
            .map(|b| (b.predicted_mean_log_pass_rate - b.actual_mean_log_pass_rate).abs())
            .sum::<f64>()
            / buckets.len().max(1) as f64;
        let relative_error =
            ((aggregate.predicted_mean_log_pass_rate - aggregate.actual_mean_log_pass_rate) / aggregate.actual_mean_log_pass_rate).abs();
        CapabilityVerification {
            compute,
            missing_tasks: self.aggregate.task_ids.len() - aggregate.tasks,
            buckets,
            aggregate,
            mean_abs_error,
            relative_error,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ferrogpt_data::code_task::heldout_tasks;
    use ferrogpt_data::synthetic::{generator, sample_at};
    use ferrogpt_engine::{Model, ModelConfig};
    use ferrogpt_tokenizer::Tokenizer;

    /// A random-weight model with a tokenizer trained on the code and bets texts.
    pub(crate) fn tiny_model() -> LocalModel {
        let texts: Vec<String> = ["code", "bets"]
            .iter()
            .flat_map(|g| (0..150).map(move |i| sample_at(generator(g).unwrap(), 1, i).text()))
            .collect();
        let tok = Tokenizer::train(texts.into_iter(), 320).unwrap();
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size(),
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_hidden: 48,
            max_seq_len: 512,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
            num_labels: None,
        };
        LocalModel::from_parts(Model::<f32>::new(cfg, 0.5, 3).unwrap(), tok, "tiny".into())
    }

    /// Pass probabilities that follow `−log p_t(C) = d_t·C^(−k)` for task difficulties `d`,
    /// with the pass counts of a million samples.
    fn law_rates(c: f64, d: &[f64], k: f64) -> PassRates {
        let samples = 1_000_000;
        let log_pass_probability: Vec<f64> = d.iter().map(|&dt| -dt * c.powf(-k)).collect();
        PassRates {
            task_ids: (0..d.len()).map(|t| format!("t{t}")).collect(),
            samples,
            passes: log_pass_probability
                .iter()
                .map(|lp| (lp.exp() * samples as f64).round() as usize)
                .collect(),
            log_pass_probability,
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    #[test]
    fn recovers_alpha_and_k_per_bucket_and_overall() {
        let k = 0.25;
        // -log p at C = 1e9 is d·1e9^(−0.25) ≈ d / 178: difficulties from easy to hard.
        let d: Vec<f64> = (0..40).map(|t| 20.0 + 25.0 * t as f64).collect();
        let computes = [1e9, 3e9, 1e10, 3e10, 1e11];
        let points: Vec<(f64, PassRates)> = computes.iter().map(|&c| (c, law_rates(c, &d, k))).collect();
        let fit = fit_capability(&points, 4).unwrap();
        assert_eq!((fit.tasks_measured, fit.tasks_dropped), (40, 0));
        assert_eq!(fit.buckets.len(), 4);
        for (b, bucket) in fit.buckets.iter().enumerate() {
            let ids: Vec<String> = (10 * b..10 * b + 10).map(|t| format!("t{t}")).collect();
            assert_eq!(bucket.task_ids, ids, "bucket {b} should hold the {b}-th easiest tenth");
            let alpha = d[10 * b..10 * b + 10].iter().sum::<f64>() / 10.0;
            assert!(
                close(bucket.law.k, k, 1e-4) && close(bucket.law.alpha, alpha, 1e-3),
                "{b}: {:?}",
                bucket.law
            );
        }
        let alpha = d.iter().sum::<f64>() / 40.0;
        assert!(close(fit.aggregate.law.k, k, 1e-4) && close(fit.aggregate.law.alpha, alpha, 1e-3));
        // Extrapolate 1000x past the largest fitted model and verify against the law's truth.
        let target = 1e14;
        let pred = fit.predict(target);
        let want = -alpha * target.powf(-k);
        assert!(close(pred.aggregate.mean_log_pass_rate, want, 1e-3), "{pred:?}");
        assert!(close(pred.aggregate.pass_rate, want.exp(), 1e-3));
        let (lo, hi) = pred.aggregate.interval90;
        assert!(lo <= want && want <= hi && lo < hi, "{lo} {want} {hi}");
        let v = fit.verify(target, &law_rates(target, &d, k));
        assert!(v.relative_error < 1e-3 && v.mean_abs_error < 1e-4, "{v:?}");
        assert!(v.aggregate.inside_interval && v.missing_tasks == 0);
        assert!(v.buckets.iter().all(|b| b.tasks == 10));
    }

    #[test]
    fn drops_tasks_some_model_never_solves_and_ranks_by_the_smallest_models() {
        let d: Vec<f64> = (0..12).map(|t| 50.0 + 40.0 * t as f64).collect();
        let mut points: Vec<(f64, PassRates)> = [1e9, 1e10, 1e11].iter().map(|&c| (c, law_rates(c, &d, 0.3))).collect();
        // Task 0, the easiest, has no passing probability under the middle model; task 5 none
        // under the largest.
        points[1].1.log_pass_probability[0] = f64::NEG_INFINITY;
        points[2].1.log_pass_probability[5] = f64::NEG_INFINITY;
        // A second seed at the smallest compute that always solves task 11, the hardest: its mean
        // probability over both seeds (0.69) ranks it between tasks 3 (0.71) and 4 (0.66), in the
        // easy bucket.
        let mut seed2 = points[0].1.clone();
        seed2.log_pass_probability[11] = 0.0;
        points.push((1e9, seed2));
        let fit = fit_capability(&points, 2).unwrap();
        assert_eq!(fit.tasks_dropped, 2);
        let all: Vec<&String> = fit.buckets.iter().flat_map(|b| &b.task_ids).collect();
        assert_eq!(all.len(), 10);
        assert!(!all.iter().any(|id| *id == "t0" || *id == "t5"));
        assert_eq!(fit.buckets[0].task_ids, ["t1", "t2", "t3", "t11", "t4"]);
        assert!(fit.buckets[0].smallest_pass_rate > fit.buckets[1].smallest_pass_rate);
        assert_eq!(fit.aggregate.task_ids.len(), 10);

        let too_many = fit_capability(&points, 11).unwrap_err().to_string();
        assert!(too_many.contains("10 of 12"), "{too_many}");
        let mut other = points.clone();
        other[2].1.task_ids[3] = "elsewhere".into();
        assert!(fit_capability(&other, 2).is_err());
        let same_compute: Vec<(f64, PassRates)> = points.iter().map(|(_, r)| (1e9, r.clone())).collect();
        assert!(fit_capability(&same_compute, 2).is_err());
    }

    #[test]
    fn seeds_of_one_compute_are_pooled_before_the_filter() {
        let d: Vec<f64> = (0..6).map(|t| 40.0 + 40.0 * t as f64).collect();
        let mut points: Vec<(f64, PassRates)> = [1e9, 1e10, 1e11].iter().map(|&c| (c, law_rates(c, &d, 0.3))).collect();
        // At 1e9 two seeds: the first cannot pass task 2, the second cannot pass task 3.
        let mut seed2 = points[0].1.clone();
        points[0].1.log_pass_probability[2] = f64::NEG_INFINITY;
        seed2.log_pass_probability[3] = f64::NEG_INFINITY;
        points.push((1e9, seed2));
        let fit = fit_capability(&points, 1).unwrap();
        assert_eq!(fit.tasks_dropped, 0, "each task is solved by some seed of every compute");
        assert_eq!(fit.fit_compute, [1e9, 1e10, 1e11]);
        // The pooled probability is the seeds' mean: half the law's where one seed has none.
        let pooled = pool_seeds(&points);
        assert!((pooled[0].1.log_pass_probability[2] - (-d[2] * 1e9f64.powf(-0.3) - 2f64.ln())).abs() < 1e-12);
        assert_eq!(pooled[0].1.samples, 2_000_000);
        // A task no seed of some compute solves is still dropped.
        points[3].1.log_pass_probability[2] = f64::NEG_INFINITY;
        points[1].1.log_pass_probability[4] = f64::NEG_INFINITY;
        let fit = fit_capability(&points, 1).unwrap();
        assert_eq!(fit.tasks_dropped, 2);
    }

    #[test]
    fn results_round_trip_through_json() {
        let d: Vec<f64> = (0..8).map(|t| 30.0 + 30.0 * t as f64).collect();
        let points: Vec<(f64, PassRates)> = [1e9, 1e10, 1e11].iter().map(|&c| (c, law_rates(c, &d, 0.2))).collect();
        let json = serde_json::to_string(&points[0].1).unwrap();
        assert_eq!(serde_json::from_str::<PassRates>(&json).unwrap(), points[0].1);
        let want = -d.iter().sum::<f64>() / 8.0 * 1e9f64.powf(-0.2);
        assert!(close(points[0].1.mean_log_pass_rate().unwrap(), want, 1e-12));
        // A measurement saved before p̂ existed reads back as incomplete, to be measured again.
        let old = r#"{"task_ids":["t0","t1"],"samples":4,"passes":[0,1]}"#;
        let stale: PassRates = serde_json::from_str(old).unwrap();
        assert!(!stale.is_complete() && stale.mean_log_pass_rate().is_none());
        let fit = fit_capability(&points, 2).unwrap();
        let back: CapabilityFit = serde_json::from_str(&serde_json::to_string(&fit).unwrap()).unwrap();
        assert_eq!(back.aggregate.task_ids, fit.aggregate.task_ids);
        assert_eq!(back.bootstrap_len(), fit.bootstrap_len());
        let (a, b) = (fit.predict(1e13), back.predict(1e13));
        assert!(close(a.aggregate.mean_log_pass_rate, b.aggregate.mean_log_pass_rate, 1e-12));
        let v = fit.verify(1e13, &law_rates(1e13, &d, 0.2));
        let v_back: CapabilityVerification = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert!(close(v_back.relative_error, v.relative_error, 1e-12));
        let pred_back: CapabilityPrediction = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(pred_back.buckets.len(), 2);
    }

    impl CapabilityFit {
        fn bootstrap_len(&self) -> usize {
            self.buckets.iter().chain([&self.aggregate]).map(|b| b.bootstrap.len()).sum()
        }
    }

    #[test]
    fn measures_pass_rates_by_sampling_deterministically() {
        let model = tiny_model();
        let tasks = heldout_tasks(0, 6);
        let r = measure_pass_rates(&model, &tasks, 3, 1.0, 11).unwrap();
        assert_eq!(r.task_ids, tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
        assert_eq!((r.samples, r.passes.len()), (3, 6));
        assert!(r.passes.iter().all(|&p| p <= 3));
        assert_eq!(measure_pass_rates(&model, &tasks, 3, 1.0, 11).unwrap(), r);
        // The counts are those of the completions, which are newline-free and grouped by task.
        let texts = sample_completions(&model, &tasks, 3, 1.0, 11).unwrap();
        assert_eq!(texts.len(), 6);
        for ((task, cs), &p) in tasks.iter().zip(&texts).zip(&r.passes) {
            assert_eq!(cs.len(), 3);
            assert!(cs.iter().all(|c| !c.contains('\n')));
            assert_eq!(cs.iter().filter(|c| check_completion(task, c)).count(), p);
        }
        // ln p̂ is the reference's probability plus that of the distinct passing samples, each
        // followed by any stop token: recomputed here through the scoring API, one stop at a time.
        let stops = stop_tokens(&model);
        let tok = model.tokenizer();
        for ((task, cs), &log_p) in tasks.iter().zip(&texts).zip(&r.log_pass_probability) {
            let mut known = vec![format!(" {}", task.reference)];
            known.extend(cs.iter().filter(|c| check_completion(task, c)).cloned());
            known.sort();
            known.dedup();
            let context = TaskPrompt::new(&model, task).unwrap().tokens;
            let mut terms = Vec::new();
            for c in &known {
                for &s in &stops {
                    let mut continuation = tok.encode(c);
                    continuation.push(s as u32);
                    terms.push(model.score(&context, &continuation).unwrap().logprob);
                }
            }
            let want = log_sum_exp(terms.into_iter());
            assert!(log_p.is_finite() && log_p < 0.0);
            assert!((log_p - want).abs() < 1e-3 * want.abs(), "{} {log_p} {want}", task.id);
        }
        assert!(measure_pass_rates(&model, &tasks, 0, 1.0, 11).is_err());
        assert!(measure_pass_rates(&model, &tasks, 3, 0.0, 11).is_err());
    }
}
