//! Registry loading with openai/evals' rules: several roots, each with `evals/`,
//! `eval_sets/`, `completion_fns/`, `solvers/` and `modelgraded/` holding top-level
//! `*.yaml` files (or a single YAML file of that name); one namespace per resource kind
//! across all roots; `id` aliases followed; eval-set patterns with `*`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{EvalError, Result};

const RESERVED: [&str; 3] = ["key", "group", "cls"];

/// One top-level YAML entry and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    pub file: PathBuf,
    pub root: PathBuf,
}

/// All entries of one resource kind, in load order.
#[derive(Debug, Default)]
struct Table {
    order: Vec<String>,
    entries: HashMap<String, Entry>,
}

/// A concrete eval: the spec entry reached after following aliases.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// The resolved name, e.g. `test-match.s1.simple-v0`.
    pub key: String,
    /// The Python class path (`evals.elsuite.basic.match:Match`) or a ferrogpt template.
    pub cls: String,
    pub args: Map<String, Value>,
    /// The registry root the spec was defined in (data paths resolve under it).
    pub registry_path: PathBuf,
    /// The YAML file stem.
    pub group: String,
    /// `metrics` of the base entry, when the eval was named by its base.
    pub metrics: Vec<String>,
}

impl EvalSpec {
    /// `<base_eval>` and `<split>`: the first two dot-separated parts of the key.
    pub fn base_and_split(&self) -> Result<(String, String)> {
        let mut parts = self.key.split('.');
        match (parts.next(), parts.next()) {
            (Some(base), Some(split)) => Ok((base.to_string(), split.to_string())),
            _ => Err(EvalError::BadEntry {
                kind: "eval",
                name: self.key.clone(),
                message: "eval name must at least have <base_eval>.<split>".into(),
            }),
        }
    }
}

/// A model-graded spec (`modelgraded/*.yaml`).
#[derive(Debug, Clone)]
pub struct ModelGradedSpec {
    pub key: String,
    pub prompt: Value,
    pub choice_strings: Value,
    pub input_outputs: Vec<(String, String)>,
    pub eval_type: Option<String>,
    pub choice_scores: Option<Value>,
    pub output_template: Option<String>,
}

/// A completion function entry (`completion_fns/*.yaml` or `solvers/*.yaml`).
#[derive(Debug, Clone)]
pub struct CompletionFnSpec {
    pub key: String,
    pub cls: String,
    pub args: Map<String, Value>,
}

/// The loaded registry.
#[derive(Debug, Default)]
pub struct Registry {
    roots: Vec<PathBuf>,
    evals: Table,
    eval_sets: Table,
    completion_fns: Table,
    solvers: Table,
    modelgraded: Table,
}

/// A YAML document read into JSON the way PyYAML's `safe_load` reads it for the registry:
/// duplicate mapping keys are allowed (the last wins, as upstream's files rely on) and
/// non-string keys are stringified.
struct LenientYaml(Value);

impl<'de> serde::Deserialize<'de> for LenientYaml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(LenientYaml)
    }
}

struct LenientVisitor;

impl<'de> serde::de::Visitor<'de> for LenientVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(LenientVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(LenientYaml(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((LenientYaml(k), LenientYaml(v))) = map.next_entry()? {
            let key = match k {
                Value::String(s) => s,
                Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
                other => other.to_string(),
            };
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> std::result::Result<Value, A::Error> {
        // A tagged value (`!tag value`): keep the value, drop the tag.
        use serde::de::VariantAccess;
        let (_tag, variant): (LenientYaml, _) = data.variant()?;
        variant.newtype_variant::<LenientYaml>().map(|v| v.0)
    }
}

/// Up to five names most similar to `name` (a cheap stand-in for difflib's suggestions).
fn close_matches<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> Vec<String> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    let mut scored: Vec<(usize, &String)> = candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= name.len().max(c.len()) / 2)
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, c)| c.clone()).collect()
}

impl Registry {
    /// Load every root, in order (later roots add to, never override, earlier ones).
    pub fn load(roots: &[PathBuf]) -> Result<Registry> {
        let mut reg = Registry {
            roots: roots.to_vec(),
            ..Default::default()
        };
        for root in roots {
            reg.evals.load_kind(root, "evals")?;
            reg.eval_sets.load_kind(root, "eval_sets")?;
            reg.completion_fns.load_kind(root, "completion_fns")?;
            reg.solvers.load_kind(root, "solvers")?;
            reg.modelgraded.load_kind(root, "modelgraded")?;
        }
        Ok(reg)
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// All eval names (base and spec entries) in load order.
    pub fn eval_names(&self) -> &[String] {
        &self.evals.order
    }

    pub fn eval_set_names(&self) -> &[String] {
        &self.eval_sets.order
    }

    /// Resolve an eval name (base, alias or spec key) to its concrete spec.
    pub fn get_eval(&self, name: &str) -> Result<EvalSpec> {
        let (key, entry) = self.evals.dereference(name, "eval")?;
        let metrics = self
            .evals
            .entries
            .get(name)
            .and_then(|e| e.value.get("metrics"))
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let obj = entry.value.as_object().ok_or_else(|| EvalError::BadEntry {
            kind: "eval",
            name: key.clone(),
            message: "entry is not a mapping".into(),
        })?;
        let cls = obj
            .get("class")
            .and_then(Value::as_str)
            .ok_or_else(|| EvalError::BadEntry {
                kind: "eval",
                name: key.clone(),
                message: format!("no `class` (defined in {})", entry.file.display()),
            })?
            .to_string();
        let args = match obj.get("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(EvalError::BadEntry {
                    kind: "eval",
                    name: key,
                    message: "`args` must be a mapping".into(),
                })
            }
        };
        let group = entry
            .file
            .file_name()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('.').next())
            .unwrap_or_default()
            .to_string();
        Ok(EvalSpec {
            key,
            cls,
            args,
            registry_path: entry.root.clone(),
            group,
            metrics,
        })
    }

    /// Expand an eval set into concrete eval specs, de-duplicated, in registry order.
    pub fn get_eval_set(&self, name: &str) -> Result<Vec<EvalSpec>> {
        let (key, entry) = self.eval_sets.dereference(name, "eval set")?;
        let patterns: Vec<String> = entry
            .value
            .get("evals")
            .and_then(Value::as_array)
            .ok_or_else(|| EvalError::BadEntry {
                kind: "eval set",
                name: key.clone(),
                message: "needs an `evals` list".into(),
            })?
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let mut seen = HashSet::new();
        let mut specs = Vec::new();
        for eval_name in &self.evals.order {
            if patterns.iter().any(|p| pattern_matches(p, eval_name)) {
                let spec = self.get_eval(eval_name)?;
                if seen.insert(spec.key.clone()) {
                    specs.push(spec);
                }
            }
        }
        Ok(specs)
    }

    /// A completion function from `completion_fns/` or `solvers/`, if there is one.
    pub fn get_completion_fn(&self, name: &str) -> Option<Result<CompletionFnSpec>> {
        let table = if self.completion_fns.entries.contains_key(name) {
            &self.completion_fns
        } else if self.solvers.entries.contains_key(name) {
            &self.solvers
        } else {
            return None;
        };
        Some(table.dereference(name, "completion fn").and_then(|(key, entry)| {
            let cls = entry
                .value
                .get("class")
                .and_then(Value::as_str)
                .ok_or_else(|| EvalError::BadEntry {
                    kind: "completion fn",
                    name: key.clone(),
                    message: "no `class`".into(),
                })?
                .to_string();
            let args = entry.value.get("args").and_then(Value::as_object).cloned().unwrap_or_default();
            Ok(CompletionFnSpec { key, cls, args })
        }))
    }

    pub fn get_modelgraded_spec(&self, name: &str) -> Result<ModelGradedSpec> {
        let (key, entry) = self.modelgraded.dereference(name, "modelgraded spec")?;
        let bad = |message: &str| EvalError::BadEntry {
            kind: "modelgraded spec",
            name: key.clone(),
            message: format!("{message} (in {})", entry.file.display()),
        };
        let v = &entry.value;
        let prompt = v.get("prompt").cloned().ok_or_else(|| bad("no `prompt`"))?;
        let choice_strings = v.get("choice_strings").cloned().ok_or_else(|| bad("no `choice_strings`"))?;
        let input_outputs = v
            .get("input_outputs")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no `input_outputs` mapping"))?
            .iter()
            .map(|(k, out)| {
                out.as_str()
                    .map(|o| (k.clone(), o.to_string()))
                    .ok_or_else(|| bad("`input_outputs` values must be strings"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelGradedSpec {
            key: key.clone(),
            prompt,
            choice_strings,
            input_outputs,
            eval_type: v.get("eval_type").and_then(Value::as_str).map(String::from),
            choice_scores: v.get("choice_scores").filter(|s| !s.is_null()).cloned(),
            output_template: v.get("output_template").and_then(Value::as_str).map(String::from),
        })
    }
}

/// `Registry.get_evals`' patterns: `.` literal, `*` any run of characters, anchored.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| rec(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && rec(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

impl Table {
    fn load_kind(&mut self, root: &Path, kind: &str) -> Result<()> {
        let path = root.join(kind);
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| EvalError::io(&path, e))? {
                let p = entry.map_err(|e| EvalError::io(&path, e))?.path();
                // Upstream globs `*.yaml` only: `.yml` files are ignored there too.
                if p.is_file() && p.extension().is_some_and(|e| e == "yaml") {
                    files.push(p);
                }
            }
            files.sort();
        } else if path.is_file() {
            files.push(path);
        }
        for file in files {
            self.load_file(root, &file)?;
        }
        Ok(())
    }

    fn load_file(&mut self, root: &Path, file: &Path) -> Result<()> {
        let text = std::fs::read_to_string(file).map_err(|e| EvalError::io(file, e))?;
        let doc: Option<LenientYaml> = serde_yaml::from_str(&text).map_err(|e| EvalError::Yaml {
            path: file.to_path_buf(),
            source: e,
        })?;
        let Some(LenientYaml(Value::Object(entries))) = doc else {
            return Ok(()); // an empty or non-mapping file holds no entries, as upstream
        };
        for (name, value) in entries {
            if let Some(prev) = self.entries.get(&name) {
                return Err(EvalError::Duplicate {
                    name,
                    first: prev.file.clone(),
                    second: file.to_path_buf(),
                });
            }
            if let Some(obj) = value.as_object() {
                if let Some(kw) = RESERVED.iter().find(|k| obj.contains_key(**k)) {
                    return Err(EvalError::Reserved {
                        keyword: kw.to_string(),
                        name,
                        path: file.to_path_buf(),
                    });
                }
            }
            self.order.push(name.clone());
            self.entries.insert(
                name,
                Entry {
                    value,
                    file: file.to_path_buf(),
                    root: root.to_path_buf(),
                },
            );
        }
        Ok(())
    }

    /// Follow `id` aliases (a string entry, or a mapping with `id`) to a concrete entry.
    fn dereference(&self, name: &str, kind: &'static str) -> Result<(String, &Entry)> {
        let mut current = name.to_string();
        let mut visited = HashSet::new();
        loop {
            let entry = self.entries.get(&current).ok_or_else(|| EvalError::NotFound {
                kind,
                name: current.clone(),
                close: close_matches(&current, self.order.iter()),
            })?;
            let alias = match &entry.value {
                Value::String(s) => Some(s.clone()),
                Value::Object(m) => m.get("id").and_then(Value::as_str).map(String::from),
                _ => None,
            };
            match alias {
                None => return Ok((current, entry)),
                Some(next) => {
                    if !visited.insert(current.clone()) {
                        return Err(EvalError::BadEntry {
                            kind,
                            name: name.to_string(),
                            message: format!("alias cycle through `{current}`"),
                        });
                    }
                    current = next;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_like_upstream() {
        assert!(pattern_matches("mmlu-*", "mmlu-anatomy"));
        assert!(pattern_matches("a.dev.*-v1", "a.dev.x-v1"));
        assert!(!pattern_matches("a.dev", "aXdev"));
        assert!(!pattern_matches("test", "test-match"));
    }
}
