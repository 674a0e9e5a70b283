//! Tokenizer properties over arbitrary input:
//! - the input as text (invalid UTF-8 replaced) encodes and decodes back exactly, with and
//!   without special-token parsing, and plain encoding never yields a special token;
//! - streaming decode of that encoding releases only final text and ends equal to the text;
//! - the input as token ids (little-endian u16, some outside the vocabulary) decodes the same
//!   streamed as in one batch, invalid UTF-8 included.

use ferrogpt_tokenizer::{StreamDecoder, Tokenizer};

use crate::fixtures::merged_tokenizer;

pub fn run(data: &[u8], _scratch: &std::path::Path) {
    let tok = merged_tokenizer();
    let text = String::from_utf8_lossy(data);
    check_text_round_trip(tok, &text);
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])) % (tok.vocab_size() as u32 + 8))
        .collect();
    check_stream_equals_batch(tok, &ids);
}

fn check_text_round_trip(tok: &Tokenizer, text: &str) {
    let ids = tok.encode(text);
    assert!(ids.iter().all(|&id| !tok.is_special(id)), "plain text encoded to a control token");
    assert_eq!(tok.decode(&ids), text, "encode then decode");
    let bytes: usize = ids.iter().map(|&id| tok.token_byte_len(id)).sum();
    assert_eq!(bytes, text.len(), "token byte lengths add up to the text's");
    assert_eq!(tok.decode(&tok.encode_with_special(text)), text, "encode_with_special then decode");

    let mut decoder = StreamDecoder::new();
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&decoder.push(tok, id));
        assert!(text.starts_with(&streamed), "streaming released text that is not final");
    }
    streamed.push_str(&decoder.finish());
    assert_eq!(streamed, text, "streamed decode of the encoding");
}

fn check_stream_equals_batch(tok: &Tokenizer, ids: &[u32]) {
    let mut decoder = StreamDecoder::new();
    let mut streamed: String = ids.iter().map(|&id| decoder.push(tok, id)).collect();
    streamed.push_str(&decoder.finish());
    assert_eq!(streamed, tok.decode(ids), "streaming and batch decode differ for ids {ids:?}");
}
