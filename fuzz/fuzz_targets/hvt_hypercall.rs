//! The hvt monitor's hypercall dispatch on arbitrary guest memory and port writes: never panics,
//! never touches memory outside the guest's (the accessors would return an error), and a
//! faulting call leaves the devices untouched.
#![no_main]

use hvt_monitor::hypercall::{FakeHost, Step, dispatch};
use hvt_monitor::memory::GuestMemory;
use libfuzzer_sys::fuzz_target;

const MEM: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, image) = data.split_at(8);
    let port = u16::from_le_bytes([head[0], head[1]]);
    let width = usize::from(head[2] % 5); // 0..=4 bytes of operand
    let operand = &head[3..3 + width];
    let mut mem = GuestMemory::new(MEM).expect("guest memory");
    let n = image.len().min(MEM as usize);
    mem.write(0, &image[..n]).expect("in bounds");
    let mut host = FakeHost {
        disk: (head[7] & 1 != 0).then(|| vec![0u8; 8 * 512]),
        net: head[7] & 2 != 0,
        ..Default::default()
    };
    host.rx.push_back(image.iter().rev().take(1514).copied().collect());
    match dispatch(&mut mem, &mut host, port, operand) {
        Ok(Step::Continue | Step::Halt(_) | Step::HostIo(_)) => {}
        Err(_) => assert!(host.console.is_empty() && host.tx.is_empty()),
    }
});
