//! `ferrogpt data ...`

use std::path::PathBuf;

use anyhow::Context;
use ferrogpt_data::{prepare, PrepareConfig, PrepareFile, Source, Split, TokenShards};
use ferrogpt_tokenizer::Tokenizer;

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Turn corpus sources into token shards plus manifest.json (train/val split by document)
    Prepare(PrepareArgs),
    /// Verify a prepared folder's shards against their checksums and print its manifest totals
    Verify {
        /// Folder written by `data prepare`
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// TOML file with the same settings (keys: tokenizer, out, sources, val_fraction, seed,
    /// max_bytes, shard_tokens, shuffle_buffer); flags given here override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// Corpus source, repeatable: `manpages`, `synthetic:GENERATOR:COUNT`, a general-English
    /// corpus `gcide`, `wordnet`, `pydoc`, `sotu` or `moby-dick` (optionally `NAME:PATH`), or a
    /// file or folder of .txt/.md/.jsonl (replaces the config's sources)
    #[arg(long = "source")]
    sources: Vec<String>,
    /// tokenizer.json to encode with
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Output folder for shards and manifest.json
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fraction of documents held out for validation [default: 0.01]
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Seed of the shuffle and the split [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many bytes of text
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Tokens per shard file [default: 8388608]
    #[arg(long)]
    shard_tokens: Option<u64>,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Prepare(args) => run_prepare(args),
        DataCommand::Verify { dir } => verify(dir),
    }
}

fn run_prepare(args: PrepareArgs) -> anyhow::Result<()> {
    let (mut config, mut tokenizer, mut out) = match &args.config {
        Some(path) => {
            let file = PrepareFile::load(path)?;
            (file.config(), file.tokenizer, file.out)
        }
        None => (PrepareConfig::new(Vec::new()), None, None),
    };
    if !args.sources.is_empty() {
        config.sources = args.sources.iter().map(|s| s.parse::<Source>()).collect::<Result<_, _>>()?;
    }
    tokenizer = args.tokenizer.or(tokenizer);
    out = args.out.or(out);
    if let Some(v) = args.val_fraction {
        config.val_fraction = v;
    }
    if let Some(v) = args.seed {
        config.seed = v;
    }
    if args.max_bytes.is_some() {
        config.max_bytes = args.max_bytes;
    }
    if let Some(v) = args.shard_tokens {
        config.shard_tokens = v;
    }
    anyhow::ensure!(!config.sources.is_empty(), "no sources: pass --source (or sources in --config)");
    let tokenizer = tokenizer.context("no tokenizer: pass --tokenizer FILE (or tokenizer in --config)")?;
    let out = out.context("no output folder: pass --out DIR (or out in --config)")?;
    let tokenizer = Tokenizer::from_file(&tokenizer)?;
    let started = std::time::Instant::now();
    let m = prepare(&config, &tokenizer, &out, true)?;
    let secs = started.elapsed().as_secs_f64();
    let bytes = m.totals.train.bytes + m.totals.val.bytes;
    for s in &m.sources {
        println!(
            "  {:<40} {:>8} docs {:>10.2} MB {:>12} tokens",
            s.source.to_string(),
            s.documents,
            s.bytes as f64 / 1e6,
            s.tokens
        );
    }
    println!(
        "wrote {}: train {} docs / {} tokens, val {} docs / {} tokens, {:.2} bytes/token, {:.1} MB in {:.1}s ({:.2} MB/s)",
        out.display(),
        m.totals.train.documents,
        m.totals.train.tokens,
        m.totals.val.documents,
        m.totals.val.tokens,
        bytes as f64 / (m.totals.train.tokens + m.totals.val.tokens).max(1) as f64,
        bytes as f64 / 1e6,
        secs,
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}

fn verify(dir: PathBuf) -> anyhow::Result<()> {
    for split in [Split::Train, Split::Val] {
        let shards = TokenShards::open(&dir, split)?;
        let t = shards.manifest().totals.get(split);
        println!(
            "{split}: {} shards, {} documents, {} tokens, {:.2} MB of text: checksums OK",
            t.shards,
            t.documents,
            shards.len(),
            t.bytes as f64 / 1e6
        );
    }
    Ok(())
}
