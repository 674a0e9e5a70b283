//! Conversations for supervised fine-tuning (SFT).
//!
//! Read from JSONL in OpenAI's chat fine-tuning format (one `{"messages": [...]}` object per
//! line, other keys ignored), rendered by the chat template with only the assistant replies
//! trained ([`ferrogpt_infer::render_for_training`]), and packed several to a row. Attention
//! stays inside each conversation (one causal window per conversation, as
//! [`ferrogpt_engine::AttnMask`] takes them), so a packed row trains exactly what the
//! conversations would train one by one; RoPE sees only relative positions, so a conversation
//! packed at offset 300 is the same computation as at offset 0.
//!
//! Each epoch visits the conversations in a fresh seeded order and packs them greedily in that
//! order (next fit); the order, and so every row, follows from the seed and the epoch, which is
//! what makes the loader's state two numbers and resumption exact.

use std::path::{Path, PathBuf};

use ferrogpt_data::Batch;
use ferrogpt_engine::{AttnMask, IGNORE};
use ferrogpt_infer::{render_for_training, request, InferError, RequestError, TrainingTokens};
use ferrogpt_rng::SplitMix64;
use ferrogpt_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::{io_err, TrainError};

/// Why one line of a conversations file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("not a JSON object")]
    Json(#[source] serde_json::Error),
    #[error("`{}`", .0.param)]
    Messages(#[source] RequestError),
    #[error("the conversation cannot be rendered")]
    Render(#[source] InferError),
    #[error("it has no assistant reply to train on")]
    NoReply,
}

/// Tokenized conversations, each cut to fit one training row.
#[derive(Debug)]
pub struct Conversations {
    pub path: PathBuf,
    docs: Vec<TrainingTokens>,
    /// Conversations longer than a row, cut to its length (their tail is not trained).
    pub truncated: usize,
}

impl Conversations {
    /// Reads `path`; every conversation is cut to `seq_len + 1` tokens (a row's inputs and its
    /// last target). A conversation left with no trained token is an error naming its line.
    pub fn read(path: &Path, tokenizer: &Tokenizer, seq_len: usize) -> Result<Conversations, TrainError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let mut docs = Vec::new();
        let mut truncated = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |source| TrainError::Conversation {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            };
            let mut doc = parse_line(line, tokenizer).map_err(bad)?;
            if doc.ids.len() > seq_len + 1 {
                doc.ids.truncate(seq_len + 1);
                doc.trained.truncate(seq_len + 1);
                truncated += 1;
            }
            // The first token is never a target.
            if !doc.trained.iter().skip(1).any(|&t| t) {
                return Err(bad(ConversationError::NoReply));
            }
            docs.push(doc);
        }
        if docs.is_empty() {
            return Err(TrainError::Parse {
                path: path.to_path_buf(),
                why: "holds no conversation".into(),
            });
        }
        Ok(Conversations {
            path: path.to_path_buf(),
            docs,
            truncated,
        })
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Tokens the loss is taken on, over all conversations.
    pub fn trained_tokens(&self) -> usize {
        self.docs.iter().map(|d| d.trained.iter().skip(1).filter(|&&t| t).count()).sum()
    }

    /// Rows of `seq_len` positions the conversations fill, packed in file order (an epoch's
    /// shuffled packing differs by a few rows at most).
    pub fn rows(&self, seq_len: usize) -> usize {
        self.pack(0..self.docs.len(), seq_len).len()
    }

    /// Packs the conversations in `order` into rows of `seq_len` positions; a conversation of
    /// `n` tokens takes `n - 1` positions (inputs `0..n-1`, targets `1..n`).
    fn pack(&self, order: impl IntoIterator<Item = usize>, seq_len: usize) -> Vec<Vec<usize>> {
        let mut rows: Vec<Vec<usize>> = Vec::new();
        let mut used = seq_len;
        for d in order {
            let need = self.docs[d].ids.len() - 1;
            if used + need > seq_len {
                rows.push(Vec::new());
                used = 0;
            }
            if let Some(row) = rows.last_mut() {
                row.push(d);
            }
            used += need;
        }
        rows
    }

    /// Appends one row: the conversations `docs`, then padding (input 0, no target, attending
    /// only to itself). Targets are the next token where it is trained, else [`IGNORE`].
    fn fill_row(&self, docs: &[usize], seq_len: usize, batch: &mut Batch, windows: &mut Vec<[u32; 2]>) {
        let start = batch.inputs.len();
        for &d in docs {
            let doc = &self.docs[d];
            let first = (batch.inputs.len() - start) as u32;
            for k in 0..doc.ids.len() - 1 {
                batch.inputs.push(doc.ids[k]);
                batch.targets.push(if doc.trained[k + 1] { doc.ids[k + 1] } else { IGNORE });
                windows.push([first, (batch.inputs.len() - start) as u32]);
            }
        }
        for p in batch.inputs.len() - start..seq_len {
            batch.inputs.push(0);
            batch.targets.push(IGNORE);
            windows.push([p as u32, p as u32 + 1]);
        }
    }

    /// Every conversation once, in file order, `rows` rows a batch: the deterministic pass of
    /// validation. A short last batch is padded with empty rows.
    pub fn sequential_batches(&self, rows: usize, seq_len: usize) -> Result<Vec<(Batch, AttnMask)>, TrainError> {
        let packed = self.pack(0..self.docs.len(), seq_len);
        packed
            .chunks(rows)
            .map(|chunk| {
                let mut batch = empty_batch(rows, seq_len);
                let mut windows = Vec::with_capacity(rows * seq_len);
                for r in 0..rows {
                    self.fill_row(chunk.get(r).map_or(&[][..], Vec::as_slice), seq_len, &mut batch, &mut windows);
                }
                Ok((batch, AttnMask::from_windows(seq_len, windows)?))
            })
            .collect()
    }
}

fn empty_batch(rows: usize, seq_len: usize) -> Batch {
    Batch {
        inputs: Vec::with_capacity(rows * seq_len),
        targets: Vec::with_capacity(rows * seq_len),
        rows,
        seq_len,
    }
}

fn parse_line(line: &str, tokenizer: &Tokenizer) -> Result<TrainingTokens, ConversationError> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(ConversationError::Json)?;
    let messages = request::messages(value.get("messages")).map_err(ConversationError::Messages)?;
    render_for_training(tokenizer, &messages).map_err(ConversationError::Render)
}

/// Where a [`ConversationLoader`] is; saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationLoaderState {
    pub seed: u64,
    pub conversations: usize,
    pub epoch: u64,
    /// Rows of this epoch already handed out.
    pub row: usize,
}

/// Training batches of packed conversations, reshuffled and repacked every epoch; a batch
/// that runs past an epoch's end continues into the next.
#[derive(Debug)]
pub struct ConversationLoader {
    convs: Conversations,
    rows: usize,
    seq_len: usize,
    seed: u64,
    epoch: u64,
    row: usize,
    plan: Vec<Vec<usize>>,
}

impl ConversationLoader {
    pub fn new(convs: Conversations, rows: usize, seq_len: usize, seed: u64) -> Self {
        let mut loader = ConversationLoader {
            convs,
            rows,
            seq_len,
            seed,
            epoch: 0,
            row: 0,
            plan: Vec::new(),
        };
        loader.plan = loader.plan_epoch(0);
        loader
    }

    fn plan_epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.convs.len()).collect();
        SplitMix64::derived(self.seed, epoch).shuffle(&mut order);
        self.convs.pack(order, self.seq_len)
    }

    pub fn conversations(&self) -> &Conversations {
        &self.convs
    }

    /// Rows in the current epoch's packing.
    pub fn rows_per_epoch(&self) -> usize {
        self.plan.len()
    }

    /// The next batch and its mask, reusing `batch`'s buffers.
    pub fn next_into(&mut self, batch: &mut Batch) -> Result<AttnMask, TrainError> {
        batch.inputs.clear();
        batch.targets.clear();
        batch.rows = self.rows;
        batch.seq_len = self.seq_len;
        let mut windows = Vec::with_capacity(self.rows * self.seq_len);
        for _ in 0..self.rows {
            if self.row == self.plan.len() {
                self.epoch += 1;
                self.row = 0;
                self.plan = self.plan_epoch(self.epoch);
            }
            self.convs.fill_row(&self.plan[self.row], self.seq_len, batch, &mut windows);
            self.row += 1;
        }
        Ok(AttnMask::from_windows(self.seq_len, windows)?)
    }

    pub fn state(&self) -> ConversationLoaderState {
        ConversationLoaderState {
            seed: self.seed,
            conversations: self.convs.len(),
            epoch: self.epoch,
            row: self.row,
        }
    }

    /// Continues from a saved state; the conversations and seed must be the state's.
    pub fn restore(&mut self, state: &ConversationLoaderState) -> Result<(), TrainError> {
        let plan = self.plan_epoch(state.epoch);
        if state.seed != self.seed || state.conversations != self.convs.len() || state.row > plan.len() {
            return Err(TrainError::Config {
                key: "data.conversations".into(),
                why: format!(
                    "{} holds {} conversations (seed {}) but the checkpoint was taken over {} (seed {}) at row {} of epoch {}",
                    self.convs.path.display(),
                    self.convs.len(),
                    self.seed,
                    state.conversations,
                    state.seed,
                    state.row,
                    state.epoch
                ),
            });
        }
        self.plan = plan;
        self.epoch = state.epoch;
        self.row = state.row;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogpt_tokenizer::Special;

    fn tokenizer() -> Tokenizer {
        let texts = ["what is two plus two", "four", "name a colour", "blue and red", "hello there"];
        Tokenizer::train(texts.iter().map(|s| s.to_string()), 300).unwrap()
    }

    fn line(user: &str, reply: &str) -> String {
        serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}).to_string()
    }

    fn write(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        (dir, path)
    }

    #[test]
    fn rows_train_only_replies_and_attend_within_their_conversation() {
        let tok = tokenizer();
        let (_d, path) = write(&[line("what is two plus two", "four"), line("name a colour", "blue and red")]);
        let convs = Conversations::read(&path, &tok, 64).unwrap();
        let batches = convs.sequential_batches(1, 64).unwrap();
        assert_eq!(batches.len(), 1, "both fit one row");
        let (batch, mask) = &batches[0];
        let assistant = tok.special_id(Special::Assistant);
        let end = tok.special_id(Special::End);
        let first_len = convs.docs[0].ids.len() - 1;
        // Targets: the reply tokens and its <|end|>, nothing else.
        let trained: Vec<u32> = batch.targets[..first_len].iter().copied().filter(|&t| t != IGNORE).collect();
        let mut expected = tok.encode("four");
        expected.push(end);
        assert_eq!(trained, expected);
        // The token before the first target is the <|assistant|> that opens the reply.
        let k = batch.targets.iter().position(|&t| t != IGNORE).unwrap();
        assert_eq!(batch.inputs[k], assistant);
        // The second conversation starts its own window at its first position.
        let w = mask.windows(0);
        assert_eq!(w[first_len], [first_len as u32, first_len as u32 + 1]);
        assert_eq!(w[first_len - 1], [0, first_len as u32]);
        // Padding attends to itself and trains nothing.
        let used = first_len + convs.docs[1].ids.len() - 1;
        assert!(batch.targets[used..].iter().all(|&t| t == IGNORE));
        assert_eq!(w[63], [63, 64]);
        assert_eq!(convs.trained_tokens(), batch.targets.iter().filter(|&&t| t != IGNORE).count());
    }

    #[test]
    fn bad_lines_are_named() {
        let tok = tokenizer();
        for (text, expect) in [
            ("{not json", "line 2"),
            (r#"{"messages": [{"role": "wizard", "content": "x"}]}"#, "messages"),
            (
                r#"{"messages": [{"role": "user", "content": "only a question"}]}"#,
                "no assistant reply",
            ),
        ] {
            let (_d, path) = write(&[line("hello there", "four"), text.to_string()]);
            let e = Conversations::read(&path, &tok, 64).unwrap_err();
            let chain = format!(
                "{e}: {}",
                std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()
            );
            assert!(chain.contains("line 2") && chain.contains(expect), "{chain}");
        }
    }

    #[test]
    fn long_conversations_are_cut_to_a_row() {
        let tok = tokenizer();
        let (_d, path) = write(&[line("hi", &"blue and red ".repeat(40))]);
        let convs = Conversations::read(&path, &tok, 16).unwrap();
        assert_eq!((convs.truncated, convs.docs[0].ids.len()), (1, 17));
    }

    #[test]
    fn loader_resumes_on_the_same_batch_and_covers_every_conversation_each_epoch() {
        let tok = tokenizer();
        let lines: Vec<String> = (0..9).map(|i| line(&"two ".repeat(i + 1), "four")).collect();
        let (_d, path) = write(&lines);
        let make = || ConversationLoader::new(Conversations::read(&path, &tok, 24).unwrap(), 2, 24, 7);
        let mut a = make();
        // One epoch's rows hold every conversation exactly once.
        let mut seen: Vec<usize> = a.plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..9).collect::<Vec<_>>());
        let mut batch = Batch::default();
        for _ in 0..3 {
            a.next_into(&mut batch).unwrap();
        }
        let saved = a.state();
        let (mut expect, mut got) = (Batch::default(), Batch::default());
        let mask_a = a.next_into(&mut expect).unwrap();
        let mut b = make();
        b.restore(&saved).unwrap();
        let mask_b = b.next_into(&mut got).unwrap();
        assert_eq!(expect, got);
        assert_eq!(mask_a.windows(1), mask_b.windows(1));
        // Another file refuses the state.
        let (_d2, other) = write(&lines[..5]);
        let mut c = ConversationLoader::new(Conversations::read(&other, &tok, 24).unwrap(), 2, 24, 7);
        assert!(c.restore(&saved).is_err());
    }
}
