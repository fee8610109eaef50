//! The bare-metal network stack: smoltcp (Ethernet, ARP, IPv4, DHCP, TCP, UDP) over a [`Nic`]
//! that moves whole Ethernet frames, behind the same blocking socket API the unix target offers
//! with host sockets.
//!
//! Single-threaded and interrupt-free: every blocking call polls the interface, then waits on the
//! NIC (`Nic::wait`, a hypercall or a device poll) until a frame arrives or smoltcp's next timer is
//! due. Built on every target so it is unit tested on the host with two stacks wired back to back.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::{NetConfig, UnikernelError};

/// Largest Ethernet frame handled (1500-byte MTU + 14-byte header).
pub const MAX_FRAME: usize = 1514;
/// Listening sockets kept per listener: how many connections can be in the handshake at once.
pub const BACKLOG: usize = 4;
const TCP_RX: usize = 8 * 1024;
const TCP_TX: usize = 16 * 1024;
const UDP_PACKETS: usize = 8;
const UDP_BYTES: usize = 8 * 1024;
/// How long the stack waits for a DHCP lease before giving up.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a closed connection may linger while its last data and FIN go out.
const LINGER: Duration = Duration::from_secs(10);

/// A network interface that moves whole Ethernet frames, plus the clock and wait primitive of the
/// platform it lives on.
pub trait Nic {
    /// MAC address.
    fn mac(&self) -> [u8; 6];
    /// Sends one frame; `false` if it was dropped.
    fn send(&mut self, frame: &[u8]) -> bool;
    /// Receives one frame into `buf`, if one is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Monotonic time in nanoseconds.
    fn now_ns(&self) -> u64;
    /// Waits until a frame may be waiting or `deadline_ns` passes (may return early).
    fn wait(&mut self, deadline_ns: u64);
}

/// How the interface gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpMode {
    /// Ask a DHCP server.
    Dhcp,
    /// Fixed address, prefix length and optional gateway.
    Static(Ipv4Addr, u8, Option<Ipv4Addr>),
}

struct Adapter<'a, N: Nic> {
    nic: &'a mut N,
    rx: &'a mut Vec<u8>,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a, N: Nic>(&'a mut N);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<N: Nic> phy::TxToken for Tx<'_, N> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.send(&buf);
        r
    }
}

impl<N: Nic> phy::Device for Adapter<'_, N> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, N>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx<'_>, Tx<'_, N>)> {
        self.rx.resize(MAX_FRAME, 0);
        let n = self.nic.recv(self.rx)?;
        Some((Rx(&self.rx[..n.min(MAX_FRAME)]), Tx(self.nic)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_, N>> {
        Some(Tx(self.nic))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}

/// A listening TCP port.
#[derive(Debug)]
pub struct TcpListener {
    port: u16,
    pending: Vec<SocketHandle>,
}

/// An established TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    handle: SocketHandle,
}

/// A bound UDP port.
#[derive(Debug)]
pub struct UdpSocket {
    handle: SocketHandle,
}

/// The network: interface, sockets and the NIC under them.
pub struct Network<N: Nic> {
    nic: N,
    iface: Interface,
    sockets: SocketSet<'static>,
    rx: Vec<u8>,
    dhcp: Option<SocketHandle>,
    closing: Vec<(SocketHandle, u64)>,
    gateway: Option<Ipv4Addr>,
}

impl<N: Nic> core::fmt::Debug for Network<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Network")
            .field("config", &self.config())
            .finish()
    }
}

fn now(nic: &impl Nic) -> SmolInstant {
    SmolInstant::from_micros((nic.now_ns() / 1000) as i64)
}

fn deadline_after(nic: &impl Nic, timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| {
        nic.now_ns()
            .saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
    })
}

impl<N: Nic> Network<N> {
    /// Brings the interface up. With [`IpMode::Dhcp`] it waits (up to [`DHCP_TIMEOUT`]) for a
    /// lease.
    pub fn new(mut nic: N, mode: IpMode, seed: u64) -> Result<Self, UnikernelError> {
        let mac = EthernetAddress(nic.mac());
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = seed;
        let mut rx = Vec::with_capacity(MAX_FRAME);
        let t = now(&nic);
        let iface = Interface::new(
            config,
            &mut Adapter {
                nic: &mut nic,
                rx: &mut rx,
            },
            t,
        );
        let mut net = Self {
            nic,
            iface,
            sockets: SocketSet::new(Vec::new()),
            rx,
            dhcp: None,
            closing: Vec::new(),
            gateway: None,
        };
        match mode {
            IpMode::Static(addr, prefix, gw) => {
                if prefix > 32 {
                    return Err(UnikernelError::InvalidArgument(
                        "IPv4 prefix length above 32",
                    ));
                }
                net.set_address(addr, prefix, gw);
            }
            IpMode::Dhcp => {
                net.dhcp = Some(net.sockets.add(dhcpv4::Socket::new()));
                let deadline = deadline_after(&net.nic, Some(DHCP_TIMEOUT));
                net.wait_for(deadline, |n| n.config().address.map(|_| ()))
                    .map_err(|_| UnikernelError::NotConfigured)?;
            }
        }
        Ok(net)
    }

    fn set_address(&mut self, addr: Ipv4Addr, prefix: u8, gw: Option<Ipv4Addr>) {
        self.iface.update_ip_addrs(|a| {
            a.clear();
            // Capacity is at least one address.
            let _ = a.push(IpCidr::new(addr.into(), prefix));
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(gw) = gw {
            // Fails only when the route table is full, which a single route cannot make it.
            let _ = self.iface.routes_mut().add_default_ipv4_route(gw);
        }
        self.gateway = gw;
    }

    /// MAC, address and gateway.
    pub fn config(&self) -> NetConfig {
        // Only IPv4 is enabled, so every address is an IPv4 CIDR.
        let address = self.iface.ip_addrs().iter().next().map(|c| match c {
            IpCidr::Ipv4(v4) => (v4.address(), v4.prefix_len()),
        });
        NetConfig {
            mac: self.nic.mac(),
            address,
            gateway: self.gateway,
        }
    }

    /// The NIC (tests use it to inspect traffic).
    pub fn nic_mut(&mut self) -> &mut N {
        &mut self.nic
    }

    /// Processes pending frames and timers once, without waiting.
    pub fn poll(&mut self) {
        let t = now(&self.nic);
        let mut dev = Adapter {
            nic: &mut self.nic,
            rx: &mut self.rx,
        };
        self.iface.poll(t, &mut dev, &mut self.sockets);
        if let Some(h) = self.dhcp {
            let event = match self.sockets.get_mut::<dhcpv4::Socket<'_>>(h).poll() {
                Some(dhcpv4::Event::Configured(c)) => Some(Some((c.address, c.router))),
                Some(dhcpv4::Event::Deconfigured) => Some(None),
                None => None,
            };
            match event {
                Some(Some((cidr, router))) => {
                    self.set_address(cidr.address(), cidr.prefix_len(), router);
                }
                Some(None) => {
                    self.iface.update_ip_addrs(|a| a.clear());
                    self.iface.routes_mut().remove_default_ipv4_route();
                    self.gateway = None;
                }
                None => {}
            }
        }
        let now_ns = self.nic.now_ns();
        let sockets = &mut self.sockets;
        self.closing.retain(|(h, since)| {
            let s = sockets.get_mut::<tcp::Socket<'_>>(*h);
            let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            let expired = now_ns.saturating_sub(*since) > LINGER.as_nanos() as u64;
            if done || expired {
                s.abort();
                sockets.remove(*h);
                false
            } else {
                true
            }
        });
    }

    /// Polls until `ready` yields a value or `deadline` passes.
    fn wait_for<R>(
        &mut self,
        deadline: Option<u64>,
        mut ready: impl FnMut(&mut Self) -> Option<R>,
    ) -> Result<R, UnikernelError> {
        loop {
            self.poll();
            if let Some(r) = ready(self) {
                // Flush what `ready` queued (ACKs, data) before returning.
                self.poll();
                return Ok(r);
            }
            let now_ns = self.nic.now_ns();
            if deadline.is_some_and(|d| now_ns >= d) {
                return Err(UnikernelError::Timeout);
            }
            let t = SmolInstant::from_micros((now_ns / 1000) as i64);
            let timer = self
                .iface
                .poll_delay(t, &self.sockets)
                .map(|d| now_ns.saturating_add(d.total_micros().saturating_mul(1000)));
            let wake = [deadline, timer, Some(now_ns.saturating_add(100_000_000))]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(u64::MAX);
            if wake > now_ns {
                self.nic.wait(wake);
            }
        }
    }

    /// Serves the network (handshakes, retransmissions, lingering closes) until `deadline_ns`.
    #[cfg_attr(not(target_os = "none"), allow(dead_code))]
    pub(crate) fn serve_until(&mut self, deadline_ns: u64) {
        let _ = self.wait_for(Some(deadline_ns), |_| None::<()>);
    }

    fn listening_socket(&mut self, port: u16) -> Result<SocketHandle, UnikernelError> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX]),
            tcp::SocketBuffer::new(vec![0; TCP_TX]),
        );
        s.listen(IpListenEndpoint { addr: None, port })
            .map_err(|_| UnikernelError::InvalidArgument("cannot listen on port 0"))?;
        s.set_nagle_enabled(false);
        Ok(self.sockets.add(s))
    }

    /// Listens on TCP `port` (all addresses).
    pub fn tcp_listen(&mut self, port: u16) -> Result<TcpListener, UnikernelError> {
        let mut pending = Vec::with_capacity(BACKLOG);
        for _ in 0..BACKLOG {
            pending.push(self.listening_socket(port)?);
        }
        Ok(TcpListener { port, pending })
    }

    /// Waits for the next connection on `listener`.
    pub fn accept(
        &mut self,
        listener: &mut TcpListener,
        timeout: Option<Duration>,
    ) -> Result<TcpStream, UnikernelError> {
        let deadline = deadline_after(&self.nic, timeout);
        let i = self.wait_for(deadline, |n| {
            listener.pending.iter().position(|h| {
                let s = n.sockets.get::<tcp::Socket<'_>>(*h);
                s.may_recv() || s.can_recv() || s.state() == tcp::State::CloseWait
            })
        })?;
        let fresh = self.listening_socket(listener.port)?;
        let handle = core::mem::replace(&mut listener.pending[i], fresh);
        Ok(TcpStream { handle })
    }

    /// Reads into `buf`; `Ok(0)` when the peer closed its side.
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize, UnikernelError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = deadline_after(&self.nic, timeout);
        let h = stream.handle;
        self.wait_for(deadline, |n| {
            let s = n.sockets.get_mut::<tcp::Socket<'_>>(h);
            if s.can_recv() {
                Some(s.recv_slice(buf).map_err(|_| UnikernelError::Closed))
            } else if !s.may_recv() {
                Some(Ok(0))
            } else {
                None
            }
        })?
    }

    /// Writes all of `data`, waiting for buffer space as needed.
    pub fn write_all(&mut self, stream: &mut TcpStream, data: &[u8]) -> Result<(), UnikernelError> {
        let h = stream.handle;
        let mut sent = 0;
        while sent < data.len() {
            let n = self.wait_for(None, |n| {
                let s = n.sockets.get_mut::<tcp::Socket<'_>>(h);
                if !s.may_send() {
                    Some(Err(UnikernelError::Closed))
                } else if s.can_send() {
                    Some(
                        s.send_slice(&data[sent..])
                            .map_err(|_| UnikernelError::Closed),
                    )
                } else {
                    None
                }
            })??;
            sent += n;
        }
        Ok(())
    }

    /// Closes the connection; queued data and the FIN still go out in the background.
    pub fn close(&mut self, stream: TcpStream) {
        self.sockets
            .get_mut::<tcp::Socket<'_>>(stream.handle)
            .close();
        self.closing.push((stream.handle, self.nic.now_ns()));
        self.poll();
    }

    /// Binds UDP `port` (all addresses).
    pub fn udp_bind(&mut self, port: u16) -> Result<UdpSocket, UnikernelError> {
        let meta = || vec![udp::PacketMetadata::EMPTY; UDP_PACKETS];
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0; UDP_BYTES]),
            udp::PacketBuffer::new(meta(), vec![0; UDP_BYTES]),
        );
        s.bind(port)
            .map_err(|_| UnikernelError::InvalidArgument("cannot bind UDP port 0"))?;
        Ok(UdpSocket {
            handle: self.sockets.add(s),
        })
    }

    /// Sends one datagram.
    pub fn send_to(
        &mut self,
        socket: &UdpSocket,
        data: &[u8],
        to: SocketAddrV4,
    ) -> Result<(), UnikernelError> {
        let ep = IpEndpoint::new((*to.ip()).into(), to.port());
        self.sockets
            .get_mut::<udp::Socket<'_>>(socket.handle)
            .send_slice(data, ep)
            .map_err(|_| {
                UnikernelError::InvalidArgument("datagram does not fit the send buffer")
            })?;
        self.poll();
        Ok(())
    }

    /// Receives one datagram: its length (truncated to `buf`) and sender.
    pub fn recv_from(
        &mut self,
        socket: &UdpSocket,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<(usize, SocketAddrV4), UnikernelError> {
        let deadline = deadline_after(&self.nic, timeout);
        let h = socket.handle;
        self.wait_for(deadline, |n| {
            let s = n.sockets.get_mut::<udp::Socket<'_>>(h);
            if !s.can_recv() {
                return None;
            }
            Some(match s.recv_slice(buf) {
                Ok((len, meta)) => {
                    let smoltcp::wire::IpAddress::Ipv4(ip) = meta.endpoint.addr;
                    Ok((len, SocketAddrV4::new(ip, meta.endpoint.port)))
                }
                Err(_) => Err(UnikernelError::InvalidArgument(
                    "datagram larger than the buffer",
                )),
            })
        })?
    }
}

#[cfg(test)]
mod tests {
    //! Two stacks wired back to back through in-memory queues with a shared fake clock.
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    #[derive(Default)]
    struct Wire {
        a_to_b: VecDeque<Vec<u8>>,
        b_to_a: VecDeque<Vec<u8>>,
        now: u64,
        /// Frames the test injects into A's receive path.
        inject_a: VecDeque<Vec<u8>>,
    }

    struct End {
        wire: Rc<RefCell<Wire>>,
        is_a: bool,
        mac: [u8; 6],
        /// Step of the fake clock per wait.
        tick: u64,
    }

    impl Nic for End {
        fn mac(&self) -> [u8; 6] {
            self.mac
        }
        fn send(&mut self, frame: &[u8]) -> bool {
            let mut w = self.wire.borrow_mut();
            let q = if self.is_a {
                &mut w.a_to_b
            } else {
                &mut w.b_to_a
            };
            q.push_back(frame.to_vec());
            true
        }
        fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
            let mut w = self.wire.borrow_mut();
            let f = if self.is_a {
                w.inject_a.pop_front().or_else(|| w.b_to_a.pop_front())
            } else {
                w.a_to_b.pop_front()
            }?;
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            Some(n)
        }
        fn now_ns(&self) -> u64 {
            self.wire.borrow().now
        }
        fn wait(&mut self, deadline_ns: u64) {
            let mut w = self.wire.borrow_mut();
            w.now = deadline_ns.min(w.now + self.tick);
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn pair() -> (Network<End>, Network<End>, Rc<RefCell<Wire>>) {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let a = End {
            wire: wire.clone(),
            is_a: true,
            mac: [2, 0, 0, 0, 0, 1],
            tick: 1_000_000,
        };
        let b = End {
            wire: wire.clone(),
            is_a: false,
            mac: [2, 0, 0, 0, 0, 2],
            tick: 1_000_000,
        };
        let a = Network::new(a, IpMode::Static(A, 24, None), 1).unwrap();
        let b = Network::new(b, IpMode::Static(B, 24, None), 2).unwrap();
        (a, b, wire)
    }

    /// Runs `b` forward until `f` (on `a`) is done, interleaving both stacks.
    fn both(a: &mut Network<End>, b: &mut Network<End>, steps: usize) {
        for _ in 0..steps {
            a.poll();
            b.poll();
            let now = a.nic.now_ns();
            a.nic.wait(now + 1_000_000);
        }
    }

    #[test]
    fn tcp_exchange_between_two_stacks() {
        let (mut a, mut b, _wire) = pair();
        let mut listener = a.tcp_listen(80).unwrap();
        // B connects (raw smoltcp: the public API is server- and UDP-oriented).
        let mut client = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        client.connect(b.iface.context(), (A, 80), 49152).unwrap();
        let ch = b.sockets.add(client);
        both(&mut a, &mut b, 20);
        // The handshake is done from A's view only once A has seen the final ACK; run A's accept
        // with B stepping in between through the shared wire.
        let mut conn = loop {
            match a.accept(&mut listener, Some(Duration::from_millis(1))) {
                Ok(c) => break c,
                Err(UnikernelError::Timeout) => b.poll(),
                Err(e) => panic!("{e}"),
            }
        };
        b.sockets
            .get_mut::<tcp::Socket<'_>>(ch)
            .send_slice(b"GET / HTTP/1.0\r\n\r\n")
            .unwrap();
        both(&mut a, &mut b, 5);
        let mut buf = [0u8; 64];
        let n = a
            .read(&mut conn, &mut buf, Some(Duration::from_millis(50)))
            .unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.0\r\n\r\n");
        a.write_all(&mut conn, b"HTTP/1.0 200 OK\r\n\r\nhi")
            .unwrap();
        a.close(conn);
        both(&mut a, &mut b, 20);
        let mut got = [0u8; 64];
        let s = b.sockets.get_mut::<tcp::Socket<'_>>(ch);
        let n = s.recv_slice(&mut got).unwrap();
        assert_eq!(&got[..n], b"HTTP/1.0 200 OK\r\n\r\nhi");
        assert!(!s.may_recv(), "FIN arrived");
        // A reaped the closed socket; its listener still has BACKLOG pending sockets.
        both(&mut a, &mut b, 50);
        assert_eq!(listener.pending.len(), BACKLOG);
    }

    #[test]
    fn udp_round_trip_and_timeouts() {
        let (mut a, mut b, _wire) = pair();
        let sa = a.udp_bind(7).unwrap();
        let sb = b.udp_bind(9).unwrap();
        b.send_to(&sb, b"ping", SocketAddrV4::new(A, 7)).unwrap();
        // ARP then the datagram.
        for _ in 0..5 {
            both(&mut a, &mut b, 2);
        }
        let mut buf = [0u8; 16];
        let (n, from) = a
            .recv_from(&sa, &mut buf, Some(Duration::from_millis(10)))
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], SocketAddrV4::new(B, 9)));
        assert_eq!(
            a.recv_from(&sa, &mut buf, Some(Duration::from_millis(10))),
            Err(UnikernelError::Timeout)
        );
        assert_eq!(a.config().address, Some((A, 24)));
    }

    #[test]
    fn dhcp_without_server_times_out() {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let nic = End {
            wire,
            is_a: true,
            mac: [2, 0, 0, 0, 0, 1],
            tick: 500_000_000,
        };
        assert_eq!(
            Network::new(nic, IpMode::Dhcp, 1).unwrap_err(),
            UnikernelError::NotConfigured
        );
    }

    fn garbage_frames() -> Vec<Vec<u8>> {
        let mut eth_ip = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        eth_ip.extend_from_slice(&[0x45, 0, 0xff, 0xff, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 2]);
        eth_ip.extend_from_slice(&[10, 0, 0, 1, 0xde, 0xad]);
        vec![
            vec![],
            vec![0xff; 3],
            vec![0xff; 1514],
            vec![0; 60],
            eth_ip.clone(),
            [eth_ip.as_slice(), &[0u8; 40]].concat(),
            {
                let mut arp = vec![0xff; 6];
                arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 9]);
                arp
            },
        ]
    }

    #[test]
    fn malformed_frames_are_dropped() {
        let (mut a, mut b, wire) = pair();
        let sa = a.udp_bind(7).unwrap();
        wire.borrow_mut().inject_a.extend(garbage_frames());
        both(&mut a, &mut b, 10);
        // The stack still works afterwards.
        let sb = b.udp_bind(9).unwrap();
        b.send_to(&sb, b"ok", SocketAddrV4::new(A, 7)).unwrap();
        both(&mut a, &mut b, 10);
        let mut buf = [0u8; 4];
        assert_eq!(
            a.recv_from(&sa, &mut buf, Some(Duration::ZERO)).unwrap().0,
            2
        );
    }

    proptest::proptest! {
        #[test]
        fn random_frames_never_panic(frames in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..20)
        ) {
            let (mut a, mut b, wire) = pair();
            let _l = a.tcp_listen(80).unwrap();
            let _u = a.udp_bind(7).unwrap();
            // Make the frames look addressed to A's MAC and IPv4 half of the time.
            let frames = frames.into_iter().enumerate().map(|(i, mut f)| {
                if i % 2 == 0 && f.len() >= 14 {
                    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
                    f[12] = 0x08;
                    f[13] = 0x00;
                }
                f
            });
            wire.borrow_mut().inject_a.extend(frames);
            both(&mut a, &mut b, 5);
        }
    }
}
