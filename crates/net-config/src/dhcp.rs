//! The Linux DHCPv4 driver: sockets, timers and netlink around the sans-IO
//! [`dhcp_client::Client`].
//!
//! Sockets, per interface:
//! * an `AF_PACKET` datagram socket (EtherType IPv4) while the client has no usable address
//!   (SELECTING, REQUESTING, INIT-REBOOT) and while REBINDING: it sends broadcasts we frame
//!   ourselves from `0.0.0.0`, and it sees replies addressed to an address the kernel does not
//!   own yet. It is closed while BOUND so it does not copy every IPv4 packet to us;
//! * a UDP socket bound to `<leased address>:68` in RENEWING/REBINDING and for RELEASE: unicast
//!   to the server, and the server's unicast replies (RFC 2131 §4.1: replies to a non-zero
//!   `ciaddr` are unicast to it).
//!
//! One thread drives every interface with `poll(2)`; a netlink socket subscribed to link
//! notifications wakes it when carrier appears.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dhcp_client::frame::{UdpDatagram, decode_udp_ipv4, encode_udp_ipv4};
use dhcp_client::{
    CLIENT_PORT, Client, ClientConfig, Destination, Event, Instant, Lease, LossReason,
    RandomSource, SERVER_PORT, State, Transmit,
};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use serde::Serialize;

use crate::addr::broadcast_of;
use crate::error::NetConfigError;
use crate::link::Link;
use crate::netlink::{RTMGRP_LINK, Rtnl};
use crate::resolv::{self, ResolvConf};
use crate::route::{RTPROT_DHCP, RouteSpec};
use crate::status::{LeaseStatus, format_mac};
use crate::sys::LinkAddr;

const ETH_P_IP: u16 = 0x0800;
const RECV_BUF: usize = 16 * 1024;
/// Datagrams read per socket per wake-up, so a flood cannot starve the other interfaces.
const MAX_READS_PER_WAKE: usize = 64;
/// Smallest MTU from option 26 we apply (dhcpcd's floor; RFC 2132 allows 68, which breaks
/// IPv4 with options).
pub const MIN_DHCP_MTU: u16 = 576;

/// Which interfaces to run DHCP on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every Ethernet interface that is not enslaved to a bond or bridge.
    All,
    /// These names (each must exist).
    Names(Vec<String>),
    /// The interfaces with these MAC addresses (each must exist).
    Macs(Vec<[u8; 6]>),
}

/// Driver settings. `Default` gives RFC 2131 timing and applies everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOptions {
    /// First retransmission interval (RFC: 4 s; doubles up to `max_retransmit`). A boot that
    /// wants a lease fast on a lossy network can use 1–2 s.
    pub initial_retransmit: Duration,
    /// Retransmission cap (RFC: 64 s).
    pub max_retransmit: Duration,
    /// Floor of the renew/rebind retransmission interval (RFC: 60 s).
    pub min_renew_retransmit: Duration,
    /// Optional cap of the renew/rebind retransmission interval (see
    /// [`ClientConfig::max_renew_retransmit`]).
    pub max_renew_retransmit: Option<Duration>,
    /// REQUESTs sent before restarting discovery.
    pub request_attempts: u32,
    /// Ask servers to broadcast replies.
    pub broadcast_flag: bool,
    /// Host name to send to the server (option 12).
    pub send_hostname: Option<String>,
    /// Addresses to ask for first (INIT-REBOOT), by interface name.
    pub previous_addresses: BTreeMap<String, Ipv4Addr>,
    /// Where to write DNS servers and search domains; `None` leaves resolv.conf alone.
    pub resolv_conf: Option<PathBuf>,
    /// Install routes (option 121, else option 3).
    pub apply_routes: bool,
    /// Apply option 26 (at least [`MIN_DHCP_MTU`]).
    pub apply_mtu: bool,
    /// Set the kernel host name from option 12 (the guest enables this only when metadata
    /// gives no host name).
    pub set_hostname: bool,
    /// Route metric = `route_metric_base + ifindex`, so several NICs' default routes coexist
    /// and the first NIC wins.
    pub route_metric_base: u32,
    /// Turn on IPv6 router advertisements and SLAAC on the interfaces (kernel does the rest).
    pub accept_ra: bool,
}

impl Default for DhcpOptions {
    fn default() -> Self {
        DhcpOptions {
            initial_retransmit: Duration::from_secs(4),
            max_retransmit: Duration::from_secs(64),
            min_renew_retransmit: Duration::from_secs(60),
            max_renew_retransmit: None,
            request_attempts: 4,
            broadcast_flag: false,
            send_hostname: None,
            previous_addresses: BTreeMap::new(),
            resolv_conf: Some(PathBuf::from(resolv::RESOLV_CONF)),
            apply_routes: true,
            apply_mtu: true,
            set_hostname: false,
            route_metric_base: 1000,
            accept_ra: true,
        }
    }
}

/// The result of acquisition on one interface.
#[derive(Debug)]
pub struct LeaseOutcome {
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub index: u32,
    /// The lease applied, or why there is none ([`NetConfigError::NoCarrier`],
    /// [`NetConfigError::NoLease`]).
    pub result: Result<Lease, NetConfigError>,
    /// From the start of the service to the lease (or to the deadline).
    pub elapsed: Duration,
}

/// What happened, for logs and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpEventKind {
    /// A new lease was applied.
    Bound,
    /// The lease was renewed with its server.
    Renewed,
    /// The lease was extended by some server while rebinding.
    Rebound,
    /// A server sent a NAK.
    Nak,
    /// The lease expired or was NAKed; its address was removed.
    Lost,
    /// The lease was released.
    Released,
    /// Applying a lease, or DHCP I/O, failed.
    Error,
}

/// One driver event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpEvent {
    /// Interface name.
    pub interface: String,
    /// What happened.
    pub kind: DhcpEventKind,
    /// The address concerned, if any.
    pub address: Option<Ipv4Addr>,
    /// Details (server message, error text).
    pub detail: Option<String>,
}

/// xorshift64*, seeded from the kernel: enough for transaction ids and jitter.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded(salt: &[u8; 6]) -> Self {
        let mut seed = [0u8; 8];
        let ok = rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::NONBLOCK)
            .is_ok_and(|n| n == 8);
        let mut s = u64::from_ne_bytes(seed);
        if !ok {
            // Early boot without entropy: time and MAC still differ between machines.
            s = now().as_millis() ^ u64::from(std::process::id()) << 32;
        }
        for (i, b) in salt.iter().enumerate() {
            s ^= u64::from(*b) << (8 * i);
        }
        Rng(s | 1)
    }
}

impl RandomSource for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// The driver's clock: `CLOCK_BOOTTIME`, so lease timers keep counting across a suspend.
fn now() -> Instant {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let ms = u64::try_from(ts.tv_sec).unwrap_or(0).saturating_mul(1000)
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000;
    Instant::from_millis(ms)
}

#[derive(Debug)]
struct Session {
    name: String,
    index: u32,
    mac: [u8; 6],
    client: Client<Rng>,
    packet: Option<OwnedFd>,
    udp: Option<(Ipv4Addr, UdpSocket)>,
    applied: Option<Lease>,
    applied_routes: Vec<RouteSpec>,
    carrier: bool,
    started: bool,
    /// Time from the service's start to the first lease.
    first_lease: Option<Duration>,
}

impl Session {
    fn ensure_packet(&mut self) -> io::Result<&OwnedFd> {
        if self.packet.is_none() {
            let fd = rustix::net::socket_with(
                AddressFamily::PACKET,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                Some(rustix::net::eth::IP),
            )?;
            rustix::net::bind(
                &fd,
                &LinkAddr {
                    ifindex: self.index,
                    ethertype: ETH_P_IP,
                    mac: [0; 6],
                },
            )?;
            self.packet = Some(fd);
        }
        Ok(self.packet.as_ref().expect("just opened"))
    }

    fn ensure_udp(&mut self, addr: Ipv4Addr) -> io::Result<&UdpSocket> {
        if self.udp.as_ref().is_none_or(|(a, _)| *a != addr) {
            let sock = UdpSocket::bind((addr, CLIENT_PORT))?;
            sock.set_nonblocking(true)?;
            self.udp = Some((addr, sock));
        }
        Ok(&self.udp.as_ref().expect("just bound").1)
    }

    fn send(&mut self, tx: &Transmit) -> io::Result<()> {
        match tx.destination {
            Destination::Broadcast => {
                let frame = encode_udp_ipv4(&UdpDatagram {
                    src: tx.source,
                    dst: Ipv4Addr::BROADCAST,
                    src_port: CLIENT_PORT,
                    dst_port: SERVER_PORT,
                    payload: &tx.payload,
                });
                let index = self.index;
                let fd = self.ensure_packet()?;
                let to = LinkAddr {
                    ifindex: index,
                    ethertype: ETH_P_IP,
                    mac: [0xff; 6],
                };
                rustix::net::sendto(fd, &frame, SendFlags::empty(), &to)?;
            }
            Destination::Unicast(server) => {
                let sock = self.ensure_udp(tx.source)?;
                sock.send_to(&tx.payload, (server, SERVER_PORT))?;
            }
        }
        Ok(())
    }

    /// Opens and closes sockets to match the client's state.
    fn sync_sockets(&mut self) {
        let state = self.client.state();
        if !matches!(
            state,
            State::Selecting | State::Requesting | State::Rebooting | State::Rebinding
        ) {
            self.packet = None;
        }
        if !matches!(state, State::Renewing | State::Rebinding) {
            self.udp = None;
        } else if let Some(addr) = self.client.lease().map(|l| l.address) {
            // Be ready for the unicast reply even before the first retransmission.
            if let Err(e) = self.ensure_udp(addr) {
                tracing::debug!(iface = %self.name, error = %e, "cannot bind the DHCP UDP socket");
            }
        }
        if state == State::Rebinding
            && let Err(e) = self.ensure_packet()
        {
            tracing::debug!(iface = %self.name, error = %e, "cannot open the DHCP packet socket");
        }
    }
}

/// Runs DHCP on a set of interfaces: acquisition with a deadline, then renewals until stopped.
#[derive(Debug)]
pub struct DhcpService {
    rtnl: Rtnl,
    monitor: Option<Rtnl>,
    sessions: Vec<Session>,
    opts: DhcpOptions,
    events: Vec<DhcpEvent>,
    dns_written: Option<ResolvConf>,
    started: Instant,
    buf: Vec<u8>,
    links_dirty: bool,
}

fn select(links: &[Link], which: &Interfaces) -> Result<Vec<Link>, NetConfigError> {
    let pick = |found: Option<&Link>, what: String| {
        found.cloned().ok_or(NetConfigError::NoSuchInterface(what))
    };
    let chosen: Vec<Link> = match which {
        // Physical NICs (and veth pairs, which stand in for them in network namespaces): not
        // the bond0 that loading `bonding` creates, nor bridges, VLANs and tunnels, which a
        // configuration made on purpose and configures itself.
        Interfaces::All => links
            .iter()
            .filter(|l| {
                l.is_ethernet()
                    && l.master.is_none()
                    && l.kind.as_deref().is_none_or(|k| k == "veth")
            })
            .cloned()
            .collect(),
        Interfaces::Names(names) => names
            .iter()
            .map(|n| pick(links.iter().find(|l| &l.name == n), n.clone()))
            .collect::<Result<_, _>>()?,
        Interfaces::Macs(macs) => macs
            .iter()
            .map(|m| {
                pick(
                    links
                        .iter()
                        .find(|l| l.mac == Some(*m) && l.master.is_none()),
                    format_mac(m),
                )
            })
            .collect::<Result<_, _>>()?,
    };
    for l in &chosen {
        if !l.is_ethernet() {
            return Err(NetConfigError::Invalid(format!(
                "{} is not an Ethernet interface",
                l.name
            )));
        }
    }
    if chosen.is_empty() {
        return Err(NetConfigError::NoSuchInterface(
            "any Ethernet interface".into(),
        ));
    }
    Ok(chosen)
}

impl DhcpService {
    /// Prepares DHCP on `which`: enables IPv6 RAs (if asked), brings the links up and creates
    /// one client per link. Clients start as soon as their link has carrier.
    pub fn new(which: &Interfaces, opts: DhcpOptions) -> Result<Self, NetConfigError> {
        let mut rtnl = Rtnl::open()?;
        let chosen = select(&rtnl.links()?, which)?;
        let monitor = match Rtnl::open_groups(RTMGRP_LINK) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "no link monitor; polling carrier");
                None
            }
        };
        let mut sessions = Vec::new();
        for link in chosen {
            if opts.accept_ra
                && let Err(e) = crate::ipv6::set_accept_ra(&link.name, true)
            {
                tracing::warn!(iface = %link.name, error = %e, "cannot enable IPv6 router advertisements");
            }
            if !link.is_up() {
                rtnl.set_link_up(link.index, true)?;
            }
            let mac = link.mac.unwrap_or_default();
            let mut cfg = ClientConfig::new(mac);
            cfg.initial_retransmit = opts.initial_retransmit;
            cfg.max_retransmit = opts.max_retransmit;
            cfg.min_renew_retransmit = opts.min_renew_retransmit;
            cfg.max_renew_retransmit = opts.max_renew_retransmit;
            cfg.request_attempts = opts.request_attempts;
            cfg.broadcast_flag = opts.broadcast_flag;
            cfg.hostname = opts.send_hostname.clone();
            cfg.previous_address = opts.previous_addresses.get(&link.name).copied();
            tracing::debug!(iface = %link.name, mac = %format_mac(&mac), "DHCP client created");
            sessions.push(Session {
                name: link.name.clone(),
                index: link.index,
                mac,
                client: Client::new(cfg, Rng::seeded(&mac)),
                packet: None,
                udp: None,
                applied: None,
                applied_routes: Vec::new(),
                carrier: false,
                started: false,
                first_lease: None,
            });
        }
        Ok(DhcpService {
            rtnl,
            monitor,
            sessions,
            opts,
            events: Vec::new(),
            dns_written: None,
            started: now(),
            buf: vec![0; RECV_BUF],
            links_dirty: true,
        })
    }

    /// Drives the clients until every interface has a lease or `deadline` passes. Interfaces
    /// without a lease keep trying in [`DhcpService::run`] / [`DhcpService::step`].
    pub fn acquire(&mut self, deadline: std::time::Instant) -> Vec<LeaseOutcome> {
        self.acquire_until(deadline, true)
    }

    /// Like [`DhcpService::acquire`], but returns as soon as *one* interface has a lease (what
    /// `dhcpcd -w` does; useful when a VM has NICs that may never get an answer).
    pub fn acquire_any(&mut self, deadline: std::time::Instant) -> Vec<LeaseOutcome> {
        self.acquire_until(deadline, false)
    }

    fn acquire_until(&mut self, deadline: std::time::Instant, all: bool) -> Vec<LeaseOutcome> {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let done = if all {
                self.sessions.iter().all(|s| s.applied.is_some())
            } else {
                self.sessions.iter().any(|s| s.applied.is_some())
            };
            if left.is_zero() || done {
                break;
            }
            if let Err(e) = self.step(left) {
                tracing::warn!(error = %e, "DHCP step failed");
                std::thread::sleep(Duration::from_millis(100).min(left));
            }
        }
        let elapsed = now().saturating_duration_since(self.started);
        self.sessions
            .iter()
            .map(|s| LeaseOutcome {
                interface: s.name.clone(),
                index: s.index,
                result: match (&s.applied, s.carrier) {
                    (Some(l), _) => Ok(l.clone()),
                    (None, false) => Err(NetConfigError::NoCarrier {
                        iface: s.name.clone(),
                    }),
                    (None, true) => Err(NetConfigError::NoLease {
                        iface: s.name.clone(),
                    }),
                },
                elapsed: s.first_lease.unwrap_or(elapsed),
            })
            .collect()
    }

    /// Renewal loop: steps until `stop` is set (checked at least every 500 ms). Run it in a
    /// thread or a supervised service; call [`DhcpService::release_all`] afterwards to give the
    /// leases back.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.step(Duration::from_millis(500)) {
                tracing::warn!(error = %e, "DHCP step failed");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// One round: fire due timers, send, apply events, then wait up to `max_wait` for packets,
    /// carrier changes or the next timer, and handle what arrived.
    pub fn step(&mut self, max_wait: Duration) -> Result<(), NetConfigError> {
        if self.links_dirty || self.sessions.iter().any(|s| !s.carrier) {
            self.refresh_carrier()?;
        }
        let t = now();
        for i in 0..self.sessions.len() {
            let s = &mut self.sessions[i];
            if s.carrier && !s.started {
                tracing::info!(iface = %s.name, "link has carrier; starting DHCP");
                s.client.start(t);
                s.started = true;
            }
            if s.client.poll_timeout().is_some_and(|w| w <= t) {
                s.client.handle_timeout(t);
            }
            self.flush(i);
        }

        // Sleep until the next timer, a packet or a link change.
        let mut wait = max_wait;
        let t = now();
        for s in &self.sessions {
            if let Some(w) = s.client.poll_timeout() {
                wait = wait.min(w.saturating_duration_since(t));
            }
        }
        if self.monitor.is_none() && self.sessions.iter().any(|s| !s.carrier) {
            wait = wait.min(Duration::from_millis(100));
        }
        let ready = self.poll(wait)?;

        let t = now();
        if ready.monitor {
            if let Some(m) = self.monitor.as_mut() {
                m.drain();
            }
            self.links_dirty = true;
        }
        for (i, kind) in ready.sockets {
            self.receive(i, kind, t);
            self.flush(i);
        }
        Ok(())
    }

    fn poll(&mut self, wait: Duration) -> Result<Ready, NetConfigError> {
        let mut owners: Vec<(usize, SockKind)> = Vec::new();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let has_monitor = self.monitor.is_some();
        if let Some(m) = &self.monitor {
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        for (i, s) in self.sessions.iter().enumerate() {
            if let Some(p) = &s.packet {
                fds.push(PollFd::new(p, PollFlags::IN));
                owners.push((i, SockKind::Packet));
            }
            if let Some((_, u)) = &s.udp {
                fds.push(PollFd::new(u, PollFlags::IN));
                owners.push((i, SockKind::Udp));
            }
        }
        let ts = rustix::time::Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(NetConfigError::Socket {
                    what: "poll",
                    source: e.into(),
                });
            }
        }
        let fired = |f: &PollFd<'_>| !f.revents().is_empty();
        let mut ready = Ready {
            monitor: false,
            sockets: Vec::new(),
        };
        let mut it = fds.iter();
        if has_monitor {
            ready.monitor = it.next().is_some_and(fired);
        }
        for (fd, owner) in it.zip(owners) {
            if fired(fd) {
                ready.sockets.push(owner);
            }
        }
        Ok(ready)
    }

    fn receive(&mut self, i: usize, kind: SockKind, t: Instant) {
        let buf = &mut self.buf;
        let s = &mut self.sessions[i];
        for _ in 0..MAX_READS_PER_WAKE {
            let n = match kind {
                SockKind::Packet => {
                    let Some(fd) = s.packet.as_ref() else { return };
                    match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
                        Ok((n, _)) => n,
                        Err(rustix::io::Errno::AGAIN) => return,
                        Err(e) => {
                            tracing::debug!(iface = %s.name, error = %e, "packet socket receive failed");
                            return;
                        }
                    }
                }
                SockKind::Udp => {
                    let Some((_, sock)) = s.udp.as_ref() else {
                        return;
                    };
                    match sock.recv_from(&mut buf[..]) {
                        Ok((n, from)) if from.port() == SERVER_PORT => n,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) => {
                            tracing::debug!(iface = %s.name, error = %e, "UDP receive failed");
                            return;
                        }
                    }
                }
            };
            let payload = match kind {
                SockKind::Udp => &buf[..n],
                SockKind::Packet => match decode_udp_ipv4(&buf[..n]) {
                    Ok(d) if d.src_port == SERVER_PORT && d.dst_port == CLIENT_PORT => d.payload,
                    _ => continue,
                },
            };
            if let Err(e) = s.client.handle_packet(t, payload) {
                tracing::debug!(iface = %s.name, error = %e, "DHCP packet ignored");
            }
        }
    }

    /// Sends queued packets and applies queued events of session `i`.
    fn flush(&mut self, i: usize) {
        while let Some(tx) = self.sessions[i].client.poll_transmit() {
            let s = &mut self.sessions[i];
            tracing::debug!(iface = %s.name, msg = tx.message_type.name(), to = ?tx.destination, "DHCP send");
            if let Err(e) = s.send(&tx) {
                tracing::warn!(iface = %s.name, msg = tx.message_type.name(), error = %e, "DHCP send failed");
                let ev = DhcpEvent {
                    interface: s.name.clone(),
                    kind: DhcpEventKind::Error,
                    address: None,
                    detail: Some(format!("sending {}: {e}", tx.message_type.name())),
                };
                self.events.push(ev);
            }
        }
        while let Some(ev) = self.sessions[i].client.poll_event() {
            self.handle_event(i, ev);
        }
        self.sessions[i].sync_sockets();
    }

    fn handle_event(&mut self, i: usize, ev: Event) {
        let name = self.sessions[i].name.clone();
        let renewed = matches!(ev, Event::Renewed(_));
        let (kind, address, detail) = match ev {
            Event::Bound(lease) => {
                tracing::info!(iface = %name, address = %lease.address, prefix = lease.prefix_len, server = %lease.server, "DHCP lease bound");
                let s = &mut self.sessions[i];
                if s.first_lease.is_none() {
                    s.first_lease = Some(now().saturating_duration_since(self.started));
                }
                let a = lease.address;
                let detail = self.apply(i, lease);
                (DhcpEventKind::Bound, Some(a), detail)
            }
            Event::Renewed(lease) | Event::Rebound(lease) => {
                // The client is BOUND again; which of the two it was is in its last state.
                let kind = if renewed {
                    DhcpEventKind::Renewed
                } else {
                    DhcpEventKind::Rebound
                };
                tracing::info!(iface = %name, address = %lease.address, kind = ?kind, "DHCP lease extended");
                let a = lease.address;
                let detail = self.apply(i, lease);
                (kind, Some(a), detail)
            }
            Event::Nak { server, message } => {
                tracing::warn!(iface = %name, server = ?server, message = ?message, "DHCP NAK");
                (DhcpEventKind::Nak, None, message)
            }
            Event::LeaseLost { lease, reason } => {
                tracing::warn!(iface = %name, address = %lease.address, reason = ?reason, "DHCP lease lost");
                self.deconfigure(i);
                let why = match reason {
                    LossReason::Expired => "expired",
                    LossReason::Nak => "nak",
                };
                (DhcpEventKind::Lost, Some(lease.address), Some(why.into()))
            }
            Event::Released(lease) => {
                tracing::info!(iface = %name, address = %lease.address, "DHCP lease released");
                self.deconfigure(i);
                (DhcpEventKind::Released, Some(lease.address), None)
            }
        };
        self.events.push(DhcpEvent {
            interface: name,
            kind,
            address,
            detail,
        });
    }

    /// Applies (or re-applies) a lease; returns a description of what failed, if anything.
    fn apply(&mut self, i: usize, lease: Lease) -> Option<String> {
        let mut errors: Vec<String> = Vec::new();
        let t = now();
        let (index, old, old_routes) = {
            let s = &mut self.sessions[i];
            (
                s.index,
                s.applied.take(),
                std::mem::take(&mut s.applied_routes),
            )
        };
        if self.opts.apply_mtu
            && let Some(mtu) = lease.mtu.filter(|m| *m >= MIN_DHCP_MTU)
        {
            let current = self
                .rtnl
                .links()
                .ok()
                .and_then(|ls| ls.into_iter().find(|l| l.index == index))
                .map(|l| l.mtu);
            if current != Some(u32::from(mtu))
                && let Err(e) = self.rtnl.set_mtu(index, u32::from(mtu))
            {
                errors.push(format!("MTU {mtu}: {}", chain(&e)));
            }
        }
        if let Some(old) = &old
            && (old.address != lease.address || old.prefix_len != lease.prefix_len)
        {
            let _ = self
                .rtnl
                .del_address(index, IpAddr::V4(old.address), old.prefix_len);
        }
        if let Err(e) = self.rtnl.add_address(
            index,
            IpAddr::V4(lease.address),
            lease.prefix_len,
            lease.remaining(t),
            lease
                .broadcast
                .or_else(|| broadcast_of(lease.address, lease.prefix_len)),
        ) {
            errors.push(format!(
                "address {}/{}: {}",
                lease.address,
                lease.prefix_len,
                chain(&e)
            ));
        }
        let routes = if self.opts.apply_routes {
            lease_routes(
                &lease,
                index,
                self.opts.route_metric_base.saturating_add(index),
            )
        } else {
            Vec::new()
        };
        for r in old_routes.iter().filter(|r| !routes.contains(r)) {
            let _ = self.rtnl.del_route(r);
        }
        for r in &routes {
            if let Err(e) = self.rtnl.add_route(r) {
                errors.push(format!(
                    "route {}/{}: {}",
                    r.destination,
                    r.prefix_len,
                    chain(&e)
                ));
            }
        }
        if self.opts.set_hostname
            && let Some(h) = &lease.hostname
            && let Err(e) = resolv::set_hostname(h)
        {
            errors.push(format!("host name: {}", chain(&e)));
        }
        let s = &mut self.sessions[i];
        s.applied = Some(lease);
        s.applied_routes = routes;
        if let Err(e) = self.update_dns() {
            errors.push(format!("resolv.conf: {}", chain(&e)));
        }
        for e in &errors {
            tracing::warn!(iface = %self.sessions[i].name, "applying DHCP lease: {e}");
        }
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// Removes what [`DhcpService::apply`] configured for session `i`.
    fn deconfigure(&mut self, i: usize) {
        let s = &mut self.sessions[i];
        let index = s.index;
        let routes = std::mem::take(&mut s.applied_routes);
        let lease = s.applied.take();
        for r in routes.iter().rev() {
            let _ = self.rtnl.del_route(r);
        }
        if let Some(l) = lease
            && let Err(e) = self
                .rtnl
                .del_address(index, IpAddr::V4(l.address), l.prefix_len)
            && e.errno() != Some(99)
        {
            tracing::debug!(error = %e, "removing the lease address");
        }
        if let Err(e) = self.update_dns() {
            tracing::warn!(error = %e, "updating resolv.conf");
        }
    }

    fn update_dns(&mut self) -> Result<(), NetConfigError> {
        let Some(path) = self.opts.resolv_conf.clone() else {
            return Ok(());
        };
        let mut rc = ResolvConf::default();
        for l in self.sessions.iter().filter_map(|s| s.applied.as_ref()) {
            rc.merge(&ResolvConf {
                nameservers: l.dns_servers.iter().map(|a| IpAddr::V4(*a)).collect(),
                search: l.search_domains(),
            });
        }
        if self.dns_written.as_ref() == Some(&rc) || (self.dns_written.is_none() && rc.is_empty()) {
            return Ok(());
        }
        resolv::write_resolv_conf(&path, &rc)?;
        self.dns_written = Some(rc);
        Ok(())
    }

    fn refresh_carrier(&mut self) -> Result<(), NetConfigError> {
        let links = self.rtnl.links()?;
        for s in &mut self.sessions {
            let carrier = links
                .iter()
                .find(|l| l.index == s.index)
                .is_some_and(Link::has_carrier);
            if carrier != s.carrier {
                tracing::debug!(iface = %s.name, carrier, "carrier changed");
            }
            s.carrier = carrier;
        }
        self.links_dirty = false;
        Ok(())
    }

    /// Gives every lease back (RELEASE) and removes the addresses, routes and DNS entries;
    /// the clients stop. Call at shutdown.
    pub fn release_all(&mut self) {
        let t = now();
        for i in 0..self.sessions.len() {
            if !self.sessions[i].client.release(t) {
                // No lease held (maybe still acquiring): just drop what was configured.
                if self.sessions[i].applied.is_some() {
                    self.deconfigure(i);
                }
            }
            self.flush(i);
        }
    }

    /// Stops all clients without releasing (leases stay configured until they expire).
    pub fn stop(&mut self) {
        for s in &mut self.sessions {
            s.client.stop();
            s.sync_sockets();
        }
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<DhcpEvent> {
        std::mem::take(&mut self.events)
    }

    /// Client state per interface.
    pub fn states(&self) -> Vec<(String, State)> {
        self.sessions
            .iter()
            .map(|s| (s.name.clone(), s.client.state()))
            .collect()
    }

    /// The currently applied lease of each interface, if any.
    pub fn leases(&self) -> Vec<(String, Option<Lease>)> {
        self.sessions
            .iter()
            .map(|s| (s.name.clone(), s.applied.clone()))
            .collect()
    }

    /// Lease status for the status document.
    pub fn lease_status(&self) -> Vec<LeaseStatus> {
        let t = now();
        self.sessions
            .iter()
            .map(|s| {
                let l = s.applied.as_ref();
                let until =
                    |at: Option<Instant>| at.map(|a| a.saturating_duration_since(t).as_secs());
                LeaseStatus {
                    interface: s.name.clone(),
                    state: s.client.state().name(),
                    address: l.map(|l| IpAddr::V4(l.address)),
                    prefix_len: l.map(|l| l.prefix_len),
                    server: l.map(|l| IpAddr::V4(l.server)),
                    routers: l
                        .map(|l| l.routers.iter().map(|r| IpAddr::V4(*r)).collect())
                        .unwrap_or_default(),
                    routes: s
                        .applied_routes
                        .iter()
                        .map(|r| match r.gateway {
                            Some(g) => format!("{}/{} via {g}", r.destination, r.prefix_len),
                            None => format!("{}/{} dev {}", r.destination, r.prefix_len, s.name),
                        })
                        .collect(),
                    dns_servers: l
                        .map(|l| l.dns_servers.iter().map(|d| IpAddr::V4(*d)).collect())
                        .unwrap_or_default(),
                    search: l.map(Lease::search_domains).unwrap_or_default(),
                    hostname: l.and_then(|l| l.hostname.clone()),
                    mtu: l.and_then(|l| l.mtu),
                    lease_secs: l.and_then(|l| l.lease_time).map(|d| d.as_secs()),
                    renew_in_secs: until(l.and_then(Lease::renew_at)),
                    rebind_in_secs: until(l.and_then(Lease::rebind_at)),
                    expires_in_secs: until(l.and_then(Lease::expires_at)),
                }
            })
            .collect()
    }

    /// Interface name and MAC of each client.
    pub fn interfaces(&self) -> Vec<(String, [u8; 6])> {
        self.sessions
            .iter()
            .map(|s| (s.name.clone(), s.mac))
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum SockKind {
    Packet,
    Udp,
}

struct Ready {
    monitor: bool,
    sockets: Vec<(usize, SockKind)>,
}

fn chain(e: &NetConfigError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(net) & mask
}

/// The routes to install for a lease: option 121 (else a default route via option 3), each
/// gateway that is not inside the leased subnet or an on-link route first getting an on-link
/// host route (clouds such as GCE hand out /32 addresses with an off-subnet router).
pub fn lease_routes(lease: &Lease, oif: u32, metric: u32) -> Vec<RouteSpec> {
    let src = Some(IpAddr::V4(lease.address));
    let spec = |dest: Ipv4Addr, len: u8, gw: Option<Ipv4Addr>| RouteSpec {
        destination: IpAddr::V4(dest),
        prefix_len: len,
        gateway: gw.map(IpAddr::V4),
        oif,
        prefsrc: src,
        metric: Some(metric),
        protocol: RTPROT_DHCP,
    };
    let routes = lease.routes();
    let on_link: Vec<(Ipv4Addr, u8)> = routes
        .iter()
        .filter(|r| r.gateway.is_unspecified())
        .map(|r| (r.destination, r.prefix_len))
        .collect();
    let mut out: Vec<RouteSpec> = Vec::new();
    for r in &routes {
        let gw = (!r.gateway.is_unspecified()).then_some(r.gateway);
        if let Some(g) = gw {
            let reachable = in_subnet(g, lease.address, lease.prefix_len)
                || on_link.iter().any(|(d, l)| in_subnet(g, *d, *l));
            let host = spec(g, 32, None);
            if !reachable && g != lease.address && !out.contains(&host) {
                out.push(host);
            }
        }
        let route = spec(r.destination, r.prefix_len, gw);
        if !out.contains(&route) {
            out.push(route);
        }
    }
    out
}

/// Runs DHCP on `which` until every interface has a lease or `deadline` passes, and returns
/// the service (keep it for renewals) with the per-interface outcome.
pub fn run_dhcp(
    which: &Interfaces,
    deadline: std::time::Instant,
    opts: DhcpOptions,
) -> Result<(DhcpService, Vec<LeaseOutcome>), NetConfigError> {
    let mut service = DhcpService::new(which, opts)?;
    let outcomes = service.acquire(deadline);
    Ok((service, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp_client::wire::ClasslessRoute;
    use dhcp_client::{Message, MessageType, Op};

    fn lease(
        routers: Vec<Ipv4Addr>,
        classless: Vec<ClasslessRoute>,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Lease {
        let mut m = Message::new(Op::Reply, 1, [0; 6]);
        m.yiaddr = addr;
        m.options.message_type = Some(MessageType::Ack);
        m.options.server_id = Some(Ipv4Addr::new(10, 0, 0, 1));
        m.options.subnet_mask = Some(dhcp_client::wire::mask_of_prefix_len(prefix));
        m.options.routers = routers;
        m.options.classless_routes = classless;
        m.options.lease_time = Some(600);
        Lease::from_ack(&m, Ipv4Addr::UNSPECIFIED, Instant::ZERO).unwrap()
    }

    #[test]
    fn default_route_from_option_3() {
        let l = lease(
            vec![Ipv4Addr::new(10, 0, 0, 1)],
            vec![],
            Ipv4Addr::new(10, 0, 0, 5),
            24,
        );
        let r = lease_routes(&l, 2, 1002);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].prefix_len, 0);
        assert_eq!(r[0].gateway, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(r[0].metric, Some(1002));
        assert_eq!(r[0].protocol, RTPROT_DHCP);
    }

    #[test]
    fn off_subnet_gateway_gets_a_host_route_first() {
        // GCE style: a /32 address and a router outside it.
        let l = lease(
            vec![Ipv4Addr::new(10, 128, 0, 1)],
            vec![],
            Ipv4Addr::new(10, 128, 0, 7),
            32,
        );
        let r = lease_routes(&l, 2, 1002);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].destination, r[0].prefix_len, r[0].gateway),
            (IpAddr::V4(Ipv4Addr::new(10, 128, 0, 1)), 32, None)
        );
        assert_eq!(r[1].prefix_len, 0);
    }

    #[test]
    fn classless_routes_with_on_link_entries() {
        let c = vec![
            ClasslessRoute {
                destination: Ipv4Addr::new(192, 168, 9, 0),
                prefix_len: 24,
                gateway: Ipv4Addr::UNSPECIFIED,
            },
            ClasslessRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Ipv4Addr::new(192, 168, 9, 1),
            },
        ];
        let l = lease(
            vec![Ipv4Addr::new(10, 0, 0, 1)],
            c,
            Ipv4Addr::new(10, 0, 0, 5),
            24,
        );
        let r = lease_routes(&l, 2, 1002);
        // Option 3 ignored; the gateway is reachable through the on-link 121 route: no host route.
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gateway, None);
        assert_eq!(
            r[1].gateway,
            Some(IpAddr::V4(Ipv4Addr::new(192, 168, 9, 1)))
        );
    }

    #[test]
    fn rng_varies() {
        let mut a = Rng::seeded(&[1, 2, 3, 4, 5, 6]);
        let x: Vec<u32> = (0..4).map(|_| a.next_u32()).collect();
        assert!(x.windows(2).all(|w| w[0] != w[1]));
    }
}
