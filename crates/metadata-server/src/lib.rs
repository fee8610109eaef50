//! The host-side metadata service for virga guests: EC2 IMDS and OpenStack metadata over
//! HTTP/1.1, plus the generator that lays out an instance's metadata for every datasource.
//!
//! Pipeline position: artifacts → **VM**. `virga run --datasource ec2|openstack` attaches this
//! server to the guest's user-mode network at 169.254.169.254 through a QEMU `guestfwd` rule
//! that runs `virga metadata-server --stdio` once per guest connection ([`qemu`]). The
//! guest's `ds` agent (crate `cloud-metadata`) crawls it exactly as it would a real cloud's.
//! For `--datasource nocloud|configdrive` the same instance, [`generate`]d here, goes onto a
//! seed disk instead (crate `seed-image`).
//!
//! - [`http`]: a total HTTP/1.x request parser (size limits, never panics; fuzzed) and
//!   response writer.
//! - [`conn`]: one connection over any `Read` + `Write` (stdio) or a TCP listener; keep-alive,
//!   pipelining, deadlines on every wait, bounded memory, fault injection ([`fault`]).
//! - [`service`]: the EC2 and OpenStack routing over a directory in the cloud's own layout,
//!   IMDSv2 tokens ([`token`], stateless HMAC so they validate across processes).
//! - [`generate`]: [`InstanceSpec`] → NoCloud, ConfigDrive, EC2 and OpenStack trees.
//! - [`slots`]: the cap on concurrent connections shared by the per-connection processes.
//! - [`cli`]: the `metadata-server` subcommand.
//!
//! The host must never talk to a real 169.254.169.254 (a cloud host has its own): tests point
//! clients at 127.0.0.1 or at the stdio mode, and guests reach this server only through the
//! guestfwd rule. See `docs/metadata-server.md`.

use std::path::PathBuf;

pub mod cli;
pub mod conn;
pub mod fault;
pub mod generate;
pub mod http;
pub mod qemu;
pub mod service;
pub mod slots;
pub mod token;

pub use conn::{
    ConnectionEnd, ConnectionSummary, Handler, ServerConfig, TcpServer, serve_connection,
    serve_tcp_stream,
};
pub use fault::{Fault, FaultKind};
pub use generate::{
    FileTree, InstanceSpec, Layout, PublicKey, default_public_keys, write_seed_image, write_tree,
};
pub use http::{Limits, Request, Response};
pub use service::{Cloud, ImdsMode, MetadataService};
pub use token::{SecretError, TokenKey};

/// What can go wrong setting up or running the metadata server.
#[derive(Debug, thiserror::Error)]
pub enum MetadataServerError {
    /// A file or socket operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `--dir` is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Tokens were asked for but no shared secret is available.
    #[error(
        "IMDSv2 tokens need a secret shared by every server process: pass --token-secret-file \
         FILE or set VIRGA_IMDS_TOKEN_SECRET (64 hex digits), or use --imds v1-only"
    )]
    NoTokenKey,
    /// The token secret is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// An [`InstanceSpec`] field cannot be written.
    #[error("invalid instance spec: {field}: {reason}")]
    InvalidSpec {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Building a seed image failed.
    #[error(transparent)]
    SeedImage(#[from] seed_image::SeedImageError),
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
}
