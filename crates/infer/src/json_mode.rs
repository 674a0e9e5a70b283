//! `response_format: {"type": "json_object"}`: a byte-level JSON grammar and a logits mask built
//! on it. A token is allowed only if all of its bytes keep the output a valid prefix of one
//! JSON object *and* the object can still be closed within the remaining token budget, so the
//! output is complete, valid JSON even when `max_tokens` cuts generation short.

use std::sync::Arc;

use crate::sample::TokenConstraint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    /// Hex digits of a `\uXXXX` escape still to come.
    Unicode(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level object (json_object mode requires an object).
    Start,
    /// A value is required (after `:` or `,` in an array).
    Value,
    /// Just after `[`: a value or `]`.
    ArrayFirst,
    /// Just after `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key is required.
    Key,
    Str {
        key: bool,
        esc: Esc,
    },
    Colon,
    AfterValue,
    Number(Num),
    Literal {
        word: &'static [u8],
        pos: u8,
    },
    Done,
}

/// Incremental JSON syntax checker over bytes (UTF-8 checked inside strings).
#[derive(Debug, Clone)]
pub struct JsonGrammar {
    stack: Vec<Container>,
    state: State,
    /// Consecutive whitespace bytes, capped so the model cannot stall in whitespace.
    ws_run: u8,
    /// Continuation bytes still due in a multi-byte UTF-8 character, and the allowed range of
    /// the next one (narrower after some lead bytes, to reject overlong forms and surrogates).
    utf8_left: u8,
    utf8_lo: u8,
    utf8_hi: u8,
}

const MAX_WS_RUN: u8 = 16;

impl Default for JsonGrammar {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonGrammar {
    pub fn new() -> Self {
        Self {
            stack: Vec::new(),
            state: State::Start,
            ws_run: 0,
            utf8_left: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xBF,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still needed, at the least, to finish the object from here.
    pub fn min_close_len(&self) -> usize {
        let local = match self.state {
            State::Start => 2,
            State::Value => 1,
            State::ArrayFirst | State::ObjectFirst | State::AfterValue | State::Done => 0,
            State::Key => 4,
            State::Colon => 2,
            State::Str { key, esc } => {
                let esc_len = match esc {
                    Esc::None => self.utf8_left as usize,
                    Esc::Backslash => 1,
                    Esc::Unicode(k) => k as usize,
                };
                esc_len + 1 + if key { 2 } else { 0 }
            }
            State::Number(n) => usize::from(!n.complete()),
            State::Literal { word, pos } => word.len() - pos as usize,
        };
        local + self.stack.len()
    }

    fn value_done(&mut self) {
        self.state = if self.stack.is_empty() { State::Done } else { State::AfterValue };
    }

    fn close(&mut self, c: Container) -> bool {
        if self.stack.last() == Some(&c) {
            self.stack.pop();
            self.value_done();
            true
        } else {
            false
        }
    }

    fn start_value(&mut self, b: u8) -> bool {
        match b {
            b'{' => {
                self.stack.push(Container::Object);
                self.state = State::ObjectFirst;
            }
            b'[' => {
                self.stack.push(Container::Array);
                self.state = State::ArrayFirst;
            }
            b'"' => {
                self.state = State::Str {
                    key: false,
                    esc: Esc::None,
                }
            }
            b'-' => self.state = State::Number(Num::Minus),
            b'0' => self.state = State::Number(Num::Zero),
            b'1'..=b'9' => self.state = State::Number(Num::Int),
            b't' => self.state = State::Literal { word: b"true", pos: 1 },
            b'f' => self.state = State::Literal { word: b"false", pos: 1 },
            b'n' => self.state = State::Literal { word: b"null", pos: 1 },
            _ => return false,
        }
        true
    }

    fn after_value(&mut self, b: u8) -> bool {
        match (b, self.stack.last()) {
            (b',', Some(Container::Object)) => {
                self.state = State::Key;
                true
            }
            (b',', Some(Container::Array)) => {
                self.state = State::Value;
                true
            }
            (b'}', _) => self.close(Container::Object),
            (b']', _) => self.close(Container::Array),
            _ => false,
        }
    }

    /// Feeds one byte; `false` (state unchanged in meaning) if it cannot continue valid JSON.
    pub fn feed(&mut self, b: u8) -> bool {
        let is_ws = matches!(b, b' ' | b'\n' | b'\t' | b'\r');
        let ws_ok = matches!(
            self.state,
            State::Start | State::Value | State::ArrayFirst | State::ObjectFirst | State::Key | State::Colon | State::AfterValue
        ) || matches!(self.state, State::Number(n) if n.complete());
        if is_ws && ws_ok {
            if self.ws_run >= MAX_WS_RUN {
                return false;
            }
            self.ws_run += 1;
            if let State::Number(_) = self.state {
                self.value_done();
            }
            return true;
        }
        if !matches!(self.state, State::Str { .. }) {
            self.ws_run = 0;
        }
        match self.state {
            State::Start => {
                if b == b'{' {
                    self.stack.push(Container::Object);
                    self.state = State::ObjectFirst;
                    true
                } else {
                    false
                }
            }
            State::Value => self.start_value(b),
            State::ArrayFirst => {
                if b == b']' {
                    self.close(Container::Array)
                } else {
                    self.start_value(b)
                }
            }
            State::ObjectFirst | State::Key => match b {
                b'"' => {
                    self.state = State::Str { key: true, esc: Esc::None };
                    true
                }
                b'}' if self.state == State::ObjectFirst => self.close(Container::Object),
                _ => false,
            },
            State::Colon => {
                if b == b':' {
                    self.state = State::Value;
                    true
                } else {
                    false
                }
            }
            State::AfterValue => self.after_value(b),
            State::Str { key, esc } => self.feed_string(key, esc, b),
            State::Number(n) => {
                let next = match (n, b) {
                    (Num::Minus, b'0') => Some(Num::Zero),
                    (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                    (Num::Int, b'0'..=b'9') => Some(Num::Int),
                    (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                    (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::E),
                    (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                    (Num::E, b'+' | b'-') => Some(Num::ESign),
                    (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Some(Num::Exp),
                    _ => None,
                };
                match next {
                    Some(n) => {
                        self.state = State::Number(n);
                        true
                    }
                    None if n.complete() => {
                        // The byte ends the number and must then fit after a value.
                        let saved = self.state;
                        self.value_done();
                        if self.after_value(b) {
                            true
                        } else {
                            self.state = saved;
                            false
                        }
                    }
                    None => false,
                }
            }
            State::Literal { word, pos } => {
                if word[pos as usize] != b {
                    return false;
                }
                if pos as usize + 1 == word.len() {
                    self.value_done();
                } else {
                    self.state = State::Literal { word, pos: pos + 1 };
                }
                true
            }
            State::Done => false,
        }
    }

    fn feed_string(&mut self, key: bool, esc: Esc, b: u8) -> bool {
        if self.utf8_left > 0 {
            if !(self.utf8_lo..=self.utf8_hi).contains(&b) {
                return false;
            }
            self.utf8_left -= 1;
            self.utf8_lo = 0x80;
            self.utf8_hi = 0xBF;
            return true;
        }
        match esc {
            Esc::Backslash => {
                let next = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Esc::None,
                    b'u' => Esc::Unicode(4),
                    _ => return false,
                };
                self.state = State::Str { key, esc: next };
                true
            }
            Esc::Unicode(k) => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                let next = if k == 1 { Esc::None } else { Esc::Unicode(k - 1) };
                self.state = State::Str { key, esc: next };
                true
            }
            Esc::None => match b {
                b'"' => {
                    if key {
                        self.state = State::Colon;
                    } else {
                        self.value_done();
                    }
                    true
                }
                b'\\' => {
                    self.state = State::Str { key, esc: Esc::Backslash };
                    true
                }
                0x00..=0x1F | 0x7F => false,
                0x20..=0x7E => true,
                // UTF-8 lead bytes with the ranges RFC 3629 allows for the byte after them.
                0xC2..=0xDF => self.begin_utf8(1, 0x80, 0xBF),
                0xE0 => self.begin_utf8(2, 0xA0, 0xBF),
                0xE1..=0xEC | 0xEE..=0xEF => self.begin_utf8(2, 0x80, 0xBF),
                0xED => self.begin_utf8(2, 0x80, 0x9F),
                0xF0 => self.begin_utf8(3, 0x90, 0xBF),
                0xF1..=0xF3 => self.begin_utf8(3, 0x80, 0xBF),
                0xF4 => self.begin_utf8(3, 0x80, 0x8F),
                _ => false,
            },
        }
    }

    fn begin_utf8(&mut self, left: u8, lo: u8, hi: u8) -> bool {
        self.utf8_left = left;
        self.utf8_lo = lo;
        self.utf8_hi = hi;
        true
    }

    /// Feeds a whole token; on failure `self` is left unchanged.
    pub fn feed_all(&mut self, bytes: &[u8]) -> bool {
        let mut next = self.clone();
        for &b in bytes {
            if !next.feed(b) {
                return false;
            }
        }
        *self = next;
        true
    }
}

/// Masks logits so sampling can only produce one valid JSON object, then end-of-text.
#[derive(Debug, Clone)]
pub struct JsonConstraint {
    grammar: JsonGrammar,
    token_bytes: Arc<Vec<Vec<u8>>>,
    eos: u32,
    budget: usize,
    used: usize,
}

impl JsonConstraint {
    /// `token_bytes[id]` = the bytes token `id` decodes to (empty for special tokens);
    /// `budget` = `max_tokens`, the most tokens the sequence may generate.
    pub fn new(token_bytes: Arc<Vec<Vec<u8>>>, eos: u32, budget: usize) -> Self {
        Self {
            grammar: JsonGrammar::new(),
            token_bytes,
            eos,
            budget,
            used: 0,
        }
    }
}

impl TokenConstraint for JsonConstraint {
    fn is_complete(&self) -> bool {
        self.grammar.is_complete()
    }

    /// Sets every token that would break the guarantee to -inf.
    fn mask_logits(&mut self, logits: &mut [f32]) {
        let eos = self.eos as usize;
        if self.grammar.is_complete() {
            for (i, l) in logits.iter_mut().enumerate() {
                if i != eos {
                    *l = f32::NEG_INFINITY;
                }
            }
            return;
        }
        // Tokens left after this one; the object must be closable within them.
        let after = self.budget.saturating_sub(self.used + 1);
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            let ok = match self.token_bytes.get(i) {
                Some(bytes) if !bytes.is_empty() && i != eos => {
                    let mut g = self.grammar.clone();
                    g.feed_all(bytes) && g.min_close_len() <= after
                }
                _ => false,
            };
            if ok {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if !any {
            // A vocabulary without the needed single bytes: ending is the only move left.
            if let Some(l) = logits.get_mut(eos) {
                *l = 0.0;
            }
        }
    }

    fn accept(&mut self, token: u32) {
        self.used += 1;
        if let Some(bytes) = self.token_bytes.get(token as usize) {
            // A token the mask allowed always feeds; anything else leaves the state as it was.
            self.grammar.feed_all(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(s: &str) -> bool {
        let mut g = JsonGrammar::new();
        g.feed_all(s.as_bytes()) && g.is_complete()
    }

    #[test]
    fn grammar_accepts_valid_objects() {
        for s in [
            "{}",
            r#"{"a": 1}"#,
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\u00e9"],"b":{"c":{}}}"#,
            "{\n  \"k\": \"caf\u{e9} \u{1F600}\"\n}",
            r#"{"n":-0.5E2}"#,
        ] {
            assert!(accepts(s), "{s}");
            assert!(serde_json::from_str::<serde_json::Value>(s).is_ok());
        }
    }

    #[test]
    fn grammar_rejects_invalid_text() {
        for s in [
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":tru}"#,
            "{}x",
            r#"{"a":"\x"}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{a:1}"#,
        ] {
            assert!(!accepts(s), "{s}");
        }
        // Overlong and surrogate UTF-8 forms are refused inside strings.
        let mut g = JsonGrammar::new();
        assert!(g.feed_all(b"{\"a\":\""));
        assert!(!g.clone().feed_all(&[0xC0, 0x80]));
        assert!(!g.clone().feed_all(&[0xED, 0xA0, 0x80]));
        assert!(g.feed_all("é".as_bytes()));
    }

    /// A vocabulary of every single byte plus some multi-byte tokens, and a "model" that
    /// always prefers the longest token that keeps talking: the constraint must still end
    /// with a complete object within the budget, for every budget from the minimum up.
    #[test]
    fn constrained_output_is_always_valid_json() {
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for t in ["{\"", "\": ", "hello", " world", "[1, 2", ", \"", "true", "}}", "\\u00"] {
            vocab.push(t.as_bytes().to_vec());
        }
        let eos = vocab.len() as u32;
        vocab.push(Vec::new());
        let vocab = Arc::new(vocab);
        for budget in 3..40 {
            let mut c = JsonConstraint::new(vocab.clone(), eos, budget);
            let mut out = Vec::new();
            let mut step = 0u32;
            loop {
                let mut logits: Vec<f32> = (0..vocab.len())
                    .map(|i| (vocab[i].len() as f32) + ((i as u32 * 7 + step) % 13) as f32 * 0.1)
                    .collect();
                c.mask_logits(&mut logits);
                let best = logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i as u32)
                    .unwrap();
                step += 1;
                if best == eos {
                    break;
                }
                c.accept(best);
                out.extend_from_slice(&vocab[best as usize]);
                // The engine stops at max_tokens; the object must be complete by then.
                if step as usize == budget {
                    break;
                }
            }
            assert!(c.is_complete(), "budget {budget}: {}", String::from_utf8_lossy(&out));
            let text = String::from_utf8(out).unwrap();
            assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap().is_object(), "{text}");
        }
    }
}
