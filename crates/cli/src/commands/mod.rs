//! One module per subcommand; shared start-up helpers below.

pub mod bench;
pub mod data;
pub mod eval;
pub mod export;
pub mod generate;
pub mod rlhf;
pub mod rm;
pub mod scale;
pub mod serve;
pub mod sft;
pub mod speedrun;
pub mod tokenizer;
pub mod train;

/// The flags every post-training stage shares: its seed, resumption and progress display.
#[derive(clap::Args)]
pub struct StageFlags {
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue exactly from the newest checkpoint in OUT (same flags and files)
    #[arg(long)]
    pub resume: bool,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Size the global rayon pool once; every parallel kernel and gemm call uses it.
pub fn init_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {n} worker threads: {e}"))?;
    }
    Ok(())
}
