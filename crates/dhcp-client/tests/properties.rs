//! Property tests: parsers are total, encode → parse round-trips, the client survives any input.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcp_client::frame::{UdpDatagram, decode_udp_ipv4, encode_udp_ipv4, udp_checksum_ok};
use dhcp_client::wire::ClasslessRoute;
use dhcp_client::{Client, ClientConfig, Instant, Message, MessageType, Op, Options};
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 .-]{0,40}[a-zA-Z0-9]"
}

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,20}(\\.[a-z0-9-]{1,20}){0,3}"
}

fn route() -> impl Strategy<Value = ClasslessRoute> {
    (0u8..=32, any::<u32>(), addr()).prop_map(|(len, dest, gateway)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        ClasslessRoute {
            destination: Ipv4Addr::from(dest & mask),
            prefix_len: len,
            gateway,
        }
    })
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Discover),
        Just(MessageType::Offer),
        Just(MessageType::Request),
        Just(MessageType::Decline),
        Just(MessageType::Ack),
        Just(MessageType::Nak),
        Just(MessageType::Release),
        Just(MessageType::Inform),
    ]
}

prop_compose! {
    fn options()(
        message_type in proptest::option::of(message_type()),
        prefix in proptest::option::of(0u8..=32),
        routers in proptest::collection::vec(addr(), 0..5),
        dns_servers in proptest::collection::vec(addr(), 0..5),
        ntp_servers in proptest::collection::vec(addr(), 0..3),
        hostname in proptest::option::of(text()),
        domain_name in proptest::option::of(text()),
        message in proptest::option::of(text()),
        mtu in proptest::option::of(any::<u16>()),
        max_message_size in proptest::option::of(any::<u16>()),
        broadcast in proptest::option::of(addr()),
        requested_address in proptest::option::of(addr()),
        server_id in proptest::option::of(addr()),
        lease_time in proptest::option::of(any::<u32>()),
        renewal_time in proptest::option::of(any::<u32>()),
        rebinding_time in proptest::option::of(any::<u32>()),
        client_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..300)),
        prl in proptest::collection::vec(any::<u8>(), 0..40),
        search in proptest::collection::btree_set(domain(), 0..20),
        routes in proptest::collection::vec(route(), 0..40),
    ) -> Options {
        Options {
            message_type,
            subnet_mask: prefix.map(|p| Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0))),
            routers, dns_servers, ntp_servers, hostname, domain_name, message, mtu, max_message_size,
            broadcast, requested_address, server_id, lease_time, renewal_time, rebinding_time,
            client_id,
            parameter_request_list: prl,
            domain_search: search.into_iter().collect(),
            classless_routes: routes,
            malformed: vec![],
        }
    }
}

prop_compose! {
    fn message()(
        reply in any::<bool>(), xid in any::<u32>(), secs in any::<u16>(), flags in any::<u16>(),
        ciaddr in addr(), yiaddr in addr(), siaddr in addr(), giaddr in addr(),
        chaddr in any::<[u8; 6]>(), options in options(),
    ) -> Message {
        Message {
            op: if reply { Op::Reply } else { Op::Request },
            xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, options,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = Message::parse(&bytes);
        let _ = decode_udp_ipv4(&bytes);
    }

    #[test]
    fn parse_never_panics_on_valid_header_and_random_options(
        opts in proptest::collection::vec(any::<u8>(), 0..800),
        overload_area in proptest::collection::vec(any::<u8>(), 192),
    ) {
        let mut b = Message::new(Op::Reply, 1, [0; 6]).encode();
        b.truncate(240);
        b[44..236].copy_from_slice(&overload_area);
        b.extend_from_slice(&opts);
        if let Ok(m) = Message::parse(&b) {
            // Whatever parsed re-encodes and parses again.
            let again = Message::parse(&m.encode()).unwrap();
            prop_assert_eq!(again.options.message_type, m.options.message_type);
        }
    }

    #[test]
    fn encode_parse_round_trip(m in message()) {
        let bytes = m.encode();
        prop_assert!(bytes.len() >= 300);
        prop_assert_eq!(Message::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn frame_round_trip(src in addr(), dst in addr(), sp in any::<u16>(), dp in any::<u16>(),
                        payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let d = UdpDatagram { src, dst, src_port: sp, dst_port: dp, payload: &payload };
        let pkt = encode_udp_ipv4(&d);
        prop_assert!(udp_checksum_ok(&pkt));
        prop_assert_eq!(decode_udp_ipv4(&pkt).unwrap(), d);
    }

    /// The client fed arbitrary packets and timer calls never panics, never sends more than one
    /// packet per input, and always has a timer while it is acquiring.
    #[test]
    fn client_survives_arbitrary_input(
        inputs in proptest::collection::vec((any::<bool>(), 0u32..100_000, proptest::collection::vec(any::<u8>(), 0..600)), 1..60),
        seed in 1u32..,
    ) {
        let mut x = seed;
        let rng = move || { x ^= x << 13; x ^= x >> 17; x ^= x << 5; x };
        let mut c = Client::new(ClientConfig::new([2, 0, 0, 0, 0, 1]), rng);
        let mut now = Instant::ZERO;
        c.start(now);
        for (is_packet, dt, bytes) in inputs {
            now = now + Duration::from_millis(u64::from(dt));
            if is_packet {
                let _ = c.handle_packet(now, &bytes);
            } else {
                c.handle_timeout(now);
            }
            let mut n = 0;
            while c.poll_transmit().is_some() { n += 1; }
            prop_assert!(n <= 2);
            while c.poll_event().is_some() {}
            prop_assert!(c.poll_timeout().is_some());
        }
    }
}
