//! What the harnesses hold fixed: tokenizers trained once per process (training is
//! deterministic, so every run and the committed seeds agree) and a tiny model shape.

use std::sync::OnceLock;

use ferrogpt_engine::ModelConfig;
use ferrogpt_tokenizer::Tokenizer;

/// Text with the features merges form around: words, spaces, digits, punctuation, several
/// scripts and emoji, and the special-token spellings as plain text.
const TRAINING_TEXT: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.",
    "Q: 37 + 58 = ?\nA: 95\nQ: 12 * 34 = ?\nA: 408\n",
    "fn main() {\n    println!(\"hello, world\");\n}\n",
    "Ünïcödé — émojis 🦀🚀 and 日本語のテキスト, Ελληνικά, русский.",
    "{\"role\": \"user\", \"content\": \"<|end|> is just text here\"}",
    "   indented\tand\ttabbed\r\nlines   with   runs of spaces\n\n\n",
];

/// A byte-level BPE with merges (vocabulary 420): multi-byte tokens, so encoding, streaming
/// and the chat template see tokens that span character boundaries.
pub fn merged_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let corpus = (0..20).flat_map(|_| TRAINING_TEXT.iter().map(|s| s.to_string()));
        Tokenizer::train(corpus, 420).unwrap_or_else(|e| panic!("training the fixture tokenizer failed: {e}"))
    })
}

/// `tokenizer.json` of the smallest valid tokenizer: the 7 specials and 256 byte tokens.
pub fn byte_tokenizer_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let minimum = ferrogpt_tokenizer::SPECIAL_TOKENS.len() + 256;
        Tokenizer::train(TRAINING_TEXT.iter().map(|s| s.to_string()), minimum)
            .unwrap_or_else(|e| panic!("training the byte tokenizer failed: {e}"))
            .to_json()
    })
}

/// The vocabulary of [`byte_tokenizer_json`].
pub const BYTE_VOCAB: usize = 263;

/// A model shape small enough that a whole model file is a few kilobytes: vocabulary 263
/// (the byte tokenizer's), width 8, two query heads sharing one key/value head, one layer.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        vocab_size: BYTE_VOCAB,
        d_model: 8,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 8,
        max_seq_len: 16,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        num_labels: None,
    }
}
