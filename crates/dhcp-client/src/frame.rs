//! IPv4 + UDP framing for DHCP over raw packet sockets.
//!
//! Before an interface has an address the kernel's UDP stack cannot send from `0.0.0.0` to
//! `255.255.255.255` on a chosen interface, nor deliver replies addressed to an address it does
//! not own, so drivers use a link-layer socket and frame the datagrams themselves.
//! [`decode_udp_ipv4`] is total like the DHCP codec.
//!
//! The UDP checksum of received datagrams is **not** verified: on virtual links (veth,
//! virtio-net with offloads) the kernel hands packet sockets datagrams whose checksum is still
//! only partially computed, and telling those apart needs `PACKET_AUXDATA`. The IPv4 header
//! checksum is verified; DHCP's own xid/chaddr matching does the rest.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::error::DhcpError;

/// IPv4 header length without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
const PROTO_UDP: u8 = 17;

/// A UDP datagram carried in an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// The Internet checksum (RFC 1071) of `data`, continuing from `sum`.
fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn checksum_finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits by the loop above.
    !(sum as u16)
}

/// Builds an IPv4 packet holding a UDP datagram (TTL 64, DF clear, checksums filled in).
///
/// Payloads that would not fit an IPv4 packet are truncated to fit (DHCP messages are far
/// smaller).
pub fn encode_udp_ipv4(d: &UdpDatagram<'_>) -> Vec<u8> {
    let payload = &d.payload[..d
        .payload
        .len()
        .min(65_535 - IPV4_HEADER_LEN - UDP_HEADER_LEN)];
    let udp_len = UDP_HEADER_LEN + payload.len();
    let total = IPV4_HEADER_LEN + udp_len;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5; TOS low-delay like dhcpcd
    // Both lengths are bounded by the truncation above.
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    out.extend_from_slice(&[64, PROTO_UDP, 0, 0]); // TTL, protocol, checksum (below)
    out.extend_from_slice(&d.src.octets());
    out.extend_from_slice(&d.dst.octets());
    let ip_sum = checksum_finish(checksum_add(0, &out));
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    out.extend_from_slice(&d.src_port.to_be_bytes());
    out.extend_from_slice(&d.dst_port.to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // Pseudo-header: src, dst, zero, protocol, UDP length.
    let mut sum = checksum_add(0, &d.src.octets());
    sum = checksum_add(sum, &d.dst.octets());
    sum = checksum_add(sum, &[0, PROTO_UDP]);
    sum = checksum_add(sum, &(udp_len as u16).to_be_bytes());
    sum = checksum_add(sum, &out[IPV4_HEADER_LEN..]);
    let udp_sum = match checksum_finish(sum) {
        0 => 0xffff, // RFC 768: a computed zero is sent as all ones
        s => s,
    };
    out[IPV4_HEADER_LEN + 6..IPV4_HEADER_LEN + 8].copy_from_slice(&udp_sum.to_be_bytes());
    out
}

/// Decodes an IPv4 packet carrying UDP. Rejects fragments, bad header checksums, lengths that
/// disagree with the buffer, and non-UDP protocols. Trailing bytes beyond the IPv4 total length
/// (Ethernet padding) are ignored.
pub fn decode_udp_ipv4(buf: &[u8]) -> Result<UdpDatagram<'_>, DhcpError> {
    let h = buf
        .get(..IPV4_HEADER_LEN)
        .ok_or(DhcpError::Frame("short IPv4 header"))?;
    if h[0] >> 4 != 4 {
        return Err(DhcpError::Frame("not IPv4"));
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(DhcpError::Frame("bad IHL"));
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total < ihl + UDP_HEADER_LEN || total > buf.len() {
        return Err(DhcpError::Frame("bad IPv4 total length"));
    }
    let header = &buf[..ihl];
    if checksum_finish(checksum_add(0, header)) != 0 {
        return Err(DhcpError::Frame("bad IPv4 header checksum"));
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x3fff != 0 {
        return Err(DhcpError::Frame("fragment"));
    }
    if h[9] != PROTO_UDP {
        return Err(DhcpError::Frame("not UDP"));
    }
    let udp = &buf[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return Err(DhcpError::Frame("bad UDP length"));
    }
    Ok(UdpDatagram {
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[UDP_HEADER_LEN..udp_len],
    })
}

/// Verifies the UDP checksum of an encoded IPv4/UDP packet (used by tests; see the module
/// documentation for why received packets are not checked).
pub fn udp_checksum_ok(packet: &[u8]) -> bool {
    let Ok(d) = decode_udp_ipv4(packet) else {
        return false;
    };
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let udp = &packet[ihl..ihl + UDP_HEADER_LEN + d.payload.len()];
    if udp[6..8] == [0, 0] {
        return true; // checksum not used
    }
    let mut sum = checksum_add(0, &d.src.octets());
    sum = checksum_add(sum, &d.dst.octets());
    sum = checksum_add(sum, &[0, PROTO_UDP]);
    // `udp` came from a u16 length.
    sum = checksum_add(sum, &(udp.len() as u16).to_be_bytes());
    sum = checksum_add(sum, udp);
    checksum_finish(sum) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> UdpDatagram<'static> {
        UdpDatagram {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
            payload: b"hello dhcp",
        }
    }

    #[test]
    fn round_trip_with_valid_checksums() {
        let pkt = encode_udp_ipv4(&sample());
        assert_eq!(decode_udp_ipv4(&pkt).unwrap(), sample());
        assert!(udp_checksum_ok(&pkt));
        // Ethernet padding after the packet is ignored.
        let mut padded = pkt.clone();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(decode_udp_ipv4(&padded).unwrap(), sample());
    }

    #[test]
    fn odd_payload_checksum() {
        let d = UdpDatagram {
            payload: b"abc",
            ..sample()
        };
        assert!(udp_checksum_ok(&encode_udp_ipv4(&d)));
    }

    #[test]
    fn rejects_bad_frames() {
        let pkt = encode_udp_ipv4(&sample());
        let mut b = pkt.clone();
        b[12] ^= 1;
        assert_eq!(
            decode_udp_ipv4(&b),
            Err(DhcpError::Frame("bad IPv4 header checksum"))
        );
        let mut b = pkt.clone();
        b[6] = 0x20; // MF
        assert!(decode_udp_ipv4(&b).is_err());
        assert!(
            decode_udp_ipv4(&pkt[..pkt.len() - 1]).is_err(),
            "total length beyond buffer"
        );
        assert!(decode_udp_ipv4(&pkt[..10]).is_err());
        let mut b = pkt.clone();
        b[0] = 0x44;
        assert_eq!(decode_udp_ipv4(&b), Err(DhcpError::Frame("bad IHL")));
        let mut b = pkt.clone();
        b[24] = 0xff; // UDP length > datagram
        assert_eq!(decode_udp_ipv4(&b), Err(DhcpError::Frame("bad UDP length")));
        let mut b = pkt;
        b[IPV4_HEADER_LEN + 8] ^= 0xff;
        assert!(!udp_checksum_ok(&b));
    }
}
