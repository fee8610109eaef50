//! Command-line arguments and entry point of `virga metadata-server` (also built as the
//! stand-alone `virga-metadata-server` binary, which the integration tests drive).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::builder::TypedValueParser as _;

use crate::conn::{DEFAULT_MAX_CONNECTION_SECS, DEFAULT_MAX_CONNECTIONS};
use crate::http::Status;
use crate::slots::{self, MAX_SLOTS};
use crate::{
    Cloud, Fault, FaultKind, ImdsMode, MetadataServerError, MetadataService, Response,
    ServerConfig, TcpServer, TokenKey, serve_connection,
};

/// Exit status of a `--stdio` process ended at its hard deadline.
pub const STDIO_DEADLINE_EXIT: i32 = 3;

/// `metadata-server`: serve EC2 IMDS or OpenStack metadata from a directory.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Serve one connection on stdin/stdout and exit (what QEMU's `guestfwd=…-cmd:` runs for
    /// each guest connection). Logs go to --log-file, never to stderr.
    #[arg(long, conflicts_with = "listen")]
    pub stdio: bool,
    /// Listen on this TCP address (e.g. 127.0.0.1:8169; port 0 picks one) and print
    /// `listening on http://ADDR` on stdout.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Cloud to emulate: ec2 or openstack.
    #[arg(long, value_name = "CLOUD")]
    pub cloud: Cloud,
    /// Metadata directory in the cloud's own layout (see docs/metadata-server.md).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// IMDSv2 tokens: v1-and-v2 (default for ec2), v2-only, v1-only (default for openstack),
    /// disabled.
    #[arg(long, value_name = "MODE")]
    pub imds: Option<ImdsMode>,
    /// Inject a fault: hang, 500, redirect, slow, garbage.
    #[arg(long, value_name = "KIND")]
    pub fault: Option<FaultKind>,
    /// Only inject the fault for paths starting with this prefix.
    #[arg(long, value_name = "PREFIX", requires = "fault")]
    pub fault_path: Option<String>,
    /// Where `--fault redirect` points (the request path is appended).
    #[arg(long, value_name = "URL", default_value = "http://metadata.invalid")]
    pub redirect_to: String,
    /// How long `--fault hang` holds a connection, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub hang_secs: u64,
    /// Delay between bytes for `--fault slow`, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub slow_delay_ms: u64,
    /// File holding the IMDSv2 token secret (64 hex digits, mode 0600). Without it,
    /// VIRGA_IMDS_TOKEN_SECRET is used; a TCP server may also make one up.
    #[arg(long, value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// Append one line per request to this file.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// With --stdio: append logs (stderr) to this file instead of discarding them.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Close a connection idle for this long, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub idle_timeout_secs: u64,
    /// Answer 408 when a request takes longer than this to arrive, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
    /// Close any connection open this long, however busy, in seconds. With --stdio the process
    /// also exits a few seconds later even if it is stuck writing to a guest that stopped
    /// reading.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_CONNECTION_SECS)]
    pub max_connection_secs: u64,
    /// Serve at most this many connections at once; more are answered 503 and closed. With
    /// --stdio the cap is shared through --slot-dir by every process of the VM.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u16).range(1..=MAX_SLOTS as i64).map(usize::from))]
    pub max_connections: usize,
    /// With --stdio: directory of the connection slots shared by the server processes of one
    /// VM (created if missing; `virga run` passes one per VM). Without it a --stdio process
    /// knows nothing of the others and only the time limits apply.
    #[arg(long, value_name = "DIR", requires = "stdio")]
    pub slot_dir: Option<PathBuf>,
}

/// How long after `--max-connection-secs` a stuck `--stdio` process is ended.
pub const STDIO_EXIT_GRACE: Duration = Duration::from_secs(5);

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> MetadataServerError {
    move |source| MetadataServerError::Io { context, source }
}

/// Runs the server described by `args`: one stdio connection, or a TCP listener forever.
pub fn run_server(args: &ServerArgs) -> Result<(), MetadataServerError> {
    if args.stdio {
        // The guest's TCP connection is on fds 0, 1 *and* 2 under QEMU: nothing may reach
        // stderr. Point it at the log file (or /dev/null) before anything can log.
        let path = args
            .log_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/null"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("opening the log file {}", path.display())))?;
        rustix::stdio::dup2_stderr(&log).map_err(|e| MetadataServerError::Io {
            context: "redirecting stderr".into(),
            source: e.into(),
        })?;
        // A write to a guest that stopped reading blocks forever (stdio has no write timeout):
        // end the process a little after the connection's time limit, whatever it is doing.
        let limit = Duration::from_secs(args.max_connection_secs) + STDIO_EXIT_GRACE;
        std::thread::Builder::new()
            .name("mdserver-deadline".into())
            .spawn(move || {
                std::thread::sleep(limit);
                tracing::warn!(
                    ?limit,
                    "connection still open at its hard deadline: exiting"
                );
                std::process::exit(STDIO_DEADLINE_EXIT);
            })
            .map_err(io_err("starting the deadline thread".into()))?;
    } else if args.listen.is_none() {
        return Err(MetadataServerError::Usage(
            "give --stdio (one connection on stdin/stdout) or --listen ADDR".into(),
        ));
    }

    // Held until the process exits (the connection is over); see `crate::slots`.
    let _slot = match (&args.slot_dir, args.stdio) {
        (Some(dir), true) => match slots::try_acquire(dir, args.max_connections) {
            Ok(Some(slot)) => {
                tracing::debug!(slot = slot.index(), "connection slot taken");
                Some(slot)
            }
            Ok(None) => {
                tracing::warn!(
                    max = args.max_connections,
                    "too many connections: answering 503"
                );
                let mut out = std::io::stdout().lock();
                let _ = Response::error(Status::SERVICE_UNAVAILABLE)
                    .with_header("Retry-After", "1")
                    .write_to(&mut out, false, false);
                let _ = out.flush();
                return Ok(());
            }
            Err(e) => {
                return Err(MetadataServerError::Io {
                    context: format!("taking a connection slot in {}", dir.display()),
                    source: e,
                });
            }
        },
        _ => None,
    };

    let imds = args.imds.unwrap_or(args.cloud.default_imds());
    let key = if matches!(imds, ImdsMode::V1AndV2 | ImdsMode::V2Only) {
        match (&args.token_secret_file, TokenKey::from_env()?) {
            (Some(file), _) => Some(TokenKey::load(file)?),
            (None, Some(key)) => Some(key),
            // One process serves every connection: its own secret is enough.
            (None, None) if !args.stdio => Some(TokenKey::generate()?),
            (None, None) => return Err(MetadataServerError::NoTokenKey),
        }
    } else {
        None
    };
    let service = MetadataService::new(args.cloud, &args.dir, imds, key)?;

    let fault = args.fault.map(|kind| Fault {
        path_prefix: args.fault_path.clone(),
        redirect_to: args.redirect_to.clone(),
        hang_for: Duration::from_secs(args.hang_secs),
        slow_delay: Duration::from_millis(args.slow_delay_ms),
        ..Fault::new(kind)
    });
    let access_log = match &args.access_log {
        Some(p) => Some(Arc::new(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(io_err(format!("opening the access log {}", p.display())))?,
        ))),
        None => None,
    };
    let cfg = ServerConfig {
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        max_connection_time: Duration::from_secs(args.max_connection_secs),
        max_connections: args.max_connections,
        fault,
        access_log,
        ..ServerConfig::default()
    };
    tracing::info!(cloud = %args.cloud, %imds, dir = %args.dir.display(), fault = ?args.fault, "metadata server starting");

    match args.listen {
        None => {
            let stdout = std::io::stdout().lock();
            serve_connection(std::io::stdin(), stdout, &service, &cfg, "stdio");
            Ok(())
        }
        Some(addr) => {
            let server = TcpServer::bind(addr).map_err(io_err(format!("binding {addr}")))?;
            let bound = server
                .local_addr()
                .map_err(io_err("reading the bound address".into()))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{bound}")
                .and_then(|()| out.flush())
                .map_err(io_err("writing to stdout".into()))?;
            drop(out);
            server
                .run(Arc::new(service), Arc::new(cfg))
                .map_err(io_err(format!("accepting connections on {bound}")))
        }
    }
}
