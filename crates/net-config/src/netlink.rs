//! A small rtnetlink client: message building, total parsing, and a blocking socket.
//!
//! Hand-rolled on purpose: the guest needs a dozen message types, and the generic crates
//! (netlink-packet-route, rtnetlink) bring hundreds of attribute types and their dependencies
//! into a binary with a size budget. Parsing is total (truncated or inconsistent messages are
//! skipped or reported, never panic), which keeps the fuzz surface small.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::error::NetConfigError;

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
pub(crate) const RTM_GETADDR: u16 = 22;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;
pub(crate) const RTM_GETROUTE: u16 = 26;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;

/// Multicast group for link notifications.
pub(crate) const RTMGRP_LINK: u32 = 1;

/// Builds one netlink request.
#[derive(Debug)]
pub(crate) struct MsgBuilder {
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl MsgBuilder {
    /// A request of type `ty`; `NLM_F_REQUEST` is always added.
    pub(crate) fn new(ty: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        MsgBuilder { buf }
    }

    /// Appends a fixed header (ifinfomsg, ifaddrmsg, rtmsg), padded to 4 bytes.
    pub(crate) fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Appends an attribute.
    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        // Attributes here are tiny (names, addresses, integers).
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub(crate) fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    /// Starts a nested attribute; close it with [`MsgBuilder::end_nest`].
    pub(crate) fn begin_nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    pub(crate) fn end_nest(&mut self, at: usize) -> &mut Self {
        let len = self.buf.len() - at;
        self.buf[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self
    }

    /// The finished message with its length and sequence number.
    pub(crate) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One received netlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NlMsg<'a> {
    pub ty: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn ne_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Splits a datagram into messages. Stops at the first inconsistent length.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = NlMsg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = ne_u32(&buf[0..4]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = NlMsg {
            ty: ne_u16(&buf[4..6]),
            seq: ne_u32(&buf[8..12]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

/// Iterates the attributes in `buf` as (type without the nested/byte-order flags, data).
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(ne_u16(&buf[0..2]));
        if len < 4 || len > buf.len() {
            return None;
        }
        let item = (ne_u16(&buf[2..4]) & 0x3fff, &buf[4..len]);
        buf = &buf[align4(len).min(buf.len())..];
        Some(item)
    })
}

/// Reads a native-endian u32 attribute value.
pub(crate) fn attr_u32(data: &[u8]) -> Option<u32> {
    (data.len() >= 4).then(|| ne_u32(data))
}

/// Reads a NUL-terminated string attribute value.
pub(crate) fn attr_string(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    std::str::from_utf8(&data[..end]).ok().map(str::to_owned)
}

/// The errno of an `NLMSG_ERROR` payload (0 is an acknowledgement).
pub(crate) fn error_code(payload: &[u8]) -> Option<i32> {
    (payload.len() >= 4).then(|| ne_u32(payload) as i32)
}

/// The error for a failed request: the kernel sends `-errno`; a value that is not one (positive,
/// or `i32::MIN`, which has no negation) is reported as `EIO`.
fn netlink_error(op: &'static str, code: i32) -> NetConfigError {
    let errno = code.checked_neg().filter(|e| *e > 0).unwrap_or(libc_eio());
    NetConfigError::Netlink {
        op,
        source: io::Error::from_raw_os_error(errno),
    }
}

// The reply handling of `Rtnl::{query, request, dump}`, one received datagram at a time and
// without I/O, so that it is unit tested and fuzzed (`fuzz/fuzz_targets/net_netlink_reply.rs`)
// on whatever the socket might return. `None`: the answer is not complete, receive again.

/// For `query`: the payload of the first reply of type `reply_ty` to request `seq`.
pub(crate) fn query_step(
    datagram: &[u8],
    seq: u32,
    reply_ty: u16,
    op: &'static str,
) -> Option<Result<Vec<u8>, NetConfigError>> {
    for m in messages(datagram) {
        if m.seq != seq {
            continue;
        }
        if m.ty == reply_ty {
            return Some(Ok(m.payload.to_vec()));
        }
        if m.ty == NLMSG_ERROR {
            let code = error_code(m.payload).unwrap_or(-libc_eio());
            return Some(Err(netlink_error(op, code)));
        }
    }
    None
}

/// For `request`: the acknowledgement (or error) of request `seq`.
pub(crate) fn request_step(
    datagram: &[u8],
    seq: u32,
    op: &'static str,
) -> Option<Result<(), NetConfigError>> {
    for m in messages(datagram) {
        if m.seq != seq || m.ty != NLMSG_ERROR {
            continue;
        }
        return Some(match error_code(m.payload) {
            Some(0) => Ok(()),
            Some(code) => Err(netlink_error(op, code)),
            None => Err(NetConfigError::Malformed("short NLMSG_ERROR")),
        });
    }
    None
}

/// Most reply messages one dump collects (far above any real link, address or route table of
/// a guest): a reply that never ends cannot grow memory without bound.
pub(crate) const MAX_DUMP_MESSAGES: usize = 65_536;

/// For `dump`: collects the payloads of type `reply_ty` answering request `seq` into `out`
/// until `NLMSG_DONE` or an error.
pub(crate) fn dump_step(
    datagram: &[u8],
    seq: u32,
    reply_ty: u16,
    op: &'static str,
    out: &mut Vec<Vec<u8>>,
) -> Option<Result<(), NetConfigError>> {
    for m in messages(datagram) {
        if m.seq != seq {
            continue;
        }
        match m.ty {
            NLMSG_DONE => return Some(Ok(())),
            NLMSG_ERROR => {
                let code = error_code(m.payload).unwrap_or(-libc_eio());
                return Some(Err(netlink_error(op, code)));
            }
            t if t == reply_ty => {
                if out.len() >= MAX_DUMP_MESSAGES {
                    return Some(Err(NetConfigError::Malformed(
                        "netlink dump longer than any real table",
                    )));
                }
                out.push(m.payload.to_vec());
            }
            _ => {}
        }
    }
    None
}

/// A NETLINK_ROUTE socket for requests and dumps.
#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

impl Rtnl {
    /// Opens a request socket (5 s receive timeout, so a wedged kernel reply cannot hang boot).
    pub fn open() -> Result<Self, NetConfigError> {
        Self::open_groups(0)
    }

    /// Opens a socket subscribed to the multicast `groups` (for link monitoring).
    pub(crate) fn open_groups(groups: u32) -> Result<Self, NetConfigError> {
        Self::open_protocol(None, groups) // NETLINK_ROUTE
    }

    /// Opens a netlink socket of `protocol` (`None`: NETLINK_ROUTE).
    pub(crate) fn open_protocol(
        protocol: Option<rustix::net::Protocol>,
        groups: u32,
    ) -> Result<Self, NetConfigError> {
        let sock = || -> io::Result<OwnedFd> {
            let fd = rustix::net::socket_with(
                AddressFamily::NETLINK,
                SocketType::RAW,
                SocketFlags::CLOEXEC,
                protocol,
            )?;
            rustix::net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
            rustix::net::sockopt::set_socket_timeout(
                &fd,
                rustix::net::sockopt::Timeout::Recv,
                Some(Duration::from_secs(5)),
            )?;
            Ok(fd)
        };
        let fd = sock().map_err(|source| NetConfigError::Socket {
            what: "netlink",
            source,
        })?;
        Ok(Rtnl {
            fd,
            seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// The socket, for options the wrappers here do not cover.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Receives one datagram (waiting at most the socket's receive timeout) and returns it.
    pub(crate) fn recv_datagram(&mut self, op: &'static str) -> Result<&[u8], NetConfigError> {
        let n = self.recv(op)?;
        Ok(&self.buf[..n])
    }

    /// Sends a request and returns the payload of its first reply of type `reply_ty`.
    pub(crate) fn query(
        &mut self,
        msg: MsgBuilder,
        reply_ty: u16,
        op: &'static str,
    ) -> Result<Vec<u8>, NetConfigError> {
        let seq = self.send(msg, op)?;
        loop {
            let n = self.recv(op)?;
            if let Some(done) = query_step(&self.buf[..n], seq, reply_ty, op) {
                return done;
            }
        }
    }

    fn send(&mut self, msg: MsgBuilder, op: &'static str) -> Result<u32, NetConfigError> {
        let seq = self.next_seq();
        let bytes = msg.finish(seq);
        rustix::net::sendto(
            &self.fd,
            &bytes,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| NetConfigError::Netlink {
            op,
            source: e.into(),
        })?;
        Ok(seq)
    }

    fn recv(&mut self, op: &'static str) -> Result<usize, NetConfigError> {
        let (n, full) =
            rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC).map_err(|e| {
                NetConfigError::Netlink {
                    op,
                    source: e.into(),
                }
            })?;
        if full > n {
            return Err(NetConfigError::Malformed(
                "netlink reply larger than the receive buffer",
            ));
        }
        Ok(n)
    }

    /// Sends a request with `NLM_F_ACK` and waits for its acknowledgement.
    pub(crate) fn request(
        &mut self,
        msg: MsgBuilder,
        op: &'static str,
    ) -> Result<(), NetConfigError> {
        let seq = self.send(msg, op)?;
        loop {
            let n = self.recv(op)?;
            if let Some(done) = request_step(&self.buf[..n], seq, op) {
                return done;
            }
        }
    }

    /// Sends a dump request and returns the payload of every reply message of type `reply_ty`.
    pub(crate) fn dump(
        &mut self,
        msg: MsgBuilder,
        reply_ty: u16,
        op: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetConfigError> {
        let seq = self.send(msg, op)?;
        let mut out = Vec::new();
        loop {
            let n = self.recv(op)?;
            if let Some(done) = dump_step(&self.buf[..n], seq, reply_ty, op, &mut out) {
                return done.map(|()| out);
            }
        }
    }

    /// Drains pending notifications without blocking; true if there were any.
    pub(crate) fn drain(&mut self) -> bool {
        let mut any = false;
        while let Ok((n, _)) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::DONTWAIT) {
            if n == 0 {
                break;
            }
            any = true;
        }
        any
    }
}

fn libc_eio() -> i32 {
    5
}

impl AsFd for Rtnl {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_layout() {
        let mut b = MsgBuilder::new(RTM_NEWLINK, NLM_F_ACK).header(&[0u8; 16]);
        b.attr_str(3, "eth0");
        let nest = b.begin_nest(18);
        b.attr(1, b"vlan");
        b.end_nest(nest);
        let bytes = b.finish(42);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(ne_u32(&bytes[0..4]) as usize, bytes.len());
        assert_eq!(ne_u16(&bytes[6..8]), NLM_F_ACK | NLM_F_REQUEST);
        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 42);
        let a: Vec<_> = attrs(&msgs[0].payload[16..]).collect();
        assert_eq!(a[0], (3, &b"eth0\0"[..]));
        assert_eq!(a[1].0, 18);
        let inner: Vec<_> = attrs(a[1].1).collect();
        assert_eq!(inner, vec![(1, &b"vlan"[..])]);
    }

    /// One message of type `ty` answering `seq` with `payload`.
    fn msg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = MsgBuilder::new(ty, 0).header(payload);
        b.buf[6..8].copy_from_slice(&0u16.to_ne_bytes());
        b.finish(seq)
    }

    fn errno(e: NetConfigError) -> Option<i32> {
        match e {
            NetConfigError::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    #[test]
    fn reply_steps() {
        let err = |code: i32| msg(NLMSG_ERROR, 7, &code.to_ne_bytes());
        // Messages for other requests are ignored; the answer may take several datagrams.
        assert!(query_step(&msg(RTM_NEWLINK, 6, b"old!"), 7, RTM_NEWLINK, "t").is_none());
        let got = query_step(&msg(RTM_NEWLINK, 7, b"link"), 7, RTM_NEWLINK, "t");
        assert_eq!(got.unwrap().unwrap(), b"link");
        assert_eq!(
            errno(query_step(&err(-19), 7, 16, "t").unwrap().unwrap_err()),
            Some(19)
        );
        assert!(request_step(&err(0), 7, "t").unwrap().is_ok());
        assert_eq!(
            errno(request_step(&err(-17), 7, "t").unwrap().unwrap_err()),
            Some(17)
        );
        // Codes that are not -errno (i32::MIN has no negation) are EIO, not a panic.
        for bad in [i32::MIN, 5, i32::MAX] {
            let e = request_step(&err(bad), 7, "t").unwrap().unwrap_err();
            assert_eq!(errno(e), Some(5), "{bad}");
        }
        assert!(matches!(
            request_step(&msg(NLMSG_ERROR, 7, b""), 7, "t"),
            Some(Err(NetConfigError::Malformed(_)))
        ));

        let mut out = Vec::new();
        let mut two = msg(RTM_NEWADDR, 7, b"a1..");
        two.extend(msg(RTM_NEWADDR, 7, b"a2.."));
        assert!(dump_step(&two, 7, RTM_NEWADDR, "t", &mut out).is_none());
        let done = dump_step(&msg(NLMSG_DONE, 7, &[0; 4]), 7, RTM_NEWADDR, "t", &mut out);
        assert!(done.unwrap().is_ok());
        assert_eq!(out, vec![b"a1..".to_vec(), b"a2..".to_vec()]);
        // A dump that never ends stops growing.
        let mut out = vec![Vec::new(); MAX_DUMP_MESSAGES];
        assert!(matches!(
            dump_step(&two, 7, RTM_NEWADDR, "t", &mut out),
            Some(Err(NetConfigError::Malformed(_)))
        ));
    }

    #[test]
    fn parsers_are_total() {
        // Lengths that lie, zero lengths, truncation: iteration just stops.
        assert_eq!(messages(&[0xff; 16]).count(), 0);
        assert_eq!(messages(&[0; 3]).count(), 0);
        assert_eq!(attrs(&[0, 0, 1, 0]).count(), 0);
        assert_eq!(attrs(&[200, 0, 1, 0, 1]).count(), 0);
        assert_eq!(
            attrs(&[5, 0, 1, 0, 1]).count(),
            1,
            "unpadded last attribute"
        );
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let _ = messages(&junk).count();
            let _ = attrs(&junk).count();
        }
    }
}
