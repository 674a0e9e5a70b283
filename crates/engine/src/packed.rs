//! A model's weights packed for inference in f16 or q8_0 ([`Model::quantize`],
//! [`Model::from_packed_tensors`]), and the one way the inference path reads
//! weights whether packed or not ([`Model::layer_weight`] and friends).
//!
//! Packing replaces the f32 parameter buffer: a packed model decodes, prefills
//! and scores (through [`Model::forward_cached`]) but does not train, and its
//! `params` is empty. Norm weights stay in the float type (llama.cpp keeps
//! 1-D tensors in f32 too); the embedding and every matrix take the dtype.

use crate::config::ModelConfig;
use crate::float::Float;
use crate::model::Model;
use crate::params::{ParamKind, ParamLayout, TensorSpec};
use crate::quant::{DType, PackedData, PackedMatrix, WeightRef};
use crate::EngineError;

/// The four matrices of a block, as the inference path stacks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayerMatrix {
    /// q_proj, k_proj, v_proj stacked: `[qkv_dim, d]`.
    Qkv,
    /// o_proj: `[d, heads·head_dim]`.
    O,
    /// gate_proj, up_proj stacked: `[2·ffn, d]`.
    GateUp,
    /// down_proj: `[d, ffn]`.
    Down,
}

impl LayerMatrix {
    const ALL: [LayerMatrix; 4] = [LayerMatrix::Qkv, LayerMatrix::O, LayerMatrix::GateUp, LayerMatrix::Down];

    /// `(rows, cols)` for `cfg`.
    fn shape(self, cfg: &ModelConfig) -> (usize, usize) {
        let (d, hd_all) = (cfg.d_model, cfg.n_heads * cfg.head_dim());
        match self {
            LayerMatrix::Qkv => (cfg.qkv_dim(), d),
            LayerMatrix::O => (d, hd_all),
            LayerMatrix::GateUp => (2 * cfg.ffn_hidden, d),
            LayerMatrix::Down => (d, cfg.ffn_hidden),
        }
    }

    /// Where the matrix starts in the flat parameter layout.
    fn offset(self, layout: &ParamLayout, layer: usize) -> usize {
        let lo = &layout.layers[layer];
        match self {
            LayerMatrix::Qkv => lo.qkv,
            LayerMatrix::O => lo.o,
            LayerMatrix::GateUp => lo.gate_up,
            LayerMatrix::Down => lo.down,
        }
    }
}

/// Every weight of a model in its packed form.
pub(crate) struct PackedWeights<T> {
    embed: PackedMatrix<T>,
    /// Per layer, indexed by [`LayerMatrix`] order.
    layers: Vec<[PackedMatrix<T>; 4]>,
    /// `None` when the head is tied to the embedding.
    lm_head: Option<PackedMatrix<T>>,
    /// `[input_0, post_0, input_1, post_1, …, final]`, `d_model` each.
    norms: Vec<T>,
}

impl<T: Float> PackedWeights<T> {
    fn matrices(&self) -> impl Iterator<Item = &PackedMatrix<T>> {
        std::iter::once(&self.embed)
            .chain(self.layers.iter().flatten())
            .chain(self.lm_head.as_ref())
    }

    /// The most compact storage type among the matrices.
    fn dtype(&self) -> DType {
        let dtypes: Vec<DType> = self.matrices().map(|m| m.dtype()).collect();
        [DType::Q8_0, DType::F16]
            .into_iter()
            .find(|d| dtypes.contains(d))
            .unwrap_or(DType::F32)
    }

    fn bytes(&self) -> usize {
        self.matrices().map(|m| m.bytes()).sum::<usize>() + std::mem::size_of_val(self.norms.as_slice())
    }
}

/// Which norm: the flat layout's offset of each, in [`PackedWeights::norms`] order.
fn norm_offsets(layout: &ParamLayout) -> Vec<usize> {
    let mut v: Vec<usize> = layout.layers.iter().flat_map(|lo| [lo.input_norm, lo.post_norm]).collect();
    v.push(layout.final_norm);
    v
}

impl<T: Float> Model<T> {
    /// Packs the weights for inference as `dtype` (see the module doc): every
    /// matrix and the embedding in f16 or q8_0 (a q8_0 matrix whose rows are
    /// not a multiple of 32 long is stored in f16), norms unchanged. `F32` on
    /// an unpacked model changes nothing. Packing is one-way: the f32
    /// parameters are dropped, and packing again into another dtype is an error.
    pub fn quantize(&mut self, dtype: DType) -> Result<(), EngineError> {
        if let Some(p) = &self.packed {
            let have = p.dtype();
            return if have == dtype {
                Ok(())
            } else {
                Err(EngineError::Unsupported(format!(
                    "repacking weights already packed as {have} into {dtype} (pack from f32 weights)"
                )))
            };
        }
        if dtype == DType::F32 {
            return Ok(());
        }
        let (cfg, layout, p) = (&self.cfg, &self.layout, &self.params);
        let d = cfg.d_model;
        let embed = PackedMatrix::pack(cfg.vocab_size, d, &p[layout.embed..layout.embed + cfg.vocab_size * d], dtype)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let pack = |m: LayerMatrix| {
                let (rows, cols) = m.shape(cfg);
                let at = m.offset(layout, l);
                PackedMatrix::pack(rows, cols, &p[at..at + rows * cols], dtype)
            };
            layers.push([
                pack(LayerMatrix::Qkv)?,
                pack(LayerMatrix::O)?,
                pack(LayerMatrix::GateUp)?,
                pack(LayerMatrix::Down)?,
            ]);
        }
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            let at = layout.lm_head;
            Some(PackedMatrix::pack(cfg.head_rows(), d, &p[at..at + cfg.head_rows() * d], dtype)?)
        };
        let norms = norm_offsets(layout).iter().flat_map(|&at| p[at..at + d].iter().copied()).collect();
        self.packed = Some(Box::new(PackedWeights {
            embed,
            layers,
            lm_head,
            norms,
        }));
        self.params = Vec::new();
        self.grads = Vec::new();
        Ok(())
    }

    /// A packed model from its tensors, asked for by Hugging Face name in
    /// layout order (e.g. read from a GGUF file, kept in its storage types).
    /// 2-D tensors may be in any dtype, but q/k/v and gate/up, which the
    /// engine stacks, must share one; 1-D tensors (norms) must be full precision.
    pub fn from_packed_tensors(
        cfg: ModelConfig,
        mut tensor: impl FnMut(&TensorSpec) -> Result<PackedMatrix<T>, EngineError>,
    ) -> Result<Self, EngineError> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        let mut by_offset = std::collections::HashMap::new();
        for spec in &layout.tensors {
            let m = tensor(spec)?;
            let (rows, cols) = match spec.shape[..] {
                [r, c] => (r, c),
                [c] => (1, c),
                _ => return Err(EngineError::Shape(format!("tensor {} is neither 1-D nor 2-D", spec.name))),
            };
            if (m.rows(), m.cols()) != (rows, cols) {
                return Err(EngineError::Shape(format!(
                    "tensor {} is {}x{}, the config needs {:?}",
                    spec.name,
                    m.rows(),
                    m.cols(),
                    spec.shape
                )));
            }
            if spec.kind == ParamKind::Norm && m.dtype() != DType::F32 {
                return Err(EngineError::Unsupported(format!(
                    "norm weight {} in {} (norms must be f32)",
                    spec.name,
                    m.dtype()
                )));
            }
            by_offset.insert(spec.offset, (spec.name.clone(), m));
        }
        let mut take = |at: usize| {
            by_offset
                .remove(&at)
                .ok_or_else(|| EngineError::Shape(format!("no tensor at parameter offset {at}")))
        };
        let d = cfg.d_model;
        let hd = cfg.head_dim();
        let (_, embed) = take(layout.embed)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let mut norms = Vec::with_capacity((2 * cfg.n_layers + 1) * d);
        for lo in &layout.layers {
            let input_norm = take(lo.input_norm)?.1.to_full();
            let q = take(lo.qkv)?;
            let k = take(lo.qkv + cfg.n_heads * hd * d)?;
            let v = take(lo.qkv + (cfg.n_heads + cfg.n_kv_heads) * hd * d)?;
            let (_, o) = take(lo.o)?;
            let post_norm = take(lo.post_norm)?.1.to_full();
            let gate = take(lo.gate_up)?;
            let up = take(lo.gate_up + cfg.ffn_hidden * d)?;
            let (_, down) = take(lo.down)?;
            norms.extend(input_norm);
            norms.extend(post_norm);
            layers.push([stack(&[q, k, v])?, o, stack(&[gate, up])?, down]);
        }
        norms.extend(take(layout.final_norm)?.1.to_full());
        let lm_head = if cfg.tie_embeddings { None } else { Some(take(layout.lm_head)?.1) };
        let mut model = Model::from_parts(cfg, Vec::new())?;
        model.packed = Some(Box::new(PackedWeights {
            embed,
            layers,
            lm_head,
            norms,
        }));
        Ok(model)
    }

    /// How the weights are stored: `F32` (the float type) unless packed; a
    /// q8_0 model may hold a few f16 matrices (see [`Model::quantize`]).
    pub fn weight_dtype(&self) -> DType {
        self.packed.as_ref().map_or(DType::F32, |p| p.dtype())
    }

    /// Bytes the weights occupy (gradients and optimizer state excluded).
    pub fn weight_bytes(&self) -> usize {
        match &self.packed {
            Some(p) => p.bytes(),
            None => std::mem::size_of_val(self.params.as_slice()),
        }
    }

    /// Every tensor of the layout with its values, packed or not, in layout
    /// order (what an exporter writes).
    pub fn tensor_weights(&self) -> Vec<(&TensorSpec, WeightRef<'_, T>)> {
        let layout = &self.layout;
        let Some(p) = &self.packed else {
            return layout
                .tensors
                .iter()
                .map(|t| (t, WeightRef::Full(&self.params[t.range()])))
                .collect();
        };
        let d = self.cfg.d_model;
        let norms = norm_offsets(layout);
        let mut out = Vec::with_capacity(layout.tensors.len());
        for spec in &layout.tensors {
            let view = if let Some(i) = norms.iter().position(|&at| at == spec.offset) {
                WeightRef::Full(&p.norms[i * d..(i + 1) * d])
            } else if spec.offset == layout.embed {
                p.embed.view()
            } else if spec.offset == layout.lm_head {
                match &p.lm_head {
                    Some(m) => m.view(),
                    None => p.embed.view(),
                }
            } else {
                // A (part of a) stacked layer matrix: find it and the rows.
                let found = (0..self.cfg.n_layers).find_map(|l| {
                    LayerMatrix::ALL.iter().enumerate().find_map(|(i, &m)| {
                        let (rows, cols) = m.shape(&self.cfg);
                        let start = m.offset(layout, l);
                        (spec.offset >= start && spec.offset < start + rows * cols).then(|| {
                            let row0 = (spec.offset - start) / cols;
                            p.layers[l][i].view().rows(row0..row0 + spec.shape[0], cols)
                        })
                    })
                });
                match found.flatten() {
                    Some(v) => v,
                    None => continue,
                }
            };
            out.push((spec, view));
        }
        out
    }

    /// Layer `l`'s matrix `m`, as the inference path reads it.
    pub(crate) fn layer_weight(&self, l: usize, m: LayerMatrix) -> WeightRef<'_, T> {
        match &self.packed {
            Some(p) => p.layers[l][m as usize].view(),
            None => {
                let (rows, cols) = m.shape(&self.cfg);
                let at = m.offset(&self.layout, l);
                WeightRef::Full(&self.params[at..at + rows * cols])
            }
        }
    }

    pub(crate) fn embed_weight(&self) -> WeightRef<'_, T> {
        match &self.packed {
            Some(p) => p.embed.view(),
            None => {
                let at = self.layout.embed;
                WeightRef::Full(&self.params[at..at + self.cfg.vocab_size * self.cfg.d_model])
            }
        }
    }

    pub(crate) fn head_weight(&self) -> WeightRef<'_, T> {
        match &self.packed {
            Some(p) => p.lm_head.as_ref().unwrap_or(&p.embed).view(),
            None => {
                let at = self.layout.lm_head;
                WeightRef::Full(&self.params[at..at + self.cfg.head_rows() * self.cfg.d_model])
            }
        }
    }

    /// The `index`-th norm in [`PackedWeights::norms`] order.
    fn norm(&self, index: usize) -> &[T] {
        let d = self.cfg.d_model;
        match &self.packed {
            Some(p) => &p.norms[index * d..(index + 1) * d],
            None => {
                let layout = &self.layout;
                let at = match layout.layers.get(index / 2) {
                    Some(lo) if index.is_multiple_of(2) => lo.input_norm,
                    Some(lo) => lo.post_norm,
                    None => layout.final_norm,
                };
                &self.params[at..at + d]
            }
        }
    }

    pub(crate) fn input_norm(&self, l: usize) -> &[T] {
        self.norm(2 * l)
    }
    pub(crate) fn post_norm(&self, l: usize) -> &[T] {
        self.norm(2 * l + 1)
    }
    pub(crate) fn final_norm(&self) -> &[T] {
        self.norm(2 * self.cfg.n_layers)
    }
}

/// Row-wise concatenation of matrices with one storage type and width.
fn stack<T: Float>(parts: &[(String, PackedMatrix<T>)]) -> Result<PackedMatrix<T>, EngineError> {
    let names = || parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let cols = parts.first().map_or(0, |(_, m)| m.cols());
    let rows = parts.iter().map(|(_, m)| m.rows()).sum();
    if parts.iter().any(|(_, m)| m.cols() != cols) {
        return Err(EngineError::Shape(format!("{} differ in width", names())));
    }
    macro_rules! concat {
        ($variant:ident) => {{
            let mut all = Vec::new();
            for (_, m) in parts {
                match m.data() {
                    PackedData::$variant(v) => all.extend_from_slice(v),
                    _ => {
                        return Err(EngineError::Unsupported(format!(
                            "{} in different storage types (the engine stacks them)",
                            names()
                        )))
                    }
                }
            }
            PackedData::$variant(all)
        }};
    }
    let data = match parts.first().map(|(_, m)| m.data()) {
        Some(PackedData::F16(_)) => concat!(F16),
        Some(PackedData::Q8_0(_)) => concat!(Q8_0),
        _ => concat!(Full),
    };
    PackedMatrix::from_data(rows, cols, data)
}
