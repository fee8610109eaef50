//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// What went wrong while configuring the network.
#[derive(Debug, thiserror::Error)]
pub enum NetConfigError {
    /// A netlink request failed (the kernel's errno is the source).
    #[error("netlink {op} failed")]
    Netlink {
        /// The operation, e.g. `add address`.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel cannot create this kind of interface.
    #[error("the kernel does not support {kind} interfaces (load the {module} module)")]
    KindUnsupported {
        /// `vlan` or `bond`.
        kind: &'static str,
        /// The module that provides it.
        module: &'static str,
    },
    /// No interface matches a name or MAC address.
    #[error("no interface matches {0}")]
    NoSuchInterface(String),
    /// A socket could not be created or configured.
    #[error("cannot set up the {what} socket")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving a DHCP packet failed.
    #[error("DHCP I/O on {iface} failed")]
    DhcpIo {
        /// Interface name.
        iface: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A file (resolv.conf, a sysctl) could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The link had no carrier before the deadline.
    #[error("no carrier on {iface} before the deadline")]
    NoCarrier {
        /// Interface name.
        iface: String,
    },
    /// No DHCP server gave a lease before the deadline.
    #[error("no DHCP lease on {iface} before the deadline")]
    NoLease {
        /// Interface name.
        iface: String,
    },
    /// The configuration asks for something impossible.
    #[error("invalid network configuration: {0}")]
    Invalid(String),
    /// The kernel sent something we could not make sense of.
    #[error("malformed netlink data: {0}")]
    Malformed(&'static str),
}

impl NetConfigError {
    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetConfigError::Netlink { source, .. }
            | NetConfigError::Socket { source, .. }
            | NetConfigError::DhcpIo { source, .. }
            | NetConfigError::Write { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
