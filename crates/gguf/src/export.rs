//! A model folder as a llama.cpp Llama model: what llama.cpp's own Hugging Face converter
//! writes for a `LlamaForCausalLM` with a GPT-2-style byte-level BPE tokenizer.
//!
//! Two things differ from the folder's layout. llama.cpp rotates adjacent pairs of a head's
//! q and k values, where Hugging Face's layout (ours) pairs element `i` with `i + hd/2`; so the
//! rows of `q_proj` and `k_proj` are reordered within each head, interleaving its two halves,
//! which leaves attention scores unchanged. And tensor dimensions are listed fastest first.

use std::path::Path;

use ferrogpt_engine::params::ParamLayout;
use ferrogpt_engine::quant::{DType, Q8_0_BLOCK};
use ferrogpt_engine::ModelConfig;
use ferrogpt_infer::chat::CHAT_TEMPLATE_JINJA;
use ferrogpt_infer::model_folder;
use ferrogpt_tokenizer::{Special, Tokenizer};

use crate::format::{encode, GgufWriter, TensorType, Value};
use crate::GgufError;

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_UNUSED: i32 = 5;

/// Writes the language model in `model_dir` to `out` with matrices in `dtype` (norms stay
/// f32; a q8_0 matrix whose rows are not a multiple of 32 is written in f16, as llama.cpp's
/// converter does).
pub fn export_gguf(model_dir: &Path, out: &Path, dtype: DType) -> Result<(), GgufError> {
    let files = model_folder::read(model_dir)?;
    let cfg = &files.config;
    if cfg.num_labels.is_some() {
        return Err(GgufError::Unsupported {
            what: format!(
                "{}: a sequence classifier (llama.cpp's Llama is a language model)",
                model_dir.display()
            ),
        });
    }
    let name = model_dir
        .file_name()
        .map_or("ferrogpt".into(), |n| n.to_string_lossy().into_owned());
    let mut w = GgufWriter::new();
    architecture(&mut w, cfg, &name, dtype);
    tokenizer(&mut w, &files.tokenizer, cfg.vocab_size)?;
    tensors(&mut w, cfg, &files.params, dtype)?;
    w.write(out)
}

fn architecture(w: &mut GgufWriter, cfg: &ModelConfig, name: &str, dtype: DType) {
    let u32_of = |n: usize| Value::U32(n as u32);
    w.metadata("general.architecture", Value::String("llama".into()));
    w.metadata("general.name", Value::String(name.into()));
    // llama_ftype: all f32, mostly f16, mostly q8_0.
    let file_type = match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q8_0 => 7,
    };
    w.metadata("general.file_type", Value::U32(file_type));
    w.metadata("llama.vocab_size", u32_of(cfg.vocab_size));
    w.metadata("llama.context_length", u32_of(cfg.max_seq_len));
    w.metadata("llama.embedding_length", u32_of(cfg.d_model));
    w.metadata("llama.block_count", u32_of(cfg.n_layers));
    w.metadata("llama.feed_forward_length", u32_of(cfg.ffn_hidden));
    w.metadata("llama.attention.head_count", u32_of(cfg.n_heads));
    w.metadata("llama.attention.head_count_kv", u32_of(cfg.n_kv_heads));
    w.metadata("llama.attention.key_length", u32_of(cfg.head_dim()));
    w.metadata("llama.attention.value_length", u32_of(cfg.head_dim()));
    w.metadata("llama.rope.dimension_count", u32_of(cfg.head_dim()));
    w.metadata("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32));
    w.metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(cfg.norm_eps as f32));
}

/// The vocabulary by id, its types, the merges in rank order and the special tokens. Ids the
/// model has beyond the tokenizer's vocabulary get unused placeholder tokens.
fn tokenizer(w: &mut GgufWriter, tok: &Tokenizer, vocab_size: usize) -> Result<(), GgufError> {
    let json: serde_json::Value = serde_json::from_str(&tok.to_json()).map_err(|e| GgufError::Metadata {
        key: "tokenizer.ggml.tokens".into(),
        why: format!("the tokenizer's JSON does not parse: {e}"),
    })?;
    let bad = |why: &str| GgufError::Metadata {
        key: "tokenizer.ggml.tokens".into(),
        why: why.into(),
    };
    let vocab = json["model"]["vocab"].as_object().ok_or_else(|| bad("no BPE vocabulary"))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < vocab_size)
            .ok_or_else(|| bad("an id beyond the model's vocabulary"))?;
        tokens[id] = Some(text.clone());
    }
    let mut types = vec![TOKEN_NORMAL; vocab_size];
    for special in Special::ALL {
        let id = special.id() as usize;
        if let Some(ty) = types.get_mut(id) {
            *ty = TOKEN_CONTROL;
            tokens[id] = Some(special.as_str().to_string());
        }
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, text)| {
            Value::String(text.unwrap_or_else(|| {
                types[id] = TOKEN_UNUSED;
                format!("[PAD{id}]")
            }))
        })
        .collect();
    let merges = json["model"]["merges"].as_array().ok_or_else(|| bad("no BPE merges"))?;
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| match m {
            // Older tokenizer.json files write a merge as "a b", newer ones as ["a", "b"].
            serde_json::Value::String(s) => Ok(Value::String(s.clone())),
            serde_json::Value::Array(pair) => match (pair.first().and_then(|v| v.as_str()), pair.get(1).and_then(|v| v.as_str())) {
                (Some(a), Some(b)) => Ok(Value::String(format!("{a} {b}"))),
                _ => Err(bad("a merge that is not a pair of strings")),
            },
            _ => Err(bad("a merge that is not a pair of strings")),
        })
        .collect::<Result<_, _>>()?;
    w.metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    // GPT-2's pre-tokenizer regex. Ours also splits digits one by one; no merge joins two
    // digits or a space and a digit, so GPT-2's digit runs end up as the same tokens.
    w.metadata("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    w.metadata("tokenizer.ggml.tokens", Value::Array(tokens));
    w.metadata(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    w.metadata("tokenizer.ggml.merges", Value::Array(merges));
    w.metadata("tokenizer.ggml.bos_token_id", Value::U32(Special::Bos.id()));
    w.metadata("tokenizer.ggml.eos_token_id", Value::U32(Special::End.id()));
    w.metadata("tokenizer.ggml.padding_token_id", Value::U32(Special::Pad.id()));
    w.metadata("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.metadata("tokenizer.ggml.add_eos_token", Value::Bool(false));
    w.metadata("tokenizer.chat_template", Value::String(CHAT_TEMPLATE_JINJA.into()));
    Ok(())
}

/// llama.cpp's name for a Hugging Face tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// Rows of a q or k projection (`heads` heads of `head_dim` rows, each `cols` long) reordered
/// from the rotate-half layout to llama.cpp's adjacent pairs: within a head, row `2j + s`
/// becomes the old row `s·hd/2 + j`.
pub fn interleave_halves(rows: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(rows.len());
    for head in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let old = head * head_dim + s * half + j;
                out.extend_from_slice(&rows[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

fn tensors(w: &mut GgufWriter, cfg: &ModelConfig, params: &[f32], dtype: DType) -> Result<(), GgufError> {
    let layout = ParamLayout::new(cfg);
    for spec in &layout.tensors {
        let name = gguf_name(&spec.name).ok_or_else(|| GgufError::Unsupported {
            what: format!("tensor `{}`: llama.cpp's Llama has no such tensor", spec.name),
        })?;
        let values = &params[spec.range()];
        let (values, ty) = match spec.shape[..] {
            [_] => (values.to_vec(), TensorType::F32),
            [rows, cols] => {
                let values = if spec.name.ends_with("q_proj.weight") {
                    interleave_halves(values, cfg.n_heads, cfg.head_dim(), cols)
                } else if spec.name.ends_with("k_proj.weight") {
                    interleave_halves(values, cfg.n_kv_heads, cfg.head_dim(), cols)
                } else {
                    values.to_vec()
                };
                let ty = match dtype {
                    DType::F32 => TensorType::F32,
                    DType::F16 => TensorType::F16,
                    DType::Q8_0 if cols.is_multiple_of(Q8_0_BLOCK) => TensorType::Q8_0,
                    DType::Q8_0 => TensorType::F16,
                };
                debug_assert_eq!(values.len(), rows * cols);
                (values, ty)
            }
            _ => {
                return Err(GgufError::Unsupported {
                    what: format!("tensor `{}` of shape {:?}", spec.name, spec.shape),
                })
            }
        };
        let dims = spec.shape.iter().rev().map(|&d| d as u64).collect();
        w.tensor(&name, dims, ty, encode(&values, ty)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::GgufFile;
    use ferrogpt_engine::Model;
    use ferrogpt_infer::LocalModel;

    fn folder(dir: &Path, tie: bool) -> (std::path::PathBuf, Tokenizer, Model<f32>) {
        let texts: Vec<String> = (0..80).map(|i| format!("the cat {i} sat on the mat, said the dog.")).collect();
        let tok = Tokenizer::train(texts.into_iter(), 300).unwrap();
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size() + 3,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_hidden: 96,
            max_seq_len: 32,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: tie,
            num_labels: None,
        };
        let model = Model::new(cfg, 0.5, 11).unwrap();
        let path = dir.join(if tie { "tied" } else { "untied" });
        LocalModel::save_folder(&path, &model, &tok).unwrap();
        (path, tok, model)
    }

    #[test]
    fn an_exported_model_has_llama_cpp_s_metadata_names_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        for tie in [false, true] {
            let (path, tok, model) = folder(dir.path(), tie);
            let out = dir.path().join("m.gguf");
            export_gguf(&path, &out, DType::F32).unwrap();
            let file = GgufFile::read(&out).unwrap();
            let cfg = &model.cfg;
            let get_u64 = |k: &str| file.get(k).and_then(Value::as_u64);
            assert_eq!(file.get("general.architecture").and_then(Value::as_str), Some("llama"));
            assert_eq!(get_u64("llama.block_count"), Some(2));
            assert_eq!(get_u64("llama.attention.head_count_kv"), Some(2));
            assert_eq!(get_u64("llama.rope.dimension_count"), Some(16));
            let Some(Value::Array(tokens)) = file.get("tokenizer.ggml.tokens") else {
                panic!("no tokens")
            };
            assert_eq!(tokens.len(), cfg.vocab_size);
            assert_eq!(tokens[Special::End.id() as usize], Value::String("<|end|>".into()));
            assert_eq!(tokens[cfg.vocab_size - 1], Value::String(format!("[PAD{}]", cfg.vocab_size - 1)));
            let Some(Value::Array(types)) = file.get("tokenizer.ggml.token_type") else {
                panic!("no types")
            };
            assert_eq!(types[0], Value::I32(TOKEN_CONTROL));
            assert_eq!(types[tok.vocab_size()], Value::I32(TOKEN_UNUSED));
            let Some(Value::Array(merges)) = file.get("tokenizer.ggml.merges") else {
                panic!("no merges")
            };
            assert!(!merges.is_empty() && merges.iter().all(|m| m.as_str().is_some_and(|s| s.split(' ').count() == 2)));
            assert_eq!(
                file.get("tokenizer.chat_template").and_then(Value::as_str),
                Some(CHAT_TEMPLATE_JINJA)
            );
            // 1 embedding + 9 per layer + final norm, + the head when untied.
            assert_eq!(file.tensors.len(), 1 + 9 * 2 + 1 + usize::from(!tie));
            assert_eq!(file.tensor("output.weight").is_some(), !tie);
            let embed = file.tensor("token_embd.weight").unwrap();
            assert_eq!(embed.dims, [64, cfg.vocab_size as u64]);
            // Every tensor but q and k is the folder's, bit for bit; q and k un-interleave to it.
            let layout = ParamLayout::new(cfg);
            for spec in &layout.tensors {
                let got = file.tensor_f32(&gguf_name(&spec.name).unwrap()).unwrap();
                let want = &model.params[spec.range()];
                if spec.name.ends_with("q_proj.weight") || spec.name.ends_with("k_proj.weight") {
                    let heads = spec.shape[0] / cfg.head_dim();
                    assert_ne!(got, want, "{}", spec.name);
                    let mut back = vec![0.0; got.len()];
                    for (i, row) in interleave_halves(&(0..spec.shape[0]).map(|r| r as f32).collect::<Vec<_>>(), heads, cfg.head_dim(), 1)
                        .into_iter()
                        .enumerate()
                    {
                        let cols = spec.shape[1];
                        back[row as usize * cols..(row as usize + 1) * cols].copy_from_slice(&got[i * cols..(i + 1) * cols]);
                    }
                    assert_eq!(back, want, "{}", spec.name);
                } else {
                    assert_eq!(got, want, "{}", spec.name);
                }
            }
        }
    }

    #[test]
    fn q8_0_and_f16_exports_stay_close_to_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, model) = folder(dir.path(), false);
        for (dtype, ty, tolerance) in [(DType::F16, TensorType::F16, 4e-3), (DType::Q8_0, TensorType::Q8_0, 2e-2)] {
            let out = dir.path().join(format!("{dtype}.gguf"));
            export_gguf(&path, &out, dtype).unwrap();
            let file = GgufFile::read(&out).unwrap();
            let down = file.tensor("blk.1.ffn_down.weight").unwrap();
            // ffn_down's rows are 96 long: whole q8_0 blocks.
            assert_eq!(down.ty, ty);
            assert_eq!(file.tensor("blk.0.attn_norm.weight").unwrap().ty, TensorType::F32);
            let layout = ParamLayout::new(&model.cfg);
            let spec = layout
                .tensors
                .iter()
                .find(|t| t.name == "model.layers.1.mlp.down_proj.weight")
                .unwrap();
            let got = file.tensor_f32("blk.1.ffn_down.weight").unwrap();
            let err = got
                .iter()
                .zip(&model.params[spec.range()])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < tolerance, "{dtype}: max error {err}");
        }
    }

    #[test]
    fn a_classifier_is_not_exported() {
        let dir = tempfile::tempdir().unwrap();
        let (_, tok, lm) = folder(dir.path(), false);
        let classifier = Model::classifier_from(&lm, 3, 0.02, 1).unwrap();
        let path = dir.path().join("classifier");
        LocalModel::save_folder(&path, &classifier, &tok).unwrap();
        let err = export_gguf(&path, &dir.path().join("c.gguf"), DType::F32).unwrap_err();
        assert!(err.to_string().contains("sequence classifier"), "{err}");
    }
}
