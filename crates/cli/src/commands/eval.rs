//! `ferrogpt eval` and `ferrogpt evalset`

#[derive(clap::Args)]
pub struct EvalArgs {}

#[derive(clap::Args)]
pub struct EvalsetArgs {}

pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ferrogpt eval` is not built yet")
}

pub fn run_set(_args: EvalsetArgs) -> anyhow::Result<()> {
    anyhow::bail!("`ferrogpt evalset` is not built yet")
}
