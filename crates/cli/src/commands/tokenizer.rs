//! `ferrogpt tokenizer ...`

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_data::{sample_texts, Source};
use ferrogpt_tokenizer::Tokenizer;

#[derive(clap::Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on corpus sources and write tokenizer.json
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Corpus source, repeatable: `manpages`, `synthetic:GENERATOR:COUNT`, or a file or folder
    /// of .txt/.md/.jsonl
    #[arg(long = "source", required = true)]
    sources: Vec<String>,
    /// Total ids, including the 7 special tokens and the 256 byte tokens
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Where to write the tokenizer (e.g. out/tokenizer.json)
    #[arg(long)]
    out: PathBuf,
    /// Bytes of text to train on (a sample drawn evenly from all sources)
    #[arg(long, default_value_t = 20_000_000)]
    max_bytes: u64,
    /// Seed of the sampling order
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(cmd: TokenizerCommand) -> anyhow::Result<()> {
    match cmd {
        TokenizerCommand::Train(args) => train(args),
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_bytes > 0, "--max-bytes must be at least 1");
    let sources = args.sources.iter().map(|s| s.parse::<Source>()).collect::<Result<Vec<_>, _>>()?;
    let texts = sample_texts(&sources, args.seed, args.max_bytes, true)?;
    let bytes: usize = texts.iter().map(String::len).sum();
    let spinner = ferrogpt_progress::Progress::spinner(true, "tokenizer");
    spinner.set_message(format!(
        "learning {} BPE merges from {:.1} MB of text",
        args.vocab_size,
        bytes as f64 / 1e6
    ));
    let started = std::time::Instant::now();
    // Keep a small sample to report the compression the tokenizer reaches.
    let probe: Vec<String> = texts.iter().take(200).cloned().collect();
    let tokenizer = Tokenizer::train(texts.into_iter(), args.vocab_size)?;
    spinner.finish();
    tokenizer
        .save(&args.out)
        .with_context(|| format!("saving {}", args.out.display()))?;
    let probe_bytes: usize = probe.iter().map(String::len).sum();
    let probe_tokens: usize = probe.iter().map(|t| tokenizer.encode(t).len()).sum();
    println!(
        "wrote {} (vocab {}, trained on {:.1} MB in {:.1}s, {:.2} bytes/token, fingerprint {})",
        args.out.display(),
        tokenizer.vocab_size(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        probe_bytes as f64 / probe_tokens.max(1) as f64,
        &tokenizer.fingerprint()[..16]
    );
    Ok(())
}
