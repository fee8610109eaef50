//! network-config v1 / v2 (YAML or JSON).
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_network_config -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::Limits;
use cloud_metadata::network::parse_network_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = parse_network_config(data, &Limits::default()) {
        for iface in &cfg.interfaces {
            let _ = iface.matches("eth0", "52:54:00:12:34:56");
        }
    }
});
