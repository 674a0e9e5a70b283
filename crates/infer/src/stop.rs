//! Stop sequences over streamed text: text is released only once it can no
//! longer turn out to be the start of a stop sequence, and the stop sequence
//! itself is never released (OpenAI semantics).

#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    matched: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            matched: false,
        }
    }

    /// Adds generated text; returns the text safe to emit and whether a stop
    /// sequence was found (then nothing after it is emitted, ever).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.matched {
            return (String::new(), true);
        }
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            self.matched = true;
            return (out, true);
        }
        // Keep the longest suffix of `held` that is a proper prefix of some stop.
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && self.held.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// Whatever is still held back (generation ended without a match).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    pub fn matched(&self) -> bool {
        self.matched
    }
}
