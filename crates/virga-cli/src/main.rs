//! `virga`: the host command line. Thin: parses arguments, calls the library crates, prints the
//! error chain and maps it to an exit code (see `docs/cli.md`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod build;
mod keys;
mod metadata;
mod release;
mod run;
mod ssh;
mod unikernel;
mod update_keys;
mod update_server;

/// virga: lean operating system images for clouds, containers and unikernels.
#[derive(Debug, Parser)]
#[command(name = "virga", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image from a spec: kernel, module closure, initramfs, manifest.
    Build(build::BuildArgs),
    /// Boot built artifacts in QEMU (interactive, or --expect-ready for tests and CI).
    Run(Box<run::RunArgs>),
    /// Log in to a guest started with `virga run --ssh-port` (virga's key).
    Ssh(ssh::SshArgs),
    /// Serve EC2 or OpenStack metadata from a directory (QEMU runs it per guest connection).
    MetadataServer(metadata::ServerArgs),
    /// Write a NoCloud or ConfigDrive seed image (ISO9660 or FAT).
    Seed(metadata::SeedArgs),
    /// Unikernels: build and run one application on the unix, microvm or hvt target.
    #[command(subcommand)]
    Unikernel(unikernel::UnikernelCommand),
    /// Update signing keys: new, rotate (docs/updates.md).
    #[command(subcommand)]
    Keys(update_keys::KeysCommand),
    /// Publish a built disk image as a signed release in an update repository.
    Release(release::ReleaseArgs),
    /// Serve an update repository over HTTP (with Range requests, for resume).
    UpdateServer(update_server::ServerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Build(args) => build::run(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(*args),
        Command::Ssh(args) => ssh::run(args),
        Command::MetadataServer(args) => metadata::run_server(args).map(|()| ExitCode::SUCCESS),
        Command::Seed(args) => metadata::run_seed(args).map(|()| ExitCode::SUCCESS),
        Command::Unikernel(cmd) => unikernel::run(cmd),
        Command::Keys(cmd) => update_keys::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Release(args) => release::run(args).map(|()| ExitCode::SUCCESS),
        Command::UpdateServer(args) => update_server::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("virga: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
