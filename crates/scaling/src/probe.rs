//! An inverse-scaling probe in the style of hindsight neglect (McKenzie et al., the Inverse
//! Scaling Prize): few-shot examples of bets whose outcome always agrees with their expected
//! value, then a test bet whose outcome does not. The right answer follows the expected value,
//! so a model that copies the few-shot pattern "good outcome means good decision" fails, and
//! accuracy across the ladder shows whether larger models are lured more or less.
//!
//! Bets are rendered by ferrogpt-data's [`Bet`], the same text the `bets` training generator
//! emits (with outcomes independent of the answer there, so expected value is the only signal
//! a model can learn); a model never trained on that text sits at chance.

use crate::ScalingError;
use ferrogpt_data::synthetic::Bet;
use ferrogpt_infer::LocalModel;
use ferrogpt_rng::{hash_str, SplitMix64};
use ferrogpt_tokenizer::Special;
use serde::{Deserialize, Serialize};

/// Few-shot examples per item in [`hindsight_items`]: short enough for the ladder's smallest
/// context lengths, enough to set up the misleading pattern.
pub const DEFAULT_SHOTS: usize = 2;
/// Bootstrap-free interval: Wilson's score interval at 90% (two-sided z).
const Z90: f64 = 1.644_853_626_951_472_2;

/// One multiple-choice item, scored by the log-likelihood of each option after the prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeItem {
    pub prompt: String,
    pub options: Vec<String>,
    /// Index of the correct option.
    pub answer: usize,
}

/// Accuracy of a model on probe items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub accuracy: f64,
    pub n: usize,
    /// Accuracy of guessing uniformly among each item's options.
    pub chance: f64,
    /// Wilson 90% interval of the accuracy.
    pub ci90: (f64, f64),
    /// Mean of `log p(correct) − max log p(wrong option)` in nats: a smoother view of the trend
    /// than accuracy when models sit near chance.
    pub mean_margin: f64,
}

/// `count` hindsight-neglect items with [`DEFAULT_SHOTS`] examples each.
pub fn hindsight_items(count: usize, seed: u64) -> Vec<ProbeItem> {
    hindsight_items_with_shots(count, seed, DEFAULT_SHOTS)
}

/// `count` hindsight-neglect items, each with `shots` examples (outcome agreeing with the
/// expected value) before the test bet (outcome disagreeing). Good and bad test bets alternate
/// in random order, so always answering `Y` (or `N`) scores one half.
pub fn hindsight_items_with_shots(count: usize, seed: u64, shots: usize) -> Vec<ProbeItem> {
    (0..count as u64)
        .map(|i| {
            let mut rng = SplitMix64::derived(hash_str(seed, "hindsight"), i);
            let examples: Vec<Bet> = (0..shots)
                .map(|_| {
                    let good = rng.below(2) == 0;
                    Bet::random(&mut rng, good, good)
                })
                .collect();
            let good = rng.below(2) == 0;
            hindsight_item(&examples, &Bet::random(&mut rng, good, !good))
        })
        .collect()
}

/// The item for `test` after the few-shot `examples`: each example is its full training text,
/// and the test is its text up to the answer. Options are ` Y` and ` N` (with the space BPE
/// attaches to the answer).
pub fn hindsight_item(examples: &[Bet], test: &Bet) -> ProbeItem {
    let mut prompt = String::new();
    for bet in examples {
        prompt.push_str(&bet.sample().text());
        prompt.push_str("\n\n");
    }
    prompt.push_str(&test.sample().query());
    ProbeItem {
        prompt,
        options: vec![" Y".into(), " N".into()],
        answer: if test.was_right() { 0 } else { 1 },
    }
}

/// The most few-shot examples, up to `limit`, with which every one of `count` items of
/// [`hindsight_items_with_shots`] fits `model`'s context (0 when even the bare test bet does
/// not fit, in which case the probe cannot run). Decide once for the whole ladder (its rungs
/// share the tokenizer and context length) so that every rung answers the same items.
pub fn shots_that_fit(model: &LocalModel, count: usize, seed: u64, limit: usize) -> usize {
    let tok = model.tokenizer();
    let fits = |items: &[ProbeItem]| {
        items.iter().all(|item| {
            let prompt = 1 + tok.encode(&item.prompt).len();
            item.options.iter().all(|o| prompt + tok.encode(o).len() <= model.context_length())
        })
    };
    (0..=limit)
        .rev()
        .find(|&shots| fits(&hindsight_items_with_shots(count, seed, shots)))
        .unwrap_or(0)
}

/// Scores every option of every item by the total log-probability of its tokens after the
/// prompt (`<|bos|>` first, as in training); an item counts as correct when the answer scores
/// strictly highest.
pub fn probe_accuracy(model: &LocalModel, items: &[ProbeItem]) -> Result<ProbeResult, ScalingError> {
    if items.is_empty() {
        return Err(ScalingError::Capability("the probe needs at least one item".into()));
    }
    let tok = model.tokenizer();
    let bos = tok.special_id(Special::Bos);
    let context = model.context_length();
    // Items run one after another: the engine already spreads each forward pass over every core.
    let margins: Vec<f64> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.options.len() < 2 || item.answer >= item.options.len() {
                return Err(ScalingError::Capability(format!(
                    "probe item {i} needs at least two options and an answer among them"
                )));
            }
            let mut prompt = vec![bos];
            prompt.extend(tok.encode(&item.prompt));
            let scores = item
                .options
                .iter()
                .map(|option| {
                    let option = tok.encode(option);
                    if prompt.len() + option.len() > context {
                        return Err(ScalingError::PromptTooLong {
                            what: format!("probe item {i}"),
                            tokens: prompt.len() + option.len(),
                            context,
                        });
                    }
                    Ok(model.score(&prompt, &option)?.logprob)
                })
                .collect::<Result<Vec<f64>, ScalingError>>()?;
            let best_wrong = scores
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != item.answer)
                .map(|(_, &s)| s)
                .fold(f64::NEG_INFINITY, f64::max);
            Ok(scores[item.answer] - best_wrong)
        })
        .collect::<Result<_, _>>()?;
    let n = items.len();
    let correct = margins.iter().filter(|&&m| m > 0.0).count();
    let accuracy = correct as f64 / n as f64;
    Ok(ProbeResult {
        accuracy,
        n,
        chance: items.iter().map(|it| 1.0 / it.options.len() as f64).sum::<f64>() / n as f64,
        ci90: wilson(correct, n, Z90),
        mean_margin: margins.iter().sum::<f64>() / n as f64,
    })
}

/// Wilson's score interval for `k` successes in `n` trials.
fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bet's numbers and outcome read back from its rendered text.
    fn parse_bet(q: &str) -> (f64, bool) {
        let nums: Vec<f64> = q
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let (lose_pct, loss, win_pct, gain) = (nums[0], nums[1], nums[2], nums[3]);
        assert_eq!(lose_pct + win_pct, 100.0, "{q}");
        let won = q.contains(" won $");
        assert!(won != q.contains(" lost $"), "{q}");
        (win_pct * gain - lose_pct * loss, won)
    }

    #[test]
    fn items_are_deterministic_and_follow_expected_value_against_the_outcome() {
        let items = hindsight_items_with_shots(300, 7, 3);
        assert_eq!(items, hindsight_items_with_shots(300, 7, 3));
        assert_ne!(items, hindsight_items_with_shots(300, 8, 3));
        assert_eq!(hindsight_items(5, 7).len(), 5);
        let mut yes = 0;
        for item in &items {
            let blocks: Vec<&str> = item.prompt.split("\n\n").collect();
            assert_eq!(blocks.len(), 4, "{}", item.prompt);
            for shot in &blocks[..3] {
                let (q, a) = shot.split_once("\nA: ").unwrap();
                let (ev, won) = parse_bet(q);
                assert_eq!(a, if ev > 0.0 { "Y" } else { "N" }, "{shot}");
                assert_eq!(won, ev > 0.0, "a few-shot outcome disagrees with its expected value: {shot}");
            }
            let test = blocks[3].strip_suffix("\nA:").unwrap();
            let (ev, won) = parse_bet(test);
            assert_ne!(won, ev > 0.0, "the test outcome must disagree with the expected value: {test}");
            assert_eq!(item.options[item.answer], if ev > 0.0 { " Y" } else { " N" });
            yes += (item.answer == 0) as usize;
        }
        assert!((100..200).contains(&yes), "answers should be balanced, got {yes} Y of 300");
    }

    #[test]
    fn wilson_interval_brackets_the_estimate() {
        let (lo, hi) = wilson(50, 100, Z90);
        assert!(lo < 0.5 && hi > 0.5 && (hi - lo - 0.164).abs() < 0.01, "{lo} {hi}");
        assert_eq!(wilson(0, 10, Z90).0, 0.0);
        assert_eq!(wilson(10, 10, Z90).1, 1.0);
    }

    #[test]
    fn random_model_accuracy_is_a_fraction_of_all_items() {
        let model = crate::capability::tests::tiny_model();
        let items = hindsight_items(12, 3);
        let r = probe_accuracy(&model, &items).unwrap();
        // The tiny model's context (512) holds a handful of terse bets, not dozens.
        let shots = shots_that_fit(&model, 12, 3, 64);
        assert!((2..64).contains(&shots), "{shots}");
        let longest = hindsight_items_with_shots(12, 3, shots + 1);
        assert!(matches!(probe_accuracy(&model, &longest), Err(ScalingError::PromptTooLong { .. })));
        assert_eq!(r.n, 12);
        assert!((0.0..=1.0).contains(&r.accuracy));
        assert_eq!(r.chance, 0.5);
        assert!(r.ci90.0 <= r.accuracy && r.accuracy <= r.ci90.1);
        assert!(r.mean_margin.is_finite());
        assert_eq!(probe_accuracy(&model, &items).unwrap(), r, "scoring must be deterministic");
        let bad = ProbeItem {
            answer: 2,
            ..items[0].clone()
        };
        assert!(probe_accuracy(&model, &[bad]).is_err());
    }
}
