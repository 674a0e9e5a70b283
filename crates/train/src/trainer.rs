//! The training loop, for pretraining and supervised fine-tuning alike.
//!
//! Pretraining reads windows of token shards under one causal mask; fine-tuning reads packed
//! conversations ([`crate::conversations`]) whose targets are only the assistant replies and
//! whose mask keeps each conversation to itself, starting from a trained model's weights
//! (`train.init_from`). Everything else is one loop. One optimizer step = `grad_accum` micro-batches of `batch_size × seq_len`
//! tokens through `forward_backward`, global-norm clipping, a scheduled
//! learning rate and an AdamW update. Everything that decides the next step's
//! numbers (weights, AdamW moments and step, the loader's cursor, the RNG) is
//! in the checkpoint, and nothing else feeds the computation, so a resumed run
//! reproduces the uninterrupted one bit for bit on the same thread count.

use std::path::PathBuf;
use std::time::Instant;

use ferrogpt_data::{Batch, BatchLoader, LoaderState, Split, TokenShards};
use ferrogpt_engine::{optim, Activations, AdamW, AttnMask, Input, Model, IGNORE};
use ferrogpt_infer::model_folder;
use ferrogpt_progress::{Counter, Progress};
use ferrogpt_rng::Xoshiro256StarStar;
use ferrogpt_tokenizer::Tokenizer;

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::config::{DataSource, TrainConfig};
use crate::conversations::{ConversationLoader, ConversationLoaderState, Conversations};
use crate::metrics::{self, MetricsLog, Record};
use crate::peak::Peak;
use crate::{io_err, TrainError};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOSS_CURVE_FILE: &str = "loss.svg";
pub const MODEL_DIR: &str = "model";

/// How to run, beyond the config.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from the newest checkpoint in `out_dir` (a fresh start if there is none).
    pub resume: bool,
    /// Report progress on stderr (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    /// Step the run started from (0, or the checkpoint's step when resumed).
    pub resumed_from: u64,
    pub params: usize,
    pub non_embedding_params: usize,
    pub tokens: u64,
    /// Model FLOPs of the whole run (`train_flops_per_token × tokens`).
    pub train_flops: f64,
    /// Seconds inside training steps (evaluation and checkpoints excluded), this
    /// process and the runs it resumed together.
    pub train_secs: f64,
    /// Tokens per second of the steps this process ran.
    pub tokens_per_sec: f64,
    /// Fraction of [`Peak::flops`] (see [`crate::peak`]).
    pub mfu: f64,
    pub peak: Peak,
    pub final_loss: f64,
    pub val_loss: f64,
    pub val_bpb: f64,
    pub model_dir: PathBuf,
    pub metrics: PathBuf,
    pub loss_curve: PathBuf,
}

/// Validation figures.
#[derive(Clone, Copy, Debug)]
pub struct ValResult {
    /// Mean nats per target token.
    pub loss: f64,
    pub bits_per_byte: f64,
    pub tokens: usize,
}

/// What a run trains on.
enum TrainData {
    Shards { loader: Box<BatchLoader>, mask: AttnMask },
    Conversations(ConversationLoader),
}

impl TrainData {
    /// The next batch and the mask it is computed under.
    fn next_into(&mut self, batch: &mut Batch) -> Result<std::borrow::Cow<'_, AttnMask>, TrainError> {
        match self {
            TrainData::Shards { loader, mask } => {
                loader.next_into(batch);
                Ok(std::borrow::Cow::Borrowed(mask))
            }
            TrainData::Conversations(loader) => Ok(std::borrow::Cow::Owned(loader.next_into(batch)?)),
        }
    }

    fn state(&self) -> serde_json::Value {
        match self {
            TrainData::Shards { loader, .. } => serde_json::to_value(loader.state()),
            TrainData::Conversations(loader) => serde_json::to_value(loader.state()),
        }
        .unwrap_or_default()
    }

    fn restore(&mut self, saved: &serde_json::Value, dir: &std::path::Path) -> Result<(), TrainError> {
        let unreadable = |e: serde_json::Error| TrainError::Checkpoint {
            dir: dir.to_path_buf(),
            file: checkpoint::STATE_FILE.into(),
            why: format!("`loader` is not this run's data-loader state ({e})"),
        };
        match self {
            TrainData::Shards { loader, .. } => {
                let state: LoaderState = serde_json::from_value(saved.clone()).map_err(unreadable)?;
                Ok(loader.restore(&state)?)
            }
            TrainData::Conversations(loader) => {
                let state: ConversationLoaderState = serde_json::from_value(saved.clone()).map_err(unreadable)?;
                loader.restore(&state)
            }
        }
    }
}

/// What a run validates on.
pub enum ValData {
    Shards(Box<TokenShards>),
    Conversations(Conversations),
}

impl ValData {
    /// Batches of the deterministic validation pass with their masks, at most enough to hold
    /// `max_tokens` positions; a short last batch is padded with ignored targets.
    fn batches(&self, rows: usize, seq: usize, max_tokens: usize) -> Result<Vec<(Batch, AttnMask)>, TrainError> {
        let max_rows = max_tokens.div_ceil(seq).max(1);
        match self {
            ValData::Shards(val) => shard_batches(val, rows, seq, max_rows),
            ValData::Conversations(convs) => {
                let mut all = convs.sequential_batches(rows, seq)?;
                all.truncate(max_rows.div_ceil(rows));
                Ok(all)
            }
        }
    }
}

/// The first `max_rows` windows of a token split in order, `rows` at a time; a short last
/// batch is padded with ignored targets. The `n`-th real target is the split's token `n + 1`.
fn shard_batches(val: &TokenShards, rows: usize, seq: usize, max_rows: usize) -> Result<Vec<(Batch, AttnMask)>, TrainError> {
    let mask = AttnMask::causal(seq);
    let mut out = Vec::new();
    let mut taken = 0;
    for mut batch in val.sequential_batches(rows, seq)? {
        if taken >= max_rows {
            break;
        }
        let take = batch.rows.min(max_rows - taken);
        batch.inputs.truncate(take * seq);
        batch.targets.truncate(take * seq);
        batch.inputs.resize(rows * seq, 0);
        batch.targets.resize(rows * seq, IGNORE);
        batch.rows = rows;
        taken += take;
        out.push((batch, mask.clone()));
    }
    Ok(out)
}

/// Runs the model over `batches` and hands `each` every counted target in order: its index
/// among the counted targets, its loss in nats and its token.
fn for_each_target(
    model: &Model<f32>,
    acts: &mut Activations<f32>,
    batches: Vec<(Batch, AttnMask)>,
    mut each: impl FnMut(usize, f64, u32),
) -> Result<(), TrainError> {
    let mut n = 0;
    for (batch, mask) in batches {
        model.forward_loss(acts, Input::Tokens(&batch.inputs), &batch.targets, &mask)?;
        for (&loss, &target) in acts.row_loss.iter().zip(&batch.targets) {
            if target != IGNORE {
                each(n, loss as f64, target);
                n += 1;
            }
        }
    }
    Ok(())
}

/// Nats over ln 2 over bytes; NaN when there are no bytes.
fn bits_per_byte(nats: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        f64::NAN
    } else {
        nats / std::f64::consts::LN_2 / bytes as f64
    }
}

/// Mean loss per target and bits per byte of the targets over the validation pass (see
/// [`ValData::batches`]), using `acts`' batch shape. Fine-tuning counts only the trained
/// targets, the assistant replies.
pub fn evaluate(
    model: &Model<f32>,
    acts: &mut Activations<f32>,
    val: &ValData,
    tokenizer: &Tokenizer,
    max_tokens: usize,
) -> Result<ValResult, TrainError> {
    let (mut nats, mut bytes, mut count) = (0.0f64, 0u64, 0usize);
    let batches = val.batches(acts.batch, acts.seq, max_tokens)?;
    for_each_target(model, acts, batches, |_, loss, target| {
        nats += loss;
        bytes += tokenizer.token_byte_len(target) as u64;
        count += 1;
    })?;
    Ok(ValResult {
        loss: nats / count.max(1) as f64,
        bits_per_byte: bits_per_byte(nats, bytes),
        tokens: count,
    })
}

/// Validation figures of one corpus source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceBpb {
    /// The source as the manifest names it (`manpages:/usr/share/man`, `gcide`, ...).
    pub source: String,
    pub bits_per_byte: f64,
    /// Target tokens scored (a target belongs to the source of its token).
    pub tokens: usize,
    pub bytes: u64,
}

/// [`evaluate`]'s pass over a pretraining validation split, scored per source: the same
/// batches and losses, each target counted for the source its token came from
/// ([`TokenShards::token_sources`]). Sources in manifest order; one with no target in the
/// pass has 0 tokens and NaN bits per byte.
pub fn evaluate_by_source(
    model: &Model<f32>,
    acts: &mut Activations<f32>,
    val: &TokenShards,
    tokenizer: &Tokenizer,
    max_tokens: usize,
) -> Result<Vec<SourceBpb>, TrainError> {
    let token_sources = val.token_sources()?;
    let names = &val.manifest().sources;
    let mut sums = vec![(0.0f64, 0u64, 0usize); names.len()];
    let batches = shard_batches(val, acts.batch, acts.seq, max_tokens.div_ceil(acts.seq).max(1))?;
    for_each_target(model, acts, batches, |n, loss, target| {
        // The n-th target is token n + 1 of the split (see `shard_batches`).
        if let Some(sum) = token_sources.get(n + 1).and_then(|&s| sums.get_mut(s)) {
            sum.0 += loss;
            sum.1 += tokenizer.token_byte_len(target) as u64;
            sum.2 += 1;
        }
    })?;
    Ok(names
        .iter()
        .zip(sums)
        .map(|(stats, (nats, bytes, tokens))| SourceBpb {
            source: stats.source.to_string(),
            bits_per_byte: bits_per_byte(nats, bytes),
            tokens,
            bytes,
        })
        .collect())
}

/// Validation bits per byte per source of the model folder `model_dir` on the prepared corpus
/// `data_dir` (see [`evaluate_by_source`]), over at most `max_tokens` targets in batches of
/// `batch` windows of `seq_len`: what the speedrun's report shows for its corpus mix.
pub fn val_bpb_by_source(
    model_dir: &std::path::Path,
    data_dir: &std::path::Path,
    batch: usize,
    seq_len: usize,
    max_tokens: usize,
) -> Result<Vec<SourceBpb>, TrainError> {
    let files = model_folder::read(model_dir)?;
    let val = TokenShards::open(data_dir, Split::Val)?;
    val.check_tokenizer(&files.tokenizer)?;
    let mut acts = Activations::new(&files.config, batch, seq_len)?;
    let model = Model::from_params(files.config, files.params)?;
    evaluate_by_source(&model, &mut acts, &val, &files.tokenizer, max_tokens)
}

/// The weights of the model folder `dir`, which must hold the model `cfg` describes.
fn start_from(dir: &std::path::Path, cfg: &TrainConfig) -> Result<Model<f32>, TrainError> {
    let files = model_folder::read(dir)?;
    if files.config != cfg.model {
        return Err(TrainError::Config {
            key: "train.init_from".into(),
            why: format!("{} holds a model of another shape than [model]", dir.display()),
        });
    }
    Ok(Model::from_params(files.config, files.params)?)
}

fn config_mismatch(saved: &TrainConfig, now: &TrainConfig) -> Option<&'static str> {
    if saved.model != now.model {
        Some("model")
    } else if saved.train != now.train {
        Some("train")
    } else if saved.schedule != now.schedule {
        Some("schedule")
    } else if saved.optimizer != now.optimizer {
        Some("optimizer")
    } else {
        None
    }
}

/// Runs (or resumes) the training described by `cfg`.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    cfg.validate()?;
    let out = cfg.out_dir.as_path();
    std::fs::create_dir_all(out).map_err(io_err(out))?;

    let tok_path = cfg.tokenizer_path();
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let tokenizer_json = std::fs::read(&tok_path).map_err(io_err(&tok_path))?;
    if tokenizer.vocab_size() != cfg.model.vocab_size {
        return Err(TrainError::Config {
            key: "model.vocab_size".into(),
            why: format!(
                "{} differs from the tokenizer's {} ({})",
                cfg.model.vocab_size,
                tokenizer.vocab_size(),
                tok_path.display()
            ),
        });
    }
    let t = &cfg.train;
    // The run's own RNG: it seeds the data order, and its state rides in every
    // checkpoint so stochastic additions to the loop stay resumable.
    let mut rng = Xoshiro256StarStar::new(t.seed);
    let loader_seed = rng.next_u64();
    let (mut data, val) = match cfg.data.source()? {
        DataSource::Shards(dir) => {
            let train_shards = TokenShards::open(dir, Split::Train)?;
            train_shards.check_tokenizer(&tokenizer)?;
            let val_shards = TokenShards::open(dir, Split::Val)?;
            if val_shards.windows(t.seq_len) == 0 {
                return Err(TrainError::Data(ferrogpt_data::DataError::NotEnoughTokens {
                    dir: dir.to_path_buf(),
                    split: Split::Val,
                    tokens: val_shards.len(),
                    needed: t.seq_len + 1,
                }));
            }
            let loader = BatchLoader::new(train_shards, t.batch_size, t.seq_len, loader_seed)?;
            let mask = AttnMask::causal(t.seq_len);
            (
                TrainData::Shards {
                    loader: Box::new(loader),
                    mask,
                },
                ValData::Shards(Box::new(val_shards)),
            )
        }
        DataSource::Conversations { train, val } => {
            let train_convs = Conversations::read(train, &tokenizer, t.seq_len)?;
            let val_convs = Conversations::read(val, &tokenizer, t.seq_len)?;
            for c in [&train_convs, &val_convs].into_iter().filter(|c| c.truncated > 0) {
                tracing::warn!(
                    "{}: {} of {} conversations are longer than train.seq_len = {} tokens and were cut",
                    c.path.display(),
                    c.truncated,
                    c.len(),
                    t.seq_len
                );
            }
            let loader = ConversationLoader::new(train_convs, t.batch_size, t.seq_len, loader_seed);
            (TrainData::Conversations(loader), ValData::Conversations(val_convs))
        }
    };

    let resume_from = if opts.resume {
        checkpoint::latest_checkpoint(out)?
    } else {
        if let Some(existing) = checkpoint::latest_checkpoint(out)? {
            return Err(TrainError::Config {
                key: "out_dir".into(),
                why: format!(
                    "{} already holds checkpoint {}; pass --resume to continue it or choose another out_dir",
                    out.display(),
                    existing.display()
                ),
            });
        }
        None
    };

    let mut model: Model<f32>;
    let mut opt: AdamW;
    let mut state: TrainState;
    match &resume_from {
        Some(dir) => {
            let ck = Checkpoint::load(dir)?;
            if let Some(section) = config_mismatch(&ck.state.config, cfg) {
                return Err(TrainError::Config {
                    key: section.into(),
                    why: format!(
                        "differs from the config saved in checkpoint {}; resuming needs the same [{section}]",
                        dir.display()
                    ),
                });
            }
            model = Model::from_params(cfg.model.clone(), ck.params)?;
            opt = AdamW::new(cfg.optimizer.clone(), &model.layout);
            opt.m = ck.m;
            opt.v = ck.v;
            opt.step = ck.state.optimizer_step;
            data.restore(&ck.state.loader, dir)?;
            rng = ck.state.rng.clone();
            state = ck.state;
            state.config = cfg.clone();
            tracing::info!("resuming from {} at step {}", dir.display(), state.step);
        }
        None => {
            model = match &t.init_from {
                Some(dir) => start_from(dir, cfg)?,
                None => Model::new(cfg.model.clone(), t.init_std, t.seed)?,
            };
            opt = AdamW::new(cfg.optimizer.clone(), &model.layout);
            state = TrainState::new(cfg.clone(), data.state(), rng.clone());
        }
    }
    model.enable_grads();
    let start_step = state.step;
    let metrics_path = out.join(METRICS_FILE);
    let mut log = MetricsLog::open(&metrics_path, resume_from.as_ref().map(|_| start_step))?;

    let mut acts = Activations::new(&cfg.model, t.batch_size, t.seq_len)?;
    let mut batch = Batch::default();
    let flops_per_token = cfg.model.train_flops_per_token(t.seq_len);
    // Measured here, then again through the run and at its end (outside the timed steps):
    // one burst taken while the machine is busy must not set the MFU denominator.
    let mut peak = Peak::measure(rayon::current_num_threads());
    let tokens_per_step = cfg.tokens_per_step() as u64;
    let pb = Progress::bar(opts.progress, "train", t.steps, Counter::Count("steps"));
    pb.set_position(start_step);

    let (mut run_secs, mut run_tokens) = (0.0f64, 0u64);
    let mut last_loss = f64::NAN;
    let mut last_val: Option<ValResult> = None;
    let grad_scale = 1.0 / t.grad_accum as f64;
    for step in start_step + 1..=t.steps {
        let t0 = Instant::now();
        model.zero_grad();
        let mut loss = 0.0;
        for _ in 0..t.grad_accum {
            let mask = data.next_into(&mut batch)?;
            loss += model.forward_backward(&mut acts, Input::Tokens(&batch.inputs), &batch.targets, &mask, grad_scale)?;
        }
        loss /= t.grad_accum as f64;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { step, loss });
        }
        let grad_norm = optim::clip_grad_norm(&mut model.grads, t.clip_norm);
        let lr = cfg.schedule.lr(t.lr, step - 1, t.steps);
        opt.update(&mut model.params, &model.grads, lr);
        let secs = t0.elapsed().as_secs_f64();
        run_secs += secs;
        run_tokens += tokens_per_step;
        state.step = step;
        state.tokens_seen += tokens_per_step;
        state.optimizer_step = opt.step;
        state.elapsed_secs += secs;
        last_loss = loss;

        let tps = run_tokens as f64 / run_secs.max(1e-9);
        let mfu = tps * flops_per_token / peak.flops();
        log.write(&Record {
            step,
            loss: Some(loss),
            lr: Some(lr),
            grad_norm: Some(grad_norm),
            tokens: Some(state.tokens_seen),
            tokens_per_sec: Some(tps),
            mfu: Some(mfu),
            ..Record::default()
        })?;
        pb.set_message(format!("loss {loss:.4} | {tps:.0} tok/s | MFU {:.1}%", mfu * 100.0));
        pb.set_position(step);

        let eval_due = (cfg.eval.every > 0 && step % cfg.eval.every == 0) || step == t.steps;
        if eval_due {
            let v = evaluate(&model, &mut acts, &val, &tokenizer, cfg.eval.tokens)?;
            log.write(&Record {
                step,
                val_loss: Some(v.loss),
                val_bpb: Some(v.bits_per_byte),
                ..Record::default()
            })?;
            pb.println(&format!(
                "step {step}: val loss {:.4} nats/token, {:.4} bits/byte ({} tokens)",
                v.loss, v.bits_per_byte, v.tokens
            ));
            last_val = Some(v);
        }
        if cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0 {
            state.loader = data.state();
            state.rng = rng.clone();
            let dir = checkpoint::checkpoints_dir(out).join(checkpoint::checkpoint_name(step));
            checkpoint::save_checkpoint(&dir, &model.params, &opt.m, &opt.v, &state, &tokenizer_json)?;
            checkpoint::prune_checkpoints(out, cfg.checkpoint.keep)?;
        }
        peak.burst_if_due();
    }
    pb.finish();
    peak.finish_run();

    // A run resumed after its last step still reports validation figures.
    let val = match last_val {
        Some(v) => v,
        None => evaluate(&model, &mut acts, &val, &tokenizer, cfg.eval.tokens)?,
    };
    let model_dir = out.join(MODEL_DIR);
    model_folder::write(&model_dir, &cfg.model, &model.params, &tokenizer_json)?;
    let records = metrics::read_records(&metrics_path)?;
    if last_loss.is_nan() {
        last_loss = records.iter().rev().find_map(|r| r.loss).unwrap_or(f64::NAN);
    }
    let loss_curve = out.join(LOSS_CURVE_FILE);
    if records.iter().any(|r| r.loss.is_some()) {
        let title = format!(
            "{} params, {} steps x {} tokens",
            human(model.num_params() as f64),
            t.steps,
            tokens_per_step
        );
        metrics::plot_loss_curve(&records, &loss_curve, &title)?;
    }
    let tokens_per_sec = if run_secs > 0.0 {
        run_tokens as f64 / run_secs
    } else {
        state.tokens_seen as f64 / state.elapsed_secs.max(1e-9)
    };
    Ok(TrainSummary {
        steps: t.steps,
        resumed_from: start_step,
        params: model.num_params(),
        non_embedding_params: cfg.model.non_embedding_params(),
        tokens: state.tokens_seen,
        train_flops: flops_per_token * state.tokens_seen as f64,
        train_secs: state.elapsed_secs,
        tokens_per_sec,
        mfu: tokens_per_sec * flops_per_token / peak.flops(),
        peak,
        final_loss: last_loss,
        val_loss: val.loss,
        val_bpb: val.bits_per_byte,
        model_dir,
        metrics: metrics_path,
        loss_curve,
    })
}

/// `1234567` -> `1.23M`.
pub fn human(x: f64) -> String {
    let (v, unit) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.2}{unit}")
}
