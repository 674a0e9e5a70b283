//! `ferrogpt tokenizer ...`

#[derive(clap::Subcommand)]
pub enum TokenizerCommand {}

pub fn run(cmd: TokenizerCommand) -> anyhow::Result<()> {
    match cmd {}
}
