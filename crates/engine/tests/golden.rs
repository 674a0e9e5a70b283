//! The engine against PyTorch: `tools/make_golden.py` ran an independent
//! PyTorch implementation of the same architecture on fixed parameters and
//! tokens and stored logits, loss and all gradients; we load its parameters,
//! run our f32 forward/backward, and compare.
//!
//! Tolerances (f32 on both sides, different summation orders and our
//! polynomial exp): logits and loss to 2e-5 absolute (values are O(1));
//! gradients to 1e-4 relative to each tensor's largest entry (plus 1e-6).

use ferrogpt_engine::io::load_tensors;
use ferrogpt_engine::{Activations, AttnMask, Input, Model, ModelConfig, IGNORE};
use std::path::Path;

#[test]
fn matches_pytorch_golden_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden.safetensors");
    let t = load_tensors(&path).expect("golden file (regenerate with tools/make_golden.py)");
    let cfg = ModelConfig {
        vocab_size: 48,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden: 40,
        max_seq_len: 16,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    };
    let (batch, seq) = (2, 12);
    let layout = ferrogpt_engine::params::ParamLayout::new(&cfg);
    let mut params = vec![0.0f32; layout.total];
    for spec in &layout.tensors {
        let (shape, data) = &t[&format!("param/{}", spec.name)];
        assert_eq!(shape, &spec.shape, "{}", spec.name);
        params[spec.range()].copy_from_slice(data);
    }
    let tokens: Vec<u32> = t["tokens"].1.iter().map(|&v| v as u32).collect();
    let targets: Vec<u32> = t["targets"].1.iter().map(|&v| if v < 0.0 { IGNORE } else { v as u32 }).collect();
    let mut model = Model::<f32>::from_params(cfg.clone(), params).unwrap();
    let mut acts = Activations::new(&cfg, batch, seq).unwrap();
    let mask = AttnMask::causal(seq);

    model.forward_logits(&mut acts, Input::Tokens(&tokens), &mask).unwrap();
    let want_logits = &t["logits"].1;
    let worst = acts
        .logits
        .iter()
        .zip(want_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 2e-5, "logits differ by up to {worst}");

    let loss = model
        .forward_backward(&mut acts, Input::Tokens(&tokens), &targets, &mask, 1.0)
        .unwrap();
    let want_loss = t["loss"].1[0] as f64;
    assert!((loss - want_loss).abs() < 2e-5, "loss {loss} vs {want_loss}");

    for spec in &layout.tensors {
        let want = &t[&format!("grad/{}", spec.name)].1;
        let got = &model.grads[spec.range()];
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale + 1e-6,
            "{}: gradient differs by {worst} (scale {scale})",
            spec.name
        );
    }
}
