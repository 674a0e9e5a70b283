//! ferrogpt's own templates: log-likelihood multiple choice (lm-evaluation-harness `acc`
//! and `acc_norm`, plus calibration), bits per byte, and pass@k on a small program-synthesis
//! task checked by an interpreter.

use serde_json::{json, Map, Value};

use super::{BuildCtx, ReportCtx, SampleCtx, Template};
use crate::error::Result;
use crate::log::Report;
use crate::metrics;
use crate::multiple_choice::ChoiceOutcome;

/// `{"input": context, "choices": [...], "ideal": index}`: each choice is scored as a
/// continuation of the context (after `target_delimiter`, default one space); predictions
/// and confidence as [`ChoiceOutcome`] defines them.
pub struct MultipleChoiceLoglik {
    samples: std::path::PathBuf,
    delimiter: String,
}

impl MultipleChoiceLoglik {
    pub fn new(ctx: &BuildCtx) -> Result<Self> {
        Ok(MultipleChoiceLoglik {
            samples: ctx.samples_path()?,
            delimiter: ctx.str_arg("target_delimiter")?.unwrap_or_else(|| " ".into()),
        })
    }
}

impl Template for MultipleChoiceLoglik {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let context = sample
            .get("input")
            .and_then(Value::as_str)
            .ok_or_else(|| ctx.error("sample needs a string `input`"))?
            .to_string();
        let choices: Vec<String> = sample
            .get("choices")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .filter(|c: &Vec<String>| c.len() >= 2)
            .ok_or_else(|| ctx.error("sample needs `choices`: a list of at least two strings"))?;
        let gold = sample
            .get("ideal")
            .and_then(Value::as_u64)
            .map(|g| g as usize)
            .filter(|g| *g < choices.len())
            .ok_or_else(|| ctx.error("sample needs `ideal`: the index of the correct choice"))?;
        let mut lls = Vec::with_capacity(choices.len());
        for c in &choices {
            let ll = ctx.loglikelihood(0, &context, &format!("{}{c}", self.delimiter))?;
            lls.push(ll.logprob);
        }
        let outcome = ChoiceOutcome::new(lls, &choices, gold);
        ctx.record_match(outcome.correct(), json!(choices[gold]), json!(choices[outcome.pred]), Map::new());
        ctx.record(
            "metrics",
            json!({
                "acc": f64::from(u8::from(outcome.correct())),
                "acc_norm": f64::from(u8::from(outcome.correct_norm())),
                "confidence": outcome.confidence,
                "pred": outcome.pred,
                "gold": gold,
                "logprobs": outcome.logprobs,
            }),
        );
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        let acc = ctx.scores("acc");
        let conf = ctx.scores("confidence");
        let correct: Vec<bool> = acc.iter().map(|a| *a > 0.5).collect();
        let (ece, _) = metrics::calibration(&conf, &correct, 10);
        let mut r = Report::default();
        r.push_f64("accuracy", metrics::mean(&acc));
        r.push_f64("acc_norm", metrics::mean(&ctx.scores("acc_norm")));
        r.push_f64("ece", ece);
        r.push_f64("boostrap_std", metrics::bootstrap_std(&acc, ctx.seed));
        if let Some(ci) = metrics::bootstrap_ci95(&acc, ctx.seed) {
            r.push("bootstrap_ci95", json!(ci));
        }
        r
    }
}

/// `{"text": ..., "context"?: ...}`: bits per UTF-8 byte of the text under the model.
pub struct BitsPerByte {
    samples: std::path::PathBuf,
}

impl BitsPerByte {
    pub fn new(ctx: &BuildCtx) -> Result<Self> {
        Ok(BitsPerByte {
            samples: ctx.samples_path()?,
        })
    }
}

impl Template for BitsPerByte {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let text = sample
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ctx.error("sample needs a non-empty string `text`"))?
            .to_string();
        let context = sample.get("context").and_then(Value::as_str).unwrap_or("").to_string();
        let ll = ctx.loglikelihood(0, &context, &text)?;
        let bytes = text.len() as f64;
        ctx.record(
            "metrics",
            json!({"nats": -ll.logprob, "bytes": bytes, "bits_per_byte": -ll.logprob / std::f64::consts::LN_2 / bytes}),
        );
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        let nats: f64 = ctx.scores("nats").iter().sum();
        let bytes: f64 = ctx.scores("bytes").iter().sum();
        let mut r = Report::default();
        r.push_f64("bits_per_byte", nats / std::f64::consts::LN_2 / bytes);
        if let Some(ci) = metrics::bootstrap_ci95(&ctx.scores("bits_per_byte"), ctx.seed) {
            r.push("bootstrap_ci95", json!(ci));
        }
        r
    }
}

/// Exact rational arithmetic for the checker (i128 numerator / positive denominator).
#[derive(Clone, Copy, PartialEq, Debug)]
struct Ratio(i128, i128);

impl Ratio {
    fn new(n: i128, d: i128) -> Option<Ratio> {
        if d == 0 {
            return None;
        }
        fn gcd(a: i128, b: i128) -> i128 {
            if b == 0 {
                a.abs()
            } else {
                gcd(b, a % b)
            }
        }
        let g = gcd(n, d).max(1);
        let s = if d < 0 { -1 } else { 1 };
        Some(Ratio(s * n / g, s * d / g))
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    numbers: Vec<i128>,
}

impl Parser<'_> {
    fn skip(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.i).copied()
    }
    fn expr(&mut self, depth: usize) -> Option<Ratio> {
        let mut acc = self.term(depth)?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let r = self.term(depth)?;
            acc = if op == b'+' {
                Ratio::new(
                    acc.0.checked_mul(r.1)?.checked_add(r.0.checked_mul(acc.1)?)?,
                    acc.1.checked_mul(r.1)?,
                )?
            } else {
                Ratio::new(
                    acc.0.checked_mul(r.1)?.checked_sub(r.0.checked_mul(acc.1)?)?,
                    acc.1.checked_mul(r.1)?,
                )?
            };
        }
        Some(acc)
    }
    fn term(&mut self, depth: usize) -> Option<Ratio> {
        let mut acc = self.atom(depth)?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            let r = self.atom(depth)?;
            acc = if op == b'*' {
                Ratio::new(acc.0.checked_mul(r.0)?, acc.1.checked_mul(r.1)?)?
            } else {
                Ratio::new(acc.0.checked_mul(r.1)?, acc.1.checked_mul(r.0)?)?
            };
        }
        Some(acc)
    }
    fn atom(&mut self, depth: usize) -> Option<Ratio> {
        if depth > 64 {
            return None;
        }
        match self.peek()? {
            b'(' => {
                self.i += 1;
                let v = self.expr(depth + 1)?;
                (self.peek()? == b')').then(|| self.i += 1)?;
                Some(v)
            }
            c if c.is_ascii_digit() => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
                let n: i128 = std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()?;
                self.numbers.push(n);
                Some(Ratio(n, 1))
            }
            _ => None,
        }
    }
}

/// The pass@k task's checker: the completion's first non-empty line must be an arithmetic
/// expression (integers, `+ - * /`, parentheses) that uses exactly the given numbers, each
/// once, and evaluates exactly to `target`. An optional trailing `= ...` is ignored.
pub fn check_arithmetic_program(completion: &str, numbers: &[i64], target: i64) -> bool {
    let Some(line) = completion.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    let line = line.split('=').next().unwrap_or_default().trim().trim_end_matches('.');
    let mut p = Parser {
        s: line.as_bytes(),
        i: 0,
        numbers: Vec::new(),
    };
    let Some(value) = p.expr(0) else { return false };
    if p.peek().is_some() {
        return false;
    }
    let mut used = p.numbers;
    let mut want: Vec<i128> = numbers.iter().map(|n| i128::from(*n)).collect();
    used.sort_unstable();
    want.sort_unstable();
    used == want && value == Ratio(i128::from(target), 1)
}

/// `{"input": prompt, "numbers": [...], "target": n}`: `n_samples` completions per problem,
/// each checked by [`check_arithmetic_program`]; reports the unbiased pass@k.
pub struct PassAtK {
    samples: std::path::PathBuf,
    n_samples: usize,
    ks: Vec<usize>,
    temperature: f64,
    max_tokens: usize,
}

impl PassAtK {
    pub fn new(ctx: &BuildCtx) -> Result<Self> {
        let n_samples = ctx.usize_arg("n_samples", 5)?.max(1);
        let ks = match ctx.arg("k") {
            None => vec![1, n_samples],
            Some(v) => v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).map(|k| k as usize).collect::<Vec<_>>())
                .filter(|ks| !ks.is_empty() && ks.iter().all(|k| (1..=n_samples).contains(k)))
                .ok_or_else(|| ctx.bad(format!("`k` must be a list of integers in 1..={n_samples}")))?,
        };
        let temperature = match ctx.arg("temperature") {
            None => 0.8,
            Some(v) => v.as_f64().ok_or_else(|| ctx.bad("`temperature` must be a number"))?,
        };
        let mut ks = ks;
        ks.dedup();
        Ok(PassAtK {
            samples: ctx.samples_path()?,
            n_samples,
            ks,
            temperature,
            max_tokens: ctx.usize_arg("max_tokens", 64)?,
        })
    }
}

impl Template for PassAtK {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let input = sample.get("input").cloned().ok_or_else(|| ctx.error("sample needs `input`"))?;
        let numbers: Vec<i64> = sample
            .get("numbers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .ok_or_else(|| ctx.error("sample needs `numbers`: a list of integers"))?;
        let target = sample
            .get("target")
            .and_then(Value::as_i64)
            .ok_or_else(|| ctx.error("sample needs an integer `target`"))?;
        let mut passed = 0;
        for i in 0..self.n_samples {
            // A distinct seed per draw keeps the n requests (and their cache entries) apart.
            let mut p = Map::new();
            p.insert("temperature".into(), json!(self.temperature));
            p.insert("max_tokens".into(), json!(self.max_tokens));
            p.insert("seed".into(), json!(i));
            let out = ctx.complete(0, &input, &p)?;
            let ok = check_arithmetic_program(&out, &numbers, target);
            passed += usize::from(ok);
            ctx.record_match(ok, json!(target), json!(out), Map::new());
        }
        let mut m = Map::new();
        m.insert("n".into(), json!(self.n_samples));
        m.insert("passed".into(), json!(passed));
        for &k in &self.ks {
            m.insert(format!("pass@{k}"), json!(metrics::pass_at_k(self.n_samples, passed, k)));
        }
        ctx.record("metrics", Value::Object(m));
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        let mut r = Report::default();
        for &k in &self.ks {
            r.push_f64(&format!("pass@{k}"), metrics::mean(&ctx.scores(&format!("pass@{k}"))));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_accepts_only_exact_programs() {
        assert!(check_arithmetic_program("(3 + 5) * 3 = 24", &[3, 5, 3], 24));
        assert!(check_arithmetic_program("\n 8/(3-8/3)\n", &[8, 3, 8, 3], 24));
        assert!(!check_arithmetic_program("3 * 8", &[3, 8, 1], 24), "must use every number");
        assert!(!check_arithmetic_program("3 * 8 + 1 - 1", &[3, 8], 24), "no extra numbers");
        assert!(!check_arithmetic_program("4 * 6 + ", &[4, 6], 24));
        assert!(!check_arithmetic_program("6 / 0 + 4", &[6, 0, 4], 24));
        assert!(!check_arithmetic_program("This is a dummy response.", &[4, 6], 24));
    }
}
