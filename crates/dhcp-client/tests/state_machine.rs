//! State machine tests with a fake clock and a scripted server.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcp_client::wire::{ClasslessRoute, FLAG_BROADCAST};
use dhcp_client::{
    Client, ClientConfig, Destination, DhcpError, Event, Instant, LossReason, Message, MessageType,
    Op, State, Transmit,
};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

/// A deterministic generator (xorshift) so xids differ between transactions.
fn rng(seed: u32) -> impl FnMut() -> u32 {
    let mut x = seed.max(1);
    move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    }
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new(MAC);
    c.jitter = Duration::ZERO; // exact intervals; jitter has its own test
    c.hostname = Some("vm1".into());
    c
}

fn t(secs: f64) -> Instant {
    Instant::from_millis((secs * 1000.0) as u64)
}

fn one(c: &mut Client<impl FnMut() -> u32>) -> (Transmit, Message) {
    let tx = c.poll_transmit().expect("a packet to send");
    assert!(c.poll_transmit().is_none(), "exactly one packet");
    let m = Message::parse(&tx.payload).expect("client packets parse");
    assert_eq!(m.op, Op::Request);
    assert_eq!(m.chaddr, MAC);
    assert_eq!(m.options.message_type, Some(tx.message_type));
    (tx, m)
}

/// A server reply to `req` of the given type, with a typical option set.
fn reply(req: &Message, kind: MessageType, lease_secs: u32) -> Vec<u8> {
    let mut m = Message::new(Op::Reply, req.xid, req.chaddr);
    m.yiaddr = if kind == MessageType::Nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        ADDR
    };
    m.options.message_type = Some(kind);
    m.options.server_id = Some(SERVER);
    if kind != MessageType::Nak {
        m.options.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        m.options.routers = vec![SERVER];
        m.options.dns_servers = vec![Ipv4Addr::new(10, 0, 0, 2)];
        m.options.domain_search = vec!["example.test".into()];
        m.options.mtu = Some(1400);
        m.options.lease_time = Some(lease_secs);
        m.options.classless_routes = vec![ClasslessRoute {
            destination: Ipv4Addr::new(192, 168, 0, 0),
            prefix_len: 16,
            gateway: SERVER,
        }];
    } else {
        m.options.message = Some("wrong network".into());
    }
    m.encode()
}

/// Runs DISCOVER/OFFER/REQUEST/ACK at time `at` and returns the bound client.
fn bound_client(lease_secs: u32, at: Instant) -> Client<impl FnMut() -> u32> {
    let mut c = Client::new(config(), rng(7));
    c.start(at);
    let (_, discover) = one(&mut c);
    c.handle_packet(at, &reply(&discover, MessageType::Offer, lease_secs))
        .unwrap();
    let (_, request) = one(&mut c);
    c.handle_packet(at, &reply(&request, MessageType::Ack, lease_secs))
        .unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Bound(_))));
    assert_eq!(c.state(), State::Bound);
    c
}

#[test]
fn full_dora() {
    let mut c = Client::new(config(), rng(1));
    assert_eq!(c.state(), State::Init);
    assert_eq!(c.poll_timeout(), None);
    c.start(t(0.0));

    let (tx, discover) = one(&mut c);
    assert_eq!(tx.message_type, MessageType::Discover);
    assert_eq!(tx.destination, Destination::Broadcast);
    assert_eq!(tx.source, Ipv4Addr::UNSPECIFIED);
    assert_eq!(c.state(), State::Selecting);
    assert_eq!(discover.xid, c.xid());
    assert_eq!(discover.flags & FLAG_BROADCAST, 0);
    assert_eq!(
        discover.options.client_id.as_deref(),
        Some(&[1, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef][..])
    );
    assert_eq!(discover.options.hostname.as_deref(), Some("vm1"));
    assert!(discover.options.parameter_request_list.contains(&121));
    assert!(discover.options.parameter_request_list.contains(&119));
    assert!(tx.payload.len() >= 300);

    // OFFER → REQUEST (broadcast, same xid, requested address and server id).
    c.handle_packet(t(0.5), &reply(&discover, MessageType::Offer, 600))
        .unwrap();
    assert!(c.poll_event().is_none());
    let (tx, request) = one(&mut c);
    assert_eq!(c.state(), State::Requesting);
    assert_eq!(tx.message_type, MessageType::Request);
    assert_eq!(tx.destination, Destination::Broadcast);
    assert_eq!(request.xid, discover.xid);
    assert_eq!(request.secs, discover.secs);
    assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(request.options.requested_address, Some(ADDR));
    assert_eq!(request.options.server_id, Some(SERVER));

    // ACK → BOUND with the lease's contents.
    c.handle_packet(t(0.6), &reply(&request, MessageType::Ack, 600))
        .unwrap();
    let Some(Event::Bound(lease)) = c.poll_event() else {
        panic!("expected Bound")
    };
    assert_eq!(c.state(), State::Bound);
    assert_eq!(lease.address, ADDR);
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.server, SERVER);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.dns_servers, vec![Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(lease.search_domains(), vec!["example.test".to_string()]);
    // Option 121 wins over option 3.
    assert_eq!(lease.routes().len(), 1);
    assert_eq!(lease.routes()[0].destination, Ipv4Addr::new(192, 168, 0, 0));
    // The lease counts from the REQUEST (t=0.5), T1 = 300 s later.
    assert_eq!(lease.start, t(0.5));
    assert_eq!(c.poll_timeout(), Some(t(300.5)));
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.lease(), Some(&lease));
}

#[test]
fn discover_retransmits_with_exponential_backoff() {
    let mut c = Client::new(config(), rng(2));
    c.start(t(0.0));
    let (_, first) = one(&mut c);
    let mut now = t(0.0);
    let mut intervals = vec![];
    for _ in 0..7 {
        let next = c.poll_timeout().unwrap();
        intervals.push((next - now).as_secs());
        // Early calls do nothing.
        c.handle_timeout(next - Duration::from_millis(1));
        assert!(c.poll_transmit().is_none());
        now = next;
        c.handle_timeout(now);
        let (_, m) = one(&mut c);
        assert_eq!(m.options.message_type, Some(MessageType::Discover));
        assert_eq!(m.xid, first.xid, "retransmissions keep the xid");
        assert_eq!(
            u64::from(m.secs),
            now.as_millis() / 1000,
            "secs counts from the first DISCOVER"
        );
    }
    assert_eq!(intervals, vec![4, 8, 16, 32, 64, 64, 64]);
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn initial_interval_is_configurable_and_jitter_is_bounded() {
    let mut cfg = ClientConfig::new(MAC);
    cfg.initial_retransmit = Duration::from_secs(1);
    cfg.max_retransmit = Duration::from_secs(8);
    let mut c = Client::new(cfg, rng(99));
    c.start(t(0.0));
    one(&mut c);
    let mut now = t(0.0);
    for base in [1.0f64, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0] {
        let next = c.poll_timeout().unwrap();
        let interval = (next - now).as_secs_f64();
        // ±1 s, but at most half the interval.
        let j = (base / 2.0).min(1.0);
        assert!(
            interval >= base - j && interval <= base + j,
            "{interval} vs {base}"
        );
        now = next;
        c.handle_timeout(now);
        one(&mut c);
    }
}

#[test]
fn replies_for_other_transactions_are_ignored() {
    let mut c = Client::new(config(), rng(3));
    c.start(t(0.0));
    let (_, discover) = one(&mut c);
    let mut other = discover.clone();
    other.xid ^= 1;
    assert_eq!(
        c.handle_packet(t(1.0), &reply(&other, MessageType::Offer, 600)),
        Err(DhcpError::WrongXid {
            expected: discover.xid,
            got: other.xid
        })
    );
    let mut stranger = discover.clone();
    stranger.chaddr = [2, 0, 0, 0, 0, 1];
    assert_eq!(
        c.handle_packet(t(1.0), &reply(&stranger, MessageType::Offer, 600)),
        Err(DhcpError::WrongClient)
    );
    // An ACK while selecting, a garbage packet and our own broadcast echoed back change nothing.
    assert!(matches!(
        c.handle_packet(t(1.0), &reply(&discover, MessageType::Ack, 600)),
        Err(DhcpError::Unexpected { .. })
    ));
    assert!(c.handle_packet(t(1.0), &[0u8; 17]).is_err());
    assert_eq!(
        c.handle_packet(t(1.0), &discover.encode()),
        Err(DhcpError::BadOp(1))
    );
    assert_eq!(c.state(), State::Selecting);
    assert!(c.poll_transmit().is_none());
    assert!(c.poll_event().is_none());
    // An offer without a server id cannot be requested.
    let mut m = Message::parse(&reply(&discover, MessageType::Offer, 600)).unwrap();
    m.options.server_id = None;
    assert!(matches!(
        c.handle_packet(t(1.0), &m.encode()),
        Err(DhcpError::BadLease(_))
    ));
    // The right one is taken.
    c.handle_packet(t(1.0), &reply(&discover, MessageType::Offer, 600))
        .unwrap();
    assert_eq!(c.state(), State::Requesting);
}

#[test]
fn ack_from_another_server_is_ignored_while_requesting() {
    let mut c = Client::new(config(), rng(4));
    c.start(t(0.0));
    let (_, discover) = one(&mut c);
    c.handle_packet(t(0.0), &reply(&discover, MessageType::Offer, 600))
        .unwrap();
    let (_, request) = one(&mut c);
    let mut ack = Message::parse(&reply(&request, MessageType::Ack, 600)).unwrap();
    ack.options.server_id = Some(Ipv4Addr::new(10, 0, 0, 99));
    assert!(matches!(
        c.handle_packet(t(0.1), &ack.encode()),
        Err(DhcpError::Unexpected { .. })
    ));
    assert_eq!(c.state(), State::Requesting);
}

#[test]
fn nak_while_requesting_restarts_discovery_with_backoff_on_repeats() {
    let mut c = Client::new(config(), rng(5));
    c.start(t(0.0));
    let (_, discover) = one(&mut c);
    c.handle_packet(t(0.0), &reply(&discover, MessageType::Offer, 600))
        .unwrap();
    let (_, request) = one(&mut c);
    c.handle_packet(t(0.1), &reply(&request, MessageType::Nak, 600))
        .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(Event::Nak {
            server: Some(SERVER),
            message: Some("wrong network".into())
        })
    );
    assert!(c.poll_event().is_none(), "no lease was held, none is lost");
    // First NAK: immediate new DISCOVER with a new xid.
    let (_, discover2) = one(&mut c);
    assert_eq!(discover2.options.message_type, Some(MessageType::Discover));
    assert_ne!(discover2.xid, discover.xid);
    assert_eq!(c.state(), State::Selecting);

    // Second NAK in a row: wait `initial_retransmit` before discovering again.
    c.handle_packet(t(0.2), &reply(&discover2, MessageType::Offer, 600))
        .unwrap();
    let (_, request2) = one(&mut c);
    c.handle_packet(t(0.3), &reply(&request2, MessageType::Nak, 600))
        .unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Nak { .. })));
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.state(), State::Init);
    assert_eq!(c.poll_timeout(), Some(t(4.3)));
    c.handle_timeout(t(4.3));
    let (_, d3) = one(&mut c);
    assert_eq!(d3.options.message_type, Some(MessageType::Discover));
}

#[test]
fn unanswered_request_falls_back_to_discover() {
    let mut c = Client::new(config(), rng(6));
    c.start(t(0.0));
    let (_, discover) = one(&mut c);
    c.handle_packet(t(0.0), &reply(&discover, MessageType::Offer, 600))
        .unwrap();
    one(&mut c);
    let mut kinds = vec![];
    for _ in 0..4 {
        let next = c.poll_timeout().unwrap();
        c.handle_timeout(next);
        kinds.push(one(&mut c).1.options.message_type.unwrap());
    }
    // 4 REQUESTs in all (1 + 3 retransmissions at 4, 8, 16 s), then DISCOVER after 32 s more.
    assert_eq!(
        kinds,
        vec![
            MessageType::Request,
            MessageType::Request,
            MessageType::Request,
            MessageType::Discover
        ]
    );
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn t1_renews_by_unicast_to_the_server() {
    let mut c = bound_client(1000, t(0.0));
    assert_eq!(c.poll_timeout(), Some(t(500.0)));
    c.handle_timeout(t(499.0));
    assert!(c.poll_transmit().is_none());
    c.handle_timeout(t(500.0));
    let (tx, req) = one(&mut c);
    assert_eq!(c.state(), State::Renewing);
    assert_eq!(tx.destination, Destination::Unicast(SERVER));
    assert_eq!(tx.source, ADDR);
    assert_eq!(req.ciaddr, ADDR);
    assert_eq!(
        req.options.server_id, None,
        "RFC 2131: no server id when renewing"
    );
    assert_eq!(
        req.options.requested_address, None,
        "RFC 2131: no option 50 when renewing"
    );

    // Retransmit after half the time to T2 (875 s): (875 - 500) / 2 = 187.5 s.
    assert_eq!(c.poll_timeout(), Some(t(687.5)));
    c.handle_timeout(t(687.5));
    let (tx2, req2) = one(&mut c);
    assert_eq!(tx2.destination, Destination::Unicast(SERVER));
    assert_eq!(req2.xid, req.xid);
    // Next: half of 187.5 = 93.75 s.
    assert_eq!(c.poll_timeout(), Some(t(781.25)));

    c.handle_packet(t(700.0), &reply(&req2, MessageType::Ack, 1000))
        .unwrap();
    let Some(Event::Renewed(lease)) = c.poll_event() else {
        panic!("expected Renewed")
    };
    assert_eq!(c.state(), State::Bound);
    // Timers restart from the first REQUEST of the renewal (t=500).
    assert_eq!(lease.start, t(500.0));
    assert_eq!(c.poll_timeout(), Some(t(1000.0)));
}

#[test]
fn renew_retransmission_respects_the_floor() {
    let mut c = bound_client(1000, t(0.0));
    c.handle_timeout(t(500.0));
    one(&mut c);
    let mut now = t(500.0);
    // 187.5, 93.75 then the 60 s floor, then capped at T2 (875).
    let mut seen = vec![];
    while c.state() == State::Renewing {
        let next = c.poll_timeout().unwrap();
        seen.push((next - now).as_millis());
        now = next;
        c.handle_timeout(now);
        one(&mut c);
    }
    assert_eq!(seen, vec![187_500, 93_750, 60_000, 33_750]);
    assert_eq!(now, t(875.0));
    assert_eq!(c.state(), State::Rebinding);
}

#[test]
fn t2_rebinds_by_broadcast_and_accepts_any_server() {
    let mut c = bound_client(1000, t(0.0));
    c.handle_timeout(t(500.0));
    one(&mut c);
    // Jump straight to T2: rebinding wins over renew retransmission.
    c.handle_timeout(t(875.0));
    let (tx, req) = one(&mut c);
    assert_eq!(c.state(), State::Rebinding);
    assert_eq!(tx.destination, Destination::Broadcast);
    assert_eq!(tx.source, ADDR);
    assert_eq!(req.ciaddr, ADDR);
    assert_eq!(req.options.server_id, None);
    // Retransmit after half the time left: (1000 - 875) / 2 = 62.5 s.
    assert_eq!(c.poll_timeout(), Some(t(937.5)));

    let mut ack = Message::parse(&reply(&req, MessageType::Ack, 1000)).unwrap();
    ack.options.server_id = Some(Ipv4Addr::new(10, 0, 0, 9));
    c.handle_packet(t(880.0), &ack.encode()).unwrap();
    let Some(Event::Rebound(lease)) = c.poll_event() else {
        panic!("expected Rebound")
    };
    assert_eq!(
        lease.server,
        Ipv4Addr::new(10, 0, 0, 9),
        "renewals now go to the new server"
    );
    assert_eq!(c.state(), State::Bound);
}

#[test]
fn expiry_loses_the_lease_and_restarts() {
    let mut c = bound_client(1000, t(0.0));
    c.handle_timeout(t(500.0));
    one(&mut c);
    c.handle_timeout(t(875.0));
    one(&mut c);
    c.handle_timeout(t(937.5));
    one(&mut c);
    c.handle_timeout(t(1000.0));
    let Some(Event::LeaseLost { lease, reason }) = c.poll_event() else {
        panic!("expected LeaseLost")
    };
    assert_eq!(reason, LossReason::Expired);
    assert_eq!(lease.address, ADDR);
    assert_eq!(c.lease(), None);
    assert_eq!(c.state(), State::Selecting);
    let (_, d) = one(&mut c);
    assert_eq!(d.options.message_type, Some(MessageType::Discover));
    assert_eq!(
        d.options.requested_address,
        Some(ADDR),
        "asks for the old address again"
    );
}

#[test]
fn a_late_wakeup_past_expiry_goes_straight_to_init() {
    let mut c = bound_client(100, t(0.0));
    c.handle_timeout(t(5000.0));
    assert!(matches!(
        c.poll_event(),
        Some(Event::LeaseLost {
            reason: LossReason::Expired,
            ..
        })
    ));
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn nak_while_renewing_loses_the_lease() {
    let mut c = bound_client(1000, t(0.0));
    c.handle_timeout(t(500.0));
    let (_, req) = one(&mut c);
    c.handle_packet(t(501.0), &reply(&req, MessageType::Nak, 0))
        .unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Nak { .. })));
    assert!(matches!(
        c.poll_event(),
        Some(Event::LeaseLost {
            reason: LossReason::Nak,
            ..
        })
    ));
    assert_eq!(c.state(), State::Selecting);
    let (_, d) = one(&mut c);
    assert_eq!(
        d.options.requested_address, None,
        "a NAKed address is not asked for again"
    );
}

#[test]
fn release_sends_unicast_and_stops() {
    let mut c = bound_client(1000, t(0.0));
    assert!(c.release(t(10.0)));
    let (tx, m) = one(&mut c);
    assert_eq!(tx.message_type, MessageType::Release);
    assert_eq!(tx.destination, Destination::Unicast(SERVER));
    assert_eq!(tx.source, ADDR);
    assert_eq!(m.ciaddr, ADDR);
    assert_eq!(m.options.server_id, Some(SERVER));
    assert!(matches!(c.poll_event(), Some(Event::Released(l)) if l.address == ADDR));
    assert_eq!(c.state(), State::Stopped);
    assert_eq!(c.poll_timeout(), None);
    assert!(matches!(
        c.handle_packet(t(11.0), &[0; 300]),
        Err(DhcpError::Unexpected { .. })
    ));
    // Nothing to release any more.
    assert!(!c.release(t(12.0)));
    assert!(c.poll_transmit().is_none());
    // It can start again.
    c.start(t(20.0));
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn release_without_lease_sends_nothing() {
    let mut c = Client::new(config(), rng(8));
    c.start(t(0.0));
    one(&mut c);
    assert!(!c.release(t(1.0)));
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.state(), State::Stopped);
}

#[test]
fn init_reboot_requests_the_previous_address() {
    let mut cfg = config();
    cfg.previous_address = Some(ADDR);
    let mut c = Client::new(cfg.clone(), rng(9));
    c.start(t(0.0));
    let (tx, req) = one(&mut c);
    assert_eq!(c.state(), State::Rebooting);
    assert_eq!(tx.destination, Destination::Broadcast);
    assert_eq!(req.options.message_type, Some(MessageType::Request));
    assert_eq!(req.options.requested_address, Some(ADDR));
    assert_eq!(req.options.server_id, None);
    assert_eq!(req.ciaddr, Ipv4Addr::UNSPECIFIED);
    c.handle_packet(t(0.1), &reply(&req, MessageType::Ack, 600))
        .unwrap();
    assert!(
        matches!(c.poll_event(), Some(Event::Bound(l)) if l.address == ADDR && l.server == SERVER)
    );

    // NAK: forget the address and discover.
    let mut c = Client::new(cfg, rng(10));
    c.start(t(0.0));
    let (_, req) = one(&mut c);
    c.handle_packet(t(0.1), &reply(&req, MessageType::Nak, 0))
        .unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Nak { .. })));
    assert!(c.poll_event().is_none());
    let (_, d) = one(&mut c);
    assert_eq!(d.options.message_type, Some(MessageType::Discover));
    assert_eq!(d.options.requested_address, None);
}

#[test]
fn bound_client_ignores_packets_and_infinite_leases_never_wake() {
    let mut c = bound_client(u32::MAX, t(0.0));
    assert_eq!(c.poll_timeout(), None);
    assert!(matches!(
        c.handle_packet(t(1.0), &[0; 300]),
        Err(DhcpError::Unexpected { .. })
    ));
    c.handle_timeout(t(1e9));
    assert_eq!(c.state(), State::Bound);
    assert!(c.poll_transmit().is_none());
}

#[test]
fn broadcast_flag_is_configurable() {
    let mut cfg = config();
    cfg.broadcast_flag = true;
    let mut c = Client::new(cfg, rng(11));
    c.start(t(0.0));
    let (_, d) = one(&mut c);
    assert_eq!(d.flags, FLAG_BROADCAST);
}

#[test]
fn renew_retransmission_cap_is_optional() {
    let mut cfg = config();
    cfg.max_renew_retransmit = Some(Duration::from_secs(30));
    let mut c = Client::new(cfg, rng(12));
    c.start(t(0.0));
    let (_, d) = one(&mut c);
    c.handle_packet(t(0.0), &reply(&d, MessageType::Offer, 1000))
        .unwrap();
    let (_, r) = one(&mut c);
    c.handle_packet(t(0.0), &reply(&r, MessageType::Ack, 1000))
        .unwrap();
    c.handle_timeout(t(500.0));
    one(&mut c);
    // RFC rule would wait 187.5 s; the cap makes it 30 s. Rebinding too.
    assert_eq!(c.poll_timeout(), Some(t(530.0)));
    c.handle_timeout(t(875.0));
    one(&mut c);
    assert_eq!(c.state(), State::Rebinding);
    assert_eq!(c.poll_timeout(), Some(t(905.0)));
}
