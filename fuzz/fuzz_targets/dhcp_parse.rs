//! DHCP packet parsing: the BOOTP/DHCP codec and the IPv4/UDP framing the raw socket driver
//! decodes. Whatever parses must re-encode and parse again.
#![no_main]

use dhcp_client::Message;
use dhcp_client::frame::decode_udp_ipv4;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.encode()).expect("an encoded message parses");
        assert_eq!(again.xid, m.xid);
        assert_eq!(again.options.message_type, m.options.message_type);
        assert_eq!(again.options.classless_routes, m.options.classless_routes);
        assert_eq!(again.options.domain_search, m.options.domain_search);
    }
    let _ = Message::parse_reply(data, 0x1234_5678, [2, 0, 0, 0, 0, 1]);
    if let Ok(d) = decode_udp_ipv4(data) {
        assert!(d.payload.len() <= data.len());
        let _ = Message::parse(d.payload);
    }
});
