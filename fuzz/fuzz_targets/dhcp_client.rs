//! The DHCP state machine fed an arbitrary sequence of timer ticks and packets. Packets can be
//! "patched" to carry the pending transaction id and our MAC, so the fuzzer reaches the OFFER,
//! ACK and NAK paths and the lease timers, not just the xid check.
#![no_main]

use std::time::Duration;

use dhcp_client::{Client, ClientConfig, Instant, State};
use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fuzz_target!(|data: &[u8]| {
    let mut seed = 0x9e37_79b9u32;
    let rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut cfg = ClientConfig::new(MAC);
    cfg.initial_retransmit = Duration::from_millis(500);
    let mut c = Client::new(cfg, rng);
    let mut now = Instant::ZERO;
    c.start(now);
    let mut rest = data;
    while let [op, a, b, tail @ ..] = rest {
        match op % 4 {
            0 => {
                // Advance the clock by up to ~18 hours in uneven steps.
                now = now
                    + Duration::from_millis(
                        u64::from(u16::from_be_bytes([*a, *b])) * u64::from(op / 4 + 1) * 37,
                    );
                c.handle_timeout(now);
                rest = tail;
            }
            1 => {
                // Jump straight to the client's next timer.
                if let Some(t) = c.poll_timeout() {
                    now = now.max(t);
                }
                c.handle_timeout(now);
                rest = tail;
            }
            _ => {
                let len = (usize::from(u16::from_be_bytes([*a, *b])) % 700).min(tail.len());
                let mut pkt = tail[..len].to_vec();
                rest = &tail[len..];
                if op % 4 == 3 && pkt.len() >= 240 {
                    pkt[0] = 2;
                    pkt[1] = 1;
                    pkt[2] = 6;
                    pkt[4..8].copy_from_slice(&c.xid().to_be_bytes());
                    pkt[28..34].copy_from_slice(&MAC);
                    pkt[236..240].copy_from_slice(&[99, 130, 83, 99]);
                }
                let _ = c.handle_packet(now, &pkt);
            }
        }
        let mut sent = 0;
        while let Some(tx) = c.poll_transmit() {
            sent += 1;
            assert!(dhcp_client::Message::parse(&tx.payload).is_ok());
        }
        assert!(sent <= 2);
        while c.poll_event().is_some() {}
        if matches!(
            c.state(),
            State::Selecting | State::Requesting | State::Rebooting
        ) {
            assert!(c.poll_timeout().is_some(), "acquiring without a timer");
        }
    }
});
