//! The small model shape the engine's integration tests share.

use ferrogpt_engine::ModelConfig;

/// Four heads sharing two KV heads, and an MLP width of 176 (5.5 q8_0 blocks, so quantized
/// tests exercise the f16 fallback of the down projection).
pub fn small_config(max_seq_len: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: 300,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden: 176,
        max_seq_len,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
        num_labels: None,
    }
}
