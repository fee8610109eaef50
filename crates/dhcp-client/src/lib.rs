//! A sans-IO DHCPv4 client: wire codec, IPv4/UDP framing and the RFC 2131 state machine.
//!
//! Pipeline position: **PID 1 → network stage**. The guest's network driver (`net-config`) owns
//! the sockets and the netlink calls; this crate owns the protocol. It does no I/O, reads no
//! clock and draws no random numbers of its own: the driver passes in the current time
//! ([`Instant`]), the packets it received and a [`RandomSource`], and takes out packets to send
//! ([`Transmit`]), the next wake-up ([`Client::poll_timeout`]) and [`Event`]s (bound, renewed,
//! rebound, NAK, lease lost, released). That keeps every timer and retransmission testable with a
//! fake clock. The crate is `no_std` + `alloc` (the default `std` feature only adds
//! `std::error::Error` impls) so that a `no_std` runtime could use it; the unikernel runtime
//! does not today: it uses smoltcp's own DHCP client, which is tied to smoltcp's interface.
//!
//! * [`wire`]: the BOOTP/DHCP message codec. Parsing is total: it returns [`DhcpError`] on any
//!   malformed input, never panics and allocates at most a small multiple of the input size.
//! * [`frame`]: IPv4 + UDP framing for drivers that send and receive through raw packet sockets
//!   before the interface has an address.
//! * [`Client`]: the state machine (INIT → SELECTING → REQUESTING → BOUND → RENEWING →
//!   REBINDING, plus INIT-REBOOT), with RFC 2131 exponential backoff and lease timers.
//!
//! Behaviour and tuning are documented in `docs/network.md`.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(feature = "std")]
extern crate std;

mod client;
mod domain;
mod error;
pub mod frame;
mod lease;
mod time;
pub mod wire;

pub use client::{
    Client, ClientConfig, DEFAULT_REQUESTED_OPTIONS, Destination, Event, LossReason, RandomSource,
    State, Transmit,
};
pub use error::DhcpError;
pub use lease::{Lease, Route};
pub use time::Instant;
pub use wire::{Message, MessageType, Op, Options};

/// UDP port DHCP servers listen on.
pub const SERVER_PORT: u16 = 67;
/// UDP port DHCP clients listen on.
pub const CLIENT_PORT: u16 = 68;
