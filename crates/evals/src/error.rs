use std::path::PathBuf;

/// Everything that can go wrong while loading a registry or running an eval.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML in {path}: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}:{line}: invalid JSON: {message}")]
    JsonLine { path: PathBuf, line: usize, message: String },
    #[error("{path} is a Git LFS pointer, not the data itself: run `git lfs pull` in the registry's repository")]
    LfsPointer { path: PathBuf },
    #[error("duplicate registry entry `{name}`: defined in {first} and again in {second}")]
    Duplicate { name: String, first: PathBuf, second: PathBuf },
    #[error("`{keyword}` is a reserved keyword, but entry `{name}` in {path} uses it")]
    Reserved { keyword: String, name: String, path: PathBuf },
    #[error("{kind} `{name}` not found in the registry{}", suggestions(.close))]
    NotFound {
        kind: &'static str,
        name: String,
        close: Vec<String>,
    },
    #[error("{kind} `{name}`: {message}")]
    BadEntry { kind: &'static str, name: String, message: String },
    #[error("custom Python eval class {0} is not supported (supported: Match, Includes, FuzzyMatch, JsonMatch, ModelBasedClassify, TestMatch and the ferrogpt templates)")]
    UnsupportedClass(String),
    #[error("completion function class {0} is not supported (supported: OpenAI chat and completions classes)")]
    UnsupportedCompletionFn(String),
    #[error("sample {sample_id}: {message}")]
    Sample { sample_id: String, message: String },
    #[error("template error: {0}")]
    Template(String),
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("completion function `{name}` cannot {what}")]
    Unsupported { name: String, what: &'static str },
    #[error("log {path}: {message}")]
    Log { path: PathBuf, message: String },
    #[error("data file `{path}` resolves to {resolved}, outside the registry's data folder {data_dir} (allow it with --allow-data-outside-registry if you trust the registry)")]
    DataOutsideRegistry {
        path: String,
        resolved: PathBuf,
        data_dir: PathBuf,
    },
    #[error("{path}: decompresses to more than {limit} bytes; larger than any eval's data should be")]
    DataTooLarge { path: PathBuf, limit: u64 },
    #[error("eval {key}: {source}")]
    InSet {
        key: String,
        #[source]
        source: Box<EvalError>,
    },
    #[error("{path}:{line}: {message}")]
    BadSampleLine { path: PathBuf, line: usize, message: String },
    #[error("{path}: examples[{index}]: {message}")]
    BadExample { path: PathBuf, index: usize, message: String },
    #[error("{what} is not installed ({path} not found); install it with: {install}")]
    DataNotInstalled { what: String, path: PathBuf, install: String },
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("invalid {name}: {message}")]
    Setting { name: &'static str, message: String },
    #[error("{0}")]
    Other(String),
}

fn suggestions(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (closest matches: {})", close.join(", "))
    }
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;
