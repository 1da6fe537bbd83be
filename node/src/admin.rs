//! Operator tooling: node directories and certificates, and authoring,
//! co-signing, inspecting and pushing signed updates.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

/// `weft node init`
#[derive(Debug, Args)]
pub struct NodeInitArgs {}

/// `weft node certify`
#[derive(Debug, Args)]
pub struct NodeCertifyArgs {}

/// `weft bundle …`
#[derive(Debug, Subcommand)]
pub enum BundleCommand {}

/// `weft revoke`
#[derive(Debug, Args)]
pub struct RevokeArgs {}

/// `weft update …`
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {}

/// `weft push`
#[derive(Debug, Args)]
pub struct PushArgs {}

/// Runs `weft node init`.
pub fn node_init(_args: NodeInitArgs) -> Result<ExitCode> {
    bail!("weft node init is not built yet")
}

/// Runs `weft node certify`.
pub fn node_certify(_args: NodeCertifyArgs) -> Result<ExitCode> {
    bail!("weft node certify is not built yet")
}

/// Runs `weft bundle …`.
pub fn bundle(cmd: BundleCommand) -> Result<ExitCode> {
    match cmd {}
}

/// Runs `weft revoke`.
pub fn revoke(_args: RevokeArgs) -> Result<ExitCode> {
    bail!("weft revoke is not built yet")
}

/// Runs `weft update …`.
pub fn update(cmd: UpdateCommand) -> Result<ExitCode> {
    match cmd {}
}

/// Runs `weft push`.
pub fn push(_args: PushArgs) -> Result<ExitCode> {
    bail!("weft push is not built yet")
}
