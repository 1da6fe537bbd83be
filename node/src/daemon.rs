//! The node daemon: `weft node run`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

/// `weft node run`
#[derive(Debug, Args)]
pub struct NodeRunArgs {}

/// `weft status`
#[derive(Debug, Args)]
pub struct StatusArgs {}

/// Runs `weft node run` until SIGINT or SIGTERM.
pub fn node_run(_args: NodeRunArgs) -> Result<ExitCode> {
    bail!("weft node run is not built yet")
}

/// Runs `weft status`.
pub fn status(_args: StatusArgs) -> Result<ExitCode> {
    bail!("weft status is not built yet")
}
