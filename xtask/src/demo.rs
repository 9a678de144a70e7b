//! `cargo xtask demo`: filled in with the pipeline.
use anyhow::Result;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this many input records are fully processed.
    #[arg(long)]
    pub records: Option<u64>,
}

pub fn run(_args: DemoArgs) -> Result<()> {
    anyhow::bail!("demo not built yet")
}
