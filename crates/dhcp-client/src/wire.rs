//! The DHCPv4 message codec (RFC 2131 header, RFC 2132 options).
//!
//! [`Message::parse`] is total: every input either parses or yields a [`DhcpError`]. Options that
//! appear several times are concatenated first (RFC 3396), option overload (52) is honoured, and
//! the work and memory are linear in the input. Options are split in two classes:
//!
//! * **critical** (message type 53, server id 54, lease time 51, T1/T2 58/59, subnet mask 1,
//!   requested address 50, overload 52): a malformed one rejects the whole packet, because acting
//!   on a half-understood lease is worse than waiting for the next one;
//! * **informational** (everything else we decode): a malformed one is dropped, its code is
//!   recorded in [`Options::malformed`], and the rest of the packet is used.
//!
//! [`Message::encode`] writes options in a fixed order (53 first), splits values longer than 255
//! bytes into several instances and pads the packet to the 300 bytes BOOTP relays expect.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::domain;
use crate::error::DhcpError;

/// Length of the fixed BOOTP header, up to the options area.
pub const BOOTP_HEADER_LEN: usize = 236;
/// The DHCP magic cookie that starts the options area.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Encoded packets are padded to at least this size (RFC 1542 §2.1).
pub const MIN_PACKET_LEN: usize = 300;
/// The broadcast bit of the `flags` field.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// At most this many entries are kept for list options (addresses, routes).
pub const MAX_LIST_ENTRIES: usize = 64;

/// Option codes this codec understands.
pub mod code {
    /// Padding.
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers (default gateways).
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS_SERVER: u8 = 6;
    /// Host name.
    pub const HOST_NAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Interface MTU.
    pub const INTERFACE_MTU: u8 = 26;
    /// Broadcast address.
    pub const BROADCAST_ADDRESS: u8 = 28;
    /// NTP servers.
    pub const NTP_SERVERS: u8 = 42;
    /// Requested IP address.
    pub const REQUESTED_ADDRESS: u8 = 50;
    /// Lease time, seconds.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload (options continue in `file` and/or `sname`).
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Error or informational message from the server.
    pub const MESSAGE: u8 = 56;
    /// Maximum DHCP message size the client accepts.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal (T1) time, seconds.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time, seconds.
    pub const REBINDING_TIME: u8 = 59;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Domain search list (RFC 3397).
    pub const DOMAIN_SEARCH: u8 = 119;
    /// Classless static routes (RFC 3442).
    pub const CLASSLESS_ROUTES: u8 = 121;
    /// End of options.
    pub const END: u8 = 255;
}

/// BOOTP `op` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Client to server.
    Request = 1,
    /// Server to client.
    Reply = 2,
}

/// DHCP message type (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// DHCPDISCOVER.
    Discover = 1,
    /// DHCPOFFER.
    Offer = 2,
    /// DHCPREQUEST.
    Request = 3,
    /// DHCPDECLINE.
    Decline = 4,
    /// DHCPACK.
    Ack = 5,
    /// DHCPNAK.
    Nak = 6,
    /// DHCPRELEASE.
    Release = 7,
    /// DHCPINFORM.
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    /// Upper-case name as in the RFC (`DHCPOFFER` …), without the prefix.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DISCOVER",
            MessageType::Offer => "OFFER",
            MessageType::Request => "REQUEST",
            MessageType::Decline => "DECLINE",
            MessageType::Ack => "ACK",
            MessageType::Nak => "NAK",
            MessageType::Release => "RELEASE",
            MessageType::Inform => "INFORM",
        }
    }
}

/// One classless static route (option 121). A gateway of `0.0.0.0` means "on link".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClasslessRoute {
    /// Destination network (host bits are zero).
    pub destination: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
    /// Next hop, or `0.0.0.0` for an on-link route.
    pub gateway: Ipv4Addr,
}

/// The options this codec understands. Absent options are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// 53: message type.
    pub message_type: Option<MessageType>,
    /// 1: subnet mask (always contiguous: others are rejected).
    pub subnet_mask: Option<Ipv4Addr>,
    /// 3: routers, in preference order.
    pub routers: Vec<Ipv4Addr>,
    /// 6: DNS servers.
    pub dns_servers: Vec<Ipv4Addr>,
    /// 12: host name.
    pub hostname: Option<String>,
    /// 15: domain name.
    pub domain_name: Option<String>,
    /// 26: interface MTU.
    pub mtu: Option<u16>,
    /// 28: broadcast address.
    pub broadcast: Option<Ipv4Addr>,
    /// 42: NTP servers.
    pub ntp_servers: Vec<Ipv4Addr>,
    /// 50: requested IP address.
    pub requested_address: Option<Ipv4Addr>,
    /// 51: lease time in seconds (`u32::MAX` = infinite).
    pub lease_time: Option<u32>,
    /// 54: server identifier.
    pub server_id: Option<Ipv4Addr>,
    /// 55: parameter request list.
    pub parameter_request_list: Vec<u8>,
    /// 56: message (usually the reason of a NAK).
    pub message: Option<String>,
    /// 57: maximum DHCP message size.
    pub max_message_size: Option<u16>,
    /// 58: T1, seconds.
    pub renewal_time: Option<u32>,
    /// 59: T2, seconds.
    pub rebinding_time: Option<u32>,
    /// 61: client identifier (type byte first).
    pub client_id: Option<Vec<u8>>,
    /// 119: domain search list.
    pub domain_search: Vec<String>,
    /// 121: classless static routes.
    pub classless_routes: Vec<ClasslessRoute>,
    /// Informational options that were present but malformed and therefore ignored (parse only).
    pub malformed: Vec<u8>,
}

/// A DHCP message: the BOOTP header fields we use, and the options.
///
/// `sname` and `file` are not kept (they are only read for option overload) and are zero when
/// encoding. Only Ethernet (`htype` 1, `hlen` 6) is supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Direction.
    pub op: Op,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began acquisition or renewal.
    pub secs: u16,
    /// Flags; only [`FLAG_BROADCAST`] is defined.
    pub flags: u16,
    /// Client address (set when the client has one: RENEWING, REBINDING, RELEASE).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: the address the server offers or assigns.
    pub yiaddr: Ipv4Addr,
    /// Next server (TFTP); informational.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware (MAC) address.
    pub chaddr: [u8; 6],
    /// Options.
    pub options: Options,
}

impl Message {
    /// An empty message of the given direction, with every address unspecified.
    pub fn new(op: Op, xid: u32, chaddr: [u8; 6]) -> Self {
        Message {
            op,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options: Options::default(),
        }
    }

    /// Parses a DHCP message (the UDP payload).
    ///
    /// Checks `op` ∈ {1, 2}, `htype` = 1, `hlen` = 6 and the magic cookie; everything else is
    /// described in the [module documentation](self).
    pub fn parse(buf: &[u8]) -> Result<Message, DhcpError> {
        if buf.len() < BOOTP_HEADER_LEN + MAGIC_COOKIE.len() {
            return Err(DhcpError::Truncated {
                what: "BOOTP header",
            });
        }
        let op = match buf[0] {
            1 => Op::Request,
            2 => Op::Reply,
            other => return Err(DhcpError::BadOp(other)),
        };
        if buf[1] != 1 {
            return Err(DhcpError::BadHardwareType(buf[1]));
        }
        if buf[2] != 6 {
            return Err(DhcpError::BadHardwareLength(buf[2]));
        }
        if buf[236..240] != MAGIC_COOKIE {
            return Err(DhcpError::BadMagicCookie);
        }
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&buf[28..34]);

        let mut raw = RawOptions::default();
        let overload = raw.scan(&buf[240..], true)?;
        if overload & 1 != 0 {
            raw.scan(&buf[108..236], false)?;
        }
        if overload & 2 != 0 {
            raw.scan(&buf[44..108], false)?;
        }

        Ok(Message {
            op,
            xid: be32(&buf[4..8]),
            secs: u16::from_be_bytes([buf[8], buf[9]]),
            flags: u16::from_be_bytes([buf[10], buf[11]]),
            ciaddr: addr_at(buf, 12),
            yiaddr: addr_at(buf, 16),
            siaddr: addr_at(buf, 20),
            giaddr: addr_at(buf, 24),
            chaddr,
            options: raw.decode()?,
        })
    }

    /// Parses a server reply and checks it answers our pending transaction: `op` must be
    /// BOOTREPLY, `xid` must be `xid`, `chaddr` must be `chaddr`, and option 53 must be present.
    pub fn parse_reply(buf: &[u8], xid: u32, chaddr: [u8; 6]) -> Result<Message, DhcpError> {
        let msg = Message::parse(buf)?;
        if msg.op != Op::Reply {
            return Err(DhcpError::BadOp(msg.op as u8));
        }
        if msg.xid != xid {
            return Err(DhcpError::WrongXid {
                expected: xid,
                got: msg.xid,
            });
        }
        if msg.chaddr != chaddr {
            return Err(DhcpError::WrongClient);
        }
        if msg.options.message_type.is_none() {
            return Err(DhcpError::NoMessageType);
        }
        Ok(msg)
    }

    /// Encodes the message, padded to at least [`MIN_PACKET_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_PACKET_LEN + 64);
        out.push(self.op as u8);
        out.push(1); // htype: Ethernet
        out.push(6); // hlen
        out.push(0); // hops
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&a.octets());
        }
        out.extend_from_slice(&self.chaddr);
        out.resize(BOOTP_HEADER_LEN, 0); // chaddr padding, sname, file
        out.extend_from_slice(&MAGIC_COOKIE);
        self.options.encode_into(&mut out);
        out.push(code::END);
        if out.len() < MIN_PACKET_LEN {
            out.resize(MIN_PACKET_LEN, code::PAD);
        }
        out
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Options collected from the packet, each code's instances concatenated (RFC 3396).
#[derive(Default)]
struct RawOptions {
    entries: Vec<(u8, Vec<u8>)>,
}

impl RawOptions {
    /// Reads one options area. Returns the overload value found (main area only), or 0.
    fn scan(&mut self, area: &[u8], main: bool) -> Result<u8, DhcpError> {
        let mut overload = 0;
        let mut i = 0;
        while i < area.len() {
            let c = area[i];
            if c == code::PAD {
                i += 1;
                continue;
            }
            if c == code::END {
                break;
            }
            let len = usize::from(*area.get(i + 1).ok_or(DhcpError::Truncated {
                what: "option length",
            })?);
            let data = area.get(i + 2..i + 2 + len).ok_or(DhcpError::Truncated {
                what: "option data",
            })?;
            if c == code::OVERLOAD {
                if !main || data.len() != 1 || !(1..=3).contains(&data[0]) {
                    return Err(DhcpError::BadOption { code: c });
                }
                overload = data[0];
            } else {
                match self.entries.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, v)) => v.extend_from_slice(data),
                    None => self.entries.push((c, data.to_vec())),
                }
            }
            i += 2 + len;
        }
        Ok(overload)
    }

    fn decode(self) -> Result<Options, DhcpError> {
        let mut o = Options::default();
        for (c, data) in &self.entries {
            let c = *c;
            let data = data.as_slice();
            let bad = DhcpError::BadOption { code: c };
            match c {
                // Critical: a malformed value rejects the packet.
                code::MESSAGE_TYPE => {
                    let [t] = data else { return Err(bad) };
                    o.message_type = Some(MessageType::from_u8(*t).ok_or(bad)?);
                }
                code::SERVER_ID => o.server_id = Some(one_addr(data).ok_or(bad)?),
                code::REQUESTED_ADDRESS => o.requested_address = Some(one_addr(data).ok_or(bad)?),
                code::LEASE_TIME => o.lease_time = Some(u32_of(data).ok_or(bad)?),
                code::RENEWAL_TIME => o.renewal_time = Some(u32_of(data).ok_or(bad)?),
                code::REBINDING_TIME => o.rebinding_time = Some(u32_of(data).ok_or(bad)?),
                code::SUBNET_MASK => {
                    let mask = one_addr(data).ok_or(bad.clone())?;
                    if prefix_len_of_mask(mask).is_none() {
                        return Err(bad);
                    }
                    o.subnet_mask = Some(mask);
                }
                // Informational: a malformed value is dropped and noted.
                _ => {
                    let ok = match c {
                        code::ROUTER => set(&mut o.routers, addr_list(data)),
                        code::DNS_SERVER => set(&mut o.dns_servers, addr_list(data)),
                        code::NTP_SERVERS => set(&mut o.ntp_servers, addr_list(data)),
                        code::HOST_NAME => set_opt(&mut o.hostname, text(data)),
                        code::DOMAIN_NAME => set_opt(&mut o.domain_name, text(data)),
                        code::MESSAGE => set_opt(&mut o.message, text(data)),
                        code::INTERFACE_MTU => set_opt(&mut o.mtu, u16_of(data)),
                        code::MAX_MESSAGE_SIZE => set_opt(&mut o.max_message_size, u16_of(data)),
                        code::BROADCAST_ADDRESS => set_opt(&mut o.broadcast, one_addr(data)),
                        code::PARAMETER_REQUEST_LIST => {
                            o.parameter_request_list = data.to_vec();
                            true
                        }
                        code::CLIENT_ID => {
                            let ok = !data.is_empty();
                            if ok {
                                o.client_id = Some(data.to_vec());
                            }
                            ok
                        }
                        code::DOMAIN_SEARCH => {
                            set(&mut o.domain_search, domain::decode_search_list(data))
                        }
                        code::CLASSLESS_ROUTES => {
                            set(&mut o.classless_routes, decode_classless_routes(data))
                        }
                        _ => true, // unknown options are ignored
                    };
                    if !ok {
                        o.malformed.push(c);
                    }
                }
            }
        }
        Ok(o)
    }
}

fn set<T>(slot: &mut Vec<T>, v: Option<Vec<T>>) -> bool {
    match v {
        Some(v) => {
            *slot = v;
            true
        }
        None => false,
    }
}

fn set_opt<T>(slot: &mut Option<T>, v: Option<T>) -> bool {
    let ok = v.is_some();
    *slot = v;
    ok
}

fn one_addr(d: &[u8]) -> Option<Ipv4Addr> {
    let [a, b, c, e] = d else { return None };
    Some(Ipv4Addr::new(*a, *b, *c, *e))
}

fn u32_of(d: &[u8]) -> Option<u32> {
    let [a, b, c, e] = d else { return None };
    Some(u32::from_be_bytes([*a, *b, *c, *e]))
}

fn u16_of(d: &[u8]) -> Option<u16> {
    let [a, b] = d else { return None };
    Some(u16::from_be_bytes([*a, *b]))
}

fn addr_list(d: &[u8]) -> Option<Vec<Ipv4Addr>> {
    if d.is_empty() || !d.len().is_multiple_of(4) {
        return None;
    }
    Some(
        d.chunks_exact(4)
            .take(MAX_LIST_ENTRIES)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect(),
    )
}

/// NVT ASCII text: trailing NULs are stripped (some servers send them); control characters and
/// non-ASCII bytes make the option malformed.
fn text(d: &[u8]) -> Option<String> {
    let end = d.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let d = &d[..end];
    if d.is_empty() || !d.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    Some(d.iter().map(|&b| char::from(b)).collect())
}

/// The prefix length of a contiguous netmask, or `None` if the mask has holes.
pub fn prefix_len_of_mask(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) == 0 {
        // `ones` is at most 32.
        Some(ones as u8)
    } else {
        None
    }
}

/// The netmask for a prefix length (clamped to 32).
pub fn mask_of_prefix_len(prefix_len: u8) -> Ipv4Addr {
    let p = u32::from(prefix_len.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0))
}

/// Decodes option 121 data. `None` if any entry is malformed (RFC 3442 §3: then the whole option
/// is ignored) or has host bits set in its destination.
fn decode_classless_routes(d: &[u8]) -> Option<Vec<ClasslessRoute>> {
    let mut routes = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let width = d[i];
        if width > 32 {
            return None;
        }
        let sig = usize::from(width).div_ceil(8);
        let dest = d.get(i + 1..i + 1 + sig)?;
        let gw = d.get(i + 1 + sig..i + 5 + sig)?;
        let mut octets = [0u8; 4];
        octets[..sig].copy_from_slice(dest);
        let destination = Ipv4Addr::from(octets);
        if u32::from(destination) & !u32::from(mask_of_prefix_len(width)) != 0 {
            return None;
        }
        if routes.len() < MAX_LIST_ENTRIES {
            routes.push(ClasslessRoute {
                destination,
                prefix_len: width,
                gateway: Ipv4Addr::new(gw[0], gw[1], gw[2], gw[3]),
            });
        }
        i += 5 + sig;
    }
    if routes.is_empty() {
        None
    } else {
        Some(routes)
    }
}

fn encode_classless_routes(routes: &[ClasslessRoute]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in routes {
        let width = r.prefix_len.min(32);
        let sig = usize::from(width).div_ceil(8);
        out.push(width);
        out.extend_from_slice(&r.destination.octets()[..sig]);
        out.extend_from_slice(&r.gateway.octets());
    }
    out
}

/// Writes one option, split into instances of at most 255 bytes (RFC 3396). Empty values are
/// skipped (no option here has a meaningful empty value).
fn put(out: &mut Vec<u8>, c: u8, data: &[u8]) {
    for chunk in data.chunks(255) {
        out.push(c);
        // `chunks(255)` guarantees the length fits.
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn put_addrs(out: &mut Vec<u8>, c: u8, addrs: &[Ipv4Addr]) {
    let data: Vec<u8> = addrs.iter().flat_map(|a| a.octets()).collect();
    put(out, c, &data);
}

impl Options {
    /// Appends the options (without the END marker) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Some(t) = self.message_type {
            put(out, code::MESSAGE_TYPE, &[t as u8]);
        }
        if let Some(a) = self.server_id {
            put(out, code::SERVER_ID, &a.octets());
        }
        if let Some(id) = &self.client_id {
            put(out, code::CLIENT_ID, id);
        }
        if let Some(a) = self.requested_address {
            put(out, code::REQUESTED_ADDRESS, &a.octets());
        }
        if let Some(s) = self.max_message_size {
            put(out, code::MAX_MESSAGE_SIZE, &s.to_be_bytes());
        }
        if let Some(t) = self.lease_time {
            put(out, code::LEASE_TIME, &t.to_be_bytes());
        }
        if let Some(t) = self.renewal_time {
            put(out, code::RENEWAL_TIME, &t.to_be_bytes());
        }
        if let Some(t) = self.rebinding_time {
            put(out, code::REBINDING_TIME, &t.to_be_bytes());
        }
        if let Some(m) = self.subnet_mask {
            put(out, code::SUBNET_MASK, &m.octets());
        }
        put_addrs(out, code::ROUTER, &self.routers);
        put_addrs(out, code::DNS_SERVER, &self.dns_servers);
        put_addrs(out, code::NTP_SERVERS, &self.ntp_servers);
        if let Some(h) = &self.hostname {
            put(out, code::HOST_NAME, h.as_bytes());
        }
        if let Some(d) = &self.domain_name {
            put(out, code::DOMAIN_NAME, d.as_bytes());
        }
        if let Some(m) = self.mtu {
            put(out, code::INTERFACE_MTU, &m.to_be_bytes());
        }
        if let Some(b) = self.broadcast {
            put(out, code::BROADCAST_ADDRESS, &b.octets());
        }
        if let Some(m) = &self.message {
            put(out, code::MESSAGE, m.as_bytes());
        }
        put(
            out,
            code::DOMAIN_SEARCH,
            &domain::encode_search_list(&self.domain_search),
        );
        put(
            out,
            code::CLASSLESS_ROUTES,
            &encode_classless_routes(&self.classless_routes),
        );
        put(
            out,
            code::PARAMETER_REQUEST_LIST,
            &self.parameter_request_list,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn offer() -> Message {
        let mut m = Message::new(Op::Reply, 0xdead_beef, MAC);
        m.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        m.options.message_type = Some(MessageType::Offer);
        m.options.server_id = Some(Ipv4Addr::new(10, 0, 2, 2));
        m.options.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        m.options.routers = vec![Ipv4Addr::new(10, 0, 2, 2)];
        m.options.dns_servers = vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)];
        m.options.lease_time = Some(86400);
        m.options.mtu = Some(1450);
        m.options.domain_search = vec![String::from("example.org")];
        m.options.classless_routes = vec![
            ClasslessRoute {
                destination: Ipv4Addr::new(169, 254, 169, 254),
                prefix_len: 32,
                gateway: Ipv4Addr::new(10, 0, 2, 2),
            },
            ClasslessRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Ipv4Addr::new(10, 0, 2, 2),
            },
        ];
        m
    }

    #[test]
    fn round_trip() {
        let m = offer();
        let bytes = m.encode();
        assert!(bytes.len() >= MIN_PACKET_LEN);
        assert_eq!(Message::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn header_checks() {
        let good = offer().encode();
        let mut b = good.clone();
        b[0] = 3;
        assert_eq!(Message::parse(&b), Err(DhcpError::BadOp(3)));
        let mut b = good.clone();
        b[1] = 6;
        assert_eq!(Message::parse(&b), Err(DhcpError::BadHardwareType(6)));
        let mut b = good.clone();
        b[2] = 16;
        assert_eq!(Message::parse(&b), Err(DhcpError::BadHardwareLength(16)));
        let mut b = good.clone();
        b[236] = 0;
        assert_eq!(Message::parse(&b), Err(DhcpError::BadMagicCookie));
        assert!(matches!(
            Message::parse(&good[..239]),
            Err(DhcpError::Truncated { .. })
        ));
        assert_eq!(
            Message::parse_reply(&good, 1, MAC),
            Err(DhcpError::WrongXid {
                expected: 1,
                got: 0xdead_beef
            })
        );
        assert_eq!(
            Message::parse_reply(&good, 0xdead_beef, [0; 6]),
            Err(DhcpError::WrongClient)
        );
        let req = Message::new(Op::Request, 0xdead_beef, MAC);
        let mut req = req;
        req.options.message_type = Some(MessageType::Request);
        assert_eq!(
            Message::parse_reply(&req.encode(), 0xdead_beef, MAC),
            Err(DhcpError::BadOp(1))
        );
        assert!(Message::parse_reply(&good, 0xdead_beef, MAC).is_ok());
    }

    fn packet_with_options(opts: &[u8]) -> Vec<u8> {
        let mut b = Message::new(Op::Reply, 7, MAC).encode();
        b.truncate(240);
        b.extend_from_slice(opts);
        b
    }

    #[test]
    fn truncated_and_bad_options() {
        let b = packet_with_options(&[53, 1]);
        assert_eq!(
            Message::parse(&b),
            Err(DhcpError::Truncated {
                what: "option data"
            })
        );
        let b = packet_with_options(&[53]);
        assert_eq!(
            Message::parse(&b),
            Err(DhcpError::Truncated {
                what: "option length"
            })
        );
        let b = packet_with_options(&[53, 2, 5, 5, 255]);
        assert_eq!(Message::parse(&b), Err(DhcpError::BadOption { code: 53 }));
        let b = packet_with_options(&[53, 1, 99, 255]);
        assert_eq!(Message::parse(&b), Err(DhcpError::BadOption { code: 53 }));
        let b = packet_with_options(&[51, 3, 0, 0, 1, 255]);
        assert_eq!(Message::parse(&b), Err(DhcpError::BadOption { code: 51 }));
        // Non-contiguous netmask.
        let b = packet_with_options(&[1, 4, 255, 0, 255, 0, 255]);
        assert_eq!(Message::parse(&b), Err(DhcpError::BadOption { code: 1 }));
        // Informational options: dropped and noted, the packet survives.
        let b = packet_with_options(&[53, 1, 5, 3, 3, 10, 0, 0, 26, 1, 5, 12, 2, b'a', b'\n', 255]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.options.message_type, Some(MessageType::Ack));
        assert!(m.options.routers.is_empty());
        assert_eq!(m.options.mtu, None);
        assert_eq!(m.options.hostname, None);
        assert_eq!(m.options.malformed, vec![3, 26, 12]);
    }

    #[test]
    fn missing_end_and_trailing_nul_are_tolerated() {
        let b = packet_with_options(&[53, 1, 2, 12, 5, b'h', b'o', b's', b't', 0]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.options.hostname.as_deref(), Some("host"));
    }

    #[test]
    fn split_options_are_concatenated() {
        // DNS servers split across two instances of option 6 (RFC 3396).
        let b = packet_with_options(&[6, 4, 1, 1, 1, 1, 53, 1, 2, 6, 4, 8, 8, 8, 8, 255]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(
            m.options.dns_servers,
            vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)]
        );
        // A long value is split on encode and joined on parse.
        let mut m = offer();
        m.options.domain_search = (0..40)
            .map(|i| alloc::format!("d{i}.example.org"))
            .collect();
        m.options
            .domain_search
            .truncate(crate::domain::MAX_SEARCH_DOMAINS);
        let bytes = m.encode();
        assert_eq!(
            Message::parse(&bytes).unwrap().options.domain_search,
            m.options.domain_search
        );
    }

    #[test]
    fn option_overload() {
        let mut b = Message::new(Op::Reply, 7, MAC).encode();
        b.truncate(240);
        b.extend_from_slice(&[53, 1, 2, 52, 1, 3, 255]);
        // file (108..236) holds the hostname, sname (44..108) the MTU.
        b[108..114].copy_from_slice(&[12, 3, b'v', b'm', b'1', 255]);
        b[44..49].copy_from_slice(&[26, 2, 0x05, 0xdc, 255]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.options.hostname.as_deref(), Some("vm1"));
        assert_eq!(m.options.mtu, Some(1500));
        // Overload with a bad value, or inside the file field, is rejected.
        let mut bad = b.clone();
        bad[245] = 4;
        assert_eq!(Message::parse(&bad), Err(DhcpError::BadOption { code: 52 }));
        let mut nested = b.clone();
        nested[108..111].copy_from_slice(&[52, 1, 2]);
        assert_eq!(
            Message::parse(&nested),
            Err(DhcpError::BadOption { code: 52 })
        );
    }

    #[test]
    fn classless_routes_rfc3442_encoding() {
        // 0/0 via 10.0.0.1, 10.0.0.0/8 via 10.0.0.254, 192.168.5.0/24 on-link.
        let data = [
            0, 10, 0, 0, 1, 8, 10, 10, 0, 0, 254, 24, 192, 168, 5, 0, 0, 0, 0,
        ];
        let r = decode_classless_routes(&data).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].prefix_len, 0);
        assert_eq!(r[1].destination, Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(r[1].gateway, Ipv4Addr::new(10, 0, 0, 254));
        assert_eq!(r[2].destination, Ipv4Addr::new(192, 168, 5, 0));
        assert_eq!(r[2].gateway, Ipv4Addr::UNSPECIFIED);
        assert_eq!(encode_classless_routes(&r), data);
        assert_eq!(
            decode_classless_routes(&[33, 0, 0, 0, 0, 0]),
            None,
            "width > 32"
        );
        assert_eq!(decode_classless_routes(&[24, 10, 0]), None, "truncated");
        assert_eq!(
            decode_classless_routes(&[8, 10, 1, 2, 3]),
            None,
            "truncated gateway"
        );
        assert_eq!(
            decode_classless_routes(&[7, 11, 1, 2, 3, 4]),
            None,
            "host bits set"
        );
    }

    #[test]
    fn masks() {
        assert_eq!(
            prefix_len_of_mask(Ipv4Addr::new(255, 255, 255, 0)),
            Some(24)
        );
        assert_eq!(prefix_len_of_mask(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(
            prefix_len_of_mask(Ipv4Addr::new(255, 255, 255, 255)),
            Some(32)
        );
        assert_eq!(prefix_len_of_mask(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_of_prefix_len(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask_of_prefix_len(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(mask_of_prefix_len(40), Ipv4Addr::BROADCAST);
    }
}
