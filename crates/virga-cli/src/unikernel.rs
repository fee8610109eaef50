//! `virga unikernel …`: build and run unikernel applications.

use std::process::ExitCode;

use clap::Subcommand;

/// `virga unikernel` subcommands.
#[derive(Debug, Subcommand)]
pub enum UnikernelCommand {
    /// Build an application crate for a target.
    Build,
}

/// Runs a `virga unikernel` subcommand.
pub fn run(cmd: UnikernelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UnikernelCommand::Build => anyhow::bail!("not available yet"),
    }
}
