//! Stand-alone `virga-metadata-server`: the same server as `virga metadata-server`, for tests
//! and for running without the rest of virga. Exit codes: 0 after a stdio connection ends (or
//! was answered 503 because every connection slot was taken), 3 when a stdio process was ended
//! at its hard deadline (`--max-connection-secs` + 5 s),
//! 1 on any error (the error chain is printed to stderr, or to --log-file with --stdio).

use std::process::ExitCode;

use clap::Parser;
use metadata_server::cli::{ServerArgs, run_server};

/// Serve EC2 IMDS or OpenStack metadata from a directory (stdio or TCP).
#[derive(Debug, Parser)]
#[command(name = "virga-metadata-server", version, about)]
struct Cli {
    #[command(flatten)]
    args: ServerArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run_server(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut chain = format!("virga-metadata-server: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                chain.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            eprintln!("{chain}");
            ExitCode::from(1)
        }
    }
}
