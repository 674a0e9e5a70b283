//! Sequence scorers trained from a language model: the reward model (one output,
//! pairwise loss on preference pairs) and classifiers (one output per label,
//! cross-entropy at each sequence's last token) — the safety classifier that is
//! the rule-based reward model's default grader, and the moderation classifier.
//!
//! Training data are groups of token sequences (a preference pair is a group of
//! two, a labelled text a group of one) packed into rows of `seq_len` tokens;
//! each sequence attends only to itself, and its score is the head's output at
//! its last token (Hugging Face's `LlamaForSequenceClassification`).

use ferrogpt_chatdata::moderation::request_text;
use ferrogpt_chatdata::{preference_pair, Category, Example, Graded, GraderError, SafetyClass, SafetyGrader, Split, TaskKind};
use ferrogpt_engine::kernels::post_training::{log_softmax, pairwise_loss};
use ferrogpt_engine::{Activations, AttnMask, Input, Model};
use ferrogpt_infer::{render_for_training, text_prompt, ChatMessage, LocalModel, Role};
use ferrogpt_rng::SplitMix64;
use ferrogpt_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};

use ferrogpt_engine::{AdamWConfig, Schedule};

use crate::examples::chat_examples;
use crate::order::{EpochOrder, OrderCursor};
use crate::stage::{run_stage, Objective, StageConfig, StageSummary, StepReport};
use crate::{io_err, TrainError};

/// What the scorer learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScorerKind {
    /// One score; groups are (chosen, rejected) pairs.
    Reward,
    /// The RBRM's classes ([`SafetyClass::ALL`]) of a reply in its conversation.
    Safety,
    /// The policy category ([`Category::ALL`]) of a request's text.
    Moderation,
}

impl ScorerKind {
    pub fn num_labels(self) -> usize {
        match self {
            ScorerKind::Reward => 1,
            ScorerKind::Safety => SafetyClass::ALL.len(),
            ScorerKind::Moderation => Category::ALL.len(),
        }
    }

    /// Label names in output order (written to `config.json`'s `id2label` by callers
    /// that want them, and to reports).
    pub fn labels(self) -> Vec<&'static str> {
        match self {
            ScorerKind::Reward => vec!["reward"],
            ScorerKind::Safety => SafetyClass::ALL.iter().map(|c| c.as_str()).collect(),
            ScorerKind::Moderation => Category::ALL.iter().map(|c| c.as_str()).collect(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ScorerKind::Reward => "reward model",
            ScorerKind::Safety => "safety classifier",
            ScorerKind::Moderation => "moderation classifier",
        }
    }
}

/// One training item: its sequences, the label of each (unused by the reward
/// model), and the tag reports group accuracy by (the example's task or category).
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub sequences: Vec<Vec<u32>>,
    pub label: usize,
    pub tag: &'static str,
}

/// A conversation ending in `reply`, rendered the way fine-tuning renders it (the
/// sequence ends at the reply's `<|end|>`).
pub fn reply_tokens(tokenizer: &Tokenizer, conversation: &[ChatMessage], reply: &str) -> Result<Vec<u32>, TrainError> {
    let mut messages = conversation.to_vec();
    messages.push(ChatMessage::new(Role::Assistant, reply));
    Ok(render_for_training(tokenizer, &messages)?.ids)
}

/// Keeps the last `max` tokens: a score is read at the end, so the end must stay.
pub(crate) fn keep_tail(mut ids: Vec<u32>, max: usize) -> Vec<u32> {
    if ids.len() > max {
        ids.drain(..ids.len() - max);
    }
    ids
}

fn is_safety_task(task: TaskKind) -> bool {
    matches!(
        task,
        TaskKind::Disallowed
            | TaskKind::DisallowedRolePlay
            | TaskKind::DisallowedIgnoreInstructions
            | TaskKind::DisallowedSplitTurns
            | TaskKind::Sensitive
            | TaskKind::AllowedLookalike
            | TaskKind::ScopedAssistant
    )
}

/// The items of `kind` that `examples` give, each sequence cut to `seq_len` tokens
/// (a pair's two to half of it each, since a group shares one row).
pub fn items(kind: ScorerKind, examples: &[Example], tokenizer: &Tokenizer, seq_len: usize, seed: u64) -> Result<Vec<Item>, TrainError> {
    let mut out = Vec::new();
    match kind {
        ScorerKind::Reward => {
            for (i, example) in examples.iter().enumerate() {
                let Some(pair) = preference_pair(example, &mut SplitMix64::derived(seed, i as u64)) else {
                    continue;
                };
                let half = seq_len / 2;
                out.push(Item {
                    sequences: vec![
                        keep_tail(reply_tokens(tokenizer, example.prompt(), &pair.chosen)?, half),
                        keep_tail(reply_tokens(tokenizer, example.prompt(), &pair.rejected)?, half),
                    ],
                    label: 0,
                    tag: example.task.as_str(),
                });
            }
        }
        ScorerKind::Safety => {
            for example in examples.iter().filter(|e| is_safety_task(e.task)) {
                let replies = example.ideal().into_iter().chain(example.rejected.iter().cloned());
                for reply in replies {
                    let Some(class) = ferrogpt_chatdata::check(&example.expected, &reply).class else {
                        continue;
                    };
                    out.push(Item {
                        sequences: vec![keep_tail(reply_tokens(tokenizer, example.prompt(), &reply)?, seq_len)],
                        label: class.index(),
                        tag: class.as_str(),
                    });
                }
            }
        }
        ScorerKind::Moderation => {
            for example in examples {
                let text = request_text(example.prompt());
                out.push(Item {
                    sequences: vec![keep_tail(text_prompt(tokenizer, &text).ids, seq_len)],
                    label: example.category.index(),
                    tag: example.category.as_str(),
                });
            }
        }
    }
    Ok(out)
}

/// Items packed into `rows` rows of `seq_len` tokens, a whole item per row: padding
/// tokens attend to themselves only and are never read.
pub(crate) struct Packer {
    rows: usize,
    seq_len: usize,
    inputs: Vec<u32>,
    windows: Vec<[u32; 2]>,
    /// Flat position of each packed sequence's last token, item by item.
    ends: Vec<usize>,
    row: usize,
}

impl Packer {
    pub(crate) fn new(rows: usize, seq_len: usize) -> Self {
        Packer {
            rows,
            seq_len,
            inputs: Vec::with_capacity(rows * seq_len),
            windows: Vec::with_capacity(rows * seq_len),
            ends: Vec::new(),
            row: 0,
        }
    }

    fn pad_to(&mut self, end: usize) {
        while self.inputs.len() < end {
            let at = (self.inputs.len() % self.seq_len) as u32;
            self.inputs.push(0);
            self.windows.push([at, at + 1]);
        }
    }

    /// Adds a group of sequences if it fits in the current row or the next; false when the
    /// rows are full.
    pub(crate) fn try_add(&mut self, group: &[Vec<u32>]) -> bool {
        let need: usize = group.iter().map(Vec::len).sum();
        if need > self.seq_len {
            return false;
        }
        if self.inputs.len() - self.row * self.seq_len + need > self.seq_len {
            if self.row + 1 == self.rows {
                return false;
            }
            self.row += 1;
            self.pad_to(self.row * self.seq_len);
        }
        for seq in group {
            let start = (self.inputs.len() % self.seq_len) as u32;
            for (k, &t) in seq.iter().enumerate() {
                self.inputs.push(t);
                self.windows.push([start, start + k as u32 + 1]);
            }
            self.ends.push(self.inputs.len() - 1);
        }
        true
    }

    /// The rows holding sequences, padded: their count, token ids, the mask and the
    /// sequence ends.
    pub(crate) fn finish_used(mut self) -> Result<(usize, Vec<u32>, AttnMask, Vec<usize>), TrainError> {
        self.rows = self.row + 1;
        let rows = self.rows;
        let (inputs, mask, ends) = self.finish()?;
        Ok((rows, inputs, mask, ends))
    }

    /// The padded batch: token ids, the mask and the sequence ends.
    fn finish(mut self) -> Result<(Vec<u32>, AttnMask, Vec<usize>), TrainError> {
        self.pad_to(self.rows * self.seq_len);
        Ok((self.inputs, AttnMask::from_windows(self.seq_len, self.windows)?, self.ends))
    }
}

/// The reward model's or a classifier's training objective.
pub struct ScorerObjective {
    kind: ScorerKind,
    items: Vec<Item>,
    rows: usize,
    seq_len: usize,
    order: EpochOrder,
    acts: Activations<f32>,
}

impl ScorerObjective {
    pub fn new(kind: ScorerKind, model: &Model<f32>, items: Vec<Item>, rows: usize, seq_len: usize, seed: u64) -> Result<Self, TrainError> {
        if items.is_empty() {
            return Err(TrainError::Config {
                key: kind.as_str().into(),
                why: "no training items".into(),
            });
        }
        if let Some(too_long) = items.iter().find(|i| i.sequences.iter().map(Vec::len).sum::<usize>() > seq_len) {
            return Err(TrainError::Config {
                key: "seq_len".into(),
                why: format!(
                    "an item of {} tokens does not fit rows of {seq_len}",
                    too_long.sequences.iter().map(Vec::len).sum::<usize>()
                ),
            });
        }
        let acts = Activations::new(&model.cfg, rows, seq_len)?;
        Ok(ScorerObjective {
            kind,
            order: EpochOrder::new(items.len(), seed)?,
            items,
            rows,
            seq_len,
            acts,
        })
    }
}

impl Objective for ScorerObjective {
    type Cursor = OrderCursor;

    fn step(&mut self, model: &mut Model<f32>, _step: u64) -> Result<StepReport, TrainError> {
        let mut packer = Packer::new(self.rows, self.seq_len);
        let mut items = Vec::new();
        loop {
            let next = self.order.peek();
            if !packer.try_add(&self.items[next].sequences) {
                break;
            }
            items.push(self.order.take());
        }
        let (inputs, mask, ends) = packer.finish()?;
        let items: Vec<&Item> = items.iter().map(|&i| &self.items[i]).collect();
        model.forward_logits(&mut self.acts, Input::Tokens(&inputs), &mask)?;
        let (loss, accuracy) = scorer_loss_backward(self.kind, &mut self.acts.logits, &items, &ends);
        model.backward_from_logits(&mut self.acts, &mask)?;
        let mut report = StepReport {
            loss,
            ..StepReport::default()
        };
        report.figures.insert("accuracy".into(), accuracy);
        Ok(report)
    }

    fn cursor(&self) -> OrderCursor {
        self.order.cursor()
    }

    fn restore(&mut self, cursor: OrderCursor) -> Result<(), TrainError> {
        self.order.restore(cursor)
    }
}

/// The mean loss over `items` and its accuracy; turns `logits` into dLoss/dlogits
/// (zero except at the sequences' ends).
fn scorer_loss_backward(kind: ScorerKind, logits: &mut [f32], items: &[&Item], ends: &[usize]) -> (f64, f64) {
    let labels = kind.num_labels();
    let n = items.len().max(1) as f64;
    let mut grads: Vec<(usize, Vec<f32>)> = Vec::with_capacity(ends.len());
    let (mut loss, mut correct) = (0.0, 0usize);
    match kind {
        ScorerKind::Reward => {
            for pair in ends.chunks_exact(2) {
                let (chosen, rejected) = (logits[pair[0]] as f64, logits[pair[1]] as f64);
                let (l, d_chosen) = pairwise_loss(chosen, rejected);
                loss += l;
                correct += usize::from(chosen > rejected);
                grads.push((pair[0], vec![(d_chosen / n) as f32]));
                grads.push((pair[1], vec![(-d_chosen / n) as f32]));
            }
        }
        ScorerKind::Safety | ScorerKind::Moderation => {
            for (item, &end) in items.iter().zip(ends) {
                let row = &logits[end * labels..(end + 1) * labels];
                let log_p = log_softmax(row);
                loss -= log_p[item.label];
                correct += usize::from(argmax(&log_p) == item.label);
                let grad = log_p
                    .iter()
                    .enumerate()
                    .map(|(k, lp)| ((lp.exp() - f64::from(u8::from(k == item.label))) / n) as f32)
                    .collect();
                grads.push((end, grad));
            }
        }
    }
    logits.fill(0.0);
    for (end, grad) in grads {
        logits[end * labels..(end + 1) * labels].copy_from_slice(&grad);
    }
    (loss / n, correct as f64 / n)
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
        .0
}

/// Scores of every sequence of every item (the head's outputs at its last token).
pub fn score_items(model: &LocalModel, items: &[Item]) -> Result<Vec<Vec<Vec<f32>>>, TrainError> {
    let flat: Vec<Vec<u32>> = items.iter().flat_map(|i| i.sequences.iter().cloned()).collect();
    let mut scores = model.classify(&flat)?.into_iter();
    Ok(items
        .iter()
        .map(|item| item.sequences.iter().map_while(|_| scores.next()).collect())
        .collect())
}

/// Accuracy on held-out items, overall and per tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorerEval {
    pub kind: ScorerKind,
    pub items: usize,
    /// Pairwise accuracy (chosen scored above rejected) or classification accuracy.
    pub accuracy: f64,
    /// `(tag, items, accuracy)`, tags sorted.
    pub per_tag: Vec<(String, usize, f64)>,
    /// Moderation only: area under the ROC curve of the flagged probability.
    pub auroc: Option<f64>,
}

/// Evaluates a trained scorer on held-out items.
pub fn evaluate(kind: ScorerKind, model: &LocalModel, items: &[Item]) -> Result<ScorerEval, TrainError> {
    let scores = score_items(model, items)?;
    let mut per_tag: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut flagged_scores = Vec::new();
    let mut correct = 0;
    for (item, s) in items.iter().zip(&scores) {
        let right = match kind {
            ScorerKind::Reward => s.len() == 2 && s[0][0] > s[1][0],
            ScorerKind::Safety | ScorerKind::Moderation => {
                let log_p = log_softmax(&s[0]);
                if kind == ScorerKind::Moderation {
                    let flagged: f64 = Category::ALL.iter().filter(|c| c.flagged()).map(|c| log_p[c.index()].exp()).sum();
                    flagged_scores.push((flagged, Category::ALL[item.label].flagged()));
                }
                argmax(&log_p) == item.label
            }
        };
        correct += usize::from(right);
        let entry = per_tag.entry(item.tag).or_default();
        entry.0 += 1;
        entry.1 += usize::from(right);
    }
    Ok(ScorerEval {
        kind,
        items: items.len(),
        accuracy: correct as f64 / items.len().max(1) as f64,
        per_tag: per_tag
            .into_iter()
            .map(|(tag, (n, right))| (tag.to_string(), n, right as f64 / n as f64))
            .collect(),
        auroc: (kind == ScorerKind::Moderation).then(|| auroc(&flagged_scores)),
    })
}

/// Area under the ROC curve: the probability that a random positive scores above a
/// random negative (ties count half). 0.5 when either class is absent.
pub fn auroc(scored: &[(f64, bool)]) -> f64 {
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|s| s.1).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    // Mann-Whitney U over ranks, ties given their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    let p = positives as f64;
    (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

/// The trained safety classifier as the rule-based reward model's grader.
pub struct TrainedGrader {
    model: LocalModel,
}

impl TrainedGrader {
    pub fn new(model: LocalModel) -> Result<Self, TrainError> {
        if model.config().num_labels != Some(SafetyClass::ALL.len()) {
            return Err(TrainError::Config {
                key: "grader".into(),
                why: format!(
                    "{} is not a safety classifier with {} outputs",
                    model.dir().display(),
                    SafetyClass::ALL.len()
                ),
            });
        }
        Ok(TrainedGrader { model })
    }
}

impl SafetyGrader for TrainedGrader {
    fn grade(&self, replies: &[Graded<'_>]) -> Result<Vec<[f64; 5]>, GraderError> {
        let max = self.model.context_length();
        let sequences = replies
            .iter()
            .map(|r| reply_tokens(self.model.tokenizer(), r.conversation, r.reply).map(|ids| keep_tail(ids, max)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| GraderError::Backend(Box::new(e)))?;
        let logits = self.model.classify(&sequences).map_err(|e| GraderError::Backend(Box::new(e)))?;
        Ok(logits
            .iter()
            .map(|row| {
                let mut probs = [0.0; 5];
                for (p, lp) in probs.iter_mut().zip(log_softmax(row)) {
                    *p = lp.exp();
                }
                probs
            })
            .collect())
    }
}

/// Train and held-out items of `kind` from the chat-data generators: the train split
/// for training, the test split (held-out templates) for evaluation.
pub fn generated_items(
    kind: ScorerKind,
    tokenizer: &Tokenizer,
    train_examples: usize,
    test_examples: usize,
    seq_len: usize,
    seed: u64,
) -> Result<(Vec<Item>, Vec<Item>), TrainError> {
    let train = chat_examples(Split::Train, train_examples, seed)?;
    let test = chat_examples(Split::Test, test_examples, seed.wrapping_add(1))?;
    Ok((
        items(kind, &train, tokenizer, seq_len, seed)?,
        items(kind, &test, tokenizer, seq_len, seed)?,
    ))
}

/// How to train a scorer from a language model folder on generated data.
#[derive(Clone, Debug)]
pub struct ScorerPlan {
    pub kind: ScorerKind,
    /// The language model folder it starts from (weights, shape and tokenizer).
    pub base: PathBuf,
    pub out_dir: PathBuf,
    /// Generated train-split examples the training items come from.
    pub train_examples: usize,
    /// Generated test-split examples (held-out templates) it is evaluated on.
    pub test_examples: usize,
    pub steps: u64,
    /// Rows of `seq_len` tokens per step.
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub seed: u64,
}

impl ScorerPlan {
    pub fn new(kind: ScorerKind, base: &Path, out_dir: &Path) -> Self {
        ScorerPlan {
            kind,
            base: base.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            train_examples: 4000,
            test_examples: 600,
            steps: 200,
            batch_size: 8,
            seq_len: 256,
            lr: 5e-4,
            seed: 0,
        }
    }

    fn stage(&self) -> StageConfig {
        StageConfig {
            name: self.kind.as_str().into(),
            out_dir: self.out_dir.clone(),
            steps: self.steps,
            lr: self.lr,
            schedule: Schedule::Cosine {
                warmup_frac: 0.05,
                min_lr_ratio: 0.1,
            },
            optimizer: AdamWConfig::default(),
            clip_norm: 1.0,
            checkpoint_every: (self.steps / 4).max(1),
        }
    }
}

/// File the held-out evaluation of a trained scorer is written to, in its out folder.
pub const SCORER_EVAL_FILE: &str = "eval.json";

/// Trains the scorer of `plan` (resuming when `resume`), evaluates it on held-out
/// templates and writes the evaluation beside the model (`eval.json`).
pub fn train_scorer(plan: &ScorerPlan, resume: bool, progress: bool) -> Result<(StageSummary, ScorerEval), TrainError> {
    let base = LocalModel::load(&plan.base)?;
    let seq_len = plan.seq_len.min(base.context_length());
    let (train_items, test_items) = generated_items(
        plan.kind,
        base.tokenizer(),
        plan.train_examples,
        plan.test_examples,
        seq_len,
        plan.seed,
    )?;
    let model = Model::classifier_from(base.model(), plan.kind.num_labels(), 0.02, plan.seed)?;
    let mut objective = ScorerObjective::new(plan.kind, &model, train_items, plan.batch_size, seq_len, plan.seed)?;
    let tokenizer_json = base.tokenizer().to_json();
    let (_, summary) = run_stage(model, &mut objective, &plan.stage(), tokenizer_json.as_bytes(), resume, progress)?;
    let trained = LocalModel::load(&summary.model_dir)?;
    let eval = evaluate(plan.kind, &trained, &test_items)?;
    let path = plan.out_dir.join(SCORER_EVAL_FILE);
    let text = serde_json::to_string_pretty(&eval).map_err(|e| TrainError::Parse {
        path: path.clone(),
        why: e.to_string(),
    })?;
    std::fs::write(&path, text).map_err(io_err(&path))?;
    Ok((summary, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(lens: &[usize], label: usize) -> Item {
        Item {
            sequences: lens.iter().map(|&n| (1..=n as u32).collect()).collect(),
            label,
            tag: "t",
        }
    }

    #[test]
    fn packing_keeps_groups_in_one_row_and_sequences_apart() {
        let mut p = Packer::new(2, 8);
        // Row 0: the pair (3+2), and the 4 does not fit beside it; row 1: the 4; the 5 does not fit.
        assert!(p.try_add(&item(&[3, 2], 0).sequences));
        assert!(p.try_add(&item(&[4], 1).sequences));
        assert!(!p.try_add(&item(&[5], 0).sequences));
        assert!(!p.try_add(&item(&[9], 0).sequences), "longer than a row");
        assert_eq!(p.ends, vec![2, 4, 11]);
        assert_eq!(p.windows[3], [3, 4], "the second sequence starts its own window");
        assert_eq!(p.windows[4], [3, 5]);
        assert_eq!(p.windows[5], [5, 6], "padding sees itself only");
        assert_eq!(p.windows[8], [0, 1], "row 1 starts over");
        let (inputs, mask, _) = p.finish().unwrap();
        assert_eq!(inputs.len(), 16);
        mask.check_batch(2, 8).unwrap();
    }

    #[test]
    fn auroc_matches_hand_counts() {
        assert_eq!(auroc(&[(0.1, false), (0.2, false), (0.8, true), (0.9, true)]), 1.0);
        assert_eq!(auroc(&[(0.9, false), (0.1, true)]), 0.0);
        // One positive tied with one of two negatives: (1 + 0.5) / 2.
        assert_eq!(auroc(&[(0.5, true), (0.5, false), (0.1, false)]), 0.75);
        assert_eq!(auroc(&[(0.5, true)]), 0.5);
    }

    #[test]
    fn classifier_gradient_is_softmax_minus_onehot_at_ends_only() {
        let labels = ScorerKind::Safety.num_labels();
        let mut logits = vec![0.5f32; 4 * labels];
        let row = [1.0, 2.0, 0.0, 0.0, 0.0];
        logits[labels..2 * labels].copy_from_slice(&row);
        let items = [item(&[2], 1)];
        let refs: Vec<&Item> = items.iter().collect();
        let (loss, accuracy) = scorer_loss_backward(ScorerKind::Safety, &mut logits, &refs, &[1]);
        let lse = row.iter().map(|&z| f64::from(z).exp()).sum::<f64>().ln();
        assert!((loss - (lse - 2.0)).abs() < 1e-6);
        assert_eq!(accuracy, 1.0);
        assert!(logits[..labels].iter().chain(&logits[2 * labels..]).all(|&g| g == 0.0));
        let sum: f32 = logits[labels..2 * labels].iter().sum();
        assert!(sum.abs() < 1e-6, "softmax minus one-hot sums to zero");
        assert!(logits[labels + 1] < 0.0);
    }
}
