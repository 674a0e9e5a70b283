//! `ferrogpt speedrun`

#[derive(clap::Args)]
pub struct SpeedrunArgs {}

pub fn run(_args: SpeedrunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ferrogpt speedrun` is not built yet")
}
