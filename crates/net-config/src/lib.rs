//! Linux network configuration for the virga guest.
//!
//! Pipeline position: **PID 1 → network stage → metadata, SSH, status**. PID 1 calls this crate
//! to bring NICs up and configure them, before it fetches metadata (which needs the network):
//!
//! * [`run_dhcp`] / [`DhcpService`]: the DHCPv4 driver around the sans-IO `dhcp-client` state
//!   machine — raw `AF_PACKET` socket until an address exists, UDP afterwards, a deadline for
//!   acquisition, then a renewal loop and RELEASE at shutdown. Leases are applied through
//!   netlink: address (with the lease as its kernel lifetime), routes (option 121, else option
//!   3), MTU (option 26) and `/etc/resolv.conf` (options 6, 119, 15).
//! * [`apply_static`]: a [`StaticConfig`] (what network-config v1/v2 and network_data.json are
//!   mapped onto): addresses, routes, MTU, DNS, VLANs and bonds.
//! * [`ipv6`]: router advertisements and SLAAC are the kernel's; this enables and reports them.
//! * [`NetStatus`]: interfaces, addresses, routes and leases for the status JSON, and the
//!   CirrOS-style `if-info:` / `ip-route:` / `ip-route6:` console lines.
//! * [`Rtnl`]: the small hand-rolled rtnetlink client underneath (no netlink crate: size).
//!
//! Behaviour, options and the test setup are documented in `docs/network.md`.

#![warn(missing_docs)]

mod addr;
mod dhcp;
mod error;
pub mod ipv6;
mod link;
mod netlink;
mod resolv;
mod route;
mod static_config;
mod status;
mod sys;

pub mod acpi;
#[doc(hidden)]
pub mod fuzzing;

pub use addr::{Address, IpFamily};
pub use dhcp::{
    DhcpEvent, DhcpEventKind, DhcpOptions, DhcpService, Interfaces, LeaseOutcome, MIN_DHCP_MTU,
    lease_routes, run_dhcp,
};
pub use dhcp_client::{Lease, State as DhcpState};
pub use error::NetConfigError;
pub use link::{BondMode, Link, OperState};
pub use netlink::Rtnl;
pub use resolv::{
    RESOLV_CONF, ResolvConf, is_valid_domain, set_hostname, write_atomic, write_resolv_conf,
};
pub use route::{
    RT_TABLE_MAIN, RTPROT_BOOT, RTPROT_DHCP, RTPROT_KERNEL, RTPROT_RA, RTPROT_STATIC, RouteEntry,
    RouteSpec,
};
pub use static_config::{
    InterfaceKind, InterfaceMatch, IpPrefix, StaticConfig, StaticInterface, StaticOutcome,
    StaticRoute, apply_static,
};
pub use status::{
    AddressStatus, InterfaceStatus, LeaseStatus, NetStatus, RouteStatus, format_mac, if_info_line,
    route_line,
};

/// Waits until `index` has carrier or `deadline` passes; true if it has.
pub fn wait_for_carrier(
    rtnl: &mut Rtnl,
    index: u32,
    deadline: std::time::Instant,
) -> Result<bool, NetConfigError> {
    loop {
        let up = rtnl
            .links()?
            .iter()
            .any(|l| l.index == index && l.has_carrier());
        if up || std::time::Instant::now() >= deadline {
            return Ok(up);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
