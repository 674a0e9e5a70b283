//! Byte-level BPE tokenizer for ferrogpt.
//!
//! This crate owns training (through the `tokenizers` crate), the `tokenizer.json` file format,
//! encoding/decoding, the reserved special tokens and streaming decode. It must not know about
//! models, data shards or training loops: everything else talks to text only through
//! [`Tokenizer`].
//!
//! Invariants every [`Tokenizer`] upholds (checked when a file is loaded):
//! - the special tokens of [`SPECIAL_TOKENS`] have ids `0..=6` in that order;
//! - all 256 byte tokens are present, so any UTF-8 text encodes and decodes back exactly.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, ModelWrapper, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
};

/// The reserved special tokens; their ids are their positions here.
pub const SPECIAL_TOKENS: [&str; 7] = [
    "<|bos|>",
    "<|end|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|image|>",
    "<|pad|>",
];

/// Number of byte tokens every tokenizer carries.
const BYTE_TOKENS: usize = 256;

/// A reserved special token (see [`SPECIAL_TOKENS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    Bos,
    End,
    System,
    User,
    Assistant,
    Image,
    Pad,
}

impl Special {
    /// All specials in id order.
    pub const ALL: [Special; 7] = [
        Special::Bos,
        Special::End,
        Special::System,
        Special::User,
        Special::Assistant,
        Special::Image,
        Special::Pad,
    ];

    /// The token id, identical for every ferrogpt tokenizer.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The token's text, e.g. `<|end|>`.
    pub fn as_str(self) -> &'static str {
        SPECIAL_TOKENS[self as usize]
    }
}

/// Errors from training, loading or saving a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write tokenizer file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("tokenizer file {path} is not a valid tokenizer: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
    #[error("vocab size {requested} is too small: need at least {minimum} (7 specials + 256 bytes)")]
    VocabTooSmall { requested: usize, minimum: usize },
    #[error("vocab size {0} is too large: ids must fit in u32")]
    VocabTooLarge(usize),
    #[error("tokenizer training failed: {0}")]
    Training(String),
}

/// A trained byte-level BPE tokenizer (a `tokenizers::Tokenizer` plus fast lookup tables).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Canonical JSON (compact serialization); what `save` writes and `fingerprint` hashes.
    json: String,
    /// Raw bytes of every id; specials hold their UTF-8 string.
    bytes: Vec<Vec<u8>>,
    /// Id of the single-byte token for each byte value.
    byte_ids: [u32; BYTE_TOKENS],
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish_non_exhaustive()
    }
}

/// The pre-tokenizer: digits split one by one (so numbers tokenize uniformly, which helps
/// arithmetic), then GPT-2 style byte-level splitting.
fn pre_tokenizer() -> PreTokenizerWrapper {
    PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
    ]))
}

/// GPT-2's reversible byte <-> printable char map; returns char -> byte.
fn char_to_byte() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::with_capacity(BYTE_TOKENS);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            shifted += 1;
            // 256 + n stays in the Latin Extended range, always a valid char.
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

impl Tokenizer {
    /// Trains a byte-level BPE with `vocab_size` ids in total (specials and the 256 byte
    /// tokens included).
    pub fn train<I>(texts: I, vocab_size: usize) -> Result<Tokenizer, TokenizerError>
    where
        I: Iterator<Item = String> + Send,
    {
        let minimum = SPECIAL_TOKENS.len() + BYTE_TOKENS;
        if vocab_size < minimum {
            return Err(TokenizerError::VocabTooSmall {
                requested: vocab_size,
                minimum,
            });
        }
        if u32::try_from(vocab_size).is_err() {
            return Err(TokenizerError::VocabTooLarge(vocab_size));
        }
        let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            // Long tokens are rare and waste vocab on boilerplate; 16 chars covers real words.
            .max_token_length(Some(16))
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(pre_tokenizer()));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        inner
            .train(&mut trainer, texts)
            .map_err(|e| TokenizerError::Training(e.to_string()))?;
        let json = inner
            .to_string(false)
            .map_err(|e| TokenizerError::Training(format!("cannot serialize: {e}")))?;
        Self::from_bytes(json.as_bytes()).map_err(|e| TokenizerError::Training(e.to_string()))
    }

    /// Loads `tokenizer.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let data = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&data).map_err(|e| match e {
            TokenizerError::InvalidFile { reason, .. } => TokenizerError::InvalidFile {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parses tokenizer JSON and checks the ferrogpt invariants (specials, byte tokens).
    pub fn from_bytes(json: &[u8]) -> Result<Tokenizer, TokenizerError> {
        let invalid = |reason: String| TokenizerError::InvalidFile {
            path: PathBuf::from("<memory>"),
            reason,
        };
        let text = std::str::from_utf8(json).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
        // `tokenizers` panics ("Helper") on a syntax error inside a component such as
        // `decoder` instead of returning it, so the syntax is checked here first.
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let inner = tokenizers::Tokenizer::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let ModelWrapper::BPE(bpe) = inner.get_model() else {
            return Err(invalid("model is not BPE".into()));
        };
        if inner.get_pre_tokenizer().is_none() {
            return Err(invalid("missing pre_tokenizer".into()));
        }
        let vocab = bpe.get_vocab();
        let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if size != vocab.len() {
            return Err(invalid(format!(
                "vocab ids are not contiguous: {} tokens but largest id is {}",
                vocab.len(),
                size.saturating_sub(1)
            )));
        }
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            if vocab.get(*s) != Some(&(i as u32)) {
                return Err(invalid(format!("special token {s} must have id {i}")));
            }
        }
        let c2b = char_to_byte();
        let mut bytes = vec![Vec::new(); size];
        for (token, &id) in &vocab {
            let slot = &mut bytes[id as usize];
            if (id as usize) < SPECIAL_TOKENS.len() {
                slot.extend_from_slice(token.as_bytes());
                continue;
            }
            for c in token.chars() {
                let b = c2b
                    .get(&c)
                    .ok_or_else(|| invalid(format!("token {token:?} (id {id}) is not byte-level encoded")))?;
                slot.push(*b);
            }
        }
        let mut byte_ids = [0u32; BYTE_TOKENS];
        for (c, &b) in &c2b {
            let id = vocab
                .get(c.to_string().as_str())
                .ok_or_else(|| invalid(format!("byte token {c:?} is missing from the vocab")))?;
            byte_ids[b as usize] = *id;
        }
        let json = inner.to_string(false).map_err(|e| invalid(format!("cannot serialize: {e}")))?;
        Ok(Tokenizer {
            inner,
            json,
            bytes,
            byte_ids,
        })
    }

    /// The canonical JSON form (what [`Tokenizer::save`] writes).
    pub fn to_json(&self) -> String {
        self.json.clone()
    }

    /// Writes `tokenizer.json` (creating parent folders).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let write_err = |source| TokenizerError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        std::fs::write(path, &self.json).map_err(write_err)
    }

    /// Number of ids (specials included).
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Encodes plain text: special-token strings inside `text` are ordinary characters.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_plain_into(text, &mut ids);
        ids
    }

    /// Encodes text in which special-token strings (e.g. from a chat template) become their ids.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut rest = text;
        while let Some((pos, special)) = find_special(rest) {
            self.encode_plain_into(&rest[..pos], &mut ids);
            ids.push(special.id());
            rest = &rest[pos + special.as_str().len()..];
        }
        self.encode_plain_into(rest, &mut ids);
        ids
    }

    fn encode_plain_into(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        if self.try_encode_plain(text, ids).is_err() {
            // Only a regex backtracking limit on pathological input can get here; one token per
            // byte still round-trips exactly, so the text is never lost.
            ids.extend(text.bytes().map(|b| self.byte_ids[b as usize]));
        }
    }

    fn try_encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> tokenizers::Result<()> {
        let mut pre = PreTokenizedString::from(text);
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre)?;
        }
        let model = self.inner.get_model();
        pre.tokenize(|n| model.tokenize(n.get()))?;
        let start = ids.len();
        for (_, _, tokens) in pre.get_splits(OffsetReferential::Original, OffsetType::None) {
            if let Some(tokens) = tokens {
                ids.extend(tokens.iter().map(|t| t.id));
            }
        }
        // A vocab without a byte token would silently drop text; validation forbids that,
        // and this guard keeps the round-trip promise even so.
        let produced: usize = ids[start..].iter().map(|&id| self.token_byte_len(id)).sum();
        if produced != text.len() {
            ids.truncate(start);
            return Err("tokenization dropped bytes".into());
        }
        Ok(())
    }

    /// Decodes ids to text; specials appear as their strings, invalid UTF-8 as U+FFFD.
    /// Ids outside the vocab are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id));
        }
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Raw bytes of a token (a special's UTF-8 string; empty for an id outside the vocab).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Bytes of corpus text the token stands for: 0 for specials (they are markup, not text),
    /// used to turn a loss in nats/token into bits per byte.
    pub fn token_byte_len(&self, id: u32) -> usize {
        if (id as usize) < SPECIAL_TOKENS.len() {
            0
        } else {
            self.token_bytes(id).len()
        }
    }

    /// Whether `id` is one of the reserved special tokens.
    pub fn is_special(&self, id: u32) -> bool {
        (id as usize) < SPECIAL_TOKENS.len()
    }

    /// The id of a special token (fixed: its position in [`SPECIAL_TOKENS`]).
    pub fn special_id(&self, s: Special) -> u32 {
        s.id()
    }

    /// SHA-256 (hex) of the canonical JSON; identifies the tokenizer in manifests.
    pub fn fingerprint(&self) -> String {
        hex(&Sha256::digest(self.json.as_bytes()))
    }
}

/// Earliest special-token string in `text` (ties impossible: no special is a prefix of another).
fn find_special(text: &str) -> Option<(usize, Special)> {
    let mut search = 0;
    while let Some(off) = text[search..].find("<|") {
        let pos = search + off;
        if let Some(s) = Special::ALL.into_iter().find(|s| text[pos..].starts_with(s.as_str())) {
            return Some((pos, s));
        }
        search = pos + 2;
    }
    None
}

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Turns a stream of token ids into text as soon as complete UTF-8 characters are available
/// (a multi-byte character split across tokens is held back until its last byte arrives).
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tokenizer.token_bytes(id));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe slice: `valid_up_to` bytes are valid UTF-8 by definition.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes bytes still held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_corpus() -> Vec<String> {
        let base = [
            "The quick brown fox jumps over the lazy dog.",
            "Q: 37 + 58 = ?\nA: 95",
            "grep searches for patterns in each file.",
            "Ünïcödé text — with dashes, émojis 🦀 and 日本語.",
            "the the the then there these those",
        ];
        (0..40).map(|i| base[i % base.len()].to_string()).collect()
    }

    fn trained(vocab: usize) -> Tokenizer {
        Tokenizer::train(sample_corpus().into_iter(), vocab).unwrap()
    }

    #[test]
    fn specials_have_fixed_ids_and_bytes_are_complete() {
        let tok = trained(300);
        assert!(tok.vocab_size() > 263 && tok.vocab_size() <= 300);
        for s in Special::ALL {
            assert_eq!(
                tok.special_id(s),
                SPECIAL_TOKENS.iter().position(|x| *x == s.as_str()).unwrap() as u32
            );
            assert_eq!(tok.token_bytes(s.id()), s.as_str().as_bytes());
            assert_eq!(tok.token_byte_len(s.id()), 0);
        }
        // Training learned merges beyond the byte alphabet.
        assert!(tok.encode("the quick brown fox").len() < "the quick brown fox".len());
    }

    #[test]
    fn specials_atomic_only_with_special_encoding() {
        let tok = trained(320);
        let text = "<|user|>hi<|end|><|assistant|>";
        let ids = tok.encode_with_special(text);
        assert_eq!(ids[0], Special::User.id());
        assert_eq!(*ids.last().unwrap(), Special::Assistant.id());
        assert!(ids.contains(&Special::End.id()));
        assert_eq!(tok.decode(&ids), text);

        let plain = tok.encode(text);
        assert!(plain.iter().all(|&id| !tok.is_special(id)));
        assert_eq!(tok.decode(&plain), text);
        // Near-misses stay text.
        let ids = tok.encode_with_special("<|nope|> <| <|end|");
        assert!(ids.iter().all(|&id| !tok.is_special(id)));
    }

    #[test]
    fn save_load_round_trip() {
        let tok = trained(300);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tokenizer.json");
        tok.save(&path).unwrap();
        let back = Tokenizer::from_file(&path).unwrap();
        assert_eq!(back.fingerprint(), tok.fingerprint());
        assert_eq!(back.vocab_size(), tok.vocab_size());
        let text = "Q: 12 * 34 = ?\nA: 408 — ok";
        assert_eq!(back.encode(text), tok.encode(text));
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = Tokenizer::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");
        let garbled = dir.path().join("garbled.json");
        std::fs::write(&garbled, b"{\"model\": 3}").unwrap();
        let err = Tokenizer::from_file(&garbled).unwrap_err().to_string();
        assert!(err.contains("garbled.json"), "{err}");
    }

    #[test]
    fn malformed_json_inside_a_component_is_an_error() {
        // Found by fuzz/ (model_folder): a syntax error inside the `decoder` object made the
        // `tokenizers` crate panic ("Helper") instead of returning an error.
        let err = Tokenizer::from_bytes(br#"{"decoder": {"type": "ByteLevel" 1}}"#).unwrap_err();
        assert!(matches!(err, TokenizerError::InvalidFile { .. }), "{err}");
    }

    #[test]
    fn training_is_deterministic() {
        // The trainer counts words in hash maps with random state; merges must not depend on it.
        let a = trained(330);
        let b = trained(330);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn too_small_vocab_is_rejected() {
        let err = Tokenizer::train(sample_corpus().into_iter(), 100).unwrap_err();
        assert!(matches!(err, TokenizerError::VocabTooSmall { .. }));
    }

    #[test]
    fn stream_decoder_handles_split_characters() {
        let tok = trained(263); // bytes only: every multi-byte char spans several tokens
        let text = "a🦀é日";
        let ids = tok.encode(text);
        assert_eq!(ids.len(), text.len());
        let mut dec = StreamDecoder::new();
        let pieces: Vec<String> = ids.iter().map(|&id| dec.push(&tok, id)).collect();
        assert_eq!(pieces[0], "a");
        // The crab's first three bytes yield nothing; the fourth yields the whole char.
        assert_eq!(&pieces[1..4], &["", "", ""]);
        assert_eq!(pieces[4], "🦀");
        assert_eq!(pieces.concat(), text);
        assert_eq!(dec.finish(), "");

        // A dangling lead byte is flushed as U+FFFD at the end.
        let crab_first = ids[1];
        assert_eq!(dec.push(&tok, crab_first), "");
        assert_eq!(dec.finish(), "\u{FFFD}");
    }

    #[test]
    fn token_byte_lengths_sum_to_text_bytes() {
        let tok = trained(320);
        let text = "Ünïcödé 🦀 text with 123 numbers";
        let ids = tok.encode(text);
        let total: usize = ids.iter().map(|&id| tok.token_byte_len(id)).sum();
        assert_eq!(total, text.len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_utf8_round_trips(text in "\\PC*|[\\s\\S]{0,64}") {
            let tok = shared();
            proptest::prop_assert_eq!(tok.decode(&tok.encode(&text)), text.clone());
            proptest::prop_assert_eq!(tok.decode(&tok.encode_with_special(&text)), text);
        }
    }

    fn shared() -> &'static Tokenizer {
        static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        TOK.get_or_init(|| trained(320))
    }
}
