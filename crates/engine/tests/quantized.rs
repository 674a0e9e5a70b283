//! Inference with packed weights (f16, q8_0) and an f16 KV cache, against the
//! f32 model they came from: prefill (the tiled gemm path) and decode steps
//! (the matrix-vector path), the accounting of their memory, the exchange of
//! packed tensors by name, and the errors of using a packed model to train.

mod common;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::quant::PackedMatrix;
use ferrogpt_engine::{Activations, AttnMask, DType, Input, KvCache, Model, ModelConfig};

/// Widths that are whole q8_0 blocks except the MLP's (176 = 5.5 blocks), so
/// the down projection exercises the f16 fallback.
fn cfg() -> ModelConfig {
    common::small_config(64)
}

/// A model whose products keep their inputs' scale (init std 1/√d), as a
/// trained network does; a larger std makes a chaotic network that amplifies
/// any perturbation.
fn model() -> Model<f32> {
    Model::<f32>::new(cfg(), 0.125, 11).unwrap()
}

/// Logits of a 6-token prefill (every position) then 10 decode steps, per step.
fn run(model: &Model<f32>, kv: DType) -> Vec<Vec<f32>> {
    let cfg = cfg();
    let mut cache = KvCache::<f32>::with_dtype(&cfg, 1, 32, kv).unwrap();
    let mut logits = Vec::new();
    let prompt = [5, 17, 250, 3, 99, 42];
    model
        .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &prompt }], LogitsFor::All, &mut logits)
        .unwrap();
    let mut out: Vec<Vec<f32>> = logits.chunks(cfg.vocab_size).map(|c| c.to_vec()).collect();
    for i in 0..10u32 {
        let t = [(i * 37 + 1) % 300];
        model
            .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &t }], LogitsFor::Last, &mut logits)
            .unwrap();
        out.push(logits.clone());
    }
    out
}

/// Largest RMS of (got − want) relative to the RMS of want, over the steps.
fn worst_relative_rms(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let err: f64 = g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let scale: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum();
            (err / scale).sqrt()
        })
        .fold(0.0, f64::max)
}

/// Error budgets, from the formats' rounding (a broken kernel gives errors of
/// order 1; measured here: f16 1.1e-3, q8_0 3.1e-2, f16 KV 6.5e-4):
/// - f16 weights round each weight by at most 2^-11 relative; with random
///   signs an output moves by ~2^-11/√3 ≈ 3e-4 of its size per product, and
///   the logits pass through ~5 products in sequence: ≲ 2e-3. Budget 1e-2.
/// - q8_0 rounds each weight to a step of max|block|/127 (≈ 0.5% of the
///   weights' RMS for Gaussian blocks) and, like llama.cpp, each product's
///   input too (≈ 0.6%): ~1% per product, a few % after 5. Budget 8e-2.
/// - An f16 KV cache rounds keys and values by 2^-11: ≲ 1e-3. Budget 1e-2.
const F16_BUDGET: f64 = 1e-2;
const Q8_0_BUDGET: f64 = 8e-2;
const KV_F16_BUDGET: f64 = 1e-2;

#[test]
fn packed_weights_and_f16_kv_stay_close_to_f32() {
    let reference = run(&model(), DType::F32);
    let mut f16 = model();
    f16.quantize(DType::F16).unwrap();
    let mut q8 = model();
    q8.quantize(DType::Q8_0).unwrap();
    let errors = [
        ("f16 weights", worst_relative_rms(&run(&f16, DType::F32), &reference), F16_BUDGET),
        ("q8_0 weights", worst_relative_rms(&run(&q8, DType::F32), &reference), Q8_0_BUDGET),
        (
            "f16 KV cache",
            worst_relative_rms(&run(&model(), DType::F16), &reference),
            KV_F16_BUDGET,
        ),
        (
            "q8_0 weights, f16 KV",
            worst_relative_rms(&run(&q8, DType::F16), &reference),
            Q8_0_BUDGET,
        ),
    ];
    for (what, err, budget) in errors {
        eprintln!("{what}: worst relative RMS error of the logits {err:.2e} (budget {budget:.0e})");
        assert!(err < budget, "{what}: {err} exceeds {budget}");
        assert!(err > 0.0, "{what}: identical to f32, so nothing was packed");
    }
}

#[test]
fn memory_is_reported_per_dtype() {
    let c = cfg();
    let f32_bytes = model().weight_bytes();
    assert_eq!(f32_bytes, model().num_params() * 4);
    let mut f16 = model();
    f16.quantize(DType::F16).unwrap();
    assert_eq!(f16.weight_dtype(), DType::F16);
    let norms = (2 * c.n_layers + 1) * c.d_model;
    assert_eq!(f16.weight_bytes(), (model().num_params() - norms) * 2 + norms * 4);
    let mut q8 = model();
    q8.quantize(DType::Q8_0).unwrap();
    assert_eq!(q8.weight_dtype(), DType::Q8_0);
    // down_proj (176 columns) falls back to f16; the rest is 34 bytes per 32.
    let down = c.n_layers * c.d_model * c.ffn_hidden;
    let blocks = (model().num_params() - norms - down) / 32;
    assert_eq!(q8.weight_bytes(), blocks * 34 + down * 2 + norms * 4);
    assert!(q8.params.is_empty() && f16.params.is_empty());

    let kv32 = KvCache::<f32>::new(&c, 2, 16);
    let kv16 = KvCache::<f32>::with_dtype(&c, 2, 16, DType::F16).unwrap();
    assert_eq!(kv32.bytes_per_token(), 2 * c.n_layers * c.n_kv_heads * c.head_dim() * 4);
    assert_eq!(kv16.bytes_per_token() * 2, kv32.bytes_per_token());
    assert_eq!(kv16.bytes(), kv16.bytes_per_token() * 2 * 16);
    assert!(KvCache::<f32>::with_dtype(&c, 1, 4, DType::Q8_0).is_err());
}

#[test]
fn packed_tensors_round_trip_by_name() {
    for dtype in [DType::F16, DType::Q8_0] {
        let mut packed = model();
        packed.quantize(dtype).unwrap();
        let tensors: Vec<(String, PackedMatrix<f32>)> = packed
            .tensor_weights()
            .into_iter()
            .map(|(spec, w)| {
                let (rows, cols) = match spec.shape[..] {
                    [r, c] => (r, c),
                    [c] => (1, c),
                    _ => unreachable!("the layout has 1-D and 2-D tensors only"),
                };
                let data = match w {
                    ferrogpt_engine::quant::WeightRef::Full(v) => ferrogpt_engine::quant::PackedData::Full(v.to_vec()),
                    ferrogpt_engine::quant::WeightRef::F16(v) => ferrogpt_engine::quant::PackedData::F16(v.to_vec()),
                    ferrogpt_engine::quant::WeightRef::Q8_0(v) => ferrogpt_engine::quant::PackedData::Q8_0(v.to_vec()),
                };
                (spec.name.clone(), PackedMatrix::from_data(rows, cols, data).unwrap())
            })
            .collect();
        assert_eq!(tensors.len(), packed.layout.tensors.len());
        let rebuilt = Model::from_packed_tensors(cfg(), |spec| {
            let (_, m) = tensors.iter().find(|(n, _)| *n == spec.name).unwrap();
            Ok(m.clone())
        })
        .unwrap();
        assert_eq!(rebuilt.weight_dtype(), dtype);
        assert_eq!(rebuilt.weight_bytes(), packed.weight_bytes());
        assert_eq!(run(&rebuilt, DType::F32), run(&packed, DType::F32), "{dtype}");
    }
    // Stacked tensors in different storage types are refused, by name.
    let e = Model::from_packed_tensors(cfg(), |spec| {
        let (rows, cols) = match spec.shape[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => unreachable!("the layout has 1-D and 2-D tensors only"),
        };
        let values = vec![0.5f32; rows * cols];
        let dtype = if spec.name.ends_with("k_proj.weight") {
            DType::F16
        } else {
            DType::F32
        };
        PackedMatrix::pack(rows, cols, &values, dtype)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("q_proj") && e.contains("k_proj"), "{e}");
}

#[test]
fn packed_models_refuse_to_train_or_repack() {
    let c = cfg();
    let mut m = model();
    m.quantize(DType::Q8_0).unwrap();
    let mut acts = Activations::new(&c, 1, 4).unwrap();
    let mask = AttnMask::causal(4);
    let e = m.forward_logits(&mut acts, Input::Tokens(&[1, 2, 3, 4]), &mask).unwrap_err();
    assert!(e.to_string().contains("q8_0"), "{e}");
    let e = m
        .forward_backward(&mut acts, Input::Tokens(&[1, 2, 3, 4]), &[1, 2, 3, 4], &mask, 1.0)
        .unwrap_err();
    assert!(e.to_string().contains("f32 weights"), "{e}");
    assert!(m.quantize(DType::Q8_0).is_ok(), "packing again as the same dtype is a no-op");
    assert!(m.quantize(DType::F16).is_err());
    let path = std::env::temp_dir().join(format!("ferrogpt-packed-{}.safetensors", std::process::id()));
    let e = ferrogpt_engine::io::save_model(&path, &m.layout, &m.params, None).unwrap_err();
    assert!(e.to_string().contains("packed"), "{e}");
}

/// Each product is split between the pool's workers; a packed model's logits
/// must not depend on the split either.
#[test]
fn packed_decode_is_identical_on_one_thread_and_on_the_pool() {
    for dtype in [DType::F16, DType::Q8_0] {
        let mut m = model();
        m.quantize(dtype).unwrap();
        let pooled = run(&m, DType::F16);
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| run(&m, DType::F16));
        assert_eq!(pooled, single, "{dtype}");
    }
}
