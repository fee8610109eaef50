//! net-config's handling of netlink replies (what the kernel answers rtnetlink requests and
//! the ACPI generic-netlink family sends): splitting datagrams into messages, the query /
//! request / dump steps, the link, address and route parsers, and the status lines built from
//! their results. Never panics; parsing never yields more than the datagram holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = net_config::fuzzing::netlink_reply(data);
    // At most one message per 16-byte header, one link/address/route per message, and the
    // four dump steps each collect a subset of the messages.
    assert!(s.messages <= data.len() / 16);
    assert!(s.parsed <= s.messages);
    assert!(s.dumped <= 4 * s.messages);
});
