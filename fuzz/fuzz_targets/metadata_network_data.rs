//! OpenStack `network_data.json`.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_network_data -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::Limits;
use cloud_metadata::network::parse_network_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = parse_network_data(data, &Limits::default()) {
        let _ = cfg.all_nameservers();
    }
});
