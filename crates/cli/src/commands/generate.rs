//! `ferrogpt generate`

#[derive(clap::Args)]
pub struct GenerateArgs {}

pub fn run(_args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ferrogpt generate` is not built yet")
}
