//! `ferrogpt serve`, `ferrogpt keys ...`, `ferrogpt usage`

#[derive(clap::Args)]
pub struct ServeArgs {}

#[derive(clap::Subcommand)]
pub enum KeysCommand {}

#[derive(clap::Args)]
pub struct UsageArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ferrogpt serve` is not built yet")
}

pub fn run_keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub fn run_usage(_args: UsageArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ferrogpt usage` is not built yet")
}
