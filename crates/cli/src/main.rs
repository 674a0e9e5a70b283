//! `ferrogpt`: the one binary. Each subcommand lives in `commands/<name>.rs`
//! and only parses arguments and calls into the library crates.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferrogpt", version, about = "Train, evaluate and serve GPT-style models on a CPU, in Rust")]
struct Cli {
    /// Worker threads for the engine (default: all cores, or RAYON_NUM_THREADS)
    #[arg(long, global = true, env = "FERROGPT_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Data -> tokenizer -> pretraining -> samples, with a report card (the README's main job)
    Speedrun(commands::speedrun::SpeedrunArgs),
    /// Corpora to token shards
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Byte-level BPE tokenizers
    #[command(subcommand)]
    Tokenizer(commands::tokenizer::TokenizerCommand),
    /// Pretrain a model from a TOML config, with checkpoints and exact resume
    Train(commands::train::TrainArgs),
    /// Fine-tune a model folder on conversations (SFT): loss on assistant replies only, packed rows, exact resume
    Sft(commands::sft::SftArgs),
    /// Reward model and safety/moderation classifiers (scorers started from a language model)
    #[command(subcommand)]
    Rm(commands::rm::RmCommand),
    /// RLHF: GRPO against the reward model plus the rule-based safety reward, KL-penalised to the SFT model
    Rlhf(commands::rlhf::RlhfArgs),
    /// Sample text from a model folder with the KV cache, streaming to stdout
    Generate(commands::generate::GenerateArgs),
    /// Write a model folder in another tool's format
    #[command(subcommand)]
    Export(commands::export::ExportCommand),
    /// Throughput benchmarks of the engine
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Run an OpenAI-Evals-compatible eval (oaieval's command line)
    Eval(commands::eval::EvalArgs),
    /// Run a set of evals (oaievalset's command line)
    Evalset(commands::eval::EvalsetArgs),
    /// OpenAI-compatible API server with keys, rate limits, a usage ledger and a chat page
    Serve(commands::serve::ServeArgs),
    /// API keys and the waitlist
    #[command(subcommand)]
    Keys(commands::serve::KeysCommand),
    /// Usage ledger report by key, model and day
    Usage(commands::serve::UsageArgs),
    /// Predictable scaling: train a ladder, register predictions, verify them
    #[command(subcommand)]
    Scale(commands::scale::ScaleCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    commands::init_logging();
    commands::init_threads(cli.threads)?;
    match cli.command {
        Command::Speedrun(args) => commands::speedrun::run(args),
        Command::Data(cmd) => commands::data::run(cmd),
        Command::Tokenizer(cmd) => commands::tokenizer::run(cmd),
        Command::Train(args) => commands::train::run(args),
        Command::Sft(args) => commands::sft::run(args),
        Command::Rm(cmd) => commands::rm::run(cmd),
        Command::Rlhf(args) => commands::rlhf::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Export(cmd) => commands::export::run(cmd),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Eval(args) => commands::eval::run(args),
        Command::Evalset(args) => commands::eval::run_set(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Keys(cmd) => commands::serve::run_keys(cmd),
        Command::Usage(args) => commands::serve::run_usage(args),
        Command::Scale(cmd) => commands::scale::run(cmd),
    }
}
