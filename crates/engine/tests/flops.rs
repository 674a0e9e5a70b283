//! The FLOP accounting is exact: the analytic count of what a training step
//! executes equals the engine's own counter of multiply-adds, and the model
//! FLOPs (the MFU convention) differ from it only by attention's block
//! granularity and recomputation. Alone in its test binary so no other test
//! moves the process-wide counter.

use ferrogpt_engine::matmul::flops_executed;
use ferrogpt_engine::{Activations, AttnMask, Input, Model, ModelConfig};

#[test]
fn executed_flops_match_the_formula_exactly() {
    let shapes = [
        (
            ModelConfig {
                vocab_size: 64,
                d_model: 32,
                n_layers: 2,
                n_heads: 4,
                n_kv_heads: 2,
                ffn_hidden: 48,
                max_seq_len: 200,
                ..ModelConfig::reference()
            },
            2,
            150,
        ),
        (
            ModelConfig {
                vocab_size: 50,
                d_model: 24,
                n_layers: 3,
                n_heads: 2,
                n_kv_heads: 2,
                ffn_hidden: 64,
                max_seq_len: 64,
                ..ModelConfig::reference()
            },
            3,
            64,
        ),
    ];
    for (cfg, batch, seq) in shapes {
        let mut model = Model::<f32>::new(cfg.clone(), 0.02, 1).unwrap();
        let mut acts = Activations::new(&cfg, batch, seq).unwrap();
        let toks: Vec<u32> = (0..batch * seq).map(|i| (i % cfg.vocab_size) as u32).collect();
        let before = flops_executed();
        model
            .forward_backward(&mut acts, Input::Tokens(&toks), &toks, &AttnMask::causal(seq), 1.0)
            .unwrap();
        let executed = (flops_executed() - before) as f64;
        assert_eq!(executed, cfg.executed_train_flops(batch, seq), "{cfg:?}");
        // Model FLOPs count (seq+1)/2 keys per query and no recomputation: below what runs.
        let model_flops = cfg.train_flops_per_token(seq) * (batch * seq) as f64;
        assert!(
            model_flops < executed && model_flops > 0.8 * executed,
            "{model_flops} vs {executed}"
        );
    }
}
