//! Model folders: the one reader and writer of `config.json` (a Hugging Face
//! `LlamaConfig`), `model.safetensors` (Llama tensor names) and
//! `tokenizer.json`, with `checksums.json` (SHA-256 of every other file).
//! Folders are written with `tokenizer_config.json` (special tokens, the chat
//! template) and, for language models, `generation_config.json`, so that
//! `transformers` loads them as they are; [`export_hf`] rewrites any folder so.
//!
//! [`write`] publishes a folder atomically: it is filled under a temporary
//! sibling name, its checksums written, every file flushed, then renamed into
//! place, so a process killed mid-write leaves either the whole folder or none
//! of it. [`read`] verifies the checksums when the folder has them (folders
//! written by other tools may not) and names the file at fault. Training
//! checkpoints are model folders plus the optimizer and training state: the
//! trainer writes them through [`write_model_files`] inside [`publish`].

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use ferrogpt_engine::params::ParamLayout;
use ferrogpt_engine::{EngineError, ModelConfig};
use ferrogpt_tokenizer::{Special, Tokenizer, TokenizerError};
use sha2::{Digest, Sha256};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const CHECKSUMS_FILE: &str = "checksums.json";
/// Hugging Face's tokenizer settings: special tokens and the chat template.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Hugging Face's generation defaults: which tokens start, end and pad a sequence.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// What can be wrong with a model folder; every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelFolderError {
    #[error("{dir} is not a model folder (expected {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE})")]
    NotAFolder { dir: PathBuf },
    #[error("{path} is missing")]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: SHA-256 mismatch (file truncated or corrupted): expected {expected}, found {found}")]
    Checksum { path: PathBuf, expected: String, found: String },
    #[error("{path}: entry `{entry}` is not a file name in the folder")]
    ChecksumEntry { path: PathBuf, entry: String },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: EngineError,
    },
    #[error("{path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path} has {tokens} tokens, the model only {model}")]
    VocabMismatch { path: PathBuf, tokens: usize, model: usize },
    #[error("{path}: config.json describes {params:.3e} parameters, more than the {bytes} bytes of the weights file can hold")]
    ShapeExceedsWeights { path: PathBuf, params: f64, bytes: u64 },
    #[error("{dir} exists and is not a model folder; refusing to replace it")]
    WouldReplace { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelFolderError + '_ {
    move |source| ModelFolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The contents of a model folder.
pub struct ModelFiles {
    pub config: ModelConfig,
    /// Flat parameters in the engine's [`ParamLayout`] for `config`.
    pub params: Vec<f32>,
    pub tokenizer: Tokenizer,
}

/// Reads a model folder, after verifying `checksums.json` when the folder has one.
pub fn read(dir: &Path) -> Result<ModelFiles, ModelFolderError> {
    if !dir.is_dir() {
        return Err(ModelFolderError::NotAFolder { dir: dir.to_path_buf() });
    }
    if dir.join(CHECKSUMS_FILE).exists() {
        verify_checksums(dir)?;
    }
    for file in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(ModelFolderError::Missing { path });
        }
    }
    let config = read_config(dir)?;
    let tokenizer = Tokenizer::from_file(&dir.join(TOKENIZER_FILE))?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(ModelFolderError::VocabMismatch {
            path: dir.join(TOKENIZER_FILE),
            tokens: tokenizer.vocab_size(),
            model: config.vocab_size,
        });
    }
    let weights = dir.join(WEIGHTS_FILE);
    check_shape_fits_weights(&config, &weights)?;
    let params = ferrogpt_engine::io::load_model(&weights, &ParamLayout::new(&config))
        .map_err(|source| ModelFolderError::Weights { path: weights, source })?;
    Ok(ModelFiles { config, params, tokenizer })
}

/// The parameter layout and buffer are sized from `config.json`, which may claim any shape:
/// a few bytes of JSON (found by fuzz/, model_folder) asked for billions of layers. The
/// weights file must be able to hold that many parameters (at least 2 bytes each, as f16 or
/// bf16) before anything is allocated. Counted in f64 so that no claimed size overflows.
fn check_shape_fits_weights(config: &ModelConfig, weights: &Path) -> Result<(), ModelFolderError> {
    let bytes = std::fs::metadata(weights).map_err(io_err(weights))?.len();
    let [vocab, d, layers, ffn, heads, kv_heads, head_dim] = [
        config.vocab_size,
        config.d_model,
        config.n_layers,
        config.ffn_hidden,
        config.n_heads,
        config.n_kv_heads,
        config.head_dim(),
    ]
    .map(|x| x as f64);
    let qkv = (heads + 2.0 * kv_heads) * head_dim;
    let embeddings = vocab * d * if config.tie_embeddings { 1.0 } else { 2.0 };
    let per_layer = d * qkv + d * d + 3.0 * d * ffn + 2.0 * d;
    let params = embeddings + layers * per_layer + d;
    if params * 2.0 > bytes as f64 {
        return Err(ModelFolderError::ShapeExceedsWeights {
            path: weights.to_path_buf(),
            params,
            bytes,
        });
    }
    Ok(())
}

/// The model shape from a folder's `config.json`.
pub fn read_config(dir: &Path) -> Result<ModelConfig, ModelFolderError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelFolderError::Json {
        path: path.clone(),
        source,
    })?;
    ModelConfig::from_hf_json(&json).map_err(|source| ModelFolderError::Config { path, source })
}

/// Writes a model folder atomically (see the module docs), replacing an older model folder
/// of the same name.
pub fn write(dir: &Path, config: &ModelConfig, params: &[f32], tokenizer_json: &[u8]) -> Result<(), ModelFolderError> {
    publish(dir, |tmp| write_model_files(tmp, config, params, tokenizer_json))
}

/// Writes `config.json`, `model.safetensors` and `tokenizer.json` into `dir`, which must
/// exist: the model part of a folder being filled by [`publish`].
pub fn write_model_files(dir: &Path, config: &ModelConfig, params: &[f32], tokenizer_json: &[u8]) -> Result<(), ModelFolderError> {
    let weights = dir.join(WEIGHTS_FILE);
    ferrogpt_engine::io::save_model(&weights, &ParamLayout::new(config), params, None)
        .map_err(|source| ModelFolderError::Weights { path: weights, source })?;
    write_json(&dir.join(CONFIG_FILE), &config.to_hf_json(Special::Bos.id(), Special::End.id()))?;
    let tokenizer = dir.join(TOKENIZER_FILE);
    std::fs::write(&tokenizer, tokenizer_json).map_err(io_err(&tokenizer))?;
    write_json(&dir.join(TOKENIZER_CONFIG_FILE), &tokenizer_config(config))?;
    if config.num_labels.is_none() {
        let generation = serde_json::json!({
            "bos_token_id": Special::Bos.id(),
            "eos_token_id": Special::End.id(),
            "pad_token_id": Special::Pad.id(),
        });
        write_json(&dir.join(GENERATION_CONFIG_FILE), &generation)?;
    }
    Ok(())
}

/// `tokenizer_config.json` for `transformers`' fast tokenizer: our special tokens by name and
/// [`crate::chat::CHAT_TEMPLATE_JINJA`]. No BOS is added by tokenizing: the template writes it.
fn tokenizer_config(config: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": Special::Bos.as_str(),
        "eos_token": Special::End.as_str(),
        "pad_token": Special::Pad.as_str(),
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.max_seq_len,
        "chat_template": crate::chat::CHAT_TEMPLATE_JINJA,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ModelFolderError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ModelFolderError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(io_err(path))
}

/// Writes the model folder `src` (verified as [`read`] does) as `out`, a folder `transformers`
/// loads with `AutoModelForCausalLM` (`AutoModelForSequenceClassification` for a classifier)
/// and `AutoTokenizer`, whose `apply_chat_template` gives [`crate::render_chat`]'s tokens.
/// Folders of other tools under `src` (a chat model's `moderation/`) are not carried.
pub fn export_hf(src: &Path, out: &Path) -> Result<(), ModelFolderError> {
    let files = read(src)?;
    write(out, &files.config, &files.params, files.tokenizer.to_json().as_bytes())
}

/// Builds `dest` through a sibling temporary folder that `fill` writes into, adds
/// `checksums.json` over every file `fill` wrote, flushes everything to disk and renames the
/// folder into place, replacing an older folder of the same name. A `dest` that exists but
/// holds neither `config.json` nor `checksums.json` is refused rather than deleted.
pub fn publish<E: From<ModelFolderError>>(dest: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    if dest.exists() && !is_replaceable(dest)? {
        return Err(ModelFolderError::WouldReplace { dir: dest.to_path_buf() }.into());
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("folder");
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    fill(&tmp)?;
    write_checksums(&tmp)?;
    sync_dir(&tmp)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(io_err(dest))?;
    }
    std::fs::rename(&tmp, dest).map_err(io_err(dest))?;
    Ok(())
}

/// Whether `dir` may be replaced by [`publish`]: empty, or a folder it wrote before.
fn is_replaceable(dir: &Path) -> Result<bool, ModelFolderError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let empty = std::fs::read_dir(dir).map_err(io_err(dir))?.next().is_none();
    Ok(empty || dir.join(CONFIG_FILE).exists() || dir.join(CHECKSUMS_FILE).exists())
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelFolderError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(ferrogpt_tokenizer::hex(&h.finalize()))
}

/// Writes `checksums.json` over every regular file of `dir`.
fn write_checksums(dir: &Path) -> Result<(), ModelFolderError> {
    let mut sums = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != CHECKSUMS_FILE && entry.file_type().map_err(io_err(&entry.path()))?.is_file() {
            sums.insert(name, sha256_file(&entry.path())?);
        }
    }
    let path = dir.join(CHECKSUMS_FILE);
    let text = serde_json::to_string_pretty(&sums).map_err(|source| ModelFolderError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(io_err(&path))
}

/// Checks every file listed in `checksums.json` (which must exist) against its SHA-256.
pub fn verify_checksums(dir: &Path) -> Result<(), ModelFolderError> {
    let path = dir.join(CHECKSUMS_FILE);
    if !path.is_file() {
        return Err(ModelFolderError::Missing { path });
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let sums: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|source| ModelFolderError::Json {
        path: path.clone(),
        source,
    })?;
    for (file, expected) in sums {
        // Anything but a plain file name (`..`, a separator, an absolute path) would make the
        // check read outside the folder.
        if !matches!(Path::new(&file).components().collect::<Vec<_>>()[..], [Component::Normal(_)]) {
            return Err(ModelFolderError::ChecksumEntry { path, entry: file });
        }
        let p = dir.join(&file);
        if !p.is_file() {
            return Err(ModelFolderError::Missing { path: p });
        }
        let found = sha256_file(&p)?;
        if found != expected {
            return Err(ModelFolderError::Checksum { path: p, expected, found });
        }
    }
    Ok(())
}

/// Flushes every file of a folder to disk, then the folder, so the rename that
/// publishes it never exposes a folder whose contents are still in flight.
fn sync_dir(dir: &Path) -> Result<(), ModelFolderError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io_err(&path))?;
    }
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let texts = (0..100).map(|i| format!("the cat {i} sat on the mat, {} times", i * 3));
        Tokenizer::train(texts, 300).unwrap()
    }

    fn config(vocab: usize) -> ModelConfig {
        ModelConfig {
            vocab_size: vocab,
            d_model: 16,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            ffn_hidden: 32,
            max_seq_len: 16,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
            num_labels: None,
        }
    }

    fn written() -> (tempfile::TempDir, PathBuf, ModelConfig, Vec<f32>) {
        let tok = tokenizer();
        let cfg = config(tok.vocab_size());
        let params: Vec<f32> = (0..ParamLayout::new(&cfg).total).map(|i| (i as f32 * 0.37).sin()).collect();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        write(&dir, &cfg, &params, tok.to_json().as_bytes()).unwrap();
        (tmp, dir, cfg, params)
    }

    #[test]
    fn round_trip() {
        let (tmp, dir, cfg, params) = written();
        let back = read(&dir).unwrap();
        assert_eq!(back.config, cfg);
        assert_eq!(back.params, params);
        assert_eq!(back.tokenizer.to_json(), tokenizer().to_json());
        let sums: BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(dir.join(CHECKSUMS_FILE)).unwrap()).unwrap();
        assert_eq!(
            sums.keys().collect::<Vec<_>>(),
            [
                CONFIG_FILE,
                GENERATION_CONFIG_FILE,
                WEIGHTS_FILE,
                TOKENIZER_FILE,
                TOKENIZER_CONFIG_FILE
            ]
        );
        // No temporary folder is left behind, and rewriting replaces the folder.
        write(&dir, &cfg, &params, tokenizer().to_json().as_bytes()).unwrap();
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["model"]);
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let (_tmp, dir, _, _) = written();
        for file in [WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE] {
            let path = dir.join(file);
            let good = std::fs::read(&path).unwrap();
            let mut bad = good.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let e = read(&dir).err().unwrap().to_string();
            assert!(e.contains(file) && e.contains("mismatch"), "{e}");
            std::fs::write(&path, &good).unwrap();
        }
        read(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        for file in [WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE] {
            let (_tmp, dir, _, _) = written();
            std::fs::remove_file(dir.join(file)).unwrap();
            let e = read(&dir).err().unwrap().to_string();
            assert!(e.contains(file) && e.contains("missing"), "{e}");
            // Without checksums (a folder from another tool) the file is still named.
            std::fs::remove_file(dir.join(CHECKSUMS_FILE)).unwrap();
            let e = read(&dir).err().unwrap().to_string();
            assert!(e.contains(file) && e.contains("missing"), "{e}");
        }
        let e = read(Path::new("/nonexistent/model")).err().unwrap().to_string();
        assert!(e.contains("/nonexistent/model") && e.contains("not a model folder"), "{e}");
    }

    #[test]
    fn a_config_larger_than_its_weights_is_refused_before_allocating() {
        let (_tmp, dir, _, _) = written();
        std::fs::remove_file(dir.join(CHECKSUMS_FILE)).unwrap();
        let path = dir.join(CONFIG_FILE);
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["num_hidden_layers"] = 14_294_967_295u64.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let e = read(&dir).err().unwrap().to_string();
        assert!(e.contains("more than the") && e.contains("weights file"), "{e}");
    }

    #[test]
    fn broken_contents_without_checksums_name_the_file() {
        let (_tmp, dir, _, _) = written();
        std::fs::remove_file(dir.join(CHECKSUMS_FILE)).unwrap();
        std::fs::write(dir.join(WEIGHTS_FILE), b"nope").unwrap();
        let e = read(&dir).err().unwrap().to_string();
        assert!(e.contains(WEIGHTS_FILE), "{e}");
        std::fs::write(dir.join(CONFIG_FILE), b"{").unwrap();
        let e = read(&dir).err().unwrap().to_string();
        assert!(e.contains(CONFIG_FILE) && e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn checksums_cannot_point_outside_the_folder() {
        let (tmp, dir, _, _) = written();
        std::fs::write(tmp.path().join("secret"), b"x").unwrap();
        std::fs::write(dir.join(CHECKSUMS_FILE), r#"{"../secret": "00"}"#).unwrap();
        let e = read(&dir).err().unwrap().to_string();
        assert!(e.contains("../secret") && e.contains(CHECKSUMS_FILE), "{e}");
    }

    #[test]
    fn a_folder_that_is_not_a_model_is_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), b"keep me").unwrap();
        let tok = tokenizer();
        let cfg = config(tok.vocab_size());
        let params = vec![0.0; ParamLayout::new(&cfg).total];
        let e = write(tmp.path(), &cfg, &params, tok.to_json().as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("refusing"), "{e}");
        assert_eq!(std::fs::read(tmp.path().join("notes.txt")).unwrap(), b"keep me");
    }
}
