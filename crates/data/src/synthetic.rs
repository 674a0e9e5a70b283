//! Synthetic task generators: deterministic by (seed, index), each sample a question with its
//! exact answer. New generators (coding tasks, logic puzzles, ...) are added to [`GENERATORS`].

use crate::rng::{hash_str, Rng};

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
}

/// A family of synthetic problems.
pub trait Generator: Sync {
    /// Registry name, used in sources like `synthetic:<name>:<count>`.
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Draws one sample; all randomness must come from `rng`.
    fn sample(&self, rng: &mut Rng) -> Sample;
}

/// Every registered generator.
pub static GENERATORS: &[&dyn Generator] = &[&Arithmetic, &Counting];

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
    let mut rng = Rng::derived(hash_str(seed, generator.name()), index);
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

    fn sample(&self, rng: &mut Rng) -> Sample {
        // Operand sizes vary so the model sees easy and hard cases; multiplication is kept
        // smaller because its answers grow fastest.
        let digits = |rng: &mut Rng, max_digits: u32| {
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

    fn sample(&self, rng: &mut Rng) -> Sample {
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
}
