//! The RFC 2131 client state machine, sans I/O.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::time::Duration;

use crate::error::DhcpError;
use crate::lease::Lease;
use crate::time::Instant;
use crate::wire::{FLAG_BROADCAST, Message, MessageType, Op, code};

/// Options requested from the server (option 55) by default: subnet mask, router, DNS, host
/// name, domain name, MTU, broadcast address, NTP, lease time, server id, T1, T2, domain search,
/// classless static routes.
pub const DEFAULT_REQUESTED_OPTIONS: &[u8] = &[
    code::SUBNET_MASK,
    code::CLASSLESS_ROUTES,
    code::ROUTER,
    code::DNS_SERVER,
    code::HOST_NAME,
    code::DOMAIN_NAME,
    code::INTERFACE_MTU,
    code::BROADCAST_ADDRESS,
    code::NTP_SERVERS,
    code::LEASE_TIME,
    code::SERVER_ID,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
    code::DOMAIN_SEARCH,
];

/// Where random numbers come from: transaction ids and retransmission jitter.
///
/// Drivers seed a generator from the OS (`getrandom`); tests pass a fixed sequence. Closures
/// `FnMut() -> u32` implement it.
pub trait RandomSource {
    /// A uniformly distributed 32-bit value.
    fn next_u32(&mut self) -> u32;
}

impl<F: FnMut() -> u32> RandomSource for F {
    fn next_u32(&mut self) -> u32 {
        self()
    }
}

/// Client settings. [`ClientConfig::new`] gives the RFC 2131 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The interface's MAC address (`chaddr`).
    pub mac: [u8; 6],
    /// Client identifier (option 61). `None` sends type 1 (Ethernet) followed by the MAC, like
    /// dhcpcd's `clientid` setting that CirrOS uses.
    pub client_id: Option<Vec<u8>>,
    /// Host name to send (option 12), so the server can register it. `None` sends none.
    pub hostname: Option<String>,
    /// Parameter request list (option 55).
    pub requested_options: Vec<u8>,
    /// First retransmission interval of DISCOVER and REQUEST. RFC 2131 §4.1: 4 s. Lower it to
    /// speed up boot on networks that drop the first packet (it doubles each time).
    pub initial_retransmit: Duration,
    /// Cap of the doubling retransmission interval. RFC 2131 §4.1: 64 s.
    pub max_retransmit: Duration,
    /// Each retransmission interval is moved by a uniform random amount in ±`jitter` (RFC: ±1 s),
    /// at most half the interval.
    pub jitter: Duration,
    /// REQUEST transmissions in REQUESTING / INIT-REBOOT before giving up and restarting
    /// discovery.
    pub request_attempts: u32,
    /// Floor of the RENEWING/REBINDING retransmission interval. RFC 2131 §4.4.5: 60 s. Tests and
    /// short leases lower it.
    pub min_renew_retransmit: Duration,
    /// Optional cap of the RENEWING/REBINDING retransmission interval (not in RFC 2131, which
    /// only has the floor). With a one-day lease the RFC rule waits hours between rebinding
    /// attempts; a cap of a few minutes finds a returning server sooner. `None` = RFC
    /// behaviour. It wins over [`ClientConfig::min_renew_retransmit`] when smaller.
    pub max_renew_retransmit: Option<Duration>,
    /// An address to ask for first (INIT-REBOOT, RFC 2131 §3.2), e.g. from a previous boot.
    pub previous_address: Option<Ipv4Addr>,
    /// Ask the server to broadcast its replies. Not needed with a raw socket driver (it sees
    /// unicast replies to our MAC), but some networks require it.
    pub broadcast_flag: bool,
    /// Maximum DHCP message size we accept (option 57); at least 576.
    pub max_message_size: u16,
}

impl ClientConfig {
    /// RFC 2131 defaults for the interface with hardware address `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        ClientConfig {
            mac,
            client_id: None,
            hostname: None,
            requested_options: DEFAULT_REQUESTED_OPTIONS.to_vec(),
            initial_retransmit: Duration::from_secs(4),
            max_retransmit: Duration::from_secs(64),
            jitter: Duration::from_secs(1),
            request_attempts: 4,
            min_renew_retransmit: Duration::from_secs(60),
            max_renew_retransmit: None,
            previous_address: None,
            broadcast_flag: false,
            max_message_size: 1500,
        }
    }
}

/// Client state (RFC 2131 figure 5), plus `Stopped` after release or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started, or waiting to restart after repeated NAKs.
    Init,
    /// DISCOVER sent, waiting for an OFFER.
    Selecting,
    /// REQUEST sent for an offer, waiting for ACK/NAK.
    Requesting,
    /// INIT-REBOOT: REQUEST for a previously known address sent.
    Rebooting,
    /// Holding a lease, waiting for T1.
    Bound,
    /// Past T1: unicast REQUESTs to the leasing server.
    Renewing,
    /// Past T2: broadcast REQUESTs to any server.
    Rebinding,
    /// Released or stopped; does nothing until [`Client::start`].
    Stopped,
}

impl State {
    /// Lower-case name, for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Selecting => "selecting",
            State::Requesting => "requesting",
            State::Rebooting => "rebooting",
            State::Bound => "bound",
            State::Renewing => "renewing",
            State::Rebinding => "rebinding",
            State::Stopped => "stopped",
        }
    }
}

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `255.255.255.255:67` on the client's interface.
    Broadcast,
    /// A server's unicast address, port 67 (RENEWING, RELEASE).
    Unicast(Ipv4Addr),
}

/// A DHCP message the driver must send, from UDP port 68 to port 67.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// What it is.
    pub message_type: MessageType,
    /// Where to send it.
    pub destination: Destination,
    /// Source address: `0.0.0.0` before a lease, the leased address after.
    pub source: Ipv4Addr,
    /// The encoded DHCP message (UDP payload).
    pub payload: Vec<u8>,
}

/// Why a lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// No server renewed it before the end of the lease.
    Expired,
    /// A server NAKed our renewal.
    Nak,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new lease: configure it.
    Bound(Lease),
    /// The leasing server extended the lease (RENEWING → BOUND). Refresh lifetimes and apply any
    /// changed options.
    Renewed(Lease),
    /// Some server extended the lease while rebinding (REBINDING → BOUND).
    Rebound(Lease),
    /// A server refused our request. Followed by [`Event::LeaseLost`] if we held a lease.
    Nak {
        /// Server id of the NAK, if it had one.
        server: Option<Ipv4Addr>,
        /// Option 56, the server's reason, if any.
        message: Option<String>,
    },
    /// The lease is gone: remove its address and routes. The client is discovering again.
    LeaseLost {
        /// The lease that was lost.
        lease: Lease,
        /// Why.
        reason: LossReason,
    },
    /// [`Client::release`] gave the lease back: remove its address and routes.
    Released(Lease),
}

/// The DHCPv4 client state machine for one interface.
///
/// Drive it like this (see `net-config` for the Linux driver):
/// 1. [`Client::start`];
/// 2. loop: send every [`Client::poll_transmit`], act on every [`Client::poll_event`], sleep
///    until [`Client::poll_timeout`] or a packet arrives, then call [`Client::handle_timeout`]
///    or [`Client::handle_packet`];
/// 3. at shutdown, [`Client::release`] and send the last transmit.
#[derive(Debug)]
pub struct Client<R> {
    config: ClientConfig,
    client_id: Vec<u8>,
    rng: R,
    state: State,
    xid: u32,
    /// Start of the current transaction, for the `secs` field.
    started: Instant,
    /// `secs` of the DISCOVER whose offer we request (RFC 2131 §4.4.1: REQUEST reuses it).
    discover_secs: u16,
    /// When the first REQUEST of the current transaction was sent: the lease counts from here.
    request_sent_at: Instant,
    /// Messages sent in the current state.
    attempts: u32,
    next_send: Option<Instant>,
    /// (address, server) of the offer being requested.
    offered: Option<(Ipv4Addr, Ipv4Addr)>,
    lease: Option<Lease>,
    /// Address to ask for in INIT-REBOOT or as a hint in DISCOVER.
    hint: Option<Ipv4Addr>,
    /// In `Init`: when to restart discovery.
    init_at: Option<Instant>,
    /// Consecutive NAKs, for the restart delay.
    naks: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl<R: RandomSource> Client<R> {
    /// A client in [`State::Init`]; nothing happens until [`Client::start`].
    pub fn new(config: ClientConfig, rng: R) -> Self {
        let client_id = config.client_id.clone().unwrap_or_else(|| {
            let mut id = Vec::with_capacity(7);
            id.push(1);
            id.extend_from_slice(&config.mac);
            id
        });
        let hint = config.previous_address;
        Client {
            config,
            client_id,
            rng,
            state: State::Init,
            xid: 0,
            started: Instant::ZERO,
            discover_secs: 0,
            request_sent_at: Instant::ZERO,
            attempts: 0,
            next_send: None,
            offered: None,
            lease: None,
            hint,
            init_at: None,
            naks: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts (or restarts after [`Client::release`]/[`Client::stop`]) acquisition: INIT-REBOOT
    /// if an address is known from [`ClientConfig::previous_address`], else DISCOVER. Does
    /// nothing if the client is already running.
    pub fn start(&mut self, now: Instant) {
        if !matches!(self.state, State::Init | State::Stopped) {
            return;
        }
        self.init_at = None;
        match self.hint.take() {
            Some(addr) => self.enter_rebooting(now, addr),
            None => self.begin_discover(now),
        }
    }

    /// Stops without releasing: no more packets or timers. The lease, if any, is forgotten (the
    /// driver keeps whatever it configured).
    pub fn stop(&mut self) {
        self.state = State::Stopped;
        self.lease = None;
        self.next_send = None;
        self.init_at = None;
    }

    /// Gives the lease back (RFC 2131 §4.4.6): queues a unicast RELEASE to the server and emits
    /// [`Event::Released`], then stops. Returns false (and just stops) when there is no lease.
    pub fn release(&mut self, _now: Instant) -> bool {
        let held = matches!(
            self.state,
            State::Bound | State::Renewing | State::Rebinding
        );
        let lease = self.lease.take();
        self.stop();
        let Some(lease) = lease.filter(|_| held) else {
            return false;
        };
        self.new_xid();
        let mut m = Message::new(Op::Request, self.xid, self.config.mac);
        m.ciaddr = lease.address;
        m.options.message_type = Some(MessageType::Release);
        m.options.server_id = Some(lease.server);
        m.options.client_id = Some(self.client_id.clone());
        self.transmits.push_back(Transmit {
            message_type: MessageType::Release,
            destination: Destination::Unicast(lease.server),
            source: lease.address,
            payload: m.encode(),
        });
        self.events.push_back(Event::Released(lease));
        true
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The lease held, if any (also during RENEWING and REBINDING).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Transaction id of the pending exchange.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must be called next; `None` when only a packet (or
    /// nothing, once stopped or bound forever) can move the client.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lease = self.lease.as_ref();
        match self.state {
            State::Init => self.init_at,
            State::Stopped => None,
            State::Selecting | State::Requesting | State::Rebooting => self.next_send,
            State::Bound => lease.and_then(Lease::renew_at),
            State::Renewing => min_opt(self.next_send, lease.and_then(Lease::rebind_at)),
            State::Rebinding => min_opt(self.next_send, lease.and_then(Lease::expires_at)),
        }
    }

    /// Advances timers: retransmissions, T1, T2, lease expiry. Calling it early is harmless;
    /// calling it late processes the most advanced timer that is due (expiry before T2 before
    /// T1).
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.state {
            State::Stopped => {}
            State::Init => {
                if due(self.init_at) {
                    self.init_at = None;
                    self.begin_discover(now);
                }
            }
            State::Selecting => {
                if due(self.next_send) {
                    self.send_discover(now);
                }
            }
            State::Requesting | State::Rebooting => {
                if due(self.next_send) {
                    if self.attempts >= self.config.request_attempts.max(1) {
                        self.begin_discover(now);
                    } else {
                        self.send_request(now);
                    }
                }
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(lease) = self.lease.as_ref() else {
                    self.begin_discover(now);
                    return;
                };
                let (t1, t2, end) = (lease.renew_at(), lease.rebind_at(), lease.expires_at());
                if due(end) {
                    self.lose(LossReason::Expired);
                    self.begin_discover(now);
                } else if self.state != State::Rebinding && due(t2) {
                    self.enter_renewal(now, State::Rebinding);
                } else if self.state == State::Bound && due(t1) {
                    self.enter_renewal(now, State::Renewing);
                } else if self.state != State::Bound && due(self.next_send) {
                    self.send_request(now);
                }
            }
        }
    }

    /// Handles a received DHCP message (UDP payload from port 67). Replies that do not belong
    /// to the pending transaction, or that the current state does not expect, are rejected with
    /// the reason and change nothing.
    pub fn handle_packet(&mut self, now: Instant, payload: &[u8]) -> Result<(), DhcpError> {
        if !matches!(
            self.state,
            State::Selecting
                | State::Requesting
                | State::Rebooting
                | State::Renewing
                | State::Rebinding
        ) {
            return Err(DhcpError::Unexpected {
                what: "packet",
                state: self.state.name(),
            });
        }
        let msg = Message::parse_reply(payload, self.xid, self.config.mac)?;
        let kind = msg.options.message_type.ok_or(DhcpError::NoMessageType)?;
        match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let a = msg.yiaddr;
                if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                    return Err(DhcpError::BadLease("OFFER without a usable yiaddr"));
                }
                let server = msg
                    .options
                    .server_id
                    .ok_or(DhcpError::BadLease("OFFER without server id"))?;
                self.offered = Some((a, server));
                self.state = State::Requesting;
                self.attempts = 0;
                self.request_sent_at = now;
                self.send_request(now);
                Ok(())
            }
            (State::Requesting, MessageType::Ack | MessageType::Nak) => {
                let (_, chosen) = self.offered.ok_or(DhcpError::BadLease("no offer"))?;
                if msg.options.server_id.is_some_and(|s| s != chosen) {
                    return Err(DhcpError::Unexpected {
                        what: "reply from another server",
                        state: "requesting",
                    });
                }
                if kind == MessageType::Nak {
                    self.nak(now, &msg);
                    return Ok(());
                }
                let lease = Lease::from_ack(&msg, chosen, self.request_sent_at)?;
                self.bind(lease, Event::Bound);
                Ok(())
            }
            (State::Rebooting, MessageType::Ack) => {
                if msg.options.server_id.is_none() {
                    return Err(DhcpError::BadLease("ACK without server id"));
                }
                let lease = Lease::from_ack(&msg, Ipv4Addr::UNSPECIFIED, self.request_sent_at)?;
                self.bind(lease, Event::Bound);
                Ok(())
            }
            (State::Renewing | State::Rebinding, MessageType::Ack) => {
                let old_server = self
                    .lease
                    .as_ref()
                    .map_or(Ipv4Addr::UNSPECIFIED, |l| l.server);
                let lease = Lease::from_ack(&msg, old_server, self.request_sent_at)?;
                let event = if self.state == State::Renewing {
                    Event::Renewed
                } else {
                    Event::Rebound
                };
                self.bind(lease, event);
                Ok(())
            }
            (State::Rebooting | State::Renewing | State::Rebinding, MessageType::Nak) => {
                self.nak(now, &msg);
                Ok(())
            }
            (state, other) => Err(DhcpError::Unexpected {
                what: other.name(),
                state: state.name(),
            }),
        }
    }

    fn new_xid(&mut self) {
        self.xid = self.rng.next_u32();
    }

    /// Retransmission delay after the `attempt`-th transmission (0-based): the initial interval
    /// doubled per attempt, capped, plus jitter.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self
            .config
            .initial_retransmit
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.max_retransmit);
        let jitter = self.config.jitter.min(base / 2);
        let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX / 4);
        if jitter_ms == 0 {
            return base;
        }
        let r = u64::from(self.rng.next_u32()) % (2 * jitter_ms + 1);
        (base + Duration::from_millis(r)).saturating_sub(jitter)
    }

    fn secs(&self, now: Instant) -> u16 {
        u16::try_from(now.saturating_duration_since(self.started).as_secs()).unwrap_or(u16::MAX)
    }

    fn base_message(&self, secs: u16) -> Message {
        let mut m = Message::new(Op::Request, self.xid, self.config.mac);
        m.secs = secs;
        if self.config.broadcast_flag {
            m.flags = FLAG_BROADCAST;
        }
        m.options.client_id = Some(self.client_id.clone());
        m.options.max_message_size = Some(self.config.max_message_size.max(576));
        m.options.hostname = self.config.hostname.clone().filter(|h| !h.is_empty());
        m.options.parameter_request_list = self.config.requested_options.clone();
        m
    }

    fn begin_discover(&mut self, now: Instant) {
        self.state = State::Selecting;
        self.new_xid();
        self.started = now;
        self.attempts = 0;
        self.offered = None;
        self.send_discover(now);
    }

    fn send_discover(&mut self, now: Instant) {
        let secs = self.secs(now);
        self.discover_secs = secs;
        let mut m = self.base_message(secs);
        m.options.message_type = Some(MessageType::Discover);
        m.options.requested_address = self.hint;
        self.queue(
            MessageType::Discover,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED,
            &m,
        );
        let wait = self.backoff(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        self.next_send = Some(now + wait);
    }

    fn enter_rebooting(&mut self, now: Instant, addr: Ipv4Addr) {
        self.state = State::Rebooting;
        self.new_xid();
        self.started = now;
        self.attempts = 0;
        self.request_sent_at = now;
        self.offered = Some((addr, Ipv4Addr::UNSPECIFIED));
        self.send_request(now);
    }

    fn enter_renewal(&mut self, now: Instant, state: State) {
        self.state = state;
        self.new_xid();
        self.started = now;
        self.attempts = 0;
        self.request_sent_at = now;
        self.send_request(now);
    }

    /// Sends (or resends) the REQUEST of the current state and arms the retransmission timer.
    fn send_request(&mut self, now: Instant) {
        let state = self.state;
        let secs = if state == State::Requesting {
            self.discover_secs
        } else {
            self.secs(now)
        };
        let mut m = self.base_message(secs);
        m.options.message_type = Some(MessageType::Request);
        let leased = self.lease.as_ref().map(|l| (l.address, l.server));
        let (destination, source) = match (state, self.offered, leased) {
            (State::Requesting, Some((addr, server)), _) => {
                m.options.requested_address = Some(addr);
                m.options.server_id = Some(server);
                (Destination::Broadcast, Ipv4Addr::UNSPECIFIED)
            }
            (State::Rebooting, Some((addr, _)), _) => {
                m.options.requested_address = Some(addr);
                (Destination::Broadcast, Ipv4Addr::UNSPECIFIED)
            }
            (State::Renewing, _, Some((addr, server))) => {
                m.ciaddr = addr;
                (Destination::Unicast(server), addr)
            }
            (State::Rebinding, _, Some((addr, _))) => {
                m.ciaddr = addr;
                (Destination::Broadcast, addr)
            }
            _ => return,
        };
        self.queue(MessageType::Request, destination, source, &m);
        self.attempts = self.attempts.saturating_add(1);
        self.next_send = Some(match state {
            State::Renewing | State::Rebinding => {
                // RFC 2131 §4.4.5: half the time left to T2 (renewing) or to expiry
                // (rebinding), but at least the floor, and never past that deadline.
                let lease = self.lease.as_ref();
                let deadline = if state == State::Renewing {
                    lease.and_then(Lease::rebind_at)
                } else {
                    lease.and_then(Lease::expires_at)
                };
                match deadline {
                    Some(d) => {
                        let half = d.saturating_duration_since(now) / 2;
                        let mut wait = half.max(self.config.min_renew_retransmit);
                        if let Some(cap) = self.config.max_renew_retransmit {
                            wait = wait.min(cap);
                        }
                        (now + wait).min(d)
                    }
                    None => now + self.config.min_renew_retransmit,
                }
            }
            _ => {
                let wait = self.backoff(self.attempts - 1);
                now + wait
            }
        });
    }

    fn queue(
        &mut self,
        kind: MessageType,
        destination: Destination,
        source: Ipv4Addr,
        m: &Message,
    ) {
        self.transmits.push_back(Transmit {
            message_type: kind,
            destination,
            source,
            payload: m.encode(),
        });
    }

    fn bind(&mut self, lease: Lease, event: fn(Lease) -> Event) {
        self.hint = None;
        self.lease = Some(lease.clone());
        self.state = State::Bound;
        self.naks = 0;
        self.next_send = None;
        self.offered = None;
        self.attempts = 0;
        self.events.push_back(event(lease));
    }

    fn lose(&mut self, reason: LossReason) {
        if let Some(lease) = self.lease.take() {
            // A lost address is a good first guess for the next DISCOVER (option 50).
            self.hint = Some(lease.address);
            self.events.push_back(Event::LeaseLost { lease, reason });
        }
    }

    fn nak(&mut self, now: Instant, msg: &Message) {
        self.events.push_back(Event::Nak {
            server: msg.options.server_id,
            message: msg.options.message.clone(),
        });
        self.lose(LossReason::Nak);
        self.hint = None;
        self.naks = self.naks.saturating_add(1);
        self.state = State::Init;
        self.offered = None;
        self.next_send = None;
        // RFC 2131 says restart; back off on repeated NAKs so a confused server cannot make us
        // spin: 0, then initial, 2 × initial … up to the cap.
        let delay = if self.naks <= 1 {
            Duration::ZERO
        } else {
            self.config
                .initial_retransmit
                .saturating_mul(1u32 << (self.naks - 2).min(16))
                .min(self.config.max_retransmit)
        };
        if delay.is_zero() {
            self.begin_discover(now);
        } else {
            self.init_at = Some(now + delay);
        }
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
