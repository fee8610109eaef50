//! The unikernel's network stack (smoltcp behind virga's socket API) fed arbitrary Ethernet
//! frames while it listens on TCP and UDP: never panics, keeps working.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use unikernel::netstack::{IpMode, Network, Nic};

struct FuzzNic {
    frames: VecDeque<Vec<u8>>,
    now: u64,
}

impl Nic for FuzzNic {
    fn mac(&self) -> [u8; 6] {
        [2, 0, 0, 0, 0, 1]
    }
    fn send(&mut self, _frame: &[u8]) -> bool {
        true
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let f = self.frames.pop_front()?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Some(n)
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn wait(&mut self, deadline_ns: u64) {
        self.now = deadline_ns.min(self.now + 1_000_000);
    }
}

fuzz_target!(|data: &[u8]| {
    // Frames are separated by a two-byte big-endian length; the first 14 bytes of each are
    // rewritten half of the time to address the stack's MAC and IPv4.
    let mut frames = VecDeque::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 1600;
        let body = &rest[2..];
        let take = len.min(body.len());
        let mut f = body[..take].to_vec();
        if f.len() >= 14 && f[0] & 1 == 0 {
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
        }
        frames.push_back(f);
        rest = &body[take..];
    }
    let nic = FuzzNic { frames, now: 0 };
    let mode = IpMode::Static([10, 0, 0, 1].into(), 24, None);
    let Ok(mut net) = Network::new(nic, mode, 7) else { return };
    let _l = net.tcp_listen(80).expect("listen");
    let _u = net.udp_bind(7).expect("bind");
    for _ in 0..64 {
        net.poll();
    }
});
