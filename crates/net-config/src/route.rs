//! Routes: list, add/replace, delete.

use std::net::IpAddr;

use serde::Serialize;

use crate::addr::{IpFamily, SCOPE_LINK, SCOPE_UNIVERSE, ip_bytes, ip_from};
use crate::error::NetConfigError;
use crate::netlink::{
    MsgBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, RTM_DELROUTE, RTM_GETROUTE,
    RTM_NEWROUTE, Rtnl, attr_u32, attrs,
};

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_CACHEINFO: u16 = 12;
const RTA_TABLE: u16 = 15;
const RTA_PREF: u16 = 20;
const RTAX_MTU: u16 = 2;
const RTAX_HOPLIMIT: u16 = 10;

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// `RTPROT_KERNEL`: added by the kernel (prefix routes).
pub const RTPROT_KERNEL: u8 = 2;
/// `RTPROT_BOOT`.
pub const RTPROT_BOOT: u8 = 3;
/// `RTPROT_STATIC`: static configuration.
pub const RTPROT_STATIC: u8 = 4;
/// `RTPROT_RA`: IPv6 router advertisement.
pub const RTPROT_RA: u8 = 9;
/// `RTPROT_DHCP`: DHCP.
pub const RTPROT_DHCP: u8 = 16;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;

/// A route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// Address family.
    pub family: IpFamily,
    /// Destination network; `None` for the default route.
    pub destination: Option<IpAddr>,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
    /// Routing table.
    pub table: u32,
    /// `RTPROT_*`.
    pub protocol: u8,
    /// `RT_SCOPE_*`.
    pub scope: u8,
    /// `RTN_*` route type.
    pub route_type: u8,
    /// IPv6 router preference (`RTA_PREF`: 0 medium, 1 high, 3 low).
    pub pref: Option<u8>,
    /// `RTNH_F_*` flags (`onlink`, `linkdown` …).
    pub flags: u32,
    /// Seconds until the kernel drops the route (RA routes), if it expires.
    pub expires_secs: Option<i32>,
    /// Route MTU metric, if set.
    pub mtu: Option<u32>,
    /// Hop limit metric, if set (RA routes).
    pub hoplimit: Option<u32>,
}

/// A route to install in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network (`0.0.0.0` / `::` with length 0 for the default route).
    pub destination: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Next hop; `None` for an on-link route.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: u32,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Metric.
    pub metric: Option<u32>,
    /// `RTPROT_*` to tag the route with ([`RTPROT_DHCP`], [`RTPROT_STATIC`] …).
    pub protocol: u8,
}

fn rtmsg(family: u8, dst_len: u8, protocol: u8, scope: u8, rtype: u8) -> [u8; 12] {
    [
        family,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN as u8,
        protocol,
        scope,
        rtype,
        0,
        0,
        0,
        0,
    ]
}

/// Parses an `RTM_NEWROUTE` payload.
pub(crate) fn parse_route(p: &[u8]) -> Option<RouteEntry> {
    let h = p.get(..12)?;
    let family = match h[0] {
        crate::addr::AF_INET => IpFamily::V4,
        crate::addr::AF_INET6 => IpFamily::V6,
        _ => return None,
    };
    let mut r = RouteEntry {
        family,
        destination: None,
        prefix_len: h[1],
        gateway: None,
        oif: None,
        prefsrc: None,
        metric: None,
        table: u32::from(h[4]),
        protocol: h[5],
        scope: h[6],
        route_type: h[7],
        pref: None,
        flags: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
        expires_secs: None,
        mtu: None,
        hoplimit: None,
    };
    for (ty, data) in attrs(&p[12..]) {
        match ty {
            RTA_DST => r.destination = ip_from(h[0], data),
            RTA_GATEWAY => r.gateway = ip_from(h[0], data),
            RTA_PREFSRC => r.prefsrc = ip_from(h[0], data),
            RTA_OIF => r.oif = attr_u32(data),
            RTA_PRIORITY => r.metric = attr_u32(data),
            RTA_TABLE => r.table = attr_u32(data).unwrap_or(r.table),
            RTA_PREF => r.pref = data.first().copied(),
            RTA_CACHEINFO if data.len() >= 12 => {
                // struct rta_cacheinfo: clntref, lastuse, expires (USER_HZ = 100 ticks/s) …
                let expires = i32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                r.expires_secs = (expires != 0).then_some(expires / 100);
            }
            RTA_METRICS => {
                for (mty, mdata) in attrs(data) {
                    match mty {
                        RTAX_MTU => r.mtu = attr_u32(mdata),
                        RTAX_HOPLIMIT => r.hoplimit = attr_u32(mdata),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

fn route_msg(ty: u16, flags: u16, spec: &RouteSpec) -> Result<MsgBuilder, NetConfigError> {
    let family = IpFamily::of(&spec.destination);
    let max = if family == IpFamily::V4 { 32 } else { 128 };
    if spec.prefix_len > max || spec.gateway.is_some_and(|g| IpFamily::of(&g) != family) {
        return Err(NetConfigError::Invalid(format!(
            "route {}/{} via {:?}",
            spec.destination, spec.prefix_len, spec.gateway
        )));
    }
    // On-link IPv4 routes have link scope; everything else universe (as `ip route` does).
    let scope = if spec.gateway.is_none() && family == IpFamily::V4 {
        SCOPE_LINK
    } else {
        SCOPE_UNIVERSE
    };
    let mut msg = MsgBuilder::new(ty, flags).header(&rtmsg(
        family.af(),
        spec.prefix_len,
        spec.protocol,
        scope,
        RTN_UNICAST,
    ));
    if spec.prefix_len > 0 {
        msg.attr(RTA_DST, &ip_bytes(&spec.destination));
    }
    if let Some(gw) = spec.gateway {
        msg.attr(RTA_GATEWAY, &ip_bytes(&gw));
    }
    msg.attr_u32(RTA_OIF, spec.oif);
    if let Some(src) = spec.prefsrc {
        msg.attr(RTA_PREFSRC, &ip_bytes(&src));
    }
    if let Some(m) = spec.metric {
        msg.attr_u32(RTA_PRIORITY, m);
    }
    Ok(msg)
}

impl Rtnl {
    /// Routes of one family, or of both with `None` (all tables).
    pub fn routes(&mut self, family: Option<IpFamily>) -> Result<Vec<RouteEntry>, NetConfigError> {
        let af = family.map_or(0, IpFamily::af);
        let msg = MsgBuilder::new(RTM_GETROUTE, NLM_F_DUMP).header(&rtmsg(af, 0, 0, 0, 0));
        let payloads = self.dump(msg, RTM_NEWROUTE, "list routes")?;
        Ok(payloads.iter().filter_map(|p| parse_route(p)).collect())
    }

    /// Adds or replaces a route in the main table.
    pub fn add_route(&mut self, spec: &RouteSpec) -> Result<(), NetConfigError> {
        let msg = route_msg(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, spec)?;
        self.request(msg, "add route")
    }

    /// Deletes a route from the main table.
    pub fn del_route(&mut self, spec: &RouteSpec) -> Result<(), NetConfigError> {
        let msg = route_msg(RTM_DELROUTE, NLM_F_ACK, spec)?;
        self.request(msg, "delete route")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn build_then_parse() {
        let spec = RouteSpec {
            destination: IpAddr::V4(Ipv4Addr::new(192, 168, 5, 0)),
            prefix_len: 24,
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            oif: 4,
            prefsrc: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))),
            metric: Some(1024),
            protocol: RTPROT_DHCP,
        };
        let bytes = route_msg(RTM_NEWROUTE, 0, &spec).unwrap().finish(1);
        let r = parse_route(&bytes[16..]).unwrap();
        assert_eq!(r.destination, Some(spec.destination));
        assert_eq!(r.gateway, spec.gateway);
        assert_eq!(
            (r.oif, r.metric, r.protocol, r.table, r.scope),
            (Some(4), Some(1024), RTPROT_DHCP, RT_TABLE_MAIN, 0)
        );
        // Mixed families are refused.
        let bad = RouteSpec {
            gateway: Some("fe80::1".parse().unwrap()),
            ..spec
        };
        assert!(route_msg(RTM_NEWROUTE, 0, &bad).is_err());
    }
}
