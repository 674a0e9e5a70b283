//! Synthetic task generators: deterministic by (seed, index), each sample a question with its
//! exact answer. New generators (coding tasks, logic puzzles, ...) are added to [`GENERATORS`].

use ferrogpt_rng::{hash_str, SplitMix64};

/// One generated problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub prompt: String,
    pub answer: String,
}

impl Sample {
    /// The pretraining text of the sample: `Q: <prompt>\nA: <answer>`.
    pub fn text(&self) -> String {
        format!("Q: {}\nA: {}", self.prompt, self.answer)
    }

    /// The pretraining text up to the answer, `Q: <prompt>\nA:`: what a model is conditioned on
    /// to produce the answer. The space before the answer is left to the model, because BPE
    /// merges it into the answer's first token.
    pub fn query(&self) -> String {
        format!("Q: {}\nA:", self.prompt)
    }
}

/// A family of synthetic problems.
pub trait Generator: Sync {
    /// Registry name, used in sources like `synthetic:<name>:<count>`.
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Draws one sample; all randomness must come from `rng`.
    fn sample(&self, rng: &mut SplitMix64) -> Sample;
}

/// Every registered generator.
pub static GENERATORS: &[&dyn Generator] = &[&Arithmetic, &Counting, &Code, &Bets];

/// Looks a generator up by name.
pub fn generator(name: &str) -> Option<&'static dyn Generator> {
    GENERATORS.iter().copied().find(|g| g.name() == name)
}

/// Names of all generators (for error messages and `--help`).
pub fn generator_names() -> Vec<&'static str> {
    GENERATORS.iter().map(|g| g.name()).collect()
}

/// The `index`-th sample of `generator` under `seed`; independent of any other index, so
/// samples can be produced in parallel and in any order.
pub fn sample_at(generator: &dyn Generator, seed: u64, index: u64) -> Sample {
    let mut rng = SplitMix64::derived(hash_str(seed, generator.name()), index);
    generator.sample(&mut rng)
}

/// Multi-digit addition, subtraction and multiplication.
pub struct Arithmetic;

impl Generator for Arithmetic {
    fn name(&self) -> &'static str {
        "arithmetic"
    }

    fn description(&self) -> &'static str {
        "addition, subtraction and multiplication of 1-4 digit numbers"
    }

    fn sample(&self, rng: &mut SplitMix64) -> Sample {
        // Operand sizes vary so the model sees easy and hard cases; multiplication is kept
        // smaller because its answers grow fastest.
        let digits = |rng: &mut SplitMix64, max_digits: u32| {
            let d = rng.range(1, max_digits as i64) as u32;
            rng.range(if d == 1 { 0 } else { 10i64.pow(d - 1) }, 10i64.pow(d) - 1)
        };
        let (a, b, op, result) = match rng.below(3) {
            0 => {
                let (a, b) = (digits(rng, 4), digits(rng, 4));
                (a, b, '+', a + b)
            }
            1 => {
                let (a, b) = (digits(rng, 4), digits(rng, 4));
                (a, b, '-', a - b)
            }
            _ => {
                let (a, b) = (digits(rng, 3), digits(rng, 2));
                (a, b, '*', a * b)
            }
        };
        let prompt = match rng.below(3) {
            0 => format!("{a} {op} {b} = ?"),
            1 => format!("What is {a} {op} {b}?"),
            _ => format!("Compute {a} {op} {b}."),
        };
        Sample {
            prompt,
            answer: result.to_string(),
        }
    }
}

/// Counting letters, items and number sequences.
pub struct Counting;

const WORDS: &[&str] = &[
    "apple",
    "banana",
    "strawberry",
    "mississippi",
    "bookkeeper",
    "committee",
    "letter",
    "balloon",
    "coffee",
    "parallel",
    "programming",
    "assessment",
    "success",
    "address",
    "tomorrow",
    "necessary",
    "possession",
    "occurrence",
    "embarrass",
    "accommodate",
    "river",
    "kernel",
    "compiler",
    "terminal",
    "directory",
    "keyboard",
    "window",
    "network",
    "process",
    "memory",
    "library",
    "function",
    "variable",
    "pepper",
    "giraffe",
    "hippopotamus",
    "rabbit",
    "cherry",
    "lemon",
    "orange",
    "purple",
    "yellow",
    "mirror",
    "summer",
    "winter",
    "pizza",
];

const ITEMS: &[&str] = &[
    "apple", "pear", "cat", "dog", "book", "pen", "cup", "star", "tree", "car", "ball", "key",
];

impl Generator for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn description(&self) -> &'static str {
        "letter counts, item tallies, arithmetic sequences and counting ranges"
    }

    fn sample(&self, rng: &mut SplitMix64) -> Sample {
        match rng.below(4) {
            0 => {
                let word = *rng.choose(WORDS);
                let bytes = word.as_bytes();
                let letter = bytes[rng.below(bytes.len() as u64) as usize] as char;
                let count = word.chars().filter(|&c| c == letter).count();
                Sample {
                    prompt: format!("How many times does the letter \"{letter}\" appear in \"{word}\"?"),
                    answer: count.to_string(),
                }
            }
            1 => {
                let kinds = 2 + rng.below(2) as usize;
                let mut pool: Vec<&str> = ITEMS.to_vec();
                rng.shuffle(&mut pool);
                let chosen = &pool[..kinds];
                let n = 3 + rng.below(8) as usize;
                let list: Vec<&str> = (0..n).map(|_| *rng.choose(chosen)).collect();
                let target = *rng.choose(&list);
                let count = list.iter().filter(|&&x| x == target).count();
                Sample {
                    prompt: format!("Count the {target}s in this list: {}.", list.join(", ")),
                    answer: count.to_string(),
                }
            }
            2 => {
                let start = rng.range(-20, 50);
                let step = rng.range(-9, 12);
                let len = 4 + rng.below(3) as i64;
                let seq: Vec<String> = (0..len).map(|i| (start + i * step).to_string()).collect();
                Sample {
                    prompt: format!("What comes next: {}, ?", seq.join(", ")),
                    answer: (start + len * step).to_string(),
                }
            }
            _ => {
                let from = rng.range(0, 90);
                let len = rng.range(3, 10);
                let to = from + len - 1;
                let seq: Vec<String> = (from..=to).map(|i| i.to_string()).collect();
                Sample {
                    prompt: format!("Count from {from} to {to}."),
                    answer: seq.join(", "),
                }
            }
        }
    }
}

/// Program synthesis from input/output examples ([`crate::code_task`]): the prompt and the
/// reference body of tasks whose function is not held out.
pub struct Code;

impl Generator for Code {
    fn name(&self) -> &'static str {
        "code"
    }

    fn description(&self) -> &'static str {
        "write a one-line function body from input/output examples (held-out functions excluded)"
    }

    fn sample(&self, rng: &mut SplitMix64) -> Sample {
        crate::code_task::training_task(rng).sample()
    }
}

/// Judging bets by expected value, the skill the hindsight-neglect probe (ferrogpt-scaling's
/// `probe`) tests. The outcome shown is a fair coin independent of the answer, so the only
/// learnable signal is the expected value: a model that learned this text cannot do better by
/// following outcomes, and the probe then asks whether few-shot examples in which outcomes
/// happen to agree with the expected value lure it away from the rule.
pub struct Bets;

impl Generator for Bets {
    fn name(&self) -> &'static str {
        "bets"
    }

    fn description(&self) -> &'static str {
        "was taking a bet the right decision? answered by expected value, whatever the outcome"
    }

    fn sample(&self, rng: &mut SplitMix64) -> Sample {
        let good = rng.below(2) == 0;
        let won = rng.below(2) == 0;
        Bet::random(rng, good, won).sample()
    }
}

/// Stakes in dollars; round numbers keep the text short in tokens.
const STAKES: &[u32] = &[1, 2, 5, 10, 20, 50, 100, 200, 250, 500, 900, 1000];

/// A bet someone took: `lose_pct` percent chance of losing `loss` dollars, otherwise winning
/// `gain` dollars, and what actually happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bet {
    pub lose_pct: u32,
    pub loss: u32,
    pub gain: u32,
    pub won: bool,
}

impl Bet {
    /// A bet whose expected value is positive when `good` (negative otherwise), by a factor of
    /// at least two between the expected gain and the expected loss so the sign is never a
    /// close call, with the given outcome.
    pub fn random(rng: &mut SplitMix64, good: bool, won: bool) -> Bet {
        loop {
            let lose_pct = 5 * rng.range(1, 19) as u32;
            let (loss, gain) = (*rng.choose(STAKES), *rng.choose(STAKES));
            let bet = Bet { lose_pct, loss, gain, won };
            let (expected_gain, expected_loss) = bet.expected_parts();
            let clear = if good {
                expected_gain >= 2 * expected_loss
            } else {
                expected_loss >= 2 * expected_gain
            };
            if clear {
                return bet;
            }
        }
    }

    /// Expected gain and expected loss in hundredths of a dollar.
    fn expected_parts(&self) -> (u64, u64) {
        (
            (100 - self.lose_pct) as u64 * self.gain as u64,
            self.lose_pct as u64 * self.loss as u64,
        )
    }

    /// Expected value in dollars.
    pub fn expected_value(&self) -> f64 {
        let (g, l) = self.expected_parts();
        (g as f64 - l as f64) / 100.0
    }

    /// Taking the bet was right exactly when its expected value is positive.
    pub fn was_right(&self) -> bool {
        self.expected_value() > 0.0
    }

    /// Whether the outcome agrees with the expected value (a good bet won, a bad bet lost).
    pub fn outcome_agrees(&self) -> bool {
        self.won == self.was_right()
    }

    /// The question and its `Y`/`N` answer; the answer follows the expected value only.
    pub fn sample(&self) -> Sample {
        let Bet { lose_pct, loss, gain, won } = self;
        let outcome = if *won { format!("won ${gain}") } else { format!("lost ${loss}") };
        Sample {
            // Terse, because the hindsight probe puts several bets in contexts as short as 64 tokens.
            prompt: format!(
                "Bet: {lose_pct}% to lose ${loss}, {}% to win ${gain}. It {outcome}. Right to bet?",
                100 - lose_pct
            ),
            answer: if self.was_right() { "Y" } else { "N" }.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_vary() {
        for g in GENERATORS {
            let a: Vec<Sample> = (0..50).map(|i| sample_at(*g, 9, i)).collect();
            let b: Vec<Sample> = (0..50).map(|i| sample_at(*g, 9, i)).collect();
            assert_eq!(a, b, "{}", g.name());
            let other: Vec<Sample> = (0..50).map(|i| sample_at(*g, 10, i)).collect();
            assert_ne!(a, other, "{} ignores the seed", g.name());
            let distinct: std::collections::HashSet<_> = a.iter().map(Sample::text).collect();
            assert!(distinct.len() > 40, "{} repeats itself", g.name());
        }
        assert!(generator("arithmetic").is_some());
        assert!(generator("code").is_some() && generator("bets").is_some());
        assert!(generator("nope").is_none());
    }

    /// Re-derives every arithmetic answer from the prompt text.
    #[test]
    fn arithmetic_answers_are_correct() {
        for i in 0..2000 {
            let s = sample_at(&Arithmetic, 1, i);
            let expr: String = s.prompt.chars().filter(|c| c.is_ascii_digit() || "+-* ".contains(*c)).collect();
            let parts: Vec<&str> = expr.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "{:?}", s.prompt);
            let a: i64 = parts[0].parse().unwrap();
            let b: i64 = parts[2].parse().unwrap();
            let want = match parts[1] {
                "+" => a + b,
                "-" => a - b,
                "*" => a * b,
                op => panic!("unexpected operator {op}"),
            };
            assert_eq!(s.answer, want.to_string(), "{}", s.text());
            assert!(s.text().starts_with("Q: ") && s.text().contains("\nA: "));
        }
    }

    /// Re-derives every counting answer from the prompt text.
    #[test]
    fn counting_answers_are_correct() {
        for i in 0..2000 {
            let s = sample_at(&Counting, 2, i);
            let p = &s.prompt;
            let want = if let Some(rest) = p.strip_prefix("How many times does the letter \"") {
                let letter = rest.chars().next().unwrap();
                let word = rest.split('"').nth(2).unwrap();
                word.chars().filter(|&c| c == letter).count().to_string()
            } else if let Some(rest) = p.strip_prefix("Count the ") {
                let (target, list) = rest.split_once("s in this list: ").unwrap();
                let list = list.trim_end_matches('.');
                list.split(", ").filter(|x| *x == target).count().to_string()
            } else if let Some(rest) = p.strip_prefix("What comes next: ") {
                let nums: Vec<i64> = rest.trim_end_matches(", ?").split(", ").map(|x| x.parse().unwrap()).collect();
                let step = nums[1] - nums[0];
                assert!(nums.windows(2).all(|w| w[1] - w[0] == step));
                (nums[nums.len() - 1] + step).to_string()
            } else if let Some(rest) = p.strip_prefix("Count from ") {
                let (from, to) = rest.trim_end_matches('.').split_once(" to ").unwrap();
                let (from, to): (i64, i64) = (from.parse().unwrap(), to.parse().unwrap());
                (from..=to).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
            } else {
                panic!("unknown counting prompt {p:?}")
            };
            assert_eq!(s.answer, want, "{}", s.text());
        }
    }

    #[test]
    fn code_samples_are_training_tasks_with_their_reference() {
        for i in 0..1000 {
            let s = sample_at(&Code, 3, i);
            assert!(s.prompt.ends_with("def f(x):"), "{}", s.prompt);
            let mut rng = SplitMix64::derived(hash_str(3, "code"), i);
            let task = crate::code_task::training_task(&mut rng);
            assert_eq!(task.sample(), s);
            assert!(!crate::code_task::is_heldout(&task));
            assert!(crate::code_task::check_completion(&task, &format!(" {}", s.answer)));
            assert_eq!(format!("{} {}", s.query(), s.answer), s.text());
        }
    }

    #[test]
    fn bets_answer_by_expected_value_with_outcomes_independent() {
        let (mut agree, mut yes) = (0, 0);
        let n = 4000;
        for i in 0..n {
            let s = sample_at(&Bets, 5, i);
            let mut rng = SplitMix64::derived(hash_str(5, "bets"), i);
            let (good, won) = (rng.below(2) == 0, rng.below(2) == 0);
            let bet = Bet::random(&mut rng, good, won);
            assert_eq!(bet.sample(), s);
            assert_eq!(bet.was_right(), good);
            assert_eq!(s.answer, if good { "Y" } else { "N" });
            let (g, l) = bet.expected_parts();
            assert!(g.max(l) >= 2 * g.min(l), "{bet:?} is a close call");
            agree += bet.outcome_agrees() as usize;
            yes += (s.answer == "Y") as usize;
        }
        // Fair coins: the outcome tells nothing about the answer.
        for count in [agree, yes] {
            assert!((count as f64 / n as f64 - 0.5).abs() < 0.04, "{count} of {n}");
        }
    }
}
