//! `weft node config --dir DIR`: prints the settings `weft node run` would
//! use with the same flags and environment, and where each came from.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::Args;

use crate::daemon::NodeRunArgs;

/// What `weft node config --help` says.
pub const NODE_CONFIG_LONG_ABOUT: &str = "Print the settings `weft node run` would use, and where each came from.\n\n\
    Reads DIR/weft.toml (or --config FILE), the WEFT_* environment variables and the flags given (the same flags as \
    `weft node run`), and prints the result as TOML: each value is followed by a comment saying \
    whether it is the default, from the file, from an environment variable (named) or from a flag. \
    Secret values (decision log headers, passwords in URLs) are printed as \"<redacted>\". Exits 1, \
    with the error `weft node run` would give, when a setting is wrong.";

/// Arguments of `weft node config`.
#[derive(Debug, Args)]
pub struct NodeConfigArgs {
    /// The node directory and the flags `weft node run` would be given.
    #[command(flatten)]
    pub run: NodeRunArgs,
    /// Print JSON: {"config": {...}, "sources": {"KEY": "default" | "file PATH" | "env VAR" | "flag --FLAG"}}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `weft node config`.
pub fn node_config(args: NodeConfigArgs) -> Result<ExitCode> {
    if !args.run.dir.is_dir() {
        bail!(
            "{} is not a node directory: run `weft node init --dir {}` first",
            args.run.dir.display(),
            args.run.dir.display()
        );
    }
    let resolved = crate::settings::resolve_from_process(
        &args.run.dir,
        args.run.config.as_deref(),
        &args.run.flag_values(),
    )
    .map_err(|e| anyhow!(e))?;
    if args.json {
        println!(
            "{}",
            crate::settings::print::to_json(&resolved.config, &resolved.layers)
                .map_err(|e| anyhow!(e))?
        );
    } else {
        print!(
            "{}",
            crate::settings::print::to_toml(&resolved.config, &resolved.layers)
                .map_err(|e| anyhow!(e))?
        );
    }
    Ok(ExitCode::SUCCESS)
}
