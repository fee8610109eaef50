//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, may change any time).
//!
//! The kernel's netlink replies are parsed by crate-private code; this runs all of it on one
//! arbitrary datagram, the way the socket wrappers would see it.

use crate::acpi;
use crate::addr::parse_address;
use crate::link::parse_link;
use crate::netlink::{
    NLMSG_ERROR, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, dump_step, messages, query_step,
    request_step,
};
use crate::route::parse_route;
use crate::status::NetStatus;

/// What [`netlink_reply`] found, for the fuzz target's checks.
#[derive(Debug, Default)]
pub struct ReplySummary {
    /// Messages the datagram splits into.
    pub messages: usize,
    /// Links, addresses and routes parsed from them.
    pub parsed: usize,
    /// Payloads the dump step collected.
    pub dumped: usize,
    /// Console lines of the status built from the parsed tables.
    pub status_lines: Vec<String>,
}

/// Runs every reply parser on `datagram`: the query, request and dump steps (for the sequence
/// number of its first message, as if that request were pending), the link, address and route
/// parsers on each message of their type, the status built from those tables, and the
/// generic-netlink ACPI parsers.
pub fn netlink_reply(datagram: &[u8]) -> ReplySummary {
    let mut summary = ReplySummary::default();
    let seq = messages(datagram).next().map_or(1, |m| m.seq);
    for ty in [RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE, NLMSG_ERROR] {
        let _ = query_step(datagram, seq, ty, "fuzz");
        let mut out = Vec::new();
        let _ = dump_step(datagram, seq, ty, "fuzz", &mut out);
        summary.dumped += out.len();
    }
    let _ = request_step(datagram, seq, "fuzz");

    let (mut links, mut addrs, mut routes) = (Vec::new(), Vec::new(), Vec::new());
    for m in messages(datagram) {
        summary.messages += 1;
        match m.ty {
            RTM_NEWLINK => links.extend(parse_link(m.payload)),
            RTM_NEWADDR => addrs.extend(parse_address(m.payload)),
            RTM_NEWROUTE => routes.extend(parse_route(m.payload)),
            _ => {}
        }
        let _ = acpi::parse_event(m.payload);
        let _ = acpi::multicast_group(m.payload, "acpi_mc_group");
    }
    summary.parsed = links.len() + addrs.len() + routes.len();
    let status = NetStatus::from_tables(links, addrs, routes, Vec::new());
    summary.status_lines = status.console_lines();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{MsgBuilder, NLMSG_DONE};

    fn msg(ty: u16, header: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = MsgBuilder::new(ty, 0).header(header);
        for (t, d) in attrs {
            b.attr(*t, d);
        }
        b.finish(9)
    }

    #[test]
    fn a_dump_reply_becomes_status_lines() {
        let mut link = vec![0, 0, 1, 0];
        link.extend(2u32.to_ne_bytes());
        link.extend(0x1_0001u32.to_ne_bytes()); // IFF_UP | IFF_LOWER_UP
        link.extend(0u32.to_ne_bytes());
        let mut addr = vec![2, 24, 0, 0];
        addr.extend(2u32.to_ne_bytes());
        let route = [2, 24, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        let mut dgram = msg(RTM_NEWLINK, &link, &[(3, b"eth0\0")]);
        dgram.extend(msg(RTM_NEWADDR, &addr, &[(2, &[10, 0, 0, 5])]));
        dgram.extend(msg(
            RTM_NEWROUTE,
            &route,
            &[
                (1, &[192, 168, 5, 0]),
                (5, &[10, 0, 0, 1]),
                (4, &2u32.to_ne_bytes()),
            ],
        ));
        dgram.extend(msg(NLMSG_DONE, &[0; 4], &[]));
        let s = netlink_reply(&dgram);
        assert_eq!((s.messages, s.parsed), (4, 3));
        let text = s.status_lines.join("\n");
        assert!(text.contains("eth0") && text.contains("10.0.0.5"), "{text}");
        assert!(
            text.contains("192.168.5.0/24 via 10.0.0.1 dev eth0"),
            "{text}"
        );
    }

    #[test]
    fn junk_is_harmless() {
        for n in 0..200 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 73 % 256) as u8).collect();
            let _ = netlink_reply(&junk);
        }
    }
}
