//! The attention mask is a parameter of the forward pass, given as a key
//! window per query position: query `i` may attend to keys `j` with
//! `lo[i] <= j < hi[i]`. Causal is `[0, i+1)`; an image block `[s, e)` whose
//! patches see each other is `hi = e` for its positions; packed documents are
//! `lo = start of the document`. Windows keep flash attention's block skipping
//! exact and cost O(T) memory instead of O(T²).

use crate::EngineError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnMask {
    seq_len: usize,
    /// `[lo, hi)` per position; `seq_len` entries shared by every sequence of
    /// the batch, or `batch·seq_len` entries, one window list per sequence.
    windows: Vec<[u32; 2]>,
}

impl AttnMask {
    pub fn causal(seq_len: usize) -> Self {
        AttnMask {
            seq_len,
            windows: (0..seq_len).map(|i| [0, i as u32 + 1]).collect(),
        }
    }

    /// Causal, except that positions inside each `[start, end)` span see the
    /// whole span (bidirectional attention within an image block).
    pub fn causal_with_bidirectional_spans(seq_len: usize, spans: &[(usize, usize)]) -> Result<Self, EngineError> {
        let mut m = Self::causal(seq_len);
        for &(s, e) in spans {
            if s >= e || e > seq_len {
                return Err(EngineError::Shape(format!(
                    "bidirectional span [{s}, {e}) is empty or beyond sequence length {seq_len}"
                )));
            }
            for w in &mut m.windows[s..e] {
                w[1] = w[1].max(e as u32);
            }
        }
        Ok(m)
    }

    /// Arbitrary windows, validated: every window must be non-empty and in range.
    pub fn from_windows(seq_len: usize, windows: Vec<[u32; 2]>) -> Result<Self, EngineError> {
        if seq_len == 0 || !windows.len().is_multiple_of(seq_len) {
            return Err(EngineError::Shape(format!(
                "{} mask windows is not a multiple of sequence length {seq_len}",
                windows.len()
            )));
        }
        for (i, w) in windows.iter().enumerate() {
            if w[0] >= w[1] || w[1] as usize > seq_len {
                return Err(EngineError::Shape(format!(
                    "mask window {i} = [{}, {}) is empty or out of range",
                    w[0], w[1]
                )));
            }
        }
        Ok(AttnMask { seq_len, windows })
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Whether the mask gives each batch row its own windows.
    pub fn per_sequence(&self) -> bool {
        self.windows.len() > self.seq_len
    }

    pub fn check_batch(&self, batch: usize, seq_len: usize) -> Result<(), EngineError> {
        if seq_len != self.seq_len || (self.per_sequence() && self.windows.len() != batch * seq_len) {
            return Err(EngineError::Shape(format!(
                "mask is for {} positions x {} sequences, batch is {batch} x {seq_len}",
                self.seq_len,
                self.windows.len() / self.seq_len
            )));
        }
        Ok(())
    }

    /// Windows of sequence `b`.
    #[inline]
    pub fn windows(&self, b: usize) -> &[[u32; 2]] {
        if self.per_sequence() {
            &self.windows[b * self.seq_len..(b + 1) * self.seq_len]
        } else {
            &self.windows
        }
    }
}
