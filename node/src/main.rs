//! The `weft` binary: the node daemon and the operator CLI.
//!
//! `main` parses the command line (clap exits 2 on a usage error), runs the
//! command, and on an error prints exactly one line, `error: <message>`, on
//! stderr and exits 1, without a backtrace.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc in place of the system allocator: automerge, the simulator and
/// the HTTP path allocate many small, short-lived objects, and the one-hour
/// 10,000-node simulation takes about a fifth less CPU with it
/// (BENCHMARKS.md, "Simulator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the chain of causes with ": " on one line.
            let msg = format!("{err:#}").replace(['\n', '\r'], " ");
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}
