//! The whole engine on every kernel path this CPU supports, against the
//! portable path: a training step (loss, gradients, AdamW) and decoding with
//! f32, f16 and q8_0 weights. Alone in its test binary because it switches the
//! process-wide path (`Kernels::force`).
//!
//! Elementwise kernels give the same bits on every path (tested per kernel in
//! the library); dot products are fused on the SIMD paths and, where the
//! target lacks FMA (baseline x86-64), not on the portable one, so the paths
//! differ by rounding: a few units of 1e-7 per product, which the network
//! carries to the outputs (measured on AVX2: up to 7e-6 of the RMS). Budgets:
//! 1e-4 of the RMS for f32/f16 logits, loss and gradients, and 2e-3 for q8_0, where a rounding
//! difference can move an activation across a quantization boundary (one step
//! of 1/127 of its block's largest value). Where the portable path has FMA
//! (aarch64), everything must match bit for bit.

mod common;

use ferrogpt_engine::kv::{LogitsFor, SeqChunk};
use ferrogpt_engine::optim::{AdamW, AdamWConfig};
use ferrogpt_engine::simd::{Isa, Portable};
use ferrogpt_engine::{Activations, AttnMask, DType, Input, KernelPath, Kernels, KvCache, Model, ModelConfig};

fn cfg() -> ModelConfig {
    common::small_config(80)
}

fn tokens(n: usize, salt: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + salt * 13 + i * i) % 300) as u32).collect()
}

/// Loss and gradients of one training step.
fn train_step() -> (f64, Vec<f32>) {
    let c = cfg();
    let mut model = Model::<f32>::new(c.clone(), 0.1, 3).unwrap();
    let mut acts = Activations::new(&c, 2, 70).unwrap();
    let loss = model
        .forward_backward(
            &mut acts,
            Input::Tokens(&tokens(140, 1)),
            &tokens(140, 2),
            &AttnMask::causal(70),
            1.0,
        )
        .unwrap();
    (loss, model.grads)
}

/// Parameters after two AdamW steps with `grads` (the same gradients on every
/// path: AdamW's first steps amplify a gradient's rounding into ±lr).
fn adam_steps(grads: &[f32]) -> Vec<f32> {
    let mut model = Model::<f32>::new(cfg(), 0.1, 3).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
    opt.update(&mut model.params, grads, 1e-2);
    opt.update(&mut model.params, grads, 1e-2);
    model.params
}

/// Logits of a prefill and decode steps with `dtype` weights (f16 KV for q8_0).
fn decode(dtype: DType) -> Vec<f32> {
    let c = cfg();
    let mut model = Model::<f32>::new(c.clone(), 0.3, 5).unwrap();
    model.quantize(dtype).unwrap();
    let kv = if dtype == DType::Q8_0 { DType::F16 } else { DType::F32 };
    let mut cache = KvCache::<f32>::with_dtype(&c, 2, 40, kv).unwrap();
    let mut logits = Vec::new();
    let mut all = Vec::new();
    let prompt = tokens(7, 3);
    model
        .forward_cached(&mut cache, &[SeqChunk { slot: 0, tokens: &prompt }], LogitsFor::All, &mut logits)
        .unwrap();
    all.extend_from_slice(&logits);
    for i in 0..20u32 {
        let (a, b) = ([i % 300], [(i * 11 + 4) % 300]);
        let chunks = [SeqChunk { slot: 0, tokens: &a }, SeqChunk { slot: 1, tokens: &b }];
        model.forward_cached(&mut cache, &chunks, LogitsFor::Last, &mut logits).unwrap();
        all.extend_from_slice(&logits);
    }
    all
}

fn assert_close(what: &str, path: KernelPath, got: &[f32], want: &[f32], budget: f64) {
    assert_eq!(got.len(), want.len());
    if !<Portable as Isa>::FUSED {
        let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
        let worst = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).abs()).fold(0.0, f64::max);
        eprintln!("{path} {what}: worst difference {:.2e} of the RMS", worst / rms);
        assert!(worst <= budget * rms, "{path} {what}: worst difference {worst:e}, RMS {rms:e}");
    } else {
        assert_eq!(got, want, "{path} {what}");
    }
}

#[test]
fn every_supported_path_agrees_with_the_portable_one() {
    Kernels::force(KernelPath::Portable).unwrap();
    let (loss, grads) = train_step();
    let params = adam_steps(&grads);
    let decoded: Vec<(DType, Vec<f32>)> = DType::ALL.into_iter().map(|d| (d, decode(d))).collect();
    let others: Vec<KernelPath> = KernelPath::supported().into_iter().filter(|&p| p != KernelPath::Portable).collect();
    eprintln!("paths compared with portable: {others:?}");
    for path in others {
        assert_eq!(Kernels::force(path).unwrap().path(), path);
        assert_eq!(Kernels::active().path(), path);
        let (l, g) = train_step();
        assert_close("loss", path, &[l as f32], &[loss as f32], 1e-4);
        assert_close("gradients", path, &g, &grads, 1e-4);
        assert_eq!(
            adam_steps(&grads),
            params,
            "{path}: AdamW is elementwise, the same bits on every path"
        );
        for (dtype, want) in &decoded {
            let budget = if *dtype == DType::Q8_0 { 2e-3 } else { 1e-4 };
            assert_close(&format!("{dtype} logits"), path, &decode(*dtype), want, budget);
        }
    }
}
