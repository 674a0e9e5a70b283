//! JSON mode (`response_format: json_object`): whatever the model picks among the tokens the
//! constraint allows, the output is one complete JSON object within the token budget.
//!
//! Input: the first byte sets the budget (1 to 48 tokens); each following pair of bytes picks
//! one of the tokens the mask leaves (when the input runs out, the lowest allowed id: a
//! "model" that prefers whitespace and short tokens). The same bytes are also fed to the byte
//! grammar as a document and its verdict compared with serde_json's.

use std::sync::{Arc, OnceLock};

use ferrogpt_infer::json_mode::{JsonConstraint, JsonGrammar};
use ferrogpt_infer::TokenConstraint;
use serde::de::IgnoredAny;

/// Special tokens decode to no bytes, as the server builds its table; `<|end|>` is id 1.
const SPECIALS: usize = 7;
const EOS: u32 = 1;
pub const MAX_BUDGET: usize = 48;

/// Single-byte tokens: every byte JSON's grammar treats differently (structure, whitespace,
/// number and literal characters, escapes, hex digits, control characters, DEL) and UTF-8
/// lead and continuation bytes at the edges of the ranges RFC 3629 allows, so each
/// continuation range holds at least one of them. Not all 256: the mask tries every token at
/// every step, and fewer bytes with the same distinctions make each execution cheaper.
const BYTES: &[u8] = b"{}[]:,\"\\ \t\n\r0123456789+-.eEabcdfABCDFlnrstu/x~!#\x00\x01\x1f\x7f\
\x80\x8f\x90\x9f\xa0\xbf\xc0\xc1\xc2\xdf\xe0\xed\xee\xf0\xf4\xf5\xff";

/// Multi-byte tokens like those a BPE learns on JSON-ish text: several bytes of structure at
/// once, whole literals, a split `\u` escape, multi-byte UTF-8 characters, a closing `}}`.
const MERGED: [&str; 16] = [
    "{}", "{\"", "\":", "\": ", "\",", ", \"", "\"}", "}}", "]}", "true", "null", "1.5e", "-0", "\\u00", "é", "🦀",
];

fn vocab() -> &'static Arc<Vec<Vec<u8>>> {
    static VOCAB: OnceLock<Arc<Vec<Vec<u8>>>> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let mut v: Vec<Vec<u8>> = vec![Vec::new(); SPECIALS];
        v.extend(BYTES.iter().map(|&b| vec![b]));
        v.extend(MERGED.iter().map(|t| t.as_bytes().to_vec()));
        Arc::new(v)
    })
}

pub fn run(data: &[u8], _scratch: &std::path::Path) {
    let (budget, choices) = match data.split_first() {
        Some((&b, rest)) => (1 + b as usize % MAX_BUDGET, rest),
        None => (1, &[][..]),
    };
    let output = drive_constraint(budget, choices);
    check_complete_object(&output);
    check_grammar_against_serde(choices);
}

/// Generates under the constraint; returns the bytes produced.
fn drive_constraint(budget: usize, choices: &[u8]) -> Vec<u8> {
    let vocab = vocab();
    let mut constraint = JsonConstraint::new(vocab.clone(), EOS, budget);
    let mut picks = choices.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]]) as usize);
    let mut out = Vec::new();
    let mut logits = vec![0.0f32; vocab.len()];
    for step in 0..budget {
        logits.fill(0.0);
        constraint.mask_logits(&mut logits);
        let allowed: Vec<u32> = (0..vocab.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
        assert!(!allowed.is_empty(), "step {step}: the mask leaves nothing to sample");
        if allowed.contains(&EOS) {
            assert!(
                constraint.is_complete(),
                "step {step}: <|end|> allowed before the object is complete"
            );
        }
        let pick = match picks.next() {
            Some(p) => allowed[p % allowed.len()],
            None => allowed[0],
        };
        if pick == EOS {
            break;
        }
        constraint.accept(pick);
        out.extend_from_slice(&vocab[pick as usize]);
    }
    assert!(
        constraint.is_complete(),
        "budget {budget}: generation ended with an incomplete object: {:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// `bytes` is one JSON object (RFC 8259; serde_json's syntax check without decoding, so a
/// lone `\uD800` escape counts as the valid JSON it is).
fn is_json_object(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
        && serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
        && bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn check_complete_object(output: &[u8]) {
    assert!(is_json_object(output), "not a JSON object: {:?}", String::from_utf8_lossy(output));
}

fn longest_whitespace_run(bytes: &[u8]) -> usize {
    bytes
        .split(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'))
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// The grammar accepts a complete document only if it is a JSON object; and it accepts every
/// JSON object except those it refuses on purpose: runs of more than 16 whitespace bytes (so
/// a model cannot stall), DEL inside strings, whitespace after the object.
fn check_grammar_against_serde(doc: &[u8]) {
    // serde_json stops at 128 levels of nesting; the grammar has no limit.
    if doc.iter().filter(|&&b| b == b'[' || b == b'{').count() > 100 {
        return;
    }
    let mut grammar = JsonGrammar::new();
    let accepted = grammar.feed_all(doc) && grammar.is_complete();
    let valid = is_json_object(doc);
    if accepted {
        assert!(valid, "the grammar accepted a non-object: {:?}", String::from_utf8_lossy(doc));
    }
    let refused_on_purpose = longest_whitespace_run(doc) > 16 || doc.contains(&0x7F) || doc.last().is_some_and(|b| b.is_ascii_whitespace());
    if valid && !refused_on_purpose {
        assert!(accepted, "the grammar refused a JSON object: {:?}", String::from_utf8_lossy(doc));
    }
}
