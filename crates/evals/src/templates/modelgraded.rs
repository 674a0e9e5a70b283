//! `ModelBasedClassify` with modelgraded specs, following
//! `evals/elsuite/modelgraded/{classify,classify_utils}.py`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{BuildCtx, ReportCtx, SampleCtx, Template};
use crate::error::Result;
use crate::log::Report;
use crate::prompt::{chat_to_text, is_chat};
use crate::registry::ModelGradedSpec;
use crate::text::{self, format_necessary, is_py_punctuation, py_strip};

/// The label for a grader answer that names none of the choices.
pub const INVALID: &str = "__invalid__";

/// Instructions appended to the grader prompt for the eval's `eval_type` (verbatim).
pub fn answer_prompt(eval_type: &str) -> Option<&'static str> {
    Some(match eval_type {
        "classify" => "Answer the question by printing only a single choice from {choices} (without quotes or punctuation) corresponding to the correct answer with no other text.",
        "classify_cot" => "First, answer by printing a single choice from {choices} (without quotes or punctuation) corresponding to the correct answer. Then, from the next line, explain your reasonings step by step.",
        "cot_classify" => "First, write out in a step by step manner your reasoning to be sure that your conclusion is correct. Avoid simply stating the correct answer at the outset. Then print only a single choice from {choices} (without quotes or punctuation) on its own line corresponding to the correct answer. At the end, repeat just the answer by itself on a new line.\n\nReasoning:",
        "cot_classify_jp" => "まず、一歩一歩あなたの推論を書き出してください。単に正しい答えを最初に述べることを避けてください。次に、{choices}（引用符や句読点なし）から正しい答えに対応する1つの選択肢を単独の行に書きだしてください。最後に、答えだけを新しい行に繰り返してください。\n推論：",
        _ => return None,
    })
}

/// How a cleaned grader line is compared with a choice (`match_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchFn {
    Include,
    Exact,
    EndsWith,
    StartsOrEndsWith,
}

impl MatchFn {
    pub fn parse(name: &str) -> Option<MatchFn> {
        Some(match name {
            "include" => MatchFn::Include,
            "exact" => MatchFn::Exact,
            "endswith" => MatchFn::EndsWith,
            "starts_or_endswith" => MatchFn::StartsOrEndsWith,
            _ => return None,
        })
    }

    fn matches(self, line: &str, choice: &str) -> bool {
        match self {
            // Upstream's `include` is `x in y` with x = the line: the line inside the choice.
            MatchFn::Include => choice.contains(line),
            MatchFn::Exact => line == choice,
            MatchFn::EndsWith => line.ends_with(choice),
            MatchFn::StartsOrEndsWith => line.starts_with(choice) || line.ends_with(choice),
        }
    }
}

/// `get_choice`: scan the stripped lines (last first for `cot_classify*`), drop ASCII
/// punctuation, and return the first choice (in choice order) the line matches.
pub fn get_choice(text: &str, eval_type: &str, match_fn: MatchFn, choices: &[String]) -> String {
    let mut lines: Vec<&str> = py_strip(text).split('\n').collect();
    if eval_type.starts_with("cot_classify") {
        lines.reverse();
    }
    for line in lines {
        let cleaned: String = py_strip(line).chars().filter(|c| !is_py_punctuation(*c)).collect();
        if cleaned.is_empty() {
            continue;
        }
        if let Some(c) = choices.iter().find(|c| match_fn.matches(&cleaned, c)) {
            return c.clone();
        }
    }
    INVALID.to_string()
}

/// `get_choice_strings`: a list, a string iterated per character, or `from_n`,
/// `from_n_abc`, `from_n_ABC`; choices may not contain ASCII punctuation.
pub fn choice_strings(spec: &Value, n: usize) -> std::result::Result<Vec<String>, String> {
    let letters = |upper: bool| -> Vec<String> {
        (0..n)
            .map(|i| {
                let c = (b'a' + (i % 26) as u8) as char;
                if upper { c.to_ascii_uppercase() } else { c }.to_string()
            })
            .collect()
    };
    let list = match spec {
        Value::String(s) if s == "from_n" => (1..=n).map(|i| i.to_string()).collect(),
        Value::String(s) if s == "from_n_abc" => letters(false),
        Value::String(s) if s == "from_n_ABC" => letters(true),
        Value::String(s) => s.chars().map(String::from).collect(),
        Value::Array(items) => items.iter().map(text::py_str).collect(),
        other => return Err(format!("choice_strings must be a list or a string, got {other}")),
    };
    if let Some(bad) = list.iter().find(|s| s.chars().any(is_py_punctuation)) {
        return Err(format!("choice {bad:?} contains punctuation"));
    }
    Ok(list)
}

/// `get_choice_score`: `None` without scores; an invalid choice gets the lowest score.
pub fn choice_score(choice: &str, choices: &[String], scores: Option<&Value>) -> std::result::Result<Option<f64>, String> {
    let Some(scores) = scores else { return Ok(None) };
    let table: Vec<(String, f64)> = match scores {
        Value::String(s) if s == "from_strings" => choices
            .iter()
            .map(|c| {
                c.trim()
                    .parse::<f64>()
                    .map(|f| (c.clone(), f))
                    .map_err(|_| format!("choice {c:?} is not a number (choice_scores: from_strings)"))
            })
            .collect::<std::result::Result<_, _>>()?,
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                v.as_f64()
                    .map(|f| (k.clone(), f))
                    .ok_or_else(|| format!("choice score for {k:?} is not a number"))
            })
            .collect::<std::result::Result<_, _>>()?,
        other => return Err(format!("choice_scores must be a mapping or `from_strings`, got {other}")),
    };
    if choice == INVALID {
        return Ok(table.iter().map(|(_, f)| *f).reduce(f64::min));
    }
    table
        .iter()
        .find(|(k, _)| k == choice)
        .map(|(_, f)| Some(*f))
        .ok_or_else(|| format!("no score for choice {choice:?}"))
}

/// `scrub_formatting_from_prompt`: double the braces so the value survives `str.format`.
fn scrub(v: &Value) -> Value {
    let esc = |s: &str| s.replace('{', "{{").replace('}', "}}");
    match v {
        Value::String(s) => Value::String(esc(s)),
        Value::Array(items) if is_chat(v) => Value::Array(
            items
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if let Some(Value::String(c)) = m.get_mut("content") {
                        *c = esc(c);
                    }
                    m
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Format a string or chat prompt with `format_necessary` (chat: each message's content).
fn format_prompt(prompt: &Value, kwargs: &HashMap<String, String>) -> std::result::Result<Value, String> {
    match prompt {
        Value::String(s) => format_necessary(s, kwargs).map(Value::String),
        Value::Array(items) if is_chat(prompt) => items
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if let Some(Value::String(c)) = m.get_mut("content") {
                    *c = format_necessary(c, kwargs)?;
                }
                Ok(m)
            })
            .collect::<std::result::Result<Vec<_>, String>>()
            .map(Value::Array),
        other => Err(format!("prompt must be a string or chat list, got {other}")),
    }
}

/// Render a format argument as `str.format` would (chat prompts as text first).
fn format_arg(v: &Value) -> String {
    match v {
        Value::Array(items) if is_chat(v) && !items.is_empty() => chat_to_text(items, false),
        other => text::py_str(other),
    }
}

/// The sampling arguments `PromptFn` sends.
fn prompt_fn_params(overrides: &Map<String, Value>) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("max_tokens".into(), json!(1024));
    p.insert("temperature".into(), json!(0));
    for (k, v) in overrides {
        p.insert(k.clone(), v.clone());
    }
    p.insert("top_p".into(), json!(1));
    p.insert("frequency_penalty".into(), json!(0));
    p.insert("presence_penalty".into(), json!(0));
    p.insert("n".into(), json!(1));
    p
}

pub struct ModelBasedClassify {
    samples: std::path::PathBuf,
    mg: ModelGradedSpec,
    spec_args: HashMap<String, String>,
    sample_kwargs: Map<String, Value>,
    eval_kwargs: Map<String, Value>,
    multicomp_n: usize,
    eval_type: Option<String>,
    parse_type: String,
    match_fn: MatchFn,
    metaeval: bool,
    choices: Vec<String>,
    grader: usize,
    n_policies: usize,
}

impl ModelBasedClassify {
    pub fn new(ctx: &BuildCtx) -> Result<Self> {
        let spec_name = ctx
            .str_arg("modelgraded_spec")?
            .ok_or_else(|| ctx.bad("`args.modelgraded_spec` is required"))?;
        let mg = ctx.registry.get_modelgraded_spec(&spec_name)?;
        let n_fns = ctx.n_fns.max(1);
        // The last completion fn grades; with several, the others are the policies.
        let n_policies = if n_fns > 1 { n_fns - 1 } else { 1 };
        let multicomp_n = match ctx.arg("multicomp_n") {
            None => 1,
            Some(Value::String(s)) if s == "from_models" => {
                if n_policies < 2 {
                    return Err(ctx.bad("multicomp_n: from_models needs several completion fns (policies, then the grader)"));
                }
                n_policies
            }
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| ctx.bad(format!("`multicomp_n` must be an integer or from_models, got {v}")))?,
        };
        if n_policies > 1 && multicomp_n != n_policies {
            return Err(ctx.bad(format!(
                "multicomp_n ({multicomp_n}) must equal the number of policy models ({n_policies})"
            )));
        }
        let spec_args = ctx
            .arg("modelgraded_spec_args")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), format_arg(v))).collect())
            .unwrap_or_default();
        let obj_arg = |k: &str| ctx.arg(k).and_then(Value::as_object).cloned().unwrap_or_default();
        let eval_type = ctx.str_arg("eval_type")?;
        let parse_type = mg
            .eval_type
            .clone()
            .or_else(|| eval_type.clone())
            .ok_or_else(|| ctx.bad(format!("neither the eval nor modelgraded spec `{}` sets `eval_type`", mg.key)))?;
        if let Some(t) = &eval_type {
            if answer_prompt(t).is_none() {
                return Err(ctx.bad(format!("unknown eval_type `{t}`")));
            }
        }
        let match_fn = match ctx.str_arg("match_fn")? {
            None => MatchFn::StartsOrEndsWith,
            Some(name) => MatchFn::parse(&name).ok_or_else(|| ctx.bad(format!("unknown match_fn `{name}`")))?,
        };
        let choices =
            choice_strings(&mg.choice_strings, multicomp_n).map_err(|m| ctx.bad(format!("modelgraded spec `{}`: {m}", mg.key)))?;
        if multicomp_n > 1 && mg.output_template.is_none() {
            return Err(ctx.bad(format!("modelgraded spec `{}` needs `output_template` for multicomp_n > 1", mg.key)));
        }
        Ok(ModelBasedClassify {
            samples: ctx.samples_path()?,
            mg,
            spec_args,
            sample_kwargs: obj_arg("sample_kwargs"),
            eval_kwargs: obj_arg("eval_kwargs"),
            multicomp_n,
            eval_type,
            parse_type,
            match_fn,
            metaeval: ctx.bool_arg("metaeval", false)?,
            choices,
            grader: n_fns - 1,
            n_policies,
        })
    }

    /// The grader prompt before sample formatting: string prompts become one user message,
    /// and the eval's `eval_type` appends its answer instructions to the last message.
    fn grader_template(&self) -> std::result::Result<Value, String> {
        let mut prompt = match &self.mg.prompt {
            Value::String(s) => json!([{"role": "user", "content": s}]),
            other => other.clone(),
        };
        if let Some(t) = &self.eval_type {
            let choices = self.choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(" or ");
            let kw: HashMap<String, String> = [("choices".to_string(), choices)].into();
            let instructions = format_necessary(answer_prompt(t).unwrap_or_default(), &kw)?;
            let last = prompt
                .as_array_mut()
                .and_then(|a| a.last_mut())
                .and_then(|m| m.get_mut("content"))
                .and_then(|c| match c {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .ok_or("grader prompt has no final message content")?;
            last.push_str("\n\n");
            last.push_str(&instructions);
        }
        Ok(prompt)
    }
}

impl Template for ModelBasedClassify {
    fn samples(&self) -> Result<Vec<Value>> {
        crate::data::read_jsonl(&self.samples)
    }

    fn eval_sample(&self, sample: &Value, ctx: &mut SampleCtx) -> Result<()> {
        let mut sample = sample.as_object().cloned().ok_or_else(|| ctx.error("sample must be a dict"))?;
        for (k, _) in &self.mg.input_outputs {
            let v = sample
                .get(k)
                .ok_or_else(|| ctx.error(format!("sample has no `{k}` (needed by modelgraded spec `{}`)", self.mg.key)))?;
            let scrubbed = scrub(v);
            sample.insert(k.clone(), scrubbed);
        }
        let no_kwargs = HashMap::new();
        let mut completions: Vec<(String, String)> = Vec::new();
        let policy_params = prompt_fn_params(&self.sample_kwargs);
        for (input_key, output_key) in &self.mg.input_outputs {
            if sample.contains_key(output_key) {
                continue; // pre-computed completion in the data
            }
            // Formatting with no arguments undoes the brace escaping for the policy.
            let policy_prompt = format_prompt(&sample[input_key], &no_kwargs).map_err(|m| ctx.error(m))?;
            let completion = if self.multicomp_n > 1 {
                let template = self.mg.output_template.as_deref().unwrap_or_default();
                let mut joined = String::new();
                for i in 0..self.multicomp_n {
                    let fn_index = if self.n_policies > 1 { i } else { 0 };
                    let out = ctx.complete(fn_index, &policy_prompt, &policy_params)?;
                    let kw: HashMap<String, String> = [
                        ("i".to_string(), (i + 1).to_string()),
                        ("i_abc".to_string(), ((b'a' + (i % 26) as u8) as char).to_string()),
                        ("i_ABC".to_string(), ((b'A' + (i % 26) as u8) as char).to_string()),
                        ("output".to_string(), out),
                        ("n".to_string(), self.multicomp_n.to_string()),
                    ]
                    .into();
                    joined.push_str(&format_necessary(template, &kw).map_err(|m| ctx.error(m))?);
                }
                py_strip(&joined).to_string()
            } else {
                ctx.complete(0, &policy_prompt, &policy_params)?
            };
            completions.push((output_key.clone(), completion));
        }
        let mut kwargs: HashMap<String, String> = HashMap::new();
        for (k, v) in &completions {
            kwargs.insert(k.clone(), v.clone());
        }
        for (k, v) in &sample {
            kwargs.insert(k.clone(), format_arg(v));
        }
        for (k, v) in &self.spec_args {
            kwargs.insert(k.clone(), v.clone());
        }
        kwargs.insert("n".into(), self.multicomp_n.to_string());
        let template = self.grader_template().map_err(|m| ctx.error(m))?;
        let grader_prompt = format_prompt(&template, &kwargs).map_err(|m| ctx.error(format!("grader prompt `{}`: {m}", self.mg.key)))?;
        let evaluation = ctx.complete(self.grader, &grader_prompt, &prompt_fn_params(&self.eval_kwargs))?;
        let choice = get_choice(&evaluation, &self.parse_type, self.match_fn, &self.choices);
        let score = choice_score(&choice, &self.choices, self.mg.choice_scores.as_ref()).map_err(|m| ctx.error(m))?;
        let mut data = Map::new();
        data.insert("choice".into(), Value::String(choice.clone()));
        data.insert("score".into(), score.map_or(Value::Null, |s| json!(s)));
        if self.metaeval {
            let label = sample
                .get("choice")
                .ok_or_else(|| ctx.error("metaeval needs a `choice` label in the sample"))?;
            data.insert("metascore".into(), Value::Bool(label.as_str() == Some(choice.as_str())));
        }
        ctx.record("metrics", Value::Object(data));
        Ok(())
    }

    fn report(&self, ctx: &ReportCtx) -> Report {
        let mut r = Report::default();
        let metrics: Vec<&Value> = ctx.of_type("metrics").collect();
        if metrics.is_empty() {
            return r;
        }
        let mut counts: Vec<(String, u64)> = Vec::new();
        for m in &metrics {
            let c = m.get("choice").map(text::py_str).unwrap_or_default();
            match counts.iter_mut().find(|(k, _)| *k == c) {
                Some((_, n)) => *n += 1,
                None => counts.push((c, 1)),
            }
        }
        for (c, n) in counts {
            r.push(&format!("counts/{c}"), n);
        }
        let scores: Vec<f64> = metrics.iter().filter_map(|m| m.get("score").and_then(Value::as_f64)).collect();
        if !scores.is_empty() {
            r.push_f64("score", crate::metrics::mean(&scores));
            if let Some(ci) = crate::metrics::bootstrap_ci95(&scores, ctx.seed) {
                r.push("bootstrap_ci95", json!(ci));
            }
        }
        let meta: Vec<f64> = metrics
            .iter()
            .filter_map(|m| m.get("metascore").and_then(Value::as_bool))
            .map(|b| f64::from(u8::from(b)))
            .collect();
        if !meta.is_empty() {
            r.push_f64("metascore", crate::metrics::mean(&meta));
        }
        r
    }
}
