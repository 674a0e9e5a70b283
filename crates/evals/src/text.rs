//! Python string semantics that openai/evals' scoring depends on: `string.punctuation`,
//! `str.split()`, `str.strip()`, the SQuAD `normalize`, token F1, `str.format` and `str()`.

use std::collections::HashMap;

use serde_json::Value;

/// `string.punctuation` (ASCII only: typographic and CJK punctuation is kept).
pub fn is_py_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// `str.isspace()`: Rust's `White_Space` plus the ASCII separators 0x1c..=0x1f.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.split()` with no separator.
pub fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|t| !t.is_empty()).collect()
}

/// `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Replace the whole words `a`, `an`, `the` by a space, as `re.sub(r"\b(a|an|the)\b", " ", s)`
/// does on a Python `str` (Unicode-aware word boundaries).
fn remove_articles(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let at_boundary = i == 0 || !is_word_char(chars[i - 1]);
        if at_boundary {
            let matched = ["a", "an", "the"].iter().find_map(|w| {
                let len = w.chars().count();
                let word_here = chars.len() >= i + len
                    && chars[i..i + len].iter().copied().eq(w.chars())
                    && chars.get(i + len).is_none_or(|c| !is_word_char(*c));
                word_here.then_some(len)
            });
            if let Some(len) = matched {
                out.push(' ');
                i += len;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// openai/evals' `normalize`: lower-case, drop ASCII punctuation, drop articles, collapse spaces.
pub fn normalize(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punct: String = lowered.chars().filter(|c| !is_py_punctuation(*c)).collect();
    py_split(&remove_articles(&no_punct)).join(" ")
}

/// openai/evals' `fuzzy_match`: two-way containment after normalisation.
pub fn fuzzy_match(a: &str, b: &str) -> bool {
    let (a, b) = (normalize(a), normalize(b));
    if a.is_empty() || b.is_empty() {
        return a == b;
    }
    a.contains(&b) || b.contains(&a)
}

/// SQuAD token F1 between a prediction and one reference.
fn f1_one(prediction: &str, truth: &str) -> f64 {
    let pred_norm = normalize(prediction);
    let truth_norm = normalize(truth);
    let pred = py_split(&pred_norm);
    let gold = py_split(&truth_norm);
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &gold {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &pred {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// openai/evals' `f1_score`: the best F1 over all references (0 with no references).
pub fn f1_score(prediction: &str, answers: &[String]) -> f64 {
    answers.iter().map(|a| f1_one(prediction, a)).fold(0.0, f64::max)
}

/// `text.rfind(ref) != -1` (optionally both lower-cased), i.e. openai/evals' `get_answer`.
pub fn includes(text: &str, reference: &str, ignore_case: bool) -> bool {
    if ignore_case {
        text.to_lowercase().contains(&reference.to_lowercase())
    } else {
        text.contains(reference)
    }
}

/// Python `repr()` of a string, as `str(list)` and `str(dict)` print their items.
fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => py_repr_str(s),
        other => py_str(other),
    }
}

fn py_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Python `str()` of a decoded JSON value, as `str.format` renders a non-string argument.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => py_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

enum Piece<'a> {
    Literal(String),
    Field(&'a str),
}

/// Split a Python format string into literals and replacement-field names.
fn parse_format(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < template.len() {
        let c = bytes[i];
        if c == b'{' {
            if bytes.get(i + 1) == Some(&b'{') {
                literal.push('{');
                i += 2;
                continue;
            }
            let close = template[i..]
                .find('}')
                .ok_or_else(|| format!("single '{{' encountered in format string at byte {i}"))?;
            let inner = &template[i + 1..i + close];
            // Conversions and format specs (`!r`, `:>10`) never occur in registry prompts;
            // the name is what `string.Formatter().parse` reports as the field.
            let name_end = inner.find(['!', ':']).unwrap_or(inner.len());
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            pieces.push(Piece::Field(&inner[..name_end]));
            i += close + 1;
        } else if c == b'}' {
            if bytes.get(i + 1) == Some(&b'}') {
                literal.push('}');
                i += 2;
                continue;
            }
            return Err(format!("single '}}' encountered in format string at byte {i}"));
        } else {
            let ch_len = template[i..].chars().next().map_or(1, char::len_utf8);
            literal.push_str(&template[i..i + ch_len]);
            i += ch_len;
        }
    }
    pieces.push(Piece::Literal(literal));
    Ok(pieces)
}

/// openai/evals' `format_necessary`: Python `str.format` with only the fields the template
/// names; every named field must be supplied (the upstream assertion).
pub fn format_necessary(template: &str, kwargs: &HashMap<String, String>) -> Result<String, String> {
    let pieces = parse_format(template)?;
    let mut out = String::with_capacity(template.len());
    let mut missing = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Literal(s) => out.push_str(s),
            Piece::Field(name) => match kwargs.get(*name) {
                Some(v) => out.push_str(v),
                None => missing.push(name.to_string()),
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        let mut got: Vec<&String> = kwargs.keys().collect();
        got.sort();
        Err(format!("template needs {missing:?}, got {got:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_like_squad() {
        assert_eq!(normalize("The  Cat, a dog!"), "cat dog");
        assert_eq!(normalize("an apple-pie"), "applepie");
        assert_eq!(normalize("théâtre the"), "théâtre");
        assert_eq!(normalize("Aa a_the"), "aa athe");
        assert_eq!(normalize("x\u{1c}y"), "x y");
        // Typographic punctuation is not ASCII and survives, as in Python.
        assert_eq!(normalize("it’s"), "it’s");
    }

    #[test]
    fn python_str_of_values() {
        let v: Value = serde_json::json!(["a", 1, 2.0, null, true, {"k": "it's"}]);
        assert_eq!(py_str(&v), "['a', 1, 2.0, None, True, {'k': \"it's\"}]");
    }

    #[test]
    fn format_fields_and_escapes() {
        let kw: HashMap<String, String> = [("x".to_string(), "1".to_string())].into();
        assert_eq!(format_necessary("{{x}} = {x}", &kw).unwrap(), "{x} = 1");
        assert!(format_necessary("{y}", &kw).is_err());
        assert!(format_necessary("oops }", &kw).is_err());
    }
}
