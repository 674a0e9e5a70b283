//! Loading a model folder whose files come from the fuzzer: an error for anything invalid,
//! never a panic, an abort or an allocation sized by what a header claims rather than what
//! the files hold; and a model that loads can run.
//!
//! Input: three parts (see [`crate::split_parts`]): `config.json`, `model.safetensors`,
//! `tokenizer.json`. An empty tokenizer part stands for the valid byte-level tokenizer, so
//! most inputs get past it to the config and weights.

use std::path::Path;

use ferrogpt_infer::LocalModel;
use ferrogpt_tokenizer::Special;

use crate::fixtures::byte_tokenizer_json;
use crate::{split_parts, write_scratch};

pub fn run(data: &[u8], scratch: &Path) {
    let parts = split_parts(data, 3);
    let dir = scratch.join("model");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    write_scratch(&dir.join("config.json"), parts[0]);
    write_scratch(&dir.join("model.safetensors"), parts[1]);
    let tokenizer = if parts[2].is_empty() {
        byte_tokenizer_json().as_bytes()
    } else {
        parts[2]
    };
    write_scratch(&dir.join("tokenizer.json"), tokenizer);
    let Ok(model) = LocalModel::load(&dir) else {
        return;
    };
    assert!(model.tokenizer().vocab_size() <= model.config().vocab_size);
    // Two tokens through the whole network, whatever the weights (NaN and infinities included).
    if model.context_length() >= 2 {
        let tokens = [Special::Bos.id(), Special::End.id()];
        let scored = model
            .token_logprobs(&tokens, 1)
            .unwrap_or_else(|e| panic!("a model that loads must run: {e}"));
        assert_eq!(scored.len(), tokens.len());
    }
}
