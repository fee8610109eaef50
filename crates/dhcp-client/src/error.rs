//! Errors of the codec and the state machine.

/// Why a packet was rejected or ignored.
///
/// None of these is fatal to the client: the state machine drops the packet and carries on. The
/// driver logs them at debug level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    /// The packet ends before a field or option it announces.
    #[error("truncated packet: {what}")]
    Truncated {
        /// The part that was cut short.
        what: &'static str,
    },
    /// `op` is neither BOOTREQUEST (1) nor BOOTREPLY (2), or not the one expected.
    #[error("unexpected BOOTP op {0}")]
    BadOp(u8),
    /// `htype` is not Ethernet (1).
    #[error("unsupported hardware type {0}")]
    BadHardwareType(u8),
    /// `hlen` is not 6.
    #[error("unsupported hardware address length {0}")]
    BadHardwareLength(u8),
    /// The options area does not start with the DHCP magic cookie (a plain BOOTP packet).
    #[error("missing DHCP magic cookie")]
    BadMagicCookie,
    /// A critical option (message type, server id, lease times, subnet mask, overload) has a
    /// length or value that makes no sense.
    #[error("malformed option {code}")]
    BadOption {
        /// Option code.
        code: u8,
    },
    /// The message-type option (53) is missing.
    #[error("no DHCP message type")]
    NoMessageType,
    /// The transaction id is not the one of the pending request.
    #[error("transaction id {got:#010x} does not match {expected:#010x}")]
    WrongXid {
        /// The id we sent.
        expected: u32,
        /// The id in the packet.
        got: u32,
    },
    /// `chaddr` is not our hardware address.
    #[error("reply is for another client hardware address")]
    WrongClient,
    /// The packet is well formed but not what the current state waits for.
    #[error("unexpected {what} in state {state}")]
    Unexpected {
        /// The message type received (or a description of it).
        what: &'static str,
        /// The client state.
        state: &'static str,
    },
    /// An OFFER or ACK that cannot become a lease (no address, no server id …).
    #[error("unusable lease: {0}")]
    BadLease(&'static str),
    /// An IPv4/UDP frame that is not a DHCP datagram for us.
    #[error("not a DHCP datagram: {0}")]
    Frame(&'static str),
}
