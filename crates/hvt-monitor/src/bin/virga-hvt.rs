//! `virga-hvt`: run an hvt unikernel. Exit status: the guest's exit code, or one of the
//! monitor's own codes (`hvt_abi::exit`, documented in `docs/unikernel.md`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    ExitCode::from(hvt_monitor::cli::main(std::env::args_os().skip(1)))
}
