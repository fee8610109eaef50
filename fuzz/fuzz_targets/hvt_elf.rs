//! The hvt monitor's ELF loader on arbitrary kernel files: never panics, and whatever it loads
//! lies inside guest memory above the monitor's area. Half of the inputs are raw files; the other
//! half are edits (position, byte) of a valid tiny hvt ELF, so the fuzzer reaches past the header
//! checks without a seed corpus.
#![no_main]

use hvt_monitor::elf;
use hvt_monitor::memory::GuestMemory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let image = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let bss = u64::from(mode >> 1) << 14;
        let mut img = elf::testing::tiny_elf(&[0xf4; 16], bss, Some(hvt_abi::ABI_VERSION));
        for edit in rest.chunks_exact(2) {
            let pos = usize::from(edit[0]) % img.len();
            img[pos] = edit[1];
        }
        img
    };
    let mut mem = GuestMemory::new(4 << 20).expect("guest memory");
    if let Ok(k) = elf::load(&mut mem, &image) {
        assert!(k.end <= mem.size());
        assert!(k.entry >= hvt_abi::layout::KERNEL_MIN && k.entry < k.end);
    }
});
