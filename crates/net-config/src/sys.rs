//! The one place that needs `unsafe`: rustix has no `sockaddr_ll` (AF_PACKET address) type,
//! so we provide one through its `SocketAddrArg` extension trait.
#![allow(unsafe_code)]

use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};

const AF_PACKET: u16 = 17;

/// `struct sockaddr_ll` from `<linux/if_packet.h>`.
#[repr(C)]
struct SockaddrLl {
    sll_family: u16,
    sll_protocol: u16,
    sll_ifindex: i32,
    sll_hatype: u16,
    sll_pkttype: u8,
    sll_halen: u8,
    sll_addr: [u8; 8],
}

/// A link-layer (AF_PACKET) socket address: interface, EtherType and destination MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkAddr {
    /// Interface index.
    pub ifindex: u32,
    /// EtherType in host order (e.g. 0x0800).
    pub ethertype: u16,
    /// Destination hardware address (ignored by `bind`).
    pub mac: [u8; 6],
}

// SAFETY: `with_sockaddr` calls `f` with a pointer to a fully initialised `sockaddr_ll` that
// lives on the stack for the whole call, and with exactly its size; that is the valid
// AF_PACKET socket address the trait contract asks for.
unsafe impl SocketAddrArg for LinkAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&self.mac);
        let sa = SockaddrLl {
            sll_family: AF_PACKET,
            sll_protocol: self.ethertype.to_be(),
            sll_ifindex: i32::try_from(self.ifindex).unwrap_or(0),
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        };
        // `SockaddrLl` is 20 bytes; the cast cannot truncate.
        f(
            std::ptr::from_ref(&sa).cast(),
            size_of::<SockaddrLl>() as SocketAddrLen,
        )
    }
}

/// `setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)`: joins a netlink multicast group
/// by id (groups above 32 cannot be joined through `bind`). rustix has no wrapper for it.
pub(crate) fn join_netlink_group(
    fd: std::os::fd::BorrowedFd<'_>,
    group: u32,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const SOL_NETLINK: i32 = 270;
    const NETLINK_ADD_MEMBERSHIP: i32 = 1;
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const u32, len: u32) -> i32;
    }
    // SAFETY: `fd` is an open socket borrowed for the call; `group` lives on the stack for its
    // duration and the length passed is its size. The kernel only reads the value.
    let r = unsafe {
        setsockopt(
            fd.as_raw_fd(),
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            &raw const group,
            4,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(size_of::<SockaddrLl>(), 20);
        let a = LinkAddr {
            ifindex: 3,
            ethertype: 0x0800,
            mac: [0xff; 6],
        };
        let any = a.as_any();
        assert_eq!(any.address_family(), rustix::net::AddressFamily::PACKET);
        assert_eq!(any.addr_len(), 20);
    }
}
