//! The `weft` binary: the node daemon and the operator CLI.
//!
//! `main` parses the command line (clap exits 2 on a usage error), runs the
//! command, and on an error prints exactly one line, `error: <message>`, on
//! stderr and exits 1, without a backtrace.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

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
