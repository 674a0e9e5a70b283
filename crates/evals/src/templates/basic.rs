//! `Match`, `Includes`, `FuzzyMatch`, `JsonMatch` (and `TestMatch`), as in
//! `evals/elsuite/basic/*.py`.

use serde_json::{json, Map, Value};

use super::{BuildCtx, ReportCtx, SampleCtx, Template};
use crate::error::Result;
use crate::log::Report;
use crate::metrics;
use crate::prompt::is_chat;
use crate::text;

fn params(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Check that a sample has `input` and `ideal`, as every basic template asserts.
fn input_and_ideal<'v>(sample: &'v Value, ctx: &SampleCtx) -> Result<(&'v Value, &'v Value)> {
    let obj = sample.as_object().ok_or_else(|| ctx.error("sample must be a dict"))?;
    let input = obj.get("input").ok_or_else(|| ctx.error("sample must have an 'input' key"))?;
    let ideal = obj.get("ideal").ok_or_else(|| ctx.error("sample must have an 'ideal' key"))?;
    Ok((input, ideal))
}

/// `ideal` as a list of strings (a lone value becomes a one-item list).
fn ideal_strings(ideal: &Value, ctx: &SampleCtx) -> Result<Vec<String>> {
    let items: Vec<&Value> = match ideal {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|v| {
            v.as_str()
                .map(String::from)
                .ok_or_else(|| ctx.error("ideal must be a list of strings"))
        })
        .collect()
}

fn accuracy_report(ctx: &ReportCtx) -> Report {
    let vals = ctx.match_correct();
    let mut r = Report::default();
    r.push_f64("accuracy", metrics::mean(&vals));
    r.push_f64("boostrap_std", metrics::bootstrap_std(&vals, ctx.seed));
    if let Some(ci) = metrics::bootstrap_ci95(&vals, ctx.seed) {
        r.push("bootstrap_ci95", json!(ci));
    }
    r
}

/// `record_and_check_match`: the first option the completion starts with (no
/// normalisation at all) is picked; correct when it is one of the expected answers.
pub fn check_match(sampled: &str, expected: &[String]) -> Option<usize> {
    expected.iter().position(|option| sampled.starts_with(option.as_str()))
}

/// Upstream's `TestMatch` samples, hard-coded there too.
fn test_match_samples() -> Vec<Value> {
    let system = "Complete the phrase as concisely as possible.";
    [
        ("Once upon a ", "time"),
        ("The first US president was ", "George Washington"),
        ("OpenAI was founded in 20", "15"),
    ]
    .iter()
    .map(|(user, ideal)| json!({"input": [{"role": "system", "content": system}, {"role": "user", "content": user}], "ideal": ideal}))
    .collect()
}

pub struct Match {
    samples: Option<std::path::PathBuf>,
    few_shot: Vec<Value>,
}

impl Match {
    pub fn new(ctx: &BuildCtx, hard_coded: bool) -> Result<Match> {
        let samples = if hard_coded { None } else { Some(ctx.samples_path()?) };
        let num_few_shot = ctx.usize_arg("num_few_shot", 0)?;
        let mut few_shot = Vec::new();
        if num_few_shot > 0 {
            let rel = ctx
                .str_arg("few_shot_jsonl")?
                .ok_or_else(|| ctx.bad("few shot requires few shot sample dataset (`few_shot_jsonl`)"))?;
            let rows = crate::data::read_jsonl(&ctx.data_path(&rel)?)?;
            for (i, row) in rows.into_iter().take(num_few_shot).enumerate() {
                match row.get("sample") {
                    Some(Value::Array(msgs)) => few_shot.extend(msgs.iter().cloned()),
                    _ => return Err(ctx.bad(format!("few-shot row {} of {rel} has no `sample` list", i + 1))),
                }
            }
        }
        Ok(Match { samples, few_shot })
    }
}

impl Template for Match {
    fn samples(&self) -> Result<Vec<Value>> {
        match &self.samples {
            Some(p) => crate::data::read_jsonl(p),
            None => Ok(test_match_samples()),
        }
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let (input, ideal) = input_and_ideal(sample, ctx)?;
        if !ideal.is_string() && !ideal.is_array() {
            return Err(ctx.error("sample['ideal'] must be a string or list of strings"));
        }
        let prompt = if self.few_shot.is_empty() {
            input.clone()
        } else {
            let Value::Array(msgs) = input else {
                return Err(ctx.error("few shot requires chat prompt"));
            };
            if !is_chat(input) {
                return Err(ctx.error("few shot requires chat prompt"));
            }
            // Examples go just before the final message, in file order.
            let split = msgs.len().saturating_sub(1);
            let mut p: Vec<Value> = msgs[..split].to_vec();
            p.extend(self.few_shot.iter().cloned());
            p.extend(msgs[split..].iter().cloned());
            Value::Array(p)
        };
        let sampled = ctx.complete(0, &prompt, &params(&[("temperature", json!(0.0))]))?;
        let expected = ideal_strings(ideal, ctx)?;
        let picked = check_match(&sampled, &expected).map(|i| expected[i].clone());
        let mut extra = Map::new();
        extra.insert("sampled".into(), Value::String(sampled));
        extra.insert("options".into(), json!(expected));
        ctx.record_match(picked.is_some(), json!(expected), json!(picked), extra);
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        accuracy_report(ctx)
    }
}

pub struct Includes {
    samples: std::path::PathBuf,
    ignore_case: bool,
}

impl Includes {
    pub fn new(ctx: &BuildCtx) -> Result<Includes> {
        Ok(Includes {
            samples: ctx.samples_path()?,
            ignore_case: ctx.bool_arg("ignore_case", false)?,
        })
    }
}

impl Template for Includes {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let (input, ideal) = input_and_ideal(sample, ctx)?;
        // Upstream passes no sampling arguments here (the endpoint's defaults apply).
        let sampled = ctx.complete(0, input, &Map::new())?;
        let refs = ideal_strings(ideal, ctx)?;
        let found = refs.iter().any(|r| text::includes(&sampled, r, self.ignore_case));
        let mut extra = Map::new();
        extra.insert("sampled".into(), Value::String(sampled.clone()));
        ctx.record_match(found, ideal.clone(), Value::String(sampled), extra);
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        accuracy_report(ctx)
    }
}

pub struct FuzzyMatch {
    samples: std::path::PathBuf,
    max_tokens: usize,
}

impl FuzzyMatch {
    pub fn new(ctx: &BuildCtx) -> Result<FuzzyMatch> {
        Ok(FuzzyMatch {
            samples: ctx.samples_path()?,
            max_tokens: ctx.usize_arg("max_tokens", 100)?,
        })
    }
}

impl Template for FuzzyMatch {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let (input, ideal) = input_and_ideal(sample, ctx)?;
        let p = params(&[("temperature", json!(0.0)), ("max_tokens", json!(self.max_tokens))]);
        let sampled = ctx.complete(0, input, &p)?;
        let answers: Vec<String> = match ideal {
            Value::Array(items) => items.iter().map(text::py_str).collect(),
            other => vec![text::py_str(other)],
        };
        let matches: Vec<bool> = answers.iter().map(|a| text::fuzzy_match(&sampled, a)).collect();
        let any = matches.contains(&true);
        let picked: Vec<&str> = matches.iter().filter(|m| **m).map(|_| sampled.as_str()).collect();
        ctx.record_match(any, json!(answers), json!(picked), Map::new());
        ctx.record(
            "metrics",
            json!({"accuracy": f64::from(u8::from(any)), "f1_score": text::f1_score(&sampled, &answers)}),
        );
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        let acc = ctx.scores("accuracy");
        let mut r = Report::default();
        r.push_f64("accuracy", metrics::mean(&acc));
        r.push_f64("f1_score", metrics::mean(&ctx.scores("f1_score")));
        if let Some(ci) = metrics::bootstrap_ci95(&acc, ctx.seed) {
            r.push("bootstrap_ci95", json!(ci));
        }
        r
    }
}

/// Python `==` between two decoded JSON scalars: numbers and booleans compare numerically
/// (`1 == 1.0`, `True == 1`), strings by value, anything else is unequal.
fn py_scalar_eq(a: &Value, b: &Value) -> bool {
    fn num(v: &Value) -> Option<(Option<i128>, f64)> {
        match v {
            Value::Bool(b) => Some((Some(i128::from(*b)), f64::from(u8::from(*b)))),
            Value::Number(n) => {
                let exact = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
                Some((exact, n.as_f64()?))
            }
            _ => None,
        }
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        _ => match (num(a), num(b)) {
            (Some((Some(x), _)), Some((Some(y), _))) => x == y,
            (Some((_, x)), Some((_, y))) => x == y,
            _ => false,
        },
    }
}

/// Upstream's `json_match`: structural comparison where a missing value or `null` never
/// matches, objects compare over the union of their keys and lists element-wise.
pub fn json_match(sampled: Option<&Value>, correct: Option<&Value>) -> bool {
    let (Some(s), Some(c)) = (sampled, correct) else {
        return false;
    };
    match (s, c) {
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Object(sm), Value::Object(cm)) => sm.keys().chain(cm.keys()).all(|k| json_match(sm.get(k), cm.get(k))),
        (Value::Object(_), _) => false,
        (Value::Array(sl), Value::Array(cl)) => sl.len() == cl.len() && sl.iter().zip(cl).all(|(a, b)| json_match(Some(a), Some(b))),
        (Value::Array(_), _) => false,
        _ => py_scalar_eq(s, c),
    }
}

pub struct JsonMatch {
    samples: std::path::PathBuf,
    max_tokens: usize,
}

impl JsonMatch {
    pub fn new(ctx: &BuildCtx) -> Result<JsonMatch> {
        Ok(JsonMatch {
            samples: ctx.samples_path()?,
            max_tokens: ctx.usize_arg("max_tokens", 512)?,
        })
    }
}

impl Template for JsonMatch {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let (input, ideal) = input_and_ideal(sample, ctx)?;
        let p = params(&[("temperature", json!(0.0)), ("max_tokens", json!(self.max_tokens))]);
        let sampled = ctx.complete(0, input, &p)?;
        let answers = ideal_strings(ideal, ctx)?;
        let sampled_json: Option<Value> = serde_json::from_str(&sampled).ok();
        let correct: Vec<Value> = answers
            .iter()
            .map(|a| serde_json::from_str(a).map_err(|e| ctx.error(format!("ideal {a:?} is not valid JSON: {e}"))))
            .collect::<Result<_>>()?;
        let matches: Vec<bool> = correct.iter().map(|c| json_match(sampled_json.as_ref(), Some(c))).collect();
        let any = matches.contains(&true);
        let picked: Vec<&str> = matches.iter().filter(|m| **m).map(|_| sampled.as_str()).collect();
        ctx.record_match(any, json!(answers), json!(picked), Map::new());
        ctx.record("metrics", json!({"accuracy": f64::from(u8::from(any))}));
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        let acc = ctx.scores("accuracy");
        let mut r = Report::default();
        r.push_f64("accuracy", metrics::mean(&acc));
        if let Some(ci) = metrics::bootstrap_ci95(&acc, ctx.seed) {
            r.push("bootstrap_ci95", json!(ci));
        }
        r
    }
}
