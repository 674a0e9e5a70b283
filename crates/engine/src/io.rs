//! Weights in and out of `safetensors` files, by Hugging Face Llama tensor
//! names, so `transformers` can load what we train and we can load theirs.

use crate::params::ParamLayout;
use crate::quant::F16;
use crate::EngineError;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

fn err(path: &Path, why: impl Into<String>) -> EngineError {
    EngineError::Weights {
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes named f32 tensors (`(name, shape, data)`) with optional metadata.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), EngineError> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, d)| to_bytes(d)).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), b).map_err(|e| err(path, format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    // Write to a temporary name and rename, so a kill mid-write never leaves a
    // truncated file under the real name.
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::tensor::serialize_to_file(views, &metadata, &tmp).map_err(|e| err(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// Tensors by name: shape and f32 data.
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a file as f32 (f16/bf16 widened).
pub fn load_tensors(path: &Path) -> Result<NamedTensors, EngineError> {
    let buf = std::fs::read(path).map_err(|e| EngineError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| err(path, format!("not a valid safetensors file ({e})")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = widen(&view).map_err(|why| err(path, format!("tensor {name}: {why}")))?;
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

fn widen(view: &TensorView) -> Result<Vec<f32>, String> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| F16(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        other => return Err(format!("dtype {other:?} is not supported (f32, bf16, f16 are)")),
    })
}

/// Saves a model's parameters under their Hugging Face names.
pub fn save_model(path: &Path, layout: &ParamLayout, params: &[f32], metadata: Option<HashMap<String, String>>) -> Result<(), EngineError> {
    if params.len() != layout.total {
        return Err(err(
            path,
            format!(
                "{} parameters to save, the layout has {} (a model packed for inference has no f32 parameters)",
                params.len(),
                layout.total
            ),
        ));
    }
    let tensors: Vec<(String, Vec<usize>, &[f32])> = layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), &params[t.range()]))
        .collect();
    save_tensors(path, &tensors, metadata)
}

/// Loads parameters for `layout`; a missing tensor or a wrong shape is an
/// error naming the file and tensor. Tensors we do not use (e.g. rotary
/// caches some exporters add) are ignored.
pub fn load_model(path: &Path, layout: &ParamLayout) -> Result<Vec<f32>, EngineError> {
    let mut tensors = load_tensors(path)?;
    let mut params = vec![0.0f32; layout.total];
    for spec in &layout.tensors {
        let (shape, data) = tensors
            .remove(&spec.name)
            .ok_or_else(|| err(path, format!("tensor {} is missing", spec.name)))?;
        if shape != spec.shape {
            return Err(err(
                path,
                format!("tensor {} has shape {:?}, the config needs {:?}", spec.name, shape, spec.shape),
            ));
        }
        params[spec.range()].copy_from_slice(&data);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn save_load_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("ferrogpt-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = ModelConfig::reference();
        cfg.vocab_size = 16;
        cfg.d_model = 8;
        cfg.n_heads = 2;
        cfg.n_kv_heads = 1;
        cfg.n_layers = 2;
        cfg.ffn_hidden = 8;
        let layout = ParamLayout::new(&cfg);
        let params: Vec<f32> = layout.init(&cfg, 0.02, 1);
        let p = dir.join("model.safetensors");
        save_model(&p, &layout, &params, None).unwrap();
        assert_eq!(load_model(&p, &layout).unwrap(), params);

        let mut other = cfg.clone();
        other.ffn_hidden = 16;
        let e = load_model(&p, &ParamLayout::new(&other)).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("gate_proj"), "{e}");

        std::fs::write(&p, b"garbage").unwrap();
        let e = load_model(&p, &layout).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
