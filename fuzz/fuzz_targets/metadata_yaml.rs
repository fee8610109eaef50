//! The bounded document parsers every format goes through: YAML (libyaml events into a
//! budgeted tree), JSON, and the YAML-or-JSON sniffing of NoCloud files, with small limits so
//! that the node, byte and depth budgets are hit often.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_yaml -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::Limits;
use cloud_metadata::value::{Node, parse_json, parse_yaml, parse_yaml_or_json};
use libfuzzer_sys::fuzz_target;

fn count(n: &Node, depth: usize, max_depth: &mut usize) -> usize {
    *max_depth = (*max_depth).max(depth);
    match n {
        Node::Seq(items) => 1 + items.iter().map(|i| count(i, depth + 1, max_depth)).sum::<usize>(),
        Node::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| 1 + count(v, depth + 1, max_depth))
                .sum::<usize>()
        }
        _ => 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let small = Limits {
        max_nodes: 2_000,
        max_string_bytes: 64 << 10,
        max_depth: 16,
        max_metadata_bytes: 1 << 20,
        ..Limits::default()
    };
    for limits in [small, Limits::default()] {
        for result in [
            parse_yaml(data, "fuzz", &limits),
            parse_json(data, "fuzz", &limits),
            parse_yaml_or_json(data, "fuzz", &limits),
        ] {
            if let Ok(node) = result {
                let mut depth = 0;
                // The budget holds after alias expansion.
                assert!(count(&node, 0, &mut depth) <= limits.max_nodes);
                assert!(depth <= limits.max_depth);
            }
        }
    }
});
