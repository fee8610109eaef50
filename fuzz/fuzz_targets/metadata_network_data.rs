//! OpenStack `network_data.json`.
#![no_main]

use cloud_metadata::Limits;
use cloud_metadata::network::parse_network_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = parse_network_data(data, &Limits::default()) {
        let _ = cfg.all_nameservers();
    }
});
